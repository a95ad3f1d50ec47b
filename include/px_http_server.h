/*
 * px_http_server.h - the HTTP/1.1 server layer: engine connections served
 * with the px_http parser, requests handed to one callback, responses framed
 * and queued in order.
 *
 * A server (px_http_server_t) holds the limits, the timeouts and the request
 * callback; it serves connections accepted by px_http_listen, or connections
 * whose engine callbacks belong to someone else (a language binding), who
 * hands their events over with px_http_conn_start/_input/_eof/_closed.
 * A client that half-closes (shutdown(SHUT_WR) after its requests) gets
 * the answers to every request it sent, late ones included, then the
 * connection closes.
 *
 * Per connection, one request at a time: the head is parsed, the body
 * framing decided before any body byte is read (a Content-Length over
 * max_body_size is answered 413 at once; "Expect: 100-continue" gets its
 * "100 Continue" when the body is wanted), the body read (Content-Length or
 * chunked), then the callback gets the request and an exchange handle. The
 * next pipelined request is parsed only after the response was given, so
 * responses leave in request order. The response may be given inside the
 * callback (the fast path: responses of pipelined requests are gathered and
 * written with one send) or later from any thread.
 *
 * The server writes Date (cached per second), Content-Length and Connection
 * on every response; HEAD gets the head a GET would get. "OPTIONS *" (about
 * the server, not a resource: RFC 9110 §9.3.7) never reaches the callback:
 * the server answers it 200 with an Allow field listing the methods it
 * implements and no content; the asterisk with another method is a 400. A
 * request that cannot be parsed or framed is answered with its status (400,
 * 413, 414, 417, 431, 501, 505), a short body and "Connection: close"; the
 * server then discards further input for a short while (so that the client
 * reads the answer rather than a reset) and closes. Timeouts: header_timeout
 * (from the first byte of a head to its end; a client trickling its head gets
 * 408), body_timeout (between two reads of a body; 408), min_body_rate (a
 * body slower than that on average once its first body_timeout passed; 408),
 * keepalive_timeout (idle between requests; closed silently). A new
 * connection that sends nothing is closed silently after header_timeout.
 *
 * A body that does not arrive with its head is buffered: in a buffer of its
 * declared Content-Length (a chunked body's grows as it arrives), counted
 * against max_body_memory, a bound on the bodies every server of the process
 * buffers together. A body that would pass it is answered 503 with
 * "Retry-After" and "Connection: close" (before the client sends it, when it
 * expects 100-continue).
 *
 * A server made with stream_request_body calls back as soon as a head is
 * complete instead: a body that did not arrive whole with its head is then
 * read by the exchange's owner while it arrives (px_http_body_read, below),
 * with a bounded window of received bytes in between.
 *
 * Every function returns 0 or a negative code: a PX_E* or negated errno
 * (px.h), or a PX_HTTP_E* code (px_http.h).
 */
#ifndef PX_HTTP_SERVER_H
#define PX_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "px.h"
#include "px_http.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_http_server_s px_http_server_t;
/* One connection served by a server. */
typedef struct px_http_conn_s px_http_conn_t;
/* One request awaiting its response. */
typedef struct px_http_exchange_s px_http_exchange_t;

/* What the request callback sees. Every pointer points into the server's
 * input buffer and is valid until the callback returns: a response given
 * later must copy what it needs first. */
typedef struct {
    px_http_request_t head; /* method, target, version, header fields */
    const char *path;       /* the target's path, raw (not decoded); "/"
                               for an absolute-form target without one */
    size_t path_len;
    const char *query; /* after the '?', raw; "" when there is none */
    size_t query_len;
    const char *body; /* the whole body (chunked: decoded); empty when
                         body_streamed */
    size_t body_len;
    int body_streamed;    /* the body is still arriving: read it with
                             px_http_body_read (stream_request_body) */
    int keep_alive;       /* the connection stays open after this one,
                             unless the response closes it */
    const char *raw_head; /* the head as received, request line through
                             the blank line */
    size_t raw_head_len;
} px_http_server_request_t;

