/*
 * static.c - planning the response for a static file: validators (ETag,
 * Last-Modified), conditional requests (RFC 9110 §13) and single byte
 * ranges (RFC 9110 §14), from the file's stat and the request's fields.
 * It decides; px_http_respond_file sends.
 *
 * Precedence follows RFC 9110 §13.2.2: If-None-Match, else
 * If-Modified-Since (GET and HEAD only); then, for GET, Range guarded by
 * If-Range. If-Match and If-Unmodified-Since are not evaluated: they guard
 * state-changing requests, which a static file server does not serve.
 * HTTP-dates are accepted in all three formats a recipient must accept
 * (§5.6.7): IMF-fixdate, RFC 850 and asctime; an invalid date is ignored,
 * as §13.1.3 requires.
 */
#include "server_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const px_http_header_t *find_field(const px_http_server_request_t *req,
                                          const char *lower, size_t len,
                                          size_t from)
{
    for (size_t i = from; i < req->head.num_headers; i++) {
        const px_http_header_t *h = &req->head.headers[i];
        if (h->name_len == len && px__http_name_is(h->name, len, lower))
            return h;
    }
    return NULL;
}

#define FIND(req, literal) find_field((req), (literal), sizeof(literal) - 1, 0)

/* ---- HTTP-dates --------------------------------------------------------- */

static int month_index(const char *s)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (memcmp(s, months + 3 * i, 3) == 0)
            return i;
    return -1;
}

/* Reads exactly n digits. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* "hh:mm:ss" */
static bool clock_time(const char *s, struct tm *tm)
{
    return digits(s, 2, &tm->tm_hour) && s[2] == ':' &&
           digits(s + 3, 2, &tm->tm_min) && s[5] == ':' &&
           digits(s + 6, 2, &tm->tm_sec) && tm->tm_hour < 24 &&
           tm->tm_min < 60 && tm->tm_sec < 61;
}

/* Parses an HTTP-date into seconds since the epoch. */
static bool parse_http_date(const char *s, size_t len, int64_t *out)
{
    struct tm tm = {0};
    int year;
    const char *comma = memchr(s, ',', len);
    if (len == 29 && comma == s + 3) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (s[4] != ' ' || !digits(s + 5, 2, &tm.tm_mday) || s[7] != ' ' ||
            (tm.tm_mon = month_index(s + 8)) < 0 || s[11] != ' ' ||
            !digits(s + 12, 4, &year) || s[16] != ' ' ||
            !clock_time(s + 17, &tm) || memcmp(s + 25, " GMT", 4) != 0)
            return false;
    } else if (comma != NULL) {
        /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
        const char *d = comma + 1;
        if (s + len - d != 23 || d[0] != ' ' ||
            !digits(d + 1, 2, &tm.tm_mday) || d[3] != '-' ||
            (tm.tm_mon = month_index(d + 4)) < 0 || d[7] != '-' ||
            !digits(d + 8, 2, &year) || d[10] != ' ' ||
            !clock_time(d + 11, &tm) || memcmp(d + 19, " GMT", 4) != 0)
            return false;
        /* §5.6.7: a two-digit year more than 50 years in the future is
         * in the past century; for the dates a client sends back to us,
         * that is 1970..2069. */
        year += year < 70 ? 2000 : 1900;
    } else if (len == 24) {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        char day[2] = {s[8] == ' ' ? '0' : s[8], s[9]};
        if (s[3] != ' ' || (tm.tm_mon = month_index(s + 4)) < 0 ||
            s[7] != ' ' || !digits(day, 2, &tm.tm_mday) || s[10] != ' ' ||
            !clock_time(s + 11, &tm) || s[19] != ' ' ||
            !digits(s + 20, 4, &year))
            return false;
    } else {
        return false;
    }
    if (tm.tm_mday < 1 || tm.tm_mday > 31)
        return false;
    tm.tm_year = year - 1900;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (int64_t)t;
    return true;
}

/* ---- entity tags -------------------------------------------------------- */

typedef struct {
    const char *etag; /* ours, quoted */
    size_t etag_len;
    bool weak_compare; /* If-None-Match; If-Range compares strongly */
} etag_match_t;

static int on_etag(const char *tag, size_t len, void *arg)
{
    etag_match_t *m = arg;
    if (len == 1 && tag[0] == '*')
        return 1;
    if (len >= 2 && tag[0] == 'W' && tag[1] == '/') {
        if (!m->weak_compare)
            return 0; /* a weak tag never matches strongly */
        tag += 2;
        len -= 2;
    }
    return len == m->etag_len && memcmp(tag, m->etag, len) == 0;
}

/* Whether any If-None-Match line lists our tag (or "*"). */
static bool none_match_hits(const px_http_server_request_t *req,
                            const char *etag)
{
    etag_match_t m = {etag, strlen(etag), true};
    static const char name[] = "if-none-match";
    for (size_t i = 0;; i++) {
        const px_http_header_t *h = find_field(req, name, sizeof(name) - 1, i);
        if (h == NULL)
            return false;
        if (px__http_for_each_element(h->value, h->value_len, on_etag, &m))
            return true;
        i = (size_t)(h - req->head.headers);
    }
}

/* ---- ranges ------------------------------------------------------------- */

