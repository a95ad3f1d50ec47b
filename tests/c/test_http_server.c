/*
 * test_http_server.c - the HTTP server over real sockets: keep-alive,
 * pipelining order (with responses given inside the callback and later from
 * other threads), Content-Length and chunked bodies, HEAD, 100-continue,
 * HTTP/1.0, every error status, the timeouts (slowloris, body, keep-alive,
 * idle), the response checks, large bodies, clients that half-close and
 * many concurrent clients.
 * Each case runs under both backends.
 */
#include "http_fixture.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>

#define BIG_BODY (1u << 20)

typedef struct {
    atomic_int requests;
    atomic_int late_outstanding;
    atomic_int late_result;  /* px_http_respond's result, late ones */
    atomic_int check_result; /* results the handler saw, see routes */
    atomic_int check_result2;
} test_state_t;

static test_state_t state;
static char big_body[BIG_BODY];

static bool path_is(const px_http_server_request_t *req, const char *path)
{
    return req->path_len == strlen(path) &&
           memcmp(req->path, path, req->path_len) == 0;
}

static void respond_text(px_http_exchange_t *ex, int status, const char *text)
{
    static const px_http_header_t type = {"Content-Type", 12, "text/plain", 10};
    ASSERT_PX_OK(px_http_respond(ex, status, &type, 1, text, strlen(text)));
}

/* ---- responses given later, from another thread ------------------------- */

typedef struct {
    px_http_exchange_t *ex;
    unsigned delay_ms;
    char text[64];
} late_t;

static void *respond_late(void *arg)
{
    late_t *late = arg;
    sleep_ms(late->delay_ms);
    int rc =
        px_http_respond(late->ex, 200, NULL, 0, late->text, strlen(late->text));
    atomic_store(&state.late_result, rc);
    free(late);
    atomic_fetch_sub(&state.late_outstanding, 1);
    return NULL;
}

/* /late?N answers "late N" after N ms. */
static void start_late(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    late_t *late = calloc(1, sizeof(*late));
    ASSERT_TRUE(late != NULL);
    late->ex = ex;
    snprintf(late->text, sizeof(late->text), "late %.*s", (int)req->query_len,
             req->query);
    late->delay_ms = (unsigned)strtoul(late->text + 5, NULL, 10);
    atomic_fetch_add(&state.late_outstanding, 1);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ASSERT_INT_EQ(pthread_create(&tid, &attr, respond_late, late), 0);
    pthread_attr_destroy(&attr);
}

/* ---- the routes --------------------------------------------------------- */

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    atomic_fetch_add(&state.requests, 1);
    char text[256];
    if (path_is(req, "/hello")) {
        respond_text(ex, 200, "hello");
    } else if (path_is(req, "/echo")) {
        ASSERT_PX_OK(
            px_http_respond(ex, 200, NULL, 0, req->body, req->body_len));
    } else if (path_is(req, "/info")) {
        snprintf(text, sizeof(text), "%.*s %.*s q=%.*s v=1.%d ka=%d n=%zu",
                 (int)req->head.method_len, req->head.method,
                 (int)req->path_len, req->path, (int)req->query_len, req->query,
                 req->head.minor_version, req->keep_alive,
                 req->head.num_headers);
        respond_text(ex, 200, text);
    } else if (path_is(req, "/late")) {
        start_late(ex, req);
    } else if (path_is(req, "/big")) {
        ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, big_body, BIG_BODY));
    } else if (path_is(req, "/close")) {
        /* Fields the server owns: dropped, and the close honoured. */
        static const px_http_header_t owned[] = {
            {"Content-Length", 14, "999", 3},
            {"Date", 4, "yesterday", 9},
            {"Transfer-Encoding", 17, "chunked", 7},
            {"connection", 10, "foo, Close", 10},
            {"X-Kept", 6, "yes", 3},
        };
        ASSERT_PX_OK(px_http_respond(ex, 200, owned, 5, "closing", 7));
    } else if (path_is(req, "/badheader")) {
        static const px_http_header_t bad = {"X-Split", 7, "a\r\nX-Evil: 1",
                                             13};
        atomic_store(&state.check_result,
                     px_http_respond(ex, 200, &bad, 1, "no", 2));
        respond_text(ex, 500, "fallback");
    } else if (path_is(req, "/nocontent")) {
        atomic_store(&state.check_result,
                     px_http_respond(ex, 204, NULL, 0, "x", 1));
        atomic_store(&state.check_result2,
                     px_http_respond(ex, 103, NULL, 0, NULL, 0));
        ASSERT_PX_OK(px_http_respond(ex, 204, NULL, 0, NULL, 0));
    } else if (path_is(req, "/twice")) {
        respond_text(ex, 200, "once");
        atomic_store(&state.check_result,
                     px_http_respond(ex, 200, NULL, 0, "twice", 5));
    } else if (path_is(req, "/abort")) {
        px_http_abort(ex);
    } else {
        respond_text(ex, 404, "not found");
    }
}

