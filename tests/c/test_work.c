/*
 * test_work.c - work items: submitted from many threads at once, from
 * worker threads (a chain of items each submitting the next), run in
 * parallel on the workers, and refused with clear errors when the loop is
 * not running. Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>

#define SUBMIT_THREADS 8
#define ITEMS_PER_THREAD 5000

typedef struct {
    atomic_int ran;
    atomic_int bad_workers;
    atomic_int cancelled;
} work_counts_t;

static void count_item(void *arg)
{
    work_counts_t *n = arg;
    int worker = px_current_worker();
    if (worker < 0 || worker >= TEST_WORKERS)
        atomic_fetch_add(&n->bad_workers, 1);
    atomic_fetch_add(&n->ran, 1);
}

static void count_cancel(void *arg)
{
    work_counts_t *n = arg;
    atomic_fetch_add(&n->cancelled, 1);
}

typedef struct {
    px_loop_t *loop;
    work_counts_t *counts;
} submitter_t;

static void *submit_items(void *arg)
{
    submitter_t *s = arg;
    ASSERT_INT_EQ(px_current_worker(), -1); /* not a loop thread */
    for (int i = 0; i < ITEMS_PER_THREAD; i++)
        ASSERT_PX_OK(px_submit(s->loop, count_item, count_cancel, s->counts));
    return NULL;
}

static void test_submit_from_many_threads(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static work_counts_t counts;
    submitter_t s = {loop, &counts};
    pthread_t tids[SUBMIT_THREADS];
    for (int i = 0; i < SUBMIT_THREADS; i++)
        tids[i] = start_thread(submit_items, &s);
    for (int i = 0; i < SUBMIT_THREADS; i++)
        join_thread(tids[i]);
    int total = SUBMIT_THREADS * ITEMS_PER_THREAD;
    WAIT_FOR(atomic_load(&counts.ran) == total, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&counts.bad_workers), 0);
    ASSERT_INT_EQ(atomic_load(&counts.cancelled), 0);
    px_stats_t st;
    px_loop_stats(loop, &st);
    ASSERT_UINT_EQ(st.pending_work, 0);
    uint64_t callbacks = 0;
    for (int i = 0; i < st.workers; i++)
        callbacks += st.worker[i].callbacks;
    ASSERT_UINT_CMP(callbacks, >=, (unsigned)total);
    finish_loop(loop);
}

/* ---- submitting from a worker ----------------------------------------- */

#define CHAIN_LENGTH 2000

typedef struct {
    px_loop_t *loop;
    atomic_int links;
} chain_t;

static void chain_link(void *arg)
{
    chain_t *c = arg;
    if (atomic_fetch_add(&c->links, 1) + 1 < CHAIN_LENGTH)
        ASSERT_PX_OK(px_submit(c->loop, chain_link, NULL, c));
}

static void test_submit_from_worker(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static chain_t chain;
    chain.loop = loop;
    ASSERT_PX_OK(px_submit(loop, chain_link, NULL, &chain));
    WAIT_FOR(atomic_load(&chain.links) == CHAIN_LENGTH, WAIT_MS);
    finish_loop(loop);
}

/* ---- parallelism ------------------------------------------------------ */

typedef struct {
    atomic_int started;
    atomic_int met; /* items that saw the other one running */
} rendezvous_t;

static void meet(void *arg)
{
    rendezvous_t *r = arg;
    atomic_fetch_add(&r->started, 1);
    uint64_t until = px_now_ns() + 2000000000u;
    while (atomic_load(&r->started) < 2 && px_now_ns() < until)
        ;
    if (atomic_load(&r->started) >= 2)
        atomic_fetch_add(&r->met, 1);
}

/* Two items that each wait (spinning: no blocking call) for the other to
 * start: they meet only if they run at the same time. */
static void test_items_run_in_parallel(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static rendezvous_t r;
    ASSERT_PX_OK(px_submit(loop, meet, NULL, &r));
    ASSERT_PX_OK(px_submit(loop, meet, NULL, &r));
    WAIT_FOR(atomic_load(&r.met) == 2, WAIT_MS);
    finish_loop(loop);
}

/* ---- errors ----------------------------------------------------------- */

static void never(void *arg)
{
    (void)arg;
    TEST_FAIL("a refused work item ran");
}

static void test_submit_errors(int backend)
{
    px_loop_t *loop = new_loop(backend, NULL);
    /* Not started yet. */
    ASSERT_INT_EQ(px_submit(loop, never, NULL, NULL), PX_ESTOPPED);
    ASSERT_PX_OK(px_loop_start(loop));
    ASSERT_INT_EQ(px_loop_start(loop), PX_EBADSTATE);
    ASSERT_INT_EQ(px_submit(loop, NULL, NULL, NULL), -EINVAL);
    ASSERT_PX_OK(px_loop_stop(loop));
    ASSERT_INT_EQ(px_submit(loop, never, NULL, NULL), PX_ESTOPPED);
    px_loop_free(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_submit_from_many_threads),
    ENGINE_CASE(test_submit_from_worker),
    ENGINE_CASE(test_items_run_in_parallel),
    ENGINE_CASE(test_submit_errors),
};

TEST_MAIN(cases)
