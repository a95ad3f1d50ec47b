/*
 * engine_util.c - helpers shared by the engine's C tests (see
 * engine_util.h): loop set-up per backend, client sockets, byte patterns,
 * connection logs and the loop+listener+client fixture.
 */
#include "engine_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

void test_loop_options(px_loop_options_t *opts, int backend)
{
    px_loop_options_init(opts);
    opts->workers = TEST_WORKERS;
    opts->backend = (px_backend_kind_t)backend;
}

int worker_index(int worker)
{
    if (worker < 0 || worker >= TEST_WORKERS)
        TEST_FAIL("worker %d of a loop of %d", worker, TEST_WORKERS);
    return worker;
}

uint64_t stats_handoffs(const px_stats_t *st)
{
    uint64_t n = 0;
    for (int i = 0; i < st->workers; i++)
        n += st->worker[i].handoffs;
    return n;
}

px_loop_t *new_loop(int backend, const px_loop_options_t *opts)
{
    px_loop_options_t defaults;
    if (opts == NULL) {
        test_loop_options(&defaults, backend);
        opts = &defaults;
    }
    px_loop_t *loop = NULL;
    int rc = px_loop_new(&loop, opts);
    if (rc == PX_ENOBACKEND && backend == PX_BACKEND_URING)
        TEST_SKIP("io_uring is not available here");
    ASSERT_PX_OK(rc);
    ASSERT_INT_EQ(px_loop_worker_count(loop), opts->workers);
    ASSERT_STR_EQ(px_loop_backend_name(loop),
                  backend == PX_BACKEND_URING ? "io_uring" : "epoll");
    return loop;
}

px_loop_t *start_loop(int backend, const px_loop_options_t *opts)
{
    px_loop_t *loop = new_loop(backend, opts);
    ASSERT_PX_OK(px_loop_start(loop));
    return loop;
}

void finish_loop(px_loop_t *loop)
{
    ASSERT_PX_OK(px_loop_stop(loop));
    px_loop_free(loop);
}

int listen_local(px_loop_t *loop, const px_conn_callbacks_t *cbs,
                 void *conn_data, px_listener_t **listener)
{
    px_listener_t *l = NULL;
    ASSERT_PX_OK(px_listen(loop, "127.0.0.1", 0, 128, cbs, conn_data, &l));
    int port = px_listener_port(l);
    ASSERT_INT_CMP(port, >, 0);
    if (listener)
        *listener = l;
    return port;
}

int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_INT_CMP(fd, >=, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    ASSERT_INT_EQ(bind(fd, (struct sockaddr *)&sin, len), 0);
    ASSERT_INT_EQ(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd); /* bound but never listening, then closed: refused */
    return ntohs(sin.sin_port);
}

int client_connect(int port) { return client_connect_rcvbuf(port, 0); }

static int connect_socket(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_INT_CMP(fd, >=, 0);
    if (rcvbuf > 0)
        ASSERT_INT_EQ(
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

int client_try_connect(int port) { return connect_socket(port, 0); }

int client_connect_rcvbuf(int port, int rcvbuf)
{
    int fd = connect_socket(port, rcvbuf);
    if (fd < 0)
        TEST_FAIL("connect to port %d: %s", port, strerror(-fd));
    return fd;
}

void client_send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            TEST_FAIL("send: %s", n < 0 ? strerror(errno) : "nothing sent");
        p += n;
        len -= (size_t)n;
    }
}

void client_recv_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, p + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            TEST_FAIL("recv after %zu of %zu bytes: %s", got, len,
                      strerror(errno));
        if (n == 0)
            TEST_FAIL("EOF after %zu of %zu bytes", got, len);
        got += (size_t)n;
    }
}

size_t client_recv_to_eof(int fd, void *buf, size_t cap)
{
    char *p = buf;
    size_t got = 0;
    for (;;) {
        char extra;
        ssize_t n = got < cap ? recv(fd, p + got, cap - got, 0)
                              : recv(fd, &extra, 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            TEST_FAIL("recv after %zu bytes: %s", got, strerror(errno));
        if (n == 0)
            return got;
        if (got >= cap)
            TEST_FAIL("more than the %zu bytes expected before EOF", cap);
        got += (size_t)n;
    }
}

bool client_readable_within(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pfd, 1, ms);
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        return false;
    char byte;
    return recv(fd, &byte, 1, MSG_DONTWAIT) == 1;
}

