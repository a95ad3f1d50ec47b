/*
 * server.c - the HTTP server's connections: input buffering, the drive
 * loop that parses heads, reads bodies and runs the request callback, and
 * the continuation after a late response. The server object, its timeout
 * sweep and each connection's deadlines are in lifetime.c.
 *
 * The fast path copies nothing: when a connection has no buffered input,
 * the drive loop parses the engine's bytes where they are, runs the
 * callbacks of every complete request in them, and copies only an
 * unfinished request into the connection's buffer. Responses given inside
 * the callbacks are gathered in hc->out and handed to the engine with one
 * send when the pass ends, so a pipelined batch costs one write.
 *
 * The connection's lifecycle and its locking are described in
 * server_internal.h.
 */
#include "server_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Unread responses below which a connection that stopped for a full
 * output (respond.c's OUTPUT_FULL_BYTES) carries on. */
#define OUTPUT_RESUME_BYTES (1u << 20)
/* Buffer capacity kept across requests; larger buffers are freed. */
#define KEEP_IN_BYTES (16u << 10)

/* ---- the drive loop ----------------------------------------------------- */

/* The input one pass of the drive loop works on: the engine's bytes, valid
 * for the on_data callback only, or hc->in. */
typedef struct {
    const char *base;
    size_t len;
    bool owned;      /* base is hc->in.data */
    size_t pos;      /* the current request's first byte */
    bool head_valid; /* head and headers were parsed from base */
    px_http_request_t head;
    px_http_header_t headers[PX_HTTP_SERVER_MAX_HEADERS];
} pass_t;

static void fail(px_http_conn_t *hc, int status)
{
    px__http_put_error(hc, status);
    hc->state = PX__HC_LINGER;
}

/* Points the pass at hc->in, with what arrived meanwhile appended. */
static void sync_owned(px_http_conn_t *hc, pass_t *p)
{
    if (hc->pending.len > 0) {
        if (px__bytebuf_append(&hc->in, hc->pending.data, hc->pending.len) < 0)
            fail(hc, 500);
        px__bytebuf_reset(&hc->pending, KEEP_IN_BYTES);
    }
    p->base = hc->in.data;
    p->len = hc->in.len;
}

/* Moves the engine's unparsed bytes into hc->in and switches the pass to
 * it (the chunked decoder writes in place; a body may span callbacks). */
static int take_input(px_http_conn_t *hc, pass_t *p)
{
    if (p->owned)
        return 0;
    int rc = px__bytebuf_append(&hc->in, p->base + p->pos, p->len - p->pos);
    if (rc < 0)
        return rc;
    p->owned = true;
    p->pos = 0;
    p->head_valid = false;
    p->base = hc->in.data;
    p->len = hc->in.len;
    return 0;
}

/* Parses the next head; false when there is none yet or it is bad. */
static bool read_head(px_http_conn_t *hc, pass_t *p)
{
    const px_http_options_t *limits = &hc->server->limits;
    size_t avail = p->len - p->pos;
    if (avail == 0)
        return false;
    ssize_t rc =
        px_http_parse_request(p->base + p->pos, avail, hc->last_len, limits,
                              &p->head, p->headers, limits->max_headers);
    if (rc == PX_HTTP_INCOMPLETE) {
        hc->last_len = avail;
        return false;
    }
    if (rc < 0) {
        fail(hc, px_http_error_status(rc));
        return false;
    }
    hc->last_len = 0;
    p->head_valid = true;
    px__http_obs_begin(hc, &p->head);
    int frc = px_http_request_framing(&p->head, limits, &hc->framing);
    if (frc < 0) {
        fail(hc, px_http_error_status(frc));
        return false;
    }
    /* With max_body_size unlimited, a length may not fit in memory. */
    if (hc->framing.body == PX_HTTP_BODY_LENGTH &&
        hc->framing.content_length > SIZE_MAX / 2) {
        fail(hc, 413);
        return false;
    }
    hc->head_len = (size_t)rc;
    hc->raw_len = (size_t)rc;
    hc->body_len = 0;
    hc->body_received = 0;
    hc->body_start_ns = 0;
    memset(&hc->chunked, 0, sizeof(hc->chunked));
    hc->continue_sent = false;
    hc->body_error = 0;
    hc->state = PX__HC_BODY;
    return true;
}

/* RFC 9110 §10.1.1: a client that expects 100-continue waits for it before
 * sending the body; send it when the body is wanted and none came yet. */
void px__http_send_continue(px_http_conn_t *hc, bool body_started)
{
    if (hc->framing.expect_continue && !hc->continue_sent && !body_started) {
        px__http_put_continue(hc);
        hc->continue_sent = true;
    }
}

/* A declared body that did not come with its head waits in hc->in, in a
 * buffer of exactly the request's size (a doubling one could reach twice
 * that), counted in the body memory: 503 past its bound. 0, or -1 after an
 * error was answered. */
static int hold_declared_body(px_http_conn_t *hc, pass_t *p, size_t need)
{
    if (p->owned && p->pos > 0) {
        /* The requests before this one were served: the buffer is to hold
         * this one alone. */
        px__bytebuf_consume(&hc->in, p->pos);
        p->pos = 0;
        p->head_valid = false;
        p->base = hc->in.data;
        p->len = hc->in.len;
    }
    if (!px__http_body_charge(hc, hc->in.cap > need ? hc->in.cap : need)) {
        fail(hc, 503);
        return -1;
    }
    /* A pass over the engine's bytes has hc->in empty: finish_pass copies
     * the request into the room reserved here. */
    size_t held = p->owned ? hc->in.len : 0;
    if (px__bytebuf_reserve_exact(&hc->in, need - held) < 0) {
        fail(hc, 500);
        return -1;
    }
    if (p->owned)
        p->base = hc->in.data;
    return 0;
}

/* Reads the body: 1 when complete, 0 when more is needed, -1 after an
 * error was answered. */
static int read_body(px_http_conn_t *hc, pass_t *p)
{
    switch (hc->framing.body) {
    case PX_HTTP_BODY_NONE:
        return 1;
    case PX_HTTP_BODY_LENGTH: {
        /* read_head refused lengths that do not fit. */
        size_t need = hc->head_len + (size_t)hc->framing.content_length;
        size_t avail = p->len - p->pos;
        if (avail >= need) {
            hc->body_len = (size_t)hc->framing.content_length;
            hc->raw_len = need;
            return 1;
        }
        hc->body_received = avail - hc->head_len;
        if (hold_declared_body(hc, p, need) < 0)
            return -1;
        px__http_send_continue(hc, avail > hc->head_len);
        return 0;
    }
    case PX_HTTP_BODY_CHUNKED:
    default:
        break;
    }
    if (take_input(hc, p) < 0) {
        fail(hc, 500);
        return -1;
    }
    size_t avail = p->len - p->pos;
    bool started = avail > hc->head_len;
    if (avail > hc->raw_len) {
        char *request = hc->in.data + p->pos;
        size_t decoded = 0;
        ssize_t rc = px_http_decode_chunked(&hc->chunked, &hc->server->limits,
                                            request + hc->raw_len,
                                            avail - hc->raw_len, &decoded);
        if (rc < 0 && rc != PX_HTTP_INCOMPLETE) {
            fail(hc, px_http_error_status(rc));
            return -1;
        }
        /* Decoded data lands where its input began: move it down to
         * extend the body that follows the head. */
        memmove(request + hc->head_len + hc->body_len, request + hc->raw_len,
                decoded);
        hc->body_len += decoded;
        if (rc >= 0) {
            hc->raw_len += (size_t)rc;
            return 1;
        }
        hc->raw_len = avail;
    }
    /* A chunked body's size is known at its end only: its buffer is
     * counted as it grows. */
    hc->body_received = avail - hc->head_len;
    if (!px__http_body_charge(hc, hc->in.cap)) {
        fail(hc, 503);
        return -1;
    }
    px__http_send_continue(hc, started);
    return 0;
}

/* stream_request_body: a body that is not all here reaches the handler
 * while it arrives (reqbody.c), fed first what came with the head; a
 * Content-Length body that is all here is dispatched as it is, from the
 * input. 1 when the request is to be dispatched, -1 after an error was
 * answered. */
static int start_streamed_body(px_http_conn_t *hc, pass_t *p)
{
    size_t avail = p->len - p->pos;
    if (hc->framing.body == PX_HTTP_BODY_LENGTH &&
        avail - hc->head_len >= hc->framing.content_length)
        return read_body(hc, p);
    hc->body_streamed = true;
    hc->body_open = true;
    hc->body_full = false;
    hc->body_pos = 0;
    hc->body.len = 0;
    hc->body_left = hc->framing.content_length;
    hc->body_start_ns = px_now_ns();
    size_t used = 0;
    int rc = px__http_body_feed(hc, p->base + p->pos + hc->head_len,
                                avail - hc->head_len, &used);
    if (rc < 0) {
        /* Before the handler: answered as for a buffered body. */
        int status = px_http_error_status(rc);
        px__http_body_reset(hc);
        fail(hc, status != 0 ? status : 500);
        return -1;
    }
    hc->raw_len = hc->head_len + used;
    /* A chunked body that was all here is dispatched whole, from
     * hc->body. */
    hc->body_streamed = hc->body_open;
    return 1;
}

/* Splits the target into path and query (RFC 9112 §3.2). */
static void split_target(px_http_server_request_t *req)
{
    const char *t = req->head.target, *end = t + req->head.target_len;
    const char *path = t;
    if (t[0] != '/' && !(req->head.target_len == 1 && t[0] == '*')) {
        /* absolute-form: scheme "://" authority [path] ["?" query] */
        const char *p = memchr(t, ':', req->head.target_len);
        p = p ? p + 1 : t;
        if (end - p >= 2 && p[0] == '/' && p[1] == '/')
            p += 2;
        while (p < end && *p != '/' && *p != '?')
            p++;
        path = p;
    }
    const char *q = memchr(path, '?', (size_t)(end - path));
    const char *path_end = q ? q : end;
    if (path_end == path) {
        req->path = "/";
        req->path_len = 1;
    } else {
        req->path = path;
        req->path_len = (size_t)(path_end - path);
    }
    req->query = q ? q + 1 : "";
    req->query_len = q ? (size_t)(end - q - 1) : 0;
}

/* The methods the parser implements: every other one is answered 501
 * (parser.c's classify_method; test_http_hardening checks the two agree). */
#define IMPLEMENTED_METHODS                                                    \
    "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"

/* "OPTIONS *" asks about the server, not about a resource (RFC 9110
 * §9.3.7), so the server answers it rather than the request callback,
 * whose routes name resources: 200, Allow and no content. */
static void answer_options_asterisk(px_http_exchange_t *ex,
                                    const px_http_server_request_t *req)
{
    (void)req;
    static const px_http_header_t allow = {"Allow", 5, IMPLEMENTED_METHODS,
                                           sizeof(IMPLEMENTED_METHODS) - 1};
    int rc = px_http_respond(ex, 200, &allow, 1, NULL, 0);
    /* Only a failed allocation leaves the exchange open. */
    if (rc != 0 && rc != PX_ECLOSED)
        px_http_abort(ex);
}

static bool is_options_asterisk(const px_http_request_t *head)
{
    /* The parser accepts the asterisk form with OPTIONS alone (400). */
    return head->method_id == PX_HTTP_METHOD_OPTIONS && head->target_len == 1 &&
           head->target[0] == '*';
}

/* Runs the request callback for the complete request at p->pos, without
 * hc->lock, and moves the pass past the request. */
static void dispatch(px_http_conn_t *hc, pass_t *p)
{
    px_http_server_t *s = hc->server;
    const char *start = p->base + p->pos;
    if (!p->head_valid) {
        /* The head was parsed in an earlier pass or another buffer; the
         * same bytes parse the same way. */
        ssize_t rc =
            px_http_parse_request(start, hc->head_len, 0, &s->limits, &p->head,
                                  p->headers, s->limits.max_headers);
        if (rc != (ssize_t)hc->head_len) {
            fail(hc, 500);
            return;
        }
    }
    px_http_server_request_t req;
    req.head = p->head;
    split_target(&req);
    req.body = start + hc->head_len;
    req.body_len = hc->body_len;
    req.body_streamed = hc->body_streamed;
    /* A streamed server's chunked bodies are decoded into hc->body. */
    bool decoded_apart =
        s->stream_request_body && hc->framing.body == PX_HTTP_BODY_CHUNKED;
    if (decoded_apart) {
        req.body = hc->body_streamed ? "" : hc->body.data;
        req.body_len = hc->body_streamed ? 0 : hc->body.len;
    }
    req.keep_alive = hc->framing.keep_alive;
    req.raw_head = p->head.method;
    req.raw_head_len = (size_t)(start + hc->head_len - p->head.method);

    px_http_exchange_t *ex = &hc->exchange;
    ex->hc = hc;
    ex->head_only = p->head.method_id == PX_HTTP_METHOD_HEAD;
    ex->keep_alive = hc->framing.keep_alive;
    ex->minor_version = p->head.minor_version;
    size_t request_len = hc->raw_len;
    hc->state = PX__HC_HANDLING;
    hc->unanswered = true;
    px__http_set_no_wait(hc);
    px__http_conn_ref(hc); /* the exchange's */

    px_http_request_cb on_request =
        is_options_asterisk(&p->head) ? answer_options_asterisk : s->on_request;
    pthread_mutex_unlock(&hc->lock);
    on_request(ex, &req);
    pthread_mutex_lock(&hc->lock);
    /* The request's bytes are consumed before this pass ends. */
    px__http_body_release(hc);
    if (decoded_apart && !req.body_streamed)
        px__http_body_reset(hc);

    p->pos += request_len;
    p->head_valid = false;
}

/* Parses and serves requests while complete ones are at hand; hc->lock
 * held, hc->driving set. */
static void drive(px_http_conn_t *hc, pass_t *p)
{
    for (;;) {
        if (p->owned)
            sync_owned(hc, p);
        if (hc->closed)
            return;
        /* The client does not read its responses: the next requests wait
         * (in hc->in) until it does, see resume_output. */
        if (hc->state == PX__HC_HEAD && atomic_load(&hc->output_full))
            return;
        if (hc->state == PX__HC_HEAD && !read_head(hc, p))
            return;
        if (hc->state != PX__HC_BODY)
            return;
        int rc = hc->server->stream_request_body &&
                         hc->framing.body != PX_HTTP_BODY_NONE
                     ? start_streamed_body(hc, p)
                     : read_body(hc, p);
        if (rc <= 0)
            return;
        dispatch(hc, p);
    }
}

/* Ends a pass: keeps unparsed input, sends what the pass produced, and
 * sets the next deadline; hc->lock held. */
static void finish_pass(px_http_conn_t *hc, pass_t *p)
{
    /* Bytes after an upgrade request came before its 101: no client may
     * send them (RFC 6455 §4.1), so they are dropped. */
    bool discard = hc->closed || hc->state == PX__HC_LINGER ||
                   hc->state == PX__HC_CLOSING || hc->state == PX__HC_UPGRADED;
    if (discard) {
        px__bytebuf_reset(&hc->in, KEEP_IN_BYTES);
        px__bytebuf_reset(&hc->pending, KEEP_IN_BYTES);
    } else if (p->owned) {
        px__bytebuf_consume(&hc->in, p->pos);
        /* A large request served, what follows it need not keep its
         * buffer (a body being received needs all of its own). */
        if (hc->state != PX__HC_BODY)
            px__bytebuf_trim(&hc->in, KEEP_IN_BYTES);
    } else if (px__bytebuf_append(&hc->in, p->base + p->pos, p->len - p->pos) <
               0) {
        fail(hc, 500);
    }
    if (hc->state != PX__HC_BODY)
        px__http_body_release(hc);
    px__http_flush(hc);
    if (hc->closed)
        return;
    if (hc->state == PX__HC_CLOSING)
        px__http_close_gracefully(hc);
    px__http_close_if_input_ended(hc);
    px__http_update_reading(hc);
    px__http_arm_wait(hc);
}

static void continue_work(void *arg)
{
    px_http_conn_t *hc = arg;
    pass_t p;
    pthread_mutex_lock(&hc->lock);
    hc->continuation_queued = false;
    if (!hc->closed && !hc->driving && hc->state == PX__HC_HEAD) {
        hc->driving = true;
        p.owned = true;
        p.pos = 0;
        p.head_valid = false;
        drive(hc, &p);
        finish_pass(hc, &p);
        hc->driving = false;
    } else if (!hc->driving) {
        px__http_close_if_input_ended(hc);
    }
    pthread_mutex_unlock(&hc->lock);
    px__http_conn_unref(hc);
}

static void continue_cancel(void *arg)
{
    px_http_conn_t *hc = arg;
    pthread_mutex_lock(&hc->lock);
    hc->continuation_queued = false;
    pthread_mutex_unlock(&hc->lock);
    px__http_conn_unref(hc);
}

/* Queues the parsing of buffered requests on the connection's worker, so
 * that its request callbacks all run where its other callbacks do (an
 * embedder's per-worker state, such as an interpreter, is found there);
 * hc->lock held, by a caller that holds a reference (so the failure's
 * unref is not the last). */
static void continue_later(px_http_conn_t *hc)
{
    if (hc->in.len == 0 || hc->continuation_queued)
        return;
    hc->continuation_queued = true;
    px__http_conn_ref(hc);
    if (px_submit_to(hc->server->loop, px_conn_worker(hc->conn), continue_work,
                     continue_cancel, hc) < 0) {
        /* The loop is stopping; it closes the connection. */
        hc->continuation_queued = false;
        px__http_conn_unref(hc);
    }
}

/* The sweep (server lock held, so hc is on the list and referenced): a
 * connection stopped by unread responses carries on once the client read
 * most of them. A thread driving it sees the flag cleared when its
 * callback returns. */
void px__http_resume_output(px_http_conn_t *hc)
{
    if (px_conn_queued_bytes(hc->conn) > OUTPUT_RESUME_BYTES)
        return;
    pthread_mutex_lock(&hc->lock);
    atomic_store(&hc->output_full, false);
    if (!hc->closed && !hc->driving && hc->state != PX__HC_CLOSING) {
        px__http_update_reading(hc);
        if (hc->state == PX__HC_HEAD)
            continue_later(hc);
        px__http_arm_wait(hc);
    }
    pthread_mutex_unlock(&hc->lock);
}

void px__http_after_response(px_http_conn_t *hc)
{
    hc->served = true;
    if (hc->driving)
        return; /* the driving thread continues when the callback returns */
    px__http_flush(hc);
    if (hc->closed)
        return;
    if (hc->state == PX__HC_CLOSING) {
        px__http_close_gracefully(hc);
        return;
    }
    px__http_update_reading(hc);
    /* Pipelined requests wait: parse them on a worker, not on the thread
     * that answered, which may be anyone's. */
    continue_later(hc);
    px__http_close_if_input_ended(hc);
    px__http_arm_wait(hc);
}

/* ---- connections -------------------------------------------------------- */

int px_http_conn_start(px_http_server_t *s, px_conn_t *conn, void *data,
                       px_http_conn_t **out)
{
    if (atomic_load(&s->closed))
        return PX_ECLOSED;
    conn_box_t *box = calloc(1, sizeof(*box));
    if (box == NULL)
        return -ENOMEM;
    box->magic = CONN_MAGIC;
    /* Responses are gathered into few writes already; Nagle would only
     * hold back the file part of a head-then-sendfile response until the
     * client's delayed ACK (40 ms). */
    int one = 1;
    setsockopt(px_conn_fd(conn), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    px_http_conn_t *hc = &box->conn;
    hc->server = s;
    atomic_fetch_add(&s->refs, 1);
    hc->conn = conn;
    px_conn_ref(conn);
    hc->data = data;
    atomic_init(&hc->refs, 1); /* the connection's */
    atomic_init(&hc->deadline_ns, 0);
    pthread_mutex_init(&hc->lock, NULL);
    hc->state = PX__HC_HEAD;
    pthread_mutex_lock(&hc->lock);
    px__http_arm_wait(hc);
    pthread_mutex_unlock(&hc->lock);

    pthread_mutex_lock(&s->lock);
    hc->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = hc;
    s->conns = hc;
    pthread_mutex_unlock(&s->lock);
    *out = hc;
    return 0;
}

/* Gives the open streamed body (being read, or discarded) its part of the
 * input; false when nothing is left for the requests after it. hc->lock
 * held; *told receives the reader's wait to tell. */
static bool feed_body(px_http_conn_t *hc, const char **data, size_t *len,
                      px__http_body_waiter_t *told)
{
    size_t used = 0;
    int rc = px__http_body_feed(hc, *data, *len, &used);
    if (rc < 0)
        px__http_body_fail(hc, rc);
    else if (!hc->body_open && hc->state == PX__HC_DISCARD)
        hc->state = PX__HC_HEAD; /* dropped to its end: serve the next */
    *data += used;
    *len -= used;
    *told = px__http_body_take_waiter(hc, false);
    px__http_update_reading(hc);
    px__http_arm_wait(hc);
    return rc == 0 && *len > 0;
}

void px_http_conn_input(px_http_conn_t *hc, const char *data, size_t len)
{
    struct px_ws_conn_s *ws = atomic_load(&hc->upgraded);
    if (ws != NULL) {
        px__ws_conn_input(ws, data, len);
        return;
    }
    px__http_body_waiter_t told = {NULL, NULL};
    pthread_mutex_lock(&hc->lock);
    if (hc->state == PX__HC_UPGRADED) { /* upgraded since the load above */
        pthread_mutex_unlock(&hc->lock);
        px__ws_conn_input(atomic_load(&hc->upgraded), data, len);
        return;
    }
    if (hc->closed || hc->state == PX__HC_LINGER ||
        hc->state == PX__HC_CLOSING) {
        pthread_mutex_unlock(&hc->lock);
        return;
    }
    if (hc->body_open && !feed_body(hc, &data, &len, &told)) {
        pthread_mutex_unlock(&hc->lock);
        px__http_body_tell(told);
        return;
    }
    if (hc->driving || hc->state == PX__HC_HANDLING) {
        /* A callback runs (its request points into hc->in) or a late
         * response is awaited: keep the bytes for later. */
        px__bytebuf_t *b = hc->driving ? &hc->pending : &hc->in;
        if (px__bytebuf_append(b, data, len) < 0) {
            hc->state = PX__HC_CLOSING;
            px_conn_close(hc->conn, 1);
        }
        px__http_update_reading(hc);
        pthread_mutex_unlock(&hc->lock);
        px__http_body_tell(told);
        return;
    }
    pass_t p;
    hc->driving = true;
    p.pos = 0;
    p.head_valid = false;
    if (hc->in.len == 0) {
        p.owned = false;
        p.base = data;
        p.len = len;
    } else {
        p.owned = true;
        if (px__bytebuf_append(&hc->in, data, len) < 0)
            fail(hc, 500);
    }
    drive(hc, &p);
    finish_pass(hc, &p);
    hc->driving = false;
    pthread_mutex_unlock(&hc->lock);
    px__http_body_tell(told);
}

void px_http_conn_eof(px_http_conn_t *hc)
{
    px__http_body_waiter_t told = {NULL, NULL};
    pthread_mutex_lock(&hc->lock);
    if (hc->state == PX__HC_UPGRADED) {
        pthread_mutex_unlock(&hc->lock);
        px__ws_conn_eof(atomic_load(&hc->upgraded));
        return;
    }
    hc->read_ended = true;
    if (hc->body_open) {
        /* The rest of the body will not come: its reader learns it (a
         * body being discarded just ends, with the connection). */
        hc->body_open = false;
        if (hc->state == PX__HC_HANDLING)
            hc->body_error = PX_ECLOSED;
        told = px__http_body_take_waiter(hc, false);
        px__http_update_reading(hc);
        px__http_arm_wait(hc);
    }
    if (!hc->driving)
        px__http_close_if_input_ended(
            hc); /* else the driving pass ends with it */
    pthread_mutex_unlock(&hc->lock);
    px__http_body_tell(told);
}

void px_http_conn_closed(px_http_conn_t *hc)
{
    px_http_server_t *s = hc->server;
    pthread_mutex_lock(&hc->lock);
    hc->closed = true;
    hc->state = PX__HC_CLOSING;
    px__http_set_no_wait(hc);
    if (hc->body_open) {
        hc->body_open = false;
        hc->body_error = PX_ECLOSED;
    }
    px__http_body_waiter_t told = px__http_body_take_waiter(hc, true);
    if (!hc->driving) {
        px__http_body_release(hc);
        px__bytebuf_free(&hc->in);
        px__bytebuf_free(&hc->pending);
        px__bytebuf_free(&hc->out);
    }
    pthread_mutex_unlock(&hc->lock);
    px__http_body_tell(told);
    px__http_stream_closed(hc);

    pthread_mutex_lock(&s->lock);
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        s->conns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
    pthread_mutex_unlock(&s->lock);
    struct px_ws_conn_s *ws = atomic_exchange(&hc->upgraded, NULL);
    if (ws != NULL)
        px__ws_conn_closed(ws);
    px__http_conn_unref(hc);
}

/* ---- listening ---------------------------------------------------------- */

static px_http_conn_t *conn_of(px_conn_t *conn)
{
    uint32_t *magic = px_conn_data(conn);
    if (magic == NULL || *magic != CONN_MAGIC)
        return NULL;
    return &((conn_box_t *)magic)->conn;
}

static void listener_on_open(px_conn_t *conn)
{
    uint32_t *magic = px_conn_data(conn);
    px_http_conn_t *hc = NULL;
    if (magic != NULL && *magic == SERVER_MAGIC &&
        px_http_conn_start(&((server_box_t *)magic)->server, conn, NULL, &hc) ==
            0) {
        px_conn_set_data(conn, &CONN_BOX(hc)->magic);
        return;
    }
    px_conn_set_data(conn, NULL);
    px_conn_close(conn, 1);
}

static void listener_on_data(px_conn_t *conn, const char *data, size_t len)
{
    px_http_conn_t *hc = conn_of(conn);
    if (hc != NULL)
        px_http_conn_input(hc, data, len);
}

static void listener_on_eof(px_conn_t *conn)
{
    px_http_conn_t *hc = conn_of(conn);
    if (hc != NULL)
        px_http_conn_eof(hc);
    else
        px_conn_close(conn, 0);
}

static void listener_on_close(px_conn_t *conn, int error)
{
    (void)error;
    px_http_conn_t *hc = conn_of(conn);
    px_conn_set_data(conn, NULL);
    if (hc != NULL)
        px_http_conn_closed(hc);
}

const px_conn_callbacks_t px_http_conn_callbacks = {
    .on_open = listener_on_open,
    .on_data = listener_on_data,
    .on_eof = listener_on_eof,
    .on_close = listener_on_close,
};

int px_http_listen(px_http_server_t *s, const char *host, int port, int backlog,
                   px_listener_t **listener)
{
    return px_listen(s->loop, host, port, backlog, &px_http_conn_callbacks,
                     &SERVER_BOX(s)->magic, listener);
}

/* ---- exchanges ---------------------------------------------------------- */

px_http_server_t *px_http_exchange_server(const px_http_exchange_t *ex)
{
    return ex->hc->server;
}

px_conn_t *px_http_exchange_conn(const px_http_exchange_t *ex)
{
    return ex->hc->conn;
}

void *px_http_exchange_conn_data(const px_http_exchange_t *ex)
{
    return ex->hc->data;
}

int px_http_exchange_head_only(const px_http_exchange_t *ex)
{
    return ex->head_only;
}
