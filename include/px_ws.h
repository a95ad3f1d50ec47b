/*
 * px_ws.h - WebSocket (RFC 6455) with permessage-deflate (RFC 7692) beside
 * the HTTP/1.1 server layer.
 *
 * Two layers, like src/http's parser and server:
 *
 *  - Sans-I/O protocol pieces that touch no socket: the opening handshake's
 *    checks and answer (px_ws_handshake_*), the frame header parser and
 *    writer, and the receiver (px_ws_receiver_*), which takes a client's
 *    bytes in any pieces and reports whole messages and control frames,
 *    checking masking, fragmentation, UTF-8 and the size limit, and
 *    inflating compressed messages. A fuzzer drives it without an engine.
 *
 *  - Connections (px_ws_conn_t): an HTTP exchange upgraded with
 *    px_ws_upgrade. From then on the HTTP server hands the connection's
 *    input to the WebSocket connection, which answers pings, runs the
 *    closing handshake, pings idle peers and drops those that stop
 *    answering (px_ws_server_t holds those settings and the timer), and
 *    sends from any thread. Groups (px_ws_group_t) send one message to
 *    many connections, whichever workers they are on.
 *
 * Functions return 0 or a negative code (px.h's PX_E*, a negated errno or a
 * PX_WS_E* code below) unless they say otherwise.
 */
#ifndef PX_WS_H
#define PX_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "px.h"
#include "px_http_server.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opcodes (RFC 6455 §5.2). */
enum {
    PX_WS_OP_CONT = 0x0,
    PX_WS_OP_TEXT = 0x1,
    PX_WS_OP_BINARY = 0x2,
    PX_WS_OP_CLOSE = 0x8,
    PX_WS_OP_PING = 0x9,
    PX_WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455 §7.4.1). 1005 and 1006 are never sent: they
 * report a close frame without a code, and a connection lost without
 * one. */
enum {
    PX_WS_CLOSE_NORMAL = 1000,
    PX_WS_CLOSE_GOING_AWAY = 1001,
    PX_WS_CLOSE_PROTOCOL_ERROR = 1002,
    PX_WS_CLOSE_UNSUPPORTED_DATA = 1003,
    PX_WS_CLOSE_NO_STATUS = 1005,
    PX_WS_CLOSE_ABNORMAL = 1006,
    PX_WS_CLOSE_INVALID_DATA = 1007,
    PX_WS_CLOSE_POLICY = 1008,
    PX_WS_CLOSE_TOO_BIG = 1009,
    PX_WS_CLOSE_INTERNAL_ERROR = 1011,
};

/* Handshake refusals: name, value, HTTP status, message. */
#define PX_WS_ERROR_MAP(X)                                                     \
    X(E_NOT_UPGRADE, -21001, 426, "not a WebSocket upgrade request")           \
    X(E_METHOD, -21002, 400, "a WebSocket handshake must be a GET")            \
    X(E_HTTP_VERSION, -21003, 400, "a WebSocket handshake needs HTTP/1.1")     \
    X(E_VERSION, -21004, 426, "unsupported Sec-WebSocket-Version (not 13)")    \
    X(E_KEY, -21005, 400, "missing or invalid Sec-WebSocket-Key")              \
    X(E_SUBPROTOCOL, -21006, 500, "the subprotocol was not offered")

enum {
#define PX_WS_ERROR_ENUM(name, value, status, message) PX_WS_##name = (value),
    PX_WS_ERROR_MAP(PX_WS_ERROR_ENUM)
#undef PX_WS_ERROR_ENUM
};

/* The message of a PX_WS_E* code (NULL for other codes), and the HTTP
 * status a refused handshake is answered with (0 for other codes). */
const char *px_ws_strerror(int code);
int px_ws_error_status(int code);

/* ---- the opening handshake (RFC 6455 §4.2, RFC 7692 §5, §7.1) ----------- */

/* Negotiated permessage-deflate parameters. Window bits are 9..15: an
 * offer of server_max_window_bits=8 is declined, because zlib's raw
 * deflate cannot make an 8-bit window. */
typedef struct {
    bool enabled;
    bool server_no_context_takeover;
    bool client_no_context_takeover;
    int server_max_window_bits; /* our compressor's window */
    int client_max_window_bits; /* the client's; 15 when it sent none */
    bool client_bits_offered;   /* the client's offer named it */
} px_ws_deflate_t;

