/*
 * px_http.h - the HTTP/1.1 request parser and response head writer.
 *
 * A strict RFC 9110/9112 parser for the server side, with no dependency on
 * the engine or on Python. Its contract follows picohttpparser's:
 *  - The caller owns the buffer. Results are pointer+length pairs into it;
 *    nothing is copied and nothing is allocated.
 *  - The caller sizes the header array.
 *  - Parsing a request head is stateless: call it again with more bytes (and
 *    the previous length as last_len, so an incomplete head is re-checked
 *    cheaply). It returns the bytes consumed, PX_HTTP_INCOMPLETE, or a
 *    negative PX_HTTP_E* code; px_http_error_status() maps a code to the
 *    HTTP status to answer with. After any error the connection must be
 *    closed: the parser does not know where the bad message ends.
 *  - Only the chunked body decoder keeps state, in a zero-initialised struct.
 * docs/http-parser.md describes every rejection and why.
 */
#ifndef PX_HTTP_H
#define PX_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Result codes: name, value, HTTP status to answer with, message. Their
 * range stays clear of negated errno values and of px.h's PX_E* codes. */
#define PX_HTTP_ERROR_MAP(X)                                                   \
    X(INCOMPLETE, -20000, 0, "more input is needed")                           \
    X(E_METHOD, -20001, 400, "invalid method token")                           \
    X(E_METHOD_NOT_IMPLEMENTED, -20002, 501, "method not implemented")         \
    X(E_REQUEST_LINE, -20003, 400, "malformed request line")                   \
    X(E_TARGET, -20004, 400, "invalid request target")                         \
    X(E_URI_TOO_LONG, -20005, 414, "request target too long")                  \
    X(E_VERSION, -20006, 400, "malformed HTTP version")                        \
    X(E_VERSION_NOT_SUPPORTED, -20007, 505, "HTTP version not supported")      \
    X(E_HEAD_TOO_LARGE, -20008, 431, "request header section too large")       \
    X(E_TOO_MANY_HEADERS, -20009, 431, "too many header fields")               \
    X(E_HEADER_NAME, -20010, 400, "invalid header field name")                 \
    X(E_SPACE_BEFORE_COLON, -20011, 400, "whitespace before colon")            \
    X(E_OBS_FOLD, -20012, 400, "obsolete line folding")                        \
    X(E_HEADER_VALUE, -20013, 400, "invalid character in field value")         \
    X(E_BARE_CR, -20014, 400, "CR not followed by LF")                         \
    X(E_BARE_LF, -20015, 400, "LF not preceded by CR")                         \
    X(E_MISSING_HOST, -20016, 400, "HTTP/1.1 request without Host")            \
    X(E_HOST, -20017, 400, "repeated or invalid Host")                         \
    X(E_CONTENT_LENGTH, -20018, 400, "malformed Content-Length")               \
    X(E_REPEATED_CONTENT_LENGTH, -20019, 400, "repeated Content-Length")       \
    X(E_CL_AND_TE, -20020, 400, "Content-Length with Transfer-Encoding")       \
    X(E_TRANSFER_ENCODING, -20021, 400, "unsupported Transfer-Encoding")       \
    X(E_TE_NOT_CHUNKED, -20022, 400, "final transfer coding is not chunked")   \
    X(E_TE_HTTP10, -20023, 400, "Transfer-Encoding in an HTTP/1.0 request")    \
    X(E_BODY_TOO_LARGE, -20024, 413, "request body too large")                 \
    X(E_EXPECTATION, -20025, 417, "unsupported expectation")                   \
    X(E_CHUNK_SIZE, -20026, 400, "invalid chunk size")                         \
    X(E_CHUNK_EXT, -20027, 400, "invalid chunk extension")                     \
    X(E_CHUNK_LINE_TOO_LONG, -20028, 400, "chunk size line too long")          \
    X(E_CHUNK_DATA, -20029, 400, "chunk data not followed by CRLF")            \
    X(E_TRAILER_TOO_LARGE, -20030, 431, "trailer section too large")           \
    X(E_RESPONSE_STATUS, -20031, 500, "invalid response status")               \
    X(E_RESPONSE_HEADER, -20032, 500, "invalid response header or reason")     \
    X(E_RESPONSE_RESERVED, -20033, 500, "response header owned by the writer") \
    X(E_RESPONSE_FRAMING, -20034, 500, "response framing invalid for status")  \
    X(E_NOSPACE, -20035, 500, "response head does not fit the buffer")         \
    X(E_BODY_TIMEOUT, -20036, 408, "request body timed out")