/* The options with this file's routes; opts NULL: the defaults. */
static px_http_server_options_t
with_routes(const px_http_server_options_t *opts)
{
    px_http_server_options_t o = {0};
    if (opts != NULL)
        o = *opts;
    o.on_request = on_request;
    o.data = &state;
    return o;
}

/* The fixture serving this file's routes, with its client. */
static http_client_t *start(http_fixture_t *f, int backend,
                            const px_http_server_options_t *opts)
{
    px_http_server_options_t o = with_routes(opts);
    return http_fixture_start(f, backend, &o);
}

/* The same for a test that opens its clients itself. */
static void serve(http_fixture_t *f, int backend,
                  const px_http_server_options_t *opts)
{
    px_http_server_options_t o = with_routes(opts);
    http_fixture_serve(f, backend, &o);
}

static void stop(http_fixture_t *f)
{
    WAIT_FOR(atomic_load(&state.late_outstanding) == 0, WAIT_MS);
    http_fixture_stop(f);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

static uint64_t ms_since(uint64_t start_ns)
{
    return (px_now_ns() - start_ns) / 1000000u;
}

/* ---- keep-alive, pipelining, bodies ------------------------------------- */

static void test_keep_alive(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    for (int i = 0; i < 3; i++) {
        http_client_send_str(c, GET("/hello"));
        http_response_t r;
        http_read_response(c, &r, false);
        ASSERT_INT_EQ(r.status, 200);
        ASSERT_STR_EQ(r.body, "hello");
        char value[64];
        ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
        ASSERT_STR_EQ(value, "5");
        ASSERT_TRUE(http_header(&r, "Content-Type", value, sizeof(value)));
        ASSERT_STR_EQ(value, "text/plain");
        ASSERT_TRUE(http_header(&r, "Date", value, sizeof(value)));
        ASSERT_UINT_EQ(strlen(value), PX_HTTP_DATE_LEN);
        ASSERT_STR_EQ(value + PX_HTTP_DATE_LEN - 4, " GMT");
        ASSERT_INT_EQ(http_header_count(&r, "Connection"), 0);
        http_response_free(&r);
    }
    http_client_send_str(c,
                         "GET /info?a=1&b HTTP/1.1\r\nHost: t\r\nX: y\r\n\r\n");
    http_expect(c, 200, "GET /info q=a=1&b v=1.1 ka=1 n=2");
    /* absolute-form targets give the path part */
    http_client_send_str(c, GET("http://t:80/info?z"));
    http_expect(c, 200, "GET /info q=z v=1.1 ka=1 n=1");
    http_client_send_str(c, GET("http://t"));
    http_expect(c, 404, "not found");
    ASSERT_INT_EQ(atomic_load(&state.requests), 6);
    stop(&f);
}

static void test_pipelining_order(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    /* Late responses from other threads between immediate ones. */
    http_client_send_str(
        c, GET("/late?40") GET("/hello")
               GET("/late?1") "POST /echo HTTP/1.1\r\nHost: t\r\n"
                              "Content-Length: 3\r\n\r\nabc" GET("/info?x")
                                  GET("/late?5"));
    http_expect(c, 200, "late 40");
    http_expect(c, 200, "hello");
    http_expect(c, 200, "late 1");
    http_expect(c, 200, "abc");
    http_expect(c, 200, "GET /info q=x v=1.1 ka=1 n=1");
    http_expect(c, 200, "late 5");
    ASSERT_INT_EQ(atomic_load(&state.late_result), 0);

    /* A hundred in one write: answered in order, gathered in few sends. */
    char batch[100 * 64];
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(batch + len, sizeof(batch) - len,
                                GET("/info?%d"), i);
    http_client_send(c, batch, len);
    for (int i = 0; i < 100; i++) {
        char expected[64];
        snprintf(expected, sizeof(expected), "GET /info q=%d v=1.1 ka=1 n=1",
                 i);
        http_expect(c, 200, expected);
    }
    stop(&f);
}

static void test_chunked_body(int backend)
{
    static const char request[] =
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;name=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, request);
    http_expect(c, 200, "hello world");
    /* Byte by byte, then another request on the same connection. */
    for (size_t i = 0; i < sizeof(request) - 1; i++) {
        http_client_send(c, request + i, 1);
        if (i % 16 == 0)
            sleep_ms(1);
    }
    http_expect(c, 200, "hello world");
    /* Two chunked requests and a GET in one write. */
    http_client_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "1\r\na\r\n0\r\n\r\n"
                            "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "3\r\nbcd\r\n0\r\n\r\n" GET("/hello"));
    http_expect(c, 200, "a");
    http_expect(c, 200, "bcd");
    http_expect(c, 200, "hello");
    stop(&f);
}

