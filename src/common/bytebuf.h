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
int px__bytebuf_append(px__bytebuf_t *b, const void *data, size_t len);
/* Drops the first len bytes (all of them when len >= b->len). */
void px__bytebuf_consume(px__bytebuf_t *b, size_t len);
/* Empties b, giving its memory back when it grew past keep bytes. */
void px__bytebuf_reset(px__bytebuf_t *b, size_t keep);
void px__bytebuf_free(px__bytebuf_t *b);

#endif
