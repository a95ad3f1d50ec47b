/*
 * test_visit.c - px_loop_visit_threads: the function runs once on every
 * thread of the loop, never on the caller's, never inside a callback: a
 * thread blocked in a long work item runs it only once the item returned,
 * and until then a second visit is refused (-EBUSY); spares created by the
 * hand-off of that blocked thread's worker run it too. Each case runs
 * under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <pthread.h>

#define BLOCK_MS 400
#define MAX_SEEN 64

typedef struct {
    pthread_mutex_t lock;
    pthread_t seen[MAX_SEEN];
    int count;
    int repeats; /* a thread that ran it twice */
    atomic_bool blocking;
    uint64_t blocked_until_ns;
    uint64_t last_visit_ns;
} visits_t;

static void visit(void *arg)
{
    visits_t *v = arg;
    pthread_mutex_lock(&v->lock);
    for (int i = 0; i < v->count; i++)
        if (pthread_equal(v->seen[i], pthread_self()))
            v->repeats++;
    if (v->count < MAX_SEEN)
        v->seen[v->count++] = pthread_self();
    v->last_visit_ns = px_now_ns();
    pthread_mutex_unlock(&v->lock);
}

static atomic_bool item_ran;

static void block(void *arg)
{
    visits_t *v = arg;
    atomic_store(&v->blocking, true);
    atomic_store(&item_ran, true);
    sleep_ms(BLOCK_MS);
    pthread_mutex_lock(&v->lock);
    v->blocked_until_ns = px_now_ns();
    pthread_mutex_unlock(&v->lock);
    atomic_store(&v->blocking, false);
}

static int visited(visits_t *v)
{
    pthread_mutex_lock(&v->lock);
    int n = v->count;
    pthread_mutex_unlock(&v->lock);
    return n;
}

static void test_every_thread_runs_it_once(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    visits_t v = {.lock = PTHREAD_MUTEX_INITIALIZER};
    atomic_store(&item_ran, false);
    ASSERT_PX_OK(px_submit_to(loop, 0, block, NULL, &v));
    WAIT_FOR(atomic_load(&item_ran), WAIT_MS);
    /* Its worker goes to a spare while it blocks. */
    sleep_ms(BLOCK_MS / 2);
    px_stats_t st;
    px_loop_stats(loop, &st);
    int threads = st.threads;
    ASSERT_INT_CMP(threads, >, TEST_WORKERS);
    ASSERT_PX_OK(px_loop_visit_threads(loop, visit, &v));
    /* Every thread but the blocked one runs it; that one is still in its
     * work item, so the visit is not over. */
    WAIT_FOR(visited(&v) >= threads - 1, WAIT_MS);
    if (atomic_load(&v.blocking))
        ASSERT_INT_EQ(px_loop_visit_threads(loop, visit, &v), -EBUSY);
    WAIT_FOR(visited(&v) == threads, WAIT_MS + BLOCK_MS);
    pthread_mutex_lock(&v.lock);
    ASSERT_INT_EQ(v.repeats, 0);
    /* The last one came once the blocking item returned. */
    ASSERT_UINT_CMP(v.last_visit_ns, >=, v.blocked_until_ns);
    for (int i = 0; i < v.count; i++)
        ASSERT_TRUE(!pthread_equal(v.seen[i], pthread_self()));
    pthread_mutex_unlock(&v.lock);
    /* Over: the next one is taken. */
    WAIT_FOR(px_loop_visit_threads(loop, visit, &v) == 0, WAIT_MS);
    WAIT_FOR(visited(&v) == 2 * threads || visited(&v) == MAX_SEEN, WAIT_MS);
    ASSERT_INT_EQ(px_loop_visit_threads(loop, NULL, NULL), -EINVAL);
    finish_loop(loop);
}

static void test_refused_once_stopped(int backend)
{
    px_loop_t *loop = new_loop(backend, NULL);
    visits_t v = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ASSERT_INT_EQ(px_loop_visit_threads(loop, visit, &v), PX_ESTOPPED);
    ASSERT_PX_OK(px_loop_start(loop));
    ASSERT_PX_OK(px_loop_stop(loop));
    ASSERT_INT_EQ(px_loop_visit_threads(loop, visit, &v), PX_ESTOPPED);
    px_loop_free(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_every_thread_runs_it_once),
    ENGINE_CASE(test_refused_once_stopped),
};

TEST_MAIN(cases)
