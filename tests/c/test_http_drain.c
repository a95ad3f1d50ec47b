/*
 * test_http_drain.c - the HTTP server while its loop drains (px_loop_drain):
 * a request on an open keep-alive connection is answered with "Connection:
 * close" and the connection ends with it; an idle keep-alive connection is
 * closed once idle for the grace (a second), not at once; a response given
 * late, from another thread, after the drain began still goes out, ending
 * its connection; then the drain is complete (px_loop_drained). Each case
 * runs under both backends.
 */
#include "http_fixture.h"

#include <pthread.h>

static atomic_int late_result = 1;

static void *respond_late(void *arg)
{
    px_http_exchange_t *ex = arg;
    sleep_ms(300);
    atomic_store(&late_result, px_http_respond(ex, 200, NULL, 0, "late", 4));
    return NULL;
}

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    if (req->path_len == 5 && memcmp(req->path, "/late", 5) == 0) {
        pthread_t tid = start_thread(respond_late, ex);
        pthread_detach(tid);
        return;
    }
    ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, "ok", 2));
}

static const px_http_server_options_t options = {.on_request = on_request};

static void get(http_client_t *c, const char *path, const char *connection,
                const char *body)
{
    char request[128];
    snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n",
             path);
    http_client_send_str(c, request);
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_STR_EQ(r.body, body);
    http_expect_connection(&r, connection);
    http_response_free(&r);
}

static void test_drain_ends_connections(int backend)
{
    http_fixture_t f;
    http_client_t *busy = http_fixture_start(&f, backend, &options);
    http_client_t idle, late;
    http_client_open(&idle, f.port);
    http_client_open(&late, f.port);
    get(busy, "/", NULL, "ok");
    get(&idle, "/", NULL, "ok");
    http_client_send_str(&late, "GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(50);

    uint64_t began = px_now_ns();
    ASSERT_PX_OK(px_loop_drain(f.loop));
    /* Within the grace: answered, and the connection ends with it. */
    get(busy, "/", "close", "ok");
    http_expect_eof(busy, WAIT_MS);
    /* The late answer, given after the drain began, ends its connection. */
    http_response_t r;
    http_read_response(&late, &r, false);
    ASSERT_STR_EQ(r.body, "late");
    char value[32];
    ASSERT_TRUE(http_header(&r, "Connection", value, sizeof(value)) &&
                strcmp(value, "close") == 0);
    http_response_free(&r);
    http_expect_eof(&late, WAIT_MS);
    /* Stored once px_http_respond returned, after the bytes went out. */
    WAIT_FOR(atomic_load(&late_result) == 0, WAIT_MS);
    /* The idle one is closed after the grace, not at once. */
    http_expect_silence(&idle, 500);
    http_expect_eof(&idle, WAIT_MS);
    uint64_t waited_ms = (px_now_ns() - began) / 1000000u;
    ASSERT_UINT_CMP(waited_ms, >=, 900);
    WAIT_FOR(px_loop_drained(f.loop), WAIT_MS);
    http_client_close(&idle);
    http_client_close(&late);
    http_fixture_stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_drain_ends_connections),
};

TEST_MAIN(cases)