static void test_content_length_body(int backend)
{
    enum { SIZE = 100000 };
    static char body[SIZE];
    fill_pattern(body, SIZE, 0, 7);
    char head[128];
    snprintf(head, sizeof(head),
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n",
             SIZE);
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, head);
    for (size_t off = 0; off < SIZE; off += 9000) {
        sleep_ms(2);
        http_client_send(c, body + off, off + 9000 > SIZE ? SIZE - off : 9000);
    }
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_UINT_EQ(r.body_len, SIZE);
    check_pattern(r.body, SIZE, 0, 7);
    http_response_free(&r);
    /* An empty body. */
    http_client_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Content-Length: 0\r\n\r\n");
    http_expect(c, 200, "");
    stop(&f);
}

static void test_head(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(
        c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" GET("/hello"));
    http_response_t r;
    http_read_response(c, &r, true);
    ASSERT_INT_EQ(r.status, 200);
    char value[32];
    ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
    ASSERT_STR_EQ(value, "5");
    http_response_free(&r);
    /* The GET's response follows at once: HEAD sent no body. */
    http_expect(c, 200, "hello");
    http_client_send_str(c, "HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n");
    http_read_response(c, &r, true);
    ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
    ASSERT_STR_EQ(value, "1048576");
    http_response_free(&r);
    http_expect_silence(c, 100);
    stop(&f);
}

static void test_expect_continue(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.limits.max_body_size = 1000};
    http_client_t *c = start(&f, backend, &opts);
    http_client_send_str(c,
                         "POST /echo HTTP/1.1\r\nHost: t\r\n"
                         "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 100);
    ASSERT_STR_EQ(r.head, "HTTP/1.1 100 Continue\r\n\r\n");
    http_response_free(&r);
    http_client_send_str(c, "hello");
    http_expect(c, 200, "hello");
    /* The body came with the head: no 100. */
    http_client_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
                            "hi");
    http_expect(c, 200, "hi");
    /* Chunked, waiting for the 100. */
    http_client_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n"
                            "Expect: 100-continue\r\n\r\n");
    http_expect(c, 100, "");
    http_client_send_str(c, "2\r\nok\r\n0\r\n\r\n");
    http_expect(c, 200, "ok");
    /* Too large: 413 at once, never a 100. */
    http_client_send_str(
        c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
           "Content-Length: 1001\r\nExpect: 100-continue\r\n\r\n");
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 413);
    char value[32];
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
    ASSERT_STR_EQ(value, "close");
    http_response_free(&r);
    shutdown(c->fd, SHUT_WR);
    http_expect_eof(c, WAIT_MS);
    stop(&f);
}

