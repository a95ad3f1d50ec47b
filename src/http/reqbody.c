/*
 * reqbody.c - request bodies streamed to their reader (a server made with
 * stream_request_body): the window of received bytes between the socket
 * and the reader, its backpressure, the reader's side (available, read,
 * wait), and what becomes of a body that ends early or is answered before
 * its end.
 *
 * A streamed body's life, all of it under hc->lock: server.c's dispatch
 * feeds it what came with the head and sets body_open; from then on every
 * input goes through px__http_body_feed first, decoded (chunked) into
 * hc->body, and the reader copies out of hc->body from body_pos. The body
 * ends when its last byte (a chunked body: its last chunk and trailers) was
 * fed, or with an error (body_error); either way body_open is cleared, and
 * the reader gets every byte received before it learns of the end. When
 * the exchange is done, what was not read is dropped, and what is still to
 * arrive is dropped as it comes (DISCARD) or the connection closes (see
 * px__http_body_allows_keep).
 *
 * The reader's wait (px_http_body_wait) is one callback, told exactly once:
 * by whoever gives the reader something to read (input, the end, an
 * error), by the exchange's end, by the connection's close, or, after a
 * body timeout found by the sweep, by a work item on the connection's
 * worker. It is taken out under the lock and told after the lock is
 * released, since the reader takes its own locks there.
 */
#include "server_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Unread bytes at which reading resumes once the window was full. */
#define BODY_RESUME (PX_HTTP_BODY_WINDOW / 4)
/* Buffer capacity kept between bodies; larger buffers are freed. */
#define KEEP_BODY_BYTES (64u << 10)

static size_t unread(const px_http_conn_t *hc)
{
    return hc->body.len - hc->body_pos;
}

bool px__http_body_window_full(const px_http_conn_t *hc)
{
    if (!hc->body_open || hc->state != PX__HC_HANDLING)
        return false;
    size_t n = unread(hc);
    return hc->body_full ? n > BODY_RESUME : n >= PX_HTTP_BODY_WINDOW;
}

/* Ends the body with code (its error); returns code. */
static int end_with(px_http_conn_t *hc, int code)
{
    hc->body_error = code;
    hc->body_open = false;
    return code;
}

/* Room for len more bytes after the unread ones, which move down first
 * when the bytes already read take half of the buffer or more. */
static int make_room(px_http_conn_t *hc, size_t len)
{
    if (hc->body_pos > 0 && hc->body_pos >= hc->body.len / 2) {
        px__bytebuf_consume(&hc->body, hc->body_pos);
        hc->body_pos = 0;
    }
    return px__bytebuf_reserve(&hc->body, len);
}

int px__http_body_feed(px_http_conn_t *hc, const char *data, size_t len,
                       size_t *used)
{
    /* Once answered (DISCARD), the bytes are counted and dropped. */
    bool keep = hc->state != PX__HC_DISCARD;
    *used = 0;
    if (hc->framing.body == PX_HTTP_BODY_LENGTH) {
        size_t n = len < hc->body_left ? len : (size_t)hc->body_left;
        if (keep && n > 0) {
            if (make_room(hc, n) < 0)
                return end_with(hc, -ENOMEM);
            memcpy(hc->body.data + hc->body.len, data, n);
            hc->body.len += n;
        }
        hc->body_left -= n;
        hc->body_received += n;
        *used = n;
        if (hc->body_left == 0)
            hc->body_open = false;
        return 0;
    }
    /* Chunked: decoded in place, in the room after the unread bytes. */
    if (len == 0)
        return 0;
    if (make_room(hc, len) < 0)
        return end_with(hc, -ENOMEM);
    char *at = hc->body.data + hc->body.len;
    memcpy(at, data, len);
    size_t decoded = 0;
    ssize_t rc = px_http_decode_chunked(&hc->chunked, &hc->server->limits, at,
                                        len, &decoded);
    *used = rc >= 0 ? (size_t)rc : len;
    if (rc < 0 && rc != PX_HTTP_INCOMPLETE)
        return end_with(hc, (int)rc);
    if (keep)
        hc->body.len += decoded;
    hc->body_received += *used;
    if (rc >= 0)
        hc->body_open = false;
    return 0;
}

void px__http_body_fail(px_http_conn_t *hc, int code)
{
    end_with(hc, code);
    if (hc->state == PX__HC_HANDLING && hc->unanswered &&
        hc->exchange.stream == NULL) {
        /* Nothing was answered: the server answers, as it would have for
         * a buffered body, and discards what the client still sends for
         * a while, so that it reads the answer rather than a reset. */
        int status = px_http_error_status(code);
        px__http_put_error(hc, status != 0 ? status : 500);
        hc->state = PX__HC_LINGER;
        if (!hc->driving)
            px__http_flush(hc);
    } else if (hc->state == PX__HC_HANDLING) {
        /* A response is under way: it cannot end well. */
        hc->state = PX__HC_CLOSING;
        px_conn_close(hc->conn, 1);
    } else {
        px__http_close_gracefully(hc);
    }
}

