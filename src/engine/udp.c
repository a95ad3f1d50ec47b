/*
 * udp.c - datagram endpoints: a UDP socket served on one worker.
 *
 * Receiving rides on a watch (watch.c): the worker's backend reports the
 * socket readable (io_uring's POLL_ADD, or epoll), and the watch's on_ready
 * drains it with recvmsg, a bounded batch at a time so that one busy
 * endpoint does not starve the worker's other work, then re-arms. A watch's
 * callbacks never overlap and run inside the worker's callback bracket, so
 * the endpoint's callbacks inherit both properties, and the hand-off of a
 * blocked worker, for free.
 *
 * Sending happens on the caller's thread: a datagram is one non-blocking
 * sendto, which either succeeds whole or fails whole. When the socket's
 * buffer is full (EAGAIN, or ENOBUFS from a full device queue, which poll
 * never reports), the datagram is copied to a bounded queue that a timer on
 * the endpoint's worker retries every RETRY_NS; past the bound datagrams are
 * dropped and counted, since the network could have dropped them anyway and
 * a sender must never block a worker. Datagrams behind a queued one are
 * queued too, so they leave in order.
 *
 * Life: px_udp_open posts a work item to the worker that runs on_open and
 * then starts the watch; px_udp_close (or the loop's stop) stops the watch,
 * whose on_done delivers on_close. References: the caller's (px_udp_open's
 * out parameter), the worker's (until on_close), and one per retry timer
 * (until its done callback). The fd is closed when the last one goes, so
 * px_udp_sendto from another thread never races with a close.
 */
#include "px_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Datagrams received per readiness report before re-arming. */
#define RECV_BATCH 64
/* How often a queued datagram is retried. */
#define RETRY_NS (1u * 1000000u)

typedef struct udp_send_s {
    struct udp_send_s *next;
    struct sockaddr_storage addr;
    socklen_t addrlen; /* 0: the connected remote */
    size_t len;
    char data[];
} udp_send_t;

struct px_udp_s {
    px_loop_t *loop;
    int worker;
    int fd;
    int family;
    bool connected;
    atomic_int refs;
    px_udp_callbacks_t cbs;
    void *_Atomic data;
    atomic_bool close_requested;
    char *rbuf; /* PX_UDP_MAX_DATAGRAM bytes, the worker's */

    pthread_mutex_t lock; /* guards what follows */
    bool closed;          /* on_close delivered or due: sends fail */
    px_watch_t *watch;    /* from on_open's end until on_done */
    px_timer_t *retry;    /* retries the queue while it is not empty */
    udp_send_t *head, *tail;
    size_t queued, queued_bytes;
};

static void free_queue(udp_send_t *s)
{
    while (s != NULL) {
        udp_send_t *next = s->next;
        free(s);
        s = next;
    }
}

void px_udp_ref(px_udp_t *u) { atomic_fetch_add(&u->refs, 1); }

void px_udp_unref(px_udp_t *u)
{
    if (atomic_fetch_sub(&u->refs, 1) != 1)
        return;
    free_queue(u->head);
    close(u->fd);
    pthread_mutex_destroy(&u->lock);
    free(u->rbuf);
    free(u);
}

void *px_udp_data(const px_udp_t *u) { return atomic_load(&u->data); }
void px_udp_set_data(px_udp_t *u, void *data) { atomic_store(&u->data, data); }
int px_udp_worker(const px_udp_t *u) { return u->worker; }

int px_udp_sockname(const px_udp_t *u, char *host, size_t hostlen, int *port)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    if (getsockname(u->fd, (struct sockaddr *)&a, &len) < 0)
        return -errno;
    return px__format_addr(&a, len, host, hostlen, port);
}

int px_udp_peername(const px_udp_t *u, char *host, size_t hostlen, int *port)
{
    if (!u->connected)
        return -ENOTCONN;
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    if (getpeername(u->fd, (struct sockaddr *)&a, &len) < 0)
        return -errno;
    return px__format_addr(&a, len, host, hostlen, port);
}

