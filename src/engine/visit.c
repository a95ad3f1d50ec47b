/*
 * visit.c - running a function once on every thread of the loop
 * (px_loop_visit_threads).
 *
 * The owner keeps state per engine thread (the binding: a Python thread
 * state per interpreter) that only the thread itself may drop: CPython
 * binds a thread state to the OS thread that last ran it, and deleting it
 * from another thread leaves that binding dangling. A visit asks each
 * thread to run a function at a point where it runs no callback: a holder
 * at the top of its worker loop (woken from its poll), a spare woken on
 * its condition variable, a thread inside a long callback once it is out.
 * Threads started later never held what the visit is about, so they count
 * it as seen; a thread that ends first runs it on its way out.
 */
#include "px_internal.h"

#include <errno.h>

int px_loop_visit_threads(px_loop_t *loop, px_work_fn fn, void *arg)
{
    if (fn == NULL)
        return -EINVAL;
    pthread_mutex_lock(&loop->threads_lock);
    if (loop->threads_exit || atomic_load(&loop->stopping) ||
        !atomic_load(&loop->started)) {
        pthread_mutex_unlock(&loop->threads_lock);
        return PX_ESTOPPED;
    }
    if (loop->visits_left > 0) {
        pthread_mutex_unlock(&loop->threads_lock);
        return -EBUSY;
    }
    loop->visit_fn = fn;
    loop->visit_arg = arg;
    loop->visits_left = loop->nthreads;
    atomic_fetch_add(&loop->visit_epoch, 1);
    for (px__thread_t *t = loop->spares; t != NULL; t = t->next_spare)
        pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&loop->threads_lock);
    for (int i = 0; i < loop->nworkers; i++)
        px__worker_wake(&loop->workers[i]);
    return 0;
}

bool px__thread_visit_due(const px__thread_t *t)
{
    return atomic_load(&t->loop->visit_epoch) != t->visit_seen;
}

void px__thread_visit(px__thread_t *t)
{
    if (!px__thread_visit_due(t))
        return;
    px_loop_t *loop = t->loop;
    pthread_mutex_lock(&loop->threads_lock);
    t->visit_seen = atomic_load(&loop->visit_epoch);
    px_work_fn fn = loop->visit_fn;
    void *arg = loop->visit_arg;
    pthread_mutex_unlock(&loop->threads_lock);
    fn(arg);
    pthread_mutex_lock(&loop->threads_lock);
    loop->visits_left--;
    pthread_mutex_unlock(&loop->threads_lock);
}
