/*
 * fuzz_http_request.c - libFuzzer target for the HTTP parser: parses the
 * input as a request head, decides its framing, decodes what follows as a
 * chunked body (or the whole input when the head does not parse as a
 * chunked request), and writes a response head echoing the request's
 * fields, checking the invariants the callers rely on:
 *  - a result is "incomplete", a known error code, or a length within the
 *    input, and every returned pointer lies inside the input;
 *  - feeding the same bytes in pieces gives the same outcome as all at
 *    once (every prefix of the head is "incomplete" or the same answer; the
 *    decoder gives the same body byte by byte);
 *  - a written response head has exactly one line per field it holds.
 *
 * The first input byte picks the options (bit 0: small limits, bit 1:
 * unknown methods allowed) so limit paths are reachable; the rest is the
 * request. Build with clang -fsanitize=fuzzer,address,undefined, with
 * include/ on the include path and every file of src/http (see
 * docs/http-parser.md).
 */
#include "px_http.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FUZZ_HEADERS 64

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static bool is_result_code(long rc)
{
    return rc == PX_HTTP_INCOMPLETE || px_http_error_status(rc) != 0;
}

static bool inside(const char *p, size_t len, const char *buf, size_t buf_len)
{
    return p >= buf && len <= buf_len && p <= buf + buf_len - len;
}

/* A parse outcome with pointers as offsets, comparable across copies. */
typedef struct {
    long rc;
    size_t fields[4 + 4 * MAX_FUZZ_HEADERS];
    size_t count;
} outcome_t;

static outcome_t parse(const char *buf, size_t len, size_t last_len,
                       const px_http_options_t *opts, px_http_request_t *req,
                       px_http_header_t *headers)
{
    outcome_t o;
    memset(&o, 0, sizeof(o));
    memset(req, 0, sizeof(*req));
    o.rc = px_http_parse_request(buf, len, last_len, opts, req, headers,
                                 MAX_FUZZ_HEADERS);
    if (o.rc < 0) {
        CHECK(is_result_code(o.rc));
        return o;
    }
    size_t consumed = (size_t)o.rc;
    CHECK(consumed > 0 && consumed <= len);
    CHECK(inside(req->method, req->method_len, buf, consumed));
    CHECK(inside(req->target, req->target_len, buf, consumed));
    CHECK(req->method_len > 0 && req->target_len > 0);
    CHECK(req->minor_version == 0 || req->minor_version == 1);
    CHECK(req->headers == headers && req->num_headers <= MAX_FUZZ_HEADERS);
    /* What an accepted head may hold: it ends with an empty line, its
     * target is visible ASCII, its names are free of separators, and no
     * value can smuggle a line break or another control character. */
    CHECK(consumed >= 4 && memcmp(buf + consumed - 4, "\r\n\r\n", 4) == 0);
    for (size_t i = 0; i < req->target_len; i++)
        CHECK(req->target[i] > 0x20 && req->target[i] < 0x7f);
    for (size_t i = 0; i < req->num_headers; i++) {
        const px_http_header_t *h = &headers[i];
        for (size_t j = 0; j < h->name_len; j++)
            CHECK(strchr(" \t:\r\n\"(),/;<=>?@[\\]{}", h->name[j]) == NULL &&
                  h->name[j] > 0x20 && h->name[j] < 0x7f);
        for (size_t j = 0; j < h->value_len; j++) {
            unsigned char c = (unsigned char)h->value[j];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
    }
    o.fields[o.count++] = (size_t)(req->method - buf);
    o.fields[o.count++] = (size_t)(req->target - buf);
    o.fields[o.count++] = req->target_len;
    o.fields[o.count++] = (size_t)req->minor_version;
    for (size_t i = 0; i < req->num_headers; i++) {
        const px_http_header_t *h = &headers[i];
        CHECK(h->name_len > 0 && inside(h->name, h->name_len, buf, consumed));
        CHECK(inside(h->value, h->value_len, buf, consumed));
        o.fields[o.count++] = (size_t)(h->name - buf);
        o.fields[o.count++] = h->name_len;
        o.fields[o.count++] = (size_t)(h->value - buf);
        o.fields[o.count++] = h->value_len;
    }
    return o;
}

static bool same_outcome(const outcome_t *a, const outcome_t *b)
{
    return a->rc == b->rc && a->count == b->count &&
           memcmp(a->fields, b->fields, a->count * sizeof(a->fields[0])) == 0;
}

/* Every prefix must be "incomplete" or give the whole input's answer. The
 * last_len re-check may defer an error to the end, never change it. */
static void check_prefixes(const char *buf, size_t len,
                           const px_http_options_t *opts,
                           const outcome_t *whole)
{
    px_http_request_t req;
    px_http_header_t headers[MAX_FUZZ_HEADERS];
    /* All prefixes of short inputs, about 200 evenly spread otherwise:
     * each parse is linear, so all prefixes of long inputs cost too much. */
    size_t step = len / 200 + 1;
    for (size_t n = 1; n <= len; n += (n < 256 ? 1 : step)) {
        outcome_t o = parse(buf, n, 0, opts, &req, headers);
        CHECK(o.rc == PX_HTTP_INCOMPLETE || same_outcome(&o, whole));
        if (o.rc != PX_HTTP_INCOMPLETE)
            break;
    }
    outcome_t o;
    memset(&o, 0, sizeof(o));
    o.rc = PX_HTTP_INCOMPLETE;
    for (size_t n = 1; n <= len && o.rc == PX_HTTP_INCOMPLETE; n++)
        o = parse(buf, n, n - 1, opts, &req, headers);
    CHECK(same_outcome(&o, whole) ||
          (o.rc == PX_HTTP_INCOMPLETE && whole->rc < 0));
}

static void check_framing(const px_http_request_t *req,
                          const px_http_options_t *opts,
                          px_http_framing_t *framing)
{
    int rc = px_http_request_framing(req, opts, framing);
    CHECK(rc == 0 || (rc != PX_HTTP_INCOMPLETE && is_result_code(rc)));
    CHECK(framing->body <= PX_HTTP_BODY_CHUNKED);
    CHECK(framing->keep_alive == 0 || framing->keep_alive == 1);
    if (rc != 0)
        CHECK(framing->keep_alive == 0 && framing->body == PX_HTTP_BODY_NONE);
    if (framing->body == PX_HTTP_BODY_LENGTH)
        CHECK(framing->content_length <=
              (opts->max_body_size ? opts->max_body_size : 1024 * 1024));
}

/* Decodes in[0..len) as a chunked body whole and byte by byte. */
static void check_chunked(const char *in, size_t len,
                          const px_http_options_t *opts)
{
    char *whole = malloc(len > 0 ? len : 1),
         *single = malloc(len > 0 ? len : 1);
    CHECK(whole != NULL && single != NULL);
    if (len > 0)
        memcpy(whole, in, len);

    px_http_chunked_t decoder;
    memset(&decoder, 0, sizeof(decoder));
    size_t decoded;
    ssize_t rc = px_http_decode_chunked(&decoder, opts, whole, len, &decoded);
    CHECK(rc == PX_HTTP_INCOMPLETE || is_result_code(rc) ||
          (rc >= 0 && (size_t)rc <= len));
    CHECK(decoded <= len && (rc < 0 || decoded <= (size_t)rc));
    CHECK(decoder.body_size >= decoded);
    if (rc >= 0) {
        CHECK(memcmp(whole + rc, in + rc, len - (size_t)rc) == 0);
        CHECK(decoder.body_size == decoded &&
              decoded <=
                  (opts->max_body_size ? opts->max_body_size : 1024 * 1024));
    }

    memset(&decoder, 0, sizeof(decoder));
    size_t body_len = 0, consumed = 0;
    ssize_t byte_rc = PX_HTTP_INCOMPLETE;
    while (consumed < len && byte_rc == PX_HTTP_INCOMPLETE) {
        char byte = in[consumed];
        size_t n;
        byte_rc = px_http_decode_chunked(&decoder, opts, &byte, 1, &n);
        CHECK(n <= 1);
        if (n == 1)
            single[body_len++] = byte;
        consumed++;
    }
    if (byte_rc >= 0) {
        CHECK(byte_rc == 1);
        byte_rc = (ssize_t)consumed;
    }
    CHECK(byte_rc == rc);
    CHECK(body_len == decoded && memcmp(single, whole, decoded) == 0);
    free(whole);
    free(single);
}

static size_t count_lines(const char *s, size_t len)
{
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n') {
            CHECK(i > 0 && s[i - 1] == '\r');
            lines++;
        } else if (s[i] == '\r') {
            CHECK(i + 1 < len && s[i + 1] == '\n');
        }
    }
    return lines;
}