static void test_http10(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, "GET /info HTTP/1.0\r\n\r\n");
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_STR_EQ(r.body, "GET /info q= v=1.0 ka=0 n=0");
    char value[32];
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
    ASSERT_STR_EQ(value, "close");
    http_response_free(&r);
    http_expect_eof(c, WAIT_MS);
    http_client_close(c);

    http_client_open(c, f.port);
    for (int i = 0; i < 2; i++) {
        http_client_send_str(c, "GET /hello HTTP/1.0\r\n"
                                "Connection: keep-alive\r\n\r\n");
        http_read_response(c, &r, false);
        ASSERT_STR_EQ(r.body, "hello");
        ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
        ASSERT_STR_EQ(value, "keep-alive");
        http_response_free(&r);
    }
    /* HTTP/1.1 asking to close. */
    http_client_send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n"
                            "Connection: close\r\n\r\n" GET("/hello"));
    http_expect(c, 200, "hello");
    http_expect_eof(c, WAIT_MS);
    stop(&f);
}

/* ---- errors ------------------------------------------------------------- */

static char *repeat(const char *prefix, char fill, size_t n, const char *suffix)
{
    size_t plen = strlen(prefix), slen = strlen(suffix);
    char *s = malloc(plen + n + slen + 1);
    ASSERT_TRUE(s != NULL);
    memcpy(s, prefix, plen);
    memset(s + plen, fill, n);
    memcpy(s + plen + n, suffix, slen + 1);
    return s;
}

/* Sends request, expects status with Connection: close and the reason as
 * body, then the close once the client stops sending. */
static void expect_error(int port, const char *request, int status)
{
    http_client_t c;
    http_client_open(&c, port);
    http_client_send_str(&c, request);
    http_response_t r;
    http_read_response(&c, &r, false);
    if (r.status != status)
        TEST_FAIL("status %d, expected %d, for \"%.60s\"", r.status, status,
                  request);
    char value[64];
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
    ASSERT_STR_EQ(value, "close");
    ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
    ASSERT_INT_EQ(atoi(value), (int)strlen(px_http_reason_phrase(status)) + 1);
    ASSERT_SPAN_EQ(r.body, r.body_len - 1, px_http_reason_phrase(status));
    http_response_free(&r);
    shutdown(c.fd, SHUT_WR);
    http_expect_eof(&c, WAIT_MS);
    http_client_close(&c);
}

static void test_error_statuses(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.limits.max_body_size = 1000};
    serve(&f, backend, &opts);
    expect_error(f.port, "GET / HTTP/1.1\r\nHost: t\r\nBad Name: y\r\n\r\n",
                 400);
    expect_error(f.port, "GET / HTTP/1.1\r\n\r\n", 400);
    expect_error(f.port, "GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_error(f.port,
                 "POST /echo HTTP/1.1\r\nHost: t\r\n"
                 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
                 "\r\n",
                 400);
    expect_error(f.port,
                 "POST /echo HTTP/1.1\r\nHost: t\r\n"
                 "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
                 400);
    expect_error(f.port,
                 "POST /echo HTTP/1.1\r\nHost: t\r\n"
                 "Content-Length: 1001\r\n\r\n",
                 413);
    expect_error(f.port,
                 "POST /echo HTTP/1.1\r\nHost: t\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n3e9\r\n",
                 413);
    char *long_uri = repeat("GET /", 'a', 9000, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_error(f.port, long_uri, 414);
    free(long_uri);
    char *big_head =
        repeat("GET / HTTP/1.1\r\nHost: t\r\nX: ", 'b', 20000, "\r\n\r\n");
    expect_error(f.port, big_head, 431);
    free(big_head);
    expect_error(f.port, "BREW / HTTP/1.1\r\nHost: t\r\n\r\n", 501);
    expect_error(f.port, "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    expect_error(f.port, "GET / HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n",
                 417);

    /* After good requests, the error comes in order, then nothing more. */
    http_client_t c;
    http_client_open(&c, f.port);
    http_client_send_str(
        &c,
        GET("/late?20") GET("/hello") "GET / HTTP/9.9\r\n\r\n" GET("/hello"));
    http_expect(&c, 200, "late 20");
    http_expect(&c, 200, "hello");
    http_expect(&c, 505, NULL);
    shutdown(c.fd, SHUT_WR);
    http_expect_eof(&c, WAIT_MS);
    http_client_close(&c);
    stop(&f);
}

