/*
 * test_linger.c - a closing connection whose peer never reads is reset
 * after close_linger_ms instead of holding its socket and queue until the
 * loop stops; and file bytes queued for sendfile, which occupy no memory,
 * do not count toward max_send_buffer.
 */
#include "engine_util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define QUEUED_BYTES (4u << 20)
static char payload[QUEUED_BYTES];

static void send_then_close(px_conn_t *conn)
{
    struct iovec iov = {payload, sizeof(payload)};
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
    /* The peer reads nothing, so most of it stays queued. */
    ASSERT_UINT_CMP(px_conn_queued_bytes(conn), >, 0);
    px_conn_close(conn, 0);
    conn_log_open(conn);
}

static void test_close_of_unread_connection_is_bounded(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t cbs = {.on_open = send_then_close,
                               .on_close = conn_log_close};
    px_loop_options_t opts;
    test_loop_options(&opts, backend);
    opts.close_linger_ms = 200;
    engine_fixture_t f = {.callbacks = &cbs,
                          .conn_data = &log,
                          .loop_options = &opts,
                          .rcvbuf = 16 << 10};
    engine_fixture_start(&f, backend);
    conn_log_wait(&log, 0);
    uint64_t start = px_now_ns();
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    uint64_t waited_ms = (px_now_ns() - start) / 1000000u;
    /* Not before the linger ran out (the peer never read), and long before
     * the wait's limit. */
    ASSERT_UINT_CMP(waited_ms, >=, 150);
    ASSERT_INT_EQ(atomic_load(&log.close_error), PX_ECLOSED);
    px_stats_t st;
    px_loop_stats(f.loop, &st);
    ASSERT_UINT_EQ(st.io_hogs, 0);
    engine_fixture_stop(&f);
}

#define FILE_BYTES (8u << 20)
static int file_fd = -1;

static void queue_files(px_conn_t *conn)
{
    /* Three sends of 8 MiB of file each: 24 MiB unsent, over the 16 MiB
     * bound, none of it in memory. */
    for (int i = 0; i < 3; i++)
        ASSERT_PX_OK(
            px_conn_sendfile(conn, NULL, file_fd, 0, FILE_BYTES, NULL, NULL));
    ASSERT_UINT_CMP(px_conn_queued_bytes(conn), >, 16u << 20);
    px_conn_close(conn, 1);
    conn_log_open(conn);
}

static void test_file_bytes_do_not_fill_send_buffer(int backend)
{
    char path[] = "/tmp/px-test-linger-XXXXXX";
    file_fd = mkstemp(path);
    ASSERT_INT_CMP(file_fd, >=, 0);
    unlink(path);
    ASSERT_INT_EQ(ftruncate(file_fd, FILE_BYTES), 0);
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t cbs = {.on_open = queue_files,
                               .on_close = conn_log_close};
    engine_fixture_t f = {
        .callbacks = &cbs, .conn_data = &log, .rcvbuf = 16 << 10};
    engine_fixture_start(&f, backend);
    conn_log_wait(&log, 0);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    engine_fixture_stop(&f);
    close(file_fd);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_file_bytes_do_not_fill_send_buffer),
    ENGINE_CASE(test_close_of_unread_connection_is_bounded),
};

TEST_MAIN(cases)
