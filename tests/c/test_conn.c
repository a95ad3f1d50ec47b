/*
 * test_conn.c - a connection's life apart from sending: pausing and
 * resuming reading (from a foreign thread and from the connection's own
 * callback), the peer closing or resetting, closing a listener, and
 * outgoing connections to a listening and to a closed port. Each case runs
 * under both backends.
 */
#include "engine_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* A server that keeps every byte it receives. */
typedef struct {
    conn_log_t log;
    pthread_mutex_t lock;
    char *data;
    size_t len, cap;
    atomic_size_t received;
    atomic_bool pause_on_data; /* on_data pauses its own connection */
    atomic_size_t at_close;    /* bytes received when on_close ran */
} sink_t;

static void sink_on_data(px_conn_t *conn, const char *data, size_t len)
{
    sink_t *s = px_conn_data(conn);
    pthread_mutex_lock(&s->lock);
    ASSERT_UINT_CMP(s->len + len, <=, s->cap);
    memcpy(s->data + s->len, data, len);
    s->len += len;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add(&s->received, len);
    if (atomic_load(&s->pause_on_data))
        ASSERT_PX_OK(px_conn_pause_reading(conn));
}

static void sink_on_close(px_conn_t *conn, int error)
{
    sink_t *s = px_conn_data(conn);
    atomic_store(&s->at_close, atomic_load(&s->received));
    conn_log_close(conn, error);
}

static const px_conn_callbacks_t sink_callbacks = {
    .on_open = conn_log_open,
    .on_data = sink_on_data,
    .on_close = sink_on_close,
};

/* The fixture with s, which keeps up to cap bytes, as its server. */
static void sink_serve(sink_t *s, size_t cap, engine_fixture_t *f, int backend)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->data = malloc(cap);
    ASSERT_TRUE(s->data != NULL);
    s->cap = cap;
    *f = (engine_fixture_t){.callbacks = &sink_callbacks, .conn_data = s};
    engine_fixture_start(f, backend);
}

static void sink_finish(sink_t *s, engine_fixture_t *f)
{
    engine_fixture_stop(f);
    pthread_mutex_destroy(&s->lock);
    free(s->data);
}

/* ---- pause and resume ------------------------------------------------- */

#define PAUSED_BYTES (3u << 20)

typedef struct {
    int fd;
    size_t len;
    uint64_t offset;
} sender_job_t;

static void *send_pattern(void *arg)
{
    sender_job_t *job = arg;
    static char chunk[64 << 10];
    for (size_t off = 0; off < job->len; off += sizeof(chunk)) {
        size_t n =
            job->len - off < sizeof(chunk) ? job->len - off : sizeof(chunk);
        fill_pattern(chunk, n, job->offset + off, 6);
        client_send_all(job->fd, chunk, n);
    }
    return NULL;
}

static void test_pause_resume(int backend)
{
    static sink_t sink;
    engine_fixture_t f;
    sink_serve(&sink, PAUSED_BYTES + 4096, &f, backend);
    px_conn_t *conn = conn_log_wait(&sink.log, 0);

    /* Paused from a foreign thread: megabytes arrive, none is delivered
     * (more than the kernel buffers: the sender blocks until resumed). */
    ASSERT_PX_OK(px_conn_pause_reading(conn));
    ASSERT_PX_OK(px_conn_pause_reading(conn)); /* idempotent */
    sender_job_t job = {f.fd, PAUSED_BYTES, 0};
    pthread_t tid = start_thread(send_pattern, &job);
    sleep_ms(300);
    ASSERT_UINT_EQ(atomic_load(&sink.received), 0);
    ASSERT_PX_OK(px_conn_resume_reading(conn));
    join_thread(tid);
    WAIT_FOR(atomic_load(&sink.received) == PAUSED_BYTES, WAIT_MS);
    check_pattern(sink.data, PAUSED_BYTES, 0, 6);

    /* Paused by its own callback: each resume lets one more batch in. */
    atomic_store(&sink.pause_on_data, true);
    char msg[100];
    fill_pattern(msg, sizeof(msg), PAUSED_BYTES, 6);
    client_send_all(f.fd, msg, sizeof(msg));
    WAIT_FOR(atomic_load(&sink.received) == PAUSED_BYTES + 100, WAIT_MS);
    fill_pattern(msg, sizeof(msg), PAUSED_BYTES + 100, 6);
    client_send_all(f.fd, msg, sizeof(msg));
    sleep_ms(200);
    ASSERT_UINT_EQ(atomic_load(&sink.received), PAUSED_BYTES + 100);
    ASSERT_PX_OK(px_conn_resume_reading(conn));
    WAIT_FOR(atomic_load(&sink.received) == PAUSED_BYTES + 200, WAIT_MS);
    check_pattern(sink.data, PAUSED_BYTES + 200, 0, 6);

    /* As with asyncio, a paused connection does not read, so it sees the
     * peer's close only once resumed; afterwards pausing reports the
     * connection closed. */
    atomic_store(&sink.pause_on_data, false);
    engine_fixture_disconnect(&f);
    sleep_ms(100);
    ASSERT_INT_EQ(atomic_load(&sink.log.closed), 0);
    ASSERT_PX_OK(px_conn_resume_reading(conn));
    WAIT_FOR(atomic_load(&sink.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&sink.log.close_error), 0);
    ASSERT_INT_EQ(px_conn_pause_reading(conn), PX_ECLOSED);
    ASSERT_INT_EQ(px_conn_resume_reading(conn), PX_ECLOSED);
    sink_finish(&sink, &f);
}

