/*
 * test_half_close.c - the peer's orderly end of input (shutdown(SHUT_WR))
 * with and without on_eof: a connection whose owner has on_eof stays open
 * for sending after every received byte was delivered, closes when the
 * owner says so, delivers input held back by a pause before on_eof, and
 * still closes at once, with the error, on a reset. Each case runs under
 * both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <sys/socket.h>

#define LATE_REPLY "a reply made after the peer's end of input"

/* A server that keeps what it receives and records on_eof. */
typedef struct {
    conn_log_t log;
    pthread_mutex_t lock;
    char data[256];
    size_t len;
    atomic_int eofs;
    atomic_size_t at_eof;      /* bytes received when on_eof ran */
    atomic_bool closed_at_eof; /* on_eof had seen on_close already */
    atomic_bool reply_in_eof;  /* on_eof answers and closes itself */
} half_t;

static void half_init(half_t *h)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
}

static void half_free(half_t *h)
{
    conn_log_release(&h->log);
    pthread_mutex_destroy(&h->lock);
}

static const px_conn_callbacks_t half_callbacks;

/* A loop on backend with h's server listening; the cases connect their
 * clients themselves. */
static void half_serve(half_t *h, engine_fixture_t *f, int backend)
{
    half_init(h);
    *f = (engine_fixture_t){.callbacks = &half_callbacks, .conn_data = h};
    engine_fixture_serve(f, backend);
}

static void half_finish(half_t *h, engine_fixture_t *f)
{
    engine_fixture_stop(f);
    half_free(h);
}

static size_t half_received(half_t *h)
{
    pthread_mutex_lock(&h->lock);
    size_t len = h->len;
    pthread_mutex_unlock(&h->lock);
    return len;
}

static void half_on_data(px_conn_t *conn, const char *data, size_t len)
{
    half_t *h = px_conn_data(conn);
    pthread_mutex_lock(&h->lock);
    ASSERT_UINT_CMP(h->len + len, <=, sizeof(h->data));
    memcpy(h->data + h->len, data, len);
    h->len += len;
    pthread_mutex_unlock(&h->lock);
}

static void send_text(px_conn_t *conn, const char *text)
{
    struct iovec iov = {(void *)text, strlen(text)};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
}

static void half_on_eof(px_conn_t *conn)
{
    half_t *h = px_conn_data(conn);
    atomic_store(&h->at_eof, half_received(h));
    atomic_store(&h->closed_at_eof, atomic_load(&h->log.closed) != 0);
    atomic_fetch_add(&h->eofs, 1);
    if (atomic_load(&h->reply_in_eof)) {
        send_text(conn, LATE_REPLY);
        px_conn_close(conn, 0);
    }
}

static const px_conn_callbacks_t half_callbacks = {
    .on_open = conn_log_open,
    .on_data = half_on_data,
    .on_eof = half_on_eof,
    .on_close = conn_log_close,
};

/* The client's request, then its end of input. */
static int request_then_shutdown(int port, const char *request)
{
    int fd = client_connect(port);
    client_send_all(fd, request, strlen(request));
    ASSERT_INT_EQ(shutdown(fd, SHUT_WR), 0);
    return fd;
}

static void expect_reply_then_eof(int fd, const char *reply)
{
    char buf[256];
    size_t got = client_recv_to_eof(fd, buf, sizeof(buf));
    ASSERT_SPAN_EQ(buf, got, reply);
}

/* ---- the connection outlives the peer's end of input ------------------- */

static void test_reply_after_eof(int backend)
{
    static half_t h;
    engine_fixture_t f;
    half_serve(&h, &f, backend);
    int fd = request_then_shutdown(f.port, "question");
    px_conn_t *conn = conn_log_wait(&h.log, 0);
    WAIT_FOR(atomic_load(&h.eofs) == 1, WAIT_MS);
    ASSERT_UINT_EQ(atomic_load(&h.at_eof), 8);
    ASSERT_SPAN_EQ(h.data, 8, "question");
    /* Still open, however long the answer takes. */
    sleep_ms(200);
    ASSERT_INT_EQ(atomic_load(&h.log.closed), 0);
    ASSERT_INT_EQ(atomic_load(&h.eofs), 1);
    ASSERT_TRUE(!client_readable_within(fd, 0));
    /* The answer comes from another thread, as a work item's would. */
    send_text(conn, LATE_REPLY);
    px_conn_close(conn, 0);
    expect_reply_then_eof(fd, LATE_REPLY);
    close(fd);
    WAIT_FOR(atomic_load(&h.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&h.log.close_error), PX_ECLOSED);
    ASSERT_INT_EQ(atomic_load(&h.eofs), 1);
    half_finish(&h, &f);
}

static void test_reply_from_on_eof(int backend)
{
    static half_t h;
    engine_fixture_t f;
    half_serve(&h, &f, backend);
    atomic_store(&h.reply_in_eof, true); /* before any connection */
    int fd = request_then_shutdown(f.port, "ask");
    expect_reply_then_eof(fd, LATE_REPLY);
    close(fd);
    WAIT_FOR(atomic_load(&h.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&h.eofs), 1);
    ASSERT_TRUE(!atomic_load(&h.closed_at_eof));
    ASSERT_UINT_EQ(atomic_load(&h.at_eof), 3);
    half_finish(&h, &f);
}