/* Echoes the request's fields in a response head: whatever the writer
 * accepts must come out as exactly one line per field. */
static void check_response(const px_http_request_t *req,
                           const px_http_framing_t *framing)
{
    static char out[32 * 1024];
    px_http_response_t resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = 200 + (int)(req->target_len % 400);
    resp.minor_version = req->minor_version;
    resp.keep_alive = framing->keep_alive;
    resp.date = "Sun, 06 Nov 1994 08:49:37 GMT";
    resp.body = req->minor_version == 1 ? framing->body : PX_HTTP_BODY_NONE;
    resp.content_length = framing->content_length;
    resp.headers = req->headers;
    resp.num_headers = req->num_headers;
    ssize_t n = px_http_write_response_head(out, sizeof(out), &resp);
    if (n < 0) {
        CHECK(is_result_code(n) && n != PX_HTTP_INCOMPLETE);
        return;
    }
    CHECK((size_t)n <= sizeof(out));
    size_t expected = 3 + req->num_headers; /* status, Date, blank line */
    if (resp.body != PX_HTTP_BODY_NONE)
        expected++;
    if (!resp.keep_alive || resp.minor_version == 0)
        expected++;
    CHECK(count_lines(out, (size_t)n) == expected);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    px_http_options_t opts;
    memset(&opts, 0, sizeof(opts));
    if (data[0] & 1) {
        opts.max_header_size = 256;
        opts.max_uri_size = 32;
        opts.max_headers = 4;
        opts.max_body_size = 64;
        opts.max_chunk_line = 16;
        opts.max_trailer_size = 32;
    }
    opts.allow_unknown_methods = (data[0] & 2) != 0;

    /* An exact-size heap copy, so ASan catches any read past the input. */
    size_t len = size - 1;
    char *buf = malloc(len > 0 ? len : 1);
    CHECK(buf != NULL);
    memcpy(buf, data + 1, len);

    px_http_request_t req;
    px_http_header_t headers[MAX_FUZZ_HEADERS];
    outcome_t whole = parse(buf, len, 0, &opts, &req, headers);
    const char *body = buf;
    size_t body_len = len;
    if (whole.rc >= 0) {
        px_http_framing_t framing;
        check_framing(&req, &opts, &framing);
        check_response(&req, &framing);
        if (framing.body == PX_HTTP_BODY_CHUNKED) {
            body = buf + whole.rc;
            body_len = len - (size_t)whole.rc;
        }
    }
    check_prefixes(buf, len, &opts, &whole);
    check_chunked(body, body_len, &opts);
    free(buf);
    return 0;
}
