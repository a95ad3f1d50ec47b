/*
 * lifetime.c - the HTTP server object and its timeout sweep; a
 * connection's references, what it waits for and its deadline.
 *
 * Timeouts cost nothing per request beyond storing a deadline: one
 * periodic timer per server sweeps its connections and acts on those whose
 * deadline passed (see px__http_arm_wait for what each deadline means). Its
 * period is a quarter of the shortest timeout, between 5 and 250 ms. The
 * sweep also closes idle connections once the server is freed or its loop
 * drains, and resumes connections stopped by unread responses.
 *
 * The connection's lifecycle and its locking are described in
 * server_internal.h.
 */
#include "server_internal.h"

#include <errno.h>
#include <stdlib.h>

#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)
#define DEFAULT_HEADER_TIMEOUT_NS (10 * NS_PER_S)
#define DEFAULT_BODY_TIMEOUT_NS (30 * NS_PER_S)
#define DEFAULT_KEEPALIVE_TIMEOUT_NS (5 * NS_PER_S)
/* How long input is discarded after an error response before closing:
 * long enough for the answer to reach a client still sending, short
 * enough that a bad client costs little. */
#define LINGER_NS (2 * NS_PER_S)
/* While the loop drains, how long a connection may stay idle before it
 * is closed: a request the client sent just before that is on the wire,
 * and is answered (with "Connection: close") rather than lost. */
#define DRAIN_IDLE_GRACE_NS (1 * NS_PER_S)
#define SWEEP_MIN_NS (5 * NS_PER_MS)
#define SWEEP_MAX_NS (250 * NS_PER_MS)
/* Input buffered beyond a request that waits for a late response, before
 * reading pauses (pipelined requests queue in the kernel instead). */
#define PIPELINE_PAUSE_BYTES (256u << 10)

static void server_unref(px_http_server_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&s->lock);
    px__http_trust_free(s->trust);
    free(SERVER_BOX(s));
}

static uint64_t timeout_or(uint64_t ns, uint64_t fallback)
{
    return ns == 0 ? fallback : ns;
}

static uint64_t sweep_period(const px_http_server_t *s)
{
    uint64_t shortest = LINGER_NS;
    const uint64_t timeouts[] = {s->header_timeout_ns, s->body_timeout_ns,
                                 s->keepalive_timeout_ns};
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
        if (timeouts[i] < shortest)
            shortest = timeouts[i];
    uint64_t period = shortest / 4;
    if (period < SWEEP_MIN_NS)
        return SWEEP_MIN_NS;
    return period > SWEEP_MAX_NS ? SWEEP_MAX_NS : period;
}

static void expire(px_http_conn_t *hc, uint64_t now, bool server_closed,
                   bool draining);

/* The timer's run. Once the server is freed it also closes idle
 * connections at once (requests under way finish, their responses say
 * "Connection: close"), and it stops itself after the last connection.
 * While the loop drains, or a connection's worker retires, it closes those
 * idle for DRAIN_IDLE_GRACE_NS. */
static void sweep(void *arg)
{
    px_http_server_t *s = arg;
    uint64_t now = px_now_ns();
    bool closed = atomic_load(&s->closed);
    bool loop_draining = !closed && px_loop_draining(s->loop);
    pthread_mutex_lock(&s->lock);
    for (px_http_conn_t *hc = s->conns; hc != NULL; hc = hc->next) {
        uint64_t deadline =
            atomic_load_explicit(&hc->deadline_ns, memory_order_relaxed);
        bool draining =
            loop_draining ||
            (!closed && px_worker_retiring(s->loop, px_conn_worker(hc->conn)));
        if ((deadline != 0 && deadline <= now) || closed || draining)
            expire(hc, now, closed, draining);
        if (atomic_load_explicit(&hc->output_full, memory_order_relaxed))
            px__http_resume_output(hc);
    }
    if (closed && s->conns == NULL && s->sweep != NULL)
        px_timer_cancel(s->sweep);
    pthread_mutex_unlock(&s->lock);
}

static void sweep_done(void *arg)
{
    px_http_server_t *s = arg;
    pthread_mutex_lock(&s->lock);
    px_timer_t *t = s->sweep;
    s->sweep = NULL;
    pthread_mutex_unlock(&s->lock);
    if (t != NULL)
        px_timer_unref(t);
    server_unref(s); /* the timer's */
}

