/*
 * shared.h - shared-state primitives of pyparallel._core, and what their
 * files share with each other and with the rest of the binding.
 *
 * Files:
 *   shared.c    the sub-state below, its exec/traverse/free, and the small
 *               introspection functions (rdtsc, gmtime, cpu_count,
 *               thread_seq_id)
 *   ptrmap.c    a pointer-keyed hash map (the protect registry, eternalize's
 *               visited set)
 *   rwlock.c    the RWLock type (many readers or one writer, reentrant per
 *               thread) and the LockGuard context manager it hands out
 *   protect.c   protect/unprotect/protected/read_lock/write_lock
 *   ilist.c     the interlocked list type (px.xlist)
 *   eternal.c   eternalize() and pxpy_immortalize_code()
 *
 * Everything here is per module object (per interpreter): the registry of
 * protected objects, the thread numbering and the date cache live in
 * pxpy_shared_t, reached as st->shared.
 */
#ifndef PXPY_SHARED_H
#define PXPY_SHARED_H

#include "binding.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- pointer-keyed hash map (ptrmap.c) -------------------------------- */

/* Open addressing with linear probing; keys are addresses (never NULL or
 * 1, which marks a removed slot). Memory comes from PyMem_Raw*, so the map
 * may be used without an attached thread state; it does no locking. */
typedef struct {
    void *key;
    void *value;
} pxpy_ptrmap_slot_t;

typedef struct {
    pxpy_ptrmap_slot_t *slots;
    size_t capacity; /* a power of two, or 0 before the first insert */
    size_t live;     /* keys present */
    size_t used;     /* keys present plus removed slots */
} pxpy_ptrmap_t;

/* The value stored under key, or NULL. */
void *pxpy_ptrmap_get(const pxpy_ptrmap_t *map, const void *key);
/* Inserts key → value unless key is present. Returns 1 when inserted, 0
 * when key was already present (its value is left alone), -1 when out of
 * memory. */
int pxpy_ptrmap_put(pxpy_ptrmap_t *map, void *key, void *value);
/* Removes key; returns its value, or NULL when it was absent. */
void *pxpy_ptrmap_remove(pxpy_ptrmap_t *map, const void *key);
/* Iteration: start with *pos = 0; returns 0 after the last entry. */
int pxpy_ptrmap_next(const pxpy_ptrmap_t *map, size_t *pos, void **key,
                     void **value);
/* Releases the table (not what keys and values point to) and empties it. */
void pxpy_ptrmap_clear(pxpy_ptrmap_t *map);

/* ---- the sub-state --------------------------------------------------- */

/* The cached IMF-fixdate of gmtime(): a sequence lock, because an HTTP
 * server reads it on every request from every worker and it changes once a
 * second. The text lives in atomic words so that readers racing with the
 * writer stay within C11's rules; they retry when the sequence moved. */
#define PXPY_HTTP_DATE_LEN 29  /* "Sun, 06 Nov 1994 08:49:37 GMT" */
#define PXPY_HTTP_DATE_WORDS 4 /* 32 bytes of text */

struct pxpy_shared_s {
    PyTypeObject *rwlock_type;
    PyObject *str_rwlock_attr; /* interned "__px_rwlock__" */

    /* protect(): object → RWLock, both strong references. The mutex is
     * held only for table operations: never across a Python call, a
     * deallocation or an allocation that could run the GC. */
    PyMutex registry_mutex;
    pxpy_ptrmap_t registry;

    /* thread_seq_id(): the next number, and a key whose per-thread value
     * is the thread's number plus one (0: not numbered yet). */
    atomic_ulong next_thread_seq;
    pthread_key_t thread_seq_key;
    int thread_seq_key_valid;

    /* gmtime(): see PXPY_HTTP_DATE_LEN. date_seq is odd while written. */
    atomic_bool date_writing; /* one writer; others format locally */
    atomic_ulong date_seq;
    atomic_llong date_second; /* -1: nothing cached yet */
    atomic_ullong date_words[PXPY_HTTP_DATE_WORDS];
};

/* The module's state if its shared part is still there; NULL with
 * RuntimeError after pxpy_shared_free() (a finalizer running during the
 * module's teardown may still call its functions). */
pxpy_state *pxpy_shared_state(PyObject *module);

/* ---- per-file parts of pxpy_shared_exec/traverse/free ------------------- */

