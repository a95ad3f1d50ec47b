/*
 * drain.c - the graceful half of a shutdown, retiring one worker, and
 * listening on sockets the process did not open.
 *
 * A drain closes the loop's listeners and nothing else: connections, work
 * and timers carry on, and the owner (the HTTP layer, the binding) lets
 * its connections end before px_loop_stop aborts what remains. Closing a
 * listening socket resets the connections the kernel completed but nobody
 * accepted yet, which clients see as failed requests, so the worker that
 * closes it first takes that backlog (px__listener_take_backlog): they are
 * served like any other accepted connection.
 *
 * px_listen_fd adopts a socket that already listens: systemd's socket
 * activation hands one to the process (LISTEN_FDS), and so does a process
 * that re-executes itself to reload its code while the socket keeps
 * accepting (the binding's reload). The socket may be shared with another
 * process; the listener owns this process's descriptor only.
 */
#include "px_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long after a worker stops retiring the others give it connections
 * back (px_worker_overloaded). */
#define REBALANCE_NS (2 * 1000000000ull)

int px_loop_drain(px_loop_t *loop)
{
    if (atomic_load(&loop->stopping))
        return PX_ESTOPPED;
    /* Set before any listener closes: the worker closing one looks at it
     * to take the backlog. */
    if (atomic_exchange(&loop->draining, true))
        return 0;
    pthread_mutex_lock(&loop->listeners_lock);
    for (px__qnode_t *n = loop->listeners.next; n != &loop->listeners;
         n = n->next)
        px_listener_close(px__container_of(n, px_listener_t, node));
    pthread_mutex_unlock(&loop->listeners_lock);
    return 0;
}

int px_loop_draining(const px_loop_t *loop)
{
    return atomic_load(&loop->draining) ? 1 : 0;
}

uint64_t px_loop_served_open(const px_loop_t *loop)
{
    return atomic_load(&loop->stat_served);
}

int px_loop_drained(px_loop_t *loop)
{
    if (!atomic_load(&loop->draining))
        return 0;
    /* A listener still closing may yet take connections from its backlog:
     * until its socket is closed, none left now does not mean none left. */
    bool closing = false;
    pthread_mutex_lock(&loop->listeners_lock);
    for (px__qnode_t *n = loop->listeners.next;
         n != &loop->listeners && !closing; n = n->next) {
        px_listener_t *l = px__container_of(n, px_listener_t, node);
        closing = atomic_load(&l->closing) && atomic_load(&l->fd) >= 0;
    }
    pthread_mutex_unlock(&loop->listeners_lock);
    return !closing && atomic_load(&loop->stat_served) == 0;
}

/* Retiring a worker is a drain of that worker alone: its connections end
 * as they would in a drain, and the others take the new ones. The count of
 * retiring workers is what keeps one worker serving; a compare-and-swap,
 * so that two threads retiring two workers at once cannot both pass. */
int px_worker_retire(px_loop_t *loop, int worker, int retiring)
{
    if (worker < 0 || worker >= loop->nworkers)
        return -EINVAL;
    if (atomic_load(&loop->stopping))
        return PX_ESTOPPED;
    px__worker_t *w = &loop->workers[worker];
    if (!retiring) {
        if (atomic_exchange(&w->retiring, false)) {
            atomic_fetch_sub(&loop->nretiring, 1);
            atomic_store(&loop->rebalance_until_ns, px_now_ns() + REBALANCE_NS);
        }
        return 0;
    }
    if (atomic_load(&w->retiring))
        return 0;
    int n = atomic_load(&loop->nretiring);
    do {
        if (n + 1 >= loop->nworkers)
            return -EBUSY;
    } while (!atomic_compare_exchange_weak(&loop->nretiring, &n, n + 1));
    if (atomic_exchange(&w->retiring, true))
        atomic_fetch_sub(&loop->nretiring, 1); /* it was already */
    return 0;
}

int px_worker_overloaded(px_loop_t *loop, int worker)
{
    uint64_t until =
        atomic_load_explicit(&loop->rebalance_until_ns, memory_order_relaxed);
    if (until == 0 || worker < 0 || worker >= loop->nworkers)
        return 0;
    if (px_now_ns() > until) {
        atomic_compare_exchange_strong(&loop->rebalance_until_ns, &until, 0);
        return 0;
    }
    int mine = atomic_load(&loop->workers[worker].nserved);
    for (int i = 0; i < loop->nworkers; i++) {
        const px__worker_t *o = &loop->workers[i];
        if (i != worker && !atomic_load(&o->retiring) &&
            mine > atomic_load(&o->nserved) + 1)
            return 1;
    }
    return 0;
}

int px_worker_retiring(const px_loop_t *loop, int worker)
{
    if (worker < 0 || worker >= loop->nworkers)
        return 0;
    return atomic_load(&loop->workers[worker].retiring) ? 1 : 0;
}

uint64_t px_worker_served_open(const px_loop_t *loop, int worker)
{
    if (worker < 0 || worker >= loop->nworkers)
        return 0;
    int n = atomic_load(&loop->workers[worker].nserved);
    return n > 0 ? (uint64_t)n : 0;
}

uint64_t px_worker_connections(const px_loop_t *loop, int worker)
{
    if (worker < 0 || worker >= loop->nworkers)
        return 0;
    const px__worker_t *w = &loop->workers[worker];
    int n = atomic_load(&w->nconns) + atomic_load(&w->adopting);
    return n > 0 ? (uint64_t)n : 0;
}

void px__listener_take_backlog(px__worker_t *w, px_listener_t *l, int fd)
{
    /* A socket inherited from another process may be blocking, and an
     * accept must not wait for a connection that is not there. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK)))
        return;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
            px__on_accept(w, l, cfd);
        } else if (errno != EINTR && errno != ECONNABORTED) {
            return; /* EAGAIN: the backlog is empty */
        }
    }
}

int px_listen_fd(px_loop_t *loop, int fd, const px_conn_callbacks_t *cbs,
                 void *conn_data, px_listener_t **out)
{
    int rc = 0;
    int type = 0, accepting = 0;
    socklen_t n = sizeof(type);
    if (cbs == NULL || fd < 0)
        rc = -EINVAL;
    else if (atomic_load(&loop->stopping))
        rc = PX_ESTOPPED;
    else if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) < 0)
        rc = -errno;
    else if (n = sizeof(accepting),
             getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &n) < 0)
        rc = -errno;
    else if (type != SOCK_STREAM || !accepting)
        rc = -EINVAL;
    else if ((rc = px__set_nonblocking(fd)) == 0 &&
             fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        rc = -errno;
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    if (rc == 0 && getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        rc = -errno;
    char name[PX_ADDRSTRLEN];
    int port = -1;
    if (rc == 0)
        rc = px__format_addr(&addr, len, name, sizeof(name), &port);
    px_listener_t *l =
        rc == 0 ? px__listener_new(loop, fd, port, cbs, conn_data) : NULL;
    if (l == NULL) {
        if (fd >= 0)
            close(fd);
        return rc < 0 ? rc : -ENOMEM;
    }
    px__listener_publish(l);
    *out = l;
    return 0;
}

int px_listener_fd(const px_listener_t *l) { return atomic_load(&l->fd); }

void px_listener_keep_file(px_listener_t *l)
{
    free(atomic_exchange(&l->unix_path, NULL));
}
