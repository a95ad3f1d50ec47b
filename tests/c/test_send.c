/*
 * test_send.c - the send path: call order of sends from foreign threads,
 * vectored sends, sendfile with a head and a tail, closing after the queued
 * data drained, and the bound on a connection's send buffer with the I/O hog
 * accounting that goes with it. Each case runs under both backends.
 *
 * The client side uses a small receive window where a case needs data to
 * pile up in the engine's send queue rather than in the kernel's buffers.
 */
#include "engine_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>

static const px_conn_callbacks_t logging_callbacks = {
    .on_open = conn_log_open,
    .on_close = conn_log_close,
};

/* ---- call order of sends from foreign threads ------------------------- */

#define SENDER_THREADS 4
#define RECORDS_PER_THREAD 1000
#define RECORD_BYTES 2048
#define BATON_RECORDS 2000

/* A record: the sender's index, its sequence number, then filler bytes
 * derived from both. */
typedef struct {
    uint32_t sender;
    uint32_t seq;
    unsigned char filler[RECORD_BYTES - 8];
} record_t;

static void make_record(record_t *r, uint32_t sender, uint32_t seq)
{
    r->sender = sender;
    r->seq = seq;
    memset(r->filler, (int)(sender * 31u + seq), sizeof(r->filler));
}

typedef struct {
    px_conn_t *conn;
    uint32_t index;
    atomic_uint *baton; /* phase two: whose turn it is */
} sender_t;

static void send_record(px_conn_t *conn, uint32_t sender, uint32_t seq,
                        uint64_t *last_id)
{
    record_t r;
    make_record(&r, sender, seq);
    struct iovec iov = {&r, sizeof(r)};
    uint64_t id = 0;
    ASSERT_PX_OK(px_conn_send(conn, &iov, 1, &id));
    /* Send ids count the connection's sends in call order. */
    ASSERT_UINT_CMP(id, >, *last_id);
    *last_id = id;
}

static void *send_records(void *arg)
{
    sender_t *s = arg;
    uint64_t last_id = 0;
    /* Phase one: all senders at once; each one's records keep its order. */
    for (uint32_t seq = 0; seq < RECORDS_PER_THREAD; seq++)
        send_record(s->conn, s->index, seq, &last_id);
    /* Phase two: the senders take turns, so that the records' global order
     * is the order of the calls. */
    for (;;) {
        unsigned turn = atomic_load(s->baton);
        if (turn >= BATON_RECORDS)
            break;
        if (turn % SENDER_THREADS != s->index) {
            sched_yield();
            continue;
        }
        send_record(s->conn, SENDER_THREADS, turn, &last_id);
        atomic_store(s->baton, turn + 1);
    }
    return NULL;
}

static void test_foreign_thread_send_order(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {
        .callbacks = &logging_callbacks, .conn_data = &log, .rcvbuf = 32 << 10};
    engine_fixture_start(&f, backend);
    px_conn_t *conn = conn_log_wait(&log, 0);

    atomic_uint baton = 0;
    sender_t senders[SENDER_THREADS];
    pthread_t tids[SENDER_THREADS];
    for (uint32_t i = 0; i < SENDER_THREADS; i++) {
        senders[i] = (sender_t){conn, i, &baton};
        tids[i] = start_thread(send_records, &senders[i]);
    }
    /* Let the sends pile up in the engine's queue before reading. */
    sleep_ms(100);

    uint32_t next_seq[SENDER_THREADS + 1] = {0};
    size_t total = SENDER_THREADS * RECORDS_PER_THREAD + BATON_RECORDS;
    for (size_t i = 0; i < total; i++) {
        record_t r, expected;
        client_recv_exact(f.fd, &r, sizeof(r));
        ASSERT_UINT_CMP(r.sender, <=, SENDER_THREADS);
        ASSERT_UINT_EQ(r.seq, next_seq[r.sender]);
        make_record(&expected, r.sender, r.seq);
        ASSERT_MEM_EQ(&r, sizeof(r), &expected, sizeof(expected));
        next_seq[r.sender]++;
    }
    for (int i = 0; i < SENDER_THREADS; i++)
        join_thread(tids[i]);
    ASSERT_UINT_EQ(next_seq[SENDER_THREADS], BATON_RECORDS);
    ASSERT_UINT_EQ(px_conn_queued_bytes(conn), 0);
    engine_fixture_stop(&f);
}

/* ---- vectored sends and send completion -------------------------------- */

#define VECTOR_PARTS 2000
#define PATTERN_BYTES (64u << 10)