/* The server's own cap on its compressor's window: 2^12 bytes keeps a
 * compressing connection's memory near 20 KiB rather than 260 KiB (the
 * cap the websockets library also uses), at a small cost in ratio. */
#define PX_WS_DEFAULT_SERVER_WINDOW_BITS 12

typedef struct {
    const char *key; /* Sec-WebSocket-Key, in the request */
    size_t key_len;
    /* Sec-WebSocket-Protocol fields' values, in the request (several
     * fields are one list); empty when none was offered. */
    const px_http_header_t *protocols[8];
    size_t num_protocols;
    /* The first acceptable permessage-deflate offer, when the caller asked
     * for compression. */
    px_ws_deflate_t deflate;
} px_ws_handshake_t;

/* Checks that request is a version 13 WebSocket opening handshake and
 * reads its key, subprotocols and (with compression true) picks the first
 * acceptable permessage-deflate offer, capping the server's window at
 * max_window_bits (9..15, 0 for the default). 0, or a PX_WS_E* code whose
 * px_ws_error_status is the answer (426 comes with
 * "Sec-WebSocket-Version: 13" when the version is the problem). */
int px_ws_handshake_check(const px_http_request_t *request, bool compression,
                          int max_window_bits, px_ws_handshake_t *hs);

/* Whether token (len bytes) is one of the subprotocols the client
 * offered: the only ones a server may choose. */
bool px_ws_handshake_offers(const px_ws_handshake_t *hs, const char *token,
                            size_t len);

/* Splits the offered subprotocols: calls fn(arg, token, len) for each, in
 * order. */
void px_ws_handshake_each_protocol(const px_ws_handshake_t *hs,
                                   void (*fn)(void *arg, const char *token,
                                              size_t len),
                                   void *arg);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), 28 characters
 * and a NUL. */
#define PX_WS_ACCEPT_LEN 28
void px_ws_accept_key(const char *key, size_t len,
                      char out[PX_WS_ACCEPT_LEN + 1]);

/* The "101 Switching Protocols" head that accepts hs with subprotocol
 * (NULL or empty: none; it must be one the client offered), the negotiated
 * extension and the caller's extra fields (lines checked as
 * px_http_respond does), into a malloc'd *head of *len bytes. */
int px_ws_handshake_response(const px_ws_handshake_t *hs,
                             const char *subprotocol, size_t subprotocol_len,
                             const px_http_header_t *extra, size_t num_extra,
                             char **head, size_t *len);

/* ---- frames (RFC 6455 §5) ----------------------------------------------- */

/* The longest frame header: 2 bytes, 8 of extended length, 4 of mask. */
#define PX_WS_MAX_HEADER 14
/* The longest control frame payload. */
#define PX_WS_MAX_CONTROL 125

typedef struct {
    bool fin;
    uint8_t rsv; /* RSV1..3 as bits 2..0 (0x4: RSV1) */
    uint8_t opcode;
    bool masked;
    uint8_t mask[4];
    uint64_t len;      /* the payload's */
    size_t header_len; /* bytes of header */
} px_ws_frame_t;

/* Parses the frame header at buf[0..len): its length in bytes (2..14), or
 * 0 when more bytes are needed. A frame's validity (opcodes, lengths,
 * masking) is the receiver's business; this only reads. An extended
 * 64-bit length with its top bit set reports len above INT64_MAX. */
size_t px_ws_frame_parse(const void *buf, size_t len, px_ws_frame_t *frame);

/* Writes the header of a frame with the given FIN, RSV1, opcode and
 * payload length into out; mask NULL for a server's (unmasked) frame.
 * Returns its length. */
size_t px_ws_frame_header(uint8_t out[PX_WS_MAX_HEADER], bool fin, bool rsv1,
                          int opcode, uint64_t len, const uint8_t *mask);

/* XORs len bytes with mask, the first byte with mask[offset % 4]. */
void px_ws_mask(void *data, size_t len, const uint8_t mask[4], size_t offset);

/* Whether buf[0..len) is valid UTF-8 (no overlongs, surrogates or code
 * points beyond U+10FFFF). */
bool px_ws_utf8_valid(const void *buf, size_t len);

/* ---- the receiver ------------------------------------------------------- */

