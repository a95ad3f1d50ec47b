/*
 * stream.c - streamed responses: a head first, then the body in pieces as
 * a producer makes them (chunked, a given length, or up to the close for
 * HTTP/1.0), with the backpressure that keeps a slow reader from making
 * the server hold a whole large body.
 *
 * A stream's life: px_http_stream_start queues the head and hangs the
 * stream on the exchange (ex->stream, under hc->lock); the connection then
 * stays in HANDLING, so pipelined requests wait, as for any late answer.
 * Each write copies its bytes, with their chunk framing, into one block
 * lent to the engine (px_conn_send_owned): the block is freed when the
 * engine wrote it, and the stream counts its bytes until then ("unsent").
 * Lending rather than px_conn_send keeps the count exact and lets the
 * engine tell us, through the block's release, when bytes left: that is
 * what on_drain is made of. px_http_stream_end queues the last chunk and
 * finishes the response as px_http_respond would; px_http_stream_abort
 * resets the connection.
 *
 * The struct is reference counted: the exchange holds one until end or
 * abort, each block in flight one, and each callback under way one, so
 * on_done (the owner's cue to free its state) runs after every other
 * callback. A release runs on the connection's worker in its dispatch
 * (where the owner's runtime is attached), or on the writer's thread when
 * the socket took the block at once; the latter never calls on_drain,
 * because want_drain is only raised by a write that found the stream full,
 * and that write clears it again if it then finds the stream drained.
 */
#include "server_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_HIGH_WATER (1u << 20)
#define DEFAULT_LOW_WATER (256u << 10)
/* "%zx\r\n" for any size_t. */
#define CHUNK_LINE_MAX (sizeof(size_t) * 2 + 2)

struct px__http_stream_s {
    atomic_int refs;
    atomic_size_t unsent;   /* bytes lent to the engine, not written yet */
    atomic_bool want_drain; /* a write found the stream full */
    size_t high_water;
    size_t low_water;
    px_http_stream_cb on_drain;
    px_http_stream_cb on_close;
    px_http_stream_cb on_done;
    void *arg;
    /* Guarded by hc->lock. */
    bool chunked;       /* frame writes as chunks */
    bool discard;       /* a HEAD request: the body is not sent */
    bool has_length;    /* a content length was given */
    bool keep;          /* the connection is kept after the stream */
    bool close_told;    /* on_close ran (or runs) */
    bool broken;        /* a send failed: the connection is closing */
    uint64_t remaining; /* of the content length */
};

/* One write's bytes, lent to the engine until written. */
typedef struct {
    px__http_stream_t *stream;
    size_t len;
    char data[];
} block_t;

static void stream_unref(px__http_stream_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    if (s->on_done != NULL)
        s->on_done(s->arg);
    free(s);
}

static void block_release(void *arg)
{
    block_t *b = arg;
    px__http_stream_t *s = b->stream;
    size_t left = atomic_fetch_sub(&s->unsent, b->len) - b->len;
    free(b);
    if (left <= s->low_water && atomic_exchange(&s->want_drain, false) &&
        s->on_drain != NULL)
        s->on_drain(s->arg);
    stream_unref(s);
}