/* Called on an engine thread for each request, never concurrently for one
 * connection. It must answer every exchange exactly once (px_http_respond,
 * px_http_respond_file, px_http_abort or a stream), now or later. A
 * callback for a request that waited behind a late answer runs in a work
 * item of the connection's worker. */
typedef void (*px_http_request_cb)(px_http_exchange_t *exchange,
                                   const px_http_server_request_t *request);

/* No timeout, for the *_timeout_ns fields. */
#define PX_HTTP_NO_TIMEOUT UINT64_MAX
/* No minimum, for min_body_rate. */
#define PX_HTTP_NO_MIN_RATE UINT64_MAX
/* No bound, for max_body_memory. */
#define PX_HTTP_NO_MEMORY_BOUND UINT64_MAX

typedef struct {
    px_http_options_t limits;      /* the parser's limits (px_http.h);
                                      max_headers is capped at
                                      PX_HTTP_SERVER_MAX_HEADERS */
    uint64_t header_timeout_ns;    /* 0: 10 s */
    uint64_t body_timeout_ns;      /* between two reads of a body; 0: 30 s.
                                      PX_HTTP_NO_TIMEOUT also turns
                                      min_body_rate off */
    uint64_t keepalive_timeout_ns; /* 0: 5 s */
    /* Bytes per second a body must average: it may take body_timeout +
     * received / min_body_rate from its start (like Apache's mod_reqtimeout
     * MinRate), so a client sending a byte now and then cannot hold its
     * buffer for long. 0: 1024. */
    uint64_t min_body_rate;
    /* Bytes the bodies being received may hold, summed over every server
     * of the process (each checks its own bound against the one count).
     * 0: px_http_default_body_memory(). */
    uint64_t max_body_memory;
    /* Call on_request once a head is complete, with a body that did not
     * arrive whole with it left to px_http_body_read (see below). */
    int stream_request_body;
    /* The peers whose proxy headers set a request's client and scheme
     * (px_http_ops.h): addresses and networks separated by commas, "*"
     * for any; NULL or "": none. px_http_server_new fails with -EINVAL
     * for an entry that is neither. */
    const char *forwarded_allow_ips;
    px_http_request_cb on_request; /* required */
    void *data;                    /* px_http_server_data() */
} px_http_server_options_t;

/* max_body_memory's default: a quarter of the machine's memory, at most
 * 1 GiB. */
uint64_t px_http_default_body_memory(void);
/* Bytes held now by the bodies being received, every server's. */
uint64_t px_http_body_memory_in_use(void);

#define PX_HTTP_SERVER_MAX_HEADERS 256

/* A server on loop; its timeouts run on a timer of that loop. -EINVAL when
 * on_request is missing, PX_ESTOPPED when the loop does not run. */
int px_http_server_new(px_loop_t *loop, const px_http_server_options_t *opts,
                       px_http_server_t **server);
void *px_http_server_data(const px_http_server_t *server);
/* Drops the caller's reference; new connections are refused. What is
 * left winds down: idle connections are closed, requests under way finish
 * (their responses close their connections), and the timeout timer stops
 * after the last connection. Close the server's listeners first, and call
 * this before the loop is freed (stopping the loop ends it all at once). */
void px_http_server_free(px_http_server_t *server);

/* Listens on host:port (as px_listen) and serves every accepted connection;
 * equivalent to px_listen with px_http_conn_callbacks and the server as
 * conn_data. */
int px_http_listen(px_http_server_t *server, const char *host, int port,
                   int backlog, px_listener_t **listener);
extern const px_conn_callbacks_t px_http_conn_callbacks;

/* ---- serving a connection whose callbacks are someone else's ----------- */

