/*
 * ops_internal.h - the per-request record the server keeps for the access
 * log and the counters (observe.c, accesslog.c, metrics.c) and the
 * trusted proxies' list (forwarded.c). Nothing here is API: see
 * px_http_ops.h.
 *
 * The record lives in the connection (one request at a time) and is
 * guarded by hc->lock: begun when a head is parsed (read_head), ended once
 * when the request's answer is queued (respond.c), when its stream ends
 * (stream.c), or when the server answers an error itself.
 */
#ifndef PX_HTTP_OPS_INTERNAL_H
#define PX_HTTP_OPS_INTERNAL_H

#include "bytebuf.h"
#include "px_http_ops.h"

#include <stdatomic.h>
#include <stdbool.h>

/* Longest IP address text, with room for an IPv6 zone. */
#define PX__HTTP_IP_MAX 64

typedef struct px__http_trust_s px__http_trust_t;

typedef struct {
    bool active;       /* begun, not ended */
    uint64_t start_ns; /* when its head was complete */
    int status;        /* a streamed answer's, once its head is queued */
    uint64_t bytes;    /* a streamed answer's body bytes so far */
    /* The connection's peer, looked up at its first request. */
    bool peer_known;
    bool peer_trusted; /* a proxy whose headers are believed */
    char peer[PX_ADDRSTRLEN];
    /* What a trusted proxy said about this request. */
    bool forwarded; /* fwd_host names the client */
    bool https;
    int fwd_port;
    char fwd_host[PX__HTTP_IP_MAX];
    /* The log line (log on only): the request's part before the status,
     * then from split on what follows the status and size. */
    px__bytebuf_t line;
    size_t split;
} px__http_obs_t;

/* Bits of px__http_ops_on. */
#define PX__HTTP_OPS_LOG 1
#define PX__HTTP_OPS_COUNT 2
#define PX__HTTP_OPS_LOG_DURATION 4 /* the log's lines show the duration */
/* What needs the request's duration (two clock reads). */
#define PX__HTTP_OPS_TIMED (PX__HTTP_OPS_COUNT | PX__HTTP_OPS_LOG_DURATION)
extern atomic_int px__http_ops_on;

/* The status logged for a request whose connection the server closed
 * without answering it (the loop stopped under a pending handler, or no
 * answer could be made): nginx's code for that, which log analysers know,
 * where a number of three digits is expected. */
#define PX__HTTP_STATUS_NO_RESPONSE 444

/* ---- observe.c (hc->lock held) ---- */

struct px_http_conn_s;
/* A head was parsed: resolves the proxy headers, starts the clock and,
 * with the log on, writes the line's request part. */
void px__http_obs_begin(struct px_http_conn_s *hc,
                        const px_http_request_t *head);
/* The request's answer is out: counted and logged, once. */
void px__http_obs_end(struct px_http_conn_s *hc, int status, uint64_t bytes);
/* The server answers an error itself: ends the request under way, or
 * logs one whose head was never read. */
void px__http_obs_error(struct px_http_conn_s *hc, int status, uint64_t bytes);
void px__http_obs_free(px__http_obs_t *obs);

/* ---- accesslog.c ---- */

/* Appends obs's line with status, bytes and duration to the worker's
 * buffer. */
void px__http_log_line(int worker, const px__http_obs_t *obs, int status,
                       uint64_t bytes, uint64_t duration_ns);
/* Writes the request part of obs's line (see px__http_obs_t). */
void px__http_log_begin(px__http_obs_t *obs, const char *client,
                        const px_http_request_t *head);

/* ---- metrics.c ---- */

void px__http_count(int worker, int status, uint64_t bytes,
                    uint64_t duration_ns);

/* ---- forwarded.c ---- */

/* Parses a list of addresses and networks ("a.b.c.d", "::1",
 * "10.0.0.0/8"), separated by commas or spaces, "*" for any: NULL *out
 * for an empty or NULL list. 0, -EINVAL for a bad entry, -ENOMEM. */
int px__http_trust_parse(const char *list, px__http_trust_t **out);
void px__http_trust_free(px__http_trust_t *t);
/* Whether the peer (px_conn_peername's host and port) is trusted. */
bool px__http_trust_peer(const px__http_trust_t *t, const char *host, int port);
/* Sets obs's forwarded, fwd_host, fwd_port and https from head's proxy
 * fields. */
void px__http_forwarded(const px__http_trust_t *t, px__http_obs_t *obs,
                        const px_http_request_t *head);

#endif /* PX_HTTP_OPS_INTERNAL_H */