/* Input held back by a pause comes first; on_eof follows it. */
static void test_eof_after_paused_input(int backend)
{
    static half_t h;
    engine_fixture_t f;
    half_serve(&h, &f, backend);
    int fd = client_connect(f.port);
    px_conn_t *conn = conn_log_wait(&h.log, 0);
    ASSERT_PX_OK(px_conn_pause_reading(conn));
    sleep_ms(50); /* the pause reaches the worker before the bytes */
    client_send_all(fd, "held back", 9);
    ASSERT_INT_EQ(shutdown(fd, SHUT_WR), 0);
    sleep_ms(200);
    ASSERT_UINT_EQ(half_received(&h), 0);
    ASSERT_INT_EQ(atomic_load(&h.eofs), 0);
    ASSERT_PX_OK(px_conn_resume_reading(conn));
    WAIT_FOR(atomic_load(&h.eofs) == 1, WAIT_MS);
    ASSERT_UINT_EQ(atomic_load(&h.at_eof), 9);
    ASSERT_SPAN_EQ(h.data, 9, "held back");
    ASSERT_INT_EQ(atomic_load(&h.log.closed), 0);
    px_conn_close(conn, 0);
    char buf[8];
    ASSERT_UINT_EQ(client_recv_to_eof(fd, buf, sizeof(buf)), 0);
    close(fd);
    WAIT_FOR(atomic_load(&h.log.closed) == 1, WAIT_MS);
    half_finish(&h, &f);
}

/* ---- without on_eof, or on a reset: closed at once ----------------------- */

static void reply_on_data(px_conn_t *conn, const char *data, size_t len)
{
    (void)data;
    (void)len;
    send_text(conn, "direct");
}

static void test_no_on_eof_closes_after_queued(int backend)
{
    static conn_log_t log;
    memset(&log, 0, sizeof(log));
    px_conn_callbacks_t cbs = {.on_open = conn_log_open,
                               .on_data = reply_on_data,
                               .on_close = conn_log_close};
    engine_fixture_t f = {.callbacks = &cbs, .conn_data = &log};
    engine_fixture_serve(&f, backend);
    int fd = request_then_shutdown(f.port, "x");
    expect_reply_then_eof(fd, "direct");
    close(fd);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.close_error), 0);
    engine_fixture_stop(&f);
}

static void reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ASSERT_INT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fd); /* sends a reset */
}

static void test_reset_closes_at_once(int backend)
{
    static half_t h;
    engine_fixture_t f;
    half_serve(&h, &f, backend);
    int fd = client_connect(f.port);
    conn_log_wait(&h.log, 0);
    client_send_all(fd, "bye", 3);
    WAIT_FOR(half_received(&h) == 3, WAIT_MS);
    reset(fd);
    WAIT_FOR(atomic_load(&h.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&h.log.close_error), -ECONNRESET);
    ASSERT_INT_EQ(atomic_load(&h.eofs), 0);
    half_finish(&h, &f);
}

/* A peer that half-closed and then reset: the next send finds it gone and
 * the connection closes with the error. */
static void test_reset_after_eof_fails_the_send(int backend)
{
    static half_t h;
    engine_fixture_t f;
    half_serve(&h, &f, backend);
    int fd = request_then_shutdown(f.port, "q");
    px_conn_t *conn = conn_log_wait(&h.log, 0);
    WAIT_FOR(atomic_load(&h.eofs) == 1, WAIT_MS);
    reset(fd);
    sleep_ms(50); /* the reset arrives */
    /* A write to a reset socket fails at once (EPIPE) or after the peer's
     * second reset; either way the connection closes with an error. */
    struct iovec iov = {(void *)LATE_REPLY, sizeof(LATE_REPLY) - 1};
    for (int i = 0; i < 100 && atomic_load(&h.log.closed) == 0; i++) {
        (void)px_conn_send(conn, &iov, 1, NULL); /* fails once closed */
        sleep_ms(10);
    }
    WAIT_FOR(atomic_load(&h.log.closed) == 1, WAIT_MS);
    int error = atomic_load(&h.log.close_error);
    ASSERT_TRUE(error == -EPIPE || error == -ECONNRESET);
    half_finish(&h, &f);
}

/* ---- bounded: loop stop closes a half-closed connection ---------------- */

static void test_stop_closes_half_closed(int backend)
{
    static half_t h;
    engine_fixture_t f;
    half_serve(&h, &f, backend);
    int fd = request_then_shutdown(f.port, "never answered");
    WAIT_FOR(atomic_load(&h.eofs) == 1, WAIT_MS);
    ASSERT_PX_OK(px_loop_stop(f.loop));
    ASSERT_INT_EQ(atomic_load(&h.log.closed), 1);
    ASSERT_INT_EQ(atomic_load(&h.log.close_error), PX_ECLOSED);
    char buf[8];
    /* Aborted: a reset or a plain end, never a byte. */
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET));
    close(fd);
    half_free(&h);
    px_loop_free(f.loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_reply_after_eof),
    ENGINE_CASE(test_reply_from_on_eof),
    ENGINE_CASE(test_eof_after_paused_input),
    ENGINE_CASE(test_no_on_eof_closes_after_queued),
    ENGINE_CASE(test_reset_closes_at_once),
    ENGINE_CASE(test_reset_after_eof_fails_the_send),
    ENGINE_CASE(test_stop_closes_half_closed),
};

TEST_MAIN(cases)
