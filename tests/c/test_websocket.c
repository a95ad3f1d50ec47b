/*
 * test_websocket.c - tests of the sans-I/O WebSocket pieces: the opening
 * handshake's checks, Sec-WebSocket-Accept and permessage-deflate
 * negotiation; the frame header parser and writer; UTF-8 validation; and
 * the receiver, fed table-driven frame sequences whole, one byte at a time
 * and split at every position, each piece from a guarded buffer, all of
 * which must give the same events and the same verdict.
 */
#include "test_http_util.h"

#include "px_ws.h"

#include <stdbool.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------
 */

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a masked client frame to buf at *len. */
static void put_frame(uint8_t *buf, size_t *len, bool fin, uint8_t rsv,
                      int opcode, const void *payload, size_t n, bool masked)
{
    size_t h = px_ws_frame_header(buf + *len, fin, false, opcode, n,
                                  masked ? MASK : NULL);
    buf[*len] |= (uint8_t)(rsv << 4);
    memcpy(buf + *len + h, payload, n);
    if (masked)
        px_ws_mask(buf + *len + h, n, MASK, 0);
    *len += h + n;
}

typedef struct {
    char log[8192]; /* "T:text|B:3|P:..|C:1000:reason|" */
    size_t len;
} events_t;

/* Logs an event; a payload over 256 bytes by its length alone. */
static void logf_(events_t *e, const char *tag, int n, const char *d, size_t l)
{
    if (l > 256)
        l = 0;
    int w = snprintf(e->log + e->len, sizeof(e->log) - e->len, "%s%d:", tag, n);
    ASSERT_TRUE(w > 0 && e->len + (size_t)w + l + 1 < sizeof(e->log));
    e->len += (size_t)w;
    memcpy(e->log + e->len, d, l);
    e->len += l;
    e->log[e->len++] = '|';
    e->log[e->len] = '\0';
}

static void ev_message(void *arg, int op, const char *d, size_t l)
{
    logf_(arg, op == PX_WS_OP_TEXT ? "T" : "B", (int)l, d, l);
}
static void ev_control(void *arg, int op, const char *d, size_t l)
{
    logf_(arg, op == PX_WS_OP_PING ? "P" : "O", (int)l, d, l);
}
static void ev_close(void *arg, int code, const char *d, size_t l)
{
    logf_(arg, "C", code, d, l);
}

typedef struct {
    int rc;
    events_t ev;
} outcome_t;

/* Feeds in[0..len) in pieces of size step (0: whole). */
static outcome_t feed(const uint8_t *in, size_t len, size_t step, uint64_t max,
                      bool deflate)
{
    outcome_t o;
    memset(&o, 0, sizeof(o));
    px_ws_receiver_options_t opts = {
        .on_message = ev_message,
        .on_control = ev_control,
        .on_close = ev_close,
        .arg = &o.ev,
        .max_message_size = max,
        .peer_is_client = true,
    };
    if (deflate) {
        opts.deflate.enabled = true;
        opts.deflate.client_max_window_bits = 15;
        opts.deflate.server_max_window_bits = 15;
    }
    px_ws_receiver_t *r = NULL;
    ASSERT_INT_EQ(px_ws_receiver_new(&opts, &r), 0);
    size_t at = 0;
    while (at < len && o.rc == 0) {
        size_t n = step == 0 || step > len - at ? len - at : step;
        guarded_t g = guarded_copy(in + at, n);
        o.rc = px_ws_receive(r, g.data, n, NULL);
        guarded_free(&g);
        at += n;
    }
    px_ws_receiver_free(r);
    return o;
}

