/*
 * deflate.c - permessage-deflate's compression (RFC 7692 §7.2) with zlib:
 * raw deflate streams, each message ended with a sync flush whose final
 * 00 00 FF FF is left off the wire and put back before inflating.
 *
 * With context takeover (the default) a compressor and a decompressor keep
 * their window from one message to the next, which is where most of the
 * gain on small similar messages comes from; "no_context_takeover" resets
 * them after every message. Both are made on first use by their owner, so
 * a connection that negotiated compression but sends little pays little.
 * The compressor uses memLevel 5 and the window negotiated (12 bits unless
 * the client asked for less): about 20 KiB per connection.
 */
#include "ws_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

#define CHUNK 16384
#define MEM_LEVEL 5

static const uint8_t TAIL[4] = {0x00, 0x00, 0xFF, 0xFF};

struct px__ws_inflater_s {
    z_stream z;
    bool reset_each;
};

struct px_ws_deflater_s {
    z_stream z;
    bool reset_each;
};

int px__ws_inflater_new(int window_bits, bool no_context_takeover,
                        px__ws_inflater_t **out)
{
    (void)window_bits; /* a 15-bit window reads any smaller one */
    px__ws_inflater_t *inf = calloc(1, sizeof(*inf));
    if (inf == NULL)
        return -ENOMEM;
    if (inflateInit2(&inf->z, -15) != Z_OK) {
        free(inf);
        return -ENOMEM;
    }
    inf->reset_each = no_context_takeover;
    *out = inf;
    return 0;
}

void px__ws_inflater_free(px__ws_inflater_t *inf)
{
    if (inf == NULL)
        return;
    inflateEnd(&inf->z);
    free(inf);
}

/* Inflates in[0..len) appending to out, within max. */
static int inflate_part(px__ws_inflater_t *inf, const void *in, size_t len,
                        uint64_t max, px__bytebuf_t *out)
{
    z_stream *z = &inf->z;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)len;
    while (z->avail_in > 0) {
        if (px__bytebuf_reserve(out, CHUNK) < 0)
            return PX_WS_CLOSE_INTERNAL_ERROR;
        size_t room = out->cap - out->len;
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = (uInt)(room > UINT32_MAX ? UINT32_MAX : room);
        uInt before = z->avail_out;
        int rc = inflate(z, Z_SYNC_FLUSH);
        out->len += before - z->avail_out;
        if (out->len > max)
            return PX_WS_CLOSE_TOO_BIG;
        if (rc == Z_STREAM_END || rc == Z_NEED_DICT || rc == Z_DATA_ERROR ||
            rc == Z_STREAM_ERROR)
            return PX_WS_CLOSE_INVALID_DATA; /* a final block is not ours */
        if (rc == Z_MEM_ERROR)
            return PX_WS_CLOSE_INTERNAL_ERROR;
        if (rc == Z_BUF_ERROR && before == z->avail_out && z->avail_in > 0)
            return PX_WS_CLOSE_INVALID_DATA;
    }
    return 0;
}

int px__ws_inflate(px__ws_inflater_t *inf, const void *data, size_t len,
                   uint64_t max, px__bytebuf_t *out)
{
    int rc = 0;
    /* zlib counts input in 32-bit units; a message passes max long
     * before that matters, but feed it in pieces all the same. */
    const char *p = data;
    while (rc == 0 && len > 0) {
        size_t part = len > (1u << 30) ? (1u << 30) : len;
        rc = inflate_part(inf, p, part, max, out);
        p += part;
        len -= part;
    }
    if (rc == 0)
        rc = inflate_part(inf, TAIL, sizeof(TAIL), max, out);
    if (rc != 0 || inf->reset_each)
        inflateReset(&inf->z);
    return rc;
}

int px_ws_deflater_new(int window_bits, bool no_context_takeover,
                       px_ws_deflater_t **out)
{
    if (window_bits < 9 || window_bits > 15)
        return -EINVAL;
    px_ws_deflater_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    if (deflateInit2(&d->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits,
                     MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(d);
        return -ENOMEM;
    }
    d->reset_each = no_context_takeover;
    *out = d;
    return 0;
}

void px_ws_deflater_free(px_ws_deflater_t *d)
{
    if (d == NULL)
        return;
    deflateEnd(&d->z);
    free(d);
}

int px_ws_deflate(px_ws_deflater_t *d, const void *data, size_t len, char **out,
                  size_t *out_len)
{
    px__bytebuf_t b = {0};
    z_stream *z = &d->z;
    const Bytef *p = data;
    size_t left = len;
    int rc;
    do {
        size_t part = left > (1u << 30) ? (1u << 30) : left;
        z->next_in = (Bytef *)p;
        z->avail_in = (uInt)part;
        p += part;
        left -= part;
        int flush = left == 0 ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        do {
            if (px__bytebuf_reserve(&b, part / 2 + 64) < 0) {
                px__bytebuf_free(&b);
                deflateReset(z);
                return -ENOMEM;
            }
            size_t room = b.cap - b.len;
            z->next_out = (Bytef *)b.data + b.len;
            z->avail_out = (uInt)(room > UINT32_MAX ? UINT32_MAX : room);
            uInt before = z->avail_out;
            rc = deflate(z, flush);
            b.len += before - z->avail_out;
        } while (rc == Z_OK && z->avail_out == 0);
    } while (left > 0 && rc == Z_OK);
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
        px__bytebuf_free(&b);
        deflateReset(z);
        return -ENOMEM;
    }
    /* A sync flush ends with an empty stored block, 00 00 FF FF. */
    if (b.len >= 4)
        b.len -= 4;
    if (d->reset_each)
        deflateReset(z);
    *out = b.data;
    *out_len = b.len;
    if (*out == NULL) {
        *out = malloc(1);
        if (*out == NULL)
            return -ENOMEM;
    }
    return 0;
}
