/*
 * test_http_stream.c - streamed responses over real sockets: chunked
 * framing byte for byte, a given Content-Length (short and over), an
 * abort after the head, pipelined requests around a stream (inside the
 * callback and from another thread), HEAD, HTTP/1.0 (close-delimited),
 * a slow reader against a large producer (the unsent bytes stay bounded),
 * and a client that goes away mid-stream (on_close, then on_done).
 * Each case runs under both backends.
 */
#include "http_fixture.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#define BLOCK (64u << 10)
#define BIG_TOTAL (32u << 20)
#define HIGH_WATER (1u << 20)

/* A producer that writes its bytes (a pattern) in blocks, stops when the
 * stream is full and carries on from on_drain. */
typedef struct {
    px_http_exchange_t *ex;
    size_t total, sent;
    char block[BLOCK];
} producer_t;

typedef struct {
    atomic_int drains, closes, dones;
    atomic_int result; /* a result the test checks, see the routes */
    atomic_size_t max_unsent;
    atomic_int threads; /* streaming threads still running */
    producer_t producer;
} test_state_t;

static test_state_t state;

static void on_drain(void *arg);

static void count_close(void *arg)
{
    (void)arg;
    atomic_fetch_add(&state.closes, 1);
}

static void count_done(void *arg)
{
    (void)arg;
    atomic_fetch_add(&state.dones, 1);
}

static const px_http_stream_options_t counting = {
    .on_close = count_close,
    .on_done = count_done,
};

static const px_http_stream_options_t producing = {
    .high_water = HIGH_WATER,
    .on_drain = on_drain,
    .on_close = count_close,
    .on_done = count_done,
    .arg = &state.producer,
};

static void produce(producer_t *p)
{
    while (p->sent < p->total) {
        size_t n = p->total - p->sent < BLOCK ? p->total - p->sent : BLOCK;
        fill_pattern(p->block, n, p->sent, 3);
        int rc = px_http_stream_write(p->ex, p->block, n);
        if (rc == PX_ECLOSED)
            break;
        p->sent += n;
        size_t unsent = px_http_stream_unsent(p->ex);
        size_t seen = atomic_load(&state.max_unsent);
        while (unsent > seen &&
               !atomic_compare_exchange_weak(&state.max_unsent, &seen, unsent))
            ;
        if (rc == PX_HTTP_STREAM_FULL)
            return;
        ASSERT_PX_OK(rc);
    }
    atomic_store(&state.result, px_http_stream_end(p->ex));
}

static void on_drain(void *arg)
{
    atomic_fetch_add(&state.drains, 1);
    produce(arg);
}

static bool path_is(const px_http_server_request_t *req, const char *path)
{
    return req->path_len == strlen(path) &&
           memcmp(req->path, path, req->path_len) == 0;
}

/* /late: a stream started and written from another thread. */
static void *stream_late(void *arg)
{
    px_http_exchange_t *ex = arg;
    sleep_ms(20);
    ASSERT_PX_OK(px_http_stream_start(ex, 200, NULL, 0, PX_HTTP_STREAM_CHUNKED,
                                      &counting));
    ASSERT_PX_OK(px_http_stream_write(ex, "a", 1));
    sleep_ms(10);
    ASSERT_PX_OK(px_http_stream_write(ex, "bc", 2));
    ASSERT_PX_OK(px_http_stream_end(ex));
    atomic_fetch_sub(&state.threads, 1);
    return NULL;
}

/* /forever: writes until the client goes away. */
static void *stream_forever(void *arg)
{
    px_http_exchange_t *ex = arg;
    ASSERT_PX_OK(px_http_stream_start(ex, 200, NULL, 0, PX_HTTP_STREAM_CHUNKED,
                                      &counting));
    char data[1024];
    memset(data, 'x', sizeof(data));
    int rc;
    do {
        sleep_ms(2);
        rc = px_http_stream_write(ex, data, sizeof(data));
    } while (rc != PX_ECLOSED);
    atomic_store(&state.result, px_http_stream_end(ex));
    atomic_fetch_sub(&state.threads, 1);
    return NULL;
}

