/*
 * interp_internal.h - what the files of mode "interpreters" share among
 * themselves (interp.h declares what the rest of the binding calls).
 *
 * In mode "interpreters" every worker owns one subinterpreter with its own
 * GIL, created when the loop starts and ended when it stops. Interpreters
 * are named by an index: PXPY_MAIN (-1) for the main interpreter, 0..N-1
 * for the workers'. Each worker interpreter imports pyparallel._core; its
 * module state shares the main state's runtime (the loop, its counters and
 * locks), so most of the binding works unchanged there. Python objects
 * never cross: what crosses is cross-interpreter data (pxpy_xi_t), plain C
 * memory that any interpreter decodes into objects of its own.
 *
 * Thread states. An engine thread keeps one PyThreadState per interpreter
 * it has run Python in (a worker slot moves between threads on hand-off,
 * so any thread may run any worker's interpreter), created on first use
 * and deleted when the thread ends. A thread holds at most one
 * interpreter's GIL at a time: pxpy_interp_enter detaches from the current
 * interpreter before it attaches to another, so two threads can never wait
 * for each other's GILs.
 */
#ifndef PXPY_INTERP_INTERNAL_H
#define PXPY_INTERP_INTERNAL_H

#include "interp/interp.h"
#include "shared/shared.h"

#include <stdatomic.h>

/* ---- worker interpreters (interp.c) ------------------------------------- */

/* One worker interpreter. A worker's interpreter can be replaced while the
 * loop runs (recycle.c), so a thread that enters it is counted in it
 * (active) for as long as it may run Python there, and the engine threads'
 * thread states in it are counted too (tstates): the replacement ends it
 * once both are zero. Only its own thread may delete a thread state (CPython
 * binds it to that OS thread), so each engine thread deletes its own in a
 * replaced interpreter: when it next enters the worker's, or when the
 * replacement visits the threads (px_loop_visit_threads). The record of a
 * replaced interpreter is kept until the interpreters end, since a thread
 * may still be reading it. */
typedef struct pxpy_worker_interp_s pxpy_worker_interp_t;
struct pxpy_worker_interp_s {
    PyInterpreterState *interp;
    PyObject *module;   /* its pyparallel._core (its own object) */
    pxpy_state *st;     /* that module's state */
    int64_t id;         /* the interpreter's id */
    int64_t rss_bytes;  /* RSS growth while it was created */
    atomic_int active;  /* engine threads counted in it */
    atomic_int tstates; /* engine threads' thread states in it */
    bool ended;         /* replaced, and then ended */
    pxpy_worker_interp_t *next_retired;
};

struct pxpy_interps_s {
    int count;
    /* Replaced ones, kept (see above); those not ended yet (threads of
     * their own still ran) end with the others. */
    pxpy_worker_interp_t *retired;
    pxpy_worker_interp_t *_Atomic w[];
};

/* The state of pyparallel._core in interpreter index. */
pxpy_state *pxpy_interp_state(pxpy_runtime_t *rt, int index);

/* For recycle.c. A new interpreter for worker index, set up as at the
 * loop's start (main interpreter, attached); NULL with an exception. */
pxpy_worker_interp_t *pxpy_interp_create(pxpy_state *st, int index);
/* Makes w worker index's interpreter; returns the one it replaces once no
 * thread is counted in that one any more (detached while it waits). */
pxpy_worker_interp_t *pxpy_interp_swap(pxpy_runtime_t *rt, int index,
                                       pxpy_worker_interp_t *w);
/* What each engine thread runs when a replacement visits it (arg: the
 * runtime): deletes its thread states in replaced interpreters. */
void pxpy_interp_drop_replaced(void *arg);
/* Ends a replaced interpreter once no engine thread has a thread state in
 * it any more (main interpreter, attached; waits detached, up to
 * timeout_ns), unless threads of its own still run; either way its record
 * joins the retired ones, and one not ended then ends with the others.
 * NULL once ended, else why it was kept. */
const char *pxpy_interp_end_replaced(pxpy_state *st, pxpy_worker_interp_t *old,
                                     uint64_t timeout_ns);
/* Runs xc in w, a new interpreter not serving yet, on the calling thread
 * (main interpreter, attached, which it is again after): 0, or -1 with
 * the exception it raised there, decoded here. */
int pxpy_interp_prepare(pxpy_state *st, pxpy_worker_interp_t *w,
                        struct pxpy_xcall_s *xc);
/* Ends a new interpreter that never served (main interpreter, attached). */
void pxpy_interp_discard(pxpy_worker_interp_t *w);
/* Adds _recycle_worker() and _retire_worker() (recycle.c). */
int pxpy_recycle_exec(PyObject *module, pxpy_state *st);

/* ---- cross-interpreter data (xi.c) -------------------------------------- */

/* Encoded in one interpreter, decoded in any other; owns references to the
 * shareable handles it carries. */
typedef struct pxpy_xi_s pxpy_xi_t;