int px_http_server_new(px_loop_t *loop, const px_http_server_options_t *opts,
                       px_http_server_t **out)
{
    if (loop == NULL || opts == NULL || opts->on_request == NULL || out == NULL)
        return -EINVAL;
    server_box_t *box = calloc(1, sizeof(*box));
    if (box == NULL)
        return -ENOMEM;
    box->magic = SERVER_MAGIC;
    px_http_server_t *s = &box->server;
    s->loop = loop;
    px__http_resolve_options(&opts->limits, &s->limits);
    if (s->limits.max_headers > PX_HTTP_SERVER_MAX_HEADERS)
        s->limits.max_headers = PX_HTTP_SERVER_MAX_HEADERS;
    s->header_timeout_ns =
        timeout_or(opts->header_timeout_ns, DEFAULT_HEADER_TIMEOUT_NS);
    s->body_timeout_ns =
        timeout_or(opts->body_timeout_ns, DEFAULT_BODY_TIMEOUT_NS);
    s->keepalive_timeout_ns =
        timeout_or(opts->keepalive_timeout_ns, DEFAULT_KEEPALIVE_TIMEOUT_NS);
    px__http_body_limits(s, opts);
    s->stream_request_body = opts->stream_request_body != 0;
    int trc = px__http_trust_parse(opts->forwarded_allow_ips, &s->trust);
    if (trc < 0) {
        free(box);
        return trc;
    }
    s->on_request = opts->on_request;
    s->data = opts->data;
    atomic_init(&s->refs, 2); /* the caller's and the timer's */
    atomic_init(&s->closed, false);
    pthread_mutex_init(&s->lock, NULL);
    uint64_t period = sweep_period(s);
    int rc =
        px_timer_start(loop, period, period, sweep, sweep_done, s, &s->sweep);
    if (rc < 0) {
        pthread_mutex_destroy(&s->lock);
        px__http_trust_free(s->trust);
        free(box);
        return rc;
    }
    *out = s;
    return 0;
}

void *px_http_server_data(const px_http_server_t *s) { return s->data; }

void px_http_server_free(px_http_server_t *s)
{
    /* The sweep winds down what is left (see sweep). */
    atomic_store(&s->closed, true);
    server_unref(s);
}

/* ---- connection references and deadlines -------------------------------- */

void px__http_conn_ref(px_http_conn_t *hc) { atomic_fetch_add(&hc->refs, 1); }

void px__http_conn_unref(px_http_conn_t *hc)
{
    if (atomic_fetch_sub(&hc->refs, 1) != 1)
        return;
    px__http_body_release(hc);
    px__bytebuf_free(&hc->in);
    px__bytebuf_free(&hc->pending);
    px__bytebuf_free(&hc->out);
    px__bytebuf_free(&hc->body);
    px__http_obs_free(&hc->obs);
    pthread_mutex_destroy(&hc->lock);
    px_conn_unref(hc->conn);
    server_unref(hc->server);
    free(CONN_BOX(hc));
}

/*
 * Sets the deadline for what the connection waits for; hc->lock held.
 *  IDLE   no byte of a request yet: keepalive_timeout after a response,
 *         header_timeout on a new connection; then closed silently. The
 *         idle time of a client still reading a response starts when it
 *         stops reading (see expire).
 *  HEAD   from the first byte of a head: header_timeout, then 408. Not
 *         pushed back by later bytes, which is what stops slowloris.
 *  BODY   between two reads of a body: body_timeout, and the body's
 *         pace: min_body_rate (see bodies.c); then 408. Also for a
 *         streamed body (reqbody.c) while the server waits for the client
 *         rather than for the reader, and while one is discarded.
 *  LINGER after an error response: closed after LINGER_NS.
 */
void px__http_arm_wait(px_http_conn_t *hc)
{
    px_http_server_t *s = hc->server;
    px__wait_t want = PX__WAIT_NONE;
    uint64_t timeout = PX_HTTP_NO_TIMEOUT;
    switch (hc->state) {
    case PX__HC_HEAD:
        if ((hc->in.len == 0 && hc->pending.len == 0) ||
            atomic_load(&hc->output_full)) {
            want = PX__WAIT_IDLE;
            timeout =
                hc->served ? s->keepalive_timeout_ns : s->header_timeout_ns;
        } else {
            want = PX__WAIT_HEAD;
            timeout = s->header_timeout_ns;
        }
        break;
    case PX__HC_BODY:
    case PX__HC_DISCARD:
        want = PX__WAIT_BODY;
        break;
    case PX__HC_HANDLING:
        if (hc->body_open && !hc->body_full)
            want = PX__WAIT_BODY;
        break;
    case PX__HC_LINGER:
        want = PX__WAIT_LINGER;
        timeout = LINGER_NS;
        break;
    case PX__HC_CLOSING:
    case PX__HC_UPGRADED:
        break;
    }
    if (want == hc->wait && want != PX__WAIT_BODY)
        return;
    hc->wait = want;
    hc->unsent_seen = 0;
    if (want == PX__WAIT_IDLE)
        hc->idle_since_ns = px_now_ns();
    uint64_t deadline = 0;
    if (want == PX__WAIT_BODY) {
        uint64_t now = px_now_ns();
        if (hc->body_start_ns == 0)
            hc->body_start_ns = now;
        deadline = px__http_body_deadline(hc, now);
    } else if (want != PX__WAIT_NONE && timeout != PX_HTTP_NO_TIMEOUT) {
        deadline = px_now_ns() + timeout;
    }
    atomic_store_explicit(&hc->deadline_ns, deadline, memory_order_relaxed);
}

