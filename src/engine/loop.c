/*
 * loop.c - the loop object: options, backend choice, start and clean
 * shutdown, listeners' life (net.c makes them), placing new work and
 * outgoing connections, work submission and statistics.
 *
 * Shutdown, in order: px_loop_stop marks the loop stopping, fails the
 * connections still waiting for a name (net.c's resolver), posts STOP to
 * every worker; each worker stops accepting, aborts its connections (their
 * on_close callbacks run), cancels its timers and queued work (their cancel
 * callbacks run), and finishes once nothing refers to it. Then the monitor
 * and every thread, spares included, are joined.
 */
#include "px_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return fallback;
    char *end;
    long n = strtol(v, &end, 10);
    return (*end == '\0' && n > 0 && n <= 1 << 20) ? (int)n : fallback;
}

static void fill_defaults(px_loop_options_t *o)
{
    if (o->workers <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        o->workers = env_int("PYPARALLEL_WORKERS", cpus > 0 ? (int)cpus : 1);
    }
    if (o->workers > PX_MAX_WORKERS)
        o->workers = PX_MAX_WORKERS;
    if (o->backend == PX_BACKEND_AUTO) {
        const char *io = getenv("PYPARALLEL_IO");
        if (io && strcasecmp(io, "epoll") == 0)
            o->backend = PX_BACKEND_EPOLL;
        else if (io && (strcasecmp(io, "uring") == 0 ||
                        strcasecmp(io, "io_uring") == 0))
            o->backend = PX_BACKEND_URING;
    }
    if (o->max_send_buffer == 0)
        o->max_send_buffer = 16u << 20;
    if (o->hog_threshold == 0)
        o->hog_threshold = 1u << 20;
    if (o->handoff_ms == 0)
        o->handoff_ms = 10;
    if (o->close_linger_ms == 0)
        o->close_linger_ms = 30000;
    if (o->max_threads == 0)
        o->max_threads = (unsigned)env_int("PYPARALLEL_MAX_THREADS", 256);
    if (o->max_threads < (unsigned)o->workers + 1)
        o->max_threads = (unsigned)o->workers + 1;
}

void px_loop_options_init(px_loop_options_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    fill_defaults(opts);
}

static const px__backend_ops_t *choose_backend(px_backend_kind_t kind)
{
    switch (kind) {
    case PX_BACKEND_URING:
        return px__uring_available() ? &px__backend_uring : NULL;
    case PX_BACKEND_EPOLL:
        return &px__backend_epoll;
    case PX_BACKEND_AUTO:
    default:
        return px__uring_available() ? &px__backend_uring : &px__backend_epoll;
    }
}

int px_loop_new(px_loop_t **out, const px_loop_options_t *opts)
{
    px_loop_t *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return -ENOMEM;
    if (opts)
        loop->opts = *opts;
    fill_defaults(&loop->opts);
    loop->backend_ops = choose_backend(loop->opts.backend);
    if (loop->backend_ops == NULL) {
        free(loop);
        return PX_ENOBACKEND;
    }
    /* A peer that goes away must not kill the process through SIGPIPE
     * (sendfile has no MSG_NOSIGNAL). Only the default disposition is
     * changed: a handler the application installed stays. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
    pthread_mutex_init(&loop->threads_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&loop->monitor_wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&loop->finished_cond, NULL);
    pthread_mutex_init(&loop->listeners_lock, NULL);
    px__q_init(&loop->listeners);
    int rc = px__resolver_new(loop);
    if (rc < 0) {
        px_loop_free(loop);
        return rc;
    }
    loop->nworkers = loop->opts.workers;
    loop->workers = calloc((size_t)loop->nworkers, sizeof(px__worker_t));
    if (loop->workers == NULL) {
        px_loop_free(loop);
        return -ENOMEM;
    }
    for (int i = 0; i < loop->nworkers; i++) {
        rc = px__worker_init(loop, &loop->workers[i], i);
        if (rc < 0) {
            loop->nworkers = i;
            px_loop_free(loop);
            return rc;
        }
    }
    *out = loop;
    return 0;
}

int px_loop_start(px_loop_t *loop)
{
    if (atomic_exchange(&loop->started, true))
        return PX_EBADSTATE;
    int rc = px__threads_start(loop);
    if (rc == 0)
        rc = px__monitor_start(loop);
    return rc;
}

void px__loop_worker_finished(px_loop_t *loop, px__worker_t *w)
{
    (void)w;
    pthread_mutex_lock(&loop->threads_lock);
    loop->workers_finished++;
    pthread_cond_broadcast(&loop->finished_cond);
    pthread_mutex_unlock(&loop->threads_lock);
}

int px_loop_stop(px_loop_t *loop)
{
    if (px_current_worker() >= 0)
        return PX_EBADSTATE; /* a loop thread would wait for itself */
    if (atomic_exchange(&loop->stopping, true))
        return 0;
    /* Before the workers stop: the connections still waiting for their
     * names are handed to them, failed, so their on_close runs. */
    px__resolver_detach(loop);
    if (!atomic_load(&loop->started))
        return 0;
    /* File results go to the workers: finish them while they still run. */
    px__files_stop(loop);
    for (int i = 0; i < loop->nworkers; i++)
        px__worker_post(&loop->workers[i], PX__MSG_STOP, NULL);
    pthread_mutex_lock(&loop->threads_lock);
    while (loop->workers_finished < loop->nworkers)
        pthread_cond_wait(&loop->finished_cond, &loop->threads_lock);
    pthread_mutex_unlock(&loop->threads_lock);
    px__threads_join(loop);
    return 0;
}

