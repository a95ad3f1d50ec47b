/*
 * test_echo.c - echo round trips through the engine: one connection, many
 * concurrent connections from client threads, and transfers of several MiB
 * each way with every byte checked. Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/socket.h>

static void test_echo_round_trip(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_start(&f, backend);
    static const size_t sizes[] = {1, 5, 100, 4096, 65536 + 7, 300000};
    static char out[300000], in[300000];
    uint64_t offset = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill_pattern(out, sizes[i], offset, 1);
        client_send_all(f.fd, out, sizes[i]);
        client_recv_exact(f.fd, in, sizes[i]);
        check_pattern(in, sizes[i], offset, 1);
        offset += sizes[i];
    }
    ASSERT_INT_EQ(atomic_load(&log.opened), 1);
    engine_fixture_disconnect(&f);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.close_error), 0);

    px_stats_t st;
    /* The worker drops the connection right after on_close returns. */
    WAIT_FOR((px_loop_stats(f.loop, &st), st.connections == 0), WAIT_MS);
    ASSERT_UINT_EQ(st.accepted, 1);
    ASSERT_UINT_EQ(st.bytes_in, offset);
    ASSERT_UINT_EQ(st.bytes_out, offset);
    ASSERT_INT_EQ(st.workers, TEST_WORKERS);
    engine_fixture_stop(&f);
}

/* ---- many connections from many threads ------------------------------- */

#define CLIENT_THREADS 8
#define CONNS_PER_THREAD 4
#define ROUND_TRIPS 50

typedef struct {
    int port;
    unsigned seed;
} client_job_t;

static void *many_round_trips(void *arg)
{
    client_job_t *job = arg;
    int fds[CONNS_PER_THREAD];
    uint64_t offsets[CONNS_PER_THREAD] = {0};
    for (int i = 0; i < CONNS_PER_THREAD; i++)
        fds[i] = client_connect(job->port);
    char out[4096], in[4096];
    unsigned rnd = job->seed;
    for (int round = 0; round < ROUND_TRIPS; round++) {
        /* Every connection has a message in flight at once. */
        size_t sizes[CONNS_PER_THREAD];
        for (int i = 0; i < CONNS_PER_THREAD; i++) {
            rnd = rnd * 1103515245u + 12345u;
            sizes[i] = 1 + (rnd >> 8) % sizeof(out);
            fill_pattern(out, sizes[i], offsets[i], job->seed + (unsigned)i);
            client_send_all(fds[i], out, sizes[i]);
        }
        for (int i = 0; i < CONNS_PER_THREAD; i++) {
            client_recv_exact(fds[i], in, sizes[i]);
            check_pattern(in, sizes[i], offsets[i], job->seed + (unsigned)i);
            offsets[i] += sizes[i];
        }
    }
    for (int i = 0; i < CONNS_PER_THREAD; i++)
        close(fds[i]);
    return NULL;
}

static void test_many_connections(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_serve(&f, backend);
    client_job_t jobs[CLIENT_THREADS];
    pthread_t tids[CLIENT_THREADS];
    for (int i = 0; i < CLIENT_THREADS; i++) {
        jobs[i] = (client_job_t){f.port, 1000u * (unsigned)(i + 1)};
        tids[i] = start_thread(many_round_trips, &jobs[i]);
    }
    for (int i = 0; i < CLIENT_THREADS; i++)
        join_thread(tids[i]);

    int total = CLIENT_THREADS * CONNS_PER_THREAD;
    WAIT_FOR(atomic_load(&log.closed) == total, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.opened), total);
    ASSERT_INT_EQ(atomic_load(&log.close_errors), 0);
    px_stats_t st;
    px_loop_stats(f.loop, &st);
    ASSERT_UINT_EQ(st.accepted, (unsigned)total);
    engine_fixture_stop(&f);
}

/* ---- large transfers -------------------------------------------------- */

#define LARGE_BYTES (8u << 20)
#define LARGE_CONNS 2

typedef struct {
    int fd;
    unsigned seed;
} stream_t;

static void *send_large(void *arg)
{
    stream_t *s = arg;
    static _Thread_local char chunk[64 << 10];
    for (size_t off = 0; off < LARGE_BYTES; off += sizeof(chunk)) {
        fill_pattern(chunk, sizeof(chunk), off, s->seed);
        client_send_all(s->fd, chunk, sizeof(chunk));
    }
    return NULL;
}

static void *recv_large(void *arg)
{
    stream_t *s = arg;
    static _Thread_local char chunk[48 << 10]; /* not the sender's size */
    size_t off = 0;
    while (off < LARGE_BYTES) {
        size_t want = LARGE_BYTES - off < sizeof(chunk) ? LARGE_BYTES - off
                                                        : sizeof(chunk);
        ssize_t n = recv(s->fd, chunk, want, 0);
        if (n <= 0)
            TEST_FAIL("recv after %zu of %u bytes: %s", off, LARGE_BYTES,
                      n < 0 ? strerror(errno) : "EOF");
        check_pattern(chunk, (size_t)n, off, s->seed);
        off += (size_t)n;
    }
    return NULL;
}

static void test_large_transfers(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_serve(&f, backend);
    stream_t streams[LARGE_CONNS];
    pthread_t senders[LARGE_CONNS], receivers[LARGE_CONNS];
    for (int i = 0; i < LARGE_CONNS; i++) {
        streams[i] = (stream_t){client_connect(f.port), 77u + (unsigned)i};
        senders[i] = start_thread(send_large, &streams[i]);
        receivers[i] = start_thread(recv_large, &streams[i]);
    }
    for (int i = 0; i < LARGE_CONNS; i++) {
        join_thread(senders[i]);
        join_thread(receivers[i]);
        close(streams[i].fd);
    }
    WAIT_FOR(atomic_load(&log.closed) == LARGE_CONNS, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.close_errors), 0);
    px_stats_t st;
    px_loop_stats(f.loop, &st);
    ASSERT_UINT_EQ(st.bytes_in, (uint64_t)LARGE_BYTES * LARGE_CONNS);
    ASSERT_UINT_EQ(st.bytes_out, (uint64_t)LARGE_BYTES * LARGE_CONNS);
    engine_fixture_stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_echo_round_trip),
    ENGINE_CASE(test_many_connections),
    ENGINE_CASE(test_large_transfers),
};

TEST_MAIN(cases)
