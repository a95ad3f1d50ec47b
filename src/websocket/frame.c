/*
 * frame.c - WebSocket frames (RFC 6455 §5.2): the header parser and
 * writer, masking, and the receiver, which turns a peer's bytes, in
 * whatever pieces they arrive, into whole messages and control frames.
 *
 * The receiver reads a frame in two steps: its header (up to 14 bytes,
 * gathered in a small array when it arrives split), then its payload,
 * unmasked straight into the message being assembled (or the control
 * frame's own 125 bytes), so a payload is copied once whatever its pieces.
 * Everything the RFC asks a receiver to refuse is checked on the header,
 * before any payload byte is stored: an unmasked client frame, reserved
 * bits without the extension that defines them, unknown opcodes, control
 * frames that are fragmented or longer than 125 bytes, a continuation
 * without a message or a new message inside one (1002), and a message
 * growing past its maximum (1009, before the bytes arrive). Text is
 * checked as it arrives, across fragments, so invalid UTF-8 fails at its
 * first bad byte (1007); compressed messages are checked once inflated.
 */
#include "ws_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Message buffer capacity kept between messages; larger ones are freed. */
#define KEEP_MESSAGE_BYTES (64u << 10)

size_t px_ws_frame_parse(const void *buf, size_t len, px_ws_frame_t *f)
{
    const uint8_t *p = buf;
    if (len < 2)
        return 0;
    f->fin = (p[0] & 0x80) != 0;
    f->rsv = (uint8_t)((p[0] >> 4) & 0x7);
    f->opcode = p[0] & 0x0F;
    f->masked = (p[1] & 0x80) != 0;
    uint64_t n = p[1] & 0x7F;
    size_t at = 2;
    if (n == 126) {
        if (len < 4)
            return 0;
        n = ((uint64_t)p[2] << 8) | p[3];
        at = 4;
    } else if (n == 127) {
        if (len < 10)
            return 0;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | p[2 + i];
        at = 10;
    }
    if (f->masked) {
        if (len < at + 4)
            return 0;
        memcpy(f->mask, p + at, 4);
        at += 4;
    } else {
        memset(f->mask, 0, 4);
    }
    f->len = n;
    f->header_len = at;
    return at;
}

size_t px_ws_frame_header(uint8_t out[PX_WS_MAX_HEADER], bool fin, bool rsv1,
                          int opcode, uint64_t len, const uint8_t *mask)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
    uint8_t mbit = mask ? 0x80 : 0;
    size_t at;
    if (len < 126) {
        out[1] = (uint8_t)(mbit | len);
        at = 2;
    } else if (len <= 0xFFFF) {
        out[1] = mbit | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        at = 4;
    } else {
        out[1] = mbit | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        at = 10;
    }
    if (mask) {
        memcpy(out + at, mask, 4);
        at += 4;
    }
    return at;
}

void px_ws_mask(void *data, size_t len, const uint8_t mask[4], size_t offset)
{
    uint8_t *p = data;
    size_t i = 0;
    /* Byte by byte up to a multiple of 4 from the mask's start, then a
     * word at a time with the mask rotated to match. */
    for (; i < len && (offset + i) % 4 != 0; i++)
        p[i] ^= mask[(offset + i) % 4];
    uint32_t m;
    memcpy(&m, mask, 4);
    uint64_t m8 = ((uint64_t)m << 32) | m;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m8;
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] ^= mask[(offset + i) % 4];
}

/* ---- the receiver ------------------------------------------------------- */

struct px_ws_receiver_s {
    px_ws_receiver_options_t o;
    px__ws_inflater_t *inflater; /* made on the first compressed message */
    bool done;                   /* closed or failed: input is ignored */
    /* The frame being read. */
    uint8_t head[PX_WS_MAX_HEADER];
    size_t head_len; /* header bytes gathered, while split */
    bool in_payload;
    px_ws_frame_t frame;
    uint64_t payload_pos;
    /* The message being assembled. */
    bool in_message;
    int msg_opcode;
    bool msg_compressed;
    uint32_t utf8;
    px__bytebuf_t msg;
    px__bytebuf_t plain; /* a compressed message, inflated */
    uint8_t control[PX_WS_MAX_CONTROL];
};

