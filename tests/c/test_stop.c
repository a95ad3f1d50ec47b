/*
 * test_stop.c - clean shutdown: px_loop_stop with open connections (both
 * accepted and outgoing), queued work and pending timers runs every
 * on_close and every cancel / done callback, and joins every thread, spares
 * included, also while a callback blocks. The thread and dispatch hooks are
 * checked on the way: every thread that started stops, and dispatch
 * brackets never nest. Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <sys/socket.h>

typedef struct {
    atomic_int thread_starts;
    atomic_int thread_stops;
    atomic_int nested_dispatch; /* enter without leave on one thread */
    atomic_int unbalanced_leave;
} hooks_t;

static _Thread_local int dispatch_depth;

static void hook_thread_start(void *data, int worker)
{
    hooks_t *h = data;
    ASSERT_TRUE(worker >= -1 && worker < TEST_WORKERS);
    atomic_fetch_add(&h->thread_starts, 1);
}

static void hook_thread_stop(void *data, int worker)
{
    hooks_t *h = data;
    (void)worker;
    ASSERT_INT_EQ(dispatch_depth, 0);
    atomic_fetch_add(&h->thread_stops, 1);
}

static void hook_enter(void *data, int worker)
{
    hooks_t *h = data;
    (void)worker;
    if (dispatch_depth++ != 0)
        atomic_fetch_add(&h->nested_dispatch, 1);
}

static void hook_leave(void *data, int worker)
{
    hooks_t *h = data;
    (void)worker;
    if (--dispatch_depth != 0)
        atomic_fetch_add(&h->unbalanced_leave, 1);
}

static px_loop_t *start_hooked_loop(int backend, hooks_t *h)
{
    px_loop_options_t opts;
    test_loop_options(&opts, backend);
    opts.on_thread_start = hook_thread_start;
    opts.on_thread_stop = hook_thread_stop;
    opts.on_dispatch_enter = hook_enter;
    opts.on_dispatch_leave = hook_leave;
    opts.hook_data = h;
    return start_loop(backend, &opts);
}

static void check_hooks_after_stop(px_loop_t *loop, hooks_t *h)
{
    ASSERT_INT_CMP(atomic_load(&h->thread_starts), >=, TEST_WORKERS);
    ASSERT_INT_EQ(atomic_load(&h->thread_stops),
                  atomic_load(&h->thread_starts));
    ASSERT_INT_EQ(atomic_load(&h->nested_dispatch), 0);
    ASSERT_INT_EQ(atomic_load(&h->unbalanced_leave), 0);
    px_stats_t st;
    px_loop_stats(loop, &st);
    ASSERT_INT_EQ(st.threads, 0);
    ASSERT_UINT_EQ(st.connections, 0);
    ASSERT_UINT_EQ(st.pending_work, 0);
}

/* ---- stop with everything open ---------------------------------------- */

#define CLIENTS 6
#define WORK_ITEMS 200
#define LONG_TIMERS 5

typedef struct {
    atomic_int ran;
    atomic_int cancelled;
    atomic_int timer_runs;
    atomic_int timer_dones;
} pending_t;

static void slow_item(void *arg)
{
    pending_t *p = arg;
    sleep_ms(2);
    atomic_fetch_add(&p->ran, 1);
}

static void item_cancelled(void *arg)
{
    pending_t *p = arg;
    /* Cancel callbacks run inside the dispatch bracket. */
    ASSERT_INT_EQ(dispatch_depth, 1);
    atomic_fetch_add(&p->cancelled, 1);
}

static void timer_ran(void *arg)
{
    pending_t *p = arg;
    atomic_fetch_add(&p->timer_runs, 1);
}

static void timer_done(void *arg)
{
    pending_t *p = arg;
    atomic_fetch_add(&p->timer_dones, 1);
}

