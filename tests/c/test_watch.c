/*
 * test_watch.c - watches, worker-bound work and timers, and suspended
 * connections: readiness of a pipe or an eventfd is reported on the chosen
 * worker, once per arm (re-armed from on_ready or from another thread);
 * a watch stopped before or after it fired, from on_ready, or by the loop's
 * stop gets its on_done exactly once and never while on_ready runs, after
 * which the owner's reference is the only one left; many
 * watches on both workers; px_submit_to and px_timer_start_on run on the
 * worker they name; a suspended connection's events wait for
 * px_conn_resume_events and arrive in order. Each case runs under both
 * backends.
 */
#include "engine_util.h"
/* For a watch's reference count, which no public call shows. */
#include "px_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>

typedef struct {
    int fd;     /* what on_ready drains */
    int worker; /* where the watch lives */
    px_watch_t *_Atomic watch;
    atomic_int ready;
    atomic_int done;
    atomic_int bad_worker;
    atomic_int overlaps;  /* on_ready or on_done while on_ready ran */
    atomic_int late;      /* on_ready after on_done */
    atomic_int in_ready;  /* on_ready runs */
    atomic_bool rearm;    /* on_ready re-arms */
    atomic_bool stop_now; /* on_ready stops the watch */
    unsigned block_ms;    /* on_ready blocks this long */
    uint64_t drained;     /* what on_ready read, in total */
} probe_t;

static void drain(int fd, probe_t *p)
{
    uint64_t buf[8];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        p->drained += (uint64_t)n;
}

static void probe_ready(void *arg)
{
    probe_t *p = arg;
    if (atomic_exchange(&p->in_ready, 1))
        atomic_fetch_add(&p->overlaps, 1);
    if (px_current_worker() != p->worker)
        atomic_fetch_add(&p->bad_worker, 1);
    if (atomic_load(&p->done))
        atomic_fetch_add(&p->late, 1);
    drain(p->fd, p);
    if (p->block_ms)
        sleep_ms(p->block_ms);
    if (atomic_load(&p->stop_now))
        px_watch_stop(atomic_load(&p->watch));
    else if (atomic_load(&p->rearm))
        ASSERT_PX_OK(px_watch_arm(atomic_load(&p->watch)));
    atomic_store(&p->in_ready, 0);
    atomic_fetch_add(&p->ready, 1);
}

static void probe_done(void *arg)
{
    probe_t *p = arg;
    if (atomic_load(&p->in_ready))
        atomic_fetch_add(&p->overlaps, 1);
    if (px_current_worker() != p->worker)
        atomic_fetch_add(&p->bad_worker, 1);
    atomic_fetch_add(&p->done, 1);
}

