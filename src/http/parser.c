/*
 * parser.c - the request head parser: request line and header fields
 * (RFC 9112 §2-§5), strict where leniency lets two parsers disagree about
 * where a message ends.
 *
 * The parse is one left-to-right pass over at most max_header_size bytes,
 * and every decision depends only on the bytes before the point where it is
 * made. So feeding a request in pieces gives, for each prefix, either
 * "incomplete" or exactly the answer the whole input gives; the tests and
 * the fuzz target check this. Limits follow from the same pass: the parser
 * sees a window of min(len, max_header_size) bytes, and running out of
 * window while more bytes exist means the head is too large (431).
 *
 * Decisions RFC 9112 leaves to the recipient:
 *  - Bare LF as a line terminator (§2.2 "MAY recognize") is rejected: a
 *    proxy in front of us that does not recognise it would see a different
 *    message. Bare CR (§2.2) is rejected too.
 *  - Empty lines before the request line are skipped (§2.2 "SHOULD ignore
 *    at least one"): clients send one after a body.
 *  - obs-fold (§5.2) and whitespace at the start of the first field line
 *    (§2.2) are rejected rather than rewritten.
 *  - The request line is split on single SPs only (§3 allows splitting on
 *    any whitespace; strictness keeps request targets unambiguous).
 */
#include "http_internal.h"

#include <limits.h>

/* The longest method this server implements (OPTIONS): RFC 9112 §3 lets a
 * server answer 501 to longer ones as soon as it has seen that many. */
#define LONGEST_KNOWN_METHOD 7

/* The 8-bytes-at-a-time scans test whole words for bytes outside a range;
 * these are the classic "has a byte below n" and "has a zero byte" tricks,
 * exact about whether some byte matches (not about which). */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)
#define HAS_BYTE_BELOW(w, n) ((((w)-ONES * (n)) & ~(w)&HIGHS) != 0)
#define HAS_BYTE_EQUAL(w, c) HAS_BYTE_BELOW((w) ^ (ONES * (c)), 1)

static uint64_t load_word(const char *p)
{
    uint64_t word;
    memcpy(&word, p, sizeof(word));
    return word;
}

/* Whether all 8 bytes of a word are in a class: field-value bytes (no
 * control byte but HTAB, which the byte loop then handles, and no DEL) or
 * request-target bytes (visible ASCII only). */
static bool word_in_class(uint64_t word, unsigned char class_bit)
{
    if (class_bit == PX__HTTP_VALUE)
        return !HAS_BYTE_BELOW(word, 0x20) && !HAS_BYTE_EQUAL(word, 0x7f);
    return !HAS_BYTE_BELOW(word, 0x21) && !HAS_BYTE_EQUAL(word, 0x7f) &&
           (word & HIGHS) == 0;
}

/* Returns the first byte in [p, end) outside class_bit (PX__HTTP_VALUE or
 * PX__HTTP_TARGET), or end. A word holding such a byte goes byte by byte
 * up to that byte, then the scan returns to whole words. */
static inline const char *scan_class(const char *p, const char *end,
                                     unsigned char class_bit)
{
    while (p < end) {
        if (end - p >= 8 && word_in_class(load_word(p), class_bit)) {
            p += 8;
            continue;
        }
        if (!px__http_is((unsigned char)*p, class_bit))
            return p;
        p++;
    }
    return end;
}

static const char *scan_token(const char *p, const char *end)
{
    /* Four lookups ANDed per step: field names are short, so the loop's
     * branch, not the lookup, is what costs. */
    const unsigned char *c = (const unsigned char *)p;
    while (end - p >= 4 &&
           (px__http_char_class[c[0]] & px__http_char_class[c[1]] &
            px__http_char_class[c[2]] & px__http_char_class[c[3]] &
            PX__HTTP_TOKEN)) {
        p += 4;
        c += 4;
    }
    while (p < end && px__http_is((unsigned char)*p, PX__HTTP_TOKEN))
        p++;
    return p;
}

/* Checks that p starts a CRLF. not_line_end is the result when p holds
 * neither CR nor LF. */
static int expect_crlf(const char *p, const char *end, int not_line_end)
{
    if (p == end)
        return PX_HTTP_INCOMPLETE;
    if (*p == '\n')
        return PX_HTTP_E_BARE_LF;
    if (*p != '\r')
        return not_line_end;
    if (p + 1 == end)
        return PX_HTTP_INCOMPLETE;
    return p[1] == '\n' ? 0 : PX_HTTP_E_BARE_CR;
}

/* Whether a full parse of buf[0..len) may now say something other than
 * "incomplete", looking only at what follows the first last_len bytes: an
 * LF followed by an empty line's CRLF, or by a bare LF or a bare CR (errors
 * the full parse reports), has arrived. */
static bool head_may_be_complete(const char *buf, size_t len, size_t last_len)
{
    const char *p = buf + (last_len >= 3 ? last_len - 3 : 0);
    const char *end = buf + len;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (end - p < 2)
            return false;
        if (p[1] == '\n' || (p[1] == '\r' && end - p >= 3))
            return true;
        p++;
    }
    return false;
}

