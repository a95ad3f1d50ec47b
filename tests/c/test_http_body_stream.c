/*
 * test_http_body_stream.c - request bodies streamed to their reader
 * (stream_request_body) over real sockets: bodies that come whole with
 * their head, Content-Length and chunked bodies read as they arrive (with
 * a request pipelined behind), the window that bounds what is held for a
 * slow reader (and keeps body_timeout off it), "100 Continue" sent when the
 * body is first read, answers given before the body (kept alive with the
 * rest discarded, or closed), a chunked body passing max_body_size, a body
 * timeout, and a client that goes away mid-body. Each case runs under both
 * backends.
 *
 * Requests are read and answered by a thread per request (the request
 * callback must not wait for its body), except /whole and /early, answered
 * inside the callback.
 */
#include "http_fixture.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>

#define PATTERN_SEED 5
#define SEND_PIECE (64u << 10)

typedef struct {
    atomic_int streamed; /* the last request's body_streamed */
    atomic_int result;   /* what the reader ended with (/err) */
    atomic_int answered; /* what its late answer returned (/err) */
    atomic_size_t max_available;
    atomic_int threads; /* readers still running */
} test_state_t;

static test_state_t state;

/* One request handed to a reader thread. */
typedef struct {
    px_http_exchange_t *ex;
    char path[32];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool told;
} reader_t;

static void told(void *arg)
{
    reader_t *r = arg;
    pthread_mutex_lock(&r->lock);
    r->told = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* Reads up to len bytes, waiting for them: > 0, 0 at the end, or the
 * error that ended the body. */
static ssize_t read_waiting(reader_t *r, char *buf, size_t len)
{
    for (;;) {
        ssize_t avail = px_http_body_available(r->ex);
        size_t seen = atomic_load(&state.max_available);
        while (avail > 0 && (size_t)avail > seen &&
               !atomic_compare_exchange_weak(&state.max_available, &seen,
                                             (size_t)avail))
            ;
        ssize_t n = px_http_body_read(r->ex, buf, len);
        if (n != PX_HTTP_INCOMPLETE)
            return n;
        r->told = false;
        int rc = px_http_body_wait(r->ex, told, r);
        if (rc == 1)
            continue;
        ASSERT_PX_OK(rc);
        pthread_mutex_lock(&r->lock);
        while (!r->told)
            pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
    }
}

static bool path_is(const char *path, const char *want)
{
    return strcmp(path, want) == 0;
}

static void respond_text(px_http_exchange_t *ex, const char *text)
{
    ASSERT_PX_OK(px_http_respond(ex, 200, NULL, 0, text, strlen(text)));
}

/* /sum, /slow-sum: reads the body (the client's pattern), answers with
 * its length; /slow-sum stops for 600 ms after its first bytes. /echo,
 * /late-echo: answers with the body (at most 64 KiB); /late-echo reads
 * only after 200 ms. /err: reads until the body fails, then answers. */
static void *read_request(void *arg)
{
    reader_t *r = arg;
    static _Thread_local char buf[64u << 10];
    size_t total = 0;
    ssize_t n;
    bool slow = path_is(r->path, "/slow-sum");
    if (path_is(r->path, "/late-echo"))
        sleep_ms(200);
    if (path_is(r->path, "/sum") || slow) {
        while ((n = read_waiting(r, buf, sizeof(buf))) > 0) {
            check_pattern(buf, (size_t)n, total, PATTERN_SEED);
            total += (size_t)n;
            if (slow && total == (size_t)n)
                sleep_ms(600);
        }
        ASSERT_INT_EQ(n, 0);
        char text[32];
        snprintf(text, sizeof(text), "%zu", total);
        respond_text(r->ex, text);
    } else if (path_is(r->path, "/echo") || path_is(r->path, "/late-echo")) {
        while ((n = read_waiting(r, buf + total, sizeof(buf) - total)) > 0)
            total += (size_t)n;
        ASSERT_INT_EQ(n, 0);
        ASSERT_PX_OK(px_http_respond(r->ex, 200, NULL, 0, buf, total));
    } else {
        while ((n = read_waiting(r, buf, sizeof(buf))) > 0)
            total += (size_t)n;
        atomic_store(&state.result, (int)n);
        atomic_store(&state.answered,
                     px_http_respond(r->ex, 200, NULL, 0, "late", 4));
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r);
    atomic_fetch_sub(&state.threads, 1);
    return NULL;
}

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    atomic_store(&state.streamed, req->body_streamed);
    char path[32];
    snprintf(path, sizeof(path), "%.*s", (int)req->path_len, req->path);
    if (path_is(path, "/whole")) {
        ASSERT_INT_EQ(req->body_streamed, 0);
        ASSERT_INT_EQ(px_http_body_available(ex), PX_EBADSTATE);
        ASSERT_PX_OK(
            px_http_respond(ex, 200, NULL, 0, req->body, req->body_len));
        return;
    }
    if (path_is(path, "/early")) {
        respond_text(ex, "early");
        return;
    }
    reader_t *r = calloc(1, sizeof(*r));
    ASSERT_TRUE(r != NULL);
    r->ex = ex;
    memcpy(r->path, path, sizeof(path));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    atomic_fetch_add(&state.threads, 1);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ASSERT_INT_EQ(pthread_create(&tid, &attr, read_request, r), 0);
    pthread_attr_destroy(&attr);
}

