/*
 * bytebuf.c - see bytebuf.h.
 *
 * Buffers are kept per connection between callbacks, so the first
 * allocation is sized to the bytes at hand rather than to a page: an idle
 * keep-alive connection that received one small request holds a few hundred
 * bytes, not a page per buffer. Growth doubles, so a large request or
 * response still costs a logarithmic number of reallocations; a size known
 * in advance is reserved exactly instead, since doubling costs up to twice
 * the memory held (and each reallocation on the way leaves the allocator a
 * freed block of its own).
 *
 * Consuming a prefix moves the rest to the front; a buffer consumed whole
 * (the common case: one callback or one parse takes everything) costs no
 * move at all.
 */
#include "bytebuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_CAP 256u

int px__bytebuf_reserve(px__bytebuf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap : FIRST_CAP;
    while (cap - b->len < extra)
        cap *= 2;
    char *grown = realloc(b->data, cap);
    if (grown == NULL)
        return -ENOMEM;
    b->data = grown;
    b->cap = cap;
    return 0;
}

int px__bytebuf_reserve_exact(px__bytebuf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    char *grown = realloc(b->data, b->len + extra);
    if (grown == NULL)
        return -ENOMEM;
    b->data = grown;
    b->cap = b->len + extra;
    return 0;
}

int px__bytebuf_append(px__bytebuf_t *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int rc = px__bytebuf_reserve(b, len);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

void px__bytebuf_consume(px__bytebuf_t *b, size_t len)
{
    if (len >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + len, b->len - len);
    b->len -= len;
}

void px__bytebuf_reset(px__bytebuf_t *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep)
        px__bytebuf_free(b);
}

void px__bytebuf_trim(px__bytebuf_t *b, size_t keep)
{
    if (b->cap <= keep || b->len > keep)
        return;
    if (b->len == 0) {
        px__bytebuf_free(b);
        return;
    }
    /* Shrinking cannot fail in practice; if it does, b keeps its memory. */
    char *shrunk = realloc(b->data, keep);
    if (shrunk == NULL)
        return;
    b->data = shrunk;
    b->cap = keep;
}

void px__bytebuf_free(px__bytebuf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
