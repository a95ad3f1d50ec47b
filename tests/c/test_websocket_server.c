/*
 * test_websocket_server.c - WebSocket connections upgraded from the HTTP
 * server over real sockets, under both backends: the 101 answer, echo of
 * masked client frames (whole and byte by byte), pings answered, the
 * closing handshake both ways, a protocol error failing the connection
 * with 1002, an idle peer pinged then dropped, and broadcasting to a group
 * from another thread while one member never reads (it is closed with
 * 1008, the other gets every message).
 */
#include "http_fixture.h"
#include "px_ws.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#define WAIT_MS 10000

/* Published to the workers with the atomic: made once the loop runs. */
static _Atomic(px_ws_server_t *) ws_server;
static px_ws_group_t *group;
static atomic_int closed_code;
static atomic_int opened;

static void on_message(px_ws_conn_t *wc, int opcode, const char *data,
                       size_t len)
{
    if (len == 4 && memcmp(data, "join", 4) == 0) {
        ASSERT_PX_OK(px_ws_group_join(group, wc));
        px_ws_send(wc, PX_WS_OP_TEXT, "joined", 6);
    } else if (len == 5 && memcmp(data, "close", 5) == 0) {
        ASSERT_PX_OK(px_ws_close(wc, 4001, "asked", 5));
    } else {
        px_ws_send(wc, opcode, data, len);
    }
}

static void on_closed(px_ws_conn_t *wc, int code, const char *reason,
                      size_t len)
{
    (void)wc;
    (void)reason;
    (void)len;
    atomic_store(&closed_code, code);
}

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    px_ws_handshake_t hs;
    int rc = px_ws_handshake_check(&req->head, true, 0, &hs);
    if (rc < 0) {
        px_http_respond(ex, px_ws_error_status(rc), NULL, 0, "no\n", 3);
        return;
    }
    px_ws_conn_t *wc = NULL;
    ASSERT_PX_OK(
        px_ws_upgrade(ex, ws_server, &hs, NULL, 0, NULL, 0, NULL, &wc));
    px_ws_conn_unref(wc);
    atomic_fetch_add(&opened, 1);
}

static void start(http_fixture_t *f, int backend, uint64_t ping_ns,
                  size_t max_send)
{
    px_http_server_options_t o = {0};
    o.on_request = on_request;
    http_fixture_serve(f, backend, &o);
    px_ws_server_options_t wo = {
        .max_message_size = 1 << 16,
        .ping_interval_ns = ping_ns,
        .ping_timeout_ns = ping_ns,
        .max_send_buffer = max_send,
        .on_message = on_message,
        .on_closed = on_closed,
    };
    px_ws_server_t *s = NULL;
    ASSERT_PX_OK(px_ws_server_new(f->loop, &wo, &s));
    atomic_store(&ws_server, s);
    ASSERT_PX_OK(px_ws_group_get("test", 4, &group));
    atomic_store(&closed_code, 0);
    atomic_store(&opened, 0);
}

static void stop(http_fixture_t *f)
{
    http_fixture_stop(f);
    px_ws_server_free(atomic_exchange(&ws_server, NULL));
    px_ws_group_unref(group);
}

/* ---- a raw client ----------------------------------------------------------
 */

static const uint8_t MASK[4] = {1, 2, 3, 4};

/* Opens c (with a small receive buffer from the start when rcvbuf is not
 * 0) and upgrades it. */