/* ---- the worker's side ------------------------------------------------ */

/* Delivers on_close and drops the worker's reference. */
static void finish(px_udp_t *u, int error)
{
    if (u->cbs.on_close)
        u->cbs.on_close(u, error);
    px_udp_unref(u);
}

static void on_ready(void *arg)
{
    px_udp_t *u = arg;
    struct sockaddr_storage from;
    struct iovec iov = {.iov_base = u->rbuf, .iov_len = PX_UDP_MAX_DATAGRAM};
    for (int i = 0; i < RECV_BATCH && !atomic_load(&u->close_requested); i++) {
        struct msghdr msg = {.msg_name = &from,
                             .msg_namelen = sizeof(from),
                             .msg_iov = &iov,
                             .msg_iovlen = 1};
        ssize_t n = recvmsg(u->fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno != EINTR && u->cbs.on_error)
                u->cbs.on_error(u, -errno);
            continue;
        }
        atomic_fetch_add(&u->loop->stat_bytes_in, (uint64_t)n);
        char host[INET6_ADDRSTRLEN];
        int port = 0;
        if (px__format_addr(&from, msg.msg_namelen, host, sizeof(host), &port) <
            0)
            host[0] = '\0';
        if (u->cbs.on_datagram)
            u->cbs.on_datagram(u, u->rbuf, (size_t)n, host, port);
    }
    /* After a full batch the socket may still be readable: the backend
     * reports it again at once, after the worker's other work. */
    pthread_mutex_lock(&u->lock);
    px_watch_t *watch = u->watch;
    pthread_mutex_unlock(&u->lock);
    if (watch != NULL && !atomic_load(&u->close_requested))
        px_watch_arm(watch);
}

static void on_done(void *arg)
{
    px_udp_t *u = arg;
    pthread_mutex_lock(&u->lock);
    u->closed = true;
    px_watch_t *watch = u->watch;
    u->watch = NULL;
    px_timer_t *retry = u->retry;
    u->retry = NULL;
    free_queue(u->head);
    u->head = u->tail = NULL;
    u->queued = u->queued_bytes = 0;
    pthread_mutex_unlock(&u->lock);
    if (retry != NULL) {
        px_timer_cancel(retry);
        px_timer_unref(retry);
    }
    px_watch_unref(watch);
    finish(u, atomic_load(&u->close_requested) ? 0 : PX_ESTOPPED);
}

static void open_run(void *arg)
{
    px_udp_t *u = arg;
    if (u->cbs.on_open)
        u->cbs.on_open(u);
    pthread_mutex_lock(&u->lock);
    int rc = 0;
    if (!atomic_load(&u->close_requested))
        rc = px_watch_start(u->loop, u->worker, u->fd, on_ready, on_done, u,
                            &u->watch);
    bool finished = atomic_load(&u->close_requested) || rc < 0;
    if (finished)
        u->closed = true;
    pthread_mutex_unlock(&u->lock);
    if (finished)
        finish(u, rc < 0 ? rc : 0);
}

static void open_cancel(void *arg)
{
    px_udp_t *u = arg;
    pthread_mutex_lock(&u->lock);
    u->closed = true;
    pthread_mutex_unlock(&u->lock);
    finish(u, PX_ESTOPPED);
}

/* ---- sending ---------------------------------------------------------- */

static ssize_t send_one(px_udp_t *u, const void *data, size_t len,
                        const struct sockaddr_storage *addr, socklen_t addrlen)
{
    ssize_t n = sendto(u->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                       addrlen ? (const struct sockaddr *)addr : NULL, addrlen);
    if (n >= 0)
        atomic_fetch_add(&u->loop->stat_bytes_out, (uint64_t)n);
    return n;
}

static bool send_would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS ||
           err == EINTR;
}

static void retry_done(void *arg) { px_udp_unref(arg); }

