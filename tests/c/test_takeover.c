/*
 * test_takeover.c - idle workers take over: work items queued behind a
 * long one on a busy worker are taken (stolen) by an idle worker, except
 * those pinned to their worker (px_submit_to), which stay and run in
 * order; a callback that computes (never sleeping) for long gives up its
 * worker, so the other connections of that worker are served meanwhile,
 * while one connection's callbacks still never overlap; and when every
 * worker computes, no thread is added to compete with them. Each case runs
 * under both backends.
 *
 * The server speaks a one-byte protocol: 'w' answers the connection's
 * worker index as a digit, 'c' computes for COMPUTE_MS then answers 'C',
 * any other byte is echoed.
 */
#include "engine_util.h"

#include <poll.h>

#define COMPUTE_MS 400
/* Worker 1's computation in the stealing case: over before worker 0's. */
#define BRIEF_MS 100
#define CONNS 12
/* A round trip on a connection that does not compute must take well under
 * COMPUTE_MS; the sanitizers slow things down, so this is generous. */
#define FAST_MS 150
#define SHORT_ITEMS 10
_Static_assert(TEST_WORKERS <= 10, "'w' answers the worker index as a digit");

/* Computes, without sleeping, until ms have passed. */
static void compute_for(unsigned ms)
{
    uint64_t until = px_now_ns() + (uint64_t)ms * 1000000u;
    volatile uint64_t spins = 0;
    while (px_now_ns() < until)
        spins++;
}

static uint64_t ms_since(uint64_t start_ns)
{
    return (px_now_ns() - start_ns) / 1000000u;
}

/* ---- work stealing ---------------------------------------------------- */

typedef struct {
    atomic_bool long_started;
    atomic_bool long_done;
    atomic_int ran;            /* short items run */
    atomic_int ran_while_long; /* of those, before the long one ended */
    atomic_int worker_of[SHORT_ITEMS];
    atomic_int order[SHORT_ITEMS]; /* item numbers, in the order they ran */
} steal_case_t;

typedef struct {
    steal_case_t *c;
    int number;
} short_item_t;

static void long_item(void *arg)
{
    steal_case_t *c = arg;
    atomic_store(&c->long_started, true);
    compute_for(COMPUTE_MS);
    atomic_store(&c->long_done, true);
}

static void short_item(void *arg)
{
    short_item_t *s = arg;
    steal_case_t *c = s->c;
    int at = atomic_fetch_add(&c->ran, 1);
    ASSERT_INT_CMP(at, <, SHORT_ITEMS);
    atomic_store(&c->order[at], s->number);
    atomic_store(&c->worker_of[s->number], px_current_worker());
    if (!atomic_load(&c->long_done))
        atomic_fetch_add(&c->ran_while_long, 1);
}

static uint64_t total_steals(px_loop_t *loop)
{
    px_stats_t st;
    px_loop_stats(loop, &st);
    uint64_t n = 0;
    for (int i = 0; i < st.workers; i++)
        n += st.worker[i].steals;
    return n;
}

static void brief_item(void *arg)
{
    atomic_bool *done = arg;
    compute_for(BRIEF_MS);
    atomic_store(done, true);
}

/* Worker 0 computes a long item. Short items queued behind it (through
 * px_submit while every worker was busy: worker 1 computed a brief item
 * meanwhile, so they spread over both queues) all run on worker 1 before
 * the long item ends. */
static void test_idle_worker_steals_queued_items(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static steal_case_t c;
    static short_item_t items[SHORT_ITEMS];
    static atomic_bool brief_done;
    ASSERT_PX_OK(px_submit_to(loop, 0, long_item, NULL, &c));
    WAIT_FOR(atomic_load(&c.long_started), WAIT_MS);
    ASSERT_PX_OK(px_submit_to(loop, 1, brief_item, NULL, &brief_done));
    for (int i = 0; i < SHORT_ITEMS; i++) {
        items[i] = (short_item_t){&c, i};
        ASSERT_PX_OK(px_submit(loop, short_item, NULL, &items[i]));
    }
    WAIT_FOR(atomic_load(&c.ran) == SHORT_ITEMS, WAIT_MS);
    ASSERT_TRUE(atomic_load(&brief_done));
    ASSERT_INT_EQ(atomic_load(&c.ran_while_long), SHORT_ITEMS);
    for (int i = 0; i < SHORT_ITEMS; i++)
        ASSERT_INT_EQ(atomic_load(&c.worker_of[i]), 1);
    ASSERT_UINT_CMP(total_steals(loop), >=, 1);
    WAIT_FOR(atomic_load(&c.long_done), WAIT_MS);
    finish_loop(loop);
}

