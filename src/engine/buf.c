/*
 * buf.c - the growable byte buffer that holds a connection's received
 * bytes until its callback runs.
 *
 * Consumed bytes are dropped by moving the remainder to the front only when
 * the buffer is about to grow; a buffer that is consumed whole (the common
 * case: one callback takes everything) costs no move at all.
 *
 * A connection keeps its buffer between callbacks, so the first allocation
 * is sized to the bytes at hand rather than to a page: an idle keep-alive
 * connection that received one small request holds a few hundred bytes, not
 * a page each.
 */
#include "px_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_CAP 256u

int px__buf_append(px__buf_t *buf, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (buf->len + len > buf->cap) {
        size_t cap = buf->cap ? buf->cap : FIRST_CAP;
        while (cap < buf->len + len) {
            if (cap > SIZE_MAX / 2)
                return -ENOMEM;
            cap *= 2;
        }
        char *grown = realloc(buf->data, cap);
        if (grown == NULL)
            return -ENOMEM;
        buf->data = grown;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    return 0;
}

void px__buf_consume(px__buf_t *buf, size_t len)
{
    if (len >= buf->len) {
        buf->len = 0;
        return;
    }
    memmove(buf->data, buf->data + len, buf->len - len);
    buf->len -= len;
}

void px__buf_free(px__buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}
