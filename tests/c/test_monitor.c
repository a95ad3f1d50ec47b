/*
 * test_monitor.c - the hand-off monitor replaces a thread that blocks in a
 * callback, not one that computes: a CPU-bound work item must keep its
 * worker, or the pool would grow threads that compete for the same cores.
 */
#include "engine_util.h"

#include <time.h>

static atomic_int done_items;

static void spin_150ms(void *arg)
{
    (void)arg;
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000000L +
                 (now.tv_nsec - start.tv_nsec) <
             150000000L);
    atomic_fetch_add(&done_items, 1);
}

static void sleep_150ms(void *arg)
{
    (void)arg;
    sleep_ms(150);
    atomic_fetch_add(&done_items, 1);
}

static uint64_t total_handoffs(px_loop_t *loop)
{
    px_stats_t st;
    px_loop_stats(loop, &st);
    return stats_handoffs(&st);
}

static void test_busy_callback_keeps_its_worker(int backend)
{
    atomic_store(&done_items, 0);
    px_loop_t *loop = start_loop(backend, NULL);
    ASSERT_PX_OK(px_submit(loop, spin_150ms, NULL, NULL));
    ASSERT_PX_OK(px_submit(loop, spin_150ms, NULL, NULL));
    WAIT_FOR(atomic_load(&done_items) == 2, WAIT_MS);
    ASSERT_UINT_EQ(total_handoffs(loop), 0);
    finish_loop(loop);
}

static void test_blocked_callback_is_replaced(int backend)
{
    atomic_store(&done_items, 0);
    px_loop_t *loop = start_loop(backend, NULL);
    ASSERT_PX_OK(px_submit(loop, sleep_150ms, NULL, NULL));
    WAIT_FOR(atomic_load(&done_items) == 1, WAIT_MS);
    ASSERT_UINT_CMP(total_handoffs(loop), >=, 1);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_busy_callback_keeps_its_worker),
    ENGINE_CASE(test_blocked_callback_is_replaced),
};

TEST_MAIN(cases)
