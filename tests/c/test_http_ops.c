/*
 * test_http_ops.c - what px_http_ops.h promises, over real sockets: the
 * client address and scheme that trusted proxies' headers give (spoofed
 * lists, inner proxies, Forwarded with IPv6 and ports, malformed and
 * oversized values), trust lists refused when malformed, the access log's
 * lines (one per request, errors the server answers included) and the
 * per-worker counters. Each case runs under both backends; ASan checks
 * the header parsing on hostile input.
 */
#include "http_fixture.h"
#include "px_http_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Answers what px_http_exchange_forwarded says: "HOST PORT https|http",
 * or "- https|http" when no client was named. */
static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    (void)req;
    const char *host;
    int port, https;
    char text[128];
    if (px_http_exchange_forwarded(ex, &host, &port, &https))
        snprintf(text, sizeof(text), "%s %d %s", host, port,
                 https ? "https" : "http");
    else
        snprintf(text, sizeof(text), "- %s", https ? "https" : "http");
    ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, text, strlen(text)));
}

static http_client_t *start(http_fixture_t *f, int backend, const char *trust)
{
    px_http_server_options_t o = {.on_request = on_request,
                                  .forwarded_allow_ips = trust};
    return http_fixture_start(f, backend, &o);
}

/* Sends a GET with the given extra header lines ("" for none) and checks
 * the body. */
static void expect(http_client_t *c, const char *fields, const char *want)
{
    char request[8192];
    snprintf(request, sizeof(request), "GET / HTTP/1.1\r\nHost: t\r\n%s\r\n",
             fields);
    http_client_send_str(c, request);
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, want);
    http_response_free(&r);
}

static void test_trusted_proxy_headers(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, "127.0.0.1, 10.0.0.0/8 ::1");
    expect(c, "", "- http");
    expect(c, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n",
           "203.0.113.7 0 https");
    expect(c, "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n",
           "203.0.113.7 0 http");
    expect(c, "X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.9.8.7\r\n",
           "203.0.113.7 0 http");
    expect(c, "X-Forwarded-For: 10.0.0.2, 10.0.0.1\r\n", "10.0.0.2 0 http");
    expect(c, "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.7\r\n",
           "203.0.113.7 0 http");
    expect(c, "X-Forwarded-For: [2001:db8::5]:443\r\n", "2001:db8::5 443 http");
    expect(c, "X-Forwarded-For: 2001:db8::5\r\n", "2001:db8::5 0 http");
    expect(c, "X-Forwarded-For: ::ffff:203.0.113.9\r\n",
           "::ffff:203.0.113.9 0 http");
    expect(c,
           "Forwarded: for=\"[2001:db8::1]:4711\";proto=https;by=10.0.0.1\r\n",
           "2001:db8::1 4711 https");
    expect(c, "Forwarded: for=6.6.6.6, For=\"203.0.113.7:80\";PROTO=HTTPS\r\n",
           "203.0.113.7 80 https");
    expect(c, "Forwarded: for=203.0.113.7\r\nX-Forwarded-For: 6.6.6.6\r\n",
           "203.0.113.7 0 http");
    expect(c, "Forwarded: for=unknown;proto=https\r\n", "- https");
    expect(c, "Forwarded: for=_hidden:_port\r\n", "- http");
    expect(c, "X-Forwarded-Proto: wss\r\n", "- https");
    expect(c, "X-Forwarded-For: 203.0.113.7:_x\r\n", "203.0.113.7 0 http");
    /* Malformed: quotes left open, brackets unclosed, separators alone,
     * empty values, overlong nodes; the peer stays the client. */
    expect(c, "Forwarded: for=\"[2001:db8::1\r\n", "- http");
    expect(c, "Forwarded: for=\"unterminated;proto=https, for=1.2.3.4\r\n",
           "- http");
    expect(c, "Forwarded: ;;,,;=;for=\r\n", "- http");
    expect(c, "X-Forwarded-For: , , ,\r\n", "- http");
    expect(c, "X-Forwarded-For: 1.2.3.4:99999\r\n", "1.2.3.4 0 http");
    char fields[6000];
    size_t n = (size_t)snprintf(fields, sizeof(fields), "X-Forwarded-For: ");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(fields + n, sizeof(fields) - n, "10.0.%d.%d, ",
                              i / 250, i % 250);
    snprintf(fields + n, sizeof(fields) - n, "203.0.113.8\r\n");
    expect(c, fields, "203.0.113.8 0 http");
    /* 200 trusted hops: past the ones looked at, the leftmost of those. */
    n = (size_t)snprintf(fields, sizeof(fields), "X-Forwarded-For: ");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(fields + n, sizeof(fields) - n, "%s10.0.%d.%d",
                              i ? ", " : "", i / 250, i % 250);
    snprintf(fields + n, sizeof(fields) - n, "\r\n");
    expect(c, fields, "10.0.0.168 0 http");
    memset(fields, 'a', 5000);
    memcpy(fields, "X-Forwarded-For: ", 17);
    memcpy(fields + 5000, "\r\n", 3);
    expect(c, fields, "- http");
    http_fixture_stop(&f);
}