enum {
#define PX_HTTP_ERROR_ENUM(name, value, status, message)                       \
    PX_HTTP_##name = (value),
    PX_HTTP_ERROR_MAP(PX_HTTP_ERROR_ENUM)
#undef PX_HTTP_ERROR_ENUM
};

/* The HTTP status for a PX_HTTP_E* code (0 for PX_HTTP_INCOMPLETE and for
 * anything else) and a message for it. */
int px_http_error_status(long code);
const char *px_http_strerror(long code);

/* Limits. A zeroed struct (or NULL) means every default; a zero field means
 * that field's default. */
typedef struct {
    size_t max_header_size; /* the whole head: request line, fields, blank
                               line; 0: 16 KiB. Larger → 431 */
    size_t max_uri_size;    /* the request target; 0: 8 KiB. Larger → 414 */
    size_t max_headers;     /* field lines; 0: 100. More → 431 */
    uint64_t max_body_size; /* 0: 1 MiB; UINT64_MAX: unlimited. Larger → 413 */
    size_t max_chunk_line;  /* a chunk-size line with its extensions;
                               0: 4 KiB. Longer → 400 */
    size_t max_trailer_size;   /* the trailer section; 0: max_header_size.
                                  Larger → 431 */
    int allow_unknown_methods; /* accept any token as a method instead of
                                  answering 501 for unrecognised ones */
} px_http_options_t;

typedef struct {
    const char *name;
    size_t name_len;
    const char *value; /* without leading and trailing whitespace */
    size_t value_len;
} px_http_header_t;

typedef enum {
    PX_HTTP_METHOD_OTHER = 0, /* a token accepted by allow_unknown_methods */
    PX_HTTP_METHOD_GET,
    PX_HTTP_METHOD_HEAD,
    PX_HTTP_METHOD_POST,
    PX_HTTP_METHOD_PUT,
    PX_HTTP_METHOD_DELETE,
    PX_HTTP_METHOD_OPTIONS,
    PX_HTTP_METHOD_TRACE,
    PX_HTTP_METHOD_PATCH,
} px_http_method_t;

typedef struct {
    const char *method;
    size_t method_len;
    px_http_method_t method_id;
    const char *target; /* origin-form, absolute-form, or "*" */
    size_t target_len;
    int minor_version;         /* HTTP/1.0 → 0, HTTP/1.1 → 1 */
    px_http_header_t *headers; /* the caller's array */
    size_t num_headers;
} px_http_request_t;

/*
 * Parses the request head in buf[0..len). On success returns the bytes
 * consumed (the head, with any empty lines before it); req points into buf.
 * Returns PX_HTTP_INCOMPLETE when the head is not complete yet, or a
 * PX_HTTP_E* code. last_len is the length of the previous call's buffer for
 * the same request (0 on the first call): with it, an incomplete head costs
 * only a scan of the new bytes, and errors may be reported only once the
 * blank line or a size limit arrives. headers has room for max_headers
 * fields; the field count limit is the smaller of it and the options'.
 * CONNECT is always answered 501: this server is not a proxy.
 */
ssize_t px_http_parse_request(const char *buf, size_t len, size_t last_len,
                              const px_http_options_t *options,
                              px_http_request_t *req, px_http_header_t *headers,
                              size_t max_headers);