/* Every way of feeding gives the expected verdict and events. */
static void expect(const uint8_t *in, size_t len, int rc, const char *log)
{
    size_t steps[] = {0, 1, 2, 3, 7, 13};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        outcome_t o = feed(in, len, steps[i], 0, false);
        ASSERT_INT_EQ(o.rc, rc);
        ASSERT_STR_EQ(o.ev.log, log);
    }
    /* Split in two at every position. */
    for (size_t cut = 1; cut < len && len < 400; cut++) {
        outcome_t a;
        memset(&a, 0, sizeof(a));
        px_ws_receiver_options_t opts = {
            ev_message, ev_control, ev_close, &a.ev, 0, true, {0}};
        px_ws_receiver_t *r = NULL;
        ASSERT_INT_EQ(px_ws_receiver_new(&opts, &r), 0);
        a.rc = px_ws_receive(r, in, cut, NULL);
        if (a.rc == 0)
            a.rc = px_ws_receive(r, in + cut, len - cut, NULL);
        px_ws_receiver_free(r);
        ASSERT_INT_EQ(a.rc, rc);
        ASSERT_STR_EQ(a.ev.log, log);
    }
}

/* ---- handshake
 * --------------------------------------------------------------- */

TEST(test_accept_key)
{
    /* RFC 6455 §1.3's example. */
    char out[PX_WS_ACCEPT_LEN + 1];
    px_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    ASSERT_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static int check(const char *head, bool compression, px_ws_handshake_t *hs,
                 px_http_header_t *fields)
{
    px_http_request_t req;
    ssize_t n =
        px_http_parse_request(head, strlen(head), 0, NULL, &req, fields, 32);
    ASSERT_INT_EQ(n, (ssize_t)strlen(head));
    return px_ws_handshake_check(&req, compression, 0, hs);
}

#define UPGRADE_HEAD                                                           \
    "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"                  \
    "Connection: keep-alive, Upgrade\r\n"                                      \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

TEST(test_handshake_checks)
{
    px_ws_handshake_t hs;
    px_http_header_t f[32];
    ASSERT_INT_EQ(
        check(UPGRADE_HEAD "Sec-WebSocket-Version: 13\r\n\r\n", true, &hs, f),
        0);
    ASSERT_SPAN_EQ(hs.key, hs.key_len, "dGhlIHNhbXBsZSBub25jZQ==");
    ASSERT_TRUE(!hs.deflate.enabled);
    ASSERT_INT_EQ(
        check(UPGRADE_HEAD "Sec-WebSocket-Version: 8\r\n\r\n", true, &hs, f),
        PX_WS_E_VERSION);
    ASSERT_INT_EQ(px_ws_error_status(PX_WS_E_VERSION), 426);
    ASSERT_INT_EQ(check("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, &hs, f),
                  PX_WS_E_NOT_UPGRADE);
    ASSERT_INT_EQ(check("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: upgrade\r\nContent-Length: 0\r\n\r\n",
                        true, &hs, f),
                  PX_WS_E_METHOD);
    ASSERT_INT_EQ(check("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: short==\r\n\r\n",
                        true, &hs, f),
                  PX_WS_E_KEY);
    ASSERT_INT_EQ(check("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        "\r\n",
                        true, &hs, f),
                  PX_WS_E_KEY);
}

TEST(test_handshake_subprotocols_and_response)
{
    px_ws_handshake_t hs;
    px_http_header_t f[32];
    ASSERT_INT_EQ(check(UPGRADE_HEAD
                        "Sec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Protocol: chat, superchat\r\n"
                        "Sec-WebSocket-Protocol: v2\r\n\r\n",
                        false, &hs, f),
                  0);
    ASSERT_TRUE(px_ws_handshake_offers(&hs, "superchat", 9));
    ASSERT_TRUE(px_ws_handshake_offers(&hs, "v2", 2));
    ASSERT_TRUE(!px_ws_handshake_offers(&hs, "super", 5));
    char *head = NULL;
    size_t len = 0;
    ASSERT_INT_EQ(
        px_ws_handshake_response(&hs, "nope", 4, NULL, 0, &head, &len),
        PX_WS_E_SUBPROTOCOL);
    px_http_header_t extra = {"X-A", 3, "1\r\nEvil: 1", 10};
    ASSERT_INT_EQ(
        px_ws_handshake_response(&hs, NULL, 0, &extra, 1, &head, &len),
        PX_HTTP_E_RESPONSE_HEADER);
    extra.value = "1";
    extra.value_len = 1;
    ASSERT_INT_EQ(
        px_ws_handshake_response(&hs, "chat", 4, &extra, 1, &head, &len), 0);
    ASSERT_SPAN_EQ(head, len,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                   "Sec-WebSocket-Protocol: chat\r\nX-A: 1\r\n\r\n");
    free(head);
}

static px_ws_deflate_t negotiate(const char *offer)
{
    char head[512];
    snprintf(head, sizeof(head),
             UPGRADE_HEAD "Sec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Extensions: %s\r\n\r\n",
             offer);
    px_ws_handshake_t hs;
    px_http_header_t f[32];
    ASSERT_INT_EQ(check(head, true, &hs, f), 0);
    return hs.deflate;
}

TEST(test_deflate_negotiation)
{
    px_ws_deflate_t d = negotiate("permessage-deflate; client_max_window_bits");
    ASSERT_TRUE(d.enabled && d.client_bits_offered);
    ASSERT_INT_EQ(d.server_max_window_bits, PX_WS_DEFAULT_SERVER_WINDOW_BITS);
    d = negotiate("permessage-deflate; server_max_window_bits=10; "
                  "server_no_context_takeover; client_no_context_takeover");
    ASSERT_TRUE(d.enabled && d.server_no_context_takeover &&
                d.client_no_context_takeover);
    ASSERT_INT_EQ(d.server_max_window_bits, 10);
    /* Declined offers: 8 bits, unknown or repeated parameters, values
     * where none belong; a later acceptable offer is taken instead. */
    ASSERT_TRUE(
        !negotiate("permessage-deflate; server_max_window_bits=8").enabled);
    ASSERT_TRUE(!negotiate("permessage-deflate; foo").enabled);
    ASSERT_TRUE(!negotiate("permessage-deflate; server_no_context_takeover; "
                           "server_no_context_takeover")
                     .enabled);
    ASSERT_TRUE(
        !negotiate("permessage-deflate; client_no_context_takeover=1").enabled);
    ASSERT_TRUE(!negotiate("x-webkit-deflate-frame").enabled);
    d = negotiate("permessage-deflate; server_max_window_bits=8, "
                  "permessage-deflate; server_max_window_bits=\"11\"");
    ASSERT_TRUE(d.enabled);
    ASSERT_INT_EQ(d.server_max_window_bits, 11);
}

/* ---- frames and UTF-8
 * ----------------------------------------------------------- */

TEST(test_frame_header_round_trip)
{
    uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, UINT64_C(1) << 40};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        for (int masked = 0; masked < 2; masked++) {
            uint8_t h[PX_WS_MAX_HEADER];
            size_t n = px_ws_frame_header(h, i % 2 == 0, true, PX_WS_OP_BINARY,
                                          lens[i], masked ? MASK : NULL);
            px_ws_frame_t f;
            for (size_t cut = 0; cut < n; cut++)
                ASSERT_UINT_EQ(px_ws_frame_parse(h, cut, &f), 0);
            ASSERT_UINT_EQ(px_ws_frame_parse(h, n, &f), n);
            ASSERT_UINT_EQ(f.len, lens[i]);
            ASSERT_TRUE(f.fin == (i % 2 == 0) && f.rsv == 4 &&
                        f.opcode == PX_WS_OP_BINARY && f.masked == masked);
            if (masked)
                ASSERT_MEM_EQ(f.mask, 4, MASK, 4);
        }
    }
}

