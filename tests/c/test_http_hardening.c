/*
 * test_http_hardening.c - the HTTP server against requests meant to break
 * it or its assumptions: "OPTIONS *", which no route can serve.
 * Each case runs under both backends.
 */
#include "http_fixture.h"

#include <sys/socket.h>

static atomic_int requests;

/* Every request the callback sees gets "seen"; a test checks which never
 * reach it. */
static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    (void)req;
    atomic_fetch_add(&requests, 1);
    ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, "seen", 4));
}

static http_client_t *start(http_fixture_t *f, int backend,
                            px_http_server_options_t opts)
{
    opts.on_request = on_request;
    return http_fixture_start(f, backend, &opts);
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

static const test_case_t cases[] = {
    ENGINE_CASE(test_options_asterisk),
    ENGINE_CASE(test_asterisk_needs_options),
};

TEST_MAIN(cases)