typedef enum {
    PX_HTTP_BODY_NONE = 0, /* no body (a request without CL or TE) */
    PX_HTTP_BODY_LENGTH,   /* Content-Length bytes */
    PX_HTTP_BODY_CHUNKED,  /* chunked: decode with px_http_decode_chunked */
} px_http_body_t;

typedef struct {
    px_http_body_t body;
    uint64_t content_length; /* for PX_HTTP_BODY_LENGTH */
    int keep_alive;          /* 0 after any error */
    int expect_continue;     /* an HTTP/1.1 "Expect: 100-continue" */
} px_http_framing_t;

/*
 * Decides how the body of a parsed request is delimited and whether the
 * connection stays open. Returns 0, or a PX_HTTP_E* code for a request whose
 * framing is invalid (400: smuggling defences; 413: Content-Length over
 * max_body_size, so the caller can answer before reading the body; 417: an
 * expectation other than 100-continue).
 */
int px_http_request_framing(const px_http_request_t *req,
                            const px_http_options_t *options,
                            px_http_framing_t *framing);

/* The chunked decoder's state: zero it before the first call of a body. */
typedef struct {
    uint64_t chunk_remaining; /* data bytes left in the current chunk */
    uint64_t body_size;       /* decoded bytes so far */
    size_t line_len;          /* bytes of the current chunk-size line */
    size_t trailer_size;      /* bytes of the trailer section so far */
    unsigned char state;
} px_http_chunked_t;

/*
 * Decodes the chunked body in buf[0..len) in place: on return the first
 * *decoded_len bytes of buf hold the body data this call decoded. Returns
 * the input bytes consumed once the body is complete (trailers are validated
 * and skipped; a next pipelined message starts at buf + the result, left
 * untouched), PX_HTTP_INCOMPLETE when all of buf was consumed and more is
 * needed, or a PX_HTTP_E* code. Bodies over max_body_size give 413.
 */
ssize_t px_http_decode_chunked(px_http_chunked_t *decoder,
                               const px_http_options_t *options, char *buf,
                               size_t len, size_t *decoded_len);

/* The length of an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT". */
#define PX_HTTP_DATE_LEN 29

/* Formats a time (seconds since the epoch) as an IMF-fixdate (RFC 9110
 * §5.6.7) into out, NUL-terminated; locale-independent. Returns 0, or
 * PX_HTTP_E_RESPONSE_HEADER for a time whose year is not 4 digits. Callers
 * cache the result once a second. */
int px_http_format_date(int64_t unix_seconds, char out[PX_HTTP_DATE_LEN + 1]);

typedef struct {
    int status;              /* 100..599 */
    const char *reason;      /* NULL: px_http_reason_phrase(status) */
    int minor_version;       /* the request's; 0 spells out keep-alive */
    int keep_alive;          /* 0: "Connection: close" */
    const char *date;        /* PX_HTTP_DATE_LEN chars, or NULL: no Date */
    px_http_body_t body;     /* NONE: no framing header (1xx, 204, 304, or
                                a body delimited by closing); CHUNKED
                                needs HTTP/1.1 */
    uint64_t content_length; /* for PX_HTTP_BODY_LENGTH; a HEAD response
                                states the length a GET would have */
    const px_http_header_t *headers; /* the caller's other fields */
    size_t num_headers;
} px_http_response_t;

/*
 * Writes a response head (status line, Date, the caller's fields,
 * Content-Length or Transfer-Encoding, Connection, blank line) into
 * out[0..cap) and returns its length, or a PX_HTTP_E* code: a caller field
 * or reason with characters that could inject lines, a caller field named
 * Content-Length, Transfer-Encoding or Connection (or Date when date is
 * given), or a head that does not fit.
 */
ssize_t px_http_write_response_head(char *out, size_t cap,
                                    const px_http_response_t *resp);

/* The reason phrase for a status ("" for unregistered codes). */
const char *px_http_reason_phrase(int status);

#ifdef __cplusplus
}
#endif

#endif /* PX_HTTP_H */
