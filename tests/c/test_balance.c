/*
 * test_balance.c - accepted connections are spread over the workers, so
 * that their callbacks run on every core even when the kernel wakes the same
 * worker for every accept.
 */
#include "engine_util.h"

#include <unistd.h>

#define CONNECTIONS 16

_Static_assert(CONNECTIONS % TEST_WORKERS == 0,
               "the connections spread evenly over the workers");

static atomic_int opened_on[TEST_WORKERS];

static void note_worker(px_conn_t *conn)
{
    atomic_fetch_add(&opened_on[worker_index(px_conn_worker(conn))], 1);
}

static int opened_total(void)
{
    int n = 0;
    for (int w = 0; w < TEST_WORKERS; w++)
        n += atomic_load(&opened_on[w]);
    return n;
}

static void test_accepts_spread_over_workers(int backend)
{
    for (int w = 0; w < TEST_WORKERS; w++)
        atomic_store(&opened_on[w], 0);
    px_conn_callbacks_t cbs = {.on_open = note_worker};
    px_loop_t *loop = start_loop(backend, NULL);
    int port = listen_local(loop, &cbs, NULL, NULL);
    int fds[CONNECTIONS];
    for (int i = 0; i < CONNECTIONS; i++) {
        fds[i] = client_connect(port);
        /* One at a time: the case where one worker would take them all. */
        WAIT_FOR(opened_total() == i + 1, WAIT_MS);
    }
    for (int w = 0; w < TEST_WORKERS; w++)
        ASSERT_INT_EQ(atomic_load(&opened_on[w]), CONNECTIONS / TEST_WORKERS);
    for (int i = 0; i < CONNECTIONS; i++)
        close(fds[i]);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_accepts_spread_over_workers),
};

TEST_MAIN(cases)