static http_client_t *start(http_fixture_t *f, int backend,
                            px_http_server_options_t *o)
{
    memset(&state, 0, sizeof(state));
    o->on_request = on_request;
    o->stream_request_body = 1;
    return http_fixture_start(f, backend, o);
}

static void stop(http_fixture_t *f)
{
    WAIT_FOR(atomic_load(&state.threads) == 0, WAIT_MS);
    http_fixture_stop(f);
}

/* Sends a head for path with a Content-Length of len. */
static void send_length_head(http_client_t *c, const char *path, size_t len,
                             const char *extra)
{
    char head[256];
    snprintf(head, sizeof(head),
             "POST %s HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n",
             path, extra, len);
    http_client_send_str(c, head);
}

typedef struct {
    int fd;
    size_t total;
} sender_t;

/* Sends total bytes of the pattern in pieces. */
static void *send_pattern(void *arg)
{
    sender_t *s = arg;
    static _Thread_local char piece[SEND_PIECE];
    for (size_t sent = 0; sent < s->total;) {
        size_t n = s->total - sent < SEND_PIECE ? s->total - sent : SEND_PIECE;
        fill_pattern(piece, n, sent, PATTERN_SEED);
        client_send_all(s->fd, piece, n);
        sent += n;
    }
    return NULL;
}

static void expect_field(const http_response_t *r, const char *name,
                         const char *value)
{
    char got[128];
    ASSERT_TRUE(http_header(r, name, got, sizeof(got)));
    ASSERT_STR_EQ(got, value);
}

/* ---- the cases ---------------------------------------------------------- */

static void test_whole_bodies(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {0};
    http_client_t *c = start(&f, backend, &o);
    http_client_send_str(
        c, "POST /whole HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
           "POST /whole HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
           "\r\n3\r\nchu\r\n4\r\nnked\r\n0\r\n\r\n"
           "GET /whole HTTP/1.1\r\nHost: t\r\n\r\n");
    http_expect(c, 200, "hello");
    http_expect(c, 200, "chunked");
    http_expect(c, 200, "");
    ASSERT_INT_EQ(atomic_load(&state.streamed), 0);
    stop(&f);
}

static void test_streamed_length(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {.limits.max_body_size = 8u << 20};
    http_client_t *c = start(&f, backend, &o);
    sender_t s = {c->fd, 3u << 20};
    send_length_head(c, "/sum", s.total, "");
    pthread_t tid = start_thread(send_pattern, &s);
    http_expect(c, 200, "3145728");
    join_thread(tid);
    ASSERT_INT_EQ(atomic_load(&state.streamed), 1);
    /* The connection carries on. */
    http_client_send_str(c, "GET /whole HTTP/1.1\r\nHost: t\r\n\r\n");
    http_expect(c, 200, "");
    stop(&f);
}

static void test_streamed_chunked_then_pipelined(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {0};
    http_client_t *c = start(&f, backend, &o);
    http_client_send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n5\r\nhel");
    sleep_ms(20);
    http_client_send_str(c, "lo\r\n1;ext=1\r\n,");
    sleep_ms(20);
    http_client_send_str(c, "\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
                            "GET /whole HTTP/1.1\r\nHost: t\r\n\r\n");
    http_expect(c, 200, "hello, world");
    http_expect(c, 200, "");
    stop(&f);
}

static void test_window_bounds_memory(int backend)
{
    http_fixture_t f;
    /* A body timeout shorter than the reader's pause: the time the server
     * waits for its reader does not count. */
    px_http_server_options_t o = {.limits.max_body_size = 64u << 20,
                                  .body_timeout_ns = 200000000u};
    http_client_t *c = start(&f, backend, &o);
    sender_t s = {c->fd, 16u << 20};
    send_length_head(c, "/slow-sum", s.total, "");
    pthread_t tid = start_thread(send_pattern, &s);
    http_expect(c, 200, "16777216");
    join_thread(tid);
    /* The window, and what the engine delivered before the pause took
     * effect: its input buffer's throttle level (1 MiB), what io_uring had
     * received into the worker's buffers by then (at most 1 MiB more), and
     * once more the throttle level, filled while the first delivery was
     * being handled. Far below the 16 MiB sent. */
    ASSERT_UINT_CMP(atomic_load(&state.max_available), <=,
                    PX_HTTP_BODY_WINDOW + (4u << 20));
    stop(&f);
}

