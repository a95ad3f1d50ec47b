/*
 * bytebuf.h - the growable byte buffer that the engine (a connection's
 * received bytes) and the HTTP layer (request input, responses not yet
 * sent) both keep per connection. No dependency beyond libc.
 *
 * A zeroed px__bytebuf_t is an empty buffer. Functions that can fail return
 * 0 or -ENOMEM and leave the buffer as it was.
 */
#ifndef PX_BYTEBUF_H
#define PX_BYTEBUF_H

#include <stddef.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} px__bytebuf_t;

/* Makes room for extra more bytes after the len held. */
int px__bytebuf_reserve(px__bytebuf_t *b, size_t extra);
/* The same, growing to exactly len + extra bytes when it grows at all: for
 * a size known in advance (a request body's declared length), where
 * doubling would only add unused memory. */
int px__bytebuf_reserve_exact(px__bytebuf_t *b, size_t extra);
int px__bytebuf_append(px__bytebuf_t *b, const void *data, size_t len);
/* Drops the first len bytes (all of them when len >= b->len). */
void px__bytebuf_consume(px__bytebuf_t *b, size_t len);
/* Empties b, giving its memory back when it grew past keep bytes. */
void px__bytebuf_reset(px__bytebuf_t *b, size_t keep);
/* Gives back the memory past keep bytes when the len held fits in keep
 * (all of it when b is empty). */
void px__bytebuf_trim(px__bytebuf_t *b, size_t keep);
void px__bytebuf_free(px__bytebuf_t *b);

#endif