/* A non-blocking pipe; fds[0] is read. */
static void make_pipe(int fds[2])
{
    ASSERT_INT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void close_pipe(int fds[2])
{
    close(fds[0]);
    close(fds[1]);
}

static void poke(int fd) { ASSERT_INT_EQ(write(fd, "x", 1), 1); }

static void start_probe(px_loop_t *loop, probe_t *p, int worker, int fd)
{
    p->fd = fd;
    p->worker = worker;
    px_watch_t *w = NULL;
    ASSERT_PX_OK(
        px_watch_start(loop, worker, fd, probe_ready, probe_done, p, &w));
    atomic_store(&p->watch, w);
}

static void check_clean(probe_t *p)
{
    ASSERT_INT_EQ(atomic_load(&p->bad_worker), 0);
    ASSERT_INT_EQ(atomic_load(&p->overlaps), 0);
    ASSERT_INT_EQ(atomic_load(&p->late), 0);
}

/* The references the probe's watch holds now. */
static int watch_refs(probe_t *p)
{
    return atomic_load(&atomic_load(&p->watch)->refs);
}

/* Checks what every probe must show, and drops its watch: once on_done ran
 * the worker lets go of it (right after on_done returns), so the probe's
 * reference is the last and dropping it frees the watch. */
static void finish_probe(probe_t *p)
{
    check_clean(p);
    WAIT_FOR(watch_refs(p) == 1, WAIT_MS);
    px_watch_unref(atomic_load(&p->watch));
}

/* Reported on the chosen worker, once per arm, re-armed from on_ready. */
static void test_ready_rearm_stop(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    for (int worker = 0; worker < TEST_WORKERS; worker++) {
        static probe_t probes[TEST_WORKERS];
        probe_t *p = &probes[worker];
        int fds[2];
        make_pipe(fds);
        atomic_store(&p->rearm, true);
        start_probe(loop, p, worker, fds[0]);
        sleep_ms(20);
        ASSERT_INT_EQ(atomic_load(&p->ready), 0); /* nothing to read yet */
        for (int i = 1; i <= 3; i++) {
            poke(fds[1]);
            WAIT_FOR(atomic_load(&p->ready) == i, WAIT_MS);
        }
        ASSERT_UINT_EQ(p->drained, 3);
        /* Without a re-arm, readiness is not reported again. */
        atomic_store(&p->rearm, false);
        poke(fds[1]);
        WAIT_FOR(atomic_load(&p->ready) == 4, WAIT_MS);
        poke(fds[1]);
        sleep_ms(50);
        ASSERT_INT_EQ(atomic_load(&p->ready), 4);
        /* Armed from another thread, with the byte already waiting. */
        ASSERT_PX_OK(px_watch_arm(atomic_load(&p->watch)));
        WAIT_FOR(atomic_load(&p->ready) == 5, WAIT_MS);
        ASSERT_UINT_EQ(p->drained, 5);
        px_watch_stop(atomic_load(&p->watch));
        px_watch_stop(atomic_load(&p->watch)); /* idempotent */
        WAIT_FOR(atomic_load(&p->done) == 1, WAIT_MS);
        ASSERT_INT_EQ(px_watch_arm(atomic_load(&p->watch)), PX_ESTOPPED);
        poke(fds[1]);
        sleep_ms(30);
        ASSERT_INT_EQ(atomic_load(&p->ready), 5);
        ASSERT_INT_EQ(atomic_load(&p->done), 1);
        finish_probe(p);
        close_pipe(fds);
    }
    finish_loop(loop);
}

/* Stopped before anything was readable, and with a report pending. */
static void test_stop_before_ready(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static probe_t quiet, pending;
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    start_probe(loop, &quiet, 0, a[0]);
    px_watch_stop(atomic_load(&quiet.watch));
    WAIT_FOR(atomic_load(&quiet.done) == 1, WAIT_MS);
    poke(a[1]);
    /* Readable from the start, stopped at once: on_ready may or may not
     * have run first, but on_done runs once and last. */
    poke(b[1]);
    start_probe(loop, &pending, 1, b[0]);
    px_watch_stop(atomic_load(&pending.watch));
    WAIT_FOR(atomic_load(&pending.done) == 1, WAIT_MS);
    sleep_ms(30);
    ASSERT_INT_EQ(atomic_load(&quiet.ready), 0);
    ASSERT_INT_CMP(atomic_load(&pending.ready), <=, 1);
    ASSERT_INT_EQ(atomic_load(&quiet.done), 1);
    ASSERT_INT_EQ(atomic_load(&pending.done), 1);
    finish_probe(&quiet);
    finish_probe(&pending);
    finish_loop(loop);
    close_pipe(a);
    close_pipe(b);
}

/* Stopped from its own on_ready: on_done follows it. */
static void test_stop_from_ready(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static probe_t p;
    int fds[2];
    make_pipe(fds);
    atomic_store(&p.stop_now, true);
    start_probe(loop, &p, 1, fds[0]);
    poke(fds[1]);
    WAIT_FOR(atomic_load(&p.done) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&p.ready), 1);
    finish_probe(&p);
    finish_loop(loop);
    close_pipe(fds);
}

/* The loop's stop ends every watch: on_done once each, armed or not. */
static void test_stop_with_loop(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static probe_t armed, fired;
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    start_probe(loop, &armed, 0, a[0]); /* no reference kept: */
    px_watch_unref(atomic_load(&armed.watch));
    start_probe(loop, &fired, 1, b[0]);
    poke(b[1]);
    WAIT_FOR(atomic_load(&fired.ready) == 1, WAIT_MS);
    finish_loop(loop);
    ASSERT_INT_EQ(atomic_load(&armed.done), 1);
    ASSERT_INT_EQ(atomic_load(&fired.done), 1);
    ASSERT_INT_EQ(atomic_load(&armed.ready), 0);
    check_clean(&armed);
    check_clean(&fired);
    /* Stopping after the loop did is harmless. */
    px_watch_stop(atomic_load(&fired.watch));
    ASSERT_INT_EQ(watch_refs(&fired), 1);
    px_watch_unref(atomic_load(&fired.watch));
    close_pipe(a);
    close_pipe(b);
}

/* on_ready blocks, its worker is handed to another thread, and the watch
 * is stopped meanwhile: on_done waits for on_ready to return. */
