/*
 * test_http_hardening.c - the HTTP server against requests meant to break
 * it or its assumptions: "OPTIONS *", which no route can serve; bodies
 * that hold memory (their buffer, the bound on all of them) and clients
 * that trickle them.
 * Each case runs under both backends, in a process of its own: the body
 * memory count is the process's.
 */
#include "http_fixture.h"

#include <sys/socket.h>

static atomic_int requests;

/* Every request the callback sees is answered with its body, or "seen"
 * when it has none; a test checks which never reach it. */
static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    atomic_fetch_add(&requests, 1);
    if (req->body_len > 0)
        ASSERT_PX_OK(
            px_http_respond(ex, 200, NULL, 0, req->body, req->body_len));
    else
        ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, "seen", 4));
}

static http_client_t *start(http_fixture_t *f, int backend,
                            px_http_server_options_t opts)
{
    opts.on_request = on_request;
    return http_fixture_start(f, backend, &opts);
}

/* The same for a test that opens its clients itself. */
static void serve(http_fixture_t *f, int backend, px_http_server_options_t opts)
{
    opts.on_request = on_request;
    http_fixture_serve(f, backend, &opts);
}

/* ---- OPTIONS * ---------------------------------------------------------- */

/* Each method of an Allow value parses as one the parser implements. */
static void check_methods_implemented(const char *allow)
{
    const char *p = allow;
    int count = 0;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        char line[64];
        ASSERT_UINT_CMP(len, <, 32);
        snprintf(line, sizeof(line), "%.*s / HTTP/1.1\r\nHost: t\r\n\r\n",
                 (int)len, p);
        px_http_request_t req;
        px_http_header_t headers[4];
        ssize_t rc = px_http_parse_request(line, strlen(line), 0, NULL, &req,
                                           headers, 4);
        ASSERT_INT_EQ(rc, (ssize_t)strlen(line));
        ASSERT_TRUE(req.method_id != PX_HTTP_METHOD_OTHER);
        count++;
        p += len;
        p += strspn(p, ", ");
    }
    /* GET HEAD POST PUT DELETE OPTIONS TRACE PATCH. */
    ASSERT_INT_EQ(count, PX_HTTP_METHOD_PATCH);
}

static void test_options_asterisk(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, (px_http_server_options_t){0});
    /* Twice on a keep-alive connection, then a request for a resource. */
    for (int i = 0; i < 2; i++) {
        http_client_send_str(c, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
        http_response_t r;
        http_read_response(c, &r, false);
        ASSERT_INT_EQ(r.status, 200);
        ASSERT_UINT_EQ(r.body_len, 0);
        char value[128];
        ASSERT_TRUE(http_header(&r, "Content-Length", value, sizeof(value)));
        ASSERT_STR_EQ(value, "0");
        ASSERT_TRUE(http_header(&r, "Allow", value, sizeof(value)));
        check_methods_implemented(value);
        ASSERT_INT_EQ(http_header_count(&r, "Connection"), 0);
        http_response_free(&r);
    }
    ASSERT_INT_EQ(atomic_load(&requests), 0);
    http_client_send_str(c, "OPTIONS /x HTTP/1.1\r\nHost: t\r\n\r\n");
    http_expect(c, 200, "seen");
    ASSERT_INT_EQ(atomic_load(&requests), 1);
    http_fixture_stop(&f);
}

static void test_asterisk_needs_options(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, (px_http_server_options_t){0});
    http_client_send_str(c, "GET * HTTP/1.1\r\nHost: t\r\n\r\n");
    http_expect(c, 400, NULL);
    http_expect_eof(c, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&requests), 0);
    http_fixture_stop(&f);
}

/* ---- bodies ------------------------------------------------------------ */

/* Sends the head of a POST with a body of length bytes (0: chunked) and
 * extra fields; returns the head's length. */
static size_t send_post_head(http_client_t *c, size_t length, const char *extra)
{
    char head[256];
    if (length > 0)
        snprintf(head, sizeof(head),
                 "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                 "%s\r\n",
                 length, extra);
    else
        snprintf(head, sizeof(head),
                 "POST /body HTTP/1.1\r\nHost: t\r\n"
                 "Transfer-Encoding: chunked\r\n%s\r\n",
                 extra);
    http_client_send_str(c, head);
    return strlen(head);
}

static void send_bytes(http_client_t *c, size_t len, char byte)
{
    char *data = malloc(len);
    ASSERT_TRUE(data != NULL);
    memset(data, byte, len);
    http_client_send(c, data, len);
    free(data);
}

/* Reads a 200 whose body is len bytes of byte. */
static void expect_body(http_client_t *c, size_t len, char byte)
{
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_UINT_EQ(r.body_len, len);
    for (size_t i = 0; i < len; i++)
        if (r.body[i] != byte)
            TEST_FAIL("body byte %zu is %d", i, r.body[i]);
    http_response_free(&r);
}

