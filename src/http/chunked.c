/*
 * chunked.c - the chunked transfer coding decoder (RFC 9112 §7.1), run in
 * place over the caller's buffer.
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 *
 * The decoder is a byte-driven state machine whose whole memory is the
 * caller's zero-initialised px_http_chunked_t, so input may be split at any
 * byte: it always consumes everything it is given until the body ends.
 * Chunk data is moved down to the start of the buffer; everything else
 * (size lines, extensions, CRLFs, trailers) is validated and dropped.
 *
 * Extensions are checked against the grammar (tokens, quoted strings) and
 * bounded with their size line by max_chunk_line. Trailer fields are
 * checked like header fields (no obs-fold, no whitespace before the colon,
 * no control characters, CRLF only), bounded by max_trailer_size, and
 * discarded: RFC 9110 §6.5.1 lets a recipient drop them, and nothing in
 * this server acts on them. Whitespace after a chunk size is allowed only
 * before a ";" (the grammar's BWS), and a size is bounded both by 64 bits
 * (400 beyond) and by what is left of max_body_size (413 beyond).
 */
#include "http_internal.h"

enum chunked_state {
    SIZE_START = 0,   /* the first hex digit of a chunk size */
    SIZE,             /* more hex digits, ";", BWS or CR */
    EXT_BWS,          /* whitespace that must lead to ";" */
    EXT_NAME_START,   /* BWS, then an extension name */
    EXT_NAME,         /* more name, "=", ";", BWS or CR */
    EXT_NAME_BWS,     /* whitespace that must lead to "=" or ";" */
    EXT_VALUE_START,  /* BWS, then a token or a quoted string */
    EXT_TOKEN_VALUE,  /* more token, ";", BWS or CR */
    EXT_QUOTED,       /* inside a quoted string */
    EXT_QUOTED_PAIR,  /* after a backslash in a quoted string */
    EXT_AFTER_QUOTED, /* ";", BWS or CR after a closing quote */
    SIZE_LF,          /* the LF ending a size line */
    DATA,             /* chunk data */
    DATA_CR,          /* the CR after chunk data */
    DATA_LF,          /* the LF after chunk data */
    TRAILER_START,    /* a trailer field, or the CR of the final CRLF */
    TRAILER_NAME,     /* more name or ":" */
    TRAILER_VALUE,    /* field value up to CR */
    TRAILER_LF,       /* the LF ending a trailer field */
    END_LF,           /* the LF of the final CRLF */
    DONE,
};

static bool is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* qdtext and quoted-pair's second byte (RFC 9110 §5.6.4), less the DQUOTE
 * and backslash qdtext excludes: HTAB, SP, VCHAR, obs-text. */
static bool is_quotable(unsigned char c)
{
    return c == '\t' || (c >= ' ' && c != 0x7f);
}

