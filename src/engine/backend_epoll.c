/*
 * backend_epoll.c - the epoll I/O backend: readiness turned into the
 * completion-style reports of px_internal.h, for machines where io_uring is
 * unavailable (containers' seccomp profiles, io_uring_disabled) or where
 * PYPARALLEL_IO=epoll asks for it.
 *
 * One epoll set per worker. The listening socket, shared by all workers, is
 * registered in every set with EPOLLEXCLUSIVE, so a new connection wakes one
 * worker rather than all of them; that worker accepts a bounded number of
 * connections per wake-up, leaving the rest (the socket stays readable: the
 * registration is level-triggered) to whichever worker wakes next.
 * Connections are registered level-triggered with EPOLLIN while reading and
 * EPOLLOUT only while a writability report is wanted (a one-shot request of
 * the core, cleared when reported). A connection that wants neither is taken
 * out of the set entirely: EPOLLHUP and EPOLLERR are reported whatever the
 * mask, and a level-triggered hang-up nobody reads would make every poll
 * return at once. Each connection is read for at most READ_BUDGET bytes per
 * poll, so one fast sender cannot starve the others of its worker.
 *
 * epoll_event.data.ptr points at a small header {kind, object} embedded in
 * the backend's per-worker, per-listener or per-connection struct. Those
 * structs are freed only by listen_stop and conn_release, which the core
 * calls between polls after removing the fd from the set; every event
 * returned by epoll_wait is handled within the same poll, so no event ever
 * refers to a freed struct.
 *
 * Watches (watch.c) are registered EPOLLIN | EPOLLONESHOT, so each report
 * is one-shot as the core wants, and re-arming is an EPOLL_CTL_MOD.
 *
 * Release, listen_stop and watch_stop report px__on_conn_released,
 * px__on_listen_stopped and px__on_watch_released synchronously: the fd is out
 * of the set as soon as EPOLL_CTL_DEL returns, and the core never calls a
 * backend function from inside a px__on_* report, so this does not re-enter the
 * core recursively.
 */
#include "px_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes read from one connection per poll, and the read buffer's size. */
#define READ_BUDGET (64u << 10)
/* Connections accepted per wake-up of one worker. */
#define ACCEPT_BUDGET 32
/* Events collected by one epoll_wait. */
#define MAX_EVENTS 256
/* Pause of a listener whose accept failed for lack of resources (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM): retrying at once would spin, since the pending
 * connection keeps the socket readable. */
#define ACCEPT_RETRY_NS (100u * 1000000u)

typedef enum { EP_WAKE, EP_LISTEN, EP_CONN, EP_WATCH } ep_kind_t;

/* What an event's data.ptr points at. */
typedef struct {
    ep_kind_t kind;
    void *object; /* px__worker_t, px_listener_t, px_conn_t or px_watch_t */
} ep_handle_t;

/* A watch's fd stays in the set, disabled by EPOLLONESHOT after each
 * report, until the watch stops: re-arming is one EPOLL_CTL_MOD. */
typedef struct {
    ep_handle_t handle;
    bool registered;
} ep_watch_t;

typedef struct {
    ep_handle_t handle;
    bool registered;         /* in the epoll set */
    uint64_t retry_at_ns;    /* while paused after a failed accept */
    px__qnode_t paused_node; /* ep_worker_t.paused while paused */
} ep_listen_t;

/* What a connection waits for (ep_conn_t.interest). */
enum { WANT_READ = 1u << 0, WANT_WRITE = 1u << 1, WANT_CONNECT = 1u << 2 };

typedef struct {
    ep_handle_t handle;
    uint32_t registered; /* events in the set; 0: not in the set */
    unsigned interest;   /* WANT_* */
    bool read_ended;
} ep_conn_t;

typedef struct {
    int epfd;
    ep_handle_t wake;
    px__qnode_t paused; /* ep_listen_t waiting to accept again */
    bool no_pwait2;     /* epoll_pwait2 refused: milliseconds it is */
    char read_buf[READ_BUDGET];
} ep_worker_t;

