/*
 * watch.c - watches: readiness of a file descriptor the engine does not
 * own, reported on one chosen worker.
 *
 * A binding that runs an event loop of its own per worker (asyncio's, whose
 * selector is an epoll fd) needs its worker to wait for that loop's fd and
 * for its connections in one place, or one of the two waits starves the
 * other. A watch puts the fd into the worker's backend, one-shot, so the
 * owner decides when it wants the next report (after it ran its loop).
 *
 * Owners arm and stop a watch from any thread; only the holder of its
 * worker touches the backend. So px_watch_arm and px_watch_stop set a flag
 * under the watch's lock and post PX__MSG_WATCH_UPDATE, and the holder
 * reconciles the backend with the flags. An arm asked for from inside
 * on_ready posts nothing: the thread running on_ready reconciles when it
 * returns, directly when it still holds the worker, through the inbox when
 * the worker was handed off meanwhile.
 *
 * on_ready and on_done run from the worker's dispatch, inside the callback
 * bracket, so the monitor sees them as callbacks (a blocked one is handed
 * off) and a binding has its runtime there. on_done runs once the watch is
 * stopped, the backend released it and no on_ready runs: whoever comes last
 * of those queues it.
 */
#include "px_internal.h"

#include <errno.h>
#include <stdlib.h>

int px_watch_start(px_loop_t *loop, int worker, int fd, px_work_fn on_ready,
                   px_work_fn on_done, void *arg, px_watch_t **watch)
{
    if (on_ready == NULL || fd < 0 || worker < 0 || worker >= loop->nworkers)
        return -EINVAL;
    if (atomic_load(&loop->stopping) || !atomic_load(&loop->started))
        return PX_ESTOPPED;
    px_watch_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return -ENOMEM;
    x->loop = loop;
    x->worker = &loop->workers[worker];
    x->fd = fd;
    x->on_ready = on_ready;
    x->on_done = on_done;
    x->arg = arg;
    x->want_arm = true;
    /* The worker's (its list's, dropped after on_done; the ADD message
     * carries its own while in the inbox) and the caller's. */
    atomic_init(&x->refs, watch ? 2 : 1);
    pthread_mutex_init(&x->lock, NULL);
    px__q_init(&x->ready_node);
    px__q_init(&x->all_node);
    if (watch)
        *watch = x;
    int rc = px__worker_post(x->worker, PX__MSG_WATCH_ADD, x);
    if (rc < 0) {
        if (watch)
            *watch = NULL;
        pthread_mutex_destroy(&x->lock);
        free(x);
    }
    return rc;
}

int px_watch_arm(px_watch_t *x)
{
    pthread_mutex_lock(&x->lock);
    if (x->stop_requested) {
        pthread_mutex_unlock(&x->lock);
        return PX_ESTOPPED;
    }
    bool post = !x->want_arm && !x->running;
    x->want_arm = true;
    pthread_mutex_unlock(&x->lock);
    return post ? px__worker_post(x->worker, PX__MSG_WATCH_UPDATE, x) : 0;
}

void px_watch_stop(px_watch_t *x)
{
    pthread_mutex_lock(&x->lock);
    bool first = !x->stop_requested;
    x->stop_requested = true;
    pthread_mutex_unlock(&x->lock);
    if (first)
        px__worker_post(x->worker, PX__MSG_WATCH_UPDATE, x);
}

void px_watch_ref(px_watch_t *x) { atomic_fetch_add(&x->refs, 1); }

void px_watch_unref(px_watch_t *x)
{
    if (atomic_fetch_sub(&x->refs, 1) == 1) {
        pthread_mutex_destroy(&x->lock);
        free(x);
    }
}

/* ---- the holder's side ------------------------------------------------ */

static void queue_ready(px__worker_t *w, px_watch_t *x)
{
    if (x->queued)
        return;
    x->queued = true;
    px__q_push(&w->watch_ready, &x->ready_node);
}

/* Brings the backend in line with the flags, and queues the callback that
 * is due. Holder only, outside callbacks. */