/* Starts serving conn (open, its on_open running): call from on_open. data
 * is px_http_exchange_conn_data()'s. Then pass every on_data to
 * px_http_conn_input, on_eof to px_http_conn_eof (which closes the
 * connection once every request received is answered) and on_close to
 * px_http_conn_closed, which ends the caller's use of hc. A request
 * callback runs inside px_http_conn_input, or, after a response given
 * outside the callback while more requests waited, in a work item of the
 * loop: such a callback may still run when px_http_conn_closed returns, so
 * an embedder that answers late keeps data valid until its exchanges are
 * answered. */
int px_http_conn_start(px_http_server_t *server, px_conn_t *conn, void *data,
                       px_http_conn_t **hc);
void px_http_conn_input(px_http_conn_t *hc, const char *data, size_t len);
void px_http_conn_eof(px_http_conn_t *hc);
void px_http_conn_closed(px_http_conn_t *hc);

/* ---- exchanges ----------------------------------------------------------- */

px_http_server_t *px_http_exchange_server(const px_http_exchange_t *ex);
px_conn_t *px_http_exchange_conn(const px_http_exchange_t *ex);
void *px_http_exchange_conn_data(const px_http_exchange_t *ex);
/* Whether the request is a HEAD: its response has no body. */
int px_http_exchange_head_only(const px_http_exchange_t *ex);

/*
 * Answers the exchange with status, the caller's header fields and body
 * (copied or written before the call returns), from any thread. The server
 * owns the framing: Content-Length, Transfer-Encoding and Date fields in
 * headers are dropped (it writes its own), and so is Connection, except
 * that a "close" in it closes the connection after this response. A HEAD
 * request gets the head only, with the body's length.
 *
 * Returns 0 once the response is queued, or PX_ECLOSED when the
 * connection closed meanwhile or the response could not be queued (the
 * connection is then closed): either way the exchange is done. Any other
 * code means nothing was sent and the exchange is still open (answer it
 * again, say with a 500): a PX_HTTP_E_RESPONSE_* code for a status outside
 * 200..599, a body given with 204 or 304, or a field that could inject a
 * line; -ENOMEM; -EINVAL. PX_EBADSTATE: the exchange was already answered.
 */
int px_http_respond(px_http_exchange_t *ex, int status,
                    const px_http_header_t *headers, size_t num_headers,
                    const void *body, size_t body_len);

/* Like px_http_respond, but a large body is not copied: it is lent to the
 * engine (px_conn_send_owned) and must stay valid and unchanged until
 * release(arg) runs, exactly once whatever the result: before the call
 * returns, or later on the connection's worker from its dispatch (where
 * its callbacks run). A body the caller already holds is sent at the pace
 * the client reads, whatever its size, with no second copy. */
int px_http_respond_owned(px_http_exchange_t *ex, int status,
                          const px_http_header_t *headers, size_t num_headers,
                          const void *body, size_t body_len,
                          px_release_fn release, void *arg);

/* Like px_http_respond, with length bytes of file fd from offset as the
 * body, sent with sendfile (the server dups fd; the caller keeps its own).
 * 304 sends no body; give length 0 with 416. */
int px_http_respond_file(px_http_exchange_t *ex, int status,
                         const px_http_header_t *headers, size_t num_headers,
                         int fd, off_t offset, uint64_t length);

/* Answers nothing and resets the connection; the exchange is done. */
void px_http_abort(px_http_exchange_t *ex);

/* ---- streamed responses ------------------------------------------------- */

/*
 * A streamed response answers an exchange with a head first and its body
 * in pieces, written as they are produced, from any thread, during or
 * after the request callback. The next pipelined request is served once
 * the stream ends. Chunked by default; with a content length, that many
 * bytes exactly; an HTTP/1.0 client, which cannot read chunks, gets a body
 * that ends when the connection closes. A HEAD request gets the head only
 * (writes are dropped).
 *
 * Memory is bounded by the producer, with the stream's help: a write
 * copies its bytes and reports whether the stream's unsent bytes passed
 * high_water; the producer then stops, and on_drain tells it to carry on
 * once they fell to low_water. Producers inside a callback of the
 * connection must stop and return rather than wait: the engine writes a
 * connection's queue out between its callbacks.
 */