static void handshake_rcvbuf(http_client_t *c, int port, int rcvbuf)
{
    http_client_open(c, port);
    if (rcvbuf != 0) {
        close(c->fd);
        c->fd = client_connect_rcvbuf(port, rcvbuf);
    }
    struct timeval tv = {10, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    http_client_send_str(c, "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket"
                            "\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                            "dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n");
    http_response_t r;
    http_read_response(c, &r, true);
    ASSERT_INT_EQ(r.status, 101);
    char accept[64];
    ASSERT_TRUE(
        http_header(&r, "Sec-WebSocket-Accept", accept, sizeof(accept)));
    ASSERT_STR_EQ(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    http_response_free(&r);
}

static void handshake(http_client_t *c, int port)
{
    handshake_rcvbuf(c, port, 0);
}

static void send_frame(http_client_t *c, int opcode, const char *payload,
                       size_t len, bool one_byte_at_a_time)
{
    uint8_t buf[PX_WS_MAX_HEADER + 256];
    ASSERT_TRUE(len <= 256);
    size_t h = px_ws_frame_header(buf, true, false, opcode, len, MASK);
    memcpy(buf + h, payload, len);
    px_ws_mask(buf + h, len, MASK, 0);
    if (!one_byte_at_a_time) {
        http_client_send(c, buf, h + len);
        return;
    }
    for (size_t i = 0; i < h + len; i++) {
        http_client_send(c, buf + i, 1);
        sleep_ms(1);
    }
}

static void read_all(http_client_t *c, void *out, size_t n)
{
    size_t got = 0;
    /* Bytes the HTTP reader buffered past the 101's head come first. */
    size_t have = c->len < n ? c->len : n;
    memcpy(out, c->buf, have);
    memmove(c->buf, c->buf + have, c->len - have);
    c->len -= have;
    got = have;
    while (got < n) {
        ssize_t r = recv(c->fd, (char *)out + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            TEST_FAIL("recv: %zd after %zu of %zu bytes", r, got, n);
        got += (size_t)r;
    }
}

/* Reads a server frame into payload (NUL-terminated); its opcode. */
static int read_frame(http_client_t *c, char *payload, size_t cap, size_t *len)
{
    uint8_t h[10];
    read_all(c, h, 2);
    ASSERT_TRUE((h[1] & 0x80) == 0);
    uint64_t n = h[1] & 0x7F;
    if (n == 126) {
        read_all(c, h + 2, 2);
        n = ((uint64_t)h[2] << 8) | h[3];
    } else if (n == 127) {
        read_all(c, h + 2, 8);
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | h[2 + i];
    }
    ASSERT_TRUE(n < cap);
    read_all(c, payload, (size_t)n);
    payload[n] = '\0';
    *len = (size_t)n;
    return h[0] & 0x0F;
}

static int read_close_code(http_client_t *c)
{
    static char p[64 << 10];
    size_t n;
    int op;
    while ((op = read_frame(c, p, sizeof(p), &n)) != PX_WS_OP_CLOSE)
        ;
    return n >= 2 ? ((uint8_t)p[0] << 8) | (uint8_t)p[1] : 1005;
}

/* ---- cases -----------------------------------------------------------------
 */

static void test_echo_ping_and_close(int backend)
{
    http_fixture_t f;
    start(&f, backend, 0, 0);
    http_client_t c;
    handshake(&c, f.port);
    char p[256];
    size_t n;
    send_frame(&c, PX_WS_OP_TEXT, "hello", 5, false);
    ASSERT_INT_EQ(read_frame(&c, p, sizeof(p), &n), PX_WS_OP_TEXT);
    ASSERT_STR_EQ(p, "hello");
    send_frame(&c, PX_WS_OP_BINARY, "bytes", 5, true);
    ASSERT_INT_EQ(read_frame(&c, p, sizeof(p), &n), PX_WS_OP_BINARY);
    ASSERT_STR_EQ(p, "bytes");
    send_frame(&c, PX_WS_OP_PING, "pp", 2, false);
    ASSERT_INT_EQ(read_frame(&c, p, sizeof(p), &n), PX_WS_OP_PONG);
    ASSERT_STR_EQ(p, "pp");
    send_frame(&c, PX_WS_OP_CLOSE, "\x03\xe8", 2, false);
    ASSERT_INT_EQ(read_close_code(&c), 1000);
    http_expect_eof(&c, WAIT_MS);
    WAIT_FOR(atomic_load(&closed_code) == 1000, WAIT_MS);
    http_client_close(&c);

    /* The server's close, answered. */
    handshake(&c, f.port);
    send_frame(&c, PX_WS_OP_TEXT, "close", 5, false);
    ASSERT_INT_EQ(read_close_code(&c), 4001);
    send_frame(&c, PX_WS_OP_CLOSE, "\x0f\xa1", 2, false);
    http_expect_eof(&c, WAIT_MS);
    WAIT_FOR(atomic_load(&closed_code) == 4001, WAIT_MS);
    http_client_close(&c);
    stop(&f);
}

static void test_protocol_error_fails_with_1002(int backend)
{
    http_fixture_t f;
    start(&f, backend, 0, 0);
    http_client_t c;
    handshake(&c, f.port);
    uint8_t unmasked[] = {0x81, 0x01, 'a'};
    http_client_send(&c, unmasked, sizeof(unmasked));
    ASSERT_INT_EQ(read_close_code(&c), 1002);
    http_expect_eof(&c, WAIT_MS);
    WAIT_FOR(atomic_load(&closed_code) == 1002, WAIT_MS);
    http_client_close(&c);
    stop(&f);
}

static void test_idle_peer_pinged_then_dropped(int backend)
{
    http_fixture_t f;
    start(&f, backend, 100 * 1000000u, 0);
    http_client_t c;
    handshake(&c, f.port);
    char p[256];
    size_t n;
    ASSERT_INT_EQ(read_frame(&c, p, sizeof(p), &n), PX_WS_OP_PING);
    char end;
    ssize_t r;
    do {
        r = recv(c.fd, &end, 1, 0);
    } while (r < 0 && errno == EINTR);
    ASSERT_TRUE(r == 0 || (r < 0 && errno == ECONNRESET));
    WAIT_FOR(atomic_load(&closed_code) == 1006, WAIT_MS);
    http_client_close(&c);
    stop(&f);
}

/* The binding keeps holders across loops: it must be able to tell one
 * whose loop stopped, which pings nobody. */
static void test_server_stops_running_with_its_loop(int backend)
{
    http_fixture_t f;
    start(&f, backend, 100 * 1000000u, 0);
    px_ws_server_t *s = atomic_load(&ws_server);
    ASSERT_INT_EQ(px_ws_server_running(s), 1);
    http_fixture_stop(&f);
    ASSERT_INT_EQ(px_ws_server_running(s), 0);
    px_ws_server_free(atomic_exchange(&ws_server, NULL));
    px_ws_group_unref(group);
}

typedef struct {
    int count;
    atomic_bool done;
} bcast_t;

static void *broadcaster(void *arg)
{
    bcast_t *b = arg;
    static char big[32 << 10];
    for (int i = 0; i < b->count; i++) {
        snprintf(big, sizeof(big), "%08d", i);
        px_ws_group_broadcast(group, PX_WS_OP_BINARY, big, sizeof(big), NULL);
        sleep_ms(1);
    }
    atomic_store(&b->done, true);
    return NULL;
}

static void test_broadcast_past_a_reader_that_never_reads(int backend)
{
    http_fixture_t f;
    start(&f, backend, 0, 64 << 10);
    http_client_t fast, slow;
    char p[(32 << 10) + 16];
    size_t n;
    handshake(&fast, f.port);
    handshake_rcvbuf(&slow, f.port, 4096);
    send_frame(&fast, PX_WS_OP_TEXT, "join", 4, false);
    send_frame(&slow, PX_WS_OP_TEXT, "join", 4, false);
    ASSERT_INT_EQ(read_frame(&fast, p, sizeof(p), &n), PX_WS_OP_TEXT);
    ASSERT_INT_EQ(read_frame(&slow, p, sizeof(p), &n), PX_WS_OP_TEXT);
    WAIT_FOR(px_ws_group_size(group) == 2, WAIT_MS);
    bcast_t b = {400, false};
    pthread_t t;
    ASSERT_INT_EQ(pthread_create(&t, NULL, broadcaster, &b), 0);
    for (int i = 0; i < b.count; i++) {
        ASSERT_INT_EQ(read_frame(&fast, p, sizeof(p), &n), PX_WS_OP_BINARY);
        ASSERT_INT_EQ(atoi(p), i);
    }
    pthread_join(t, NULL);
    /* 12.8 MB went by: the slow member was closed and left the group. */
    WAIT_FOR(px_ws_group_size(group) == 1, WAIT_MS);
    ASSERT_INT_EQ(read_close_code(&slow), 1008);
    http_client_close(&slow);
    http_client_close(&fast);
    stop(&f);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_echo_ping_and_close),
    ENGINE_CASE(test_protocol_error_fails_with_1002),
    ENGINE_CASE(test_idle_peer_pinged_then_dropped),
    ENGINE_CASE(test_server_stops_running_with_its_loop),
    ENGINE_CASE(test_broadcast_past_a_reader_that_never_reads),
};

TEST_MAIN(cases)