static void in_thread(void *(*fn)(void *), px_http_exchange_t *ex)
{
    atomic_fetch_add(&state.threads, 1);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ASSERT_INT_EQ(pthread_create(&tid, &attr, fn, ex), 0);
    pthread_attr_destroy(&attr);
}

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    static const px_http_header_t type = {"Content-Type", 12, "text/plain", 10};
    if (path_is(req, "/hello")) {
        ASSERT_PX_OK(px_http_respond(ex, 200, &type, 1, "hello", 5));
    } else if (path_is(req, "/chunks")) {
        ASSERT_PX_OK(px_http_stream_start(ex, 200, &type, 1,
                                          PX_HTTP_STREAM_CHUNKED, &counting));
        ASSERT_PX_OK(px_http_stream_write(ex, "hello", 5));
        ASSERT_PX_OK(px_http_stream_write(ex, "", 0));
        ASSERT_PX_OK(px_http_stream_write(ex, " ", 1));
        ASSERT_PX_OK(px_http_stream_write(ex, "world", 5));
        ASSERT_PX_OK(px_http_stream_end(ex));
        /* Done: another answer or write is refused. */
        ASSERT_INT_EQ(px_http_stream_write(ex, "x", 1), PX_EBADSTATE);
    } else if (path_is(req, "/length")) {
        ASSERT_PX_OK(px_http_stream_start(ex, 201, NULL, 0, 10, &counting));
        ASSERT_PX_OK(px_http_stream_write(ex, "01234", 5));
        ASSERT_INT_EQ(px_http_stream_write(ex, "567890", 6),
                      PX_HTTP_E_RESPONSE_FRAMING);
        ASSERT_PX_OK(px_http_stream_write(ex, "56789", 5));
        ASSERT_PX_OK(px_http_stream_end(ex));
    } else if (path_is(req, "/short")) {
        ASSERT_PX_OK(px_http_stream_start(ex, 200, NULL, 0, 10, &counting));
        ASSERT_PX_OK(px_http_stream_write(ex, "01234", 5));
        atomic_store(&state.result, px_http_stream_end(ex));
    } else if (path_is(req, "/abort")) {
        ASSERT_PX_OK(px_http_stream_start(ex, 200, NULL, 0,
                                          PX_HTTP_STREAM_CHUNKED, &counting));
        ASSERT_PX_OK(px_http_stream_write(ex, "partial", 7));
        px_http_stream_abort(ex);
    } else if (path_is(req, "/nobody")) {
        /* 204 and 304 cannot stream; the exchange stays open. */
        atomic_store(&state.result,
                     px_http_stream_start(ex, 204, NULL, 0,
                                          PX_HTTP_STREAM_CHUNKED, &counting));
        ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, "open", 4));
    } else if (path_is(req, "/late")) {
        in_thread(stream_late, ex);
    } else if (path_is(req, "/forever")) {
        in_thread(stream_forever, ex);
    } else if (path_is(req, "/big")) {
        producer_t *p = &state.producer;
        p->ex = ex;
        p->total = BIG_TOTAL;
        p->sent = 0;
        ASSERT_PX_OK(
            px_http_stream_start(ex, 200, NULL, 0, BIG_TOTAL, &producing));
        produce(p);
    } else {
        ASSERT_PX_OK(px_http_respond(ex, 404, NULL, 0, NULL, 0));
    }
}

static http_client_t *start(http_fixture_t *f, int backend)
{
    memset(&state, 0, sizeof(state));
    px_http_server_options_t o = {.on_request = on_request};
    return http_fixture_start(f, backend, &o);
}

