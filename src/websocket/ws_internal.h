/*
 * ws_internal.h - what the WebSocket files share: the UTF-8 validator's
 * incremental form, the inflater, and the server and connection structs
 * (conn.c) that groups (group.c) reach into. Nothing here is API.
 *
 * A connection's life: px_ws_upgrade makes it from an HTTP exchange, with
 * a reference for its caller and one for the HTTP connection, which hands
 * it input (px__ws_conn_input, on the connection's worker) until the
 * engine connection closes (px__ws_conn_closed drops that reference).
 * Closing: our close frame sent (close_sent), the peer's received
 * (close_received), then the engine connection closed (ended). Every
 * frame is sent under the connection's lock, so nothing follows our close
 * frame and compressed messages leave in the order they were compressed.
 */
#ifndef PX_WS_INTERNAL_H
#define PX_WS_INTERNAL_H

#include "bytebuf.h"
#include "http_internal.h"
#include "px_ws.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- utf8.c ------------------------------------------------------------- */

/* The incremental validator's state: PX__UTF8_ACCEPT between whole
 * characters, PX__UTF8_REJECT once invalid, else inside a character. */
#define PX__UTF8_ACCEPT 0
#define PX__UTF8_REJECT UINT32_MAX

/* Advances state over buf[0..len); returns the new state. */
uint32_t px__utf8_step(uint32_t state, const uint8_t *buf, size_t len);

/* ---- deflate.c ---------------------------------------------------------- */

typedef struct px__ws_inflater_s px__ws_inflater_t;

/* A decompressor of messages from a peer whose window is window_bits,
 * reset after every message when no_context_takeover. */
int px__ws_inflater_new(int window_bits, bool no_context_takeover,
                        px__ws_inflater_t **inf);
void px__ws_inflater_free(px__ws_inflater_t *inf);
/* Inflates one whole message (without its final 00 00 FF FF) appending to
 * out; 0, PX_WS_CLOSE_TOO_BIG when out would pass max bytes,
 * PX_WS_CLOSE_INVALID_DATA for corrupt data (RFC 7692 §8: 1007 is what
 * fails the connection then), PX_WS_CLOSE_INTERNAL_ERROR without memory. */
int px__ws_inflate(px__ws_inflater_t *inf, const void *data, size_t len,
                   uint64_t max, px__bytebuf_t *out);

/* ---- conn.c ------------------------------------------------------------- */

#include <pthread.h>
#include <stdatomic.h>

struct px_ws_server_s {
    px_loop_t *loop;
    px_ws_server_options_t o; /* resolved: no zero fields */
    atomic_int refs;          /* the owner's, the timer's, each conn's */
    pthread_mutex_t lock;     /* guards the list and the timer */
    px_ws_conn_t *conns;      /* open connections, for the sweep */
    px_timer_t *sweep;
};

struct px_ws_conn_s {
    px_ws_server_t *server;
    px_conn_t *conn;
    void *data;
    atomic_int refs;
    px_ws_conn_t *prev, *next; /* the server's list */
    px_ws_receiver_t *rx;      /* used by the input's thread only */
    px_ws_deflate_t deflate;
    atomic_bool closing;             /* close_sent or ended, unlocked */
    _Atomic uint64_t last_input_ns;  /* when the peer last sent bytes */
    _Atomic uint64_t ping_sent_ns;   /* our ping awaiting an answer; 0 */
    _Atomic uint64_t close_deadline; /* after close_sent; 0 */

    pthread_mutex_t lock; /* guards everything below */
    px_ws_deflater_t *deflater;
    bool close_sent;
    bool close_received;
    bool ended; /* the engine connection closed */
    int code;   /* what on_closed reports */
    char reason[PX_WS_MAX_CONTROL];
    size_t reason_len;
    px_ws_group_t **groups; /* the groups it joined, referenced */
    size_t num_groups, cap_groups;
};

/* Sends one whole frame; wc->lock held. */
int px__ws_send_frame(px_ws_conn_t *wc, int opcode, bool rsv1, const void *data,
                      size_t len);
/* Whether wc may be sent a message: not closing, and not a reader so
 * slow that it must be closed (which this does, with 1008); wc->lock
 * held. */
bool px__ws_may_send(px_ws_conn_t *wc);

/* ---- group.c ------------------------------------------------------------ */

/* Removes wc from group (after wc left it on its side). */
void px__ws_group_remove(px_ws_group_t *group, px_ws_conn_t *wc);

#endif /* PX_WS_INTERNAL_H */
