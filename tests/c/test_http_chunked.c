/*
 * test_http_chunked.c - tests of the chunked body decoder: table-driven
 * valid and invalid bodies, each decoded from a buffer that ends at an
 * inaccessible page whole, one byte at a time, and split in two at every
 * position, all of which must give the same result and the same body.
 */
#include "test_http_util.h"

typedef struct {
    long rc;         /* the final result; when complete, all bytes consumed */
    size_t consumed; /* input bytes consumed when the body completed */
    char body[4096];
    size_t body_len;
} decoded_t;

/* Decodes input[0..len) in pieces of the given sizes (pieces[i] == 0 ends
 * the list), each from its own guarded buffer, collecting the body. */
static decoded_t decode_pieces(const char *input, size_t len,
                               const size_t *pieces,
                               const px_http_options_t *opts)
{
    px_http_chunked_t decoder;
    memset(&decoder, 0, sizeof(decoder));
    decoded_t out;
    memset(&out, 0, sizeof(out));
    out.rc = PX_HTTP_INCOMPLETE;
    size_t offset = 0;
    for (size_t i = 0; offset < len; i++) {
        size_t n = pieces[i] != 0 ? pieces[i] : len - offset;
        if (n > len - offset)
            n = len - offset;
        guarded_t g = guarded_copy(input + offset, n);
        size_t decoded = SIZE_MAX;
        ssize_t rc =
            px_http_decode_chunked(&decoder, opts, g.data, n, &decoded);
        ASSERT_TRUE(decoded <= n);
        if (rc >= 0)
            ASSERT_TRUE((size_t)rc <= n && decoded <= (size_t)rc);
        ASSERT_TRUE(out.body_len + decoded <= sizeof(out.body));
        memcpy(out.body + out.body_len, g.data, decoded);
        out.body_len += decoded;
        /* The bytes after a complete body are the caller's, untouched. */
        if (rc >= 0)
            ASSERT_MEM_EQ(g.data + rc, n - (size_t)rc, input + offset + rc,
                          n - (size_t)rc);
        guarded_free(&g);
        out.rc = rc;
        if (rc >= 0) {
            out.consumed = offset + (size_t)rc;
            out.rc = (long)out.consumed;
            break;
        }
        if (rc != PX_HTTP_INCOMPLETE)
            break;
        offset += n;
    }
    return out;
}

static void assert_same_decoding(const decoded_t *a, const decoded_t *b,
                                 const char *name, const char *how)
{
    if (a->rc != b->rc || a->consumed != b->consumed)
        TEST_FAIL("%s: %s gives rc %ld consumed %zu, whole gives %ld %zu", name,
                  how, a->rc, a->consumed, b->rc, b->consumed);
    size_t at =
        test_first_difference(a->body, a->body_len, b->body, b->body_len);
    if (at != TEST_NO_DIFFERENCE) {
        char a_shown[TEST_SHOW_CAP], b_shown[TEST_SHOW_CAP];
        TEST_FAIL("%s: %s gives body %s (%zu bytes), whole gives %s (%zu "
                  "bytes)",
                  name, how, test_show(a_shown, a->body, a->body_len, at),
                  a->body_len, test_show(b_shown, b->body, b->body_len, at),
                  b->body_len);
    }
}

/* Decodes whole, byte by byte, and split in two at every position. */
static decoded_t check_decode(const char *name, const char *input, size_t len,
                              const px_http_options_t *opts)
{
    static const size_t whole[] = {0};
    decoded_t all = decode_pieces(input, len, whole, opts);

    size_t *ones = malloc((len + 1) * sizeof(*ones));
    ASSERT_TRUE(ones != NULL);
    for (size_t i = 0; i < len; i++)
        ones[i] = 1;
    ones[len] = 0;
    decoded_t bytes = decode_pieces(input, len, ones, opts);
    free(ones);
    assert_same_decoding(&bytes, &all, name, "byte by byte");

    for (size_t split = 1; split < len; split++) {
        size_t halves[] = {split, 0};
        decoded_t two = decode_pieces(input, len, halves, opts);
        assert_same_decoding(&two, &all, name, "split in two");
    }
    return all;
}

typedef struct {
    const char *name;
    const char *input;
    long expected;    /* 0: complete, consuming the whole input */
    const char *body; /* the decoded body */
} chunked_case_t;