static void stop(http_fixture_t *f)
{
    WAIT_FOR(atomic_load(&state.threads) == 0, WAIT_MS);
    http_fixture_stop(f);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* Reads exactly n raw bytes (after whatever the client buffered). */
static void read_raw(http_client_t *c, char *out, size_t n)
{
    size_t have = c->len < n ? c->len : n;
    memcpy(out, c->buf, have);
    memmove(c->buf, c->buf + have, c->len - have);
    c->len -= have;
    if (have < n)
        client_recv_exact(c->fd, out + have, n - have);
}

/* Reads until EOF or a reset; returns the bytes read. */
static size_t recv_until_closed(http_client_t *c, char *buf, size_t cap)
{
    size_t got = c->len < cap ? c->len : cap;
    memcpy(buf, c->buf, got);
    c->len = 0;
    for (;;) {
        ssize_t n = recv(c->fd, buf + got, cap - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNRESET)
            return got;
        if (n < 0)
            TEST_FAIL("recv after %zu bytes: %s", got, strerror(errno));
        if (n == 0 || got + (size_t)n == cap)
            return got + (size_t)n;
        got += (size_t)n;
    }
}

static void expect_raw(http_client_t *c, const char *expected)
{
    size_t n = strlen(expected);
    char *got = malloc(n + 1);
    ASSERT_TRUE(got != NULL);
    read_raw(c, got, n);
    got[n] = '\0';
    ASSERT_STR_EQ(got, expected);
    free(got);
}

static void read_head(http_client_t *c, http_response_t *r, int status)
{
    http_read_response(c, r, true);
    ASSERT_INT_EQ(r->status, status);
}

static void expect_field(const http_response_t *r, const char *name,
                         const char *value)
{
    char got[128];
    ASSERT_TRUE(http_header(r, name, got, sizeof(got)));
    ASSERT_STR_EQ(got, value);
}

static const char hello_world_chunks[] =
    "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";

/* ---- the cases ---------------------------------------------------------- */

static void test_chunked_framing(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    /* The stream is answered inside the callback, between two pipelined
     * requests answered at once: all three in order. */
    http_client_send_str(c, GET("/hello") GET("/chunks") GET("/hello"));
    http_expect(c, 200, "hello");
    http_response_t r;
    read_head(c, &r, 200);
    expect_field(&r, "Transfer-Encoding", "chunked");
    expect_field(&r, "Content-Type", "text/plain");
    ASSERT_INT_EQ(http_header_count(&r, "Content-Length"), 0);
    ASSERT_INT_EQ(http_header_count(&r, "Connection"), 0);
    http_response_free(&r);
    expect_raw(c, hello_world_chunks);
    http_expect(c, 200, "hello");
    WAIT_FOR(atomic_load(&state.dones) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.closes), 0);
    stop(&f);
}

static void test_late_stream_keeps_order(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(c, GET("/hello") GET("/late") GET("/hello")
                                GET("/late") GET("/chunks"));
    http_expect(c, 200, "hello");
    for (int i = 0; i < 2; i++) {
        http_response_t r;
        read_head(c, &r, 200);
        http_response_free(&r);
        expect_raw(c, "1\r\na\r\n2\r\nbc\r\n0\r\n\r\n");
        if (i == 0)
            http_expect(c, 200, "hello");
    }
    http_response_t r;
    read_head(c, &r, 200);
    http_response_free(&r);
    expect_raw(c, hello_world_chunks);
    WAIT_FOR(atomic_load(&state.dones) == 3, WAIT_MS);
    stop(&f);
}

static void test_content_length(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(c, GET("/length") GET("/hello"));
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 201);
    expect_field(&r, "Content-Length", "10");
    ASSERT_INT_EQ(http_header_count(&r, "Transfer-Encoding"), 0);
    ASSERT_STR_EQ(r.body, "0123456789");
    http_response_free(&r);
    http_expect(c, 200, "hello");
    /* Fewer bytes than announced: the client cannot tell the end, so the
     * connection closes after what was written. */
    http_client_send_str(c, GET("/short"));
    read_head(c, &r, 200);
    expect_field(&r, "Content-Length", "10");
    http_response_free(&r);
    expect_raw(c, "01234");
    http_expect_eof(c, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.result), PX_HTTP_E_RESPONSE_FRAMING);
    WAIT_FOR(atomic_load(&state.dones) == 2, WAIT_MS);
    stop(&f);
}

static void test_abort_after_head(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(c, GET("/abort") GET("/hello"));
    /* The abort resets the connection: what the client sees of the head
     * and the chunk depends on timing, but never the next response. */
    char buf[4096];
    size_t got = recv_until_closed(c, buf, sizeof(buf) - 1);
    buf[got] = '\0';
    ASSERT_TRUE(strstr(buf, "hello\r\n") == NULL);
    ASSERT_TRUE(strstr(buf, "Content-Length: 5") == NULL);
    WAIT_FOR(atomic_load(&state.dones) == 1, WAIT_MS);
    stop(&f);
}

static void test_no_content_status_refused(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(c, GET("/nobody"));
    http_expect(c, 200, "open");
    ASSERT_INT_EQ(atomic_load(&state.result), PX_HTTP_E_RESPONSE_FRAMING);
    ASSERT_INT_EQ(atomic_load(&state.dones), 0);
    stop(&f);
}