typedef struct {
    conn_log_t log;
    char pattern[PATTERN_BYTES];
    size_t sent;             /* bytes of pattern sent, in order */
    atomic_int completions;  /* on_send_complete calls */
    atomic_int order_errors; /* ids out of order, or after on_close */
    uint64_t last_completed; /* touched by the connection's callbacks only */
    atomic_bool closed;
} vector_server_t;

static void send_vectors(px_conn_t *conn)
{
    vector_server_t *vs = px_conn_data(conn);
    conn_log_open(conn);
    px_conn_notify_sends(conn, 1);
    /* More parts than IOV_MAX (1024), of uneven sizes. */
    static struct iovec parts[VECTOR_PARTS];
    size_t off = 0;
    for (int i = 0; i < VECTOR_PARTS; i++) {
        size_t len = 1 + (size_t)i % 7;
        parts[i] = (struct iovec){vs->pattern + off, len};
        off += len;
    }
    uint64_t id = 0;
    ASSERT_PX_OK(px_conn_send(conn, parts, VECTOR_PARTS, &id));
    ASSERT_UINT_EQ(id, 1);
    struct iovec three[3] = {{vs->pattern + off, 10},
                             {vs->pattern + off + 10, 0},
                             {vs->pattern + off + 10, 5000}};
    off += 5010;
    ASSERT_PX_OK(px_conn_send(conn, three, 3, &id));
    ASSERT_UINT_EQ(id, 2);
    ASSERT_PX_OK(px_conn_send(conn, NULL, 0, &id));
    ASSERT_UINT_EQ(id, 3);
    ASSERT_INT_EQ(px_conn_send(conn, NULL, -1, &id), -EINVAL);
    vs->sent = off;
    px_conn_close(conn, 0);
    ASSERT_INT_EQ(px_conn_send(conn, three, 3, &id), PX_ECLOSED);
}

static void count_completion(px_conn_t *conn, uint64_t send_id)
{
    vector_server_t *vs = px_conn_data(conn);
    if (send_id != vs->last_completed + 1 || atomic_load(&vs->closed))
        atomic_fetch_add(&vs->order_errors, 1);
    vs->last_completed = send_id;
    atomic_fetch_add(&vs->completions, 1);
}

static void vector_close(px_conn_t *conn, int error)
{
    vector_server_t *vs = px_conn_data(conn);
    atomic_store(&vs->closed, true);
    conn_log_close(conn, error);
}

static void test_vectored_send(int backend)
{
    static vector_server_t vs;
    fill_pattern(vs.pattern, sizeof(vs.pattern), 0, 5);
    px_conn_callbacks_t cbs = {.on_open = send_vectors,
                               .on_send_complete = count_completion,
                               .on_close = vector_close};
    engine_fixture_t f = {.callbacks = &cbs, .conn_data = &vs};
    engine_fixture_start(&f, backend);
    static char got[PATTERN_BYTES];
    size_t n = client_recv_to_eof(f.fd, got, sizeof(got));
    WAIT_FOR(atomic_load(&vs.log.closed) == 1, WAIT_MS);
    ASSERT_UINT_EQ(n, vs.sent);
    check_pattern(got, n, 0, 5);
    ASSERT_INT_EQ(atomic_load(&vs.log.close_error), PX_ECLOSED);
    /* Every send completed before the connection closed, so each was
     * reported, in order, before on_close. */
    ASSERT_INT_EQ(atomic_load(&vs.completions), 3);
    ASSERT_INT_EQ(atomic_load(&vs.order_errors), 0);
    engine_fixture_stop(&f);
}

/* ---- sendfile --------------------------------------------------------- */

#define FILE_BYTES (3u << 20)
#define FILE_OFFSET 12345
#define FILE_SPAN ((2u << 20) + 7)

typedef struct {
    vector_server_t base; /* completion and close bookkeeping */
    int file_fd;
} file_server_t;

static const char head[] = "HEAD\r\n";
static const char tail[] = "\r\nTAIL";

static void send_file(px_conn_t *conn)
{
    file_server_t *fs = px_conn_data(conn);
    px_conn_notify_sends(conn, 1);
    struct iovec h = {(void *)head, sizeof(head) - 1};
    struct iovec t = {(void *)tail, sizeof(tail) - 1};
    uint64_t id = 0;
    ASSERT_PX_OK(px_conn_sendfile(conn, &h, fs->file_fd, FILE_OFFSET, FILE_SPAN,
                                  &t, &id));
    ASSERT_UINT_EQ(id, 1);
    /* The whole file, with neither head nor tail. */
    ASSERT_PX_OK(
        px_conn_sendfile(conn, NULL, fs->file_fd, 0, FILE_BYTES, NULL, &id));
    ASSERT_UINT_EQ(id, 2);
    ASSERT_INT_EQ(px_conn_sendfile(conn, NULL, -1, 0, 10, NULL, &id), -EINVAL);
    px_conn_close(conn, 0);
    conn_log_open(conn); /* last: the test closes the file when it sees it */
}