bool px__http_body_open_allows_keep(const px_http_conn_t *hc)
{
    /* A client still waiting for 100 Continue may or may not send its
     * body now: nobody can tell where its next request starts. */
    if (hc->framing.expect_continue && !hc->continue_sent &&
        hc->body_received == 0)
        return false;
    return hc->framing.body == PX_HTTP_BODY_LENGTH &&
           hc->body_left <= PX_HTTP_BODY_DISCARD_MAX;
}

px__http_body_waiter_t px__http_body_take_waiter(px_http_conn_t *hc, bool force)
{
    px__http_body_waiter_t w = {NULL, NULL};
    if (hc->body_cb == NULL ||
        (!force && hc->body_open && unread(hc) == 0 && hc->body_error == 0))
        return w;
    w.cb = hc->body_cb;
    w.arg = hc->body_arg;
    hc->body_cb = NULL;
    hc->body_arg = NULL;
    return w;
}

typedef struct {
    px__http_body_waiter_t w;
} told_t;

/* Runs as the work item and as its cancellation: told exactly once. */
static void tell_work(void *arg)
{
    told_t *t = arg;
    px__http_body_waiter_t w = t->w;
    free(t);
    px__http_body_tell(w);
}

void px__http_body_tell_later(px_http_conn_t *hc)
{
    if (hc->body_cb == NULL)
        return;
    told_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return;
    t->w = px__http_body_take_waiter(hc, true);
    /* On the connection's worker: the reader's runtime (a binding's
     * interpreter) is found there. */
    if (px_submit_to(hc->server->loop, px_conn_worker(hc->conn), tell_work,
                     tell_work, t) < 0) {
        hc->body_cb = t->w.cb;
        hc->body_arg = t->w.arg;
        free(t);
    }
}

void px__http_body_reset(px_http_conn_t *hc)
{
    hc->body_streamed = false;
    hc->body_open = false;
    hc->body_full = false;
    hc->body_pos = 0;
    px__bytebuf_reset(&hc->body, KEEP_BODY_BYTES);
}

px__http_body_waiter_t px__http_body_answered_streamed(px_http_conn_t *hc)
{
    px__http_body_waiter_t w = px__http_body_take_waiter(hc, true);
    if (!hc->body_streamed)
        return w;
    bool open = hc->body_open;
    px__http_body_reset(hc);
    /* Kept alive: px__http_body_allows_keep said the rest may be read and
     * dropped. Closing: it need not be. */
    if (open && hc->state == PX__HC_HEAD) {
        hc->body_open = true;
        hc->state = PX__HC_DISCARD;
    }
    return w;
}

/* ---- the reader ---------------------------------------------------------- */

static ssize_t available_locked(px_http_conn_t *hc)
{
    if (!hc->body_streamed)
        return PX_EBADSTATE;
    size_t n = unread(hc);
    if (n > 0)
        return n > (size_t)SSIZE_MAX ? SSIZE_MAX : (ssize_t)n;
    if (hc->body_error != 0)
        return hc->body_error;
    if (!hc->body_open)
        return 0;
    /* The body is wanted now (RFC 9110 §10.1.1), unless a response has
     * started: a 100 cannot follow a final status. */
    if (hc->unanswered && hc->exchange.stream == NULL) {
        px__http_send_continue(hc, hc->body_received > 0);
        if (!hc->driving)
            px__http_flush(hc);
    }
    return PX_HTTP_INCOMPLETE;
}

ssize_t px_http_body_available(px_http_exchange_t *ex)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    ssize_t rc = available_locked(hc);
    pthread_mutex_unlock(&hc->lock);
    return rc;
}

ssize_t px_http_body_read(px_http_exchange_t *ex, void *buf, size_t len)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    ssize_t rc = available_locked(hc);
    if (rc > 0) {
        size_t n = (size_t)rc < len ? (size_t)rc : len;
        memcpy(buf, hc->body.data + hc->body_pos, n);
        hc->body_pos += n;
        if (hc->body_pos == hc->body.len)
            hc->body_pos = hc->body.len = 0;
        /* The reader caught up: the socket is read again. */
        if (hc->body_full && !px__http_body_window_full(hc)) {
            px__http_update_reading(hc);
            px__http_arm_wait(hc);
        }
        rc = (ssize_t)n;
    }
    pthread_mutex_unlock(&hc->lock);
    return rc;
}

int px_http_body_wait(px_http_exchange_t *ex, px_http_stream_cb cb, void *arg)
{
    px_http_conn_t *hc = ex->hc;
    if (cb == NULL)
        return -EINVAL;
    pthread_mutex_lock(&hc->lock);
    int rc = 0;
    if (!hc->body_streamed || hc->body_cb != NULL) {
        rc = PX_EBADSTATE;
    } else if (available_locked(hc) != PX_HTTP_INCOMPLETE) {
        rc = 1;
    } else {
        hc->body_cb = cb;
        hc->body_arg = arg;
    }
    pthread_mutex_unlock(&hc->lock);
    return rc;
}