/* ---- the peer closes or resets ---------------------------------------- */

static void test_peer_close(int backend)
{
    static sink_t sink;
    engine_fixture_t f;
    sink_serve(&sink, 4096, &f, backend);
    client_send_all(f.fd, "goodbye", 7);
    engine_fixture_disconnect(&f);
    WAIT_FOR(atomic_load(&sink.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&sink.log.opened), 1);
    ASSERT_INT_EQ(atomic_load(&sink.log.close_error), 0);
    /* The bytes sent before the close were delivered before on_close. */
    ASSERT_UINT_EQ(atomic_load(&sink.at_close), 7);
    ASSERT_SPAN_EQ(sink.data, sink.len, "goodbye");
    sink_finish(&sink, &f);
}

static void test_peer_reset(int backend)
{
    static sink_t sink;
    engine_fixture_t f;
    sink_serve(&sink, 4096, &f, backend);
    conn_log_wait(&sink.log, 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ASSERT_INT_EQ(setsockopt(f.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    engine_fixture_disconnect(&f); /* sends a reset */
    WAIT_FOR(atomic_load(&sink.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&sink.log.close_error), -ECONNRESET);
    sink_finish(&sink, &f);
}

/* ---- closing a listener ----------------------------------------------- */

static void test_listener_close(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_start(&f, backend);
    conn_log_wait(&log, 0);

    px_listener_close(f.listener);
    px_listener_close(f.listener); /* idempotent */
    /* Once every worker stopped accepting, the socket is closed. */
    uint64_t until = px_now_ns() + (uint64_t)WAIT_MS * 1000000u;
    for (;;) {
        int probe = client_try_connect(f.port);
        if (probe == -ECONNREFUSED)
            break;
        ASSERT_TRUE(px_now_ns() < until);
        if (probe >= 0)
            close(probe);
        sleep_ms(5);
    }
    /* The established connection is not affected. */
    char back[5];
    client_send_all(f.fd, "still", 5);
    client_recv_exact(f.fd, back, 5);
    ASSERT_SPAN_EQ(back, 5, "still");
    engine_fixture_stop(&f);
}

/* ---- accepting with no file descriptors left --------------------------- */

#define STARVED_CLIENTS 4

static uint64_t cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000u;
}

/* While accept fails for lack of descriptors (EMFILE), the pending
 * connections keep the listening socket readable: the backend must back off
 * rather than spin, and accept them once descriptors are available again.
 * io_uring reads the limit when an accept is armed, so the listener starts
 * after the limit dropped, on the one descriptor left free for it. */
static void test_accept_out_of_fds(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    px_loop_t *loop = start_loop(backend, NULL);

    /* The clients' sockets exist before the limit drops: connecting needs
     * no new descriptor, accepting does. */
    int fds[STARVED_CLIENTS];
    for (int i = 0; i < STARVED_CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_INT_CMP(fds[i], >=, 0);
    }
    int highest = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            highest = fd;
    struct rlimit saved, starved;
    ASSERT_INT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    starved = saved;
    starved.rlim_cur = (rlim_t)highest + 2;
    ASSERT_INT_EQ(setrlimit(RLIMIT_NOFILE, &starved), 0);
    /* Lower descriptors closed earlier are free too: take them all, then
     * give one back for the listening socket. */
    int fillers[4096], nfillers = 0;
    for (;;) {
        int fd = dup(0);
        if (fd < 0) {
            ASSERT_INT_EQ(errno, EMFILE);
            break;
        }
        ASSERT_INT_CMP(nfillers, <, 4096);
        fillers[nfillers++] = fd;
    }
    ASSERT_INT_CMP(nfillers, >, 0);
    close(fillers[--nfillers]);
    int port = listen_local(loop, &echo_callbacks, &log, NULL);
    sleep_ms(50); /* every worker armed its accept */

    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < STARVED_CLIENTS; i++)
        ASSERT_INT_EQ(connect(fds[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
    uint64_t cpu_before = cpu_ms();
    sleep_ms(400);
    uint64_t cpu_used = cpu_ms() - cpu_before;
    ASSERT_INT_EQ(atomic_load(&log.opened), 0);
    /* A spinning worker would burn about 400 ms of CPU here. */
    ASSERT_UINT_CMP(cpu_used, <, 150);

    ASSERT_INT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
    for (int i = 0; i < nfillers; i++)
        close(fillers[i]);
    WAIT_FOR(atomic_load(&log.opened) == STARVED_CLIENTS, WAIT_MS);
    for (int i = 0; i < STARVED_CLIENTS; i++) {
        char back[3];
        client_send_all(fds[i], "abc", 3);
        client_recv_exact(fds[i], back, 3);
        ASSERT_SPAN_EQ(back, 3, "abc");
        close(fds[i]);
    }
    WAIT_FOR(atomic_load(&log.closed) == STARVED_CLIENTS, WAIT_MS);
    conn_log_release(&log);
    finish_loop(loop);
}

/* ---- outgoing connections --------------------------------------------- */

typedef struct {
    conn_log_t log;
    int server_port;
    char peer[64];
    int peer_port;
    int local_port;
    atomic_int worker;
    pthread_mutex_t lock;
    char got[64];
    size_t got_len;
} dialer_t;

static const char early[] = "sent-while-connecting;";
static const char ping[] = "ping";

static void dialer_open(px_conn_t *conn)
{
    dialer_t *d = px_conn_data(conn);
    ASSERT_PX_OK(
        px_conn_peername(conn, d->peer, sizeof(d->peer), &d->peer_port));
    char local[64];
    ASSERT_PX_OK(px_conn_sockname(conn, local, sizeof(local), &d->local_port));
    ASSERT_STR_EQ(local, "127.0.0.1");
    atomic_store(&d->worker, px_current_worker());
    struct iovec iov = {(void *)ping, sizeof(ping) - 1};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
    conn_log_open(conn);
}

static void dialer_data(px_conn_t *conn, const char *data, size_t len)
{
    dialer_t *d = px_conn_data(conn);
    pthread_mutex_lock(&d->lock);
    ASSERT_UINT_CMP(d->got_len + len, <=, sizeof(d->got));
    memcpy(d->got + d->got_len, data, len);
    d->got_len += len;
    bool all = d->got_len == sizeof(early) - 1 + sizeof(ping) - 1;
    pthread_mutex_unlock(&d->lock);
    if (all)
        px_conn_close(conn, 0);
}

/* The peer port the server saw on its last accepted connection. */
static atomic_int accepted_peer_port;

static void record_peer_open(px_conn_t *conn)
{
    char host[64];
    int port = 0;
    ASSERT_PX_OK(px_conn_peername(conn, host, sizeof(host), &port));
    ASSERT_STR_EQ(host, "127.0.0.1");
    atomic_store(&accepted_peer_port, port);
    conn_log_open(conn);
}

/* Holds a worker in a callback until the gate opens. */
typedef struct {
    atomic_int held[TEST_WORKERS]; /* a callback waits at the gate */
    atomic_bool open;
} gate_t;

static void wait_at_gate(void *arg)
{
    gate_t *g = arg;
    atomic_fetch_add(&g->held[worker_index(px_current_worker())], 1);
    uint64_t until = px_now_ns() + (uint64_t)WAIT_MS * 1000000u;
    while (!atomic_load(&g->open) && px_now_ns() < until)
        sleep_ms(1);
}

static int gate_held(gate_t *g)
{
    int n = 0;
    for (int w = 0; w < TEST_WORKERS; w++)
        n += atomic_load(&g->held[w]);
    return n;
}

static void test_connect(int backend)
{
    conn_log_t server_log = CONN_LOG_INIT;
    px_conn_callbacks_t echo = {.on_open = record_peer_open,
                                .on_data = echo_on_data,
                                .on_close = conn_log_close};
    /* No hand-off here: the gate below must hold every worker. */
    px_loop_options_t opts;
    test_loop_options(&opts, backend);
    opts.handoff_ms = 60000;
    px_loop_t *loop = start_loop(backend, &opts);
    int port = listen_local(loop, &echo, &server_log, NULL);

    /* While every worker waits at the gate, the new connection cannot be
     * adopted, so a send right after px_connect is surely made while it
     * is connecting. */
    static gate_t gate;
    for (int i = 0; i < TEST_WORKERS; i++)
        ASSERT_PX_OK(
            px_timer_start(loop, 0, 0, wait_at_gate, NULL, &gate, NULL));
    WAIT_FOR(gate_held(&gate) == TEST_WORKERS, WAIT_MS);
    for (int w = 0; w < TEST_WORKERS; w++)
        ASSERT_INT_EQ(atomic_load(&gate.held[w]), 1);
    static dialer_t d;
    pthread_mutex_init(&d.lock, NULL);
    atomic_store(&d.worker, -1);
    px_conn_callbacks_t cbs = {.on_open = dialer_open,
                               .on_data = dialer_data,
                               .on_close = conn_log_close};
    px_conn_t *conn = NULL;
    ASSERT_PX_OK(px_connect(loop, "127.0.0.1", port, &cbs, &d, &conn));
    /* Sent before the connection is established: goes out first. */
    struct iovec iov = {(void *)early, sizeof(early) - 1};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
    atomic_store(&gate.open, true);

    WAIT_FOR(atomic_load(&d.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&d.log.opened), 1);
    ASSERT_INT_EQ(atomic_load(&d.log.close_error), PX_ECLOSED);
    ASSERT_SPAN_EQ(d.got, d.got_len, "sent-while-connecting;ping");
    ASSERT_STR_EQ(d.peer, "127.0.0.1");
    ASSERT_INT_EQ(d.peer_port, port);
    int worker = worker_index(atomic_load(&d.worker));
    ASSERT_INT_EQ(px_conn_worker(conn), worker);
    /* The server saw the dialer's address as its peer. */
    conn_log_wait(&server_log, 0);
    ASSERT_INT_EQ(atomic_load(&accepted_peer_port), d.local_port);
    WAIT_FOR(atomic_load(&server_log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&server_log.close_error), 0);
    /* After the close, the engine refuses to send. */
    ASSERT_INT_EQ(px_conn_send(conn, &iov, 1, NULL), PX_ECLOSED);
    px_conn_unref(conn);
    conn_log_release(&d.log);
    conn_log_release(&server_log);
    finish_loop(loop);
    pthread_mutex_destroy(&d.lock);
}

static void test_connect_refused(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t cbs = {.on_open = conn_log_open,
                               .on_close = conn_log_close};
    px_conn_t *conn = NULL;
    ASSERT_PX_OK(
        px_connect(loop, "127.0.0.1", closed_port(), &cbs, &log, &conn));
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.opened), 0);
    ASSERT_INT_EQ(atomic_load(&log.close_error), -ECONNREFUSED);
    px_conn_unref(conn);
    /* Bad arguments fail at once, with nothing to call back. */
    ASSERT_INT_EQ(px_connect(loop, "127.0.0.1", 70000, &cbs, &log, NULL),
                  -EINVAL);
    ASSERT_INT_EQ(px_connect(loop, NULL, 80, &cbs, &log, NULL), -EINVAL);
    ASSERT_INT_EQ(px_connect(loop, "127.0.0.1", 80, NULL, &log, NULL), -EINVAL);
    ASSERT_INT_EQ(atomic_load(&log.closed), 1);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_pause_resume),      ENGINE_CASE(test_peer_close),
    ENGINE_CASE(test_peer_reset),        ENGINE_CASE(test_listener_close),
    ENGINE_CASE(test_connect),           ENGINE_CASE(test_connect_refused),
    ENGINE_CASE(test_accept_out_of_fds),
};

TEST_MAIN(cases)
