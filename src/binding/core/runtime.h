/*
 * runtime.h - what runtime.c (the loop's life, thread hooks, bookkeeping,
 * stats) and mainthread.c (run/run_once/stop and the main-thread queue)
 * share: the runtime's state. Besides those two, only interp/interp.c
 * includes it: it creates and ends the worker interpreters that the
 * runtime holds (rt->interps, under rt->loop_lock). Everything else goes
 * through functions (binding.h, core/mainthread.h).
 *
 * Locking. rt->lock (a pthread mutex, never held while attaching or
 * calling Python) guards the main-thread queue, the flags and the protocol
 * handshake; rt->loop_lock (a PyMutex, which detaches while it waits)
 * serialises creating and retiring loops.
 */
#ifndef PXPY_RUNTIME_H
#define PXPY_RUNTIME_H

#include "binding.h"
#include "core/gcpace.h"
#include "core/mainthread.h"

#include <pthread.h>
#include <stdatomic.h>

struct pxpy_runtime_s {
    pxpy_state *st;
    PyInterpreterState *interp;
    unsigned long main_ident; /* the interpreter's main thread */

    PyMutex loop_lock;
    px_loop_t *_Atomic loop;
    px_loop_t *retired;      /* the previous, stopped loop */
    pxpy_interps_t *interps; /* mode "interpreters": the workers'
                                interpreters while the loop runs */
    /* Mode threads or gil on a free-threaded interpreter whose collector's
     * pacing drifts: the workers pace it (gcpace.c); NULL otherwise. Made
     * with the first such loop, kept for the runtime's life. */
    pxpy_gcpace_t *gcpace;
    bool gcpace_probed;
    pxpy_interps_t *parked_interps;   /* the same between loops: kept for
                                         the next loop (interp/interp.c) */
    struct pxpy_chanlist_s *channels; /* channel.c: the live channels */
    PyObject *listeners;              /* listening transports of this loop */

    _Atomic Py_ssize_t registered;
    _Atomic Py_ssize_t pending;
    _Atomic uint64_t errors;
    /* SystemExit escaped a callback in a worker interpreter: its state is
     * not to be trusted (stats()["broken_interpreters"]). */
    _Atomic uint64_t broken_interps;
    /* interp/: the generations handed out to worker interpreters; the
     * replacements of one (recycle.c), done and failed, and the lock that
     * keeps one at a time and the loop's end from meeting one half done. */
    _Atomic uint64_t interp_generations;
    _Atomic uint64_t recycled_interps;
    atomic_bool broken_worker[PX_MAX_WORKERS]; /* read by _broken_workers */
    _Atomic uint64_t recycle_failures;
    PyMutex recycle_lock;

    pthread_mutex_t lock;
    pthread_cond_t main_cond;     /* the main thread waits for calls */
    pthread_cond_t done_cond;     /* waiters of waited calls */
    pthread_cond_t protocol_cond; /* engine threads wait for register() */
    pxpy_call_t *head, *tail;
    bool stop_requested;
    bool shutting_down;
    bool loop_stopped; /* the stopping thread's px_loop_stop returned */
    /* When the graceful stop began (its drain), so that drain and stop
     * share one graceful_timeout; 0: the stop itself begins it. */
    uint64_t stop_began_ns;
    /* A graceful stop began: draining() is true, also during its delay,
     * while the listeners still accept. */
    atomic_bool drain_announced;
    bool in_run;
};

/* The loop, started in mode (NULL: the default) when there is none; NULL
 * with an exception set. */
px_loop_t *pxpy_runtime_ensure_loop(pxpy_state *st, PyObject *mode_name);
/* Stops the loop, if one runs: closes connections (connection_lost runs),
 * cancels work and timers, joins the threads. Main thread, attached.
 * With watch_signals, the signal handlers run while it waits (a second
 * SIGTERM must be able to end the process); an exception they raise is
 * left set. A stop that takes longer than timeout_ns (0: no limit) means a
 * callback does not return: the process then exits with status 1 and a
 * line on stderr, since its threads can be neither joined nor abandoned
 * to a finalising interpreter. */
void pxpy_runtime_shutdown_loop(pxpy_state *st, uint64_t timeout_ns,
                                bool watch_signals);
bool pxpy_runtime_is_main(pxpy_runtime_t *rt);

/* mainthread.c (its queue's interface is core/mainthread.h) */
int pxpy_mainthread_exec(PyObject *module, pxpy_state *st);
/* Marks every waited call cancelled and wakes its waiter; rt->lock held. */
void pxpy_mainthread_cancel_waited_locked(pxpy_runtime_t *rt);
/* Drops the calls still queued (module teardown). */
void pxpy_mainthread_free_queue(pxpy_runtime_t *rt);

#endif /* PXPY_RUNTIME_H */