/* ---- worker ----------------------------------------------------------- */

static int ep_init(px__worker_t *w)
{
    ep_worker_t *ep = malloc(sizeof(*ep));
    if (ep == NULL)
        return -ENOMEM;
    ep->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ep->epfd < 0) {
        int rc = -errno;
        free(ep);
        return rc;
    }
    ep->wake = (ep_handle_t){EP_WAKE, w};
    ep->no_pwait2 = false;
    px__q_init(&ep->paused);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ep->wake};
    if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0) {
        int rc = -errno;
        close(ep->epfd);
        free(ep);
        return rc;
    }
    w->backend = ep;
    return 0;
}

static void ep_destroy(px__worker_t *w)
{
    ep_worker_t *ep = w->backend;
    close(ep->epfd);
    free(ep);
    w->backend = NULL;
}

/* ---- listeners -------------------------------------------------------- */

static int listen_register(ep_worker_t *ep, px_listener_t *l, ep_listen_t *s)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                             .data.ptr = &s->handle};
    if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, atomic_load(&l->fd), &ev) < 0)
        return -errno;
    s->registered = true;
    return 0;
}

static void listen_unregister(ep_worker_t *ep, px_listener_t *l, ep_listen_t *s)
{
    if (!s->registered)
        return;
    /* EPOLLEXCLUSIVE registrations cannot be modified, only removed. */
    epoll_ctl(ep->epfd, EPOLL_CTL_DEL, atomic_load(&l->fd), NULL);
    s->registered = false;
}

static int ep_listen_start(px__worker_t *w, px_listener_t *l)
{
    ep_worker_t *ep = w->backend;
    ep_listen_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->handle = (ep_handle_t){EP_LISTEN, l};
    px__q_init(&s->paused_node);
    int rc = listen_register(ep, l, s);
    if (rc < 0) {
        free(s);
        return rc;
    }
    l->backend_slot[w->index] = s;
    return 0;
}

static void ep_listen_stop(px__worker_t *w, px_listener_t *l)
{
    ep_worker_t *ep = w->backend;
    ep_listen_t *s = l->backend_slot[w->index];
    if (s != NULL) {
        listen_unregister(ep, l, s);
        px__q_remove(&s->paused_node);
        free(s);
        l->backend_slot[w->index] = NULL;
    }
    px__on_listen_stopped(w, l);
}

static void pause_accepting(px__worker_t *w, px_listener_t *l, ep_listen_t *s)
{
    ep_worker_t *ep = w->backend;
    listen_unregister(ep, l, s);
    s->retry_at_ns = px_now_ns() + ACCEPT_RETRY_NS;
    px__q_push(&ep->paused, &s->paused_node);
}

/* Re-registers paused listeners that are due; returns the nanoseconds
 * until the next one is (-1: none paused). */
static int64_t resume_accepting(px__worker_t *w)
{
    ep_worker_t *ep = w->backend;
    uint64_t now = px_now_ns();
    int64_t next_ns = -1;
    px__qnode_t *n = ep->paused.next;
    while (n != &ep->paused) {
        ep_listen_t *s = px__container_of(n, ep_listen_t, paused_node);
        n = n->next;
        px_listener_t *l = s->handle.object;
        if (s->retry_at_ns <= now) {
            px__q_remove(&s->paused_node);
            if (listen_register(ep, l, s) < 0)
                pause_accepting(w, l, s);
            continue;
        }
        int64_t ns = (int64_t)(s->retry_at_ns - now);
        if (next_ns < 0 || ns < next_ns)
            next_ns = ns;
    }
    return next_ns;
}

static void handle_accept(px__worker_t *w, px_listener_t *l)
{
    ep_listen_t *s = l->backend_slot[w->index];
    int lfd = atomic_load(&l->fd);
    for (int i = 0; i < ACCEPT_BUDGET; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            px__on_accept(w, l, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN)
            pause_accepting(w, l, s);
        return;
    }
}

