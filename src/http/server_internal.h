/*
 * server_internal.h - what the HTTP server's files share: the server and
 * connection structs, the connection's states, and the response functions
 * server.c calls in respond.c. Nothing here is API.
 *
 * A connection's life (px_http_conn_t): started by on_open, fed by on_data,
 * ended by on_close; after on_eof (the peer sends no more) it closes once
 * the requests it received are answered. Its state says what the bytes it
 * receives are for:
 *
 *   HEAD -> BODY -> HANDLING -> HEAD ...   (keep-alive)
 *                       \----> CLOSING     (Connection: close, errors, abort)
 *   HEAD or BODY --error--> LINGER -> (closed by the peer or a deadline)
 *
 * A streamed request body (stream_request_body, reqbody.c) is still being
 * received in HANDLING ("body_open"); answered before its end, the
 * connection goes HANDLING -> DISCARD -> HEAD while the rest is dropped.
 *
 * "driving" marks the one thread that parses and runs the request callback
 * at a time: on_data normally, or a work item that continues with pipelined
 * requests after a response given outside the callback. Input that arrives
 * while a callback runs waits in "pending", so the request's pointers into
 * "in" stay valid. The mutex guards everything but the atomics; it is never
 * held while the request callback runs.
 *
 * References: the engine connection's (dropped by px_http_conn_closed), one
 * per unanswered exchange, one per queued continuation. The server list
 * holds none: a connection leaves it in px_http_conn_closed.
 */
#ifndef PX_HTTP_SERVER_INTERNAL_H
#define PX_HTTP_SERVER_INTERNAL_H

#include "bytebuf.h"
#include "http_internal.h"
#include "ops_internal.h"
#include "px_http_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PX__HC_HEAD = 0, /* reading a request head (or waiting for one) */
    PX__HC_BODY,     /* reading the body of a parsed head */
    PX__HC_HANDLING, /* the request callback has it, no response yet */
    PX__HC_DISCARD,  /* answered: the rest of its streamed body is dropped */
    PX__HC_LINGER,   /* an error was answered: discard input, then close */
    PX__HC_CLOSING,  /* closing: input is dropped */
    PX__HC_UPGRADED, /* a WebSocket now: input goes to "upgraded" */
} px__hc_state_t;

/* What the connection's deadline is for. */
typedef enum {
    PX__WAIT_NONE = 0,
    PX__WAIT_IDLE,   /* no request byte yet: close silently */
    PX__WAIT_HEAD,   /* a head is arriving: 408 */
    PX__WAIT_BODY,   /* a body is arriving: 408 */
    PX__WAIT_LINGER, /* discarding after an error: close */
} px__wait_t;

typedef struct px__http_stream_s px__http_stream_t;
struct px_ws_conn_s;

struct px_http_exchange_s {
    px_http_conn_t *hc;
    bool head_only;  /* a HEAD request: no body in the response */
    bool keep_alive; /* the request allows keeping the connection */
    int minor_version;
    px__http_stream_t *stream; /* a streamed answer under way (stream.c);
                                  guarded by hc->lock */
};

struct px_http_server_s {
    px_loop_t *loop;
    px_http_options_t limits;   /* resolved: no zero fields */
    uint64_t header_timeout_ns; /* PX_HTTP_NO_TIMEOUT: none */
    uint64_t body_timeout_ns;
    uint64_t keepalive_timeout_ns;
    uint64_t min_body_rate;   /* PX_HTTP_NO_MIN_RATE: none */
    uint64_t max_body_memory; /* PX_HTTP_NO_MEMORY_BOUND: none */
    bool stream_request_body;
    px__http_trust_t *trust; /* forwarded_allow_ips; NULL: none */
    px_http_request_cb on_request;
    void *data;
    atomic_int refs;       /* the owner's, the timer's, each conn's */
    atomic_bool closed;    /* px_http_server_free was called */
    pthread_mutex_t lock;  /* guards the list and the timer */
    px_http_conn_t *conns; /* open connections, for the sweep */
    px_timer_t *sweep;     /* NULL once its done callback ran */
};

