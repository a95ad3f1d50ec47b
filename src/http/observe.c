/*
 * observe.c - the per-request record of a connection (ops_internal.h):
 * where the server's request path meets the access log, the counters and
 * the trusted proxies' headers.
 *
 * With the log and the counters off and no trusted proxy, a request costs
 * a load of px__http_ops_on and a test. The peer's address is looked up
 * once per connection, at its first request, and only when something
 * needs it.
 */
#include "ops_internal.h"
#include "server_internal.h"

#include <string.h>

atomic_int px__http_ops_on;

/* The connection's peer as text (its trust decided), once. */
static void know_peer(px_http_conn_t *hc)
{
    px__http_obs_t *obs = &hc->obs;
    if (obs->peer_known)
        return;
    obs->peer_known = true;
    int port = -1;
    if (px_conn_peername(hc->conn, obs->peer, sizeof(obs->peer), &port) < 0)
        obs->peer[0] = '\0';
    obs->peer_trusted = hc->server->trust != NULL &&
                        px__http_trust_peer(hc->server->trust, obs->peer, port);
    /* A Unix domain socket's peer has no address to show. */
    if (port < 0)
        obs->peer[0] = '\0';
}

void px__http_obs_begin(px_http_conn_t *hc, const px_http_request_t *head)
{
    px__http_obs_t *obs = &hc->obs;
    int on = atomic_load_explicit(&px__http_ops_on, memory_order_relaxed);
    obs->forwarded = false;
    obs->https = false;
    if (hc->server->trust != NULL) {
        know_peer(hc);
        if (obs->peer_trusted)
            px__http_forwarded(hc->server->trust, obs, head);
    }
    obs->active = on != 0;
    obs->line.len = 0;
    if (!on)
        return;
    obs->start_ns = (on & PX__HTTP_OPS_TIMED) ? px_now_ns() : 0;
    obs->status = 0;
    obs->bytes = 0;
    if (on & PX__HTTP_OPS_LOG) {
        know_peer(hc);
        px__http_log_begin(obs, obs->forwarded ? obs->fwd_host : obs->peer,
                           head);
    }
}

static void finish(px_http_conn_t *hc, int status, uint64_t bytes)
{
    px__http_obs_t *obs = &hc->obs;
    int on = atomic_load_explicit(&px__http_ops_on, memory_order_relaxed);
    /* No start: the counters were turned on while it was under way. */
    uint64_t duration = (on & PX__HTTP_OPS_TIMED) && obs->start_ns != 0
                            ? px_now_ns() - obs->start_ns
                            : 0;
    int worker = px_conn_worker(hc->conn);
    if (on & PX__HTTP_OPS_COUNT)
        px__http_count(worker, status, bytes, duration);
    if ((on & PX__HTTP_OPS_LOG) && obs->line.len > 0)
        px__http_log_line(worker, obs, status, bytes, duration);
}

void px__http_obs_end(px_http_conn_t *hc, int status, uint64_t bytes)
{
    if (!hc->obs.active)
        return;
    hc->obs.active = false;
    finish(hc, status, bytes);
}

void px__http_obs_error(px_http_conn_t *hc, int status, uint64_t bytes)
{
    px__http_obs_t *obs = &hc->obs;
    if (obs->active) {
        px__http_obs_end(hc, status, bytes);
        return;
    }
    int on = atomic_load_explicit(&px__http_ops_on, memory_order_relaxed);
    if (!on)
        return;
    /* No head was read: the line says "-" for the request. */
    obs->start_ns = px_now_ns();
    obs->forwarded = false;
    if (on & PX__HTTP_OPS_LOG) {
        know_peer(hc);
        px__http_log_begin(obs, obs->peer, NULL);
    }
    finish(hc, status, bytes);
}

void px__http_obs_free(px__http_obs_t *obs) { px__bytebuf_free(&obs->line); }

int px_http_exchange_forwarded(const px_http_exchange_t *ex, const char **host,
                               int *port, int *https)
{
    const px__http_obs_t *obs = &ex->hc->obs;
    *https = obs->https;
    if (!obs->forwarded)
        return 0;
    *host = obs->fwd_host;
    *port = obs->fwd_port;
    return 1;
}
