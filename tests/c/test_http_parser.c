/*
 * test_http_parser.c - tests of the request head parser and the framing
 * decision: table-driven valid and invalid requests, each parsed from a
 * buffer that ends at an inaccessible page, both all at once and one byte
 * at a time (with and without last_len), which must agree; limits at and
 * just past their values; pipelining; and the character tables checked
 * against the RFC definitions.
 */
#include "test_http_util.h"

#include "../../src/http/http_internal.h"

#define MAX_TEST_HEADERS 32

/* What one parse produced, with pointers turned into offsets so results
 * from different copies of the same input compare equal. */
typedef struct {
    long rc;
    size_t method_off, method_len, target_off, target_len;
    int method_id, minor_version;
    size_t num_headers;
    size_t name_off[MAX_TEST_HEADERS], name_len[MAX_TEST_HEADERS];
    size_t value_off[MAX_TEST_HEADERS], value_len[MAX_TEST_HEADERS];
} outcome_t;

static size_t offset_in(const char *p, const char *buf, size_t len)
{
    /* Every result must point inside the caller's buffer. */
    ASSERT_TRUE(p >= buf && p <= buf + len);
    return (size_t)(p - buf);
}

/* Parses input[0..len) from a guarded copy. */
static outcome_t parse_guarded(const char *input, size_t len, size_t last_len,
                               const px_http_options_t *opts,
                               size_t max_headers)
{
    guarded_t g = guarded_copy(input, len);
    px_http_request_t req;
    px_http_header_t headers[MAX_TEST_HEADERS];
    outcome_t o;
    memset(&o, 0, sizeof(o));
    memset(&req, 0, sizeof(req));
    o.rc = px_http_parse_request(g.data, len, last_len, opts, &req, headers,
                                 max_headers);
    if (o.rc >= 0) {
        ASSERT_TRUE((size_t)o.rc <= len);
        o.method_off = offset_in(req.method, g.data, len);
        o.method_len = req.method_len;
        o.target_off = offset_in(req.target, g.data, len);
        o.target_len = req.target_len;
        o.method_id = req.method_id;
        o.minor_version = req.minor_version;
        o.num_headers = req.num_headers;
        ASSERT_TRUE(req.headers == headers && req.num_headers <= max_headers);
        for (size_t i = 0; i < req.num_headers; i++) {
            o.name_off[i] = offset_in(headers[i].name, g.data, len);
            o.name_len[i] = headers[i].name_len;
            o.value_off[i] = offset_in(headers[i].value, g.data, len);
            o.value_len[i] = headers[i].value_len;
            ASSERT_TRUE(o.value_off[i] + o.value_len[i] <= (size_t)o.rc);
        }
    }
    guarded_free(&g);
    return o;
}

/* Feeds growing prefixes the way a server does as bytes arrive, and
 * returns the first result that is not "incomplete". */
static outcome_t parse_byte_by_byte(const char *input, size_t len,
                                    bool use_last_len,
                                    const px_http_options_t *opts,
                                    size_t max_headers)
{
    outcome_t o;
    memset(&o, 0, sizeof(o));
    o.rc = PX_HTTP_INCOMPLETE;
    for (size_t n = 1; n <= len; n++) {
        o = parse_guarded(input, n, use_last_len ? n - 1 : 0, opts,
                          max_headers);
        if (o.rc != PX_HTTP_INCOMPLETE)
            break;
    }
    return o;
}

/* Names the first field in which two outcomes differ. */
#define SAME_FIELD(field)                                                      \
    do {                                                                       \
        if (a->field != b->field)                                              \
            TEST_FAIL("%s: %s %s is %jd, all at once %jd", name, how, #field,  \
                      (intmax_t)a->field, (intmax_t)b->field);                 \
    } while (0)

static void assert_same_outcome(const outcome_t *a, const outcome_t *b,
                                const char *name, const char *how)
{
    SAME_FIELD(rc);
    SAME_FIELD(method_off);
    SAME_FIELD(method_len);
    SAME_FIELD(target_off);
    SAME_FIELD(target_len);
    SAME_FIELD(method_id);
    SAME_FIELD(minor_version);
    SAME_FIELD(num_headers);
    for (size_t i = 0; i < MAX_TEST_HEADERS; i++) {
        SAME_FIELD(name_off[i]);
        SAME_FIELD(name_len[i]);
        SAME_FIELD(value_off[i]);
        SAME_FIELD(value_len[i]);
    }
}

/* Parses input all at once and byte by byte in both modes; all must give
 * `expected` (0: the whole input is one head). Returns the outcome. With
 * last_len an error may wait for the blank line, so inputs that expect an
 * error end with one. */