void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

pthread_t start_thread(void *(*fn)(void *), void *arg)
{
    pthread_t tid;
    int rc = pthread_create(&tid, NULL, fn, arg);
    if (rc != 0)
        TEST_FAIL("pthread_create: %s", strerror(rc));
    return tid;
}

void join_thread(pthread_t tid)
{
    int rc = pthread_join(tid, NULL);
    if (rc != 0)
        TEST_FAIL("pthread_join: %s", strerror(rc));
}

static unsigned char pattern_byte(uint64_t offset, unsigned seed)
{
    /* Not periodic in any small power of two, so a shifted or repeated
     * chunk does not match by accident. */
    uint64_t x = offset * 0x9E3779B97F4A7C15u + seed;
    return (unsigned char)((x >> 29) ^ (offset / 251));
}

void fill_pattern(void *buf, size_t len, uint64_t offset, unsigned seed)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(offset + i, seed);
}

void check_pattern(const void *buf, size_t len, uint64_t offset, unsigned seed)
{
    const unsigned char *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != pattern_byte(offset + i, seed))
            TEST_FAIL("stream byte %ju (seed %u) is 0x%02x, expected 0x%02x",
                      (uintmax_t)(offset + i), seed, p[i],
                      pattern_byte(offset + i, seed));
}

void echo_on_data(px_conn_t *conn, const char *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
}

void conn_log_open(px_conn_t *conn)
{
    conn_log_t *log = px_conn_data(conn);
    int index = atomic_fetch_add(&log->opened, 1);
    if (index < CONN_LOG_KEEP) {
        px_conn_ref(conn);
        atomic_store(&log->conns[index], conn);
    }
}

void conn_log_close(px_conn_t *conn, int error)
{
    conn_log_t *log = px_conn_data(conn);
    atomic_store(&log->close_error, error);
    if (error != 0)
        atomic_fetch_add(&log->close_errors, 1);
    atomic_fetch_add(&log->closed, 1);
}

px_conn_t *conn_log_wait(conn_log_t *log, int index)
{
    ASSERT_INT_CMP(index, <, CONN_LOG_KEEP);
    WAIT_FOR(atomic_load(&log->conns[index]) != NULL, WAIT_MS);
    return atomic_load(&log->conns[index]);
}

void conn_log_release(conn_log_t *log)
{
    for (int i = 0; i < CONN_LOG_KEEP; i++) {
        px_conn_t *conn = atomic_exchange(&log->conns[i], NULL);
        if (conn)
            px_conn_unref(conn);
    }
}

const px_conn_callbacks_t echo_callbacks = {
    .on_open = conn_log_open,
    .on_data = echo_on_data,
    .on_close = conn_log_close,
};

void engine_fixture_serve(engine_fixture_t *f, int backend)
{
    ASSERT_TRUE(f->callbacks != NULL && f->conn_data != NULL);
    f->loop = start_loop(backend, f->loop_options);
    f->port = listen_local(f->loop, f->callbacks, f->conn_data, &f->listener);
    f->fd = -1;
}

void engine_fixture_start(engine_fixture_t *f, int backend)
{
    engine_fixture_serve(f, backend);
    f->fd = client_connect_rcvbuf(f->port, f->rcvbuf);
}

void engine_fixture_disconnect(engine_fixture_t *f)
{
    ASSERT_INT_CMP(f->fd, >=, 0);
    close(f->fd);
    f->fd = -1;
}

void engine_fixture_stop(engine_fixture_t *f)
{
    if (f->fd >= 0)
        engine_fixture_disconnect(f);
    conn_log_t *log = f->conn_data;
    WAIT_FOR(atomic_load(&log->closed) == atomic_load(&log->opened), WAIT_MS);
    conn_log_release(log);
    finish_loop(f->loop);
}
