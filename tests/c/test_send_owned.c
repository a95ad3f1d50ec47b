/*
 * test_send_owned.c - sends of memory lent to the engine
 * (px_conn_send_owned): larger than the send-buffer bound, which counts
 * only what the engine copies, written at the pace the peer reads, and
 * given back exactly once, from the connection's worker: when the last
 * byte was written, or when the connection closed first (before on_close).
 * Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <stdlib.h>

#define BOUND_BYTES (1u << 20)
#define LENT_BYTES (8u << 20)
#define SEED 7

static const char head[] = "HEAD:";

typedef struct {
    atomic_int releases;
    atomic_int release_worker;    /* px_current_worker() in the release */
    atomic_int releases_at_close; /* releases when on_close ran */
} lender_t;

static lender_t lender;

static void give_back(void *arg)
{
    ASSERT_TRUE(arg == &lender);
    atomic_store(&lender.release_worker, px_current_worker());
    atomic_fetch_add(&lender.releases, 1);
}

static void record_close(px_conn_t *conn, int error)
{
    atomic_store(&lender.releases_at_close, atomic_load(&lender.releases));
    conn_log_close(conn, error);
}

/* One served connection on a loop bounded at BOUND_BYTES, its client
 * with a receive buffer of rcvbuf bytes; resets the lender. */
typedef struct {
    conn_log_t log;
    px_loop_t *loop;
    int fd;
    px_conn_t *conn;
} setup_t;

static const px_conn_callbacks_t lender_callbacks = {.on_open = conn_log_open,
                                                     .on_close = record_close};

static void set_up(setup_t *t, int backend, int rcvbuf)
{
    atomic_store(&lender.releases, 0);
    atomic_store(&lender.release_worker, -2);
    atomic_store(&lender.releases_at_close, -1);
    *t = (setup_t){.log = CONN_LOG_INIT};
    px_loop_options_t opts;
    test_loop_options(&opts, backend);
    opts.max_send_buffer = BOUND_BYTES;
    t->loop = start_loop(backend, &opts);
    int port = listen_local(t->loop, &lender_callbacks, &t->log, NULL);
    t->fd = client_connect_rcvbuf(port, rcvbuf);
    t->conn = conn_log_wait(&t->log, 0);
}

static void tear_down(setup_t *t)
{
    conn_log_release(&t->log);
    finish_loop(t->loop);
}

static void test_lent_send_beyond_the_bound(int backend)
{
    setup_t t;
    set_up(&t, backend, 32 << 10);
    px_conn_t *conn = t.conn;
    int fd = t.fd;

    char *data = malloc(LENT_BYTES);
    ASSERT_TRUE(data != NULL);
    fill_pattern(data, LENT_BYTES, 0, SEED);
    struct iovec h = {(void *)head, sizeof(head) - 1};
    uint64_t id = 0;
    ASSERT_PX_OK(px_conn_send_owned(conn, &h, data, LENT_BYTES, give_back,
                                    &lender, &id));
    ASSERT_UINT_EQ(id, 1);
    /* The peer has not read: the memory is still the engine's, counted as
     * queued although it is past the bound, and copies are still refused
     * at the bound. */
    sleep_ms(50);
    ASSERT_INT_EQ(atomic_load(&lender.releases), 0);
    ASSERT_UINT_CMP(px_conn_queued_bytes(conn), >, BOUND_BYTES);
    static char big_copy[BOUND_BYTES + 1];
    struct iovec copy = {big_copy, sizeof(big_copy)};
    ASSERT_INT_EQ(px_conn_send(conn, &copy, 1, NULL), PX_ESENDBUF);
    /* A later small copy goes after the lent bytes. */
    struct iovec after = {"AFTER", 5};
    ASSERT_PX_OK(px_conn_send(conn, &after, 1, NULL));

    char got_head[sizeof(head) - 1];
    client_recv_exact(fd, got_head, sizeof(got_head));
    ASSERT_MEM_EQ(got_head, sizeof(got_head), head, sizeof(got_head));
    static char got[64u << 10];
    for (size_t off = 0; off < LENT_BYTES; off += sizeof(got)) {
        client_recv_exact(fd, got, sizeof(got));
        check_pattern(got, sizeof(got), off, SEED);
    }
    char got_after[5];
    client_recv_exact(fd, got_after, sizeof(got_after));
    ASSERT_MEM_EQ(got_after, sizeof(got_after), "AFTER", 5);
    WAIT_FOR(atomic_load(&lender.releases) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&lender.release_worker), px_conn_worker(conn));
    free(data);

    close(fd);
    WAIT_FOR(atomic_load(&t.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&lender.releases), 1);
    tear_down(&t);
}

static void test_lent_send_given_back_on_close(int backend)
{
    setup_t t;
    set_up(&t, backend, 16 << 10);
    px_conn_t *conn = t.conn;
    int fd = t.fd;

    char *data = calloc(1, LENT_BYTES);
    ASSERT_TRUE(data != NULL);
    ASSERT_PX_OK(px_conn_send_owned(conn, NULL, data, LENT_BYTES, give_back,
                                    &lender, NULL));
    sleep_ms(20);
    ASSERT_INT_EQ(atomic_load(&lender.releases), 0);
    px_conn_close(conn, 1); /* drops the queue */
    WAIT_FOR(atomic_load(&t.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&lender.releases), 1);
    ASSERT_INT_EQ(atomic_load(&lender.releases_at_close), 1);
    free(data);
    /* A send on the closed connection fails and gives back at once. */
    ASSERT_INT_EQ(
        px_conn_send_owned(conn, NULL, "x", 1, give_back, &lender, NULL),
        PX_ECLOSED);
    ASSERT_INT_EQ(atomic_load(&lender.releases), 2);
    close(fd);
    tear_down(&t);
}

static void test_lent_send_written_at_once(int backend)
{
    setup_t t;
    set_up(&t, backend, 64 << 10);
    px_conn_t *conn = t.conn;
    int fd = t.fd;
    char small[100];
    fill_pattern(small, sizeof(small), 0, SEED);
    ASSERT_PX_OK(px_conn_send_owned(conn, NULL, small, sizeof(small), give_back,
                                    &lender, NULL));
    /* Written in full by the call: given back before it returned. */
    ASSERT_INT_EQ(atomic_load(&lender.releases), 1);
    ASSERT_INT_EQ(px_conn_send_owned(conn, NULL, small, 1, NULL, NULL, NULL),
                  -EINVAL);
    char got[100];
    client_recv_exact(fd, got, sizeof(got));
    check_pattern(got, sizeof(got), 0, SEED);
    close(fd);
    WAIT_FOR(atomic_load(&t.log.closed) == 1, WAIT_MS);
    tear_down(&t);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_lent_send_beyond_the_bound),
    ENGINE_CASE(test_lent_send_given_back_on_close),
    ENGINE_CASE(test_lent_send_written_at_once),
};

TEST_MAIN(cases)
