/*
 * mainthread.h - the queue of calls for the main thread, as its users see
 * it: call_from_main_thread() and call_from_main_thread_and_wait() in the
 * main interpreter (mainthread.c) and from worker interpreters
 * (interp/xwork.c). run() runs the queued calls on the main thread.
 */
#ifndef PXPY_MAINTHREAD_H
#define PXPY_MAINTHREAD_H

#include "binding.h"

typedef enum { CALL_QUEUED, CALL_DONE, CALL_CANCELLED } call_state_t;

struct pxpy_xcall_s;
struct pxpy_xi_s;

/* A call queued for the main thread. A waited call lives on its waiter's
 * stack; the main thread's last touch is setting state, under the queue's
 * lock. A call that is not waited is PyMem_Raw memory that the main thread
 * frees once it ran the call. */
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

/* Queues c (not waited) for the main thread, which owns it from then on. */
void pxpy_mainthread_post(pxpy_runtime_t *rt, pxpy_call_t *c);
/* Queues c (waited) and waits, detached, until the main thread has run it.
 * Returns false, with c not queued or taken back, when the loop stops
 * first (or is stopping already): c's state is then CALL_CANCELLED and its
 * fields are still the caller's to free. */
bool pxpy_mainthread_post_and_wait(pxpy_runtime_t *rt, pxpy_call_t *c);

#endif /* PXPY_MAINTHREAD_H */
