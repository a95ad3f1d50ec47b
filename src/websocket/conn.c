/*
 * conn.c - WebSocket connections: the upgrade of an HTTP exchange, input
 * through the receiver, automatic pongs, the closing handshake, sends from
 * any thread with a bounded send buffer, and the sweep that pings idle
 * peers and drops those that do not answer, and closes every connection
 * (1001, going away) once the loop drains.
 *
 * The HTTP server keeps owning the engine connection's callbacks: after
 * the upgrade it hands every input, end of input and close to this file
 * (server.c's three hooks), so an embedder's routing does not change.
 *
 * Timeouts cost a store per read: one periodic timer per px_ws_server_t
 * walks its connections, like the HTTP server's sweep. Its period is a
 * quarter of the shortest timeout, between 50 ms and 1 s.
 */
#include "server_internal.h"
#include "ws_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)
#define DEFAULT_PING_NS (20 * NS_PER_S)
#define DEFAULT_CLOSE_NS (5 * NS_PER_S)
#define DEFAULT_SEND_BUFFER (4u << 20)
#define SWEEP_MIN_NS (50 * NS_PER_MS)
#define SWEEP_MAX_NS (1 * NS_PER_S)

/* ---- the server ---------------------------------------------------------- */

static void server_unref(px_ws_server_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void sweep(void *arg);

static void sweep_done(void *arg)
{
    px_ws_server_t *s = arg;
    pthread_mutex_lock(&s->lock);
    px_timer_t *t = s->sweep;
    s->sweep = NULL;
    pthread_mutex_unlock(&s->lock);
    if (t != NULL)
        px_timer_unref(t);
    server_unref(s); /* the timer's */
}

static uint64_t or_default(uint64_t v, uint64_t fallback)
{
    return v == 0 ? fallback : v;
}

int px_ws_server_new(px_loop_t *loop, const px_ws_server_options_t *opts,
                     px_ws_server_t **out)
{
    if (loop == NULL || opts == NULL || out == NULL)
        return -EINVAL;
    px_ws_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->loop = loop;
    s->o = *opts;
    s->o.max_message_size =
        or_default(opts->max_message_size, PX_WS_DEFAULT_MAX_MESSAGE);
    s->o.ping_interval_ns = or_default(opts->ping_interval_ns, DEFAULT_PING_NS);
    s->o.ping_timeout_ns = or_default(opts->ping_timeout_ns, DEFAULT_PING_NS);
    s->o.close_timeout_ns =
        or_default(opts->close_timeout_ns, DEFAULT_CLOSE_NS);
    if (s->o.max_send_buffer == 0)
        s->o.max_send_buffer = DEFAULT_SEND_BUFFER;
    atomic_init(&s->refs, 2); /* the caller's and the timer's */
    pthread_mutex_init(&s->lock, NULL);
    uint64_t shortest = s->o.close_timeout_ns;
    if (s->o.ping_interval_ns < shortest)
        shortest = s->o.ping_interval_ns;
    if (s->o.ping_timeout_ns < shortest)
        shortest = s->o.ping_timeout_ns;
    uint64_t period = shortest / 4;
    period = period < SWEEP_MIN_NS   ? SWEEP_MIN_NS
             : period > SWEEP_MAX_NS ? SWEEP_MAX_NS
                                     : period;
    pthread_mutex_lock(&s->lock);
    int rc =
        px_timer_start(loop, period, period, sweep, sweep_done, s, &s->sweep);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int px_ws_server_running(px_ws_server_t *s)
{
    pthread_mutex_lock(&s->lock);
    int running = s->sweep != NULL; /* sweep_done clears it */
    pthread_mutex_unlock(&s->lock);
    return running;
}

void px_ws_server_free(px_ws_server_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->sweep != NULL)
        px_timer_cancel(s->sweep);
    pthread_mutex_unlock(&s->lock);
    server_unref(s);
}

/* ---- sending --------------------------------------------------------------
 */

int px__ws_send_frame(px_ws_conn_t *wc, int opcode, bool rsv1, const void *data,
                      size_t len)
{
    uint8_t head[PX_WS_MAX_HEADER];
    size_t head_len = px_ws_frame_header(head, true, rsv1, opcode, len, NULL);
    struct iovec iov[2] = {{head, head_len}, {(void *)data, len}};
    return px_conn_send(wc->conn, iov, len > 0 ? 2 : 1, NULL);
}

/* Sends our close frame (code PX_WS_CLOSE_NO_STATUS: an empty one) and
 * starts the wait for the peer's; wc->lock held. */
static void send_close(px_ws_conn_t *wc, int code, const char *reason,
                       size_t len)
{
    if (wc->close_sent || wc->ended)
        return;
    wc->close_sent = true;
    atomic_store(&wc->closing, true);
    uint8_t payload[PX_WS_MAX_CONTROL];
    size_t n = 0;
    if (code != PX_WS_CLOSE_NO_STATUS) {
        if (len > PX_WS_MAX_CONTROL - 2)
            len = PX_WS_MAX_CONTROL - 2;
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (len > 0)
            memcpy(payload + 2, reason, len);
        n = 2 + len;
    }
    px__ws_send_frame(wc, PX_WS_OP_CLOSE, false, payload, n);
    atomic_store(&wc->close_deadline,
                 px_now_ns() + wc->server->o.close_timeout_ns);
}

/* Fails the connection with code (ours: what on_closed reports unless
 * the peer's close frame came first); wc->lock held. */
static void fail_locked(px_ws_conn_t *wc, int code, const char *reason)
{
    size_t len = reason ? strlen(reason) : 0;
    if (!wc->close_received && !wc->close_sent) {
        wc->code = code;
        wc->reason_len = len < sizeof(wc->reason) ? len : sizeof(wc->reason);
        if (wc->reason_len > 0)
            memcpy(wc->reason, reason, wc->reason_len);
    }
    send_close(wc, code, reason, len);
    if (!wc->ended)
        px_conn_close(wc->conn, 0);
}

bool px__ws_may_send(px_ws_conn_t *wc)
{
    if (wc->close_sent || wc->ended)
        return false;
    if (px_conn_queued_bytes(wc->conn) > wc->server->o.max_send_buffer) {
        fail_locked(wc, PX_WS_CLOSE_POLICY, "send buffer full");
        return false;
    }
    return true;
}

int px_ws_send(px_ws_conn_t *wc, int opcode, const void *data, size_t len)
{
    if (opcode != PX_WS_OP_TEXT && opcode != PX_WS_OP_BINARY)
        return -EINVAL;
    pthread_mutex_lock(&wc->lock);
    if (wc->close_sent || wc->ended) {
        pthread_mutex_unlock(&wc->lock);
        return PX_ECLOSED;
    }
    if (!px__ws_may_send(wc)) {
        pthread_mutex_unlock(&wc->lock);
        return PX_ESENDBUF;
    }
    int rc;
    if (wc->deflate.enabled && len > 0) {
        if (wc->deflater == NULL &&
            (rc = px_ws_deflater_new(wc->deflate.server_max_window_bits,
                                     wc->deflate.server_no_context_takeover,
                                     &wc->deflater)) < 0) {
            pthread_mutex_unlock(&wc->lock);
            return rc;
        }
        char *z = NULL;
        size_t z_len = 0;
        rc = px_ws_deflate(wc->deflater, data, len, &z, &z_len);
        if (rc == 0)
            rc = px__ws_send_frame(wc, opcode, true, z, z_len);
        free(z);
    } else {
        rc = px__ws_send_frame(wc, opcode, false, data, len);
    }
    if (rc == PX_ESENDBUF)
        fail_locked(wc, PX_WS_CLOSE_POLICY, "send buffer full");
    pthread_mutex_unlock(&wc->lock);
    return rc;
}

int px_ws_ping(px_ws_conn_t *wc, const void *data, size_t len)
{
    if (len > PX_WS_MAX_CONTROL)
        return -EINVAL;
    pthread_mutex_lock(&wc->lock);
    int rc = wc->close_sent || wc->ended
                 ? PX_ECLOSED
                 : px__ws_send_frame(wc, PX_WS_OP_PING, false, data, len);
    pthread_mutex_unlock(&wc->lock);
    return rc;
}

static bool sendable_code(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int px_ws_close(px_ws_conn_t *wc, int code, const char *reason, size_t len)
{
    if (!sendable_code(code) || len > PX_WS_MAX_CONTROL - 2 ||
        (len > 0 && !px_ws_utf8_valid(reason, len)))
        return -EINVAL;
    pthread_mutex_lock(&wc->lock);
    send_close(wc, code, reason, len);
    /* The server closes the TCP connection first (RFC 6455 §7.1.1). */
    if (wc->close_received && !wc->ended)
        px_conn_close(wc->conn, 0);
    pthread_mutex_unlock(&wc->lock);
    return 0;
}

size_t px_ws_buffered_amount(const px_ws_conn_t *wc)
{
    return px_conn_queued_bytes(wc->conn);
}

bool px_ws_closing(const px_ws_conn_t *wc) { return atomic_load(&wc->closing); }

/* ---- the receiver's callbacks ---------------------------------------------
 */

static void on_message(void *arg, int opcode, const char *data, size_t len)
{
    px_ws_conn_t *wc = arg;
    if (wc->server->o.on_message)
        wc->server->o.on_message(wc, opcode, data, len);
}

static void on_control(void *arg, int opcode, const char *data, size_t len)
{
    px_ws_conn_t *wc = arg;
    if (opcode == PX_WS_OP_PING) {
        pthread_mutex_lock(&wc->lock);
        if (!wc->close_sent && !wc->ended)
            px__ws_send_frame(wc, PX_WS_OP_PONG, false, data, len);
        pthread_mutex_unlock(&wc->lock);
        return;
    }
    if (wc->server->o.on_pong)
        wc->server->o.on_pong(wc, data, len);
}

static void on_peer_close(void *arg, int code, const char *reason, size_t len)
{
    px_ws_conn_t *wc = arg;
    pthread_mutex_lock(&wc->lock);
    wc->close_received = true;
    wc->code = code;
    wc->reason_len = len;
    if (len > 0)
        memcpy(wc->reason, reason, len);
    /* Echo the code (§5.5.1), then close: the server closes first. */
    send_close(wc, code, reason, 0);
    if (!wc->ended)
        px_conn_close(wc->conn, 0);
    pthread_mutex_unlock(&wc->lock);
}

/* ---- the hand-over from the HTTP server -----------------------------------
 */

void px_ws_conn_ref(px_ws_conn_t *wc) { atomic_fetch_add(&wc->refs, 1); }

void px_ws_conn_unref(px_ws_conn_t *wc)
{
    if (wc == NULL || atomic_fetch_sub(&wc->refs, 1) != 1)
        return;
    px_ws_receiver_free(wc->rx);
    px_ws_deflater_free(wc->deflater);
    free(wc->groups);
    pthread_mutex_destroy(&wc->lock);
    if (wc->conn != NULL)
        px_conn_unref(wc->conn);
    server_unref(wc->server);
    free(wc);
}

void *px_ws_conn_data(const px_ws_conn_t *wc) { return wc->data; }
void px_ws_conn_set_data(px_ws_conn_t *wc, void *data) { wc->data = data; }
px_conn_t *px_ws_conn_engine(const px_ws_conn_t *wc) { return wc->conn; }

void px__ws_conn_input(px_ws_conn_t *wc, const char *data, size_t len)
{
    atomic_store_explicit(&wc->last_input_ns, px_now_ns(),
                          memory_order_relaxed);
    atomic_store_explicit(&wc->ping_sent_ns, 0, memory_order_relaxed);
    const char *why = NULL;
    int code = px_ws_receive(wc->rx, data, len, &why);
    if (code != 0) {
        pthread_mutex_lock(&wc->lock);
        fail_locked(wc, code, why);
        pthread_mutex_unlock(&wc->lock);
    }
}

void px__ws_conn_eof(px_ws_conn_t *wc)
{
    /* No close frame will come: nothing is left to say either. */
    px_conn_close(wc->conn, 0);
}

void px__ws_conn_closed(px_ws_conn_t *wc)
{
    px_ws_server_t *s = wc->server;
    pthread_mutex_lock(&wc->lock);
    wc->ended = true;
    atomic_store(&wc->closing, true);
    px_ws_group_t **groups = wc->groups;
    size_t num_groups = wc->num_groups;
    wc->groups = NULL;
    wc->num_groups = wc->cap_groups = 0;
    pthread_mutex_unlock(&wc->lock);
    for (size_t i = 0; i < num_groups; i++) {
        px__ws_group_remove(groups[i], wc);
        px_ws_group_unref(groups[i]);
    }
    free(groups);

    pthread_mutex_lock(&s->lock);
    if (wc->prev != NULL)
        wc->prev->next = wc->next;
    else if (s->conns == wc)
        s->conns = wc->next;
    if (wc->next != NULL)
        wc->next->prev = wc->prev;
    wc->prev = wc->next = NULL;
    pthread_mutex_unlock(&s->lock);

    if (s->o.on_closed)
        s->o.on_closed(wc, wc->code, wc->reason, wc->reason_len);
    px_ws_conn_unref(wc); /* the HTTP connection's */
}

/* Answers ex with head and hands its connection to wc (see server.c's
 * hooks). Returns as px_ws_upgrade. */
static int hand_over(px_http_exchange_t *ex, const char *head, size_t len,
                     px_ws_conn_t *wc)
{
    px_http_conn_t *hc = ex->hc;
    pthread_mutex_lock(&hc->lock);
    if (!hc->unanswered) {
        pthread_mutex_unlock(&hc->lock);
        return PX_EBADSTATE;
    }
    if (px__http_exchange_lost(hc)) {
        hc->unanswered = false;
        px__http_obs_end(hc, 101, 0);
        px__http_body_waiter_t told = px__http_body_answered(hc);
        pthread_mutex_unlock(&hc->lock);
        px__http_body_tell(told);
        px__http_conn_unref(hc); /* the exchange's */
        return PX_ECLOSED;
    }
    if (px__bytebuf_append(&hc->out, head, len) < 0) {
        pthread_mutex_unlock(&hc->lock);
        return -ENOMEM;
    }
    hc->unanswered = false;
    hc->served = true;
    /* The upgrade is the request's answer: the access log and the request
     * counters see it as a 101, the frames after it are not requests. */
    px__http_obs_end(hc, 101, 0);
    hc->state = PX__HC_UPGRADED;
    hc->wait = PX__WAIT_NONE;
    atomic_store_explicit(&hc->deadline_ns, 0, memory_order_relaxed);
    if (!hc->driving) {
        /* Sent before our 101, which no client may do (§4.1). */
        px__bytebuf_reset(&hc->in, 0);
        px__bytebuf_reset(&hc->pending, 0);
    }
    atomic_store(&hc->upgraded, wc);
    px__http_flush(hc);
    px__http_update_reading(hc);
    pthread_mutex_unlock(&hc->lock);
    px__http_conn_unref(hc); /* the exchange's */
    return 0;
}

int px_ws_upgrade(px_http_exchange_t *ex, px_ws_server_t *s,
                  const px_ws_handshake_t *hs, const char *subprotocol,
                  size_t subprotocol_len, const px_http_header_t *extra,
                  size_t num_extra, void *data, px_ws_conn_t **out)
{
    if (ex == NULL || s == NULL || hs == NULL || out == NULL)
        return -EINVAL;
    char *head = NULL;
    size_t head_len = 0;
    int rc = px_ws_handshake_response(hs, subprotocol, subprotocol_len, extra,
                                      num_extra, &head, &head_len);
    if (rc < 0)
        return rc;
    px_ws_conn_t *wc = calloc(1, sizeof(*wc));
    if (wc == NULL) {
        free(head);
        return -ENOMEM;
    }
    px_ws_receiver_options_t ro = {
        .on_message = on_message,
        .on_control = on_control,
        .on_close = on_peer_close,
        .arg = wc,
        .max_message_size = s->o.max_message_size,
        .peer_is_client = true,
        .deflate = hs->deflate,
    };
    rc = px_ws_receiver_new(&ro, &wc->rx);
    if (rc < 0) {
        free(wc);
        free(head);
        return rc;
    }
    wc->server = s;
    atomic_fetch_add(&s->refs, 1);
    wc->conn = px_http_exchange_conn(ex);
    px_conn_ref(wc->conn);
    wc->data = data;
    wc->deflate = hs->deflate;
    wc->code = PX_WS_CLOSE_ABNORMAL;
    atomic_init(&wc->refs, 2); /* the caller's and the HTTP connection's */
    atomic_init(&wc->last_input_ns, px_now_ns());
    pthread_mutex_init(&wc->lock, NULL);
    /* On the sweep's list before input can arrive, so that a close racing
     * with the upgrade finds it there. */
    pthread_mutex_lock(&s->lock);
    wc->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = wc;
    s->conns = wc;
    pthread_mutex_unlock(&s->lock);

    rc = hand_over(ex, head, head_len, wc);
    free(head);
    if (rc < 0) {
        pthread_mutex_lock(&s->lock);
        if (wc->prev != NULL)
            wc->prev->next = wc->next;
        else
            s->conns = wc->next;
        if (wc->next != NULL)
            wc->next->prev = wc->prev;
        pthread_mutex_unlock(&s->lock);
        atomic_store(&wc->refs, 1);
        px_ws_conn_unref(wc);
        return rc;
    }
    *out = wc;
    return 0;
}

/* ---- the sweep --------------------------------------------------------------
 */

static void sweep(void *arg)
{
    px_ws_server_t *s = arg;
    uint64_t now = px_now_ns();
    const px_ws_server_options_t *o = &s->o;
    pthread_mutex_lock(&s->lock);
    for (px_ws_conn_t *wc = s->conns; wc != NULL; wc = wc->next) {
        uint64_t close_deadline = atomic_load(&wc->close_deadline);
        if (close_deadline != 0) {
            if (now >= close_deadline)
                px_conn_close(wc->conn, 1);
            continue;
        }
        if (px_loop_draining(s->loop) ||
            px_worker_retiring(s->loop, px_conn_worker(wc->conn))) {
            /* A graceful shutdown (px_loop_drain), or its worker retires:
             * the closing handshake, after which the client reconnects, to
             * another server or worker. */
            static const char why[] = "the server is shutting down";
            px_ws_close(wc, PX_WS_CLOSE_GOING_AWAY, why, sizeof(why) - 1);
            continue;
        }
        if (o->ping_interval_ns == PX_HTTP_NO_TIMEOUT)
            continue;
        uint64_t pinged = atomic_load(&wc->ping_sent_ns);
        uint64_t last = atomic_load(&wc->last_input_ns);
        if (pinged == 0 && now - last >= o->ping_interval_ns) {
            /* Marked before sending, so that an answer arriving at once
             * (which clears the mark) is not overwritten by it. */
            atomic_store(&wc->ping_sent_ns, now);
            pthread_mutex_lock(&wc->lock);
            if (!wc->close_sent && !wc->ended)
                px__ws_send_frame(wc, PX_WS_OP_PING, false, NULL, 0);
            pthread_mutex_unlock(&wc->lock);
        } else if (pinged != 0 && o->ping_timeout_ns != PX_HTTP_NO_TIMEOUT &&
                   now - pinged >= o->ping_timeout_ns) {
            px_conn_close(wc->conn, 1);
        }
    }
    pthread_mutex_unlock(&s->lock);
}
