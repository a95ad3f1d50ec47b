/*
 * engine_util.h - what the engine's C tests share: starting a loop on a
 * chosen backend (skipping when io_uring is unavailable), blocking client
 * sockets on 127.0.0.1 with bounded waits, byte patterns that make any lost,
 * duplicated or reordered byte visible, an echo server, a log of a
 * server's connections, and the fixture most cases start from (a loop, a
 * listener and a client) with its tear-down.
 *
 * Every engine case is listed twice, once per backend, with ENGINE_CASE.
 */
#ifndef PX_TEST_ENGINE_UTIL_H
#define PX_TEST_ENGINE_UTIL_H

#include "harness.h"
#include "px.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define ENGINE_CASE(fn)                                                        \
    {#fn "/epoll", fn, PX_BACKEND_EPOLL}, { #fn "/uring", fn, PX_BACKEND_URING }

/* Fails the test with the engine's message when rc is not 0. */
#define ASSERT_PX_OK(rc)                                                       \
    do {                                                                       \
        int rc_ = (rc);                                                        \
        if (rc_ != 0)                                                          \
            TEST_FAIL("%s: %d (%s)", #rc, rc_, px_strerror(rc_));              \
    } while (0)

/* Waits, polling every millisecond, until cond holds; fails after ms. */
#define WAIT_FOR(cond, ms)                                                     \
    do {                                                                       \
        uint64_t until_ = px_now_ns() + (uint64_t)(ms)*1000000u;               \
        while (!(cond)) {                                                      \
            if (px_now_ns() > until_)                                          \
                TEST_FAIL("timed out after %d ms waiting for %s", (int)(ms),   \
                          #cond);                                              \
            sleep_ms(1);                                                       \
        }                                                                      \
    } while (0)

/* How long WAIT_FOR waits for things that should happen at once: generous,
 * since the sanitizers slow everything down. */
#define WAIT_MS 10000

/* The workers of a test loop (test_loop_options). Arrays indexed by worker
 * are sized with it; the cases about several workers need at least two. */
#define TEST_WORKERS 2
_Static_assert(TEST_WORKERS >= 2, "the engine tests need two workers");

/* Options for a test loop: TEST_WORKERS workers on the given backend. */
void test_loop_options(px_loop_options_t *opts, int backend);
/* worker, once checked to index an array of TEST_WORKERS. */
int worker_index(int worker);
/* The hand-offs of every worker. */
uint64_t stats_handoffs(const px_stats_t *st);
/* Creates a loop (opts NULL: test_loop_options) without starting it;
 * exits with TEST_EXIT_SKIP when the backend is io_uring and it is
 * unavailable. */
px_loop_t *new_loop(int backend, const px_loop_options_t *opts);
/* new_loop, then px_loop_start. */
px_loop_t *start_loop(int backend, const px_loop_options_t *opts);
/* Stops and frees the loop. */
void finish_loop(px_loop_t *loop);

/* Listens on 127.0.0.1, an ephemeral port; returns the port. */
int listen_local(px_loop_t *loop, const px_conn_callbacks_t *cbs,
                 void *conn_data, px_listener_t **listener);
/* A port nothing listens on. */
int closed_port(void);

/* A blocking client socket connected to 127.0.0.1:port (TCP_NODELAY,
 * bounded send and receive waits). */
int client_connect(int port);
/* A connect that may fail: the socket, or -errno. */
int client_try_connect(int port);
void client_send_all(int fd, const void *data, size_t len);
/* Receives exactly len bytes; fails on EOF, error or timeout. */
void client_recv_exact(int fd, void *buf, size_t len);
/* Receives until EOF; fails past cap bytes. Returns the byte count. */
size_t client_recv_to_eof(int fd, void *buf, size_t cap);
/* Whether a byte arrives within ms (it is consumed). */
bool client_readable_within(int fd, int ms);

void sleep_ms(unsigned ms);
pthread_t start_thread(void *(*fn)(void *), void *arg);
void join_thread(pthread_t tid);

/* A stream whose every byte depends on its offset and a seed. */
void fill_pattern(void *buf, size_t len, uint64_t offset, unsigned seed);
void check_pattern(const void *buf, size_t len, uint64_t offset, unsigned seed);

/* Sends the same bytes back; on_data of an echo server. */
void echo_on_data(px_conn_t *conn, const char *data, size_t len);

/* What a test server saw: its connections' conn_data points at one (or at a
 * struct that starts with one). conn_log_open and conn_log_close serve as
 * on_open and on_close (or are called from them); the log keeps a reference
 * to each of the first CONN_LOG_KEEP connections opened, so that the test
 * can act on them from its own threads. */
#define CONN_LOG_KEEP 16
typedef struct {
    px_conn_t *_Atomic conns[CONN_LOG_KEEP];
    atomic_int opened;
    atomic_int closed;
    atomic_int close_error;  /* of the last on_close */
    atomic_int close_errors; /* on_close calls with an error other than 0 */
} conn_log_t;
#define CONN_LOG_INIT                                                          \
    {                                                                          \
        .opened = 0                                                            \
    }

void conn_log_open(px_conn_t *conn);
void conn_log_close(px_conn_t *conn, int error);
/* Waits for the index-th connection opened (from 0). */
px_conn_t *conn_log_wait(conn_log_t *log, int index);
/* Drops the log's references: before the loop is freed. */
void conn_log_release(conn_log_t *log);

/* An echo server that logs its connections in a conn_log_t. */
extern const px_conn_callbacks_t echo_callbacks;

/* What most engine cases start from: a started loop on a backend, a
 * listener on 127.0.0.1 whose connections get callbacks and conn_data, and
 * a client connected to it. The test sets the first four fields (the last
 * two may stay zero), engine_fixture_start the others; engine_fixture_serve
 * does the same without the client, for a test that connects its own.
 *
 * engine_fixture_stop is the matching tear-down: it closes the client
 * unless the test did (engine_fixture_disconnect), waits until every
 * connection the log saw open has closed, drops the log's references, then
 * stops and frees the loop. */
typedef struct {
    const px_conn_callbacks_t *callbacks;
    void *conn_data; /* a conn_log_t, or a struct that starts with one */
    const px_loop_options_t *loop_options; /* NULL: test_loop_options */
    int rcvbuf; /* the client's receive buffer; 0: the system's */
    px_loop_t *loop;
    px_listener_t *listener;
    int port;
    int fd; /* the client's socket; -1 when there is none */
} engine_fixture_t;

void engine_fixture_start(engine_fixture_t *f, int backend);
void engine_fixture_serve(engine_fixture_t *f, int backend);
/* Closes the client's socket, for a case about the peer closing (or, with
 * SO_LINGER set to 0, resetting). */
void engine_fixture_disconnect(engine_fixture_t *f);
void engine_fixture_stop(engine_fixture_t *f);

/* Like client_connect, with the receive buffer set to rcvbuf bytes before
 * connecting (a small window makes a peer that does not read visible to the
 * sender at once). */
int client_connect_rcvbuf(int port, int rcvbuf);

#endif /* PX_TEST_ENGINE_UTIL_H */