int pxpy_rwlock_exec(PyObject *module, pxpy_state *st);
int pxpy_protect_exec(PyObject *module, pxpy_state *st);
int pxpy_protect_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_protect_free(pxpy_state *st);
int pxpy_ilist_exec(PyObject *module, pxpy_state *st);
int pxpy_eternal_exec(PyObject *module, pxpy_state *st);

/* ---- RWLock (rwlock.c) ------------------------------------------------ */

/* The lock itself, apart from any Python object: raw memory with an atomic
 * reference count, usable from any interpreter (holds are keyed by the OS
 * thread). An RWLock object holds one reference; so does each shared
 * container of mode "interpreters" (interp/) and each LockGuard. */
typedef struct pxpy_rwcore_s pxpy_rwcore_t;

/* A new core (one reference); NULL with MemoryError. */
pxpy_rwcore_t *pxpy_rwcore_new(void);
void pxpy_rwcore_ref(pxpy_rwcore_t *core);
/* Drops a reference; any thread, no thread state needed. */
void pxpy_rwcore_unref(pxpy_rwcore_t *core);
/* Takes or releases the calling thread's hold (attached; a wait detaches).
 * 0, or -1 with an exception: RuntimeError for an upgrade or a release of
 * a hold the thread does not have, or what a signal handler raised. */
int pxpy_rwcore_take(pxpy_rwcore_t *core, int exclusive);
int pxpy_rwcore_release(pxpy_rwcore_t *core, int exclusive);

/* Whether obj is an instance of this module's RWLock type. */
int pxpy_rwlock_check(pxpy_state *st, PyObject *obj);
/* A new RWLock; NULL with an exception set. */
PyObject *pxpy_rwlock_new(pxpy_state *st);
/* A new RWLock of this interpreter over an existing core (referenced). */
PyObject *pxpy_rwlock_wrap(pxpy_state *st, pxpy_rwcore_t *core);
/* The core of an RWLock (borrowed). */
pxpy_rwcore_t *pxpy_rwlock_core(PyObject *lock);
/* A new LockGuard that takes core (referenced) in __enter__, shared or
 * exclusive, and returns target from __enter__. */
PyObject *pxpy_lock_guard_new(pxpy_state *st, pxpy_rwcore_t *core,
                              PyObject *target, int exclusive);

/* ---- protection (protect.c) ------------------------------------------- */

/* The AsyncError of protect() and eternalize() (function) called on obj
 * in a worker's interpreter, where no other interpreter sees obj; NULL. */
PyObject *pxpy_only_this_interp(pxpy_state *st, const char *function,
                                PyObject *obj);
/* Whether read_lock(obj) would find a lock: 1 yes, 0 no, -1 with an
 * exception (obj's attribute lookup failed). */
int pxpy_has_lock(pxpy_state *st, PyObject *obj);

/* ---- immortal objects (eternal.c) -------------------------------------- */

/* Makes the constants of the code a callable runs immortal, so threads
 * running it on several cores don't contend on their reference counts:
 * co_consts of a function's code object, recursively through nested code
 * objects, tuples and frozensets, and the function's immutable defaults.
 * callable may be a function, a bound method, a code object, a
 * functools.partial (the callable it wraps) or a class (its functions,
 * static and class methods, through the MRO); anything else is left
 * alone. Only immutable constants (str, bytes, int, float, complex,
 * tuple, frozenset, slice) are made immortal; others are skipped silently,
 * and code objects themselves stay mortal. Each co_consts tuple ends up
 * immortal with its contents, so a caller may test that to skip repeated
 * work. Best called before the callable first runs on another thread.
 * Returns 0, or -1 with an exception set (out of memory). */
int pxpy_immortalize_code(PyObject *callable);

/* The callable a functools.partial (or a subclass's instance) wraps, as a
 * new reference; NULL without an exception when obj is no partial, NULL
 * with one when its func cannot be read. */
PyObject *pxpy_partial_func(PyObject *obj);

/* ---- introspection (shared.c) ----------------------------------------- */

/* Writes the current RFC 9110 IMF-fixdate ("Sun, 06 Nov 1994 08:49:37
 * GMT", PXPY_HTTP_DATE_LEN bytes, no terminator) from the per-second
 * cache. Safe from any thread; does not need an attached thread state. */
void pxpy_http_date(pxpy_shared_t *shared, char out[PXPY_HTTP_DATE_LEN]);

#endif /* PXPY_SHARED_H */