void px_loop_free(px_loop_t *loop)
{
    if (loop == NULL)
        return;
    px__files_free(loop);
    /* A loop that never ran was never stopped; its workers' inboxes still
     * take (and px__worker_destroy drops) what the resolver hands over. */
    px__resolver_detach(loop);
    if (loop->workers) {
        for (int i = 0; i < loop->nworkers; i++)
            px__worker_destroy(&loop->workers[i]);
        free(loop->workers);
    }
    px__qnode_t *n;
    while ((n = px__q_pop(&loop->listeners)) != NULL) {
        px_listener_t *l = px__container_of(n, px_listener_t, node);
        int fd = atomic_load(&l->fd);
        if (fd >= 0)
            close(fd);
        px__listener_unlink(l);
        free(l);
    }
    px__resolver_release(loop);
    pthread_mutex_destroy(&loop->listeners_lock);
    pthread_cond_destroy(&loop->finished_cond);
    pthread_cond_destroy(&loop->monitor_wake);
    pthread_mutex_destroy(&loop->threads_lock);
    free(loop);
}

int px_loop_worker_count(const px_loop_t *loop) { return loop->nworkers; }

const char *px_loop_backend_name(const px_loop_t *loop)
{
    return loop->backend_ops->name;
}

/* ---- listeners -------------------------------------------------------- */

px_listener_t *px__listener_new(px_loop_t *loop, int fd, int port,
                                const px_conn_callbacks_t *cbs, void *conn_data)
{
    px_listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->loop = loop;
    atomic_init(&l->fd, fd);
    l->port = port;
    l->cbs = *cbs;
    l->conn_data = conn_data;
    return l;
}

void px__listener_publish(px_listener_t *l)
{
    px_loop_t *loop = l->loop;
    pthread_mutex_lock(&loop->listeners_lock);
    px__q_push(&loop->listeners, &l->node);
    pthread_mutex_unlock(&loop->listeners_lock);
    for (int i = 0; i < loop->nworkers; i++)
        px__worker_post(&loop->workers[i], PX__MSG_LISTEN, l);
}

int px_listener_port(const px_listener_t *l) { return l->port; }

void px_listener_close(px_listener_t *l)
{
    px_loop_t *loop = l->loop;
    if (atomic_exchange(&l->closing, true))
        return;
    for (int i = 0; i < loop->nworkers; i++)
        px__worker_post(&loop->workers[i], PX__MSG_UNLISTEN, l);
}

/* Closes the listening socket once no worker accepts on it any more. */
static void listener_maybe_close(px__worker_t *w, px_listener_t *l)
{
    if (atomic_load(&l->closing) && atomic_load(&l->workers_armed) == 0) {
        /* No lock: this runs from backends while px__listeners_stop_all
         * holds listeners_lock. The socket's file goes first (unlinking is
         * claimed by itself, so twice is harmless): whoever sees
         * px_listener_fd() < 0 must find it gone. */
        if (atomic_load(&l->fd) < 0)
            return;
        px__listener_unlink(l);
        int fd = atomic_exchange(&l->fd, -1);
        if (fd >= 0) {
            if (atomic_load(&l->loop->draining) &&
                !atomic_load(&l->loop->stopping))
                px__listener_take_backlog(w, l, fd);
            close(fd);
        }
    }
}

void px__listener_start(px__worker_t *w, px_listener_t *l)
{
    if (w->stopping || atomic_load(&l->closing) || l->armed[w->index])
        return;
    if (w->backend_ops->listen_start(w, l) == 0) {
        l->armed[w->index] = 1;
        atomic_fetch_add(&l->workers_armed, 1);
        w->listeners_armed++;
    }
}

