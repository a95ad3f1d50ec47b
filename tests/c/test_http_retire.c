/*
 * test_http_retire.c - the HTTP server while one worker retires
 * (px_worker_retire): new connections go to the other workers; on the
 * retiring worker a request on an open keep-alive connection is answered
 * with "Connection: close" and the connection ends with it, and an idle one
 * is closed once idle for the grace, as in a drain, until it serves nothing
 * (px_worker_served_open); the last worker that does not retire cannot;
 * once un-retired, the worker takes connections again, and for a while the
 * others end their surplus keep-alive connections (px_worker_overloaded)
 * so that clients come back to it. Each case runs under both backends.
 */
#include "http_fixture.h"

#include <errno.h>

/* The body says which worker answered. */
static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    (void)req;
    char body[16];
    int n = snprintf(body, sizeof(body), "%d", px_current_worker());
    ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, body, (size_t)n));
}

static const px_http_server_options_t options = {.on_request = on_request};

/* The worker that answered a GET on c, checking the Connection field. */
static int get(http_client_t *c, const char *connection)
{
    http_client_send_str(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    http_expect_connection(&r, connection);
    int worker = worker_index(atoi(r.body));
    http_response_free(&r);
    return worker;
}

#define CLIENTS 8

static void test_retiring_worker_hands_its_connections_over(int backend)
{
    http_fixture_t f;
    http_fixture_serve(&f, backend, &options);
    /* Two keep-alive connections on worker 0: the balance spreads new
     * connections over the workers, so a few are enough. */
    http_client_t clients[CLIENTS];
    http_client_t *on_zero[2] = {NULL, NULL};
    int opened = 0;
    for (; opened < CLIENTS && on_zero[1] == NULL; opened++) {
        http_client_open(&clients[opened], f.port);
        if (get(&clients[opened], NULL) == 0)
            on_zero[on_zero[0] == NULL ? 0 : 1] = &clients[opened];
    }
    ASSERT_TRUE(on_zero[1] != NULL);
    ASSERT_UINT_EQ(px_worker_served_open(f.loop, 0), 2);

    ASSERT_PX_OK(px_worker_retire(f.loop, 0, 1));
    ASSERT_INT_EQ(px_worker_retiring(f.loop, 0), 1);
    /* Someone must serve. */
    ASSERT_INT_EQ(px_worker_retire(f.loop, TEST_WORKERS - 1, 1), -EBUSY);
    ASSERT_INT_EQ(px_worker_retiring(f.loop, TEST_WORKERS - 1), 0);
    uint64_t began = px_now_ns();
    /* New connections go elsewhere, even with worker 0 the least loaded. */
    http_client_t moved[4];
    for (int i = 0; i < 4; i++) {
        http_client_open(&moved[i], f.port);
        ASSERT_INT_CMP(get(&moved[i], NULL), !=, 0);
    }
    /* Worker 0's busy connection is answered and ends with it. */
    ASSERT_INT_EQ(get(on_zero[0], "close"), 0);
    http_expect_eof(on_zero[0], WAIT_MS);
    /* The idle one is closed after the grace, not at once. */
    http_expect_silence(on_zero[1], 300);
    http_expect_eof(on_zero[1], WAIT_MS);
    ASSERT_UINT_CMP((px_now_ns() - began) / 1000000u, >=, 900);
    WAIT_FOR(px_worker_served_open(f.loop, 0) == 0, WAIT_MS);
    WAIT_FOR(px_worker_connections(f.loop, 0) == 0, WAIT_MS);
    /* The others' connections were not touched. */
    for (int i = 0; i < opened; i++)
        if (&clients[i] != on_zero[0] && &clients[i] != on_zero[1])
            ASSERT_INT_CMP(get(&clients[i], NULL), !=, 0);

    ASSERT_INT_EQ(px_worker_overloaded(f.loop, 1), 0);
    /* Back in service: the least loaded again, it takes the next one; the
     * other ends a connection of its surplus at its next response. */
    ASSERT_PX_OK(px_worker_retire(f.loop, 0, 0));
    ASSERT_INT_EQ(px_worker_retiring(f.loop, 0), 0);
    ASSERT_INT_EQ(px_worker_overloaded(f.loop, 1), 1);
    ASSERT_INT_EQ(px_worker_overloaded(f.loop, 0), 0);
    ASSERT_INT_CMP(get(&moved[0], "close"), !=, 0);
    http_expect_eof(&moved[0], WAIT_MS);
    http_client_t again;
    http_client_open(&again, f.port);
    ASSERT_INT_EQ(get(&again, NULL), 0);
    http_client_close(&again);
    for (int i = 0; i < 4; i++)
        http_client_close(&moved[i]);
    for (int i = 0; i < opened; i++)
        http_client_close(&clients[i]);
    ASSERT_INT_EQ(px_worker_retire(f.loop, TEST_WORKERS, 1), -EINVAL);
    http_fixture_stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_retiring_worker_hands_its_connections_over),
};

TEST_MAIN(cases)