static void test_stop_with_everything_open(int backend)
{
    static hooks_t hooks;
    px_loop_t *loop = start_hooked_loop(backend, &hooks);
    conn_log_t server = CONN_LOG_INIT, dialer = CONN_LOG_INIT;
    int port = listen_local(loop, &echo_callbacks, &server, NULL);

    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        fds[i] = client_connect(port);
    px_conn_t *out = NULL;
    ASSERT_PX_OK(
        px_connect(loop, "127.0.0.1", port, &echo_callbacks, &dialer, &out));
    conn_log_wait(&dialer, 0);
    WAIT_FOR(atomic_load(&server.opened) == CLIENTS + 1, WAIT_MS);

    static pending_t p;
    for (int i = 0; i < WORK_ITEMS; i++)
        ASSERT_PX_OK(px_submit(loop, slow_item, item_cancelled, &p));
    for (int i = 0; i < LONG_TIMERS; i++)
        ASSERT_PX_OK(px_timer_start(loop, 10000000000u, 0, timer_ran,
                                    timer_done, &p, NULL));
    ASSERT_PX_OK(
        px_timer_start(loop, 0, 1000000u, timer_ran, timer_done, &p, NULL));

    ASSERT_PX_OK(px_loop_stop(loop));
    /* Every connection got its on_close, with PX_ECLOSED. */
    ASSERT_INT_EQ(atomic_load(&server.closed), CLIENTS + 1);
    ASSERT_INT_EQ(atomic_load(&dialer.closed), 1);
    ASSERT_INT_EQ(atomic_load(&server.close_error), PX_ECLOSED);
    ASSERT_INT_EQ(atomic_load(&dialer.close_error), PX_ECLOSED);
    /* Every work item either ran or was cancelled, and most never ran. */
    ASSERT_INT_EQ(atomic_load(&p.ran) + atomic_load(&p.cancelled), WORK_ITEMS);
    ASSERT_INT_CMP(atomic_load(&p.cancelled), >, 0);
    /* Every timer is done; the long ones never ran. */
    ASSERT_INT_EQ(atomic_load(&p.timer_dones), LONG_TIMERS + 1);
    check_hooks_after_stop(loop, &hooks);

    /* The clients see the connections end. */
    for (int i = 0; i < CLIENTS; i++) {
        char byte;
        ASSERT_INT_CMP(recv(fds[i], &byte, 1, 0), <=, 0);
        close(fds[i]);
    }
    /* A stopped loop refuses everything, and stopping again is harmless. */
    ASSERT_INT_EQ(px_submit(loop, slow_item, NULL, &p), PX_ESTOPPED);
    ASSERT_INT_EQ(px_timer_start(loop, 0, 0, timer_ran, timer_done, &p, NULL),
                  PX_ESTOPPED);
    ASSERT_INT_EQ(
        px_listen(loop, "127.0.0.1", 0, 8, &echo_callbacks, &server, NULL),
        PX_ESTOPPED);
    ASSERT_INT_EQ(
        px_connect(loop, "127.0.0.1", port, &echo_callbacks, &dialer, NULL),
        PX_ESTOPPED);
    ASSERT_INT_EQ(px_conn_send(out, &(struct iovec){"x", 1}, 1, NULL),
                  PX_ECLOSED);
    ASSERT_PX_OK(px_loop_stop(loop));
    px_conn_unref(out);
    conn_log_release(&server);
    conn_log_release(&dialer);
    px_loop_free(loop);
}

/* ---- stop while a callback blocks ------------------------------------- */

static atomic_int blocked_returned;

static void block_on_data(px_conn_t *conn, const char *data, size_t len)
{
    (void)conn;
    (void)data;
    (void)len;
    sleep_ms(300);
    atomic_store(&blocked_returned, 1);
}

static void close_after_block(px_conn_t *conn, int error)
{
    /* on_close of the blocked connection comes after its on_data. */
    ASSERT_INT_EQ(atomic_load(&blocked_returned), 1);
    conn_log_close(conn, error);
}

static void test_stop_while_blocked(int backend)
{
    static hooks_t hooks;
    px_loop_t *loop = start_hooked_loop(backend, &hooks);
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t cbs = {.on_open = conn_log_open,
                               .on_data = block_on_data,
                               .on_close = close_after_block};
    int port = listen_local(loop, &cbs, &log, NULL);
    int fd = client_connect(port);
    conn_log_wait(&log, 0);
    client_send_all(fd, "b", 1);
    /* Wait until the worker was handed to a spare thread. */
    px_stats_t st;
    WAIT_FOR((px_loop_stats(loop, &st), stats_handoffs(&st) >= 1), WAIT_MS);
    ASSERT_INT_CMP(st.threads, >, TEST_WORKERS);
    ASSERT_INT_EQ(atomic_load(&blocked_returned), 0);

    ASSERT_PX_OK(px_loop_stop(loop));
    ASSERT_INT_EQ(atomic_load(&blocked_returned), 1);
    ASSERT_INT_EQ(atomic_load(&log.closed), 1);
    check_hooks_after_stop(loop, &hooks);
    ASSERT_INT_CMP(atomic_load(&hooks.thread_starts), >, TEST_WORKERS);
    close(fd);
    conn_log_release(&log);
    px_loop_free(loop);
}

/* ---- stop from inside the loop; loops never started ------------------- */

static atomic_int stop_result = 1;

static void stop_from_worker(void *arg)
{
    atomic_store(&stop_result, px_loop_stop(arg));
}

static void test_stop_from_loop_thread(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    ASSERT_PX_OK(px_submit(loop, stop_from_worker, NULL, loop));
    /* A loop thread would wait for itself: refused. */
    WAIT_FOR(atomic_load(&stop_result) != 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&stop_result), PX_EBADSTATE);
    finish_loop(loop);
}

static void test_never_started(int backend)
{
    px_loop_t *loop = new_loop(backend, NULL);
    px_loop_free(loop);
    loop = new_loop(backend, NULL);
    ASSERT_PX_OK(px_loop_stop(loop));
    px_loop_free(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_stop_with_everything_open),
    ENGINE_CASE(test_stop_while_blocked),
    ENGINE_CASE(test_stop_from_loop_thread),
    ENGINE_CASE(test_never_started),
};

TEST_MAIN(cases)