static void test_body_buffer_sized_from_content_length(int backend)
{
    enum { LENGTH = 300000 };
    http_fixture_t f;
    http_client_t *c = start(&f, backend, (px_http_server_options_t){0});
    ASSERT_UINT_EQ(px_http_body_memory_in_use(), 0);
    /* The head alone: its body's buffer is the request's size, counted at
     * once (a doubling buffer would reach 512 KiB on the way). */
    size_t head_len = send_post_head(c, LENGTH, "");
    WAIT_FOR(px_http_body_memory_in_use() == head_len + LENGTH, WAIT_MS);
    /* Arriving in pieces, it keeps that size. */
    for (int i = 0; i < 9; i++) {
        send_bytes(c, LENGTH / 10, 'b');
        sleep_ms(5);
        ASSERT_UINT_EQ(px_http_body_memory_in_use(), head_len + LENGTH);
    }
    send_bytes(c, LENGTH / 10, 'b');
    expect_body(c, LENGTH, 'b');
    WAIT_FOR(px_http_body_memory_in_use() == 0, WAIT_MS);

    /* A chunked body is counted as it grows. */
    send_post_head(c, 0, "");
    http_client_send_str(c, "10000\r\n");
    send_bytes(c, 0x10000, 'c');
    http_client_send_str(c, "\r\n");
    WAIT_FOR(px_http_body_memory_in_use() >= 0x10000, WAIT_MS);
    http_client_send_str(c, "0\r\n\r\n");
    expect_body(c, 0x10000, 'c');
    WAIT_FOR(px_http_body_memory_in_use() == 0, WAIT_MS);
    http_fixture_stop(&f);
}

static void expect_unavailable(http_client_t *c)
{
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 503);
    char value[32];
    ASSERT_TRUE(http_header(&r, "Retry-After", value, sizeof(value)));
    ASSERT_STR_EQ(value, "1");
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)));
    ASSERT_STR_EQ(value, "close");
    http_response_free(&r);
    http_expect_eof(c, WAIT_MS);
}

static void test_body_memory_bound(int backend)
{
    enum { LENGTH = 2000 };
    http_fixture_t f;
    /* Room for one such body and its head, not two. */
    px_http_server_options_t opts = {.max_body_memory = 3000};
    serve(&f, backend, opts);
    http_client_t holder, other;
    http_client_open(&holder, f.port);
    send_post_head(&holder, LENGTH, "");
    send_bytes(&holder, 10, 'h');
    WAIT_FOR(px_http_body_memory_in_use() > LENGTH, WAIT_MS);

    /* Past the bound: 503, before the body when the client waits for a
     * 100; then the same for a chunked body as it grows. */
    http_client_open(&other, f.port);
    send_post_head(&other, LENGTH, "Expect: 100-continue\r\n");
    expect_unavailable(&other);
    http_client_close(&other);
    http_client_open(&other, f.port);
    send_post_head(&other, 0, "");
    http_client_send_str(&other, "800\r\n");
    send_bytes(&other, 0x800, 'x');
    expect_unavailable(&other);
    http_client_close(&other);
    ASSERT_INT_EQ(atomic_load(&requests), 0);

    /* Once the held body is complete, a new one is accepted. */
    send_bytes(&holder, LENGTH - 10, 'h');
    expect_body(&holder, LENGTH, 'h');
    WAIT_FOR(px_http_body_memory_in_use() == 0, WAIT_MS);
    http_client_open(&other, f.port);
    send_post_head(&other, LENGTH, "");
    send_bytes(&other, 10, 'o');
    WAIT_FOR(px_http_body_memory_in_use() > LENGTH, WAIT_MS);
    send_bytes(&other, LENGTH - 10, 'o');
    expect_body(&other, LENGTH, 'o');
    http_client_close(&other);
    http_client_close(&holder);
    WAIT_FOR(px_http_body_memory_in_use() == 0, WAIT_MS);
    http_fixture_stop(&f);
}

/* A server whose bodies must average 100 bytes/s, once their first
 * body_timeout_ms passed. */
static http_client_t *start_min_rate(http_fixture_t *f, int backend,
                                     unsigned body_timeout_ms)
{
    px_http_server_options_t opts = {.body_timeout_ns =
                                         body_timeout_ms * UINT64_C(1000000),
                                     .min_body_rate = 100};
    return start(f, backend, opts);
}

static void test_trickled_body_gets_408(int backend)
{
    http_fixture_t f;
    /* A byte per 100 ms never lets 500 ms pass between reads, but is 10
     * bytes/s where 100 are due: once the first 500 ms passed, the body
     * is over its time after about 60 ms more. */
    http_client_t *c = start_min_rate(&f, backend, 500);
    uint64_t start_ns = px_now_ns();
    send_post_head(c, 10000, "");
    http_response_t r;
    http_trickle_until_answer(c, "t", 100, &r);
    ASSERT_INT_EQ(r.status, 408);
    http_response_free(&r);
    uint64_t elapsed_ms = (px_now_ns() - start_ns) / 1000000u;
    ASSERT_UINT_CMP(elapsed_ms, >=, 500);
    ASSERT_UINT_CMP(elapsed_ms, <, 2500);
    http_expect_eof(c, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&requests), 0);
    WAIT_FOR(px_http_body_memory_in_use() == 0, WAIT_MS);
    http_fixture_stop(&f);
}

static void test_body_at_the_minimum_rate_completes(int backend)
{
    http_fixture_t f;
    /* 20 bytes per 100 ms is twice the minimum. */
    http_client_t *c = start_min_rate(&f, backend, 300);
    send_post_head(c, 400, "");
    for (int i = 0; i < 20; i++) {
        sleep_ms(100);
        send_bytes(c, 20, 'm');
    }
    expect_body(c, 400, 'm');
    http_fixture_stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_options_asterisk),
    ENGINE_CASE(test_asterisk_needs_options),
    ENGINE_CASE(test_body_buffer_sized_from_content_length),
    ENGINE_CASE(test_body_memory_bound),
    ENGINE_CASE(test_trickled_body_gets_408),
    ENGINE_CASE(test_body_at_the_minimum_rate_completes),
};

TEST_MAIN(cases)