/* Encodes obj; who names it in errors ("submit_work() argument"). NULL
 * with TypeError when obj cannot cross (naming the rule and the modes that
 * need no crossing). */
pxpy_xi_t *pxpy_xi_encode(pxpy_state *st, PyObject *obj, const char *who);
/* Encodes a callable by reference (module and qualified name) when it is a
 * module-level function, class or builtin, by pickling otherwise; lambdas,
 * nested functions and what pickle refuses get an error naming the rule. */
pxpy_xi_t *pxpy_xi_encode_callable(pxpy_state *st, PyObject *func,
                                   const char *who);
/* Encodes the exception set (clearing it): the exception pickled when it
 * can be, and its formatted traceback. */
pxpy_xi_t *pxpy_xi_encode_exception(pxpy_state *st);
/* Encodes a value a shared container holds (who names the container in
 * errors: "px.dict value"): None, bool, int, float, str, bytes, tuples of
 * those and SharedBuffers only; TypeError, saying what to store instead,
 * for anything else. */
pxpy_xi_t *pxpy_xi_encode_value(pxpy_state *st, PyObject *obj, const char *who);
/* A copy that owns references of its own to the handles in it; NULL with
 * MemoryError. Any thread, no thread state needed beyond the error. */
pxpy_xi_t *pxpy_xi_dup(const pxpy_xi_t *xi);
/* Whether a and b hold the same data, and a hash of the data (a shared
 * dict compares and hashes keys in this form; see sdict.c). */
bool pxpy_xi_equal(const pxpy_xi_t *a, const pxpy_xi_t *b);
uint64_t pxpy_xi_hash(const pxpy_xi_t *xi);
/* The bytes xi takes in memory. */
size_t pxpy_xi_size(const pxpy_xi_t *xi);
/* Decodes into new objects of the current interpreter (st is its state).
 * A decoded exception comes back as the exception object, with the
 * traceback text of where it was raised as its __cause__. */
PyObject *pxpy_xi_decode(pxpy_state *st, const pxpy_xi_t *xi);
/* Whether xi holds an exception (from pxpy_xi_encode_exception). */
bool pxpy_xi_is_exception(const pxpy_xi_t *xi);
void pxpy_xi_free(pxpy_xi_t *xi);

int pxpy_xi_exec(PyObject *module, pxpy_state *st);
int pxpy_xi_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_xi_free_state(pxpy_state *st);
/* RuntimeError naming fname when the calling worker interpreter is
 * importing the main script (work started from its top level); else 0. */
int pxpy_xi_check_bootstrapped(pxpy_state *st, const char *fname);
/* Whether obj travels by name rather than pickled (xi_names.c): functions,
 * classes, and functions of modules (builtins). */
bool pxpy_xi_by_name(PyObject *obj);
/* The TypeError for obj, which who names, that cannot cross by name
 * because it "what"; returns -1. */
int pxpy_xi_name_error(const char *who, PyObject *obj, const char *what);
/* module and qualname of a class or function that can be found by name
 * from another interpreter, as new str objects; -1 with an error naming
 * the rule (who: "register() protocol"). */
int pxpy_xi_name_of(pxpy_state *st, PyObject *obj, const char *who,
                    PyObject **module, PyObject **qualname);

/* ---- shareable handles (sharedbuf.c, channel.c) ------------------------- */

typedef struct pxpy_region_s pxpy_region_t; /* a SharedBuffer's memory */
typedef struct pxpy_chan_s pxpy_chan_t;     /* a Channel's queue */
typedef struct pxpy_scont_s pxpy_scont_t;   /* a shared container */

/* The region behind a SharedBuffer object (NULL if obj is not one of this
 * interpreter's), borrowed; and a new SharedBuffer for a region (which it
 * references). The same for a Channel's queue. */
pxpy_region_t *pxpy_sharedbuf_region(pxpy_state *st, PyObject *obj);
PyObject *pxpy_sharedbuf_wrap(pxpy_state *st, pxpy_region_t *region);
void pxpy_region_ref(pxpy_region_t *region);
void pxpy_region_unref(pxpy_region_t *region);
int pxpy_sharedbuf_exec(PyObject *module, pxpy_state *st);

pxpy_chan_t *pxpy_channel_queue(pxpy_state *st, PyObject *obj);
PyObject *pxpy_channel_wrap(pxpy_state *st, pxpy_chan_t *chan);
void pxpy_chan_ref(pxpy_chan_t *chan);
void pxpy_chan_unref(pxpy_chan_t *chan);
int pxpy_channel_exec(PyObject *module, pxpy_state *st);

/* The container behind a shared px.dict, px.list or px.xlist of this
 * interpreter (NULL if obj is none), borrowed; a new object of this
 * interpreter over a container (which it references). */
pxpy_scont_t *pxpy_scont_of(pxpy_state *st, PyObject *obj);
PyObject *pxpy_scont_wrap(pxpy_state *st, pxpy_scont_t *c);
void pxpy_scont_ref(pxpy_scont_t *c);
void pxpy_scont_unref(pxpy_scont_t *c);