/* ---- connections ------------------------------------------------------ */

/* Finds or makes the backend's struct for c; 0 or -errno. There is none
 * once c was released (its fd is gone then): nothing would free it. */
static int conn_state(px_conn_t *c, ep_conn_t **out)
{
    if (c->backend_state == NULL) {
        if (c->fd < 0)
            return -EBADF;
        ep_conn_t *s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        s->handle = (ep_handle_t){EP_CONN, c};
        c->backend_state = s;
    }
    *out = c->backend_state;
    return 0;
}

/* Brings the registration of c in line with what it waits for. */
static int conn_update(px__worker_t *w, px_conn_t *c, ep_conn_t *s)
{
    ep_worker_t *ep = w->backend;
    uint32_t want = (s->interest & WANT_READ ? EPOLLIN : 0) |
                    (s->interest & (WANT_WRITE | WANT_CONNECT) ? EPOLLOUT : 0);
    if (want == s->registered)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = &s->handle};
    int op = want == 0            ? EPOLL_CTL_DEL
             : s->registered == 0 ? EPOLL_CTL_ADD
                                  : EPOLL_CTL_MOD;
    if (epoll_ctl(ep->epfd, op, c->fd, &ev) < 0)
        return -errno;
    s->registered = want;
    return 0;
}

static int conn_watch(px__worker_t *w, px_conn_t *c, unsigned interest)
{
    ep_conn_t *s;
    int rc = conn_state(c, &s);
    if (rc < 0)
        return rc;
    if ((interest & WANT_READ) && s->read_ended)
        return 0;
    unsigned before = s->interest;
    s->interest |= interest;
    rc = conn_update(w, c, s);
    if (rc < 0)
        s->interest = before;
    return rc;
}

static void conn_unwatch(px__worker_t *w, px_conn_t *c, ep_conn_t *s,
                         unsigned interest)
{
    s->interest &= ~interest;
    conn_update(w, c, s);
}

static int ep_conn_read_start(px__worker_t *w, px_conn_t *c)
{
    return conn_watch(w, c, WANT_READ);
}

static int ep_conn_read_stop(px__worker_t *w, px_conn_t *c)
{
    if (c->backend_state != NULL)
        conn_unwatch(w, c, c->backend_state, WANT_READ);
    return 0;
}

static int ep_conn_want_write(px__worker_t *w, px_conn_t *c)
{
    return conn_watch(w, c, WANT_WRITE);
}

static int ep_conn_connect(px__worker_t *w, px_conn_t *c)
{
    return conn_watch(w, c, WANT_CONNECT);
}

static void ep_conn_release(px__worker_t *w, px_conn_t *c)
{
    ep_conn_t *s = c->backend_state;
    if (s != NULL) {
        conn_unwatch(w, c, s, s->interest);
        free(s);
        c->backend_state = NULL;
    }
    px__on_conn_released(w, c);
}

/* Reading ended (EOF or error): stop watching for input, which would
 * otherwise stay reported forever, then tell the core. */
static void read_end(px__worker_t *w, px_conn_t *c, ep_conn_t *s, int error)
{
    s->read_ended = true;
    conn_unwatch(w, c, s, WANT_READ);
    px__on_read_end(w, c, error);
}

