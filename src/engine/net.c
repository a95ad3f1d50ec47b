/*
 * net.c - endpoints: listening and connecting over TCP and Unix domain
 * sockets, the addresses they report, and the resolver threads that turn
 * names into addresses for outgoing connections.
 *
 * Name resolution. getaddrinfo blocks for as long as the name servers take
 * (seconds when one does not answer), so px_connect never calls it on the
 * caller's thread, which may be a worker whose other connections would
 * wait. A connection to a name is created unadopted (RESOLVING) and queued
 * for a small pool of resolver threads; the thread that resolves it opens
 * the socket, issues the non-blocking connect and hands the connection to
 * its worker (ADOPT), or hands it over failed (connect_error), so that the
 * outcome reaches on_open or on_close exactly as for a numeric address.
 *
 * Why threads calling getaddrinfo, measured against the alternatives on
 * this engine's target (glibc, a name from /etc/hosts): getaddrinfo itself
 * takes ~6 us, ~35 us through a waiting resolver thread and ~50 us with
 * glibc's getaddrinfo_a, which starts a thread per request. c-ares would
 * avoid the threads but is a new build dependency and does not read
 * nsswitch.conf, so names that the rest of the system resolves (mDNS,
 * systemd-resolved, LDAP, containers' NSS modules) would fail here. The
 * pool keeps the system's semantics at a cost that is small next to a
 * connect, and numeric addresses skip it altogether.
 *
 * Lifecycle of the pool: px_loop_new creates it without threads; the first
 * requests start up to RESOLVER_THREADS detached threads, which exit after
 * RESOLVER_IDLE_S idle seconds. px_loop_stop detaches it: every request not
 * answered yet is answered PX_ECLOSED on the spot (a thread still inside
 * getaddrinfo drops its result when it returns), so stopping never waits
 * for a name server. The pool's memory is freed by whoever lets go of it
 * last, the loop or a thread.
 */
#include "px_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Resolutions that may run at once, and how long an idle thread waits for
 * the next before it exits. */
#define RESOLVER_THREADS 4
#define RESOLVER_IDLE_S 10

_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) ==
                   PX_UNIX_PATH_MAX + 1,
               "PX_UNIX_PATH_MAX is sun_path less its NUL");
_Static_assert(PX_ADDRSTRLEN >= PX_UNIX_PATH_MAX + 3 &&
                   PX_ADDRSTRLEN >= INET6_ADDRSTRLEN,
               "PX_ADDRSTRLEN holds every reported address");

/* ---- addresses -------------------------------------------------------- */

/* A numeric address (or "" / NULL: every IPv4 address) into addr; false
 * when host is a name. */
static bool numeric_addr(const char *host, int port,
                         struct sockaddr_storage *addr, socklen_t *len)
{
    memset(addr, 0, sizeof(*addr));
    struct sockaddr_in *sin = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;
    if (host == NULL || host[0] == '\0') {
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*sin6);
        return true;
    } else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        return false;
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    *len = sizeof(*sin);
    return true;
}

/* Resolves host with getaddrinfo (blocking): the first address, or a
 * PX_EAI code (or -errno). */
static int resolve_name(const char *host, int port,
                        struct sockaddr_storage *addr, socklen_t *len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return rc == EAI_SYSTEM ? -errno : PX_EAI(rc);
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    return 0;
}

int px__resolve(const char *host, int port, struct sockaddr_storage *addr,
                socklen_t *len)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    return numeric_addr(host, port, addr, len)
               ? 0
               : resolve_name(host, port, addr, len);
}

int px__set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static int format_unix(const struct sockaddr_un *sun, socklen_t len, char *host,
                       size_t hostlen, int *port)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = len > off ? (size_t)len - off : 0;
    if (n > 0 && sun->sun_path[0] != '\0')
        n = strnlen(sun->sun_path, n); /* Linux may count the NUL or not */
    if (n + 2 > hostlen)
        return -ENOSPC;
    memcpy(host, sun->sun_path, n);
    host[n] = '\0';
    if (n == 0)
        host[1] = '\0'; /* unnamed, told apart from an abstract name */
    *port = -1;
    return 0;
}

int px__format_addr(const struct sockaddr_storage *addr, socklen_t len,
                    char *host, size_t hostlen, int *port)
{
    const void *src;
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
        src = &sin->sin_addr;
        *port = ntohs(sin->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
        src = &sin6->sin6_addr;
        *port = ntohs(sin6->sin6_port);
    } else if (addr->ss_family == AF_UNIX) {
        return format_unix((const struct sockaddr_un *)addr, len, host, hostlen,
                           port);
    } else {
        return -EAFNOSUPPORT;
    }
    if (inet_ntop(addr->ss_family, src, host, (socklen_t)hostlen) == NULL)
        return -errno;
    return 0;
}