static void test_untrusted_peer_ignored(int backend)
{
    http_fixture_t f;
    http_client_t *c = start(&f, backend, "10.0.0.0/8,192.0.2.1");
    expect(c, "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n",
           "- http");
    expect(c, "Forwarded: for=203.0.113.7;proto=https\r\n", "- http");
    http_fixture_stop(&f);
    c = start(&f, backend, "*");
    expect(c, "X-Forwarded-For: 203.0.113.7\r\n", "203.0.113.7 0 http");
    http_fixture_stop(&f);
    c = start(&f, backend, NULL);
    expect(c, "X-Forwarded-For: 203.0.113.7\r\n", "- http");
    http_fixture_stop(&f);
}

TEST(test_bad_trust_lists_refused)
{
    px_loop_options_t lo;
    px_loop_options_init(&lo);
    lo.workers = 1;
    px_loop_t *loop;
    ASSERT_PX_OK(px_loop_new(&loop, &lo));
    ASSERT_PX_OK(px_loop_start(loop));
    const char *bad[] = {"localhost", "10.0.0.0/33", "::1/129", "1.2.3.4/",
                         "1.2.3.4/x", "1.2.3",       "[::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        px_http_server_options_t o = {.on_request = on_request,
                                      .forwarded_allow_ips = bad[i]};
        px_http_server_t *s = NULL;
        ASSERT_INT_EQ(px_http_server_new(loop, &o, &s), -EINVAL);
    }
    px_http_server_options_t o = {.on_request = on_request,
                                  .forwarded_allow_ips = " ,[::1]/128, "};
    px_http_server_t *s = NULL;
    ASSERT_PX_OK(px_http_server_new(loop, &o, &s));
    px_http_server_free(s);
    ASSERT_PX_OK(px_loop_stop(loop));
    px_loop_free(loop);
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    ASSERT_TRUE(fp != NULL);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

static int count_lines(const char *text)
{
    int lines = 0;
    for (; *text; text++)
        lines += *text == '\n';
    return lines;
}

static void test_access_log_and_counters(int backend)
{
    char path[] = "/tmp/px-access-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    ASSERT_PX_OK(px_http_access_log_open(path, PX_HTTP_LOG_JSON));
    ASSERT_INT_EQ(px_http_access_log_open(path, PX_HTTP_LOG_JSON),
                  PX_EBADSTATE);
    px_http_counters_enable(1);
    static px_http_worker_counters_t before[PX_MAX_WORKERS];
    static px_http_worker_counters_t after[PX_MAX_WORKERS];
    px_http_counters_read(before, PX_MAX_WORKERS);

    http_fixture_t f;
    http_client_t *c = start(&f, backend, "127.0.0.1");
    expect(c, "User-Agent: a \"quoted\" \\ agent\t\xff\r\n", "- http");
    expect(c, "X-Forwarded-For: 203.0.113.7\r\nReferer: http://r/\r\n",
           "203.0.113.7 0 http");
    http_client_send_str(c, "GET / HTTP/1.1\r\nno colon\r\n\r\n");
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 400);
    http_response_free(&r);
    http_fixture_stop(&f);

    px_http_access_log_close();
    px_http_counters_enable(0);
    px_http_counters_read(after, PX_MAX_WORKERS);
    uint64_t ok = 0, bad = 0;
    for (int w = 0; w < PX_MAX_WORKERS; w++) {
        ok += after[w].requests[2] - before[w].requests[2];
        bad += after[w].requests[4] - before[w].requests[4];
    }
    ASSERT_UINT_EQ(ok, 2);
    ASSERT_UINT_EQ(bad, 1);

    const char *log = read_file(path);
    unlink(path);
    ASSERT_INT_EQ(count_lines(log), 3);
    ASSERT_TRUE(strstr(log, "\"user_agent\":\"a \\\"quoted\\\" \\\\ "
                            "agent\\u0009\\u00ff\"") != NULL);
    ASSERT_TRUE(strstr(log, "\"client\":\"203.0.113.7\"") != NULL);
    ASSERT_TRUE(strstr(log, "\"referer\":\"http://r/\"") != NULL);
    ASSERT_TRUE(strstr(log, "\"method\":null,\"path\":null,\"version\":null,"
                            "\"status\":400,\"bytes\":12") != NULL);
    ASSERT_INT_EQ(px_http_access_log_reopen(), PX_EBADSTATE);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_trusted_proxy_headers),
    ENGINE_CASE(test_untrusted_peer_ignored),
    TEST_CASE(bad_trust_lists_refused),
    ENGINE_CASE(test_access_log_and_counters),
};

TEST_MAIN(cases)