typedef struct px_ws_receiver_s px_ws_receiver_t;

typedef struct {
    /* A whole message: PX_WS_OP_TEXT (valid UTF-8) or _BINARY, unmasked
     * and inflated. data is valid until the callback returns. */
    void (*on_message)(void *arg, int opcode, const char *data, size_t len);
    /* A ping or pong, with its payload (at most 125 bytes). */
    void (*on_control)(void *arg, int opcode, const char *data, size_t len);
    /* The peer's close frame: code (PX_WS_CLOSE_NO_STATUS when it had
     * none) and reason (valid UTF-8). Nothing after it is read. */
    void (*on_close)(void *arg, int code, const char *reason, size_t len);
    void *arg;
    /* The largest message, after inflating; 0: 1 MiB. */
    uint64_t max_message_size;
    /* The peer is a client: its frames must be masked (a server's must
     * not be). */
    bool peer_is_client;
    /* Negotiated compression (the peer's side: client_* parameters when
     * the peer is a client). */
    px_ws_deflate_t deflate;
} px_ws_receiver_options_t;

#define PX_WS_DEFAULT_MAX_MESSAGE (UINT64_C(1) << 20)

int px_ws_receiver_new(const px_ws_receiver_options_t *opts,
                       px_ws_receiver_t **r);
void px_ws_receiver_free(px_ws_receiver_t *r);

/* Feeds len received bytes; callbacks run before it returns. Returns 0,
 * or the close code the connection must fail with (1002 protocol error,
 * 1007 invalid UTF-8, 1009 too big, 1011 out of memory), after which the
 * receiver takes no more. After the peer's close frame, bytes are
 * ignored. *reason, when not NULL, gets a short text for the close. */
int px_ws_receive(px_ws_receiver_t *r, const void *data, size_t len,
                  const char **reason);

/* ---- compression -------------------------------------------------------- */

typedef struct px_ws_deflater_s px_ws_deflater_t;

/* A compressor of messages with a window of window_bits (9..15), reset
 * after every message when no_context_takeover. */
int px_ws_deflater_new(int window_bits, bool no_context_takeover,
                       px_ws_deflater_t **d);
void px_ws_deflater_free(px_ws_deflater_t *d);
/* Compresses one message into a malloc'd *out of *out_len bytes, without
 * the final 00 00 FF FF (RFC 7692 §7.2.1). */
int px_ws_deflate(px_ws_deflater_t *d, const void *data, size_t len, char **out,
                  size_t *out_len);

/* ---- connections -------------------------------------------------------- */

typedef struct px_ws_server_s px_ws_server_t;
typedef struct px_ws_conn_s px_ws_conn_t;

typedef struct {
    /* The largest message received; 0: PX_WS_DEFAULT_MAX_MESSAGE. */
    uint64_t max_message_size;
    /* A peer that sent nothing for ping_interval is pinged; one that then
     * sends nothing for ping_timeout is dropped (1006 on our side). 0:
     * 20 s each; PX_HTTP_NO_TIMEOUT: never. */
    uint64_t ping_interval_ns;
    uint64_t ping_timeout_ns;
    /* After our close frame, how long the peer has to answer with its
     * own before the connection is dropped. 0: 5 s. */
    uint64_t close_timeout_ns;
    /* Bytes a connection may leave unsent before a further message to it
     * closes it with 1008 instead (a client that does not read): bounds
     * the memory a slow reader holds. 0: 4 MiB. */
    size_t max_send_buffer;
    /* Called on the connection's worker, from its input: */
    void (*on_message)(px_ws_conn_t *wc, int opcode, const char *data,
                       size_t len);
    /* Exactly once per connection, when its engine connection closed:
     * code and reason are the peer's close frame's when the closing
     * handshake ran, else ours (1006 when the connection just ended). */
    void (*on_closed)(px_ws_conn_t *wc, int code, const char *reason,
                      size_t len);
    /* A pong arrived (after px_ws_ping or the server's own ping). */
    void (*on_pong)(px_ws_conn_t *wc, const char *data, size_t len);
} px_ws_server_options_t;

/* Settings and the timer of a set of connections (one per registered
 * class, say). PX_ESTOPPED when the loop does not run. */
int px_ws_server_new(px_loop_t *loop, const px_ws_server_options_t *opts,
                     px_ws_server_t **server);