/* Items pinned to a busy worker are never stolen by the idle one: they
 * run on their worker, in order (served by the thread that took the worker
 * over from the computing one, since they wait for it). */
static void test_pinned_items_are_not_stolen(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static steal_case_t c;
    static short_item_t items[SHORT_ITEMS];
    ASSERT_PX_OK(px_submit_to(loop, 0, long_item, NULL, &c));
    WAIT_FOR(atomic_load(&c.long_started), WAIT_MS);
    for (int i = 0; i < SHORT_ITEMS; i++) {
        items[i] = (short_item_t){&c, i};
        ASSERT_PX_OK(px_submit_to(loop, 0, short_item, NULL, &items[i]));
    }
    WAIT_FOR(atomic_load(&c.ran) == SHORT_ITEMS, WAIT_MS);
    for (int i = 0; i < SHORT_ITEMS; i++) {
        ASSERT_INT_EQ(atomic_load(&c.worker_of[i]), 0);
        ASSERT_INT_EQ(atomic_load(&c.order[i]), i);
    }
    ASSERT_UINT_EQ(total_steals(loop), 0);
    finish_loop(loop);
}

/* ---- a computing callback gives up its worker ------------------------- */

typedef struct {
    conn_log_t log;
    atomic_int overlaps;     /* a connection's callbacks ran concurrently */
    unsigned compute_ms;     /* how long 'c' computes */
    px_loop_t *_Atomic loop; /* set once the workers run */
    /* The loop's hand-offs and threads when the first computation ended:
     * from then on a core is idle, and the other computation may rightly
     * give up its worker. */
    atomic_bool one_ended;
    _Atomic uint64_t handoffs_at_first_end;
    atomic_int threads_at_first_end;
} compute_server_t;

typedef struct {
    compute_server_t *server;
    atomic_bool in_callback;
} compute_conn_t;

static void compute_open(px_conn_t *conn)
{
    conn_log_open(conn); /* while conn_data is still the server */
    compute_conn_t *cc = calloc(1, sizeof(*cc));
    ASSERT_TRUE(cc != NULL);
    cc->server = px_conn_data(conn);
    px_conn_set_data(conn, cc);
}

static void compute_close(px_conn_t *conn, int error)
{
    compute_conn_t *cc = px_conn_data(conn);
    px_conn_set_data(conn, cc->server);
    free(cc);
    conn_log_close(conn, error);
}

static void reply(px_conn_t *conn, char byte)
{
    struct iovec iov = {&byte, 1};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
}

static void compute_data(px_conn_t *conn, const char *data, size_t len)
{
    compute_conn_t *cc = px_conn_data(conn);
    if (atomic_exchange(&cc->in_callback, true))
        atomic_fetch_add(&cc->server->overlaps, 1);
    for (size_t i = 0; i < len; i++) {
        if (data[i] == 'w') {
            reply(conn, (char)('0' + px_current_worker()));
        } else if (data[i] == 'c') {
            compute_for(cc->server->compute_ms);
            if (!atomic_exchange(&cc->server->one_ended, true)) {
                px_stats_t st;
                px_loop_stats(atomic_load(&cc->server->loop), &st);
                atomic_store(&cc->server->handoffs_at_first_end,
                             stats_handoffs(&st));
                atomic_store(&cc->server->threads_at_first_end, st.threads);
            }
            reply(conn, 'C');
        } else {
            reply(conn, data[i]);
        }
    }
    atomic_store(&cc->in_callback, false);
}

static const px_conn_callbacks_t compute_callbacks = {
    .on_open = compute_open,
    .on_data = compute_data,
    .on_close = compute_close,
};

typedef struct {
    compute_server_t server;
    engine_fixture_t f;
    px_loop_options_t opts;
    int fds[CONNS];
    int workers[CONNS];
} compute_case_t;

static char round_trip(int fd, char byte)
{
    char answer;
    client_send_all(fd, &byte, 1);
    client_recv_exact(fd, &answer, 1);
    return answer;
}