static int make_temp_file(size_t bytes, unsigned seed)
{
    char path[] = "/tmp/px-test-sendfile-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_INT_CMP(fd, >=, 0);
    unlink(path);
    static char chunk[64 << 10];
    for (size_t off = 0; off < bytes; off += sizeof(chunk)) {
        size_t len = bytes - off < sizeof(chunk) ? bytes - off : sizeof(chunk);
        fill_pattern(chunk, len, off, seed);
        ASSERT_INT_EQ(pwrite(fd, chunk, len, (off_t)off), (ssize_t)len);
    }
    return fd;
}

static void test_sendfile(int backend)
{
    static file_server_t fs;
    fs.file_fd = make_temp_file(FILE_BYTES, 9);
    px_conn_callbacks_t cbs = {.on_open = send_file,
                               .on_send_complete = count_completion,
                               .on_close = vector_close};
    engine_fixture_t f = {
        .callbacks = &cbs, .conn_data = &fs, .rcvbuf = 64 << 10};
    engine_fixture_start(&f, backend);
    conn_log_wait(&fs.base.log, 0);
    /* The engine dup()ed the file: closing ours must not matter. */
    close(fs.file_fd);
    sleep_ms(50); /* the file parts wait in the queue */

    size_t expect =
        sizeof(head) - 1 + FILE_SPAN + sizeof(tail) - 1 + FILE_BYTES;
    static char got[(6u << 20)];
    size_t n = client_recv_to_eof(f.fd, got, sizeof(got));
    ASSERT_UINT_EQ(n, expect);
    char *p = got;
    ASSERT_SPAN_EQ(p, sizeof(head) - 1, head);
    p += sizeof(head) - 1;
    check_pattern(p, FILE_SPAN, FILE_OFFSET, 9);
    p += FILE_SPAN;
    ASSERT_SPAN_EQ(p, sizeof(tail) - 1, tail);
    p += sizeof(tail) - 1;
    check_pattern(p, FILE_BYTES, 0, 9);

    WAIT_FOR(atomic_load(&fs.base.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&fs.base.log.close_error), PX_ECLOSED);
    ASSERT_INT_EQ(atomic_load(&fs.base.completions), 2);
    ASSERT_INT_EQ(atomic_load(&fs.base.order_errors), 0);
    engine_fixture_stop(&f);
}

/* ---- closing after the queue drained, and aborting -------------------- */

#define DRAIN_BYTES (8u << 20)
#define DRAIN_CHUNK (64u << 10)

/* The data to send, made once, before the loop starts: generating it in
 * the callback would be slow under the sanitizers. */
static char drain_data[DRAIN_BYTES];

static void send_then_close(px_conn_t *conn, int abort)
{
    /* A small kernel send buffer, so that most of the data has to wait in
     * the engine's queue whatever the system's TCP buffer sizes. */
    int sndbuf = 64 << 10;
    ASSERT_INT_EQ(setsockopt(px_conn_fd(conn), SOL_SOCKET, SO_SNDBUF, &sndbuf,
                             sizeof(sndbuf)),
                  0);
    for (size_t off = 0; off < DRAIN_BYTES; off += DRAIN_CHUNK) {
        struct iovec iov = {drain_data + off, DRAIN_CHUNK};
        ASSERT_PX_OK(px_conn_send(conn, &iov, 1, NULL));
    }
    /* The peer reads nothing yet: most of it waits in the queue. */
    ASSERT_UINT_CMP(px_conn_queued_bytes(conn), >, DRAIN_BYTES / 2);
    px_conn_close(conn, abort);
    conn_log_open(conn); /* last: the client starts reading when it sees it */
}

static void send_then_close_gently(px_conn_t *conn)
{
    send_then_close(conn, 0);
}

static void send_then_abort(px_conn_t *conn) { send_then_close(conn, 1); }

/* A server whose connections queue DRAIN_BYTES, then close (gently or by
 * an abort) at once, and a client with a small receive window. */
static void serve_drain(engine_fixture_t *f, conn_log_t *log,
                        const px_conn_callbacks_t *cbs, int backend)
{
    fill_pattern(drain_data, DRAIN_BYTES, 0, 3);
    *f = (engine_fixture_t){
        .callbacks = cbs, .conn_data = log, .rcvbuf = 32 << 10};
    engine_fixture_start(f, backend);
}

