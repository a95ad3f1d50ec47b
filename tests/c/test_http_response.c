/*
 * test_http_response.c - tests of the response head writer: exact heads for
 * each framing and persistence combination, refusal of fields that could
 * inject lines or contradict the framing, and buffers one byte too small,
 * which end at an inaccessible page so any write past them crashes.
 */
#include "test_http_util.h"

static const char date[] = "Sun, 06 Nov 1994 08:49:37 GMT";

static px_http_response_t response(int status)
{
    px_http_response_t r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.minor_version = 1;
    r.keep_alive = 1;
    return r;
}

/* Writes the head into a guarded buffer of exactly its expected size and
 * checks it; every smaller buffer must be refused without a write past it. */
static void check_head(const px_http_response_t *r, const char *expected)
{
    size_t len = strlen(expected);
    guarded_t g = guarded_copy(expected, len);
    memset(g.data, 0, len);
    ssize_t n = px_http_write_response_head(g.data, len, r);
    if (n < 0 || (size_t)n > len)
        ASSERT_RESULT_EQ(n, len);
    ASSERT_SPAN_EQ(g.data, (size_t)n, expected);
    guarded_free(&g);
    for (size_t cap = 0; cap < len; cap++) {
        g = guarded_copy(expected, cap);
        ASSERT_RESULT_EQ(px_http_write_response_head(g.data, cap, r),
                         PX_HTTP_E_NOSPACE);
        guarded_free(&g);
    }
}

TEST(test_content_length)
{
    px_http_response_t r = response(200);
    r.date = date;
    r.body = PX_HTTP_BODY_LENGTH;
    r.content_length = 13;
    px_http_header_t h[] = {
        {"Content-Type", 12, "text/plain; charset=utf-8", 25}};
    r.headers = h;
    r.num_headers = 1;
    check_head(&r, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: 13\r\n\r\n");
    r.content_length = UINT64_MAX;
    r.num_headers = 0;
    r.date = NULL;
    check_head(
        &r, "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n");
    r.content_length = 0;
    check_head(&r, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}

TEST(test_persistence)
{
    px_http_response_t r = response(404);
    r.body = PX_HTTP_BODY_LENGTH;
    r.content_length = 9;
    r.keep_alive = 0;
    check_head(&r, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
                   "Connection: close\r\n\r\n");
    r.minor_version = 0;
    check_head(&r, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
                   "Connection: close\r\n\r\n");
    r.keep_alive = 1;
    check_head(&r, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n"
                   "Connection: keep-alive\r\n\r\n");
}

TEST(test_chunked_and_no_body)
{
    px_http_response_t r = response(200);
    r.body = PX_HTTP_BODY_CHUNKED;
    check_head(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    r.minor_version = 0;
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_FRAMING);

    r = response(204);
    check_head(&r, "HTTP/1.1 204 No Content\r\n\r\n");
    r.body = PX_HTTP_BODY_LENGTH;
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_FRAMING);

    /* A 304 (like a HEAD response) may state the length it would have. */
    r = response(304);
    r.body = PX_HTTP_BODY_LENGTH;
    r.content_length = 1234;
    check_head(&r, "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n");

    /* An interim response carries no framing or persistence fields. */
    r = response(100);
    r.keep_alive = 0;
    check_head(&r, "HTTP/1.1 100 Continue\r\n\r\n");
    r.body = PX_HTTP_BODY_CHUNKED;
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_FRAMING);
    r.body = (px_http_body_t)7;
    r.status = 200;
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_FRAMING);
}

TEST(test_status_and_reason)
{
    px_http_response_t r = response(299);
    check_head(&r, "HTTP/1.1 299 \r\n\r\n");
    r.reason = "Fine Thanks";
    check_head(&r, "HTTP/1.1 299 Fine Thanks\r\n\r\n");
    r.reason = "Split\r\nX-Injected: 1";
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_HEADER);
    r.reason = NULL;
    static const int bad_statuses[] = {-200, 0, 99, 600, 1000};
    for (size_t i = 0; i < COUNT_OF(bad_statuses); i++) {
        r.status = bad_statuses[i];
        ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                         PX_HTTP_E_RESPONSE_STATUS);
    }
    ASSERT_STR_EQ(px_http_reason_phrase(413), "Content Too Large");
    ASSERT_STR_EQ(px_http_reason_phrase(431),
                  "Request Header Fields Too Large");
    ASSERT_STR_EQ(px_http_reason_phrase(505), "HTTP Version Not Supported");
    ASSERT_STR_EQ(px_http_reason_phrase(418), "");
}