typedef enum { RANGE_IGNORED, RANGE_ONE, RANGE_UNSATISFIABLE } range_kind_t;

static bool read_number(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        s++;
    }
    if (s == *p)
        return false;
    *p = s;
    *out = v;
    return true;
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Range: bytes=first-[last] | bytes=-suffix (RFC 9110 §14.1.2). */
static range_kind_t parse_range(const px_http_header_t *h, uint64_t size,
                                uint64_t *first, uint64_t *last)
{
    const char *p = h->value, *end = h->value + h->value_len;
    if (h->value_len < 6 || !px__http_name_is(p, 5, "bytes") || p[5] != '=')
        return RANGE_IGNORED;
    p = skip_ows(p + 6, end);
    /* Empty list elements are allowed; more than one range is not served. */
    while (p < end && *p == ',')
        p = skip_ows(p + 1, end);
    uint64_t a = 0, b = UINT64_MAX;
    bool suffix = p < end && *p == '-';
    if (suffix) {
        p++;
        if (!read_number(&p, end, &b))
            return RANGE_IGNORED;
    } else {
        if (!read_number(&p, end, &a) || p >= end || *p != '-')
            return RANGE_IGNORED;
        p++;
        if (p < end && *p >= '0' && *p <= '9' && !read_number(&p, end, &b))
            return RANGE_IGNORED;
        if (b < a)
            return RANGE_IGNORED;
    }
    for (p = skip_ows(p, end); p < end; p = skip_ows(p + 1, end))
        if (*p != ',')
            return RANGE_IGNORED; /* another range (or garbage) */
    if (suffix) {
        if (b == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return RANGE_ONE;
    }
    if (a >= size)
        return RANGE_UNSATISFIABLE;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return RANGE_ONE;
}

/* If-Range (§13.1.5): a strong ETag equal to ours, or a date equal to our
 * Last-Modified. */
static bool if_range_holds(const px_http_header_t *h, const char *etag,
                           int64_t mtime)
{
    if (h->value_len > 0 && (h->value[0] == '"' || h->value[0] == 'W')) {
        etag_match_t m = {etag, strlen(etag), false};
        return h->value_len != 1 && on_etag(h->value, h->value_len, &m) == 1;
    }
    int64_t date;
    return parse_http_date(h->value, h->value_len, &date) && date == mtime;
}

/* ---- the plan ----------------------------------------------------------- */

static void add_field(px_http_file_plan_t *plan, const char *name,
                      const char *value)
{
    px_http_header_t *h = &plan->headers[plan->num_headers++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

void px_http_file_plan(const px_http_server_request_t *req,
                       const struct stat *st, int status,
                       px_http_file_plan_t *plan)
{
    uint64_t size = st->st_size > 0 ? (uint64_t)st->st_size : 0;
    int64_t mtime = (int64_t)st->st_mtim.tv_sec;
    uint64_t mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u +
                        (uint64_t)st->st_mtim.tv_nsec;
    plan->status = status;
    plan->offset = 0;
    plan->length = size;
    plan->num_headers = 0;
    snprintf(plan->etag, sizeof(plan->etag),
             "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", size, mtime_ns,
             (uint64_t)st->st_ino);
    add_field(plan, "ETag", plan->etag);
    bool have_date = px_http_format_date(mtime, plan->last_modified) == 0;
    if (have_date)
        add_field(plan, "Last-Modified", plan->last_modified);
    plan->content_range[0] = '\0';
    if (status != 200)
        return;

    px_http_method_t method = req->head.method_id;
    bool safe = method == PX_HTTP_METHOD_GET || method == PX_HTTP_METHOD_HEAD;
    if (FIND(req, "if-none-match") != NULL) {
        if (none_match_hits(req, plan->etag)) {
            plan->status = safe ? 304 : 412;
            plan->length = 0;
            return;
        }
    } else if (safe) {
        const px_http_header_t *ims = FIND(req, "if-modified-since");
        int64_t since;
        if (ims != NULL && have_date &&
            parse_http_date(ims->value, ims->value_len, &since) &&
            mtime <= since) {
            plan->status = 304;
            plan->length = 0;
            return;
        }
    }
    if (!safe)
        return;
    add_field(plan, "Accept-Ranges", "bytes");
    /* §14.2: Range applies to GET only. */
    const px_http_header_t *range = FIND(req, "range");
    if (method != PX_HTTP_METHOD_GET || range == NULL)
        return;
    const px_http_header_t *if_range = FIND(req, "if-range");
    if (if_range != NULL && !if_range_holds(if_range, plan->etag, mtime))
        return;
    uint64_t first = 0, last = 0;
    switch (parse_range(range, size, &first, &last)) {
    case RANGE_ONE:
        plan->status = 206;
        plan->offset = (off_t)first;
        plan->length = last - first + 1;
        snprintf(plan->content_range, sizeof(plan->content_range),
                 "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first, last, size);
        break;
    case RANGE_UNSATISFIABLE:
        plan->status = 416;
        plan->length = 0;
        snprintf(plan->content_range, sizeof(plan->content_range),
                 "bytes */%" PRIu64, size);
        break;
    case RANGE_IGNORED:
    default:
        return;
    }
    plan->num_headers--; /* Content-Range replaces Accept-Ranges */
    add_field(plan, "Content-Range", plan->content_range);
}