void px__listener_stop(px__worker_t *w, px_listener_t *l)
{
    if (l->armed[w->index] == 1) {
        l->armed[w->index] = 2; /* stopping */
        w->backend_ops->listen_stop(w, l);
    } else {
        listener_maybe_close(w, l);
    }
}

void px__on_listen_stopped(px__worker_t *w, px_listener_t *l)
{
    l->armed[w->index] = 0;
    w->listeners_armed--;
    atomic_fetch_sub(&l->workers_armed, 1);
    listener_maybe_close(w, l);
}

void px__listeners_stop_all(px__worker_t *w)
{
    px_loop_t *loop = w->loop;
    pthread_mutex_lock(&loop->listeners_lock);
    for (px__qnode_t *n = loop->listeners.next; n != &loop->listeners;
         n = n->next) {
        px_listener_t *l = px__container_of(n, px_listener_t, node);
        atomic_store(&l->closing, true);
        if (l->armed[w->index] == 1) {
            l->armed[w->index] = 2;
            w->backend_ops->listen_stop(w, l);
        }
    }
    pthread_mutex_unlock(&loop->listeners_lock);
}

/* ---- placing new work and connections ---------------------------------- */

px__worker_t *px__pick_worker(px_loop_t *loop)
{
    /* The least loaded worker, scanning from a rotating start so that ties
     * spread out. A callback under way counts as one item: an idle worker
     * starts at once, where a busy one may compute for long. */
    unsigned start = atomic_fetch_add(&loop->next_worker, 1);
    px__worker_t *best = NULL;
    size_t best_load = SIZE_MAX;
    for (int i = 0; i < loop->nworkers; i++) {
        px__worker_t *w =
            &loop->workers[(start + (unsigned)i) % (unsigned)loop->nworkers];
        if (atomic_load(&w->retiring))
            continue;
        size_t load = atomic_load(&w->work_count) +
                      (atomic_load(&w->state) & PX__IN_CALLBACK);
        if (load < best_load) {
            best = w;
            best_load = load;
            if (load == 0)
                break;
        }
    }
    /* px_worker_retire leaves one worker that does not retire; this only
     * covers a retire racing with the scan. */
    return best != NULL ? best : &loop->workers[start % loop->nworkers];
}

/* ---- work ------------------------------------------------------------- */

static int submit(px_loop_t *loop, px__worker_t *w, bool pinned, px_work_fn fn,
                  px_work_fn cancel, void *arg)
{
    if (atomic_load(&loop->stopping) || !atomic_load(&loop->started))
        return PX_ESTOPPED;
    px__work_t *work = malloc(sizeof(*work));
    if (work == NULL)
        return -ENOMEM;
    work->fn = fn;
    work->cancel = cancel;
    work->arg = arg;
    work->pinned = pinned;
    return px__worker_submit(w, work);
}

int px_submit(px_loop_t *loop, px_work_fn fn, px_work_fn cancel, void *arg)
{
    if (fn == NULL)
        return -EINVAL;
    if (atomic_load(&loop->stopping) || !atomic_load(&loop->started))
        return PX_ESTOPPED;
    return submit(loop, px__pick_worker(loop), false, fn, cancel, arg);
}

int px_submit_to(px_loop_t *loop, int worker, px_work_fn fn, px_work_fn cancel,
                 void *arg)
{
    if (fn == NULL || worker < 0 || worker >= loop->nworkers)
        return -EINVAL;
    return submit(loop, &loop->workers[worker], true, fn, cancel, arg);
}

/* ---- statistics ------------------------------------------------------- */

void px_loop_stats(px_loop_t *loop, px_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    st->workers = loop->nworkers;
    pthread_mutex_lock(&loop->threads_lock);
    st->threads = loop->nthreads;
    pthread_mutex_unlock(&loop->threads_lock);
    st->connections = atomic_load(&loop->stat_connections);
    st->accepted = atomic_load(&loop->stat_accepted);
    st->bytes_in = atomic_load(&loop->stat_bytes_in);
    st->bytes_out = atomic_load(&loop->stat_bytes_out);
    st->io_hogs = atomic_load(&loop->stat_hogs);
    st->datagrams_dropped = atomic_load(&loop->stat_datagrams_dropped);
    for (int i = 0; i < loop->nworkers; i++) {
        px__worker_t *w = &loop->workers[i];
        st->worker[i].callbacks = atomic_load(&w->stat_callbacks);
        st->worker[i].handoffs = atomic_load(&w->stat_handoffs);
        st->worker[i].steals = atomic_load(&w->stat_steals);
        st->worker[i].busy_ns = atomic_load(&w->stat_busy_ns);
        st->worker[i].queue_depth =
            atomic_load(&w->work_count) + atomic_load(&w->inbox_count);
        st->pending_work += atomic_load(&w->work_count);
    }
}