/* Serves CONNS connections with handoff_ms (0: the default), 'c'
 * computing for compute_ms; returns the first connection of each worker in
 * first[]. */
static void serve(compute_case_t *tc, int backend, unsigned handoff_ms,
                  unsigned compute_ms, int first[TEST_WORKERS])
{
    memset(tc, 0, sizeof(*tc));
    tc->server.compute_ms = compute_ms;
    test_loop_options(&tc->opts, backend);
    tc->opts.handoff_ms = handoff_ms;
    tc->f = (engine_fixture_t){.callbacks = &compute_callbacks,
                               .conn_data = &tc->server,
                               .loop_options = &tc->opts};
    engine_fixture_serve(&tc->f, backend);
    atomic_store(&tc->server.loop, tc->f.loop);
    for (int w = 0; w < TEST_WORKERS; w++)
        first[w] = -1;
    for (int i = 0; i < CONNS; i++) {
        tc->fds[i] = client_connect(tc->f.port);
        tc->workers[i] = worker_index(round_trip(tc->fds[i], 'w') - '0');
        if (first[tc->workers[i]] < 0)
            first[tc->workers[i]] = i;
    }
    /* Connections are spread over the workers by their count. */
    for (int w = 0; w < TEST_WORKERS; w++)
        ASSERT_INT_CMP(first[w], >=, 0);
}

static void finish(compute_case_t *tc)
{
    for (int i = 0; i < CONNS; i++)
        close(tc->fds[i]);
    WAIT_FOR(atomic_load(&tc->server.log.closed) == CONNS, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&tc->server.overlaps), 0);
    engine_fixture_stop(&tc->f);
}

static bool has_answer(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) == 1;
}

/* One connection computes; the other connections of its worker are
 * answered quickly meanwhile, and its own byte sent behind the computation
 * is answered after it. */
static void test_computing_callback_gives_up_its_worker(int backend)
{
    static compute_case_t tc;
    int first[TEST_WORKERS];
    serve(&tc, backend, 0, COMPUTE_MS, first);
    int victim = first[0];
    uint64_t since = px_now_ns();
    client_send_all(tc.fds[victim], "c", 1);
    sleep_ms(20);
    client_send_all(tc.fds[victim], "e", 1);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < CONNS; i++) {
            if (i == victim)
                continue;
            uint64_t start = px_now_ns();
            ASSERT_INT_EQ(round_trip(tc.fds[i], 'e'), 'e');
            ASSERT_UINT_CMP(ms_since(start), <, FAST_MS);
        }
    }
    ASSERT_UINT_CMP(ms_since(since), <, COMPUTE_MS);
    ASSERT_TRUE(!has_answer(tc.fds[victim]));
    char answer[2];
    client_recv_exact(tc.fds[victim], answer, 2);
    ASSERT_SPAN_EQ(answer, 2, "Ce");
    px_stats_t st;
    px_loop_stats(tc.f.loop, &st);
    ASSERT_UINT_CMP(st.worker[0].handoffs, >=, 1);
    finish(&tc);
}

/* A callback computes on every worker: every core is taken, and a thread
 * more would only compete with them, so the workers stay with their
 * threads. The threshold (200 ms) leaves the callbacks time to all start,
 * even on a loaded machine, before the first is judged; they compute four
 * thresholds, long past that. */
static void test_no_takeover_when_every_worker_computes(int backend)
{
    static compute_case_t tc;
    int first[TEST_WORKERS];
    serve(&tc, backend, 200, 800, first);
    for (int w = 0; w < TEST_WORKERS; w++)
        client_send_all(tc.fds[first[w]], "c", 1);
    for (int w = 0; w < TEST_WORKERS; w++) {
        char answer;
        client_recv_exact(tc.fds[first[w]], &answer, 1);
        ASSERT_INT_EQ(answer, 'C');
    }
    ASSERT_UINT_EQ(atomic_load(&tc.server.handoffs_at_first_end), 0);
    ASSERT_INT_EQ(atomic_load(&tc.server.threads_at_first_end), TEST_WORKERS);
    finish(&tc);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_idle_worker_steals_queued_items),
    ENGINE_CASE(test_pinned_items_are_not_stolen),
    ENGINE_CASE(test_computing_callback_gives_up_its_worker),
    ENGINE_CASE(test_no_takeover_when_every_worker_computes),
};

TEST_MAIN(cases)