static px_http_method_t classify_method(const char *m, size_t len)
{
#define METHOD_IS(literal)                                                     \
    (len == sizeof(literal) - 1 && memcmp(m, literal, len) == 0)
    switch (len) {
    case 3:
        if (METHOD_IS("GET"))
            return PX_HTTP_METHOD_GET;
        if (METHOD_IS("PUT"))
            return PX_HTTP_METHOD_PUT;
        break;
    case 4:
        if (METHOD_IS("HEAD"))
            return PX_HTTP_METHOD_HEAD;
        if (METHOD_IS("POST"))
            return PX_HTTP_METHOD_POST;
        break;
    case 5:
        if (METHOD_IS("TRACE"))
            return PX_HTTP_METHOD_TRACE;
        if (METHOD_IS("PATCH"))
            return PX_HTTP_METHOD_PATCH;
        break;
    case 6:
        if (METHOD_IS("DELETE"))
            return PX_HTTP_METHOD_DELETE;
        break;
    case 7:
        if (METHOD_IS("OPTIONS"))
            return PX_HTTP_METHOD_OPTIONS;
        break;
    }
    return PX_HTTP_METHOD_OTHER;
#undef METHOD_IS
}

static int parse_method(const char **cursor, const char *end,
                        const px_http_options_t *opts, px_http_request_t *req)
{
    const char *method = *cursor, *p = method;
    while (p < end && px__http_is((unsigned char)*p, PX__HTTP_TOKEN)) {
        p++;
        if (!opts->allow_unknown_methods && p - method > LONGEST_KNOWN_METHOD)
            return PX_HTTP_E_METHOD_NOT_IMPLEMENTED;
    }
    if (p == end)
        return PX_HTTP_INCOMPLETE;
    if (*p != ' ' || p == method)
        return PX_HTTP_E_METHOD;
    req->method = method;
    req->method_len = (size_t)(p - method);
    req->method_id = classify_method(method, req->method_len);
    bool is_connect = req->method_len == 7 && memcmp(method, "CONNECT", 7) == 0;
    if (req->method_id == PX_HTTP_METHOD_OTHER &&
        (!opts->allow_unknown_methods || is_connect))
        return PX_HTTP_E_METHOD_NOT_IMPLEMENTED;
    *cursor = p + 1;
    return 0;
}

/* RFC 9112 §3.2: origin-form, absolute-form, and asterisk-form for OPTIONS
 * (authority-form is CONNECT's, which parse_method refused). */
static bool is_valid_target_form(const px_http_request_t *req)
{
    const char *t = req->target;
    size_t len = req->target_len;
    if (t[0] == '/')
        return true;
    if (len == 1 && t[0] == '*')
        return req->method_id == PX_HTTP_METHOD_OPTIONS;
    /* absolute-form: scheme ":" hier-part, scheme = ALPHA *( ALPHA / DIGIT
     * / "+" / "-" / "." ) (RFC 3986 §3.1). */
    if (!((t[0] | 0x20) >= 'a' && (t[0] | 0x20) <= 'z'))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = t[i];
        if (c == ':')
            return true;
        bool alpha = (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !digit && c != '+' && c != '-' && c != '.')
            return false;
    }
    return false;
}

static int parse_target(const char **cursor, const char *end,
                        const px_http_options_t *opts, px_http_request_t *req)
{
    const char *target = *cursor;
    /* Scanning one byte past the limit tells "too long" from "just fits". */
    size_t scan_len = (size_t)(end - target);
    if (opts->max_uri_size < scan_len)
        scan_len = opts->max_uri_size + 1;
    const char *p = scan_class(target, target + scan_len, PX__HTTP_TARGET);
    if (p == target + scan_len)
        return (size_t)(p - target) > opts->max_uri_size
                   ? PX_HTTP_E_URI_TOO_LONG
                   : PX_HTTP_INCOMPLETE;
    if (*p != ' ')
        return *p == '\r' || *p == '\n' ? PX_HTTP_E_REQUEST_LINE
                                        : PX_HTTP_E_TARGET;
    if (p == target)
        return PX_HTTP_E_REQUEST_LINE;
    req->target = target;
    req->target_len = (size_t)(p - target);
    if (!is_valid_target_form(req))
        return PX_HTTP_E_TARGET;
    *cursor = p + 1;
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* HTTP-version = "HTTP/" DIGIT "." DIGIT, then CRLF (RFC 9112 §2.3). Each
 * byte is judged as it arrives so a prefix of a bad version already fails. */
static int parse_version(const char **cursor, const char *end,
                         px_http_request_t *req)
{
    static const char pattern[] = "HTTP/#.#";
    const char *p = *cursor;
    for (size_t i = 0; i < sizeof(pattern) - 1; i++, p++) {
        if (p == end)
            return PX_HTTP_INCOMPLETE;
        bool ok = pattern[i] == '#' ? is_digit(*p) : *p == pattern[i];
        if (!ok)
            return PX_HTTP_E_VERSION;
    }
    int rc = expect_crlf(p, end, PX_HTTP_E_VERSION);
    if (rc != 0)
        return rc;
    char major = p[-3], minor = p[-1];
    if (major != '1' || minor > '1')
        return PX_HTTP_E_VERSION_NOT_SUPPORTED;
    req->minor_version = minor - '0';
    *cursor = p + 2;
    return 0;
}

static int parse_request_line(const char **cursor, const char *end,
                              const px_http_options_t *opts,
                              px_http_request_t *req)
{
    const char *p = *cursor;
    for (;;) {
        if (p == end)
            return PX_HTTP_INCOMPLETE;
        if (*p != '\r' && *p != '\n')
            break;
        int rc = expect_crlf(p, end, 0);
        if (rc != 0)
            return rc;
        p += 2;
    }
    int rc = parse_method(&p, end, opts, req);
    if (rc == 0)
        rc = parse_target(&p, end, opts, req);
    if (rc == 0)
        rc = parse_version(&p, end, req);
    if (rc == 0)
        *cursor = p;
    return rc;
}

/* RFC 9110 §7.2 and RFC 3986 §3.2.2: uri-host [ ":" port ], checked by
 * character set only; an empty value is allowed. */
static bool is_valid_host(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!px__http_is((unsigned char)value[i], PX__HTTP_HOST))
            return false;
    return true;
}