int px_http_stream_start(px_http_exchange_t *ex, int status,
                         const px_http_header_t *headers, size_t num_headers,
                         uint64_t content_length,
                         const px_http_stream_options_t *opts)
{
    if (ex == NULL || opts == NULL)
        return -EINVAL;
    if (status < 200 || status > 599)
        return PX_HTTP_E_RESPONSE_STATUS;
    /* 204 and 304 have no content (RFC 9110 §15.3.5, §15.4.5). */
    if (status == 204 || status == 304)
        return PX_HTTP_E_RESPONSE_FRAMING;
    px__http_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    atomic_init(&s->refs, 1); /* the exchange's */
    atomic_init(&s->unsent, 0);
    atomic_init(&s->want_drain, false);
    s->high_water = opts->high_water ? opts->high_water : DEFAULT_HIGH_WATER;
    s->low_water = opts->low_water ? opts->low_water : DEFAULT_LOW_WATER;
    if (s->low_water > s->high_water)
        s->low_water = s->high_water;
    s->on_drain = opts->on_drain;
    s->on_close = opts->on_close;
    s->on_done = opts->on_done;
    s->arg = opts->arg;
    s->discard = ex->head_only;
    s->has_length = content_length != PX_HTTP_STREAM_CHUNKED;
    s->remaining = s->has_length ? content_length : 0;

    /* HTTP/1.0 cannot read chunks: its body ends with the connection (a
     * HEAD response has none, so that connection may stay). */
    px_http_body_t body = PX_HTTP_BODY_LENGTH;
    bool keep = true;
    if (!s->has_length && ex->minor_version >= 1) {
        body = PX_HTTP_BODY_CHUNKED;
        s->chunked = !s->discard;
    } else if (!s->has_length) {
        body = PX_HTTP_BODY_NONE;
        keep = s->discard;
    }

    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    if (!hc->unanswered) {
        pthread_mutex_unlock(&hc->lock);
        free(s);
        return PX_EBADSTATE;
    }
    if (px__http_exchange_lost(hc)) {
        hc->unanswered = false;
        px__http_obs_end(hc, status, 0);
        px__http_body_waiter_t told = px__http_body_answered(hc);
        pthread_mutex_unlock(&hc->lock);
        free(s);
        px__http_body_tell(told);
        px__http_conn_unref(hc); /* the exchange's */
        return PX_ECLOSED;
    }
    int rc = px__http_put_answer_head(hc, ex, status, headers, num_headers,
                                      body, content_length, keep, &s->keep);
    if (rc < 0) {
        pthread_mutex_unlock(&hc->lock);
        free(s);
        return rc;
    }
    hc->unanswered = false;
    ex->stream = s;
    hc->obs.status = status;
    /* The head leaves now, with the responses gathered before it: a
     * stream's first bytes may be long in coming. A failure closes the
     * connection; on_close tells the owner. */
    px__http_flush(hc);
    pthread_mutex_unlock(&hc->lock);
    return 0;
}

/* Whether the stream is full after a write: raises want_drain, and lowers
 * it again when the stream drained meanwhile (then no on_drain runs). */
static int check_full(px__http_stream_t *s)
{
    if (atomic_load(&s->unsent) <= s->high_water)
        return 0;
    atomic_store(&s->want_drain, true);
    if (atomic_load(&s->unsent) <= s->low_water &&
        atomic_exchange(&s->want_drain, false))
        return 0;
    return PX_HTTP_STREAM_FULL;
}

/* A block holding data with its chunk framing, or NULL. */
static block_t *make_block(px__http_stream_t *s, const void *data, size_t len)
{
    char line[CHUNK_LINE_MAX + 1];
    size_t line_len = 0;
    if (s->chunked)
        line_len = (size_t)snprintf(line, sizeof(line), "%zx\r\n", len);
    size_t total = line_len + len + (s->chunked ? 2 : 0);
    block_t *b = malloc(sizeof(*b) + total);
    if (b == NULL)
        return NULL;
    b->stream = s;
    b->len = total;
    memcpy(b->data, line, line_len);
    memcpy(b->data + line_len, data, len);
    if (s->chunked)
        memcpy(b->data + line_len + len, "\r\n", 2);
    return b;
}

int px_http_stream_write(px_http_exchange_t *ex, const void *data, size_t len)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    px__http_stream_t *s = ex->stream;
    if (s == NULL) {
        pthread_mutex_unlock(&hc->lock);
        return PX_EBADSTATE;
    }
    if (hc->closed || s->broken) {
        pthread_mutex_unlock(&hc->lock);
        return PX_ECLOSED;
    }
    if (s->has_length) {
        if (len > s->remaining) {
            pthread_mutex_unlock(&hc->lock);
            return PX_HTTP_E_RESPONSE_FRAMING;
        }
        s->remaining -= len;
    }
    /* A write made while the stream is full is a producer that did not
     * wait: its earlier notice is void (see the top of the file). */
    atomic_store(&s->want_drain, false);
    if (s->discard || len == 0) {
        pthread_mutex_unlock(&hc->lock);
        return 0;
    }
    hc->obs.bytes += len;
    block_t *b = make_block(s, data, len);
    int rc = b == NULL ? -ENOMEM : px__http_flush(hc);
    if (rc < 0) {
        s->broken = rc != -ENOMEM;
        pthread_mutex_unlock(&hc->lock);
        free(b);
        return rc == -ENOMEM ? rc : PX_ECLOSED;
    }
    atomic_fetch_add(&s->unsent, b->len);
    atomic_fetch_add(&s->refs, 1); /* the block's */
    /* Under the lock, so that blocks and the last chunk keep their order
     * whoever writes; the release cannot call on_drain here (see above). */
    rc = px_conn_send_owned(hc->conn, NULL, b->data, b->len, block_release, b,
                            NULL);
    if (rc < 0) {
        s->broken = true;
        hc->state = PX__HC_CLOSING;
        if (rc != PX_ECLOSED)
            px_conn_close(hc->conn, 1);
        pthread_mutex_unlock(&hc->lock);
        return PX_ECLOSED;
    }
    pthread_mutex_unlock(&hc->lock);
    return check_full(s);
}