/* The content length of a chunked (or, for HTTP/1.0, close-delimited)
 * stream. */
#define PX_HTTP_STREAM_CHUNKED UINT64_MAX
/* px_http_stream_write: queued, and the unsent bytes passed high_water. */
#define PX_HTTP_STREAM_FULL 1

typedef void (*px_http_stream_cb)(void *arg);

typedef struct {
    size_t high_water; /* 0: 1 MiB */
    size_t low_water;  /* 0: 256 KiB (at most high_water) */
    /* After a write returned PX_HTTP_STREAM_FULL: the unsent bytes fell to
     * low_water. Runs once per such write (unless on_close ran first), on
     * the connection's worker, in its dispatch, or on the writer's thread
     * before the write returns 0 instead. */
    px_http_stream_cb on_drain;
    /* The connection closed before the stream ended; runs at most once,
     * on the thread that learnt of it (the connection's on_close). */
    px_http_stream_cb on_close;
    /* Runs exactly once, after px_http_stream_end or _abort, when no other
     * callback of the stream runs or will: the owner frees arg there. */
    px_http_stream_cb on_done;
    void *arg;
} px_http_stream_options_t;

/*
 * Starts answering ex with status and the caller's fields (as
 * px_http_respond: the server owns the framing fields, "Connection:
 * close" closes after the response) and a body of content_length bytes, or
 * PX_HTTP_STREAM_CHUNKED. 0: the head is queued; finish with
 * px_http_stream_end or px_http_stream_abort. PX_ECLOSED: the connection
 * closed meanwhile; the exchange is done and no callback will run. Other
 * codes (those of px_http_respond; PX_HTTP_E_RESPONSE_FRAMING for 204 and
 * 304, which have no body) leave the exchange open, unanswered.
 */
int px_http_stream_start(px_http_exchange_t *ex, int status,
                         const px_http_header_t *headers, size_t num_headers,
                         uint64_t content_length,
                         const px_http_stream_options_t *opts);

/* Queues len bytes of the body (copied). 0, or PX_HTTP_STREAM_FULL (see
 * above); PX_ECLOSED when the connection closed (the bytes are dropped);
 * PX_HTTP_E_RESPONSE_FRAMING past the content length (nothing queued);
 * PX_EBADSTATE when ex is not streaming. */
int px_http_stream_write(px_http_exchange_t *ex, const void *data, size_t len);

/* The stream's bytes queued and not yet written to the socket. */
size_t px_http_stream_unsent(px_http_exchange_t *ex);

/* Ends the body; the exchange is done. PX_HTTP_E_RESPONSE_FRAMING when
 * fewer bytes than the content length were written: the connection is
 * then closed, as the client cannot tell the response complete. */
int px_http_stream_end(px_http_exchange_t *ex);

/* Ends the exchange by resetting the connection (a producer that failed
 * after the head was sent); the exchange is done. */
void px_http_stream_abort(px_http_exchange_t *ex);

/* ---- streamed request bodies -------------------------------------------- */