static void test_head(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(
        c, "HEAD /chunks HTTP/1.1\r\nHost: t\r\n\r\n"
           "HEAD /length HTTP/1.1\r\nHost: t\r\n\r\n" GET("/hello"));
    http_response_t r;
    read_head(c, &r, 200);
    expect_field(&r, "Transfer-Encoding", "chunked");
    http_response_free(&r);
    read_head(c, &r, 201);
    expect_field(&r, "Content-Length", "10");
    http_response_free(&r);
    /* No body went out: the next response follows at once. */
    http_expect(c, 200, "hello");
    http_expect_silence(c, 100);
    stop(&f);
}

static void test_http10_close_delimited(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(c, "GET /chunks HTTP/1.0\r\n\r\n");
    http_response_t r;
    read_head(c, &r, 200);
    ASSERT_INT_EQ(http_header_count(&r, "Transfer-Encoding"), 0);
    ASSERT_INT_EQ(http_header_count(&r, "Content-Length"), 0);
    expect_field(&r, "Connection", "close");
    http_response_free(&r);
    expect_raw(c, "hello world");
    http_expect_eof(c, WAIT_MS);
    http_client_close(c);

    /* Keep-alive asked for: still closed, as only the close ends the body;
     * a HEAD has no body, so its connection stays. */
    http_client_open(c, f.port);
    http_client_send_str(c, "HEAD /chunks HTTP/1.0\r\n"
                            "Connection: keep-alive\r\n\r\n"
                            "GET /hello HTTP/1.0\r\n"
                            "Connection: keep-alive\r\n\r\n");
    read_head(c, &r, 200);
    expect_field(&r, "Connection", "keep-alive");
    http_response_free(&r);
    http_expect(c, 200, "hello");
    stop(&f);
}

static void test_slow_reader_stays_bounded(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    /* A small receive window: the server sees the slow reader at once. */
    close(c->fd);
    c->fd = client_connect_rcvbuf(f.port, 64 << 10);
    http_client_send_str(c, GET("/big"));
    /* Nothing read for a while: the producer must stop at the bound. */
    sleep_ms(300);
    http_response_t r;
    read_head(c, &r, 200);
    http_response_free(&r);
    char *body = malloc(BIG_TOTAL);
    ASSERT_TRUE(body != NULL);
    /* A slow start, then the rest as fast as it comes. */
    size_t got = 0;
    for (int i = 0; i < 20; i++, got += 16384) {
        read_raw(c, body + got, 16384);
        sleep_ms(5);
    }
    read_raw(c, body + got, BIG_TOTAL - got);
    check_pattern(body, BIG_TOTAL, 0, 3);
    free(body);
    http_client_send_str(c, GET("/hello"));
    http_expect(c, 200, "hello");
    ASSERT_PX_OK(atomic_load(&state.result));
    ASSERT_TRUE(atomic_load(&state.drains) > 0);
    /* The bound: high water, plus the write that passed it. */
    size_t max = atomic_load(&state.max_unsent);
    if (max > HIGH_WATER + BLOCK + 64)
        TEST_FAIL("up to %zu bytes unsent", max);
    WAIT_FOR(atomic_load(&state.dones) == 1, WAIT_MS);
    stop(&f);
}

static void test_client_gone(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend);
    http_client_send_str(c, GET("/forever"));
    http_response_t r;
    read_head(c, &r, 200);
    http_response_free(&r);
    http_client_close(c);
    WAIT_FOR(atomic_load(&state.dones) == 1, WAIT_MS);
    /* The writer learns it from on_close, or from a write that failed
     * first (then the stream may end before the close is reported). */
    ASSERT_TRUE(atomic_load(&state.closes) <= 1);
    ASSERT_INT_EQ(atomic_load(&state.result), PX_ECLOSED);
    stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_chunked_framing),
    ENGINE_CASE(test_late_stream_keeps_order),
    ENGINE_CASE(test_content_length),
    ENGINE_CASE(test_abort_after_head),
    ENGINE_CASE(test_no_content_status_refused),
    ENGINE_CASE(test_head),
    ENGINE_CASE(test_http10_close_delimited),
    ENGINE_CASE(test_slow_reader_stays_bounded),
    ENGINE_CASE(test_client_gone),
};

TEST_MAIN(cases)