size_t px_http_stream_unsent(px_http_exchange_t *ex)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    size_t unsent = ex->stream ? atomic_load(&ex->stream->unsent) : 0;
    pthread_mutex_unlock(&hc->lock);
    return unsent;
}

/* Takes the stream off the exchange; hc->lock held. */
static px__http_stream_t *detach(px_http_exchange_t *ex)
{
    px__http_stream_t *s = ex->stream;
    if (s != NULL) {
        ex->stream = NULL;
        atomic_store(&s->want_drain, false);
    }
    return s;
}

int px_http_stream_end(px_http_exchange_t *ex)
{
    static const char last_chunk[] = "0\r\n\r\n";
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    px__http_stream_t *s = detach(ex);
    if (s == NULL) {
        pthread_mutex_unlock(&hc->lock);
        return PX_EBADSTATE;
    }
    px__http_body_waiter_t told;
    int rc = 0;
    px__http_obs_end(hc, hc->obs.status, hc->obs.bytes);
    if (hc->closed || s->broken || hc->state == PX__HC_CLOSING) {
        rc = PX_ECLOSED;
        told = px__http_body_answered(hc);
    } else if (s->has_length && s->remaining > 0 && !s->discard) {
        /* The client would wait for the missing bytes, or read the next
         * response as them. */
        rc = PX_HTTP_E_RESPONSE_FRAMING;
        hc->state = PX__HC_CLOSING;
        px_conn_close(hc->conn, 1);
        told = px__http_body_answered(hc);
    } else {
        if (s->chunked && px__bytebuf_append(&hc->out, last_chunk,
                                             sizeof(last_chunk) - 1) < 0)
            s->keep = false; /* unterminated: only closing ends it */
        hc->state = s->keep ? PX__HC_HEAD : PX__HC_CLOSING;
        told = px__http_body_answered(hc);
        px__http_after_response(hc);
    }
    pthread_mutex_unlock(&hc->lock);
    px__http_body_tell(told);
    px__http_conn_unref(hc); /* the exchange's */
    stream_unref(s);
    return rc;
}

void px_http_stream_abort(px_http_exchange_t *ex)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    px__http_stream_t *s = detach(ex);
    if (s == NULL) {
        pthread_mutex_unlock(&hc->lock);
        return;
    }
    hc->state = PX__HC_CLOSING;
    if (!hc->closed)
        px_conn_close(hc->conn, 1);
    px__http_obs_end(hc, hc->obs.status, hc->obs.bytes);
    px__http_body_waiter_t told = px__http_body_answered(hc);
    pthread_mutex_unlock(&hc->lock);
    px__http_body_tell(told);
    px__http_conn_unref(hc); /* the exchange's */
    stream_unref(s);
}

void px__http_stream_closed(px_http_conn_t *hc)
{
    pthread_mutex_lock(&hc->lock);
    px__http_stream_t *s = hc->exchange.stream;
    if (s == NULL || s->close_told) {
        pthread_mutex_unlock(&hc->lock);
        return;
    }
    s->close_told = true;
    atomic_fetch_add(&s->refs, 1); /* the callback's */
    pthread_mutex_unlock(&hc->lock);
    atomic_store(&s->want_drain, false);
    if (s->on_close != NULL)
        s->on_close(s->arg);
    stream_unref(s);
}