static const chunked_case_t valid_bodies[] = {
    {"one_chunk", "5\r\nhello\r\n0\r\n\r\n", 0, "hello"},
    {"empty_body", "0\r\n\r\n", 0, ""},
    {"several_chunks", "3\r\nabc\r\n1\r\nd\r\n000a\r\n0123456789\r\n0\r\n\r\n",
     0, "abcd0123456789"},
    {"hex_case", "A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0\r\n\r\n", 0,
     "0123456789abcdefghijk"},
    {"data_with_crlf", "4\r\n\r\n\r\n\r\n0\r\n\r\n", 0, "\r\n\r\n"},
    {"extensions", "5;name=value;flag\r\nhello\r\n0;last\r\n\r\n", 0, "hello"},
    {"extensions_bws", "5 ; a = b\t;\tc ;d=\"x\"\r\nhello\r\n0\r\n\r\n", 0,
     "hello"},
    {"extension_quoted",
     "5;q=\"a \\\"quoted\\\" ; value\\\\\"\r\nhello\r\n0\r\n\r\n", 0, "hello"},
    {"extension_quoted_obs_text", "1;q=\"\x80\xff\t\"\r\nx\r\n0\r\n\r\n", 0,
     "x"},
    {"trailers",
     "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nY:\r\nZ: a\tb \x80\r\n\r\n", 0,
     "hello"},
    {"next_request_follows", "2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
     (long)sizeof("2\r\nhi\r\n0\r\n\r\n") - 1, "hi"},
    {"incomplete_data", "5\r\nhel", PX_HTTP_INCOMPLETE, "hel"},
    {"incomplete_size", "5\r\nhello\r\n1", PX_HTTP_INCOMPLETE, "hello"},
    {"incomplete_trailers", "0\r\nX: y\r\n", PX_HTTP_INCOMPLETE, ""},
};