/* The retry timer: sends what the socket takes now; stops once the queue
 * is empty. A datagram the kernel refuses for another reason is dropped:
 * its sender has long returned. */
static void retry_run(void *arg)
{
    px_udp_t *u = arg;
    pthread_mutex_lock(&u->lock);
    while (u->head != NULL) {
        udp_send_t *s = u->head;
        if (send_one(u, s->data, s->len, &s->addr, s->addrlen) < 0) {
            if (send_would_block(errno))
                break;
            atomic_fetch_add(&u->loop->stat_datagrams_dropped, 1);
        }
        u->head = s->next;
        if (u->head == NULL)
            u->tail = NULL;
        u->queued--;
        u->queued_bytes -= s->len;
        free(s);
    }
    px_timer_t *stop = NULL;
    if (u->head == NULL) {
        stop = u->retry;
        u->retry = NULL;
    }
    pthread_mutex_unlock(&u->lock);
    if (stop != NULL) {
        px_timer_cancel(stop);
        px_timer_unref(stop);
    }
}

/* Queues a datagram the socket could not take; u->lock held. */
static void enqueue_locked(px_udp_t *u, const void *data, size_t len,
                           const struct sockaddr_storage *addr,
                           socklen_t addrlen)
{
    udp_send_t *s = NULL;
    if (u->queued < PX_UDP_MAX_QUEUED &&
        u->queued_bytes + len <= PX_UDP_MAX_QUEUED_BYTES)
        s = malloc(sizeof(*s) + len);
    if (s == NULL) {
        atomic_fetch_add(&u->loop->stat_datagrams_dropped, 1);
        return;
    }
    s->next = NULL;
    s->addr = *addr;
    s->addrlen = addrlen;
    s->len = len;
    memcpy(s->data, data, len);
    if (u->tail)
        u->tail->next = s;
    else
        u->head = s;
    u->tail = s;
    u->queued++;
    u->queued_bytes += len;
    if (u->retry == NULL) {
        px_udp_ref(u);
        if (px_timer_start_on(u->loop, u->worker, RETRY_NS, RETRY_NS, retry_run,
                              retry_done, u, &u->retry) < 0) {
            /* The loop stops: the queue goes with the endpoint. */
            u->retry = NULL;
            px_udp_unref(u);
        }
    }
}

/* A numeric address as the socket's family takes it: an IPv4 address to an
 * IPv6 socket becomes its IPv4-mapped form. */
static int parse_addr(const px_udp_t *u, const char *host, int port,
                      struct sockaddr_storage *addr, socklen_t *len)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    memset(addr, 0, sizeof(*addr));
    struct sockaddr_in *sin = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;
    struct in_addr v4;
    if (inet_pton(AF_INET, host, &v4) == 1) {
        if (u->family == AF_INET6) {
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons((uint16_t)port);
            sin6->sin6_addr.s6_addr[10] = 0xff;
            sin6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&sin6->sin6_addr.s6_addr[12], &v4, 4);
            *len = sizeof(*sin6);
            return 0;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        sin->sin_addr = v4;
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*sin6);
        return u->family == AF_INET6 ? 0 : -EAFNOSUPPORT;
    }
    return -EINVAL;
}

int px_udp_sendto(px_udp_t *u, const void *data, size_t len, const char *host,
                  int port)
{
    if (len > PX_UDP_MAX_DATAGRAM)
        return -EMSGSIZE;
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    if (host != NULL) {
        int rc = parse_addr(u, host, port, &addr, &addrlen);
        if (rc < 0)
            return rc;
    } else if (!u->connected) {
        return -EDESTADDRREQ;
    }
    pthread_mutex_lock(&u->lock);
    if (u->closed || atomic_load(&u->close_requested)) {
        pthread_mutex_unlock(&u->lock);
        return PX_ECLOSED;
    }
    int rc = 0;
    if (u->head != NULL) {
        enqueue_locked(u, data, len, &addr, addrlen);
    } else if (send_one(u, data, len, &addr, addrlen) < 0) {
        if (send_would_block(errno))
            enqueue_locked(u, data, len, &addr, addrlen);
        else
            rc = -errno;
    }
    pthread_mutex_unlock(&u->lock);
    return rc;
}

