/*
 * px_http_ops.h - what a person running the HTTP server sees of it: the
 * access log, the per-worker request counters behind the metrics, and the
 * client address and scheme that trusted proxies report.
 *
 * The access log and the counters belong to the process, not to a server:
 * every server (of every interpreter, in the binding's mode interpreters)
 * writes to the one log and counts into the one table. Both are off until
 * turned on; off, a request costs them one relaxed load.
 *
 * Per-request work is per worker (the worker of the request's connection):
 * counters are relaxed atomics in a cache line of that worker's, summed when
 * read; log lines go into that worker's buffer (its own mutex, which only a
 * late answer from another thread can contend for), written out when it
 * fills or once a second by a flusher thread. No lock or cache line is
 * shared by all workers on the request path.
 */
#ifndef PX_HTTP_OPS_H
#define PX_HTTP_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "px.h"
#include "px_http_server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- access log ---------------------------------------------------------- */

typedef enum {
    PX_HTTP_LOG_COMMON = 0, /* Apache's common log format */
    PX_HTTP_LOG_COMBINED,   /* common, plus "Referer" and "User-Agent" */
    PX_HTTP_LOG_JSON,       /* one JSON object per line, with the duration */
} px_http_log_format_t;

/*
 * Starts logging one line per answered request: to path (appended to,
 * created with mode 0666 less the umask), or to standard error when path
 * is NULL. A request is logged once, when its response is queued (a
 * streamed one when it ends); errors the server answers itself (400, 408,
 * 413, 431, ...) are logged too, with "-" for a request whose head could
 * not be read. Lines reach the file within a second. 0, a negated errno
 * from open, or PX_EBADSTATE when the log is already open.
 */
int px_http_access_log_open(const char *path, px_http_log_format_t format);
/* Opens the log's path again and swaps it in under the same descriptor
 * (after logrotate renamed it): lines go to the new file from then on.
 * 0 (nothing to do for standard error), a negated errno (the old file
 * stays in use), or PX_EBADSTATE when no log is open. */
int px_http_access_log_reopen(void);
/* Writes out every worker's buffered lines now. */
void px_http_access_log_flush(void);
/* Flushes, stops logging and closes the file. */
void px_http_access_log_close(void);

/* ---- trusted proxies ---------------------------------------------------- */

/*
 * A server made with forwarded_allow_ips (px_http_server_options_t) takes
 * the client address and scheme of a request from its proxy headers when
 * the connection's peer is one of those addresses (or any, with "*"; or a
 * Unix domain socket's peer, whom the socket file's permissions chose):
 * RFC 7239 "Forwarded" (for=, proto=) when the request has one, else
 * "X-Forwarded-For" and "X-Forwarded-Proto". The client is the rightmost
 * address that is not itself a trusted proxy (or the leftmost when all
 * are), so a client cannot pose as another by sending its own header
 * through a proxy that appends to it. Headers from other peers are
 * ignored.
 *
 * For the request being handled: 1 when a trusted proxy named its client,
 * with *host (an IP address, valid until the exchange is answered) and
 * *port (0 when the proxy gave none); 0 when not. *https is set either way:
 * whether a trusted proxy said the client used https (or wss).
 */
int px_http_exchange_forwarded(const px_http_exchange_t *ex, const char **host,
                               int *port, int *https);

/* ---- request counters -----------------------------------------------------
 */

/* Upper bounds of the request duration histogram, in nanoseconds; a last
 * bucket (+Inf) holds the rest. */
#define PX_HTTP_DURATION_BUCKETS 14
extern const uint64_t px_http_duration_bounds_ns[PX_HTTP_DURATION_BUCKETS];

typedef struct {
    uint64_t requests[6]; /* by status class: [1] 1xx ... [5] 5xx; [0]
                             none (the connection went away unanswered) */
    uint64_t duration[PX_HTTP_DURATION_BUCKETS + 1]; /* per bucket, not
                                                        cumulative */
    uint64_t duration_sum_ns;
    uint64_t body_bytes; /* response body bytes */
} px_http_worker_counters_t;

/* Turns the counters on or off (they keep their values). */
void px_http_counters_enable(int on);
/* Copies the counters of workers 0..n-1 (n at most PX_MAX_WORKERS). */
void px_http_counters_read(px_http_worker_counters_t *out, int n);

#ifdef __cplusplus
}
#endif

#endif /* PX_HTTP_OPS_H */
