/*
 * test_balance.c - accepted connections are spread over the workers, so
 * that their callbacks run on every core even when the kernel wakes the same
 * worker for every accept.
 */
#include "engine_util.h"

#include <unistd.h>

#define CONNECTIONS 16

static atomic_int opened_on[2];

static void note_worker(px_conn_t *conn)
{
    atomic_fetch_add(&opened_on[px_conn_worker(conn)], 1);
}

static void test_accepts_spread_over_workers(int backend)
{
    atomic_store(&opened_on[0], 0);
    atomic_store(&opened_on[1], 0);
    px_conn_callbacks_t cbs = {.on_open = note_worker};
    px_loop_t *loop = start_loop(backend, NULL);
    int port = listen_local(loop, &cbs, NULL, NULL);
    int fds[CONNECTIONS];
    for (int i = 0; i < CONNECTIONS; i++) {
        fds[i] = client_connect(port);
        /* One at a time: the case where one worker would take them all. */
        WAIT_FOR(atomic_load(&opened_on[0]) + atomic_load(&opened_on[1]) ==
                     i + 1,
                 WAIT_MS);
    }
    ASSERT_INT_EQ(atomic_load(&opened_on[0]), CONNECTIONS / 2);
    ASSERT_INT_EQ(atomic_load(&opened_on[1]), CONNECTIONS / 2);
    for (int i = 0; i < CONNECTIONS; i++)
        close(fds[i]);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_accepts_spread_over_workers),
};

TEST_MAIN(cases)