static void test_unlimited_body_size(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.limits.max_body_size = UINT64_MAX};
    http_client_t *c = start(&f, backend, &opts);
    /* Larger than the default limit of 1 MiB. */
    enum { SIZE = 3 << 20 };
    char *body = malloc(SIZE);
    ASSERT_TRUE(body != NULL);
    fill_pattern(body, SIZE, 0, 5);
    char head[128];
    snprintf(head, sizeof(head),
             "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n",
             SIZE);
    http_client_send_str(c, head);
    http_client_send(c, body, SIZE);
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_UINT_EQ(r.body_len, SIZE);
    check_pattern(r.body, SIZE, 0, 5);
    http_response_free(&r);
    http_client_close(c);
    free(body);
    /* A length that cannot be buffered is still refused. */
    expect_error(f.port,
                 "POST /echo HTTP/1.1\r\nHost: t\r\n"
                 "Content-Length: 18446744073709551615\r\n\r\n",
                 413);
    stop(&f);
}

static void test_linger_then_close(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, "GET / HTTP/1.1\r\n\r\n");
    http_expect(c, 400, NULL);
    /* Input after the error is discarded, not answered. */
    http_client_send_str(c, GET("/hello"));
    uint64_t start_ns = px_now_ns();
    http_expect_eof(c, WAIT_MS);
    uint64_t waited_ms = ms_since(start_ns);
    ASSERT_UINT_CMP(waited_ms, >=, 1000);
    ASSERT_INT_EQ(atomic_load(&state.requests), 0);
    stop(&f);
}

/* ---- timeouts ----------------------------------------------------------- */

static void test_slowloris(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.header_timeout_ns = 300 * 1000000u};
    http_client_t *c = start(&f, backend, &opts);
    uint64_t start_ns = px_now_ns();
    http_client_send_str(c, "GET /hello HTTP/1.1\r\n");
    /* One field every 20 ms, until the server answers. */
    http_response_t r;
    http_trickle_until_answer(c, "X-Slow: 1\r\n", 20, &r);
    ASSERT_INT_EQ(r.status, 408);
    http_response_free(&r);
    uint64_t elapsed_ms = ms_since(start_ns);
    ASSERT_UINT_CMP(elapsed_ms, >=, 290);
    ASSERT_UINT_CMP(elapsed_ms, <, 2000);
    http_expect_eof(c, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.requests), 0);
    stop(&f);
}

static void test_body_timeout(int backend)
{
    http_fixture_t f;
    /* The wait between reads alone: this trickle is also far below any
     * min_body_rate (test_http_hardening tests that). */
    px_http_server_options_t opts = {.body_timeout_ns = 200 * 1000000u,
                                     .min_body_rate = PX_HTTP_NO_MIN_RATE};
    http_client_t *c = start(&f, backend, &opts);
    http_client_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Content-Length: 10\r\n\r\nabc");
    /* Progress keeps it alive... */
    for (int i = 0; i < 5; i++) {
        sleep_ms(100);
        http_client_send_str(c, "d");
    }
    /* ...silence does not. */
    http_expect(c, 408, NULL);
    http_expect_eof(c, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.requests), 0);
    stop(&f);
}

static void test_keepalive_timeout(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.keepalive_timeout_ns = 200 * 1000000u,
                                     .header_timeout_ns = 5000 * 1000000ull};
    http_client_t *c = start(&f, backend, &opts);
    /* A new connection gets header_timeout, not the short keep-alive. */
    sleep_ms(400);
    http_client_send_str(c, GET("/hello"));
    http_expect(c, 200, "hello");
    uint64_t start_ns = px_now_ns();
    http_expect_eof(c, WAIT_MS);
    uint64_t waited_ms = ms_since(start_ns);
    ASSERT_UINT_CMP(waited_ms, >=, 150);
    ASSERT_UINT_CMP(waited_ms, <, 2000);
    stop(&f);
}

static void test_idle_connection(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.header_timeout_ns = 200 * 1000000u};
    http_client_t *c = start(&f, backend, &opts);
    /* Nothing sent: closed silently. */
    http_expect_eof(c, WAIT_MS);
    stop(&f);
}

/* ---- responses ---------------------------------------------------------- */