static void handle_readable(px__worker_t *w, px_conn_t *c, ep_conn_t *s)
{
    ep_worker_t *ep = w->backend;
    size_t total = 0;
    while (total < READ_BUDGET) {
        size_t want = READ_BUDGET - total;
        ssize_t n = recv(c->fd, ep->read_buf, want, 0);
        if (n > 0) {
            if (!px__on_data(w, c, ep->read_buf, (size_t)n))
                return; /* reading stopped */
            total += (size_t)n;
            if ((size_t)n < want)
                return; /* drained for now */
            continue;
        }
        if (n == 0) {
            read_end(w, c, s, 0);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            read_end(w, c, s, -errno);
        return;
    }
}

static void handle_conn(px__worker_t *w, px_conn_t *c, uint32_t events)
{
    ep_conn_t *s = c->backend_state;
    bool failed = events & (EPOLLERR | EPOLLHUP);
    if (s->interest & WANT_CONNECT) {
        if (!(events & EPOLLOUT) && !failed)
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        conn_unwatch(w, c, s, WANT_CONNECT);
        px__on_connected(w, c, -err);
        return;
    }
    if ((s->interest & WANT_READ) && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        handle_readable(w, c, s);
    if ((s->interest & WANT_WRITE) &&
        (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        /* A failed socket is reported writable too: the flush that follows
         * finds the error. */
        conn_unwatch(w, c, s, WANT_WRITE);
        px__on_writable(w, c);
    }
}

/* ---- watches ---------------------------------------------------------- */

static int ep_watch_arm(px__worker_t *w, px_watch_t *x)
{
    ep_worker_t *ep = w->backend;
    ep_watch_t *s = x->backend_state;
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        s->handle = (ep_handle_t){EP_WATCH, x};
        x->backend_state = s;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT,
                             .data.ptr = &s->handle};
    if (epoll_ctl(ep->epfd, s->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                  x->fd, &ev) < 0)
        return -errno;
    s->registered = true;
    return 0;
}

static void ep_watch_stop(px__worker_t *w, px_watch_t *x)
{
    ep_worker_t *ep = w->backend;
    ep_watch_t *s = x->backend_state;
    if (s != NULL) {
        if (s->registered)
            epoll_ctl(ep->epfd, EPOLL_CTL_DEL, x->fd, NULL);
        free(s);
        x->backend_state = NULL;
    }
    px__on_watch_released(w, x);
}

/* ---- poll ------------------------------------------------------------- */

/* epoll_wait for up to timeout_ns (-1: no limit): with epoll_pwait2's
 * nanoseconds (Linux 5.11), or in milliseconds rounded up where the kernel
 * or a seccomp filter refuses it. */
static int wait_events(ep_worker_t *ep, struct epoll_event *events,
                       int64_t timeout_ns)
{
    if (timeout_ns > 0 && !ep->no_pwait2) {
        struct timespec ts = {.tv_sec = timeout_ns / 1000000000,
                              .tv_nsec = timeout_ns % 1000000000};
        int n = epoll_pwait2(ep->epfd, events, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        ep->no_pwait2 = true;
    }
    int timeout_ms =
        timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    return epoll_wait(ep->epfd, events, MAX_EVENTS, timeout_ms);
}

static int ep_poll(px__worker_t *w, int64_t timeout_ns)
{
    ep_worker_t *ep = w->backend;
    int64_t retry_ns = resume_accepting(w);
    if (retry_ns >= 0 && (timeout_ns < 0 || retry_ns < timeout_ns))
        timeout_ns = retry_ns;
    struct epoll_event events[MAX_EVENTS];
    int n = wait_events(ep, events, timeout_ns);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        ep_handle_t *h = events[i].data.ptr;
        switch (h->kind) {
        case EP_WAKE:
            px__on_wake(w);
            break;
        case EP_LISTEN:
            handle_accept(w, h->object);
            break;
        case EP_CONN:
            handle_conn(w, h->object, events[i].events);
            break;
        case EP_WATCH:
            px__on_watch_ready(w, h->object);
            break;
        }
    }
    return n;
}

const px__backend_ops_t px__backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .listen_start = ep_listen_start,
    .listen_stop = ep_listen_stop,
    .conn_read_start = ep_conn_read_start,
    .conn_read_stop = ep_conn_read_stop,
    .conn_want_write = ep_conn_want_write,
    .conn_connect = ep_conn_connect,
    .conn_release = ep_conn_release,
    .watch_arm = ep_watch_arm,
    .watch_stop = ep_watch_stop,
    .poll = ep_poll,
};
