/*
 * test_timer.c - timers: one-shot, periodic, cancelled before firing,
 * cancelled from their own callback, many at once, and short ones (well
 * under a millisecond) on time. A timer's done
 * callback runs exactly once, after its last run. Each case runs under both
 * backends (timers share the worker loop with I/O).
 */
#include "engine_util.h"

#include <errno.h>
#include <stdlib.h>

#define MAX_RUNS 64

typedef struct {
    atomic_int runs;
    atomic_int dones;
    atomic_int runs_after_done;
    atomic_int bad_workers;
    uint64_t started_ns;
    uint64_t run_ns[MAX_RUNS];
    int cancel_after;         /* cancel from the callback after so many runs */
    px_timer_t *_Atomic self; /* for cancel_after */
} tick_t;

static void tick(void *arg)
{
    tick_t *t = arg;
    int worker = px_current_worker();
    if (worker < 0 || worker >= TEST_WORKERS)
        atomic_fetch_add(&t->bad_workers, 1);
    if (atomic_load(&t->dones) > 0)
        atomic_fetch_add(&t->runs_after_done, 1);
    int n = atomic_fetch_add(&t->runs, 1);
    if (n < MAX_RUNS)
        t->run_ns[n] = px_now_ns();
    if (t->cancel_after && n + 1 == t->cancel_after)
        px_timer_cancel(atomic_load(&t->self));
}

static void tick_done(void *arg)
{
    tick_t *t = arg;
    atomic_fetch_add(&t->dones, 1);
}

static uint64_t ms(uint64_t ns) { return ns / 1000000u; }

static void test_one_shot(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static tick_t t;
    t.started_ns = px_now_ns();
    px_timer_t *timer = NULL;
    ASSERT_PX_OK(
        px_timer_start(loop, 50000000u, 0, tick, tick_done, &t, &timer));
    WAIT_FOR(atomic_load(&t.dones) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&t.runs), 1);
    ASSERT_UINT_CMP(ms(t.run_ns[0] - t.started_ns), >=, 50);
    sleep_ms(100);
    ASSERT_INT_EQ(atomic_load(&t.runs), 1);
    ASSERT_INT_EQ(atomic_load(&t.dones), 1);
    ASSERT_INT_EQ(atomic_load(&t.bad_workers), 0);
    px_timer_cancel(timer); /* after it fired: nothing happens */
    px_timer_unref(timer);
    sleep_ms(20);
    ASSERT_INT_EQ(atomic_load(&t.dones), 1);
    ASSERT_INT_EQ(px_timer_start(loop, 0, 0, NULL, NULL, NULL, NULL), -EINVAL);
    finish_loop(loop);
}

static void test_periodic(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static tick_t t;
    t.started_ns = px_now_ns();
    px_timer_t *timer = NULL;
    ASSERT_PX_OK(px_timer_start(loop, 10000000u, 20000000u, tick, tick_done, &t,
                                &timer));
    sleep_ms(250);
    px_timer_cancel(timer);
    px_timer_cancel(timer); /* idempotent */
    WAIT_FOR(atomic_load(&t.dones) == 1, WAIT_MS);
    int runs = atomic_load(&t.runs);
    /* Nominally 12 (at 10, 30, ..., 230 ms); the sanitizers and a loaded
     * machine can only make it fewer. */
    ASSERT_INT_CMP(runs, >=, 4);
    ASSERT_INT_CMP(runs, <=, 13);
    /* Runs follow the schedule, not the previous run: never early. */
    for (int i = 0; i < runs && i < MAX_RUNS; i++)
        ASSERT_UINT_CMP(ms(t.run_ns[i] - t.started_ns), >=,
                        10 + 20 * (uint64_t)i);
    sleep_ms(100);
    ASSERT_INT_EQ(atomic_load(&t.runs), runs);
    ASSERT_INT_EQ(atomic_load(&t.dones), 1);
    ASSERT_INT_EQ(atomic_load(&t.runs_after_done), 0);
    px_timer_unref(timer);
    finish_loop(loop);
}