static void test_stop_while_ready_blocks(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static probe_t p;
    p.block_ms = 300;
    int fds[2];
    make_pipe(fds);
    start_probe(loop, &p, 0, fds[0]);
    poke(fds[1]);
    WAIT_FOR(atomic_load(&p.in_ready) == 1, WAIT_MS);
    px_stats_t st;
    WAIT_FOR((px_loop_stats(loop, &st), stats_handoffs(&st) > 0), WAIT_MS);
    px_watch_stop(atomic_load(&p.watch));
    WAIT_FOR(atomic_load(&p.done) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&p.ready), 1);
    finish_probe(&p);
    finish_loop(loop);
    close_pipe(fds);
}

#define MANY_WATCHES 100
#define MANY_ROUNDS 3

/* Many eventfds on both workers, each reported once per round. */
static void test_many_watches(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static probe_t probes[MANY_WATCHES];
    int fds[MANY_WATCHES];
    for (int i = 0; i < MANY_WATCHES; i++) {
        fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        ASSERT_INT_CMP(fds[i], >=, 0);
        atomic_store(&probes[i].rearm, true);
        start_probe(loop, &probes[i], i % TEST_WORKERS, fds[i]);
    }
    for (int round = 1; round <= MANY_ROUNDS; round++) {
        uint64_t one = 1;
        for (int i = 0; i < MANY_WATCHES; i++)
            ASSERT_INT_EQ(write(fds[i], &one, sizeof(one)), 8);
        for (int i = 0; i < MANY_WATCHES; i++)
            WAIT_FOR(atomic_load(&probes[i].ready) == round, WAIT_MS);
    }
    for (int i = 0; i < MANY_WATCHES; i += 2)
        px_watch_stop(atomic_load(&probes[i].watch));
    finish_loop(loop); /* stops the other half */
    for (int i = 0; i < MANY_WATCHES; i++) {
        ASSERT_INT_EQ(atomic_load(&probes[i].ready), MANY_ROUNDS);
        ASSERT_INT_EQ(atomic_load(&probes[i].done), 1);
        ASSERT_UINT_EQ(probes[i].drained, 8u * MANY_ROUNDS);
        finish_probe(&probes[i]);
        close(fds[i]);
    }
}

static void test_watch_errors(int backend)
{
    px_loop_t *loop = new_loop(backend, NULL);
    int fds[2];
    make_pipe(fds);
    static probe_t p;
    /* Not started yet. */
    ASSERT_INT_EQ(px_watch_start(loop, 0, fds[0], probe_ready, NULL, &p, NULL),
                  PX_ESTOPPED);
    ASSERT_PX_OK(px_loop_start(loop));
    ASSERT_INT_EQ(
        px_watch_start(loop, TEST_WORKERS, fds[0], probe_ready, NULL, &p, NULL),
        -EINVAL);
    ASSERT_INT_EQ(px_watch_start(loop, -1, fds[0], probe_ready, NULL, &p, NULL),
                  -EINVAL);
    ASSERT_INT_EQ(px_watch_start(loop, 0, -1, probe_ready, NULL, &p, NULL),
                  -EINVAL);
    ASSERT_INT_EQ(px_watch_start(loop, 0, fds[0], NULL, NULL, &p, NULL),
                  -EINVAL);
    finish_loop(loop);
    close_pipe(fds);
}

/* ---- worker-bound work and timers ------------------------------------ */

typedef struct {
    int worker;
    atomic_int ran;
    atomic_int bad_worker;
    atomic_int done;
} bound_t;

static void bound_run(void *arg)
{
    bound_t *b = arg;
    if (px_current_worker() != b->worker)
        atomic_fetch_add(&b->bad_worker, 1);
    atomic_fetch_add(&b->ran, 1);
}

static void bound_done(void *arg)
{
    bound_t *b = arg;
    atomic_fetch_add(&b->done, 1);
}

#define BOUND_ITEMS 200