void px_udp_close(px_udp_t *u)
{
    if (atomic_exchange(&u->close_requested, true))
        return;
    pthread_mutex_lock(&u->lock);
    px_watch_t *watch = u->watch;
    if (watch != NULL)
        px_watch_ref(watch);
    pthread_mutex_unlock(&u->lock);
    /* Without a watch, open_run has not started it yet and sees the
     * request, or on_done ran already. */
    if (watch != NULL) {
        px_watch_stop(watch);
        px_watch_unref(watch);
    }
}

/* ---- opening ---------------------------------------------------------- */

/* The socket, bound and connected as px_udp_open describes. */
static int open_socket(const char *host, int port, const char *remote_host,
                       int remote_port, int *family)
{
    struct sockaddr_storage local, remote;
    socklen_t local_len = 0, remote_len = 0;
    int rc;
    if (remote_host != NULL &&
        (rc = px__resolve(remote_host, remote_port, &remote, &remote_len)) < 0)
        return rc;
    bool bind_it =
        remote_host == NULL || (host != NULL && host[0] != '\0') || port != 0;
    if (bind_it && remote_host != NULL && (host == NULL || host[0] == '\0')) {
        /* Any local address, of the remote's family. */
        if (port < 0 || port > 65535)
            return -EINVAL;
        memset(&local, 0, sizeof(local));
        local.ss_family = remote.ss_family;
        if (remote.ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)&local)->sin6_port = htons((uint16_t)port);
            local_len = sizeof(struct sockaddr_in6);
        } else {
            ((struct sockaddr_in *)&local)->sin_port = htons((uint16_t)port);
            local_len = sizeof(struct sockaddr_in);
        }
    } else if (bind_it &&
               (rc = px__resolve(host, port, &local, &local_len)) < 0) {
        return rc;
    }
    *family = bind_it ? local.ss_family : remote.ss_family;
    int fd = socket(*family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if ((bind_it && bind(fd, (struct sockaddr *)&local, local_len) < 0) ||
        (remote_host != NULL &&
         connect(fd, (struct sockaddr *)&remote, remote_len) < 0)) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int px_udp_open(px_loop_t *loop, int worker, const char *host, int port,
                const char *remote_host, int remote_port,
                const px_udp_callbacks_t *cbs, void *data, px_udp_t **udp)
{
    if (cbs == NULL || udp == NULL || worker >= loop->nworkers)
        return -EINVAL;
    if (worker < 0)
        worker = (int)(atomic_fetch_add(&loop->next_worker, 1) %
                       (unsigned)loop->nworkers);
    px_udp_t *u = calloc(1, sizeof(*u));
    char *rbuf = malloc(PX_UDP_MAX_DATAGRAM);
    if (u == NULL || rbuf == NULL) {
        free(u);
        free(rbuf);
        return -ENOMEM;
    }
    int fd = open_socket(host, port, remote_host, remote_port, &u->family);
    if (fd < 0) {
        free(u);
        free(rbuf);
        return fd;
    }
    u->loop = loop;
    u->worker = worker;
    u->fd = fd;
    u->connected = remote_host != NULL;
    u->cbs = *cbs;
    u->rbuf = rbuf;
    atomic_init(&u->data, data);
    atomic_init(&u->refs, 2); /* the caller's, the worker's */
    pthread_mutex_init(&u->lock, NULL);
    int rc = px_submit_to(loop, worker, open_run, open_cancel, u);
    if (rc < 0) {
        atomic_store(&u->refs, 1);
        px_udp_unref(u);
        return rc;
    }
    *udp = u;
    return 0;
}