void px__http_set_no_wait(px_http_conn_t *hc)
{
    hc->wait = PX__WAIT_NONE;
    atomic_store_explicit(&hc->deadline_ns, 0, memory_order_relaxed);
}

/* Closes after what is queued was sent; hc->lock held. */
void px__http_close_gracefully(px_http_conn_t *hc)
{
    hc->state = PX__HC_CLOSING;
    px__http_set_no_wait(hc);
    px_conn_close(hc->conn, 0);
}

/* After the peer's end of input no request can follow: once none is
 * being answered or waits to be parsed, what is queued is sent and the
 * connection closes (an unfinished request is dropped with it); hc->lock
 * held, by the driving thread or when none drives. */
void px__http_close_if_input_ended(px_http_conn_t *hc)
{
    if (!hc->read_ended || hc->closed || hc->continuation_queued ||
        hc->state == PX__HC_HANDLING || hc->state == PX__HC_CLOSING ||
        hc->state == PX__HC_UPGRADED)
        return;
    px__http_close_gracefully(hc);
}

/* A deadline passed, or the server is closed or its loop drains and the
 * connection may be idle (the sweep, server lock held). */
static void expire(px_http_conn_t *hc, uint64_t now, bool server_closed,
                   bool draining)
{
    pthread_mutex_lock(&hc->lock);
    uint64_t deadline = atomic_load(&hc->deadline_ns);
    bool idle = hc->wait == PX__WAIT_IDLE;
    bool due =
        (deadline != 0 && deadline <= now) || (server_closed && idle) ||
        (draining && idle && now - hc->idle_since_ns >= DRAIN_IDLE_GRACE_NS);
    /* A driving thread will set a new deadline when its pass ends. */
    if (hc->closed || hc->driving || !due) {
        pthread_mutex_unlock(&hc->lock);
        return;
    }
    /* A client that reads a large response slowly is not idle: the wait
     * starts again as long as it took some of the response since the last
     * deadline. One that stopped reading for a whole keepalive_timeout is
     * closed (its queue then gets the engine's close linger). */
    if (hc->wait == PX__WAIT_IDLE && !server_closed) {
        size_t unsent = px_conn_queued_bytes(hc->conn);
        if (unsent > 0 && unsent != hc->unsent_seen) {
            hc->unsent_seen = unsent;
            atomic_store_explicit(&hc->deadline_ns,
                                  now + hc->server->keepalive_timeout_ns,
                                  memory_order_relaxed);
            pthread_mutex_unlock(&hc->lock);
            return;
        }
    }
    if (hc->wait == PX__WAIT_HEAD || hc->wait == PX__WAIT_BODY) {
        /* A streamed body's handler has the exchange: 408 only if it has
         * not answered; a body being discarded was answered already. */
        bool answer = hc->state == PX__HC_HEAD || hc->state == PX__HC_BODY;
        if (hc->state == PX__HC_HANDLING && hc->body_open) {
            hc->body_error = PX_HTTP_E_BODY_TIMEOUT;
            hc->body_open = false;
            answer = hc->unanswered && hc->exchange.stream == NULL;
            px__http_body_tell_later(hc);
        }
        if (answer) {
            px__http_put_error(hc, 408);
            px__http_flush(hc);
        }
    }
    px__http_close_gracefully(hc);
    pthread_mutex_unlock(&hc->lock);
}

/* Pauses reading while a late response keeps much input waiting, while
 * the client leaves too many responses unread, or while a streamed body's
 * reader is a window behind; hc->lock held. */
void px__http_update_reading(px_http_conn_t *hc)
{
    bool full = px__http_body_window_full(hc);
    if (full != hc->body_full) {
        /* The body's pace (min_body_rate) counts the time the server
         * reads, not the time it waits for the reader. */
        uint64_t now = px_now_ns();
        if (full)
            hc->body_full_ns = now;
        else if (hc->body_start_ns != 0)
            hc->body_start_ns += now - hc->body_full_ns;
        hc->body_full = full;
    }
    bool pause =
        !hc->closed && (full ||
                        (hc->state == PX__HC_HANDLING &&
                         hc->in.len + hc->pending.len > PIPELINE_PAUSE_BYTES) ||
                        atomic_load(&hc->output_full));
    if (pause && !hc->paused) {
        hc->paused = true;
        px_conn_pause_reading(hc->conn);
    } else if (!pause && hc->paused) {
        hc->paused = false;
        px_conn_resume_reading(hc->conn);
    }
}