/* Drops the caller's reference; open connections keep it alive. */
void px_ws_server_free(px_ws_server_t *server);
/* 1 while server's loop runs its sweep (the pings and timeouts), 0 once that
 * loop stopped: a holder outlives its loop, and one kept for a later loop
 * would leave that loop's connections neither pinged nor timed out. */
int px_ws_server_running(px_ws_server_t *server);

/*
 * Answers ex (whose request passed px_ws_handshake_check into hs) with 101
 * and makes it a WebSocket connection: from here on the HTTP server hands
 * its input to the new connection. data is px_ws_conn_data's. The caller
 * gets a reference (*wc), dropped with px_ws_conn_unref. PX_ECLOSED: the
 * connection went away (the exchange is done); PX_EBADSTATE: the exchange
 * was answered already; other codes leave the exchange open.
 */
int px_ws_upgrade(px_http_exchange_t *ex, px_ws_server_t *server,
                  const px_ws_handshake_t *hs, const char *subprotocol,
                  size_t subprotocol_len, const px_http_header_t *extra,
                  size_t num_extra, void *data, px_ws_conn_t **wc);

void px_ws_conn_ref(px_ws_conn_t *wc);
void px_ws_conn_unref(px_ws_conn_t *wc);
void *px_ws_conn_data(const px_ws_conn_t *wc);
void px_ws_conn_set_data(px_ws_conn_t *wc, void *data);
px_conn_t *px_ws_conn_engine(const px_ws_conn_t *wc);

/* Sends a message (PX_WS_OP_TEXT, which the caller made valid UTF-8, or
 * _BINARY), compressed when negotiated; any thread. PX_ECLOSED after the
 * closing handshake started; PX_ESENDBUF when the peer left
 * max_send_buffer bytes unread: the connection is then closed with 1008. */
int px_ws_send(px_ws_conn_t *wc, int opcode, const void *data, size_t len);
/* Sends a ping (payload at most 125 bytes; -EINVAL beyond). */
int px_ws_ping(px_ws_conn_t *wc, const void *data, size_t len);
/* Starts the closing handshake with code (1000..4999 but the reserved
 * ones; -EINVAL otherwise) and a reason of at most 123 bytes: the
 * connection closes when the peer answers, or after close_timeout.
 * Closing twice is a no-op. */
int px_ws_close(px_ws_conn_t *wc, int code, const char *reason, size_t len);
/* Bytes accepted for sending but not yet written. */
size_t px_ws_buffered_amount(const px_ws_conn_t *wc);
/* Whether the closing handshake started or the connection closed. */
bool px_ws_closing(const px_ws_conn_t *wc);

/* ---- groups ------------------------------------------------------------- */

/*
 * A group is a set of connections a message is broadcast to. Broadcasts
 * take the group's lock for reading only, so any number run at once from
 * any threads; joining and leaving take it for writing. A broadcast frames
 * the message once and lends the same bytes to every connection's send (no
 * copy per member); members are sent uncompressed, which RFC 7692 allows
 * per message. A member that left max_send_buffer unread is closed with
 * 1008 rather than sent more, so a client that never reads holds a bounded
 * amount of memory and delays nobody.
 */
typedef struct px_ws_group_s px_ws_group_t;

/* The process-wide group named name (created on first use; every
 * interpreter of the process sees the same one). A new reference. */
int px_ws_group_get(const char *name, size_t len, px_ws_group_t **group);
void px_ws_group_unref(px_ws_group_t *group);
/* Adds wc (0 as well when it is a member already); PX_ECLOSED when wc is
 * closing. A closing connection leaves its groups by itself. */
int px_ws_group_join(px_ws_group_t *group, px_ws_conn_t *wc);
/* Removes wc; 0 whether it was a member or not. */
int px_ws_group_leave(px_ws_group_t *group, px_ws_conn_t *wc);
size_t px_ws_group_size(px_ws_group_t *group);
/* Sends the message to every member but except (NULL: all); returns how
 * many it was queued for, or a negative code when nothing could be. */
long px_ws_group_broadcast(px_ws_group_t *group, int opcode, const void *data,
                           size_t len, const px_ws_conn_t *except);

#ifdef __cplusplus
}
#endif

#endif /* PX_WS_H */