int px_ws_receiver_new(const px_ws_receiver_options_t *opts,
                       px_ws_receiver_t **out)
{
    if (opts == NULL || out == NULL)
        return -EINVAL;
    px_ws_receiver_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->o = *opts;
    if (r->o.max_message_size == 0)
        r->o.max_message_size = PX_WS_DEFAULT_MAX_MESSAGE;
    *out = r;
    return 0;
}

void px_ws_receiver_free(px_ws_receiver_t *r)
{
    if (r == NULL)
        return;
    px__ws_inflater_free(r->inflater);
    px__bytebuf_free(&r->msg);
    px__bytebuf_free(&r->plain);
    free(r);
}

typedef struct {
    int code;
    const char *reason;
} verdict_t;

#define OK ((verdict_t){0, NULL})
#define FAIL(c, why) ((verdict_t){(c), (why)})

static bool is_control(int opcode) { return opcode >= 0x8; }

/* Whether a close frame's code may be received (§7.4: the defined codes
 * that are not reserved for reports, and the registered and private
 * ranges). */
static bool close_code_valid(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* Checks a parsed header against the receiver's state. */
static verdict_t check_header(px_ws_receiver_t *r, const px_ws_frame_t *f)
{
    int op = f->opcode;
    if (op > PX_WS_OP_BINARY && op < PX_WS_OP_CLOSE)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "unknown opcode");
    if (op > PX_WS_OP_PONG)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "unknown opcode");
    if (f->masked != r->o.peer_is_client)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR,
                    r->o.peer_is_client ? "unmasked frame" : "masked frame");
    bool starts_message = op == PX_WS_OP_TEXT || op == PX_WS_OP_BINARY;
    uint8_t allowed = r->o.deflate.enabled && starts_message ? 0x4 : 0;
    if (f->rsv & ~allowed)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "reserved bits set");
    if (f->len > INT64_MAX)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "invalid length");
    if (is_control(op)) {
        if (!f->fin)
            return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "fragmented control frame");
        if (f->len > PX_WS_MAX_CONTROL)
            return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "control frame too long");
        return OK;
    }
    if (op == PX_WS_OP_CONT && !r->in_message)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "continuation without message");
    if (op != PX_WS_OP_CONT && r->in_message)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "new message inside message");
    uint64_t so_far = op == PX_WS_OP_CONT ? r->msg.len : 0;
    if (f->len > r->o.max_message_size - so_far)
        return FAIL(PX_WS_CLOSE_TOO_BIG, "message too big");
    if (starts_message) {
        r->in_message = true;
        r->msg_opcode = op;
        r->msg_compressed = (f->rsv & 0x4) != 0;
        r->utf8 = PX__UTF8_ACCEPT;
        px__bytebuf_reset(&r->msg, KEEP_MESSAGE_BYTES);
    }
    if (px__bytebuf_reserve_exact(&r->msg, (size_t)f->len) < 0)
        return FAIL(PX_WS_CLOSE_INTERNAL_ERROR, "out of memory");
    return OK;
}

static verdict_t finish_close(px_ws_receiver_t *r, size_t len)
{
    int code = PX_WS_CLOSE_NO_STATUS;
    const char *reason = "";
    size_t reason_len = 0;
    if (len == 1)
        return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "invalid close frame");
    if (len >= 2) {
        code = (r->control[0] << 8) | r->control[1];
        if (!close_code_valid(code))
            return FAIL(PX_WS_CLOSE_PROTOCOL_ERROR, "invalid close code");
        reason = (const char *)r->control + 2;
        reason_len = len - 2;
        if (!px_ws_utf8_valid(reason, reason_len))
            return FAIL(PX_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in reason");
    }
    r->done = true;
    if (r->o.on_close)
        r->o.on_close(r->o.arg, code, reason, reason_len);
    return OK;
}