/* Parses one field line at *cursor, which is known to start with a byte
 * that is neither CR, LF, SP nor HTAB. */
static int parse_field_line(const char **cursor, const char *end,
                            px_http_header_t *header)
{
    const char *name = *cursor;
    const char *p = scan_token(name, end);
    if (p == end)
        return PX_HTTP_INCOMPLETE;
    if (*p != ':' || p == name) {
        if (p != name && (*p == ' ' || *p == '\t'))
            return PX_HTTP_E_SPACE_BEFORE_COLON;
        return PX_HTTP_E_HEADER_NAME;
    }
    header->name = name;
    header->name_len = (size_t)(p - name);
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *value = p;
    p = scan_class(p, end, PX__HTTP_VALUE);
    int rc = expect_crlf(p, end, PX_HTTP_E_HEADER_VALUE);
    if (rc != 0)
        return rc;
    const char *value_end = p;
    while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
        value_end--;
    header->value = value;
    header->value_len = (size_t)(value_end - value);
    *cursor = p + 2;
    return 0;
}

static int parse_fields(const char **cursor, const char *end, size_t max_fields,
                        px_http_request_t *req, px_http_header_t *headers)
{
    const char *p = *cursor;
    size_t count = 0, hosts = 0;
    for (;;) {
        if (p == end)
            return PX_HTTP_INCOMPLETE;
        if (*p == '\r' || *p == '\n') {
            int rc = expect_crlf(p, end, 0);
            if (rc != 0)
                return rc;
            p += 2;
            break;
        }
        if (*p == ' ' || *p == '\t')
            return PX_HTTP_E_OBS_FOLD;
        if (count == max_fields)
            return PX_HTTP_E_TOO_MANY_HEADERS;
        px_http_header_t *header = &headers[count];
        int rc = parse_field_line(&p, end, header);
        if (rc != 0)
            return rc;
        count++;
        if (PX__HTTP_NAME_IS(header->name, header->name_len, "host")) {
            /* RFC 9112 §3.2: a second Host or an invalid one → 400. */
            if (++hosts > 1 || !is_valid_host(header->value, header->value_len))
                return PX_HTTP_E_HOST;
        }
    }
    if (hosts == 0 && req->minor_version == 1)
        return PX_HTTP_E_MISSING_HOST;
    req->headers = headers;
    req->num_headers = count;
    *cursor = p;
    return 0;
}

ssize_t px_http_parse_request(const char *buf, size_t len, size_t last_len,
                              const px_http_options_t *options,
                              px_http_request_t *req, px_http_header_t *headers,
                              size_t max_headers)
{
    px_http_options_t opts;
    px__http_resolve_options(options, &opts);
    /* The result must fit the return type; no sane limit comes near. */
    size_t window =
        opts.max_header_size < INT_MAX ? opts.max_header_size : INT_MAX;
    bool over_limit = len > window;
    if (!over_limit)
        window = len;
    if (last_len != 0 && last_len < len && !over_limit &&
        !head_may_be_complete(buf, len, last_len))
        return PX_HTTP_INCOMPLETE;

    const char *p = buf, *end = buf + window;
    size_t max_fields =
        max_headers < opts.max_headers ? max_headers : opts.max_headers;
    int rc = parse_request_line(&p, end, &opts, req);
    if (rc == 0)
        rc = parse_fields(&p, end, max_fields, req, headers);
    if (rc == PX_HTTP_INCOMPLETE && over_limit)
        return PX_HTTP_E_HEAD_TOO_LARGE;
    if (rc != 0)
        return rc;
    return p - buf;
}