struct px_http_conn_s {
    px_http_server_t *server;
    px_conn_t *conn; /* referenced until the last unref */
    void *data;
    atomic_int refs;
    px_http_conn_t *prev, *next;  /* the server's list */
    _Atomic uint64_t deadline_ns; /* 0: none; read by the sweep unlocked */

    pthread_mutex_t lock; /* guards everything below */
    px__hc_state_t state;
    px__wait_t wait;
    bool driving;
    bool closed; /* px_http_conn_closed ran */
    bool paused; /* we paused the engine's reading */
    bool continuation_queued;
    bool unanswered;         /* the exchange awaits its response */
    bool served;             /* a response was given: idle waits use
                                keepalive_timeout, not header_timeout */
    bool read_ended;         /* the peer half-closed: close once the
                                requests received are answered */
    size_t unsent_seen;      /* response bytes still queued when the idle
                                deadline last passed */
    uint64_t idle_since_ns;  /* when the current idle wait began (a
                                draining loop closes it after a grace) */
    atomic_bool output_full; /* too many responses queued: parsing and
                                reading wait until the client reads */
    px__bytebuf_t in;        /* input from the current request on */
    px__bytebuf_t pending;   /* input that arrived while driving */
    px__bytebuf_t out;       /* responses not handed to the engine */

    /* The request being read (offsets from its first byte). */
    size_t last_len; /* the parser's re-check hint */
    size_t head_len;
    px_http_framing_t framing;
    px_http_chunked_t chunked;
    size_t body_len; /* body bytes so far (chunked: decoded) */
    size_t raw_len;  /* input bytes of the request so far */
    bool continue_sent;
    /* While the body is buffered (bodies.c): */
    size_t body_received;   /* its input bytes so far, framing included */
    uint64_t body_start_ns; /* 0: not buffered yet */
    size_t body_charge;     /* bytes of the body memory count it holds */
    /* A body streamed to the exchange's owner (reqbody.c): */
    bool body_streamed;    /* the current exchange's body is streamed */
    bool body_open;        /* more of it is to be received */
    bool body_full;        /* reading paused: the reader is behind */
    int body_error;        /* what ended it early: 0 or a code */
    uint64_t body_left;    /* of a Content-Length body */
    uint64_t body_full_ns; /* when body_full was set */
    px__bytebuf_t body;    /* decoded bytes from body_pos not yet read */
    size_t body_pos;
    px_http_stream_cb body_cb; /* a px_http_body_wait, until told */
    void *body_arg;

    px_http_exchange_t exchange;
    px__http_obs_t obs; /* the request's record (ops_internal.h) */
    /* The WebSocket the connection was upgraded to (src/websocket), set
     * once with the state UPGRADED; it holds a reference. */
    _Atomic(struct px_ws_conn_s *) upgraded;
};

/* A body reader's wait, taken out under hc->lock and told after unlocking
 * (px__http_body_tell). */
typedef struct {
    px_http_stream_cb cb;
    void *arg;
} px__http_body_waiter_t;

/* ---- respond.c ---------------------------------------------------------- */

/* Appends an error response (status, a short body, Connection: close; a
 * 503 also Retry-After) to hc->out; hc->lock held. */
void px__http_put_error(px_http_conn_t *hc, int status);
/* Appends the interim "100 Continue"; hc->lock held. */
void px__http_put_continue(px_http_conn_t *hc);
/* Hands hc->out to the engine; a failure aborts the connection. Marks the
 * connection output_full when the client left too much unread. hc->lock
 * held. Returns 0 or the send's error. */
int px__http_flush(px_http_conn_t *hc);
/* Appends the head of ex's response (the caller's fields less those the
 * server owns) to hc->out, framed by body and length; a connection that
 * may be kept (the request's wish, no "Connection: close" field, a server
 * not closing) is kept only if keep is true. Sets *kept to the outcome.
 * hc->lock held. 0, or a code with nothing appended. */
