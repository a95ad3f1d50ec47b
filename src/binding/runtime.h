/*
 * runtime.h - what runtime.c (the loop's life, thread hooks, bookkeeping,
 * stats) and mainthread.c (run/run_once/stop and the main-thread queue)
 * share: the runtime's state. Nothing else includes it.
 *
 * Locking. rt->lock (a pthread mutex, never held while attaching or
 * calling Python) guards the main-thread queue, the flags and the protocol
 * handshake; rt->loop_lock (a PyMutex, which detaches while it waits)
 * serialises creating and retiring loops.
 */
#ifndef PXPY_RUNTIME_H
#define PXPY_RUNTIME_H

#include "binding.h"

#include <pthread.h>
#include <stdatomic.h>

typedef enum { CALL_QUEUED, CALL_DONE, CALL_CANCELLED } call_state_t;

/* A call queued for the main thread. A waited call lives on its waiter's
 * stack; the main thread's last touch is setting state, under rt->lock. */
typedef struct pxpy_call_s {
    struct pxpy_call_s *next;
    PyObject *func, *args, *kwargs;
    bool waited;
    call_state_t state;
    PyObject *result; /* waited: the result, or NULL with exc */
    PyObject *exc;
    /* A call from a worker interpreter (func, args and kwargs NULL):
     * the call encoded (xwork.c); when waited, its result or exception
     * comes back encoded too. */
    struct pxpy_xcall_s *xcall;
    struct pxpy_xi_s *xresult;
} pxpy_call_t;

struct pxpy_runtime_s {
    pxpy_state *st;
    PyInterpreterState *interp;
    unsigned long main_ident; /* the interpreter's main thread */

    PyMutex loop_lock;
    px_loop_t *_Atomic loop;
    px_loop_t *retired;               /* the previous, stopped loop */
    pxpy_interps_t *interps;          /* mode "interpreters": the workers'
                                         interpreters while the loop runs */
    struct pxpy_chanlist_s *channels; /* channel.c: the live channels */
    PyObject *listeners;              /* listening transports of this loop */

    _Atomic Py_ssize_t registered;
    _Atomic Py_ssize_t pending;
    _Atomic uint64_t errors;

    pthread_mutex_t lock;
    pthread_cond_t main_cond;     /* the main thread waits for calls */
    pthread_cond_t done_cond;     /* waiters of waited calls */
    pthread_cond_t protocol_cond; /* engine threads wait for register() */
    pxpy_call_t *head, *tail;
    bool stop_requested;
    bool shutting_down;
    bool in_run;
};

/* The loop, started in mode (NULL: the default) when there is none; NULL
 * with an exception set. */
px_loop_t *pxpy_runtime_ensure_loop(pxpy_state *st, PyObject *mode_name);
/* Stops the loop, if one runs: closes connections (connection_lost runs),
 * cancels work and timers, joins the threads. Main thread, attached. */
void pxpy_runtime_shutdown_loop(pxpy_state *st);
bool pxpy_runtime_is_main(pxpy_runtime_t *rt);

/* mainthread.c */
int pxpy_mainthread_exec(PyObject *module, pxpy_state *st);
/* Queues c for the main thread; rt->lock held. */
void pxpy_mainthread_push_locked(pxpy_runtime_t *rt, pxpy_call_t *c);
/* Marks every waited call cancelled and wakes its waiter; rt->lock held. */
void pxpy_mainthread_cancel_waited_locked(pxpy_runtime_t *rt);
/* Drops the calls still queued (module teardown). */
void pxpy_mainthread_free_queue(pxpy_runtime_t *rt);

#endif /* PXPY_RUNTIME_H */