TEST(test_mask_any_offset)
{
    uint8_t a[100], b[100];
    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = b[i] = (uint8_t)i;
    px_ws_mask(a, sizeof(a), MASK, 0);
    for (size_t i = 0; i < sizeof(b); i++)
        ASSERT_UINT_EQ(a[i], b[i] ^ MASK[i % 4]);
    /* In two pieces, the second at an offset that is not a multiple of 4. */
    px_ws_mask(b, 7, MASK, 0);
    px_ws_mask(b + 7, sizeof(b) - 7, MASK, 7);
    ASSERT_MEM_EQ(a, sizeof(a), b, sizeof(b));
}

TEST(test_utf8)
{
    ASSERT_TRUE(px_ws_utf8_valid("", 0));
    ASSERT_TRUE(px_ws_utf8_valid("plain ascii, longer than eight", 30));
    ASSERT_TRUE(
        px_ws_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 16));
    ASSERT_TRUE(px_ws_utf8_valid("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    const char *bad[] = {
        "\xc0\xaf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xff",
        "\x80",
        "abc\xc3", /* truncated */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ASSERT_TRUE(!px_ws_utf8_valid(bad[i], strlen(bad[i])));
}

/* ---- the receiver
 * --------------------------------------------------------------- */

TEST(test_receive_messages)
{
    uint8_t in[1024];
    size_t n = 0;
    put_frame(in, &n, true, 0, PX_WS_OP_TEXT, "hello", 5, true);
    put_frame(in, &n, true, 0, PX_WS_OP_BINARY, "\x00\x01\x02", 3, true);
    /* A fragmented text message with a ping between its fragments and a
     * character split across them. */
    put_frame(in, &n, false, 0, PX_WS_OP_TEXT, "h\xc3", 2, true);
    put_frame(in, &n, true, 0, PX_WS_OP_PING, "p", 1, true);
    put_frame(in, &n, false, 0, PX_WS_OP_CONT, "\xa9", 1, true);
    put_frame(in, &n, true, 0, PX_WS_OP_CONT, "!", 1, true);
    put_frame(in, &n, true, 0, PX_WS_OP_PONG, "", 0, true);
    put_frame(in, &n, true, 0, PX_WS_OP_TEXT, "", 0, true);
    put_frame(in, &n, true, 0, PX_WS_OP_CLOSE,
              "\x03\xe8"
              "bye",
              5, true);
    put_frame(in, &n, true, 0, PX_WS_OP_TEXT, "ignored", 7, true);
    expect(in, n, 0,
           "T5:hello|B3:\x00\x01\x02|P1:p|T4:h\xc3\xa9!|O0:|T0:|"
           "C1000:bye|");
}

TEST(test_receive_large_message)
{
    static uint8_t in[200000];
    static char payload[150000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (char)('a' + i % 26);
    size_t n = 0;
    put_frame(in, &n, false, 0, PX_WS_OP_BINARY, payload, 70000, true);
    put_frame(in, &n, true, 0, PX_WS_OP_CONT, payload + 70000, 80000, true);
    size_t steps[] = {0, 1000, 4093};
    for (size_t i = 0; i < 3; i++) {
        outcome_t o = feed(in, n, steps[i], 0, false);
        ASSERT_INT_EQ(o.rc, 0);
        /* Too big by the limit: refused before the payload arrives. */
        o = feed(in, n, steps[i], 100000, false);
        ASSERT_INT_EQ(o.rc, PX_WS_CLOSE_TOO_BIG);
        ASSERT_STR_EQ(o.ev.log, "");
    }
}

typedef struct {
    const char *name;
    bool fin;
    uint8_t rsv;
    int opcode;
    const char *payload;
    size_t len;
    bool masked;
    int rc;
} bad_t;

TEST(test_receive_refusals)
{
    static char big[200];
    memset(big, 'x', sizeof(big));
    const bad_t cases[] = {
        {"unmasked", true, 0, PX_WS_OP_TEXT, "a", 1, false, 1002},
        {"rsv1 without deflate", true, 4, PX_WS_OP_TEXT, "a", 1, true, 1002},
        {"rsv2", true, 2, PX_WS_OP_BINARY, "a", 1, true, 1002},
        {"opcode 3", true, 0, 3, "a", 1, true, 1002},
        {"opcode 11", true, 0, 11, "a", 1, true, 1002},
        {"fragmented ping", false, 0, PX_WS_OP_PING, "a", 1, true, 1002},
        {"long ping", true, 0, PX_WS_OP_PING, big, 126, true, 1002},
        {"lone continuation", true, 0, PX_WS_OP_CONT, "a", 1, true, 1002},
        {"invalid utf-8", true, 0, PX_WS_OP_TEXT, "a\xff", 2, true, 1007},
        {"truncated utf-8", true, 0, PX_WS_OP_TEXT, "a\xc3", 2, true, 1007},
        {"close of 1 byte", true, 0, PX_WS_OP_CLOSE, "\x03", 1, true, 1002},
        {"close 1005", true, 0, PX_WS_OP_CLOSE, "\x03\xed", 2, true, 1002},
        {"close 999", true, 0, PX_WS_OP_CLOSE, "\x03\xe7", 2, true, 1002},
        {"close bad reason", true, 0, PX_WS_OP_CLOSE, "\x03\xe8\xff", 3, true,
         1007},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_t *c = &cases[i];
        uint8_t in[512];
        size_t n = 0;
        put_frame(in, &n, c->fin, c->rsv, c->opcode, c->payload, c->len,
                  c->masked);
        fprintf(stderr, "case: %s\n", c->name);
        expect(in, n, c->rc, "");
    }
    /* A new message inside a fragmented one. */
    uint8_t in[64];
    size_t n = 0;
    put_frame(in, &n, false, 0, PX_WS_OP_TEXT, "a", 1, true);
    put_frame(in, &n, true, 0, PX_WS_OP_TEXT, "b", 1, true);
    expect(in, n, 1002, "");
    /* A 64-bit length with its top bit set. */
    uint8_t huge[14] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    expect(huge, sizeof(huge), 1002, "");
    /* Invalid UTF-8 split across fragments fails at its first bad byte,
     * before the message ends. */
    n = 0;
    put_frame(in, &n, false, 0, PX_WS_OP_TEXT, "\xe2\x82", 2, true);
    put_frame(in, &n, false, 0, PX_WS_OP_CONT, "(", 1, true);
    expect(in, n, 1007, "");
}

TEST(test_receive_compressed)
{
    px_ws_deflater_t *d = NULL;
    ASSERT_INT_EQ(px_ws_deflater_new(15, false, &d), 0);
    const char *texts[] = {"hello hello hello hello", "hello again, hello", ""};
    uint8_t in[1024];
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        char *z = NULL;
        size_t zl = 0;
        ASSERT_INT_EQ(px_ws_deflate(d, texts[i], strlen(texts[i]), &z, &zl), 0);
        put_frame(in, &n, true, 4, PX_WS_OP_TEXT, z, zl, true);
        free(z);
    }
    px_ws_deflater_free(d);
    outcome_t o = feed(in, n, 0, 0, true);
    ASSERT_INT_EQ(o.rc, 0);
    ASSERT_STR_EQ(o.ev.log, "T23:hello hello hello hello|T18:hello again, "
                            "hello|T0:|");
    o = feed(in, n, 3, 0, true);
    ASSERT_INT_EQ(o.rc, 0);
    /* A bomb: a small frame inflating past the limit. */
    static char zeros[1 << 20];
    ASSERT_INT_EQ(px_ws_deflater_new(15, true, &d), 0);
    char *z = NULL;
    size_t zl = 0;
    ASSERT_INT_EQ(px_ws_deflate(d, zeros, sizeof(zeros), &z, &zl), 0);
    px_ws_deflater_free(d);
    ASSERT_TRUE(zl < 4096);
    static uint8_t bomb[8192];
    n = 0;
    put_frame(bomb, &n, true, 4, PX_WS_OP_BINARY, z, zl, true);
    free(z);
    o = feed(bomb, n, 0, 65536, true);
    ASSERT_INT_EQ(o.rc, PX_WS_CLOSE_TOO_BIG);
    /* Garbage as compressed data. */
    n = 0;
    put_frame(in, &n, true, 4, PX_WS_OP_BINARY, "\xff\xff\xff", 3, true);
    o = feed(in, n, 0, 0, true);
    ASSERT_INT_EQ(o.rc, PX_WS_CLOSE_INVALID_DATA);
}

static const test_case_t cases[] = {
    TEST_CASE(accept_key),
    TEST_CASE(handshake_checks),
    TEST_CASE(handshake_subprotocols_and_response),
    TEST_CASE(deflate_negotiation),
    TEST_CASE(frame_header_round_trip),
    TEST_CASE(mask_any_offset),
    TEST_CASE(utf8),
    TEST_CASE(receive_messages),
    TEST_CASE(receive_large_message),
    TEST_CASE(receive_refusals),
    TEST_CASE(receive_compressed),
};

TEST_MAIN(cases)
