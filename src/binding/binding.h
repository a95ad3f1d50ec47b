/*
 * binding.h - what the files of the CPython binding (pyparallel._core) share.
 *
 * The binding turns engine callbacks into Python calls. Files:
 *   module.c     module definition, per-module state, exec slot, mode
 *   runtime.c    loop lifecycle, thread hooks, run/run_once/stop, the
 *                main-thread queue, submit_work, timers, stats
 *   transport.c  Transport type, server/client/register, protocol dispatch
 *   shared.c     xlist, protect/read_lock/write_lock, eternalize, misc
 *                introspection (rdtsc, gmtime, cpu_count, thread_seq_id)
 *
 * State: one pxpy_state per module object (per interpreter). The engine loop
 * belongs to the main interpreter's module; it is created on first use and
 * stopped when run() ends or the module is freed.
 */
#ifndef PXPY_BINDING_H
#define PXPY_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "px.h"

typedef enum {
    PXPY_MODE_THREADS = 0,       /* free-threaded: workers share the interpreter */
    PXPY_MODE_GIL = 1,           /* GIL build: workers share the main GIL */
    PXPY_MODE_INTERPRETERS = 2,  /* one own-GIL subinterpreter per worker */
} pxpy_mode_t;

typedef struct pxpy_runtime_s pxpy_runtime_t;   /* runtime.c */
typedef struct pxpy_shared_s pxpy_shared_t;     /* shared.c */

typedef struct {
    /* Heap types. */
    PyTypeObject *transport_type;
    PyTypeObject *timer_type;
    PyTypeObject *xlist_type;
    PyTypeObject *lock_guard_type;
    /* Exceptions: AsyncError is the root of the binding's own errors. */
    PyObject *async_error;
    PyObject *protection_error;
    /* Cached objects. */
    PyObject *logger;            /* logging.getLogger("pyparallel") */
    PyObject *future_type;       /* concurrent.futures.Future */
    PyObject *str_cache[32];     /* interned attribute names, see module.c */
    /* Sub-states owned by their files. */
    pxpy_runtime_t *runtime;
    pxpy_shared_t *shared;
    pxpy_mode_t mode;
} pxpy_state;

/* State lookups: from the module, from a type defined by the module, and
 * from the current interpreter's imported module. */
pxpy_state *pxpy_get_state(PyObject *module);
pxpy_state *pxpy_state_from_type(PyTypeObject *type);
/* The state of the module the engine loop belongs to (valid while the loop
 * runs; used from engine callbacks, whose thread has attached to the
 * interpreter). */

/* Each file's part of the exec slot, traverse and clear. */
int pxpy_runtime_exec(PyObject *module, pxpy_state *st);
int pxpy_runtime_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_runtime_free(pxpy_state *st);
int pxpy_transport_exec(PyObject *module, pxpy_state *st);
int pxpy_shared_exec(PyObject *module, pxpy_state *st);
int pxpy_shared_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_shared_free(pxpy_state *st);

/* The engine loop, started on first use; NULL with an exception set. */
px_loop_t *pxpy_loop(pxpy_state *st);
/* Registration bookkeeping: run() ends when nothing is registered and no
 * work is pending. */
void pxpy_registered_add(pxpy_state *st, Py_ssize_t delta);
/* Reports an exception raised by a callback that nobody handled: logs it
 * with its traceback on the "pyparallel" logger and counts it in
 * stats()["errors"]. Called with the exception set; clears it. */
void pxpy_report_callback_error(pxpy_state *st, const char *where);

/* Converts an engine error code to a Python exception (OSError for errno
 * values, AsyncError otherwise) and returns NULL. */
PyObject *pxpy_raise_engine_error(pxpy_state *st, int code,
                                  const char *context);

#endif /* PXPY_BINDING_H */