/*
 * With stream_request_body, a request whose body did not arrive whole with
 * its head reaches the callback with body_streamed set, and its owner reads
 * the body (decoded, for chunked) as it arrives, from any thread, until the
 * exchange is done (answered, or its stream ended). The request callback
 * itself must not wait for the body: the connection's bytes are received
 * between its callbacks, so read from a work item, a thread, or when told.
 *
 * Memory: reading from the socket pauses while PX_HTTP_BODY_WINDOW bytes
 * of body are received and not read, and resumes once the reader took all
 * but a quarter of them; the engine's own input buffer adds at most its
 * bound (1 MiB) on top. body_timeout and min_body_rate count only the time
 * the server waits for the client, not the time it waits for the reader.
 *
 * "Expect: 100-continue" is answered when the reader first finds no body
 * byte (px_http_body_read or _available finding none, or px_http_body_wait).
 *
 * Errors end the body: PX_HTTP_E_BODY_TOO_LARGE when a chunked body passes
 * max_body_size, another PX_HTTP_E_* code for bad chunked framing,
 * PX_HTTP_E_BODY_TIMEOUT, PX_ECLOSED when the client ended the connection
 * first. The server answers the first three itself (413, 400, 408, with
 * "Connection: close") when no response was started, and closes the
 * connection; the exchange then stays the owner's to finish, and an answer
 * given after that is dropped (PX_ECLOSED).
 *
 * Answered before its end (the reader stopped early, or never read), the
 * rest of a body is read and dropped when it has a Content-Length of at
 * most PX_HTTP_BODY_DISCARD_MAX bytes left and the client is not waiting
 * for a 100 Continue, so that the connection serves its next request;
 * otherwise the response says "Connection: close" and the connection
 * closes after it (RFC 9112 §9.6).
 */

#define PX_HTTP_BODY_WINDOW (256u << 10)
#define PX_HTTP_BODY_DISCARD_MAX (1u << 20)

/* What is there to read: > 0 bytes ready now, 0 at the end of the body,
 * PX_HTTP_INCOMPLETE when more is to come and none is there yet, an error
 * code once every byte received before the error was read, or
 * PX_EBADSTATE when the exchange is done or its body was not streamed. */
ssize_t px_http_body_available(px_http_exchange_t *ex);

/* Copies up to len bytes of the body into buf: the count copied (> 0), or
 * what px_http_body_available returns when it has none. */
ssize_t px_http_body_read(px_http_exchange_t *ex, void *buf, size_t len);

/* Asks for cb(arg) once px_http_body_available has something other than
 * PX_HTTP_INCOMPLETE to say, or the exchange is done: it runs exactly once,
 * on the thread that learnt it, with no lock of the server held. 0: asked;
 * 1: there is something already (nothing asked); PX_EBADSTATE: the exchange
 * is done, its body was not streamed, or a wait is pending already. */
int px_http_body_wait(px_http_exchange_t *ex, px_http_stream_cb cb, void *arg);

/* ---- static files ------------------------------------------------------- */

/* How to answer a request for a regular file, from its stat and the
 * request's conditional and range fields: */
typedef struct {
    int status;   /* the status to answer with */
    off_t offset; /* the file's bytes to send */
    uint64_t length;
    px_http_header_t headers[4]; /* ETag, Last-Modified, and Accept-Ranges
                                    or Content-Range; they point into the
                                    arrays below */
    size_t num_headers;
    char etag[64];
    char last_modified[PX_HTTP_DATE_LEN + 1];
    char content_range[64];
} px_http_file_plan_t;

/*
 * Plans the response to request for a file with stat st, meant to be
 * answered with status (usually 200). With 200 and a GET or HEAD:
 *  - If-None-Match (weak comparison) listing the file's ETag, or "*" → 304;
 *    without If-None-Match, If-Modified-Since not before Last-Modified → 304.
 *  - one byte range ("bytes=a-b", "bytes=a-", suffix "bytes=-n"), when
 *    If-Range (if any) matches → 206 with Content-Range "bytes a-b/N"; a
 *    range starting past the end → 416 with "bytes * /N" (no space), length
 *    0. Several ranges, a unit other than bytes, or a malformed Range → the
 *    whole file (200): answering multipart/byteranges is not worth its
 *    complexity here.
 * For other methods, If-None-Match listing the ETag (or "*") → 412. Any
 * other status is planned as the whole file, with no conditionals.
 * The ETag is strong, made of the file's size, modification time and inode.
 */
void px_http_file_plan(const px_http_server_request_t *request,
                       const struct stat *st, int status,
                       px_http_file_plan_t *plan);

#ifdef __cplusplus
}
#endif

#endif /* PX_HTTP_SERVER_H */
