/*
 * test_handoff.c - IOCP's "one active thread per core": a callback that
 * blocks (sleeps 300 ms) must not stall the other connections of its
 * worker, nor any other worker; the monitor hands the blocked thread's
 * worker to a spare thread. Also: callbacks of one connection never run
 * concurrently, even across a hand-off, and blocking work items and timers
 * are handed off the same way. Each case runs under both backends.
 *
 * The server speaks a one-byte protocol: 'w' answers the connection's
 * worker index as a digit, 'b' sleeps BLOCK_MS then answers 'B', and any
 * other byte is echoed.
 */
#include "engine_util.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#define BLOCK_MS 300
#define CONNS 16
/* A round trip on a connection that is not blocked must take well under
 * BLOCK_MS; the sanitizers slow things down, so this is generous. */
#define FAST_MS 150
_Static_assert(TEST_WORKERS <= 10, "'w' answers the worker index as a digit");

typedef struct {
    conn_log_t log;
    atomic_int overlaps; /* a connection's callbacks ran concurrently */
} handoff_server_t;

/* Per connection, its conn_data once open. */
typedef struct {
    handoff_server_t *server;
    atomic_bool in_callback; /* one of its callbacks runs */
} handoff_conn_t;

static void handoff_open(px_conn_t *conn)
{
    conn_log_open(conn); /* while conn_data is still the server */
    handoff_conn_t *hc = calloc(1, sizeof(*hc));
    ASSERT_TRUE(hc != NULL);
    hc->server = px_conn_data(conn);
    px_conn_set_data(conn, hc);
}

static void handoff_close(px_conn_t *conn, int error)
{
    handoff_conn_t *hc = px_conn_data(conn);
    px_conn_set_data(conn, hc->server);
    free(hc);
    conn_log_close(conn, error);
}

static void reply(px_conn_t *conn, char byte)
{
    struct iovec iov = {&byte, 1};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
}

static void handoff_data(px_conn_t *conn, const char *data, size_t len)
{
    handoff_conn_t *hc = px_conn_data(conn);
    if (atomic_exchange(&hc->in_callback, true))
        atomic_fetch_add(&hc->server->overlaps, 1);
    for (size_t i = 0; i < len; i++) {
        if (data[i] == 'w') {
            reply(conn, (char)('0' + px_current_worker()));
        } else if (data[i] == 'b') {
            sleep_ms(BLOCK_MS);
            reply(conn, 'B');
        } else {
            reply(conn, data[i]);
        }
    }
    atomic_store(&hc->in_callback, false);
}

static const px_conn_callbacks_t handoff_callbacks = {
    .on_open = handoff_open,
    .on_data = handoff_data,
    .on_close = handoff_close,
};

static uint64_t ms_since(uint64_t start_ns)
{
    return (px_now_ns() - start_ns) / 1000000u;
}

/* One-byte round trip; returns its duration in ms. */
static uint64_t round_trip(int fd, char byte, char *answer)
{
    uint64_t start = px_now_ns();
    client_send_all(fd, &byte, 1);
    client_recv_exact(fd, answer, 1);
    return ms_since(start);
}

static int worker_of(int fd)
{
    char answer;
    round_trip(fd, 'w', &answer);
    return worker_index(answer - '0');
}

static bool has_answer(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) == 1;
}

/* Echo round trips on every connection but the blocked ones; each must be
 * fast, and all of them must be done while the blocked ones still block. */
static void check_others_served(const int *fds, const bool *blocked, int n,
                                uint64_t blocked_since)
{
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < n; i++) {
            if (blocked[i])
                continue;
            char answer;
            uint64_t ms = round_trip(fds[i], 'e', &answer);
            ASSERT_INT_EQ(answer, 'e');
            ASSERT_UINT_CMP(ms, <, FAST_MS);
        }
    }
    ASSERT_UINT_CMP(ms_since(blocked_since), <, BLOCK_MS);
    for (int i = 0; i < n; i++)
        if (blocked[i])
            ASSERT_TRUE(!has_answer(fds[i]));
}

static void wait_blocked_answers(const int *fds, const bool *blocked, int n,
                                 uint64_t blocked_since)
{
    for (int i = 0; i < n; i++) {
        if (!blocked[i])
            continue;
        char answer[2];
        client_recv_exact(fds[i], answer, 2);
        /* The connection's later byte waited for its blocked callback. */
        ASSERT_SPAN_EQ(answer, 2, "Be");
    }
    ASSERT_UINT_CMP(ms_since(blocked_since), >=, BLOCK_MS);
}

/* A case's server and its CONNS connections, with the worker of each. */
typedef struct {
    handoff_server_t server;
    engine_fixture_t f;
    int fds[CONNS];
    int workers[CONNS];
    int per_worker[TEST_WORKERS];
    int busiest; /* the worker with the most connections */
} case_t;