int px__http_put_answer_head(px_http_conn_t *hc, const px_http_exchange_t *ex,
                             int status, const px_http_header_t *headers,
                             size_t num_headers, px_http_body_t body,
                             uint64_t length, bool keep, bool *kept);

/* Whether the connection went, or is going, away under an unanswered
 * exchange (closed; closing, or lingering after the server answered a
 * failed streamed body itself): its answer can only be dropped. hc->lock
 * held. */
static inline bool px__http_exchange_lost(const px_http_conn_t *hc)
{
    return hc->closed || hc->state == PX__HC_CLOSING ||
           hc->state == PX__HC_LINGER;
}

/* ---- bodies.c ----------------------------------------------------------- */

/* Resolves the options' min_body_rate and max_body_memory into s. */
void px__http_body_limits(px_http_server_t *s,
                          const px_http_server_options_t *opts);
/* Counts bytes (the capacity of the buffer holding the body) for hc
 * instead of what it held so far; false, and nothing changed, when more
 * would pass the server's max_body_memory. hc->lock held. */
bool px__http_body_charge(px_http_conn_t *hc, size_t bytes);
/* Stops counting hc's buffer: its body is complete or dropped. */
void px__http_body_release(px_http_conn_t *hc);
/* When a body being received times out: body_timeout after its last read
 * at the latest, earlier when slower than min_body_rate; 0 for never.
 * hc->lock held. */
uint64_t px__http_body_deadline(const px_http_conn_t *hc, uint64_t now);

/* ---- reqbody.c ---------------------------------------------------------- */

/* Takes up to len input bytes for the open streamed body (decoding a
 * chunked one); *used says how many: what follows is the next request's.
 * 0, or the code that ended the body (set in hc->body_error). hc->lock
 * held. */
int px__http_body_feed(px_http_conn_t *hc, const char *data, size_t len,
                       size_t *used);
/* Ends the open streamed body with an error code and answers it as
 * reqbody.c's top says; hc->lock held. */
void px__http_body_fail(px_http_conn_t *hc, int code);
/* Whether a response given now may keep the connection, as far as an
 * open streamed body is concerned; hc->lock held. */
bool px__http_body_open_allows_keep(const px_http_conn_t *hc);
/* See px__http_body_answered. */
px__http_body_waiter_t px__http_body_answered_streamed(px_http_conn_t *hc);
/* Whether the reader is far enough behind for reading to pause; hc->lock
 * held. */
bool px__http_body_window_full(const px_http_conn_t *hc);
/* Takes the pending wait, if the body has something to say or the
 * exchange is done (or always: force); hc->lock held. */
px__http_body_waiter_t px__http_body_take_waiter(px_http_conn_t *hc,
                                                 bool force);

/* Tells the pending wait from a work item on the connection's worker, for
 * a caller that holds locks it may not release (the sweep); hc->lock
 * held. Left pending, to be told at the close, when that fails. */
void px__http_body_tell_later(px_http_conn_t *hc);
/* Drops the body's bytes and state; hc->lock held. */
void px__http_body_reset(px_http_conn_t *hc);

/* The three below run for every response: inline, they cost a request
 * without a streamed body a test or two. */

/* Whether a response given now may keep the connection, as far as the
 * request's body is concerned; hc->lock held. */
static inline bool px__http_body_allows_keep(const px_http_conn_t *hc)
{
    return hc->body_open ? px__http_body_open_allows_keep(hc)
                         : hc->body_error == 0;
}

/* The exchange is done, with hc->state set for what follows: an open
 * streamed body is dropped from here on (DISCARD, or nothing when
 * closing). Returns the reader's wait, to tell once unlocked. hc->lock
 * held. */