static int hex_value(unsigned char c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/* The byte after a size or an extension item: ";" starts another
 * extension, whitespace must lead to one, CR ends the line. */
static int after_size_or_ext(px_http_chunked_t *d, unsigned char c)
{
    if (c == ';')
        d->state = EXT_NAME_START;
    else if (is_ows(c))
        d->state = EXT_BWS;
    else if (c == '\r')
        d->state = SIZE_LF;
    else if (c == '\n')
        return PX_HTTP_E_BARE_LF;
    else
        return d->state == SIZE ? PX_HTTP_E_CHUNK_SIZE : PX_HTTP_E_CHUNK_EXT;
    return 0;
}

/* Handles one byte of a size line, extensions included. */
static int size_line_byte(px_http_chunked_t *d, const px_http_options_t *opts,
                          unsigned char c)
{
    if (c != '\r' && ++d->line_len > opts->max_chunk_line)
        return PX_HTTP_E_CHUNK_LINE_TOO_LONG;
    switch (d->state) {
    case SIZE_START:
    case SIZE:
        if (px__http_is(c, PX__HTTP_HEX)) {
            if (d->chunk_remaining > UINT64_MAX >> 4)
                return PX_HTTP_E_CHUNK_SIZE;
            d->chunk_remaining =
                d->chunk_remaining << 4 | (uint64_t)hex_value(c);
            if (d->chunk_remaining > opts->max_body_size - d->body_size)
                return PX_HTTP_E_BODY_TOO_LARGE;
            d->state = SIZE;
            return 0;
        }
        if (d->state == SIZE_START)
            return c == '\n' ? PX_HTTP_E_BARE_LF : PX_HTTP_E_CHUNK_SIZE;
        return after_size_or_ext(d, c);
    case EXT_BWS:
        if (c == ';')
            d->state = EXT_NAME_START;
        else if (!is_ows(c))
            return PX_HTTP_E_CHUNK_EXT;
        return 0;
    case EXT_NAME_START:
        if (px__http_is(c, PX__HTTP_TOKEN))
            d->state = EXT_NAME;
        else if (!is_ows(c))
            return PX_HTTP_E_CHUNK_EXT;
        return 0;
    case EXT_NAME:
        if (px__http_is(c, PX__HTTP_TOKEN))
            return 0;
        if (c == '=') {
            d->state = EXT_VALUE_START;
            return 0;
        }
        if (is_ows(c)) {
            d->state = EXT_NAME_BWS;
            return 0;
        }
        return after_size_or_ext(d, c);
    case EXT_NAME_BWS:
        if (c == '=')
            d->state = EXT_VALUE_START;
        else if (c == ';')
            d->state = EXT_NAME_START;
        else if (!is_ows(c))
            return PX_HTTP_E_CHUNK_EXT;
        return 0;
    case EXT_VALUE_START:
        if (c == '"')
            d->state = EXT_QUOTED;
        else if (px__http_is(c, PX__HTTP_TOKEN))
            d->state = EXT_TOKEN_VALUE;
        else if (!is_ows(c))
            return PX_HTTP_E_CHUNK_EXT;
        return 0;
    case EXT_TOKEN_VALUE:
        if (px__http_is(c, PX__HTTP_TOKEN))
            return 0;
        return after_size_or_ext(d, c);
    case EXT_QUOTED:
        if (c == '"')
            d->state = EXT_AFTER_QUOTED;
        else if (c == '\\')
            d->state = EXT_QUOTED_PAIR;
        else if (!is_quotable(c))
            return PX_HTTP_E_CHUNK_EXT;
        return 0;
    case EXT_QUOTED_PAIR:
        if (!is_quotable(c))
            return PX_HTTP_E_CHUNK_EXT;
        d->state = EXT_QUOTED;
        return 0;
    default: /* EXT_AFTER_QUOTED */
        return after_size_or_ext(d, c);
    }
}

/* Handles one byte of the trailer section and its final CRLF. */
static int trailer_byte(px_http_chunked_t *d, const px_http_options_t *opts,
                        unsigned char c)
{
    if (++d->trailer_size > opts->max_trailer_size)
        return PX_HTTP_E_TRAILER_TOO_LARGE;
    switch (d->state) {
    case TRAILER_START:
        if (c == '\r')
            d->state = END_LF;
        else if (c == '\n')
            return PX_HTTP_E_BARE_LF;
        else if (is_ows(c))
            return PX_HTTP_E_OBS_FOLD;
        else if (px__http_is(c, PX__HTTP_TOKEN))
            d->state = TRAILER_NAME;
        else
            return PX_HTTP_E_HEADER_NAME;
        return 0;
    case TRAILER_NAME:
        if (c == ':')
            d->state = TRAILER_VALUE;
        else if (is_ows(c))
            return PX_HTTP_E_SPACE_BEFORE_COLON;
        else if (!px__http_is(c, PX__HTTP_TOKEN))
            return PX_HTTP_E_HEADER_NAME;
        return 0;
    case TRAILER_VALUE:
        if (c == '\r')
            d->state = TRAILER_LF;
        else if (c == '\n')
            return PX_HTTP_E_BARE_LF;
        else if (!px__http_is(c, PX__HTTP_VALUE))
            return PX_HTTP_E_HEADER_VALUE;
        return 0;
    case TRAILER_LF:
        if (c != '\n')
            return PX_HTTP_E_BARE_CR;
        d->state = TRAILER_START;
        return 0;
    default: /* END_LF */
        if (c != '\n')
            return PX_HTTP_E_BARE_CR;
        d->state = DONE;
        return 0;
    }
}

/* Handles the byte ending a size line or a chunk's data. */
static int line_end_byte(px_http_chunked_t *d, unsigned char c)
{
    switch (d->state) {
    case SIZE_LF:
        if (c != '\n')
            return PX_HTTP_E_BARE_CR;
        d->line_len = 0;
        d->state = d->chunk_remaining == 0 ? TRAILER_START : DATA;
        return 0;
    case DATA_CR:
        if (c != '\r')
            return c == '\n' ? PX_HTTP_E_BARE_LF : PX_HTTP_E_CHUNK_DATA;
        d->state = DATA_LF;
        return 0;
    default: /* DATA_LF */
        if (c != '\n')
            return PX_HTTP_E_BARE_CR;
        d->state = SIZE_START;
        return 0;
    }
}

ssize_t px_http_decode_chunked(px_http_chunked_t *decoder,
                               const px_http_options_t *options, char *buf,
                               size_t len, size_t *decoded_len)
{
    px_http_options_t opts;
    px__http_resolve_options(options, &opts);
    size_t src = 0, dst = 0;
    int rc = 0;

    while (decoder->state != DONE && src < len) {
        if (decoder->state == DATA) {
            size_t avail = len - src;
            size_t n = decoder->chunk_remaining < avail
                           ? (size_t)decoder->chunk_remaining
                           : avail;
            if (dst != src)
                memmove(buf + dst, buf + src, n);
            src += n;
            dst += n;
            decoder->chunk_remaining -= n;
            decoder->body_size += n;
            if (decoder->chunk_remaining == 0)
                decoder->state = DATA_CR;
            continue;
        }
        unsigned char c = (unsigned char)buf[src++];
        if (decoder->state < SIZE_LF)
            rc = size_line_byte(decoder, &opts, c);
        else if (decoder->state >= TRAILER_START)
            rc = trailer_byte(decoder, &opts, c);
        else
            rc = line_end_byte(decoder, c);
        if (rc != 0)
            break;
    }
    *decoded_len = dst;
    if (rc != 0)
        return rc;
    return decoder->state == DONE ? (ssize_t)src : PX_HTTP_INCOMPLETE;
}
