/*
 * respond.c - answering exchanges: the cached Date, the server's ownership
 * of the framing fields, the response head and body written into the
 * connection's output buffer (or sent around it when large), error and
 * interim responses, and the flush to the engine.
 *
 * A response given inside the request callback is only appended to hc->out:
 * the driving thread hands the whole buffer to the engine when its pass
 * ends, so the responses to a batch of pipelined requests leave in one
 * write. A response given later is sent at once. Either way responses are
 * queued in request order, because the next request is parsed only after
 * the previous one was answered.
 */
#include "server_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bodies up to this size are copied next to their head (one write for a
 * batch); larger ones are handed to the engine as they are. */
#define COPY_BODY_MAX (16u << 10)
/* Output gathered before a flush even inside a pass. */
#define FLUSH_OUT_BYTES (64u << 10)
/* Responses queued in the engine, unread by the client, past which the
 * connection stops parsing pipelined requests and reading (server.c
 * resumes it): a client that pipelines without reading is slowed, and
 * never runs into the engine's send-buffer bound. */
#define OUTPUT_FULL_BYTES (4u << 20)
/* Output buffer capacity kept between flushes. */
#define KEEP_OUT_BYTES (64u << 10)
/* Header fields gathered on the stack before allocating. */
#define STACK_FIELDS 32

/* ---- Date --------------------------------------------------------------- */

/* Each thread formats the date once a second: no lock and no shared cache
 * line on the response path. */
static _Thread_local struct {
    int64_t second;
    char text[PX_HTTP_DATE_LEN + 1];
} date_cache = {-1, ""};

static const char *current_date(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if ((int64_t)ts.tv_sec != date_cache.second) {
        if (px_http_format_date((int64_t)ts.tv_sec, date_cache.text) < 0)
            return NULL;
        date_cache.second = (int64_t)ts.tv_sec;
    }
    return date_cache.text;
}

/* ---- header fields ------------------------------------------------------ */

typedef struct {
    px_http_header_t stack[STACK_FIELDS];
    const px_http_header_t *fields;
    size_t count;
    px_http_header_t *heap;
    bool close; /* a Connection field said "close" */
} fields_t;

static int find_close(const char *option, size_t len, void *arg)
{
    (void)arg;
    return PX__HTTP_NAME_IS(option, len, "close");
}

/* Whether the field is one the server writes itself; notes a
 * "Connection: close". */
static bool owned_by_server(const px_http_header_t *h, bool *close)
{
    switch (h->name_len) {
    case 4:
        return PX__HTTP_NAME_IS(h->name, h->name_len, "date");
    case 10:
        if (!PX__HTTP_NAME_IS(h->name, h->name_len, "connection"))
            return false;
        if (px__http_for_each_element(h->value, h->value_len, find_close, NULL))
            *close = true;
        return true;
    case 14:
        return PX__HTTP_NAME_IS(h->name, h->name_len, "content-length");
    case 17:
        return PX__HTTP_NAME_IS(h->name, h->name_len, "transfer-encoding");
    default:
        return false;
    }
}

/* The caller's fields, less those the server owns. */
static int collect_fields(fields_t *f, const px_http_header_t *fields,
                          size_t count)
{
    f->heap = NULL;
    f->close = false;
    size_t owned = 0;
    for (size_t i = 0; i < count; i++)
        owned += owned_by_server(&fields[i], &f->close);
    if (owned == 0) {
        f->fields = fields; /* the common case: the caller's array */
        f->count = count;
        return 0;
    }
    px_http_header_t *out = f->stack;
    if (count > STACK_FIELDS) {
        f->heap = malloc(count * sizeof(*out));
        if (f->heap == NULL)
            return -ENOMEM;
        out = f->heap;
    }
    size_t n = 0;
    bool ignored;
    for (size_t i = 0; i < count; i++)
        if (!owned_by_server(&fields[i], &ignored))
            out[n++] = fields[i];
    f->fields = out;
    f->count = n;
    return 0;
}

/* ---- heads -------------------------------------------------------------- */

/* Appends a response head to hc->out; hc->lock held. */
static int put_head(px_http_conn_t *hc, int status, int minor_version,
                    bool keep_alive, const px_http_header_t *fields,
                    size_t count, px_http_body_t body, uint64_t length)
{
    /* Status line, Date, Content-Length and Connection fit in 160 bytes. */
    size_t size = 160 + PX_HTTP_DATE_LEN;
    for (size_t i = 0; i < count; i++)
        size += fields[i].name_len + fields[i].value_len + 4;
    int rc = px__bytebuf_reserve(&hc->out, size);
    if (rc < 0)
        return rc;
    px_http_response_t resp = {
        .status = status,
        .minor_version = minor_version,
        .keep_alive = keep_alive,
        .date = current_date(),
        .body = body,
        .content_length = length,
        .headers = fields,
        .num_headers = count,
    };
    ssize_t n = px_http_write_response_head(hc->out.data + hc->out.len,
                                            hc->out.cap - hc->out.len, &resp);
    if (n < 0)
        return (int)n;
    hc->out.len += (size_t)n;
    return 0;
}