static const px_conn_callbacks_t drain_callbacks = {
    .on_open = send_then_close_gently,
    .on_close = conn_log_close,
};
static const px_conn_callbacks_t abort_callbacks = {
    .on_open = send_then_abort,
    .on_close = conn_log_close,
};

static void test_close_after_drain(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f;
    serve_drain(&f, &log, &drain_callbacks, backend);
    conn_log_wait(&log, 0);
    sleep_ms(200);
    /* Closing waits for the queue: on_close has not run yet. */
    ASSERT_INT_EQ(atomic_load(&log.closed), 0);
    static char got[DRAIN_BYTES];
    size_t n = client_recv_to_eof(f.fd, got, sizeof(got));
    ASSERT_UINT_EQ(n, DRAIN_BYTES);
    check_pattern(got, n, 0, 3);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.close_error), PX_ECLOSED);
    engine_fixture_stop(&f);
}

static void test_abort_drops_queue(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f;
    serve_drain(&f, &log, &abort_callbacks, backend);
    /* An abort does not wait for the peer. */
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.close_error), PX_ECLOSED);
    static char got[DRAIN_BYTES];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(f.fd, got + n, sizeof(got) - n, 0);
        if (r <= 0)
            break; /* EOF or a reset */
        n += (size_t)r;
    }
    ASSERT_UINT_CMP(n, <, DRAIN_BYTES);
    check_pattern(got, n, 0, 3);
    engine_fixture_stop(&f);
}

/* ---- the send buffer bound and I/O hogs -------------------------------- */

#define BOUND_BYTES (1u << 20)
#define HOG_BYTES (256u << 10)
#define BOUND_CHUNK (16u << 10)

static void test_send_buffer_bound(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    px_loop_options_t opts;
    test_loop_options(&opts, backend);
    opts.max_send_buffer = BOUND_BYTES;
    opts.hog_threshold = HOG_BYTES;
    /* The fixture's client is the hog: it reads only at the end. */
    engine_fixture_t f = {.callbacks = &echo_callbacks,
                          .conn_data = &log,
                          .loop_options = &opts,
                          .rcvbuf = 16 << 10};
    engine_fixture_start(&f, backend);
    px_conn_t *hog = conn_log_wait(&log, 0);

    /* The hog never reads: sends are refused once the queue is full. */
    static char chunk[BOUND_CHUNK];
    uint64_t sent = 0;
    int rc;
    for (;;) {
        fill_pattern(chunk, BOUND_CHUNK, sent, 4);
        struct iovec iov = {chunk, BOUND_CHUNK};
        rc = px_conn_send(hog, &iov, 1, NULL);
        if (rc != 0)
            break;
        sent += BOUND_CHUNK;
        ASSERT_UINT_CMP(sent, <, 64u << 20); /* the bound must hold */
    }
    ASSERT_INT_EQ(rc, PX_ESENDBUF);
    size_t queued = px_conn_queued_bytes(hog);
    ASSERT_UINT_CMP(queued, <=, BOUND_BYTES);
    ASSERT_UINT_CMP(queued + BOUND_CHUNK, >, BOUND_BYTES);
    px_stats_t st;
    px_loop_stats(f.loop, &st);
    ASSERT_UINT_EQ(st.io_hogs, 1);

    /* Another connection is served meanwhile. */
    int fd = client_connect(f.port);
    char msg[1000], back[1000];
    fill_pattern(msg, sizeof(msg), 0, 8);
    client_send_all(fd, msg, sizeof(msg));
    client_recv_exact(fd, back, sizeof(back));
    ASSERT_MEM_EQ(back, sizeof(back), msg, sizeof(msg));

    /* Once the hog reads, its queue drains and it is no hog any more. */
    static char got[64u << 10];
    uint64_t received = 0;
    while (received < sent) {
        size_t want =
            sent - received < sizeof(got) ? sent - received : sizeof(got);
        client_recv_exact(f.fd, got, want);
        check_pattern(got, want, received, 4);
        received += want;
    }
    WAIT_FOR(px_conn_queued_bytes(hog) == 0, WAIT_MS);
    WAIT_FOR((px_loop_stats(f.loop, &st), st.io_hogs == 0), WAIT_MS);
    struct iovec iov = {chunk, BOUND_CHUNK};
    ASSERT_PX_OK(px_conn_send(hog, &iov, 1, NULL));

    close(fd);
    engine_fixture_stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_foreign_thread_send_order),
    ENGINE_CASE(test_vectored_send),
    ENGINE_CASE(test_sendfile),
    ENGINE_CASE(test_close_after_drain),
    ENGINE_CASE(test_abort_drops_queue),
    ENGINE_CASE(test_send_buffer_bound),
};

TEST_MAIN(cases)