/* ---- TCP -------------------------------------------------------------- */

int px_listen(px_loop_t *loop, const char *host, int port, int backlog,
              const px_conn_callbacks_t *cbs, void *conn_data,
              px_listener_t **out)
{
    return px_listen_ex(loop, host, port, backlog, 0, cbs, conn_data, out);
}

int px_listen_ex(px_loop_t *loop, const char *host, int port, int backlog,
                 int flags, const px_conn_callbacks_t *cbs, void *conn_data,
                 px_listener_t **out)
{
    if (cbs == NULL || backlog < 0 || port < 0 || port > 65535 ||
        (flags & ~PX_LISTEN_REUSEPORT) != 0)
        return -EINVAL;
    if (atomic_load(&loop->stopping))
        return PX_ESTOPPED;
    struct sockaddr_storage addr;
    socklen_t len;
    int rc = px__resolve(host, port, &addr, &len);
    if (rc < 0)
        return rc;
    int fd =
        socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((flags & PX_LISTEN_REUSEPORT) &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (bind(fd, (struct sockaddr *)&addr, len) < 0 ||
        listen(fd, backlog ? backlog : SOMAXCONN) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    len = sizeof(addr);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    char name[PX_ADDRSTRLEN];
    int bound_port = port;
    px__format_addr(&addr, len, name, sizeof(name), &bound_port);
    px_listener_t *l = px__listener_new(loop, fd, bound_port, cbs, conn_data);
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    px__listener_publish(l);
    *out = l;
    return 0;
}

/* A non-blocking socket for addr with its connect issued: the fd, or
 * -errno. For TCP the connect is under way (EINPROGRESS); a Unix socket
 * connects, or fails, at once. */
static int open_connect(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd =
        socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (addr->ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (connect(fd, (const struct sockaddr *)addr, len) < 0 &&
        errno != EINPROGRESS) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

static int resolver_submit(px_loop_t *loop, const char *host, int port,
                           const px_conn_callbacks_t *cbs, void *conn_data,
                           px_conn_t **out);

int px_connect(px_loop_t *loop, const char *host, int port,
               const px_conn_callbacks_t *cbs, void *conn_data, px_conn_t **out)
{
    if (cbs == NULL || host == NULL || port < 0 || port > 65535)
        return -EINVAL;
    if (atomic_load(&loop->stopping))
        return PX_ESTOPPED;
    struct sockaddr_storage addr;
    socklen_t len;
    if (!numeric_addr(host, port, &addr, &len))
        return resolver_submit(loop, host, port, cbs, conn_data, out);
    int fd = open_connect(&addr, len);
    if (fd < 0)
        return fd;
    return px__conn_outgoing(loop, fd, 0, cbs, conn_data, out);
}

/* ---- Unix domain sockets ---------------------------------------------- */

static int unix_addr(const char *path, size_t len, struct sockaddr_un *sun,
                     socklen_t *slen)
{
    if (path == NULL || len == 0)
        return -EINVAL;
    bool abstract = path[0] == '\0';
    /* A file system path is NUL-terminated in sun_path; an abstract name
     * is not, and needs a byte after its leading NUL. */
    if (abstract ? len < 2 : memchr(path, '\0', len) != NULL)
        return -EINVAL;
    if (len > PX_UNIX_PATH_MAX + (abstract ? 1u : 0u))
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len);
    *slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                        (abstract ? 0u : 1u));
    return 0;
}

/* After bind found path taken: removes it when it is a stale socket (one
 * that refuses connections: its server is gone), so that bind can be
 * retried. -EADDRINUSE when a server accepts on it, -EEXIST when it is not
 * a socket (never removed: it is not ours to delete). */
static int remove_stale(const struct sockaddr_un *sun, socklen_t slen)
{
    struct stat st;
    if (lstat(sun->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : -errno; /* gone meanwhile: retry */
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)sun, slen) == 0 ? 0 : errno;
    close(fd);
    /* EAGAIN: its backlog is full, so a server is there. */
    if (rc == 0 || rc == EAGAIN)
        return -EADDRINUSE;
    if (rc != ECONNREFUSED)
        return -rc;
    if (unlink(sun->sun_path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/* path made absolute (against the current directory), so that the unlink
 * at close removes the bound file even if the process changed directory. */
static char *absolute_path(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s/%s", cwd, path);
    return out;
}

int px_listen_unix(px_loop_t *loop, const char *path, size_t len, int backlog,
                   const px_conn_callbacks_t *cbs, void *conn_data,
                   px_listener_t **out)
{
    if (cbs == NULL || backlog < 0)
        return -EINVAL;
    struct sockaddr_un sun;
    socklen_t slen;
    int rc = unix_addr(path, len, &sun, &slen);
    if (rc < 0)
        return rc;
    if (atomic_load(&loop->stopping))
        return PX_ESTOPPED;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    bool file = path[0] != '\0';
    rc = bind(fd, (struct sockaddr *)&sun, slen) < 0 ? -errno : 0;
    if (rc == -EADDRINUSE && file) {
        rc = remove_stale(&sun, slen);
        if (rc == 0)
            rc = bind(fd, (struct sockaddr *)&sun, slen) < 0 ? -errno : 0;
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    struct stat st = {0};
    char *keep = NULL;
    if (file && (stat(sun.sun_path, &st) < 0 ||
                 (keep = absolute_path(sun.sun_path)) == NULL))
        rc = -ENOMEM;
    if (rc == 0 && listen(fd, backlog ? backlog : SOMAXCONN) < 0)
        rc = -errno;
    px_listener_t *l =
        rc == 0 ? px__listener_new(loop, fd, -1, cbs, conn_data) : NULL;
    if (l == NULL) {
        if (file)
            unlink(sun.sun_path);
        close(fd);
        free(keep);
        return rc < 0 ? rc : -ENOMEM;
    }
    atomic_store(&l->unix_path, keep);
    l->unix_dev = st.st_dev;
    l->unix_ino = st.st_ino;
    px__listener_publish(l);
    *out = l;
    return 0;
}

void px__listener_unlink(px_listener_t *l)
{
    char *path = atomic_exchange(&l->unix_path, NULL);
    if (path == NULL)
        return;
    struct stat st;
    /* Another server may have replaced the file since (after finding ours
     * stale): its file is not ours to remove. */
    if (stat(path, &st) == 0 && st.st_dev == l->unix_dev &&
        st.st_ino == l->unix_ino)
        unlink(path);
    free(path);
}

int px_connect_unix(px_loop_t *loop, const char *path, size_t len,
                    const px_conn_callbacks_t *cbs, void *conn_data,
                    px_conn_t **out)
{
    struct sockaddr_storage addr;
    socklen_t slen;
    if (cbs == NULL)
        return -EINVAL;
    int rc = unix_addr(path, len, (struct sockaddr_un *)&addr, &slen);
    if (rc < 0)
        return rc;
    if (atomic_load(&loop->stopping))
        return PX_ESTOPPED;
    /* A refused or missing socket fails connect() at once; it still goes
     * through the worker, so that on_close reports it as for TCP. */
    int fd = open_connect(&addr, slen);
    return px__conn_outgoing(loop, fd < 0 ? -1 : fd, fd < 0 ? fd : 0, cbs,
                             conn_data, out);
}

/* ---- the resolver ----------------------------------------------------- */

typedef struct {
    px__qnode_t node; /* the queue, then the in-flight list */
    px_conn_t *conn;  /* a reference */
    int port;
    bool answered; /* its connection went to its worker */
    char host[];
} resolve_req_t;

typedef struct px__resolver_s {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    px__qnode_t queue;    /* waiting for a thread */
    px__qnode_t inflight; /* a thread resolves them */
    px_loop_t *loop;      /* NULL once detached */
    int threads, idle;
    int refs; /* the loop's, and one per thread */
} resolver_t;

int px__resolver_new(px_loop_t *loop)
{
    resolver_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    px__q_init(&r->queue);
    px__q_init(&r->inflight);
    r->loop = loop;
    r->refs = 1;
    loop->resolver = r;
    return 0;
}

static void resolver_unref_locked(resolver_t *r)
{
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->lock);
    if (last) {
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
        free(r);
    }
}

/* Hands req's connection to its worker: connected on fd, or failed with
 * error (fd -1). r->lock held, so the loop is alive (detach takes it). */
static void answer_locked(resolve_req_t *req, int fd, int error)
{
    px_conn_t *c = req->conn;
    req->answered = true;
    pthread_mutex_lock(&c->lock);
    if (c->close_requested && error == 0) {
        close(fd);
        fd = -1;
        error = PX_ECLOSED;
    }
    c->fd = fd;
    c->connect_error = error;
    atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_RESOLVING);
    /* Posted under c->lock: a px_conn_close that finds RESOLVING cleared
     * posts its CLOSE after this ADOPT. */
    if (px__worker_post(c->worker, PX__MSG_CONN_ADOPT, c) < 0) {
        /* Out of memory for the message: the connection is lost, as an
         * accept would be; the caller's reference still frees it. */
        if (fd >= 0)
            close(fd);
        c->fd = -1;
    }
    pthread_mutex_unlock(&c->lock);
}

static void req_free(resolve_req_t *req)
{
    px_conn_unref(req->conn);
    free(req);
}

static void *resolver_main(void *arg)
{
    resolver_t *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (px__q_empty(&r->queue) && r->loop != NULL) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += RESOLVER_IDLE_S;
            r->idle++;
            int rc = 0;
            while (px__q_empty(&r->queue) && r->loop != NULL && rc == 0)
                rc = pthread_cond_timedwait(&r->cond, &r->lock, &until);
            r->idle--;
        }
        px__qnode_t *n = r->loop != NULL ? px__q_pop(&r->queue) : NULL;
        if (n == NULL)
            break; /* idle for long enough, or detached */
        resolve_req_t *req = px__container_of(n, resolve_req_t, node);
        px__q_push(&r->inflight, &req->node);
        pthread_mutex_unlock(&r->lock);

        struct sockaddr_storage addr;
        socklen_t len;
        int fd = resolve_name(req->host, req->port, &addr, &len);
        if (fd == 0)
            fd = open_connect(&addr, len);

        pthread_mutex_lock(&r->lock);
        px__q_remove(&req->node);
        if (req->answered) {
            if (fd >= 0)
                close(fd); /* the loop stopped meanwhile */
        } else {
            answer_locked(req, fd < 0 ? -1 : fd, fd < 0 ? fd : 0);
        }
        pthread_mutex_unlock(&r->lock);
        req_free(req);
        pthread_mutex_lock(&r->lock);
    }
    r->threads--;
    resolver_unref_locked(r);
    return NULL;
}

static int resolver_submit(px_loop_t *loop, const char *host, int port,
                           const px_conn_callbacks_t *cbs, void *conn_data,
                           px_conn_t **out)
{
    resolver_t *r = loop->resolver;
    size_t hostlen = strlen(host) + 1;
    resolve_req_t *req = malloc(sizeof(*req) + hostlen);
    px_conn_t *c =
        req ? px__conn_new(loop, px__place(loop, NULL), -1, cbs, conn_data)
            : NULL;
    if (c == NULL) {
        free(req);
        return -ENOMEM;
    }
    memcpy(req->host, host, hostlen);
    req->port = port;
    req->answered = false;
    req->conn = c; /* the reference px__conn_new made */
    atomic_fetch_or(&c->flags, PX__CONN_CONNECTING | PX__CONN_RESOLVING);

    pthread_mutex_lock(&r->lock);
    if (r->loop == NULL) {
        pthread_mutex_unlock(&r->lock);
        req_free(req);
        return PX_ESTOPPED;
    }
    if (r->idle == 0 && r->threads < RESOLVER_THREADS) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&tid, &attr, resolver_main, r) == 0) {
            r->threads++;
            r->refs++;
        } else if (r->threads == 0) {
            pthread_attr_destroy(&attr);
            pthread_mutex_unlock(&r->lock);
            req_free(req);
            return -EAGAIN;
        }
        pthread_attr_destroy(&attr);
    }
    if (out) {
        px_conn_ref(c);
        *out = c;
    }
    px__q_push(&r->queue, &req->node);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

void px__resolver_detach(px_loop_t *loop)
{
    resolver_t *r = loop->resolver;
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    if (r->loop == NULL) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    px__qnode_t *n;
    while ((n = px__q_pop(&r->queue)) != NULL) {
        resolve_req_t *req = px__container_of(n, resolve_req_t, node);
        answer_locked(req, -1, PX_ECLOSED);
        req_free(req);
    }
    /* The threads resolving these free them when getaddrinfo returns. */
    for (n = r->inflight.next; n != &r->inflight; n = n->next) {
        resolve_req_t *req = px__container_of(n, resolve_req_t, node);
        answer_locked(req, -1, PX_ECLOSED);
    }
    r->loop = NULL;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void px__resolver_release(px_loop_t *loop)
{
    resolver_t *r = loop->resolver;
    if (r == NULL)
        return;
    loop->resolver = NULL;
    pthread_mutex_lock(&r->lock);
    resolver_unref_locked(r);
}
