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

#include <stdatomic.h>

/* ---- worker interpreters (interp.c) ------------------------------------- */

typedef struct {
    PyInterpreterState *interp;
    PyObject *module;  /* its pyparallel._core (its own object) */
    pxpy_state *st;    /* that module's state */
    int64_t id;        /* the interpreter's id */
    int64_t rss_bytes; /* RSS growth while it was created */
} pxpy_worker_interp_t;

struct pxpy_interps_s {
    int count;
    pxpy_worker_interp_t w[];
};

/* The state of pyparallel._core in interpreter index. */
pxpy_state *pxpy_interp_state(pxpy_runtime_t *rt, int index);

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

#endif /* PXPY_INTERP_INTERNAL_H */