static void test_response_checks(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, GET("/badheader"));
    http_expect(c, 500, "fallback");
    ASSERT_INT_EQ(atomic_load(&state.check_result), PX_HTTP_E_RESPONSE_HEADER);

    http_client_send_str(c, GET("/nocontent") GET("/hello"));
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 204);
    ASSERT_INT_EQ(http_header_count(&r, "Content-Length"), 0);
    http_response_free(&r);
    http_expect(c, 200, "hello");
    ASSERT_INT_EQ(atomic_load(&state.check_result), PX_HTTP_E_RESPONSE_FRAMING);
    ASSERT_INT_EQ(atomic_load(&state.check_result2), PX_HTTP_E_RESPONSE_STATUS);

    http_client_send_str(c, GET("/twice"));
    http_expect(c, 200, "once");
    ASSERT_INT_EQ(atomic_load(&state.check_result), PX_EBADSTATE);

    http_client_send_str(c, GET("/close") GET("/hello"));
    http_read_response(c, &r, false);
    ASSERT_STR_EQ(r.body, "closing");
    char value[64];
    ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
    ASSERT_STR_EQ(value, "7");
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
    ASSERT_STR_EQ(value, "close");
    ASSERT_TRUE(http_header(&r, "X-Kept", value, sizeof(value)));
    ASSERT_INT_EQ(http_header_count(&r, "Date"), 1);
    ASSERT_INT_EQ(http_header_count(&r, "Connection"), 1);
    ASSERT_INT_EQ(http_header_count(&r, "Transfer-Encoding"), 0);
    http_response_free(&r);
    http_expect_eof(c, WAIT_MS);
    http_client_close(c);

    http_client_open(c, f.port);
    http_client_send_str(c, GET("/abort"));
    http_expect_eof(c, WAIT_MS);
    stop(&f);
}

static void test_large_body(int backend)
{
    fill_pattern(big_body, BIG_BODY, 0, 3);
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, GET("/hello") GET("/big") GET("/hello"));
    http_expect(c, 200, "hello");
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_UINT_EQ(r.body_len, BIG_BODY);
    check_pattern(r.body, BIG_BODY, 0, 3);
    http_response_free(&r);
    http_expect(c, 200, "hello");
    stop(&f);
}

/* A client that went away (a reset: a plain close looks like a
 * half-close, whose requests are still answered, see below). */
static void test_late_response_after_close(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    atomic_store(&state.late_result, 1);
    http_client_send_str(c, GET("/late?300") GET("/hello"));
    WAIT_FOR(atomic_load(&state.requests) == 1, WAIT_MS);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ASSERT_INT_EQ(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    http_client_close(c);
    /* The request is counted before its late responder is: wait for the
     * responder's result, not for the count of responders to be 0. */
    WAIT_FOR(atomic_load(&state.late_result) != 1, WAIT_MS);
    WAIT_FOR(atomic_load(&state.late_outstanding) == 0, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.late_result), PX_ECLOSED);
    /* The pipelined request was never run. */
    ASSERT_INT_EQ(atomic_load(&state.requests), 1);
    stop(&f);
}

/* ---- the client half-closes --------------------------------------------- */

/* Every request sent before shutdown(SHUT_WR) is answered, in order, late
 * ones included; then the server closes. */
static void test_half_close_answers_every_request(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, NULL);
    http_client_send_str(c, GET("/late?200") GET("/hello") GET("/late?50")
                                GET("/info?last"));
    ASSERT_INT_EQ(shutdown(c->fd, SHUT_WR), 0);
    http_expect(c, 200, "late 200");
    http_expect(c, 200, "hello");
    http_expect(c, 200, "late 50");
    http_expect(c, 200, "GET /info q=last v=1.1 ka=1 n=1");
    http_expect_eof(c, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.requests), 4);
    ASSERT_INT_EQ(atomic_load(&state.late_result), 0);
    stop(&f);
}

/* Nothing more can come: an unfinished request (or none) is not waited
 * for until a timeout. */
static void test_half_close_with_unfinished_request(int backend)
{
    http_fixture_t f;
    serve(&f, backend, NULL);
    const char *partial[] = {
        "",                             /* idle */
        "GET /hello HTTP/1.1\r\nHost:", /* in the head */
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc",
        GET("/hello") "GET /hel", /* after a complete one */
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        http_client_t c;
        http_client_open(&c, f.port);
        http_client_send_str(&c, partial[i]);
        ASSERT_INT_EQ(shutdown(c.fd, SHUT_WR), 0);
        if (i == 3)
            http_expect(&c, 200, "hello");
        uint64_t start_ns = px_now_ns();
        http_expect_eof(&c, WAIT_MS);
        ASSERT_UINT_CMP(ms_since(start_ns), <, 2000); /* header_timeout: 10 s */
        http_client_close(&c);
    }
    ASSERT_INT_EQ(atomic_load(&state.requests), 1);
    stop(&f);
}

