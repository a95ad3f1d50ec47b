/*
 * fuzz_ws_frames.c - libFuzzer target for the WebSocket receiver
 * (src/websocket/frame.c): feeds the input as a client's bytes, whole and
 * split in two, and checks the invariants its callers rely on:
 *  - the verdict is 0 or a close code the connection may be failed with;
 *  - a message is within the maximum, a text message (and a close reason)
 *    is valid UTF-8, a control payload is at most 125 bytes;
 *  - feeding in two pieces gives the same verdict and the same events.
 *
 * The first input byte picks the options (bit 0: permessage-deflate
 * negotiated, bit 1: a 64-byte maximum message), the second where to split;
 * the rest is the stream. Build as `make fuzz` does: clang
 * -fsanitize=fuzzer,address,undefined with the engine's sources.
 */
#include "px_ws.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

typedef struct {
    uint64_t hash; /* of every event, in order */
    uint64_t max;
} seen_t;

static void mix(seen_t *s, uint64_t v)
{
    s->hash = (s->hash ^ v) * 1099511628211u;
}

static void mix_bytes(seen_t *s, const char *d, size_t len)
{
    for (size_t i = 0; i < len; i++)
        mix(s, (uint8_t)d[i]);
    mix(s, len);
}

static void on_message(void *arg, int op, const char *d, size_t len)
{
    seen_t *s = arg;
    CHECK(op == PX_WS_OP_TEXT || op == PX_WS_OP_BINARY);
    CHECK(len <= s->max);
    if (op == PX_WS_OP_TEXT)
        CHECK(px_ws_utf8_valid(d, len));
    mix(s, (uint64_t)op);
    mix_bytes(s, d, len);
}

static void on_control(void *arg, int op, const char *d, size_t len)
{
    seen_t *s = arg;
    CHECK(op == PX_WS_OP_PING || op == PX_WS_OP_PONG);
    CHECK(len <= PX_WS_MAX_CONTROL);
    mix(s, (uint64_t)op);
    mix_bytes(s, d, len);
}

static void on_close(void *arg, int code, const char *d, size_t len)
{
    seen_t *s = arg;
    CHECK(code == PX_WS_CLOSE_NO_STATUS || (code >= 1000 && code <= 4999));
    CHECK(len <= PX_WS_MAX_CONTROL - 2 && px_ws_utf8_valid(d, len));
    mix(s, (uint64_t)code);
    mix_bytes(s, d, len);
}

static int run(const uint8_t *data, size_t len, size_t cut, uint8_t flags,
               seen_t *s)
{
    px_ws_receiver_options_t o = {
        .on_message = on_message,
        .on_control = on_control,
        .on_close = on_close,
        .arg = s,
        .max_message_size = (flags & 2) ? 64 : 0,
        .peer_is_client = true,
    };
    s->max = (flags & 2) ? 64 : PX_WS_DEFAULT_MAX_MESSAGE;
    if (flags & 1) {
        o.deflate.enabled = true;
        o.deflate.client_max_window_bits = 15;
        o.deflate.server_max_window_bits = 15;
    }
    px_ws_receiver_t *r = NULL;
    if (px_ws_receiver_new(&o, &r) < 0)
        abort();
    int rc = px_ws_receive(r, data, cut, NULL);
    if (rc == 0)
        rc = px_ws_receive(r, data + cut, len - cut, NULL);
    px_ws_receiver_free(r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t cut = data[1];
    data += 2;
    size -= 2;
    if (cut > size)
        cut = size;
    seen_t whole = {14695981039346656037u, 0}, split = whole;
    int a = run(data, size, size, flags, &whole);
    int b = run(data, size, cut, flags, &split);
    CHECK(a == 0 || a == PX_WS_CLOSE_PROTOCOL_ERROR ||
          a == PX_WS_CLOSE_INVALID_DATA || a == PX_WS_CLOSE_TOO_BIG ||
          a == PX_WS_CLOSE_INTERNAL_ERROR);
    CHECK(a == b);
    CHECK(whole.hash == split.hash);
    return 0;
}
