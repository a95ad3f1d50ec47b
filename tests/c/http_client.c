/*
 * http_client.c - the HTTP server tests' raw-socket client (see
 * http_client.h).
 */
#include "http_client.h"

#include <errno.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>

void http_client_open(http_client_t *c, int port)
{
    c->fd = client_connect(port);
    c->len = 0;
    c->cap = 1 << 16;
    c->buf = malloc(c->cap);
    ASSERT_TRUE(c->buf != NULL);
}

void http_client_close(http_client_t *c)
{
    close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

void http_client_send(http_client_t *c, const void *data, size_t len)
{
    client_send_all(c->fd, data, len);
}

void http_client_send_str(http_client_t *c, const char *text)
{
    client_send_all(c->fd, text, strlen(text));
}

/* Receives more bytes into the buffer; fails on EOF, error or timeout. */
static void receive_more(http_client_t *c)
{
    if (c->len == c->cap) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
        ASSERT_TRUE(c->buf != NULL);
    }
    ssize_t n;
    do {
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        TEST_FAIL("recv with %zu bytes unread: %s", c->len, strerror(errno));
    if (n == 0)
        TEST_FAIL("EOF with %zu bytes unread: \"%.*s\"", c->len,
                  (int)(c->len > 200 ? 200 : c->len), c->buf);
    c->len += (size_t)n;
}

static void take(http_client_t *c, char *out, size_t n)
{
    memcpy(out, c->buf, n);
    out[n] = '\0';
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

void http_read_response(http_client_t *c, http_response_t *r, bool head_only)
{
    char *end;
    for (;;) {
        end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end != NULL)
            break;
        receive_more(c);
    }
    r->head_len = (size_t)(end + 4 - c->buf);
    r->head = malloc(r->head_len + 1);
    ASSERT_TRUE(r->head != NULL);
    take(c, r->head, r->head_len);
    if (strncmp(r->head, "HTTP/1.1 ", 9) != 0 ||
        sscanf(r->head + 9, "%3d", &r->status) != 1)
        TEST_FAIL("not a status line: \"%s\"", r->head);
    char value[64];
    r->body_len = 0;
    if (!head_only && r->status >= 200 &&
        http_header(r, "Content-Length", value, sizeof(value)))
        r->body_len = strtoull(value, NULL, 10);
    r->body = malloc(r->body_len + 1);
    ASSERT_TRUE(r->body != NULL);
    while (c->len < r->body_len)
        receive_more(c);
    take(c, r->body, r->body_len);
}

void http_response_free(http_response_t *r)
{
    free(r->head);
    free(r->body);
    r->head = r->body = NULL;
}

/* Finds the fields named name: counts them all (count given), or copies
 * the first one's value. */
static bool each_field(const http_response_t *r, const char *name, char *value,
                       size_t cap, int *count)
{
    size_t name_len = strlen(name);
    const char *line = strstr(r->head, "\r\n") + 2;
    while (strncmp(line, "\r\n", 2) != 0) {
        const char *eol = strstr(line, "\r\n");
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        ASSERT_TRUE(colon != NULL);
        if ((size_t)(colon - line) == name_len &&
            strncasecmp(line, name, name_len) == 0) {
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            if (count != NULL) {
                (*count)++;
            } else {
                size_t n = (size_t)(eol - v);
                ASSERT_UINT_CMP(n, <, cap);
                memcpy(value, v, n);
                value[n] = '\0';
                return true;
            }
        }
        line = eol + 2;
    }
    return false;
}

bool http_header(const http_response_t *r, const char *name, char *value,
                 size_t cap)
{
    return each_field(r, name, value, cap, NULL);
}

int http_header_count(const http_response_t *r, const char *name)
{
    int count = 0;
    each_field(r, name, NULL, 0, &count);
    return count;
}

void http_expect_connection(const http_response_t *r, const char *value)
{
    char found[32];
    bool present = http_header(r, "Connection", found, sizeof(found));
    if (value == NULL && present)
        TEST_FAIL("Connection: %s, where none was expected", found);
    if (value != NULL && (!present || strcasecmp(found, value) != 0))
        TEST_FAIL("Connection: %s, not %s", present ? found : "(none)", value);
}

void http_expect_eof(http_client_t *c, int ms)
{
    if (c->len > 0)
        TEST_FAIL("%zu unexpected bytes: \"%.*s\"", c->len, (int)c->len,
                  c->buf);
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pfd, 1, ms);
    } while (n < 0 && errno == EINTR);
    if (n <= 0)
        TEST_FAIL("the server did not close within %d ms", ms);
    char byte;
    ssize_t got = recv(c->fd, &byte, 1, 0);
    /* A reset counts as closed too: the server discarded our input. */
    if (got > 0)
        TEST_FAIL("a byte (0x%02x) instead of EOF", (unsigned char)byte);
}

void http_expect_silence(http_client_t *c, int ms)
{
    ASSERT_UINT_EQ(c->len, 0);
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int n;
    do {
        n = poll(&pfd, 1, ms);
    } while (n < 0 && errno == EINTR);
    if (n != 0)
        TEST_FAIL("the connection became readable within %d ms", ms);
}

void http_expect(http_client_t *c, int status, const char *body)
{
    http_response_t r;
    http_read_response(c, &r, false);
    if (r.status != status)
        TEST_FAIL("status %d, expected %d; head:\n%s", r.status, status,
                  r.head);
    if (body != NULL)
        ASSERT_SPAN_EQ(r.body, r.body_len, body);
    http_response_free(&r);
}

void http_trickle_until_answer(http_client_t *c, const char *piece,
                               int every_ms, http_response_t *r)
{
    uint64_t start_ns = px_now_ns();
    while (!client_readable_within(c->fd, every_ms)) {
        if (px_now_ns() - start_ns > 5000 * 1000000ull)
            TEST_FAIL("no answer after 5 s of trickling");
        http_client_send_str(c, piece);
    }
    /* client_readable_within consumed the response's first byte. */
    c->buf[0] = 'H';
    c->len = 1;
    http_read_response(c, r, false);
}