static const chunked_case_t invalid_bodies[] = {
    {"size_empty", "\r\nhello\r\n0\r\n\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
    {"size_not_hex", "g\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
    {"size_negative", "-5\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
    {"size_0x", "0x5\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
    {"size_plus", "+5\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
    {"size_leading_space", " 5\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
    {"size_trailing_space", "5 \r\nhello\r\n0\r\n\r\n", PX_HTTP_E_CHUNK_EXT,
     ""},
    {"size_bare_lf", "5\nhello\r\n0\r\n\r\n", PX_HTTP_E_BARE_LF, ""},
    {"size_bare_cr", "5\rhello\r\n", PX_HTTP_E_BARE_CR, ""},
    {"size_only_lf", "\n", PX_HTTP_E_BARE_LF, ""},
    {"size_over_limit", "100001\r\n", PX_HTTP_E_BODY_TOO_LARGE, ""},
    {"size_huge", "FFFFFFFFFFFFFFFF\r\n", PX_HTTP_E_BODY_TOO_LARGE, ""},
    {"ext_empty_name", "5;\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_empty_value", "5;a=\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_bad_name", "5;a@b\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_space_in_name", "5;a b\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_name_then_space", "5;a \r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_bad_value", "5;a=b@c\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_unterminated_quote", "5;a=\"x\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT, ""},
    {"ext_control_in_quote", "5;a=\"\x01\"\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT,
     ""},
    {"ext_text_after_quote", "5;a=\"x\"y\r\nhello\r\n", PX_HTTP_E_CHUNK_EXT,
     ""},
    {"ext_bare_lf", "5;a=b\nhello\r\n", PX_HTTP_E_BARE_LF, ""},
    {"data_too_long", "5\r\nhelloX\r\n0\r\n\r\n", PX_HTTP_E_CHUNK_DATA,
     "hello"},
    {"data_bare_lf", "5\r\nhello\n0\r\n\r\n", PX_HTTP_E_BARE_LF, "hello"},
    {"data_bare_cr", "5\r\nhello\r0\r\n\r\n", PX_HTTP_E_BARE_CR, "hello"},
    {"trailer_obs_fold", "0\r\nX: a\r\n b\r\n\r\n", PX_HTTP_E_OBS_FOLD, ""},
    {"trailer_space_before_colon", "0\r\nX : a\r\n\r\n",
     PX_HTTP_E_SPACE_BEFORE_COLON, ""},
    {"trailer_bad_name", "0\r\nX(: a\r\n\r\n", PX_HTTP_E_HEADER_NAME, ""},
    {"trailer_no_colon", "0\r\nXY\r\n\r\n", PX_HTTP_E_HEADER_NAME, ""},
    {"trailer_control", "0\r\nX: a\x7f\r\n\r\n", PX_HTTP_E_HEADER_VALUE, ""},
    {"trailer_bare_lf", "0\r\nX: a\n\r\n", PX_HTTP_E_BARE_LF, ""},
    {"trailer_bare_cr", "0\r\nX: a\rb\r\n\r\n", PX_HTTP_E_BARE_CR, ""},
    {"end_bare_lf", "0\r\n\n", PX_HTTP_E_BARE_LF, ""},
    {"end_bare_cr", "0\r\n\rX", PX_HTTP_E_BARE_CR, ""},
};

static void run_table(const chunked_case_t *cases, size_t count,
                      const px_http_options_t *opts)
{
    for (size_t i = 0; i < count; i++) {
        const chunked_case_t *c = &cases[i];
        size_t len = strlen(c->input);
        decoded_t d = check_decode(c->name, c->input, len, opts);
        long expected = c->expected == 0 ? (long)len : c->expected;
        if (d.rc != expected)
            TEST_FAIL("%s: decode gave %ld (%s), expected %ld (%s)", c->name,
                      d.rc, px_http_strerror(d.rc), expected,
                      px_http_strerror(expected));
        ASSERT_SPAN_EQ(d.body, d.body_len, c->body);
    }
}

TEST(test_valid_bodies)
{
    run_table(valid_bodies, COUNT_OF(valid_bodies), NULL);
}

TEST(test_invalid_bodies)
{
    run_table(invalid_bodies, COUNT_OF(invalid_bodies), NULL);
}

TEST(test_body_size_limit)
{
    static const chunked_case_t limited[] = {
        {"at_limit", "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", 0, "helloworld"},
        /* The running total counts: the third size line already fails. */
        {"over_limit", "5\r\nhello\r\n5\r\nworld\r\n1\r\n!\r\n0\r\n\r\n",
         PX_HTTP_E_BODY_TOO_LARGE, "helloworld"},
    };
    px_http_options_t opts = {0};
    opts.max_body_size = 10;
    run_table(limited, COUNT_OF(limited), &opts);

    /* Without a body limit, a size past 64 bits is malformed. */
    static const chunked_case_t unlimited[] = {
        {"overflow", "10000000000000000\r\n", PX_HTTP_E_CHUNK_SIZE, ""},
        {"largest", "FFFFFFFFFFFFFFFF\r\nabc", PX_HTTP_INCOMPLETE, "abc"},
    };
    opts.max_body_size = UINT64_MAX;
    run_table(unlimited, COUNT_OF(unlimited), &opts);
}

TEST(test_line_limits)
{
    static const chunked_case_t short_lines[] = {
        {"line_fits", "5;a=1234\r\nhello\r\n0\r\n\r\n", 0, "hello"},
        {"line_too_long", "5;a=12345\r\nhello\r\n0\r\n\r\n",
         PX_HTTP_E_CHUNK_LINE_TOO_LONG, ""},
        /* Leading zeros count towards the line too, so they cannot go on. */
        {"zeros", "000000005\r\nhello\r\n0\r\n\r\n",
         PX_HTTP_E_CHUNK_LINE_TOO_LONG, ""},
    };
    px_http_options_t opts = {0};
    opts.max_chunk_line = 8;
    run_table(short_lines, COUNT_OF(short_lines), &opts);

    /* 12 bytes: "X: 12345\r\n" and the final CRLF. */
    static const chunked_case_t small_trailers[] = {
        {"trailer_fits", "0\r\nX: 12345\r\n\r\n", 0, ""},
        {"trailer_too_large", "0\r\nX: 123456\r\n\r\n",
         PX_HTTP_E_TRAILER_TOO_LARGE, ""},
    };
    opts.max_chunk_line = 0;
    opts.max_trailer_size = 12;
    run_table(small_trailers, COUNT_OF(small_trailers), &opts);
}

TEST(test_large_chunks)
{
    /* A 3000-byte chunk then a 1000-byte one, moved down in place. */
    static char input[5000], expected[4000];
    size_t n = (size_t)sprintf(input, "bb8\r\n");
    for (size_t i = 0; i < 4000; i++)
        expected[i] = (char)('a' + i % 26);
    memcpy(input + n, expected, 3000);
    n += 3000;
    n += (size_t)sprintf(input + n, "\r\n3e8;x=y\r\n");
    memcpy(input + n, expected + 3000, 1000);
    n += 1000;
    n += (size_t)sprintf(input + n, "\r\n0\r\n\r\n");
    static const size_t whole[] = {0};
    decoded_t d = decode_pieces(input, n, whole, NULL);
    ASSERT_INT_EQ(d.rc, (long)n);
    ASSERT_MEM_EQ(d.body, d.body_len, expected, sizeof(expected));
    static const size_t pieces[] = {7, 1000, 3, 2500, 1, 0};
    decoded_t p = decode_pieces(input, n, pieces, NULL);
    assert_same_decoding(&p, &d, "large", "in pieces");
}

TEST(test_state_after_completion)
{
    char buf[] = "1\r\nx\r\n0\r\n\r\nrest";
    px_http_chunked_t decoder;
    memset(&decoder, 0, sizeof(decoder));
    size_t decoded;
    ssize_t rc =
        px_http_decode_chunked(&decoder, NULL, buf, strlen(buf), &decoded);
    ASSERT_INT_EQ(rc, 11);
    ASSERT_INT_EQ(decoded, 1);
    ASSERT_INT_EQ(decoder.body_size, 1);
    /* A completed decoder consumes nothing more. */
    rc = px_http_decode_chunked(&decoder, NULL, buf + 11, 4, &decoded);
    ASSERT_INT_EQ(rc, 0);
    ASSERT_INT_EQ(decoded, 0);
    ASSERT_SPAN_EQ(buf + 11, 4, "rest");
    /* An empty buffer for a decoder in progress is simply incomplete. */
    memset(&decoder, 0, sizeof(decoder));
    rc = px_http_decode_chunked(&decoder, NULL, buf, 0, &decoded);
    ASSERT_INT_EQ(rc, PX_HTTP_INCOMPLETE);
    ASSERT_INT_EQ(decoded, 0);
}

static const test_case_t tests[] = {
    TEST_CASE(valid_bodies),    TEST_CASE(invalid_bodies),
    TEST_CASE(body_size_limit), TEST_CASE(line_limits),
    TEST_CASE(large_chunks),    TEST_CASE(state_after_completion),
};

TEST_MAIN(tests)