static void test_cancel_before_firing(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static tick_t t;
    px_timer_t *timer = NULL;
    ASSERT_PX_OK(
        px_timer_start(loop, 1000000000u, 0, tick, tick_done, &t, &timer));
    uint64_t start = px_now_ns();
    px_timer_cancel(timer);
    /* done runs promptly, not when the timer would have fired. */
    WAIT_FOR(atomic_load(&t.dones) == 1, WAIT_MS);
    ASSERT_UINT_CMP(ms(px_now_ns() - start), <, 500);
    sleep_ms(50);
    ASSERT_INT_EQ(atomic_load(&t.runs), 0);
    px_timer_unref(timer);
    finish_loop(loop);
}

static void test_cancel_from_callback(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static tick_t t;
    t.cancel_after = 3;
    px_timer_t *timer = NULL;
    /* The callback reads self: set it before the first run can happen. */
    ASSERT_PX_OK(
        px_timer_start(loop, 50000000u, 5000000u, tick, tick_done, &t, &timer));
    atomic_store(&t.self, timer);
    WAIT_FOR(atomic_load(&t.dones) == 1, WAIT_MS);
    sleep_ms(50);
    ASSERT_INT_EQ(atomic_load(&t.runs), 3);
    ASSERT_INT_EQ(atomic_load(&t.runs_after_done), 0);
    px_timer_unref(timer);
    finish_loop(loop);
}

/* ---- many timers ------------------------------------------------------ */

#define MANY_TIMERS 200

typedef struct {
    uint64_t due_ns;
    atomic_int *fired;
    atomic_int *early;
    atomic_int *done;
} due_t;

static void check_due(void *arg)
{
    due_t *d = arg;
    if (px_now_ns() < d->due_ns)
        atomic_fetch_add(d->early, 1);
    atomic_fetch_add(d->fired, 1);
}

static void count_done(void *arg)
{
    due_t *d = arg;
    atomic_fetch_add(d->done, 1);
}

static void test_many_timers(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static due_t dues[MANY_TIMERS];
    static atomic_int fired, early, done;
    unsigned rnd = 7;
    for (int i = 0; i < MANY_TIMERS; i++) {
        rnd = rnd * 1103515245u + 12345u;
        uint64_t delay = (uint64_t)((rnd >> 8) % 100) * 1000000u;
        dues[i] = (due_t){px_now_ns() + delay, &fired, &early, &done};
        ASSERT_PX_OK(px_timer_start(loop, delay, 0, check_due, count_done,
                                    &dues[i], NULL));
    }
    WAIT_FOR(atomic_load(&done) == MANY_TIMERS, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&fired), MANY_TIMERS);
    ASSERT_INT_EQ(atomic_load(&early), 0);
    finish_loop(loop);
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* A timer due in 0.2 ms fires after 0.2 ms and well before 1 ms: polls
 * wait in nanoseconds, not in milliseconds rounded up (which made every
 * short wait a whole millisecond). The median of 21, so that a loaded
 * machine's odd late wake-up does not count. */
static void test_sub_millisecond(int backend)
{
    enum { ROUNDS = 21 };
    px_loop_t *loop = start_loop(backend, NULL);
    static tick_t t[ROUNDS];
    uint64_t waited[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        t[i].started_ns = px_now_ns();
        ASSERT_PX_OK(
            px_timer_start(loop, 200000u, 0, tick, tick_done, &t[i], NULL));
        WAIT_FOR(atomic_load(&t[i].dones) == 1, WAIT_MS);
        waited[i] = t[i].run_ns[0] - t[i].started_ns;
        ASSERT_UINT_CMP(waited[i], >=, 200000u);
    }
    qsort(waited, ROUNDS, sizeof(waited[0]), compare_u64);
    ASSERT_UINT_CMP(waited[ROUNDS / 2], <, 900000u);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_sub_millisecond),
    ENGINE_CASE(test_one_shot),
    ENGINE_CASE(test_periodic),
    ENGINE_CASE(test_cancel_before_firing),
    ENGINE_CASE(test_cancel_from_callback),
    ENGINE_CASE(test_many_timers),
};

TEST_MAIN(cases)