static void test_server_free_winds_down(int backend)
{
    http_fixture_t f;
    px_http_server_options_t opts = {.keepalive_timeout_ns =
                                         PX_HTTP_NO_TIMEOUT};
    serve(&f, backend, &opts);
    http_client_t idle, busy;
    http_client_open(&idle, f.port);
    http_client_open(&busy, f.port);
    http_client_send_str(&idle, GET("/hello"));
    http_expect(&idle, 200, "hello");
    http_client_send_str(&busy, GET("/late?300"));
    WAIT_FOR(atomic_load(&state.late_outstanding) == 1, WAIT_MS);
    px_listener_close(f.listener);
    px_http_server_free(f.server);
    /* The idle connection closes although it has no keep-alive timeout;
     * the request under way is answered, then its connection closes. */
    http_expect_eof(&idle, WAIT_MS);
    http_response_t r;
    http_read_response(&busy, &r, false);
    ASSERT_STR_EQ(r.body, "late 300");
    char value[32];
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
    ASSERT_STR_EQ(value, "close");
    http_response_free(&r);
    http_expect_eof(&busy, WAIT_MS);
    http_client_close(&idle);
    http_client_close(&busy);
    /* What is left of the server goes with the loop. */
    finish_loop(f.loop);
}

/* ---- many clients ------------------------------------------------------- */

#define CLIENT_THREADS 6
#define CONNS_PER_THREAD 3
#define ROUNDS 40

static void *client_rounds(void *arg)
{
    int port = *(int *)arg;
    http_client_t c[CONNS_PER_THREAD];
    for (int i = 0; i < CONNS_PER_THREAD; i++)
        http_client_open(&c[i], port);
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CONNS_PER_THREAD; i++) {
            char body[64];
            int n = snprintf(body, sizeof(body), "r%d c%d", round, i);
            char request[160];
            snprintf(request, sizeof(request),
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d"
                     "\r\n\r\n%s" GET("/hello"),
                     n, body);
            http_client_send_str(&c[i], request);
        }
        for (int i = 0; i < CONNS_PER_THREAD; i++) {
            char body[64];
            snprintf(body, sizeof(body), "r%d c%d", round, i);
            http_expect(&c[i], 200, body);
            http_expect(&c[i], 200, "hello");
        }
    }
    for (int i = 0; i < CONNS_PER_THREAD; i++)
        http_client_close(&c[i]);
    return NULL;
}

static void test_many_clients(int backend)
{
    http_fixture_t f;
    serve(&f, backend, NULL);
    pthread_t tids[CLIENT_THREADS];
    for (int i = 0; i < CLIENT_THREADS; i++)
        tids[i] = start_thread(client_rounds, &f.port);
    for (int i = 0; i < CLIENT_THREADS; i++)
        join_thread(tids[i]);
    ASSERT_INT_EQ(atomic_load(&state.requests),
                  CLIENT_THREADS * CONNS_PER_THREAD * ROUNDS * 2);
    stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_keep_alive),
    ENGINE_CASE(test_pipelining_order),
    ENGINE_CASE(test_chunked_body),
    ENGINE_CASE(test_content_length_body),
    ENGINE_CASE(test_head),
    ENGINE_CASE(test_expect_continue),
    ENGINE_CASE(test_http10),
    ENGINE_CASE(test_error_statuses),
    ENGINE_CASE(test_unlimited_body_size),
    ENGINE_CASE(test_linger_then_close),
    ENGINE_CASE(test_slowloris),
    ENGINE_CASE(test_body_timeout),
    ENGINE_CASE(test_keepalive_timeout),
    ENGINE_CASE(test_idle_connection),
    ENGINE_CASE(test_response_checks),
    ENGINE_CASE(test_large_body),
    ENGINE_CASE(test_late_response_after_close),
    ENGINE_CASE(test_half_close_answers_every_request),
    ENGINE_CASE(test_half_close_with_unfinished_request),
    ENGINE_CASE(test_server_free_winds_down),
    ENGINE_CASE(test_many_clients),
};

TEST_MAIN(cases)