void px__http_put_error(px_http_conn_t *hc, int status)
{
    /* A 503 says the server is short of memory for bodies: that passes as
     * the bodies being received complete, so the client may try again
     * soon (RFC 9110 §10.2.3). */
    static const px_http_header_t fields[] = {
        {"Content-Type", 12, "text/plain; charset=utf-8", 25},
        {"Retry-After", 11, "1", 1},
    };
    const char *reason = px_http_reason_phrase(status);
    size_t reason_len = strlen(reason);
    size_t mark = hc->out.len;
    if (put_head(hc, status, 1, false, fields, status == 503 ? 2 : 1,
                 PX_HTTP_BODY_LENGTH, reason_len + 1) < 0 ||
        px__bytebuf_append(&hc->out, reason, reason_len) < 0 ||
        px__bytebuf_append(&hc->out, "\n", 1) < 0)
        hc->out.len = mark; /* out of memory: the close still happens */
    px__http_obs_error(hc, status, hc->out.len > mark ? reason_len + 1 : 0);
}

void px__http_put_continue(px_http_conn_t *hc)
{
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (px__bytebuf_append(&hc->out, interim, sizeof(interim) - 1) < 0) {
        hc->state = PX__HC_CLOSING;
        px_conn_close(hc->conn, 1);
    }
}

/* The send failed: the connection cannot carry on; hc->lock held. */
static int send_failed(px_http_conn_t *hc, int rc)
{
    hc->out.len = 0;
    hc->state = PX__HC_CLOSING;
    if (rc != PX_ECLOSED)
        px_conn_close(hc->conn, 1);
    return rc;
}

int px__http_flush(px_http_conn_t *hc)
{
    if (hc->out.len == 0)
        return 0;
    struct iovec iov = {hc->out.data, hc->out.len};
    int rc = px_conn_send(hc->conn, &iov, 1, NULL);
    px__bytebuf_reset(&hc->out, KEEP_OUT_BYTES);
    if (rc < 0)
        return send_failed(hc, rc);
    if (px_conn_queued_bytes(hc->conn) > OUTPUT_FULL_BYTES)
        atomic_store(&hc->output_full, true);
    return 0;
}

int px__http_put_answer_head(px_http_conn_t *hc, const px_http_exchange_t *ex,
                             int status, const px_http_header_t *headers,
                             size_t num_headers, px_http_body_t body,
                             uint64_t length, bool keep, bool *kept)
{
    fields_t f;
    int rc = collect_fields(&f, headers, num_headers);
    if (rc < 0)
        return rc;
    bool keep_alive = keep && ex->keep_alive && !f.close &&
                      !px__http_winding_down(hc) &&
                      px__http_body_allows_keep(hc);
    size_t mark = hc->out.len;
    rc = put_head(hc, status, ex->minor_version, keep_alive, f.fields, f.count,
                  body, length);
    if (rc < 0)
        hc->out.len = mark;
    else
        *kept = keep_alive;
    free(f.heap);
    return rc;
}

/* ---- responses ---------------------------------------------------------- */

typedef struct {
    const void *data; /* a body in memory, or */
    int fd;           /* a file's bytes (fd >= 0) */
    off_t offset;
    uint64_t length;
    px_release_fn release; /* data is lent (px_http_respond_owned) until */
    void *release_arg;     /* release(release_arg); NULL once handed over */
} body_t;

/* Gives a lent body back if the engine did not take it. */
static void give_back(body_t *body)
{
    if (body->release) {
        px_release_fn release = body->release;
        body->release = NULL;
        release(body->release_arg);
    }
}

/* Writes head and body; hc->lock held, the head already checked. */
static int queue_body(px_http_conn_t *hc, body_t *body)
{
    struct iovec iov[2] = {{hc->out.data, hc->out.len},
                           {(void *)body->data, (size_t)body->length}};
    int rc;
    if (body->fd >= 0) {
        rc = px_conn_sendfile(hc->conn, &iov[0], body->fd, body->offset,
                              (size_t)body->length, NULL, NULL);
    } else if (body->length > COPY_BODY_MAX && body->release) {
        /* The engine writes the body from where it is and gives it back
         * when done: no copy, and the send-buffer bound does not apply to
         * memory the caller already holds. */
        px_release_fn release = body->release;
        body->release = NULL;
        rc = px_conn_send_owned(hc->conn, &iov[0], body->data,
                                (size_t)body->length, release,
                                body->release_arg, NULL);
    } else if (body->length > COPY_BODY_MAX) {
        rc = px_conn_send(hc->conn, iov, 2, NULL);
    } else {
        rc = px__bytebuf_append(&hc->out, body->data, (size_t)body->length);
        if (rc == 0 && hc->out.len > FLUSH_OUT_BYTES)
            return px__http_flush(hc);
        return rc < 0 ? send_failed(hc, rc) : 0;
    }
    px__bytebuf_reset(&hc->out, KEEP_OUT_BYTES);
    return rc < 0 ? send_failed(hc, rc) : 0;
}

