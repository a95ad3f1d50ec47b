/*
 * response.c - the response head writer: status line, Date, the caller's
 * fields, framing fields and the blank line, into a caller buffer.
 *
 * The writer owns the fields that frame the message (Content-Length,
 * Transfer-Encoding, Connection) so a handler cannot contradict them and
 * split one response into two; a caller field with any of those names, or
 * with a CR, LF or other control character in its name, value or the
 * reason phrase, is refused before anything is written. The status line
 * always says HTTP/1.1 (RFC 9110 §6.2: a server sends the highest minor
 * version it conforms to); the request's version only chooses how
 * persistence is spelled, since an HTTP/1.0 client needs an explicit
 * "Connection: keep-alive" to keep the connection.
 */
#include "http_internal.h"

#include <time.h>

const char *px_http_reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 451:
        return "Unavailable For Legal Reasons";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 511:
        return "Network Authentication Required";
    default:
        return "";
    }
}

static void put_two_digits(char *p, int n)
{
    p[0] = (char)('0' + n / 10);
    p[1] = (char)('0' + n % 10);
}

int px_http_format_date(int64_t unix_seconds, char out[PX_HTTP_DATE_LEN + 1])
{
    /* Names by hand: strftime's %a and %b follow the locale. */
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    time_t t = (time_t)unix_seconds;
    struct tm tm;
    if ((int64_t)t != unix_seconds || gmtime_r(&t, &tm) == NULL)
        return PX_HTTP_E_RESPONSE_HEADER;
    int year = tm.tm_year + 1900;
    if (year < 1000 || year > 9999)
        return PX_HTTP_E_RESPONSE_HEADER;
    memcpy(out, "Sun, 00 Jan 0000 00:00:00 GMT", PX_HTTP_DATE_LEN + 1);
    memcpy(out, days + 3 * tm.tm_wday, 3);
    put_two_digits(out + 5, tm.tm_mday);
    memcpy(out + 8, months + 3 * tm.tm_mon, 3);
    put_two_digits(out + 12, year / 100);
    put_two_digits(out + 14, year % 100);
    put_two_digits(out + 17, tm.tm_hour);
    put_two_digits(out + 20, tm.tm_min);
    put_two_digits(out + 23, tm.tm_sec);
    return 0;
}

/* reason-phrase and field values: HTAB, SP, VCHAR, obs-text. */
static bool is_field_text(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!px__http_is((unsigned char)s[i], PX__HTTP_VALUE))
            return false;
    return true;
}

static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!px__http_is((unsigned char)s[i], PX__HTTP_TOKEN))
            return false;
    return true;
}

static int check_fields(const px_http_response_t *resp)
{
    for (size_t i = 0; i < resp->num_headers; i++) {
        const px_http_header_t *h = &resp->headers[i];
        if (!is_token(h->name, h->name_len) ||
            !is_field_text(h->value, h->value_len))
            return PX_HTTP_E_RESPONSE_HEADER;
        if (PX__HTTP_NAME_IS(h->name, h->name_len, "content-length") ||
            PX__HTTP_NAME_IS(h->name, h->name_len, "transfer-encoding") ||
            PX__HTTP_NAME_IS(h->name, h->name_len, "connection") ||
            (resp->date != NULL &&
             PX__HTTP_NAME_IS(h->name, h->name_len, "date")))
            return PX_HTTP_E_RESPONSE_RESERVED;
    }
    return 0;
}

static int check_response(const px_http_response_t *resp)
{
    if (resp->status < 100 || resp->status > 599)
        return PX_HTTP_E_RESPONSE_STATUS;
    if (resp->reason != NULL &&
        !is_field_text(resp->reason, strlen(resp->reason)))
        return PX_HTTP_E_RESPONSE_HEADER;
    if (resp->date != NULL &&
        (strnlen(resp->date, PX_HTTP_DATE_LEN + 1) != PX_HTTP_DATE_LEN ||
         !is_field_text(resp->date, PX_HTTP_DATE_LEN)))
        return PX_HTTP_E_RESPONSE_HEADER;
    /* RFC 9110 §8.6, §6.4.1: 1xx and 204 responses have no content and
     * carry no framing fields; an HTTP/1.0 client cannot read chunks. */
    bool no_content = resp->status < 200 || resp->status == 204;
    if (resp->body > PX_HTTP_BODY_CHUNKED)
        return PX_HTTP_E_RESPONSE_FRAMING;
    if (resp->body != PX_HTTP_BODY_NONE && no_content)
        return PX_HTTP_E_RESPONSE_FRAMING;
    if (resp->body == PX_HTTP_BODY_CHUNKED && resp->minor_version == 0)
        return PX_HTTP_E_RESPONSE_FRAMING;
    return check_fields(resp);
}

typedef struct {
    char *p;
    char *end;
    bool overflow;
} writer_t;

static void put(writer_t *w, const char *s, size_t len)
{
    if (len == 0)
        return;
    if (w->overflow || (size_t)(w->end - w->p) < len) {
        w->overflow = true;
        return;
    }
    memcpy(w->p, s, len);
    w->p += len;
}

#define PUT_LITERAL(w, literal) put((w), (literal), sizeof(literal) - 1)

static void put_string(writer_t *w, const char *s) { put(w, s, strlen(s)); }

static void put_decimal(writer_t *w, uint64_t n)
{
    char digits[20];
    size_t i = sizeof(digits);
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    put(w, digits + i, sizeof(digits) - i);
}

ssize_t px_http_write_response_head(char *out, size_t cap,
                                    const px_http_response_t *resp)
{
    int rc = check_response(resp);
    if (rc != 0)
        return rc;
    writer_t w = {out, out + cap, false};

    PUT_LITERAL(&w, "HTTP/1.1 ");
    put_decimal(&w, (uint64_t)resp->status);
    PUT_LITERAL(&w, " ");
    put_string(&w, resp->reason != NULL ? resp->reason
                                        : px_http_reason_phrase(resp->status));
    PUT_LITERAL(&w, "\r\n");
    if (resp->date != NULL) {
        PUT_LITERAL(&w, "Date: ");
        put(&w, resp->date, PX_HTTP_DATE_LEN);
        PUT_LITERAL(&w, "\r\n");
    }
    for (size_t i = 0; i < resp->num_headers; i++) {
        const px_http_header_t *h = &resp->headers[i];
        put(&w, h->name, h->name_len);
        PUT_LITERAL(&w, ": ");
        put(&w, h->value, h->value_len);
        PUT_LITERAL(&w, "\r\n");
    }
    if (resp->body == PX_HTTP_BODY_LENGTH) {
        PUT_LITERAL(&w, "Content-Length: ");
        put_decimal(&w, resp->content_length);
        PUT_LITERAL(&w, "\r\n");
    } else if (resp->body == PX_HTTP_BODY_CHUNKED) {
        PUT_LITERAL(&w, "Transfer-Encoding: chunked\r\n");
    }
    /* An interim (1xx) response says nothing about the connection. */
    if (resp->status >= 200) {
        if (!resp->keep_alive)
            PUT_LITERAL(&w, "Connection: close\r\n");
        else if (resp->minor_version == 0)
            PUT_LITERAL(&w, "Connection: keep-alive\r\n");
    }
    PUT_LITERAL(&w, "\r\n");
    if (w.overflow)
        return PX_HTTP_E_NOSPACE;
    return w.p - out;
}