static inline px__http_body_waiter_t px__http_body_answered(px_http_conn_t *hc)
{
    if (!hc->body_streamed && hc->body_cb == NULL)
        return (px__http_body_waiter_t){NULL, NULL};
    return px__http_body_answered_streamed(hc);
}

/* Tells a taken wait; no lock held. */
static inline void px__http_body_tell(px__http_body_waiter_t w)
{
    if (w.cb != NULL)
        w.cb(w.arg);
}

/* ---- lifetime.c and server.c -------------------------------------------- */

/* The server and a connection are allocated in boxes whose first field
 * tells them apart: conn_data of an accepted connection is the server until
 * on_open replaces it with the connection. */
#define SERVER_MAGIC 0x48545053u /* "HTPS" */
#define CONN_MAGIC 0x48545043u   /* "HTPC" */

typedef struct {
    uint32_t magic;
    px_http_server_t server;
} server_box_t;

typedef struct {
    uint32_t magic;
    px_http_conn_t conn;
} conn_box_t;

#define SERVER_BOX(s) px__container_of_http(s, server_box_t, server)
#define CONN_BOX(hc) px__container_of_http(hc, conn_box_t, conn)
#define px__container_of_http(ptr, type, member)                               \
    ((type *)((char *)(ptr)-offsetof(type, member)))

/* lifetime.c: references, waits and deadlines. */
void px__http_conn_ref(px_http_conn_t *hc);
void px__http_conn_unref(px_http_conn_t *hc);
/* Reading pauses or resumes as the connection's state asks; hc->lock
 * held. */
void px__http_update_reading(px_http_conn_t *hc);
/* Sets the deadline for what the connection waits for; hc->lock held. */
void px__http_arm_wait(px_http_conn_t *hc);
/* The connection waits for nothing, and has no deadline; hc->lock held. */
void px__http_set_no_wait(px_http_conn_t *hc);
/* Closes after what is queued was sent; hc->lock held. */
void px__http_close_gracefully(px_http_conn_t *hc);
/* After the peer's end of input, closes once no request is being answered
 * or waits to be parsed; hc->lock held. */
void px__http_close_if_input_ended(px_http_conn_t *hc);

/* server.c: the drive loop. */
/* After a response, with hc->lock held and the state set: closes, or
 * continues with pipelined input when no thread is driving. */
void px__http_after_response(px_http_conn_t *hc);
/* The sweep (server lock held): a connection stopped by unread responses
 * carries on once the client read most of them. */
void px__http_resume_output(px_http_conn_t *hc);
/* Whether the connection's responses end it ("Connection: close"): the
 * server was freed, its loop drains for a graceful shutdown
 * (px_loop_drain), the connection's worker retires (px_worker_retire), or
 * it serves more than its share while a worker back from retiring has
 * fewer (px_worker_overloaded: the client reconnects, to that one). */
static inline bool px__http_winding_down(px_http_conn_t *hc)
{
    px_http_server_t *s = hc->server;
    int worker = px_conn_worker(hc->conn);
    return atomic_load(&s->closed) || px_loop_draining(s->loop) ||
           px_worker_retiring(s->loop, worker) ||
           px_worker_overloaded(s->loop, worker);
}
/* Sends "100 Continue" when the client waits for it before sending a
 * body that is wanted now; hc->lock held. */
void px__http_send_continue(px_http_conn_t *hc, bool body_started);

/* ---- stream.c ----------------------------------------------------------- */

/* The connection closed (px_http_conn_closed, hc->lock not held): tells a
 * stream under way. */
void px__http_stream_closed(px_http_conn_t *hc);

/* ---- src/websocket/conn.c ---------------------------------------------- */

/* An upgraded connection's input, end of input and close, handed on. */
void px__ws_conn_input(struct px_ws_conn_s *wc, const char *data, size_t len);
void px__ws_conn_eof(struct px_ws_conn_s *wc);
void px__ws_conn_closed(struct px_ws_conn_s *wc);

#endif /* PX_HTTP_SERVER_INTERNAL_H */