static void test_continue_sent_when_read(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {0};
    http_client_t *c = start(&f, backend, &o);
    send_length_head(c, "/late-echo", 5, "Expect: 100-continue\r\n");
    /* Not when the handler got the request: when it reads. */
    http_expect_silence(c, 100);
    char interim[26];
    client_recv_exact(c->fd, interim, sizeof(interim) - 1);
    interim[sizeof(interim) - 1] = '\0';
    ASSERT_STR_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    http_client_send_str(c, "hello");
    http_expect(c, 200, "hello");
    stop(&f);
}

/* Reads an early answer that closes the connection, then the close. */
static void expect_early_then_close(http_client_t *c)
{
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    expect_field(&r, "Connection", "close");
    http_response_free(&r);
    http_expect_eof(c, WAIT_MS);
    http_client_close(c);
}

static void test_answered_before_body(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {.limits.max_body_size = 8u << 20};
    http_client_t *c = start(&f, backend, &o);
    /* A short rest is read and dropped: the connection carries on. */
    send_length_head(c, "/early", 10, "");
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, 200);
    ASSERT_INT_EQ(http_header_count(&r, "Connection"), 0);
    http_response_free(&r);
    http_client_send_str(c, "0123456789GET /whole HTTP/1.1\r\nHost: t\r\n\r\n");
    http_expect(c, 200, "");
    /* A long one is not: "Connection: close", then the close. */
    send_length_head(c, "/early", 2u << 20, "");
    expect_early_then_close(c);
    /* Nor is a chunked one, or one the client waits to send. */
    http_client_open(c, f.port);
    http_client_send_str(c, "POST /early HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n");
    expect_early_then_close(c);
    http_client_open(c, f.port);
    send_length_head(c, "/early", 10, "Expect: 100-continue\r\n");
    expect_early_then_close(c);
    stop(&f);
}

/* The server answered status for the failed body; the reader learnt code,
 * and its own answer was dropped. */
static void expect_server_answer(http_fixture_t *f, int status, int code)
{
    http_client_t *c = &f->client;
    http_response_t r;
    http_read_response(c, &r, false);
    ASSERT_INT_EQ(r.status, status);
    expect_field(&r, "Connection", "close");
    http_response_free(&r);
    WAIT_FOR(atomic_load(&state.threads) == 0, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.result), code);
    ASSERT_INT_EQ(atomic_load(&state.answered), PX_ECLOSED);
    http_expect_eof(c, WAIT_MS);
    stop(f);
}

static void test_chunked_past_max_body_size(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {.limits.max_body_size = 1000};
    http_client_t *c = start(&f, backend, &o);
    char chunk[700];
    memset(chunk, 'x', sizeof(chunk));
    memcpy(chunk, "258\r\n", 5);
    memcpy(chunk + 5 + 600, "\r\n", 2);
    http_client_send_str(c, "POST /err HTTP/1.1\r\nHost: t\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n");
    http_client_send(c, chunk, 607);
    sleep_ms(20);
    http_client_send(c, chunk, 607);
    expect_server_answer(&f, 413, PX_HTTP_E_BODY_TOO_LARGE);
}

static void test_body_timeout(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {.body_timeout_ns = 200000000u};
    http_client_t *c = start(&f, backend, &o);
    send_length_head(c, "/err", 100, "");
    http_client_send_str(c, "0123456789");
    expect_server_answer(&f, 408, PX_HTTP_E_BODY_TIMEOUT);
}

static void test_client_gone_mid_body(int backend)
{
    http_fixture_t f;
    px_http_server_options_t o = {0};
    http_client_t *c = start(&f, backend, &o);
    /* Half-closed: the reader learns the body will not end, and its
     * answer still reaches the client before the close. */
    send_length_head(c, "/err", 100, "");
    http_client_send_str(c, "0123456789");
    shutdown(c->fd, SHUT_WR);
    http_expect(c, 200, "late");
    http_expect_eof(c, WAIT_MS);
    WAIT_FOR(atomic_load(&state.threads) == 0, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&state.result), PX_ECLOSED);
    http_client_close(c);
    /* Gone altogether: the same for the reader. */
    atomic_store(&state.result, 0);
    http_client_open(c, f.port);
    send_length_head(c, "/err", 100, "");
    http_client_send_str(c, "0123456789");
    sleep_ms(20);
    http_client_close(c);
    WAIT_FOR(atomic_load(&state.result) == PX_ECLOSED, WAIT_MS);
    stop(&f);
}

static const test_case_t tests[] = {
    ENGINE_CASE(test_whole_bodies),
    ENGINE_CASE(test_streamed_length),
    ENGINE_CASE(test_streamed_chunked_then_pipelined),
    ENGINE_CASE(test_window_bounds_memory),
    ENGINE_CASE(test_continue_sent_when_read),
    ENGINE_CASE(test_answered_before_body),
    ENGINE_CASE(test_chunked_past_max_body_size),
    ENGINE_CASE(test_body_timeout),
    ENGINE_CASE(test_client_gone_mid_body),
};

TEST_MAIN(tests)