static int respond(px_http_exchange_t *ex, int status,
                   const px_http_header_t *headers, size_t num_headers,
                   body_t *body)
{
    px_http_conn_t *hc = ex->hc;
    /* 1xx are interim, never an answer; 204 and 304 have no content (RFC
     * 9110 §15.3.5, §15.4.5). */
    if (status < 200 || status > 599)
        return PX_HTTP_E_RESPONSE_STATUS;
    bool no_content = status == 204 || status == 304;
    if (no_content && body->fd < 0 && body->length > 0)
        return PX_HTTP_E_RESPONSE_FRAMING;
    if (body->fd < 0 && body->length > SIZE_MAX)
        return -EINVAL;
    fields_t f;
    int rc = collect_fields(&f, headers, num_headers);
    if (rc < 0)
        return rc;

    pthread_mutex_lock(&hc->lock);
    if (!hc->unanswered) {
        pthread_mutex_unlock(&hc->lock);
        free(f.heap);
        return PX_EBADSTATE;
    }
    px__http_body_waiter_t told;
    if (px__http_exchange_lost(hc)) {
        rc = PX_ECLOSED;
        hc->unanswered = false;
        px__http_obs_end(hc, status, 0);
        told = px__http_body_answered(hc);
    } else {
        bool keep_alive = ex->keep_alive && !f.close &&
                          !px__http_winding_down(hc) &&
                          px__http_body_allows_keep(hc);
        size_t mark = hc->out.len;
        rc = put_head(
            hc, status, ex->minor_version, keep_alive, f.fields, f.count,
            no_content ? PX_HTTP_BODY_NONE : PX_HTTP_BODY_LENGTH, body->length);
        if (rc < 0) {
            /* Nothing was queued: the exchange stays open. */
            hc->out.len = mark;
            pthread_mutex_unlock(&hc->lock);
            free(f.heap);
            return rc;
        }
        hc->unanswered = false;
        hc->state = keep_alive ? PX__HC_HEAD : PX__HC_CLOSING;
        /* A body that cannot be queued closed the connection. */
        bool with_body = !ex->head_only && !no_content && body->length > 0;
        if (with_body && queue_body(hc, body) < 0)
            rc = PX_ECLOSED;
        px__http_obs_end(hc, status, with_body ? body->length : 0);
        told = px__http_body_answered(hc);
        px__http_after_response(hc);
    }
    pthread_mutex_unlock(&hc->lock);
    free(f.heap);
    px__http_body_tell(told);
    px__http_conn_unref(hc); /* the exchange's */
    return rc;
}

int px_http_respond(px_http_exchange_t *ex, int status,
                    const px_http_header_t *headers, size_t num_headers,
                    const void *body, size_t body_len)
{
    body_t b = {body, -1, 0, body_len, NULL, NULL};
    return respond(ex, status, headers, num_headers, &b);
}

int px_http_respond_owned(px_http_exchange_t *ex, int status,
                          const px_http_header_t *headers, size_t num_headers,
                          const void *body, size_t body_len,
                          px_release_fn release, void *arg)
{
    body_t b = {body, -1, 0, body_len, release, arg};
    int rc = respond(ex, status, headers, num_headers, &b);
    give_back(&b);
    return rc;
}

int px_http_respond_file(px_http_exchange_t *ex, int status,
                         const px_http_header_t *headers, size_t num_headers,
                         int fd, off_t offset, uint64_t length)
{
    if (fd < 0 || offset < 0)
        return -EINVAL;
    body_t b = {NULL, fd, offset, status == 304 ? 0 : length, NULL, NULL};
    return respond(ex, status, headers, num_headers, &b);
}

void px_http_abort(px_http_exchange_t *ex)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    if (!hc->unanswered) {
        pthread_mutex_unlock(&hc->lock);
        return;
    }
    hc->unanswered = false;
    px__http_obs_end(hc, PX__HTTP_STATUS_NO_RESPONSE, 0);
    /* After the server answered a failed streamed body itself, that
     * answer is left to reach the client. */
    if (hc->state != PX__HC_LINGER) {
        hc->out.len = 0;
        hc->state = PX__HC_CLOSING;
        if (!hc->closed)
            px_conn_close(hc->conn, 1);
    }
    px__http_body_waiter_t told = px__http_body_answered(hc);
    pthread_mutex_unlock(&hc->lock);
    px__http_body_tell(told);
    px__http_conn_unref(hc);
}
