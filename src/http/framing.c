/*
 * framing.c - how a parsed request's body is delimited (RFC 9112 §6) and
 * whether its connection stays open (§9.3), decided from the header fields
 * once, before any body byte is read.
 *
 * Every ambiguity two parsers could resolve differently is an error here,
 * because that disagreement is what request smuggling exploits:
 *  - Content-Length with Transfer-Encoding (§6.1 allows "TE wins"; we
 *    reject, since the sender is either broken or attacking).
 *  - More than one Content-Length field line, even with equal values (§6.3
 *    allows accepting equal duplicates; we choose to reject them), and any
 *    value that is not plain digits fitting 64 bits.
 *  - Transfer-Encoding with any coding but a single, final "chunked": we
 *    implement no other coding, and a final non-chunked coding leaves the
 *    length undeterminable (§6.3). RFC 9112 §6.1 suggests 501 for codings
 *    we do not understand; we answer 400 like every other framing error,
 *    and the connection closes either way.
 *  - Transfer-Encoding in an HTTP/1.0 request (§6.1: faulty framing).
 */
#include "http_internal.h"

typedef struct {
    int chunked;      /* "chunked" elements so far */
    int other;        /* any other coding seen */
    int last_chunked; /* the latest element is "chunked" */
} transfer_codings_t;

static int on_transfer_coding(const char *coding, size_t len, void *arg)
{
    transfer_codings_t *codings = arg;
    codings->last_chunked = PX__HTTP_NAME_IS(coding, len, "chunked");
    if (codings->last_chunked)
        codings->chunked++;
    else
        codings->other = 1;
    return 0;
}

typedef struct {
    int close;
    int keep_alive;
} connection_options_t;

static int on_connection_option(const char *option, size_t len, void *arg)
{
    connection_options_t *options = arg;
    if (PX__HTTP_NAME_IS(option, len, "close"))
        options->close = 1;
    else if (PX__HTTP_NAME_IS(option, len, "keep-alive"))
        options->keep_alive = 1;
    return 0;
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6). */
static int parse_content_length(const char *value, size_t len, uint64_t *out)
{
    if (len == 0)
        return PX_HTTP_E_CONTENT_LENGTH;
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned digit = (unsigned char)value[i] - (unsigned)'0';
        if (digit > 9 || n > (UINT64_MAX - digit) / 10)
            return PX_HTTP_E_CONTENT_LENGTH;
        n = n * 10 + digit;
    }
    *out = n;
    return 0;
}

/* RFC 9110 §10.1.1: "100-continue" (case-insensitive) is the only
 * expectation defined; others MAY be answered 417, which we do. */
static int on_expectation(const char *expectation, size_t len, void *arg)
{
    int *expect_continue = arg;
    if (!PX__HTTP_NAME_IS(expectation, len, "100-continue"))
        return PX_HTTP_E_EXPECTATION;
    *expect_continue = 1;
    return 0;
}

static int decide(const px_http_request_t *req, const px_http_options_t *opts,
                  px_http_framing_t *framing)
{
    transfer_codings_t codings = {0};
    connection_options_t connection = {0};
    size_t content_lengths = 0, transfer_encodings = 0;
    const px_http_header_t *content_length = NULL;
    int expect_continue = 0;
    int rc;

    for (size_t i = 0; i < req->num_headers; i++) {
        const px_http_header_t *h = &req->headers[i];
        if (PX__HTTP_NAME_IS(h->name, h->name_len, "content-length")) {
            content_lengths++;
            content_length = h;
        } else if (PX__HTTP_NAME_IS(h->name, h->name_len,
                                    "transfer-encoding")) {
            transfer_encodings++;
            px__http_for_each_element(h->value, h->value_len,
                                      on_transfer_coding, &codings);
        } else if (PX__HTTP_NAME_IS(h->name, h->name_len, "connection")) {
            px__http_for_each_element(h->value, h->value_len,
                                      on_connection_option, &connection);
        } else if (PX__HTTP_NAME_IS(h->name, h->name_len, "expect")) {
            rc = px__http_for_each_element(h->value, h->value_len,
                                           on_expectation, &expect_continue);
            if (rc != 0)
                return rc;
        }
    }

    /* An HTTP/1.0 client cannot wait for a 100 it does not know; its
     * expectation MUST be ignored. */
    framing->expect_continue = expect_continue && req->minor_version == 1;
    if (req->minor_version == 1)
        framing->keep_alive = !connection.close;
    else
        framing->keep_alive = connection.keep_alive && !connection.close;

    if (transfer_encodings > 0) {
        if (req->minor_version == 0)
            return PX_HTTP_E_TE_HTTP10;
        if (content_lengths > 0)
            return PX_HTTP_E_CL_AND_TE;
        if (!codings.last_chunked)
            return PX_HTTP_E_TE_NOT_CHUNKED;
        if (codings.chunked > 1 || codings.other)
            return PX_HTTP_E_TRANSFER_ENCODING;
        framing->body = PX_HTTP_BODY_CHUNKED;
        return 0;
    }
    if (content_lengths > 1)
        return PX_HTTP_E_REPEATED_CONTENT_LENGTH;
    if (content_lengths == 1) {
        rc = parse_content_length(content_length->value,
                                  content_length->value_len,
                                  &framing->content_length);
        if (rc != 0)
            return rc;
        if (framing->content_length > opts->max_body_size)
            return PX_HTTP_E_BODY_TOO_LARGE;
        framing->body = PX_HTTP_BODY_LENGTH;
    }
    return 0;
}

int px_http_request_framing(const px_http_request_t *req,
                            const px_http_options_t *options,
                            px_http_framing_t *framing)
{
    px_http_options_t opts;
    px__http_resolve_options(options, &opts);
    memset(framing, 0, sizeof(*framing));
    int rc = decide(req, &opts, framing);
    if (rc != 0) {
        /* After a framing error nobody knows where the next request starts:
         * the connection must close. A 413 still reports 100-continue so
         * the caller knows the client is waiting rather than sending. */
        framing->keep_alive = 0;
        framing->body = PX_HTTP_BODY_NONE;
        framing->content_length = 0;
    }
    return rc;
}