static void test_bound_work_and_timers(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    static bound_t work[TEST_WORKERS], timers[TEST_WORKERS];
    for (int w = 0; w < TEST_WORKERS; w++) {
        work[w].worker = timers[w].worker = w;
        for (int i = 0; i < BOUND_ITEMS; i++)
            ASSERT_PX_OK(px_submit_to(loop, w, bound_run, NULL, &work[w]));
        for (int i = 0; i < 4; i++)
            ASSERT_PX_OK(px_timer_start_on(loop, w, (uint64_t)i * 5000000u, 0,
                                           bound_run, bound_done, &timers[w],
                                           NULL));
    }
    for (int w = 0; w < TEST_WORKERS; w++) {
        WAIT_FOR(atomic_load(&work[w].ran) == BOUND_ITEMS, WAIT_MS);
        WAIT_FOR(atomic_load(&timers[w].done) == 4, WAIT_MS);
        ASSERT_INT_EQ(atomic_load(&timers[w].ran), 4);
        ASSERT_INT_EQ(atomic_load(&work[w].bad_worker), 0);
        ASSERT_INT_EQ(atomic_load(&timers[w].bad_worker), 0);
    }
    ASSERT_INT_EQ(px_submit_to(loop, TEST_WORKERS, bound_run, NULL, &work[0]),
                  -EINVAL);
    ASSERT_INT_EQ(px_submit_to(loop, 0, NULL, NULL, NULL), -EINVAL);
    ASSERT_INT_EQ(
        px_timer_start_on(loop, -1, 0, 0, bound_run, NULL, &work[0], NULL),
        -EINVAL);
    ASSERT_PX_OK(px_loop_stop(loop));
    ASSERT_INT_EQ(px_submit_to(loop, 0, bound_run, NULL, &work[0]),
                  PX_ESTOPPED);
    px_loop_free(loop);
}

/* ---- suspended connections ------------------------------------------- */

#define SUSPEND_CHUNKS 4

typedef struct {
    conn_log_t log;
    atomic_int data_calls;
    atomic_int suspended; /* on_data suspended the connection */
    atomic_int overlaps;
    atomic_int in_cb;
    char got[64];
    atomic_size_t got_len;
} suspend_server_t;

static void suspend_on_data(px_conn_t *conn, const char *data, size_t len)
{
    suspend_server_t *s = px_conn_data(conn);
    if (atomic_exchange(&s->in_cb, 1))
        atomic_fetch_add(&s->overlaps, 1);
    size_t at = atomic_load(&s->got_len);
    if (at + len <= sizeof(s->got)) {
        memcpy(s->got + at, data, len);
        atomic_store(&s->got_len, at + len);
    }
    atomic_fetch_add(&s->data_calls, 1);
    /* Every call suspends the connection; the test resumes it. */
    px_conn_suspend_events(conn);
    atomic_fetch_add(&s->suspended, 1);
    atomic_store(&s->in_cb, 0);
}

static const px_conn_callbacks_t suspend_callbacks = {
    .on_open = conn_log_open,
    .on_data = suspend_on_data,
    .on_close = conn_log_close,
};

static void test_suspend_events(int backend)
{
    static suspend_server_t s = {.log = CONN_LOG_INIT};
    engine_fixture_t f = {.callbacks = &suspend_callbacks, .conn_data = &s};
    engine_fixture_start(&f, backend);
    px_conn_t *conn = conn_log_wait(&s.log, 0);
    client_send_all(f.fd, "a", 1);
    WAIT_FOR(atomic_load(&s.suspended) == 1, WAIT_MS);
    /* While suspended, nothing is delivered, however much arrives. */
    for (int i = 0; i < SUSPEND_CHUNKS; i++) {
        client_send_all(f.fd, "b", 1);
        sleep_ms(10);
    }
    sleep_ms(50);
    ASSERT_INT_EQ(atomic_load(&s.data_calls), 1);
    /* Resumed from a thread of the test: the bytes follow, in order. */
    px_conn_resume_events(conn);
    WAIT_FOR(atomic_load(&s.data_calls) == 2, WAIT_MS);
    ASSERT_UINT_EQ(atomic_load(&s.got_len), 1 + SUSPEND_CHUNKS);
    ASSERT_TRUE(memcmp(s.got, "abbbb", 1 + SUSPEND_CHUNKS) == 0);
    /* The peer's close waits too, and comes once resumed. */
    engine_fixture_disconnect(&f);
    sleep_ms(50);
    ASSERT_INT_EQ(atomic_load(&s.log.closed), 0);
    px_conn_resume_events(conn);
    WAIT_FOR(atomic_load(&s.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&s.overlaps), 0);
    engine_fixture_stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_ready_rearm_stop),
    ENGINE_CASE(test_stop_before_ready),
    ENGINE_CASE(test_stop_from_ready),
    ENGINE_CASE(test_stop_with_loop),
    ENGINE_CASE(test_stop_while_ready_blocks),
    ENGINE_CASE(test_many_watches),
    ENGINE_CASE(test_watch_errors),
    ENGINE_CASE(test_bound_work_and_timers),
    ENGINE_CASE(test_suspend_events),
};

TEST_MAIN(cases)