static outcome_t check_parse(const char *name, const char *input, size_t len,
                             long expected, const px_http_options_t *opts,
                             size_t max_headers)
{
    if (expected == 0)
        expected = (long)len;
    outcome_t whole = parse_guarded(input, len, 0, opts, max_headers);
    if (whole.rc != expected)
        TEST_FAIL("%s: parse gave %ld (%s), expected %ld (%s)", name, whole.rc,
                  px_http_strerror(whole.rc), expected,
                  px_http_strerror(expected));
    outcome_t bytes = parse_byte_by_byte(input, len, false, opts, max_headers);
    assert_same_outcome(&bytes, &whole, name, "byte by byte");
    outcome_t retry = parse_byte_by_byte(input, len, true, opts, max_headers);
    assert_same_outcome(&retry, &whole, name, "byte by byte with last_len");
    return whole;
}

typedef struct {
    const char *name;
    const char *input;
    long expected; /* 0: the whole input is one valid head */
} request_case_t;

#define HOST "Host: example.com\r\n"

static const request_case_t valid_requests[] = {
    {"get", "GET / HTTP/1.1\r\n" HOST "\r\n", 0},
    {"post_with_length",
     "POST /submit?x=1 HTTP/1.1\r\n" HOST "Content-Length: 5\r\n"
     "Content-Type: text/plain\r\n\r\n",
     0},
    {"http10_without_host", "GET /index.html HTTP/1.0\r\n\r\n", 0},
    {"http10_with_headers", "HEAD / HTTP/1.0\r\nUser-Agent: t\r\n\r\n", 0},
    {"empty_lines_before", "\r\n\r\nGET / HTTP/1.1\r\n" HOST "\r\n", 0},
    {"absolute_form", "GET http://example.com/a?b HTTP/1.1\r\n" HOST "\r\n", 0},
    {"asterisk_form", "OPTIONS * HTTP/1.1\r\n" HOST "\r\n", 0},
    {"empty_value", "GET / HTTP/1.1\r\n" HOST "X-Empty:\r\n\r\n", 0},
    {"empty_host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0},
    {"ipv6_host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 0},
    {"value_tab_and_obs_text",
     "GET / HTTP/1.1\r\n" HOST "X-V: a\tb \x80\xff z\r\n\r\n", 0},
    {"value_whitespace_trimmed",
     "GET / HTTP/1.1\r\n" HOST "X:  \t v \t \r\n\r\n", 0},
    {"long_values",
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
     "HTTP/1.1\r\n" HOST
     "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101\r\n"
     "Accept: "
     "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
     "\r\n",
     0},
    {"token_chars_in_name",
     "GET / HTTP/1.1\r\n" HOST "!#$%&'*+-.^_`|~09aZ: v\r\n\r\n", 0},
    {"pipelined_rest_ignored",
     "GET /1 HTTP/1.1\r\n" HOST "\r\nGET /2 HTTP/1.1\r\n" HOST "\r\n",
     (long)sizeof("GET /1 HTTP/1.1\r\n" HOST "\r\n") - 1},
};

static const request_case_t invalid_requests[] = {
    {"method_bad_char", "G@T / HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_METHOD},
    {"method_empty", " / HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_METHOD},
    {"method_tab", "GET\t/ HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_METHOD},
    {"method_lower_case", "get / HTTP/1.1\r\n" HOST "\r\n",
     PX_HTTP_E_METHOD_NOT_IMPLEMENTED},
    {"method_unknown", "BREW / HTTP/1.1\r\n" HOST "\r\n",
     PX_HTTP_E_METHOD_NOT_IMPLEMENTED},
    {"method_too_long", "PROPFINDX / HTTP/1.1\r\n" HOST "\r\n",
     PX_HTTP_E_METHOD_NOT_IMPLEMENTED},
    {"method_connect", "CONNECT example.com:443 HTTP/1.1\r\n" HOST "\r\n",
     PX_HTTP_E_METHOD_NOT_IMPLEMENTED},
    {"double_space", "GET  / HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_REQUEST_LINE},
    {"http09", "GET /\r\n\r\n", PX_HTTP_E_REQUEST_LINE},
    {"target_control", "GET /\x01 HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_TARGET},
    {"target_del", "GET /\x7f HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_TARGET},
    {"target_non_ascii", "GET /\xc3\xa9 HTTP/1.1\r\n" HOST "\r\n",
     PX_HTTP_E_TARGET},
    {"target_tab", "GET /a\tb HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_TARGET},
    {"target_relative", "GET a/b HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_TARGET},
    {"target_asterisk_not_options", "GET * HTTP/1.1\r\n" HOST "\r\n",
     PX_HTTP_E_TARGET},
    {"version_2", "GET / HTTP/2.0\r\n" HOST "\r\n",
     PX_HTTP_E_VERSION_NOT_SUPPORTED},
    {"version_1_2", "GET / HTTP/1.2\r\n" HOST "\r\n",
     PX_HTTP_E_VERSION_NOT_SUPPORTED},
    {"version_0_9", "GET / HTTP/0.9\r\n" HOST "\r\n",
     PX_HTTP_E_VERSION_NOT_SUPPORTED},
    {"version_lower_case", "GET / http/1.1\r\n" HOST "\r\n", PX_HTTP_E_VERSION},
    {"version_https", "GET / HTTPS/1.1\r\n" HOST "\r\n", PX_HTTP_E_VERSION},
    {"version_two_digits", "GET / HTTP/1.10\r\n" HOST "\r\n",
     PX_HTTP_E_VERSION},
    {"version_no_dot", "GET / HTTP/11\r\n" HOST "\r\n", PX_HTTP_E_VERSION},
    {"version_trailing_space", "GET / HTTP/1.1 \r\n" HOST "\r\n",
     PX_HTTP_E_VERSION},
    {"request_line_bare_lf", "GET / HTTP/1.1\n" HOST "\r\n", PX_HTTP_E_BARE_LF},
    {"request_line_bare_cr", "GET / HTTP/1.1\rHost: a\r\n\r\n",
     PX_HTTP_E_BARE_CR},
    {"leading_bare_lf", "\nGET / HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_BARE_LF},
    {"leading_bare_cr", "\rGET / HTTP/1.1\r\n" HOST "\r\n", PX_HTTP_E_BARE_CR},
    {"obs_fold", "GET / HTTP/1.1\r\n" HOST "X: a\r\n b\r\n\r\n",
     PX_HTTP_E_OBS_FOLD},
    {"obs_fold_tab", "GET / HTTP/1.1\r\n" HOST "X: a\r\n\tb\r\n\r\n",
     PX_HTTP_E_OBS_FOLD},
    {"space_before_first_field", "GET / HTTP/1.1\r\n " HOST "\r\n",
     PX_HTTP_E_OBS_FOLD},
    {"space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
     PX_HTTP_E_SPACE_BEFORE_COLON},
    {"tab_before_colon",
     "GET / HTTP/1.1\r\n" HOST "Content-Length\t: 5\r\n\r\n",
     PX_HTTP_E_SPACE_BEFORE_COLON},
    {"empty_field_name", "GET / HTTP/1.1\r\n" HOST ": v\r\n\r\n",
     PX_HTTP_E_HEADER_NAME},
    {"bad_field_name", "GET / HTTP/1.1\r\n" HOST "X(y): v\r\n\r\n",
     PX_HTTP_E_HEADER_NAME},
    {"field_without_colon", "GET / HTTP/1.1\r\n" HOST "Xyz\r\n\r\n",
     PX_HTTP_E_HEADER_NAME},
    {"value_control", "GET / HTTP/1.1\r\n" HOST "X: a\x01z\r\n\r\n",
     PX_HTTP_E_HEADER_VALUE},
    {"value_escape", "GET / HTTP/1.1\r\n" HOST "X: \x1b[0m\r\n\r\n",
     PX_HTTP_E_HEADER_VALUE},
    {"value_del", "GET / HTTP/1.1\r\n" HOST "X: abcdefgh\x7fz\r\n\r\n",
     PX_HTTP_E_HEADER_VALUE},
    {"value_bare_cr", "GET / HTTP/1.1\r\n" HOST "X: a\rb\r\n\r\n",
     PX_HTTP_E_BARE_CR},
    {"value_bare_lf", "GET / HTTP/1.1\r\n" HOST "X: a\nY: b\r\n\r\n",
     PX_HTTP_E_BARE_LF},
    {"end_bare_lf", "GET / HTTP/1.1\r\n" HOST "\n", PX_HTTP_E_BARE_LF},
    {"end_bare_cr", "GET / HTTP/1.1\r\n" HOST "\rX", PX_HTTP_E_BARE_CR},
    {"missing_host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
     PX_HTTP_E_MISSING_HOST},
    {"repeated_host", "GET / HTTP/1.1\r\n" HOST "host: other\r\n\r\n",
     PX_HTTP_E_HOST},
    {"repeated_host_http10", "GET / HTTP/1.0\r\n" HOST HOST "\r\n",
     PX_HTTP_E_HOST},
    {"host_with_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", PX_HTTP_E_HOST},
    {"host_with_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", PX_HTTP_E_HOST},
    {"host_with_userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
     PX_HTTP_E_HOST},
    {"truncated", "GET / HTTP/1.1\r\n" HOST, PX_HTTP_INCOMPLETE},
    {"truncated_version", "GET / HTTP/1.", PX_HTTP_INCOMPLETE},
    {"only_empty_lines", "\r\n\r\n\r\n", PX_HTTP_INCOMPLETE},
};

TEST(test_valid_requests)
{
    for (size_t i = 0; i < COUNT_OF(valid_requests); i++) {
        const request_case_t *c = &valid_requests[i];
        check_parse(c->name, c->input, strlen(c->input), c->expected, NULL,
                    MAX_TEST_HEADERS);
    }
}

TEST(test_invalid_requests)
{
    for (size_t i = 0; i < COUNT_OF(invalid_requests); i++) {
        const request_case_t *c = &invalid_requests[i];
        check_parse(c->name, c->input, strlen(c->input), c->expected, NULL,
                    MAX_TEST_HEADERS);
    }
}

/* Parses a whole head from a plain buffer (for field checks). */
static void parse_plain(const char *input, px_http_request_t *req,
                        px_http_header_t *headers, size_t max_headers)
{
    ssize_t rc = px_http_parse_request(input, strlen(input), 0, NULL, req,
                                       headers, max_headers);
    ASSERT_INT_EQ(rc, (long)strlen(input));
}

TEST(test_request_fields)
{
    px_http_request_t req;
    px_http_header_t h[8];
    parse_plain("POST /submit?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                "X-Pad:  \t padded value \t \r\nEmpty:\r\n\r\n",
                &req, h, 8);
    ASSERT_SPAN_EQ(req.method, req.method_len, "POST");
    ASSERT_INT_EQ(req.method_id, PX_HTTP_METHOD_POST);
    ASSERT_SPAN_EQ(req.target, req.target_len, "/submit?x=1");
    ASSERT_INT_EQ(req.minor_version, 1);
    ASSERT_INT_EQ(req.num_headers, 3);
    ASSERT_SPAN_EQ(h[0].name, h[0].name_len, "Host");
    ASSERT_SPAN_EQ(h[0].value, h[0].value_len, "example.com");
    ASSERT_SPAN_EQ(h[1].name, h[1].name_len, "X-Pad");
    ASSERT_SPAN_EQ(h[1].value, h[1].value_len, "padded value");
    ASSERT_SPAN_EQ(h[2].name, h[2].name_len, "Empty");
    ASSERT_INT_EQ(h[2].value_len, 0);

    parse_plain("\r\nDELETE /x HTTP/1.0\r\n\r\n", &req, h, 8);
    ASSERT_SPAN_EQ(req.method, req.method_len, "DELETE");
    ASSERT_INT_EQ(req.method_id, PX_HTTP_METHOD_DELETE);
    ASSERT_INT_EQ(req.minor_version, 0);
    ASSERT_INT_EQ(req.num_headers, 0);

    static const struct {
        const char *name;
        px_http_method_t id;
    } methods[] = {
        {"GET", PX_HTTP_METHOD_GET},     {"HEAD", PX_HTTP_METHOD_HEAD},
        {"PUT", PX_HTTP_METHOD_PUT},     {"OPTIONS", PX_HTTP_METHOD_OPTIONS},
        {"TRACE", PX_HTTP_METHOD_TRACE}, {"PATCH", PX_HTTP_METHOD_PATCH},
    };
    for (size_t i = 0; i < COUNT_OF(methods); i++) {
        char input[64];
        snprintf(input, sizeof(input), "%s / HTTP/1.0\r\n\r\n",
                 methods[i].name);
        parse_plain(input, &req, h, 8);
        ASSERT_INT_EQ(req.method_id, methods[i].id);
    }
}

TEST(test_unknown_methods_allowed)
{
    px_http_options_t opts = {0};
    opts.allow_unknown_methods = 1;
    const char *input = "PROPFIND /dav HTTP/1.1\r\n" HOST "\r\n";
    outcome_t o = check_parse("propfind", input, strlen(input), 0, &opts,
                              MAX_TEST_HEADERS);
    ASSERT_INT_EQ(o.method_id, PX_HTTP_METHOD_OTHER);
    ASSERT_INT_EQ(o.method_len, 8);
    input = "CONNECT example.com:443 HTTP/1.1\r\n" HOST "\r\n";
    check_parse("connect", input, strlen(input),
                PX_HTTP_E_METHOD_NOT_IMPLEMENTED, &opts, MAX_TEST_HEADERS);
}

/* Builds "GET /<target_len - 1 a's> HTTP/1.1\r\nHost: x\r\n<pad>\r\n" with
 * the pad field sized so the head is head_len bytes (when head_len > 0). */
static size_t build_request(char *out, size_t target_len, size_t head_len)
{
    size_t n = (size_t)sprintf(out, "GET /");
    memset(out + n, 'a', target_len - 1);
    n += target_len - 1;
    n += (size_t)sprintf(out + n, " HTTP/1.1\r\nHost: x\r\n");
    if (head_len > 0) {
        /* "P: " + value + CRLF, then the final CRLF. */
        size_t value_len = head_len - n - 3 - 2 - 2;
        n += (size_t)sprintf(out + n, "P: ");
        memset(out + n, 'v', value_len);
        n += value_len;
        n += (size_t)sprintf(out + n, "\r\n");
    }
    n += (size_t)sprintf(out + n, "\r\n");
    return n;
}

TEST(test_uri_limit)
{
    px_http_options_t opts = {0};
    opts.max_uri_size = 64;
    char buf[512];
    size_t len = build_request(buf, 64, 0);
    check_parse("uri_at_limit", buf, len, 0, &opts, MAX_TEST_HEADERS);
    len = build_request(buf, 65, 0);
    check_parse("uri_over_limit", buf, len, PX_HTTP_E_URI_TOO_LONG, &opts,
                MAX_TEST_HEADERS);
    /* A target the head limit cuts off first is a too-large head. */
    opts.max_uri_size = 1000;
    opts.max_header_size = 100;
    len = build_request(buf, 200, 0);
    check_parse("uri_over_head_limit", buf, len, PX_HTTP_E_HEAD_TOO_LARGE,
                &opts, MAX_TEST_HEADERS);
}

/* The largest limits must not overflow any bound computed from them. */
TEST(test_largest_limits)
{
    px_http_options_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.max_header_size = SIZE_MAX;
    opts.max_uri_size = SIZE_MAX;
    opts.max_headers = SIZE_MAX;
    opts.max_body_size = UINT64_MAX;
    opts.max_chunk_line = SIZE_MAX;
    opts.max_trailer_size = SIZE_MAX;
    const char *input = "GET /a HTTP/1.1\r\n" HOST "\r\n";
    check_parse("largest_limits", input, strlen(input), 0, &opts,
                MAX_TEST_HEADERS);
    input = "GET /a HTTP/1.1\r\n" HOST;
    check_parse("largest_limits_incomplete", input, strlen(input),
                PX_HTTP_INCOMPLETE, &opts, MAX_TEST_HEADERS);
}

TEST(test_head_size_limit)
{
    px_http_options_t opts = {0};
    opts.max_header_size = 200;
    char buf[512];
    size_t len = build_request(buf, 8, 200);
    ASSERT_INT_EQ(len, 200);
    check_parse("head_at_limit", buf, len, 0, &opts, MAX_TEST_HEADERS);
    len = build_request(buf, 8, 201);
    check_parse("head_over_limit", buf, len, PX_HTTP_E_HEAD_TOO_LARGE, &opts,
                MAX_TEST_HEADERS);
    /* Bytes past a complete head do not count against it. */
    len = build_request(buf, 8, 200);
    memcpy(buf + len, "GET", 3);
    check_parse("head_at_limit_then_more", buf, len + 3, (long)len, &opts,
                MAX_TEST_HEADERS);
    /* The default limit: 16 KiB. */
    static char big[17 * 1024];
    len = build_request(big, 8, 16 * 1024);
    ASSERT_RESULT_EQ(px_http_parse_request(big, len, 0, NULL,
                                           &(px_http_request_t){0},
                                           (px_http_header_t[4]){{0}}, 4),
                     (long)len);
    len = build_request(big, 8, 16 * 1024 + 1);
    ASSERT_RESULT_EQ(px_http_parse_request(big, len, 0, NULL,
                                           &(px_http_request_t){0},
                                           (px_http_header_t[4]){{0}}, 4),
                     PX_HTTP_E_HEAD_TOO_LARGE);
}

TEST(test_header_count_limit)
{
    const char *three = "GET / HTTP/1.1\r\n" HOST "A: 1\r\nB: 2\r\n\r\n";
    const char *four = "GET / HTTP/1.1\r\n" HOST "A: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    px_http_options_t opts = {0};
    opts.max_headers = 3;
    check_parse("three_of_three", three, strlen(three), 0, &opts,
                MAX_TEST_HEADERS);
    check_parse("four_of_three", four, strlen(four), PX_HTTP_E_TOO_MANY_HEADERS,
                &opts, MAX_TEST_HEADERS);
    /* The caller's array is a limit too. */
    check_parse("array_of_three", three, strlen(three), 0, NULL, 3);
    check_parse("array_too_small", four, strlen(four),
                PX_HTTP_E_TOO_MANY_HEADERS, NULL, 3);
}

TEST(test_pipelined)
{
    const char *input =
        "POST /a HTTP/1.1\r\n" HOST "Content-Length: 3\r\n\r\nabc"
        "GET /b HTTP/1.1\r\n" HOST "\r\n"
        "\r\nGET /c HTTP/1.0\r\n\r\n";
    size_t len = strlen(input);
    guarded_t g = guarded_copy(input, len);
    const char *p = g.data, *end = g.data + len;
    px_http_request_t req;
    px_http_header_t h[8];
    px_http_framing_t framing;

    ssize_t n =
        px_http_parse_request(p, (size_t)(end - p), 0, NULL, &req, h, 8);
    ASSERT_TRUE(n > 0);
    ASSERT_SPAN_EQ(req.target, req.target_len, "/a");
    ASSERT_RESULT_EQ(px_http_request_framing(&req, NULL, &framing), 0);
    ASSERT_INT_EQ(framing.body, PX_HTTP_BODY_LENGTH);
    ASSERT_INT_EQ(framing.content_length, 3);
    p += n;
    ASSERT_SPAN_EQ(p, 3, "abc");
    p += framing.content_length;

    n = px_http_parse_request(p, (size_t)(end - p), 0, NULL, &req, h, 8);
    ASSERT_TRUE(n > 0);
    ASSERT_SPAN_EQ(req.target, req.target_len, "/b");
    ASSERT_RESULT_EQ(px_http_request_framing(&req, NULL, &framing), 0);
    ASSERT_INT_EQ(framing.body, PX_HTTP_BODY_NONE);
    ASSERT_INT_EQ(framing.keep_alive, 1);
    p += n;

    n = px_http_parse_request(p, (size_t)(end - p), 0, NULL, &req, h, 8);
    ASSERT_INT_EQ(n, (long)(end - p));
    ASSERT_SPAN_EQ(req.target, req.target_len, "/c");
    ASSERT_RESULT_EQ(px_http_request_framing(&req, NULL, &framing), 0);
    ASSERT_INT_EQ(framing.keep_alive, 0);
    guarded_free(&g);
}

typedef struct {
    const char *name;
    const char *fields; /* after the request line */
    int minor_version;
    long expected;
    px_http_body_t body;
    uint64_t content_length;
    int keep_alive;
    int expect_continue;
} framing_case_t;

static const framing_case_t framing_cases[] = {
    {"no_body", HOST, 1, 0, PX_HTTP_BODY_NONE, 0, 1, 0},
    {"close", HOST "Connection: close\r\n", 1, 0, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"close_in_list", HOST "Connection: Keep-Alive, CLOSE\r\n", 1, 0,
     PX_HTTP_BODY_NONE, 0, 0, 0},
    {"close_second_line", HOST "Connection: upgrade\r\nConnection: close\r\n",
     1, 0, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"close_lookalike", HOST "Connection: closed, xclose\r\n", 1, 0,
     PX_HTTP_BODY_NONE, 0, 1, 0},
    {"http10_default", "", 0, 0, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"http10_keep_alive", "Connection: keep-alive\r\n", 0, 0, PX_HTTP_BODY_NONE,
     0, 1, 0},
    {"http10_keep_alive_list", "Connection: foo ,\tKeep-Alive\r\n", 0, 0,
     PX_HTTP_BODY_NONE, 0, 1, 0},
    {"http10_keep_alive_and_close", "Connection: keep-alive, close\r\n", 0, 0,
     PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length", HOST "Content-Length: 5\r\n", 1, 0, PX_HTTP_BODY_LENGTH,
     5, 1, 0},
    {"content_length_zero", HOST "Content-Length: 0\r\n", 1, 0,
     PX_HTTP_BODY_LENGTH, 0, 1, 0},
    {"content_length_leading_zeros", HOST "content-length: 007\r\n", 1, 0,
     PX_HTTP_BODY_LENGTH, 7, 1, 0},
    {"content_length_http10", "Content-Length: 12\r\n", 0, 0,
     PX_HTTP_BODY_LENGTH, 12, 0, 0},
    {"content_length_at_limit", HOST "Content-Length: 1048576\r\n", 1, 0,
     PX_HTTP_BODY_LENGTH, 1048576, 1, 0},
    {"content_length_over_limit", HOST "Content-Length: 1048577\r\n", 1,
     PX_HTTP_E_BODY_TOO_LARGE, PX_HTTP_BODY_NONE, 0, 0, 0},
    /* Equal duplicates are allowed by RFC 9112 §6.3; we choose to reject. */
    {"content_length_repeated_equal",
     HOST "Content-Length: 5\r\nContent-Length: 5\r\n", 1,
     PX_HTTP_E_REPEATED_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_repeated",
     HOST "Content-Length: 5\r\nContent-Length: 6\r\n", 1,
     PX_HTTP_E_REPEATED_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_list", HOST "Content-Length: 5, 5\r\n", 1,
     PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_plus", HOST "Content-Length: +5\r\n", 1,
     PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_minus", HOST "Content-Length: -1\r\n", 1,
     PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_inner_space", HOST "Content-Length: 1 2\r\n", 1,
     PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_empty", HOST "Content-Length:\r\n", 1,
     PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_hex", HOST "Content-Length: 0x10\r\n", 1,
     PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_overflow", HOST "Content-Length: 18446744073709551616\r\n",
     1, PX_HTTP_E_CONTENT_LENGTH, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"content_length_max_u64", HOST "Content-Length: 18446744073709551615\r\n",
     1, PX_HTTP_E_BODY_TOO_LARGE, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"chunked", HOST "Transfer-Encoding: chunked\r\n", 1, 0,
     PX_HTTP_BODY_CHUNKED, 0, 1, 0},
    {"chunked_case", HOST "transfer-encoding: ChUnKeD\r\n", 1, 0,
     PX_HTTP_BODY_CHUNKED, 0, 1, 0},
    {"chunked_empty_elements", HOST "Transfer-Encoding: ,chunked,\r\n", 1, 0,
     PX_HTTP_BODY_CHUNKED, 0, 1, 0},
    {"cl_and_te", HOST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 1,
     PX_HTTP_E_CL_AND_TE, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_and_cl", HOST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 1,
     PX_HTTP_E_CL_AND_TE, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_not_final", HOST "Transfer-Encoding: chunked, gzip\r\n", 1,
     PX_HTTP_E_TE_NOT_CHUNKED, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_identity", HOST "Transfer-Encoding: identity\r\n", 1,
     PX_HTTP_E_TE_NOT_CHUNKED, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_empty", HOST "Transfer-Encoding:\r\n", 1, PX_HTTP_E_TE_NOT_CHUNKED,
     PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_with_parameter", HOST "Transfer-Encoding: chunked;q=1\r\n", 1,
     PX_HTTP_E_TE_NOT_CHUNKED, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_unknown_before_chunked", HOST "Transfer-Encoding: gzip, chunked\r\n",
     1, PX_HTTP_E_TRANSFER_ENCODING, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_unknown_on_first_line",
     HOST "Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n", 1,
     PX_HTTP_E_TRANSFER_ENCODING, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_chunked_twice", HOST "Transfer-Encoding: chunked, chunked\r\n", 1,
     PX_HTTP_E_TRANSFER_ENCODING, PX_HTTP_BODY_NONE, 0, 0, 0},
    {"te_http10", "Transfer-Encoding: chunked\r\n", 0, PX_HTTP_E_TE_HTTP10,
     PX_HTTP_BODY_NONE, 0, 0, 0},
    {"expect_continue", HOST "Expect: 100-continue\r\nContent-Length: 5\r\n", 1,
     0, PX_HTTP_BODY_LENGTH, 5, 1, 1},
    {"expect_continue_case", HOST "Expect: 100-Continue\r\n", 1, 0,
     PX_HTTP_BODY_NONE, 0, 1, 1},
    {"expect_continue_http10", "Expect: 100-continue\r\n", 0, 0,
     PX_HTTP_BODY_NONE, 0, 0, 0},
    {"expect_other", HOST "Expect: 200-ok\r\n", 1, PX_HTTP_E_EXPECTATION,
     PX_HTTP_BODY_NONE, 0, 0, 0},
    /* The caller can answer 413 at once to a client waiting for 100. */
    {"expect_continue_too_large",
     HOST "Expect: 100-continue\r\nContent-Length: 2000000\r\n", 1,
     PX_HTTP_E_BODY_TOO_LARGE, PX_HTTP_BODY_NONE, 0, 0, 1},
};

TEST(test_framing)
{
    for (size_t i = 0; i < COUNT_OF(framing_cases); i++) {
        const framing_case_t *c = &framing_cases[i];
        char input[512];
        int len = snprintf(input, sizeof(input), "POST / HTTP/1.%d\r\n%s\r\n",
                           c->minor_version, c->fields);
        check_parse(c->name, input, (size_t)len, 0, NULL, MAX_TEST_HEADERS);
        px_http_request_t req;
        px_http_header_t h[MAX_TEST_HEADERS];
        px_http_framing_t framing;
        ASSERT_RESULT_EQ(px_http_parse_request(input, (size_t)len, 0, NULL,
                                               &req, h, MAX_TEST_HEADERS),
                         len);
        long rc = px_http_request_framing(&req, NULL, &framing);
        if (rc != c->expected)
            TEST_FAIL("%s: framing gave %ld (%s), expected %ld (%s)", c->name,
                      rc, px_http_strerror(rc), c->expected,
                      px_http_strerror(c->expected));
        if (framing.body != c->body ||
            framing.content_length != c->content_length ||
            framing.keep_alive != c->keep_alive ||
            framing.expect_continue != c->expect_continue)
            TEST_FAIL("%s: framing body %d length %llu keep-alive %d expect %d",
                      c->name, framing.body,
                      (unsigned long long)framing.content_length,
                      framing.keep_alive, framing.expect_continue);
    }
}

TEST(test_max_body_size_option)
{
    const char *input =
        "POST / HTTP/1.1\r\n" HOST "Content-Length: 101\r\n\r\n";
    px_http_request_t req;
    px_http_header_t h[4];
    px_http_framing_t framing;
    parse_plain(input, &req, h, 4);
    px_http_options_t opts = {0};
    opts.max_body_size = 100;
    ASSERT_RESULT_EQ(px_http_request_framing(&req, &opts, &framing),
                     PX_HTTP_E_BODY_TOO_LARGE);
    opts.max_body_size = 101;
    ASSERT_RESULT_EQ(px_http_request_framing(&req, &opts, &framing), 0);
    opts.max_body_size = UINT64_MAX;
    input = "POST / HTTP/1.1\r\n" HOST
            "Content-Length: 18446744073709551615\r\n\r\n";
    parse_plain(input, &req, h, 4);
    ASSERT_RESULT_EQ(px_http_request_framing(&req, &opts, &framing), 0);
    ASSERT_TRUE(framing.content_length == UINT64_MAX);
}

static bool rfc_tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

TEST(test_char_classes)
{
    for (int c = 0; c < 256; c++) {
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                     (c >= 'A' && c <= 'Z');
        bool token = rfc_tchar(c);
        bool value =
            c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
        bool target = c >= 0x21 && c <= 0x7e;
        bool host = alnum || (c != 0 && strchr("-._~%!$&'()*+,;=:[]", c));
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                   (c >= 'A' && c <= 'F');
        unsigned char expected =
            (unsigned char)((token ? PX__HTTP_TOKEN : 0) |
                            (value ? PX__HTTP_VALUE : 0) |
                            (target ? PX__HTTP_TARGET : 0) |
                            (host ? PX__HTTP_HOST : 0) |
                            (hex ? PX__HTTP_HEX : 0));
        if (px__http_char_class[c] != expected)
            TEST_FAIL("class of 0x%02x is %d, expected %d", c,
                      px__http_char_class[c], expected);
    }
}

/* Every control byte, at every offset modulo 8 in a long value, is found:
 * this covers the word-at-a-time scan's edges. */
TEST(test_value_scan_every_position)
{
    for (int bad = 0; bad < 0x80; bad++) {
        if (bad >= 0x20 && bad != 0x7f)
            continue;
        if (bad == '\t')
            continue;
        for (size_t pos = 0; pos < 24; pos++) {
            char input[128];
            int n = snprintf(input, sizeof(input), "GET / HTTP/1.1\r\nX: ");
            memset(input + n, 'v', 24);
            input[n + (int)pos] = (char)bad;
            n += 24;
            n += snprintf(input + n, sizeof(input) - (size_t)n,
                          "\r\n" HOST "\r\n");
            outcome_t o =
                parse_guarded(input, (size_t)n, 0, NULL, MAX_TEST_HEADERS);
            long expected = bad == '\r'   ? PX_HTTP_E_BARE_CR
                            : bad == '\n' ? PX_HTTP_E_BARE_LF
                                          : PX_HTTP_E_HEADER_VALUE;
            if (o.rc != expected)
                TEST_FAIL("byte 0x%02x at %zu: %ld", bad, pos, o.rc);
        }
    }
}

TEST(test_target_scan_every_position)
{
    static const unsigned char bad_bytes[] = {0x00, 0x09, 0x1f,
                                              0x7f, 0x80, 0xff};
    for (size_t b = 0; b < sizeof(bad_bytes); b++) {
        for (size_t pos = 1; pos < 24; pos++) {
            char input[128];
            int n = snprintf(input, sizeof(input), "GET ");
            memset(input + n, 'a', 24);
            input[n] = '/';
            input[n + (int)pos] = (char)bad_bytes[b];
            n += 24;
            n += snprintf(input + n, sizeof(input) - (size_t)n,
                          " HTTP/1.1\r\n" HOST "\r\n");
            outcome_t o =
                parse_guarded(input, (size_t)n, 0, NULL, MAX_TEST_HEADERS);
            if (o.rc != PX_HTTP_E_TARGET)
                TEST_FAIL("byte 0x%02x at %zu: %ld", bad_bytes[b], pos, o.rc);
        }
    }
}

TEST(test_error_statuses)
{
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_INCOMPLETE), 0);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_METHOD), 400);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_METHOD_NOT_IMPLEMENTED),
                     501);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_URI_TOO_LONG), 414);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_HEAD_TOO_LARGE), 431);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_TOO_MANY_HEADERS), 431);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_VERSION), 400);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_VERSION_NOT_SUPPORTED),
                     505);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_BODY_TOO_LARGE), 413);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_EXPECTATION), 417);
    ASSERT_RESULT_EQ(px_http_error_status(PX_HTTP_E_CL_AND_TE), 400);
    ASSERT_RESULT_EQ(px_http_error_status(-1), 0);
    ASSERT_STR_EQ(px_http_strerror(PX_HTTP_E_OBS_FOLD),
                  "obsolete line folding");
    /* Every error a request can cause answers with a 4xx or 5xx status. */
    for (long code = PX_HTTP_E_METHOD; code >= PX_HTTP_E_BODY_TIMEOUT; code--) {
        int status = px_http_error_status(code);
        ASSERT_TRUE(status >= 400 && status <= 599);
    }
}

static const test_case_t tests[] = {
    TEST_CASE(valid_requests),
    TEST_CASE(invalid_requests),
    TEST_CASE(request_fields),
    TEST_CASE(unknown_methods_allowed),
    TEST_CASE(uri_limit),
    TEST_CASE(largest_limits),
    TEST_CASE(head_size_limit),
    TEST_CASE(header_count_limit),
    TEST_CASE(pipelined),
    TEST_CASE(framing),
    TEST_CASE(max_body_size_option),
    TEST_CASE(char_classes),
    TEST_CASE(value_scan_every_position),
    TEST_CASE(target_scan_every_position),
    TEST_CASE(error_statuses),
};

TEST_MAIN(tests)
