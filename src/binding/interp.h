/*
 * interp.h - what the files of the interpreters mode share: the worker
 * interpreters (interp.c), cross-interpreter data (xi.c), work, timers and
 * main-thread calls that cross interpreters (xwork.c), and the shareable
 * objects (sharedbuf.c, channel.c).
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
#ifndef PXPY_INTERP_H
#define PXPY_INTERP_H

#include "runtime.h"

#include <stdatomic.h>
#include <stdint.h>

#define PXPY_MAIN (-1)

struct pxpy_xcall_s;

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

/* Creates one interpreter per worker (main thread, attached). 0, or -1 with
 * an exception set (nothing is left behind). */
int pxpy_interps_start(pxpy_state *st, int workers);
/* Ends them once the loop's threads are joined (attached to the main
 * interpreter; loop_locked: the caller holds rt->loop_lock): first drops
 * what the main interpreter's structures hold in them (the per-worker
 * protocol caches of listeners). */
void pxpy_interps_stop(pxpy_state *st, bool loop_locked);
/* Fills memory[i] (at most n) with worker interpreter i's memory (see
 * interp.c); returns how many there are (0 outside this mode). */
int pxpy_interps_memory(pxpy_state *st, int64_t *memory, int n);

/* Engine thread hooks of this mode (runtime.c calls them). */
PyThreadState *pxpy_interp_thread_tstate(pxpy_runtime_t *rt, int worker);
void pxpy_interp_thread_stop(pxpy_runtime_t *rt);

/* Attaches the calling engine thread to interpreter index (PXPY_MAIN or a
 * worker's), detaching whatever it was attached to; leave restores that.
 * Cheap when the thread is attached to index already. */
typedef struct {
    PyThreadState *previous;
    bool switched;
} pxpy_entered_t;
pxpy_entered_t pxpy_interp_enter(pxpy_runtime_t *rt, int index);
void pxpy_interp_leave(pxpy_entered_t e);

/* The state of pyparallel._core in interpreter index. */
pxpy_state *pxpy_interp_state(pxpy_runtime_t *rt, int index);

/* Whether st belongs to a worker interpreter. */
static inline bool pxpy_in_worker_interp(const pxpy_state *st)
{
    return st->interp_index != PXPY_MAIN;
}

/* The error for API that a worker interpreter cannot use; returns NULL. */
PyObject *pxpy_not_in_worker_interp(pxpy_state *st, const char *what);

/* Reports the exception set in a worker interpreter through the main
 * interpreter's "pyparallel" logger, with the worker's traceback (so that
 * logging configured in the main interpreter sees it); counts it. */
void pxpy_interp_report_error(pxpy_state *st, const char *where);

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
/* stats()["channels"]: the channels alive now (runtime-wide). */
PyObject *pxpy_channel_stats(pxpy_state *st);
/* Drops the runtime's reference to its list of channels. */
void pxpy_channel_free_list(pxpy_runtime_t *rt);

/* ---- work across interpreters (xwork.c) --------------------------------- */

/* submit_work() and timer() in mode "interpreters" (work.c validated the
 * arguments; kwnames excludes callback/errback). */
PyObject *pxpy_xwork_submit(pxpy_state *st, px_loop_t *loop,
                            PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, PyObject *const *kwvalues,
                            PyObject *callback, PyObject *errback);
int pxpy_xwork_exec(PyObject *module, pxpy_state *st);
/* call_from_main_thread(_and_wait) from a worker interpreter. */
PyObject *pxpy_xwork_call_main(pxpy_state *st, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames, bool wait);
/* An encoded call: run in the current interpreter (new reference or NULL
 * with an exception), and freed (any thread). */
PyObject *pxpy_xcall_invoke(pxpy_state *st, struct pxpy_xcall_s *xc);
void pxpy_xcall_free(struct pxpy_xcall_s *xc);
/* Timers of this mode (work.c's Timer holds the encoded call): run it in
 * the worker interpreter of the calling engine thread, reporting errors. */
struct pxpy_xcall_s *pxpy_xcall_new(pxpy_state *st, const char *fname,
                                    PyObject *func, PyObject *const *args,
                                    Py_ssize_t nargs);
void pxpy_xcall_run_on_worker(pxpy_runtime_t *rt, struct pxpy_xcall_s *xc,
                              const char *where);

/* ---- protocols across interpreters (protocol.c) ------------------------- */

/* What register() records on a transport in this mode: the class, encoded
 * (found by name, or made again from its recipe), and for a listener the
 * class's protocol cache in each worker interpreter (each entry an object
 * of that worker's interpreter, created by the first connection it
 * accepts). */
typedef struct pxpy_xproto_s {
    pxpy_xi_t *cls;
    int count;
    PyObject *per_worker[];
} pxpy_xproto_t;

pxpy_xproto_t *pxpy_xproto_new(pxpy_state *st, PyObject *cls, int workers);
void pxpy_xproto_free(pxpy_xproto_t *x);
/* Drops worker index's protocol caches of every listener (in that worker's
 * interpreter, at loop stop). */
void pxpy_xproto_clear_worker(pxpy_xproto_t *x, int index);
/* Has every worker's interpreter find a listener's class now (importing
 * its module), in work items, rather than at its first connection. */
void pxpy_xproto_prewarm(pxpy_state *st, pxpy_xproto_t *x, px_loop_t *loop);

#endif /* PXPY_INTERP_H */