static void serve_connections(case_t *tc, int backend)
{
    memset(tc, 0, sizeof(*tc));
    tc->f = (engine_fixture_t){.callbacks = &handoff_callbacks,
                               .conn_data = &tc->server};
    engine_fixture_serve(&tc->f, backend);
    for (int i = 0; i < CONNS; i++) {
        tc->fds[i] = client_connect(tc->f.port);
        tc->workers[i] = worker_of(tc->fds[i]);
        tc->per_worker[tc->workers[i]]++;
    }
    for (int w = 1; w < TEST_WORKERS; w++)
        if (tc->per_worker[w] > tc->per_worker[tc->busiest])
            tc->busiest = w;
}

static void finish(case_t *tc)
{
    for (int i = 0; i < CONNS; i++)
        close(tc->fds[i]);
    WAIT_FOR(atomic_load(&tc->server.log.closed) == CONNS, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&tc->server.overlaps), 0);
    engine_fixture_stop(&tc->f);
}

/* One connection blocks; the others of its worker (and of the other
 * worker) keep being served. */
static void test_blocking_callback(int backend)
{
    static case_t tc;
    serve_connections(&tc, backend);
    ASSERT_INT_CMP(tc.per_worker[tc.busiest], >=, 3);

    bool blocked[CONNS] = {false};
    int victim = -1;
    for (int i = 0; i < CONNS && victim < 0; i++)
        if (tc.workers[i] == tc.busiest)
            victim = i;
    blocked[victim] = true;
    uint64_t since = px_now_ns();
    /* 'b' blocks; the 'e' behind it must wait for it. */
    client_send_all(tc.fds[victim], "b", 1);
    sleep_ms(20);
    client_send_all(tc.fds[victim], "e", 1);
    check_others_served(tc.fds, blocked, CONNS, since);
    wait_blocked_answers(tc.fds, blocked, CONNS, since);

    px_stats_t st;
    px_loop_stats(tc.f.loop, &st);
    ASSERT_UINT_CMP(st.worker[tc.busiest].handoffs, >=, 1);
    ASSERT_INT_CMP(st.threads, >, TEST_WORKERS); /* a spare took over */
    finish(&tc);
}

/* One connection per worker blocks (or two on one worker, when the kernel
 * put every connection there): everything else is still served. */
static void test_all_workers_blocked(int backend)
{
    static case_t tc;
    serve_connections(&tc, backend);

    /* The first connection of each worker. */
    bool blocked[CONNS] = {false}, worker_blocked[TEST_WORKERS] = {false};
    int nblocked = 0;
    for (int i = 0; i < CONNS; i++) {
        if (!worker_blocked[tc.workers[i]]) {
            worker_blocked[tc.workers[i]] = blocked[i] = true;
            nblocked++;
        }
    }
    if (nblocked == 1)
        blocked[1] = true;
    uint64_t since = px_now_ns();
    for (int i = 0; i < CONNS; i++)
        if (blocked[i])
            client_send_all(tc.fds[i], "b", 1);
    sleep_ms(20);
    for (int i = 0; i < CONNS; i++)
        if (blocked[i])
            client_send_all(tc.fds[i], "e", 1);
    check_others_served(tc.fds, blocked, CONNS, since);
    wait_blocked_answers(tc.fds, blocked, CONNS, since);
    finish(&tc);
}

/* ---- blocking work items and timers ----------------------------------- */

static atomic_int blockers_done;

static void block_a_while(void *arg)
{
    (void)arg;
    sleep_ms(BLOCK_MS);
    atomic_fetch_add(&blockers_done, 1);
}

static void test_blocking_work_and_timers(int backend)
{
    static case_t tc;
    serve_connections(&tc, backend);

    /* Enough blockers for every worker, whatever the distribution. */
    uint64_t since = px_now_ns();
    for (int i = 0; i < TEST_WORKERS; i++) {
        ASSERT_PX_OK(px_submit(tc.f.loop, block_a_while, NULL, NULL));
        ASSERT_PX_OK(
            px_timer_start(tc.f.loop, 0, 0, block_a_while, NULL, NULL, NULL));
    }
    sleep_ms(20);
    bool blocked[CONNS] = {false};
    check_others_served(tc.fds, blocked, CONNS, since);
    ASSERT_INT_EQ(atomic_load(&blockers_done), 0);
    WAIT_FOR(atomic_load(&blockers_done) == 2 * TEST_WORKERS, WAIT_MS);
    finish(&tc);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_blocking_callback),
    ENGINE_CASE(test_all_workers_blocked),
    ENGINE_CASE(test_blocking_work_and_timers),
};

TEST_MAIN(cases)