static void reconcile(px__worker_t *w, px_watch_t *x)
{
    pthread_mutex_lock(&x->lock);
    bool stop = x->stop_requested && !x->stop_handled;
    if (stop)
        x->stop_handled = true;
    /* An arm waits while a report is pending or on_ready runs: the report
     * it asks for is the one after that. */
    bool arm = !x->stop_requested && x->want_arm && !x->running && !x->fired &&
               !x->armed;
    if (arm || (x->want_arm && x->armed))
        x->want_arm = false;
    pthread_mutex_unlock(&x->lock);

    if (stop) {
        x->armed = false;
        w->backend_ops->watch_stop(w, x); /* may report the release now */
    } else if (arm) {
        x->armed = true;
        if (w->backend_ops->watch_arm(w, x) < 0) {
            /* Reported as ready: the owner's read finds the error, as a
             * failed socket is reported writable. */
            px__on_watch_ready(w, x);
        }
    }
    pthread_mutex_lock(&x->lock);
    bool due = !x->running &&
               ((x->fired && !x->stop_requested) || (x->released && !x->done));
    pthread_mutex_unlock(&x->lock);
    if (due)
        queue_ready(w, x);
}

void px__on_watch_ready(px__worker_t *w, px_watch_t *x)
{
    x->armed = false;
    if (x->stop_handled)
        return;
    pthread_mutex_lock(&x->lock);
    x->fired = true;
    bool due = !x->running;
    pthread_mutex_unlock(&x->lock);
    if (due)
        queue_ready(w, x);
}

void px__on_watch_released(px__worker_t *w, px_watch_t *x)
{
    pthread_mutex_lock(&x->lock);
    x->released = true;
    bool due = !x->running;
    pthread_mutex_unlock(&x->lock);
    if (due)
        queue_ready(w, x);
}

void px__watch_handle_msg(px__worker_t *w, px__msg_t *m)
{
    px_watch_t *x = m->u.watch;
    if (m->kind == PX__MSG_WATCH_ADD) {
        px__q_push(&w->watches, &x->all_node);
        if (w->stopping) {
            pthread_mutex_lock(&x->lock);
            x->stop_requested = true;
            pthread_mutex_unlock(&x->lock);
        }
        /* The list holds the worker's reference from px_watch_start: taking
         * another here would leave one that nothing drops. */
    }
    /* done is the holder's to set: an update that arrives after on_done
     * (posted before it) has nothing left to do. */
    if (!x->done)
        reconcile(w, x);
}

bool px__watch_dispatch(px__worker_t *w, px_watch_t *x)
{
    x->queued = false;
    pthread_mutex_lock(&x->lock);
    if (x->running || x->done) {
        pthread_mutex_unlock(&x->lock);
        return true;
    }
    if (x->fired && !x->stop_requested) {
        x->fired = false;
        x->running = true;
        pthread_mutex_unlock(&x->lock);
        px__callback_enter(w);
        x->on_ready(x->arg);
        bool held = px__callback_leave(w);
        pthread_mutex_lock(&x->lock);
        x->running = false;
        pthread_mutex_unlock(&x->lock);
        if (!held) {
            /* The new holder carries on (re-arms, or runs on_done). */
            px__worker_post(w, PX__MSG_WATCH_UPDATE, x);
            return false;
        }
        reconcile(w, x);
        return true;
    }
    x->fired = false;
    if (!x->released) {
        pthread_mutex_unlock(&x->lock);
        return true;
    }
    x->done = true;
    pthread_mutex_unlock(&x->lock);
    px__q_remove(&x->all_node);
    bool held = true;
    if (x->on_done) {
        px__callback_enter(w);
        x->on_done(x->arg);
        held = px__callback_leave(w);
    }
    px_watch_unref(x); /* the worker's */
    return held;
}

void px__watches_stop_all(px__worker_t *w)
{
    for (px__qnode_t *n = w->watches.next; n != &w->watches;) {
        px_watch_t *x = px__container_of(n, px_watch_t, all_node);
        n = n->next;
        pthread_mutex_lock(&x->lock);
        x->stop_requested = true;
        pthread_mutex_unlock(&x->lock);
        reconcile(w, x);
    }
}