TEST(test_refused_fields)
{
    static const struct {
        px_http_header_t header;
        long expected;
    } cases[] = {
        {{"X-A", 3, "v\r\nSet-Cookie: x", 16}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X-A", 3, "v\nX: y", 6}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X-A", 3, "v\rX", 3}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X-A", 3, "a\0b", 3}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X-A", 3, "\x7f", 1}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X A", 3, "v", 1}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X:A", 3, "v", 1}, PX_HTTP_E_RESPONSE_HEADER},
        {{"X\r\n", 3, "v", 1}, PX_HTTP_E_RESPONSE_HEADER},
        {{"", 0, "v", 1}, PX_HTTP_E_RESPONSE_HEADER},
        {{"Content-Length", 14, "5", 1}, PX_HTTP_E_RESPONSE_RESERVED},
        {{"transfer-encoding", 17, "chunked", 7}, PX_HTTP_E_RESPONSE_RESERVED},
        {{"CONNECTION", 10, "close", 5}, PX_HTTP_E_RESPONSE_RESERVED},
        {{"Date", 4, "x", 1}, PX_HTTP_E_RESPONSE_RESERVED},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        px_http_response_t r = response(200);
        r.date = date;
        px_http_header_t h[2] = {{"X-Ok", 4, "fine", 4}, cases[i].header};
        r.headers = h;
        r.num_headers = 2;
        char out[256];
        memset(out, '#', sizeof(out));
        ASSERT_RESULT_EQ(px_http_write_response_head(out, sizeof(out), &r),
                         cases[i].expected);
        /* Nothing is written before a refusal. */
        ASSERT_TRUE(out[0] == '#');
    }
    /* Without a writer-supplied date the caller's own Date is fine. */
    px_http_response_t r = response(200);
    px_http_header_t h[] = {{"Date", 4, date, PX_HTTP_DATE_LEN},
                            {"X-Tab", 5, "a\tb \x80", 5}};
    r.headers = h;
    r.num_headers = 2;
    check_head(&r, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                   "X-Tab: a\tb \x80\r\n\r\n");
}

TEST(test_bad_date)
{
    px_http_response_t r = response(200);
    r.date = "Sun, 06 Nov 1994";
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_HEADER);
    r.date = "Sun, 06 Nov 1994 08:49:37 GMT\r\nX: y";
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_HEADER);
    r.date = "Sun, 06 Nov 1994 08:49:37\r\nX";
    ASSERT_RESULT_EQ(px_http_write_response_head((char[256]){0}, 256, &r),
                     PX_HTTP_E_RESPONSE_HEADER);
}

TEST(test_format_date)
{
    static const struct {
        int64_t seconds;
        const char *expected;
    } cases[] = {
        {784111777, "Sun, 06 Nov 1994 08:49:37 GMT"},
        {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
        {951782400, "Tue, 29 Feb 2000 00:00:00 GMT"},
        {1735689599, "Tue, 31 Dec 2024 23:59:59 GMT"},
        {253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char out[PX_HTTP_DATE_LEN + 1];
        ASSERT_RESULT_EQ(px_http_format_date(cases[i].seconds, out), 0);
        ASSERT_STR_EQ(out, cases[i].expected);
    }
    char out[PX_HTTP_DATE_LEN + 1];
    ASSERT_RESULT_EQ(px_http_format_date(253402300800, out),
                     PX_HTTP_E_RESPONSE_HEADER);
    ASSERT_RESULT_EQ(px_http_format_date(-62135596801, out),
                     PX_HTTP_E_RESPONSE_HEADER);
    /* A formatted date is what the writer accepts. */
    ASSERT_RESULT_EQ(px_http_format_date(784111777, out), 0);
    px_http_response_t r = response(200);
    r.date = out;
    check_head(
        &r, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
}

static const test_case_t tests[] = {
    TEST_CASE(content_length),      TEST_CASE(persistence),
    TEST_CASE(chunked_and_no_body), TEST_CASE(status_and_reason),
    TEST_CASE(refused_fields),      TEST_CASE(bad_date),
    TEST_CASE(format_date),
};

TEST_MAIN(tests)