/* ---- shared containers (scont.c, sdict.c, slist.c, sxlist.c) ------------ */

/* What px.dict(), px.list() and px.xlist() make in mode "interpreters":
 * one container in raw memory that every interpreter sees, each through an
 * object of its own (as a SharedBuffer's region). Every kind starts with
 * this header; refs counts the objects over it and cross-interpreter data
 * in flight; lock is the container's RWLock core (NULL for the xlist,
 * which has a mutex of its own and no read/write locks). */
typedef enum {
    PXPY_SCONT_DICT,
    PXPY_SCONT_LIST,
    PXPY_SCONT_XLIST,
} pxpy_scont_kind_t;

struct pxpy_scont_s {
    _Atomic size_t refs;
    pxpy_scont_kind_t kind;
    pxpy_rwcore_t *lock;
    /* Frees what the kind holds (its items), then nothing else. */
    void (*clear)(pxpy_scont_t *c);
};

/* The object type of every kind: the header is all it holds. */
typedef struct {
    PyObject_HEAD
    pxpy_scont_t *c;
} pxpy_scont_object_t;

/* A new zero-filled container of size bytes (a kind's struct), its header
 * set (one reference, a new lock when locked); NULL with MemoryError. */
void *pxpy_scont_alloc(size_t size, pxpy_scont_kind_t kind, bool locked,
                       void (*clear)(pxpy_scont_t *c));
/* f(items) for a snapshot (a new reference, released; NULL: passed on),
 * and the reversed iterator of a list, for such calls. */
PyObject *pxpy_scont_apply(PyObject *items, PyObject *(*f)(PyObject *));
PyObject *pxpy_scont_reversed_iter(PyObject *list);
/* A new object of the kind's type for c; steals the caller's reference. */
PyObject *pxpy_scont_new_object(PyTypeObject *type, pxpy_scont_t *c);
/* Takes and releases c's lock (see pxpy_rwcore_take). */
int pxpy_scont_lock(pxpy_scont_t *c, int exclusive);
void pxpy_scont_unlock(pxpy_scont_t *c, int exclusive);
/* The slots and methods every locked kind shares: __px_rwlock__, pickling
 * refused, the GC's view of the object. */
void pxpy_scont_dealloc(PyObject *op);
int pxpy_scont_traverse(PyObject *op, visitproc visit, void *arg);
PyObject *pxpy_scont_reduce(PyObject *op, PyObject *ignored);
PyObject *pxpy_scont_get_rwlock(PyObject *op, void *closure);
/* Decodes n values (consumed, whatever happens) into a new list; NULL
 * with an exception. */
PyObject *pxpy_scont_decode_all(pxpy_state *st, pxpy_xi_t **xis, Py_ssize_t n);
void pxpy_scont_free_all(pxpy_xi_t **xis, Py_ssize_t n);

/* Makes a kind's type from spec into *slot (a field of the state) and adds
 * it to the module. */
int pxpy_scont_add_type(PyObject *module, PyType_Spec *spec,
                        PyTypeObject **slot);
int pxpy_sdict_exec(PyObject *module, pxpy_state *st);
int pxpy_slist_exec(PyObject *module, pxpy_state *st);
int pxpy_sxlist_exec(PyObject *module, pxpy_state *st);

/* ---- work across interpreters (xwork.c) --------------------------------- */

int pxpy_xwork_exec(PyObject *module, pxpy_state *st);

/* ---- protocols across interpreters (xproto.c) --------------------------- */

/* What register() records on a transport in this mode: the class, encoded
 * (found by name, or made again from its recipe), and for a listener the
 * class's protocol cache in each worker interpreter (each entry an object
 * of that worker's interpreter, created by the first connection it
 * accepts). */
struct pxpy_xproto_s {
    pxpy_xi_t *cls;
    int count;
    PyObject *per_worker[];
};

/* Drops worker index's protocol caches of every listener (in that worker's
 * interpreter, at loop stop). */
void pxpy_xproto_clear_worker(pxpy_xproto_t *x, int index);

/* ---- SharedDict keys (skey.c) ------------------------------------------ */

/* A key encoded for a lookup (match only) or an insertion (key too, when
 * the form it is given back in differs from its matching form). */
typedef struct {
    pxpy_xi_t *key, *match;
    uint64_t hash;
} pxpy_skey_t;

/* Encodes k; with insert, also as it will be given back. 0, or -1 with
 * TypeError/ValueError for what cannot be a key. */
int pxpy_skey_make(pxpy_state *st, PyObject *k, bool insert, pxpy_skey_t *out);
/* The form lookups compare. */
const pxpy_xi_t *pxpy_skey_match(const pxpy_skey_t *k);
void pxpy_skey_free(pxpy_skey_t *k);

#endif /* PXPY_INTERP_INTERNAL_H */