static verdict_t finish_message(px_ws_receiver_t *r)
{
    const char *data = r->msg.data;
    size_t len = r->msg.len;
    if (r->msg_compressed) {
        if (r->inflater == NULL &&
            px__ws_inflater_new(r->o.deflate.client_max_window_bits,
                                r->o.peer_is_client
                                    ? r->o.deflate.client_no_context_takeover
                                    : r->o.deflate.server_no_context_takeover,
                                &r->inflater) < 0)
            return FAIL(PX_WS_CLOSE_INTERNAL_ERROR, "out of memory");
        px__bytebuf_reset(&r->plain, KEEP_MESSAGE_BYTES);
        int rc = px__ws_inflate(r->inflater, data, len, r->o.max_message_size,
                                &r->plain);
        if (rc == PX_WS_CLOSE_TOO_BIG)
            return FAIL(rc, "message too big");
        if (rc != 0)
            return FAIL(rc, rc == PX_WS_CLOSE_INVALID_DATA
                                ? "invalid compressed data"
                                : "out of memory");
        data = r->plain.data;
        len = r->plain.len;
        if (r->msg_opcode == PX_WS_OP_TEXT && !px_ws_utf8_valid(data, len))
            return FAIL(PX_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
    } else if (r->msg_opcode == PX_WS_OP_TEXT && r->utf8 != PX__UTF8_ACCEPT) {
        return FAIL(PX_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
    }
    r->in_message = false;
    if (r->o.on_message)
        r->o.on_message(r->o.arg, r->msg_opcode, data ? data : "", len);
    px__bytebuf_reset(&r->msg, KEEP_MESSAGE_BYTES);
    if (r->msg_compressed)
        px__bytebuf_reset(&r->plain, KEEP_MESSAGE_BYTES);
    return OK;
}

static verdict_t finish_frame(px_ws_receiver_t *r)
{
    const px_ws_frame_t *f = &r->frame;
    r->in_payload = false;
    switch (f->opcode) {
    case PX_WS_OP_CLOSE:
        return finish_close(r, (size_t)f->len);
    case PX_WS_OP_PING:
    case PX_WS_OP_PONG:
        if (r->o.on_control)
            r->o.on_control(r->o.arg, f->opcode, (const char *)r->control,
                            (size_t)f->len);
        return OK;
    default:
        return f->fin ? finish_message(r) : OK;
    }
}

/* Takes payload bytes of the current frame; returns how many. */
static size_t take_payload(px_ws_receiver_t *r, const uint8_t *data, size_t len,
                           verdict_t *v)
{
    px_ws_frame_t *f = &r->frame;
    uint64_t left = f->len - r->payload_pos;
    size_t take = len < left ? len : (size_t)left;
    if (take == 0) { /* an empty payload: its buffers may be NULL */
        *v = finish_frame(r);
        return 0;
    }
    uint8_t *dest;
    if (is_control(f->opcode)) {
        dest = r->control + r->payload_pos;
    } else {
        dest = (uint8_t *)r->msg.data + r->msg.len;
        r->msg.len += take;
    }
    memcpy(dest, data, take);
    if (f->masked)
        px_ws_mask(dest, take, f->mask, (size_t)r->payload_pos);
    if (!is_control(f->opcode) && r->msg_opcode == PX_WS_OP_TEXT &&
        !r->msg_compressed) {
        r->utf8 = px__utf8_step(r->utf8, dest, take);
        if (r->utf8 == PX__UTF8_REJECT) {
            *v = FAIL(PX_WS_CLOSE_INVALID_DATA, "invalid UTF-8");
            return take;
        }
    }
    r->payload_pos += take;
    if (r->payload_pos == f->len)
        *v = finish_frame(r);
    return take;
}

int px_ws_receive(px_ws_receiver_t *r, const void *data, size_t len,
                  const char **reason)
{
    const uint8_t *p = data;
    verdict_t v = OK;
    while (!r->done && v.code == 0 && (len > 0 || r->in_payload)) {
        if (r->in_payload) {
            if (len == 0 && r->frame.len != r->payload_pos)
                break;
            size_t used = take_payload(r, p, len, &v);
            p += used;
            len -= used;
            continue;
        }
        /* Gather the header: straight from the input when it holds it. */
        size_t n;
        size_t used;
        if (r->head_len == 0 && (n = px_ws_frame_parse(p, len, &r->frame))) {
            used = n;
        } else {
            size_t copy = PX_WS_MAX_HEADER - r->head_len;
            if (copy > len)
                copy = len;
            memcpy(r->head + r->head_len, p, copy);
            n = px_ws_frame_parse(r->head, r->head_len + copy, &r->frame);
            if (n == 0) {
                r->head_len += copy;
                p += copy;
                len -= copy;
                continue;
            }
            used = n - r->head_len;
            r->head_len = 0;
        }
        p += used;
        len -= used;
        v = check_header(r, &r->frame);
        if (v.code != 0)
            break;
        r->in_payload = true;
        r->payload_pos = 0;
    }
    if (v.code != 0) {
        r->done = true;
        if (reason)
            *reason = v.reason;
        return v.code;
    }
    return 0;
}
