/*
 * common.c - what the HTTP parser's files share: the character class table,
 * the result codes' statuses and messages, option defaults, and the two
 * small helpers every header consumer needs (case-insensitive names and
 * comma-separated lists).
 */
#include "http_internal.h"

/* One byte per character: a bit set of PX__HTTP_* classes (TOKEN=1,
 * VALUE=2, TARGET=4, HOST=8, HEX=16). test_http_parser.c checks every entry
 * against the RFC definitions. */
const unsigned char px__http_char_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  7,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 14, 14, 6,  14, 6,  6,  /* 0x30 */
    6,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 0x50 */
    7,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* obs-text
                                                                     */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2,
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
};

int px_http_error_status(long code)
{
    switch (code) {
#define PX_HTTP_ERROR_STATUS(name, value, status, message)                     \
    case (value):                                                              \
        return (status);
        PX_HTTP_ERROR_MAP(PX_HTTP_ERROR_STATUS)
#undef PX_HTTP_ERROR_STATUS
    default:
        return 0;
    }
}

const char *px_http_strerror(long code)
{
    switch (code) {
#define PX_HTTP_ERROR_MESSAGE(name, value, status, message)                    \
    case (value):                                                              \
        return (message);
        PX_HTTP_ERROR_MAP(PX_HTTP_ERROR_MESSAGE)
#undef PX_HTTP_ERROR_MESSAGE
    default:
        return "not an HTTP parser result code";
    }
}

void px__http_resolve_options(const px_http_options_t *options,
                              px_http_options_t *out)
{
    if (options != NULL)
        *out = *options;
    else
        memset(out, 0, sizeof(*out));
    if (out->max_header_size == 0)
        out->max_header_size = PX__HTTP_DEFAULT_MAX_HEADER_SIZE;
    if (out->max_uri_size == 0)
        out->max_uri_size = PX__HTTP_DEFAULT_MAX_URI_SIZE;
    if (out->max_headers == 0)
        out->max_headers = PX__HTTP_DEFAULT_MAX_HEADERS;
    if (out->max_body_size == 0)
        out->max_body_size = PX__HTTP_DEFAULT_MAX_BODY_SIZE;
    if (out->max_chunk_line == 0)
        out->max_chunk_line = PX__HTTP_DEFAULT_MAX_CHUNK_LINE;
    if (out->max_trailer_size == 0)
        out->max_trailer_size = out->max_header_size;
}

bool px__http_name_is(const char *name, size_t len, const char *lower)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        /* Setting bit 5 folds only letters into lower case; the literal is
         * lower-case, so a non-letter can match only itself. */
        if (c >= 'A' && c <= 'Z')
            c |= 0x20;
        if (c != (unsigned char)lower[i])
            return false;
    }
    return true;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

int px__http_for_each_element(const char *list, size_t len,
                              int (*on_element)(const char *, size_t, void *),
                              void *arg)
{
    const char *p = list, *end = list + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *element_end = comma != NULL ? comma : end;
        while (p < element_end && is_ows(*p))
            p++;
        const char *trimmed_end = element_end;
        while (trimmed_end > p && is_ows(trimmed_end[-1]))
            trimmed_end--;
        if (trimmed_end > p) {
            int rc = on_element(p, (size_t)(trimmed_end - p), arg);
            if (rc != 0)
                return rc;
        }
        p = comma != NULL ? comma + 1 : end;
    }
    return 0;
}
