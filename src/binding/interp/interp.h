/*
 * interp.h - mode "interpreters" as the rest of the binding sees it: the
 * calls that core/ and module.c make into this folder. What the files of
 * the folder share among themselves is in interp_internal.h.
 *
 * The folder holds everything that exists only because of this mode: the
 * worker interpreters (interp.c), cross-interpreter data (xi.c, names in
 * xi_names.c), work, timers and main-thread calls that cross interpreters
 * (xwork.c), protocols served in a worker's interpreter (xproto.c), and
 * the objects made to be shared between interpreters (sharedbuf.c,
 * channel.c). Outside it, a state's interp_index (PXPY_MAIN or a worker's)
 * and a Transport's xproto/main_peer fields are the only traces of the
 * mode; every branch on them calls a function declared here.
 */
#ifndef PXPY_INTERP_H
#define PXPY_INTERP_H

#include "binding.h"

#include <stdint.h>

#define PXPY_MAIN (-1)

struct pxpy_xcall_s;
struct pxpy_xi_s;

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

/* ---- worker interpreters (interp.c), for runtime.c ---------------------- */

/* Creates one interpreter per worker (main thread, attached). 0, or -1 with
 * an exception set (nothing is left behind). */
int pxpy_interps_start(pxpy_state *st, int workers);
/* Retires them once the loop's threads are joined (attached to the main
 * interpreter; loop_locked: the caller holds rt->loop_lock): drops what
 * the main interpreter's structures hold in them (the per-worker protocol
 * caches of listeners) and parks them for the next loop, which takes them
 * back when it has as many workers. */
void pxpy_interps_stop(pxpy_state *st, bool loop_locked);
/* Ends the parked worker interpreters (main thread, attached; at exit and
 * at the module's teardown). */
void pxpy_interps_end_parked(pxpy_state *st);
/* Fills memory[i] (at most n) with worker interpreter i's memory (see
 * interp.c); returns how many there are (0 outside this mode). */
int pxpy_interps_memory(pxpy_state *st, int64_t *memory, int n);

/* Engine thread hooks of this mode (runtime.c calls them). hold counts
 * the calling thread in worker's interpreter (see interp_internal.h) and
 * returns its thread state there, to attach; unhold ends the count, once
 * detached. Holds nest: an inner one returns the outer one's thread
 * state. */
PyThreadState *pxpy_interp_hold(pxpy_runtime_t *rt, int worker);
void pxpy_interp_unhold(void);
void pxpy_interp_thread_stop(pxpy_runtime_t *rt);

/* Attaches the calling engine thread to interpreter index (PXPY_MAIN or a
 * worker's), detaching whatever it was attached to; leave restores that.
 * Cheap when the thread is attached to index already. */
typedef struct {
    PyThreadState *previous;
    bool switched;
    struct pxpy_worker_interp_s *counted; /* the thread is counted in */
    struct pxpy_worker_interp_s *outer;   /* entered before, restored */
    int outer_index;
} pxpy_entered_t;
pxpy_entered_t pxpy_interp_enter(pxpy_runtime_t *rt, int index);
void pxpy_interp_leave(pxpy_entered_t e);

/* ---- work and calls across interpreters (xwork.c) ----------------------- */

/* submit_work() and timer() in mode "interpreters" (work.c validated the
 * arguments; kwnames excludes callback/errback). */
PyObject *pxpy_xwork_submit(pxpy_state *st, px_loop_t *loop, int worker,
                            PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, PyObject *const *kwvalues,
                            PyObject *callback, PyObject *errback);
/* call_from_main_thread(_and_wait) from a worker interpreter. */
PyObject *pxpy_xwork_call_main(pxpy_state *st, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames, bool wait);
/* An encoded call: run in the current interpreter (new reference or NULL
 * with an exception), and freed (any thread). */
PyObject *pxpy_xcall_invoke(pxpy_state *st, struct pxpy_xcall_s *xc);
void pxpy_xcall_free(struct pxpy_xcall_s *xc);
/* What a waited call's caller gets back: r encoded, or (r NULL) the
 * exception set, encoded and cleared. Owned by the caller's side. */
struct pxpy_xi_s *pxpy_xcall_outcome(pxpy_state *st, PyObject *r);
/* Timers of this mode (work.c's Timer holds the encoded call): run it in
 * the worker interpreter of the calling engine thread, reporting errors. */
struct pxpy_xcall_s *pxpy_xcall_new(pxpy_state *st, const char *fname,
                                    PyObject *func, PyObject *const *args,
                                    Py_ssize_t nargs);
void pxpy_xcall_run_on_worker(pxpy_runtime_t *rt, struct pxpy_xcall_s *xc,
                              const char *where);

/* ---- protocols across interpreters (xproto.c) --------------------------- */

/* What register() records on a transport in this mode (see xproto.c). */
typedef struct pxpy_xproto_s pxpy_xproto_t;

pxpy_xproto_t *pxpy_xproto_new(pxpy_state *st, PyObject *cls, int workers);
void pxpy_xproto_free(pxpy_xproto_t *x);
/* Has every worker's interpreter find a listener's class now (importing
 * its module), in work items, rather than at its first connection. */
void pxpy_xproto_prewarm(pxpy_state *st, pxpy_xproto_t *x, px_loop_t *loop);
/* For a connection accepted by a listener registered in this mode: its
 * protocol cache in the calling worker's interpreter (borrowed, made on
 * first use), with *st switched to that interpreter's state. NULL with an
 * exception. */
PyObject *pxpy_xproto_accept(pxpy_state **st, pxpy_xproto_t *x);
/* For a client connection served by this worker: a Transport of this
 * worker's interpreter, with the protocol cache found here, made the
 * connection's user data. NULL when that fails (reported; the main
 * interpreter's Transport is then released and the user data cleared). */
pxpy_transport_t *pxpy_xproto_client_open(pxpy_transport_t *main_t,
                                          px_conn_t *conn);
/* Drops the main interpreter's client Transport that a worker's stood
 * for: marks it closed and uncounts it, in the main interpreter. */
void pxpy_xproto_release_peer(pxpy_transport_t *peer);

/* ---- datagram endpoints across interpreters (xdgram.c) ------------------ */

/* register()'s counterpart for core/datagram.c: the protocol class
 * encoded by the main interpreter (NULL with an exception), and freed. */
struct pxpy_xi_s *pxpy_xdgram_encode_class(pxpy_state *st, PyObject *cls);
void pxpy_xdgram_free_class(struct pxpy_xi_s *cls);
/* On the endpoint's worker: the class found in that worker's interpreter
 * (new reference), with *st switched to its state; NULL with an
 * exception. */
PyObject *pxpy_xdgram_worker_class(pxpy_state **st,
                                   const struct pxpy_xi_s *cls);
/* Drops a reference to an object of the main interpreter (whose state is
 * st) from a worker's. */
void pxpy_xdgram_release_main(pxpy_state *st, PyObject *obj);

/* ---- shared containers (scont.c), for module.c --------------------------- */

/* Adds SharedDict, SharedList, SharedXList and _shared_containers(). */
int pxpy_scont_exec(PyObject *module, pxpy_state *st);

/* ---- shareable objects (channel.c), for runtime.c ------------------------ */

/* stats()["channels"]: the channels alive now (runtime-wide). */
PyObject *pxpy_channel_stats(pxpy_state *st);
/* Drops the runtime's reference to its list of channels. */
void pxpy_channel_free_list(pxpy_runtime_t *rt);

#endif /* PXPY_INTERP_H */
