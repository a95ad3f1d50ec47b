/*
 * http_internal.h - what the HTTP parser's files share: the character class
 * table (RFC 9110 §5.6.2 tchar, §5.5 field-value characters, the request
 * target's visible ASCII, RFC 3986 host characters, hex digits), option
 * defaults, and case-insensitive name comparison. Nothing here is API.
 */
#ifndef PX_HTTP_INTERNAL_H
#define PX_HTTP_INTERNAL_H

#include "px_http.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

enum {
    PX__HTTP_TOKEN = 1,  /* tchar */
    PX__HTTP_VALUE = 2,  /* field-vchar, SP, HTAB, obs-text */
    PX__HTTP_TARGET = 4, /* VCHAR: the bytes a request target may hold */
    PX__HTTP_HOST = 8,   /* reg-name, IP-literal and port characters */
    PX__HTTP_HEX = 16,   /* HEXDIG */
};

extern const unsigned char px__http_char_class[256];

static inline bool px__http_is(unsigned char c, unsigned char class_bits)
{
    return (px__http_char_class[c] & class_bits) != 0;
}

#define PX__HTTP_DEFAULT_MAX_HEADER_SIZE (16u * 1024)
#define PX__HTTP_DEFAULT_MAX_URI_SIZE (8u * 1024)
#define PX__HTTP_DEFAULT_MAX_HEADERS 100u
#define PX__HTTP_DEFAULT_MAX_BODY_SIZE (1024u * 1024)
#define PX__HTTP_DEFAULT_MAX_CHUNK_LINE (4u * 1024)

/* Copies options (NULL allowed) into *out with every zero field replaced by
 * its default. */
void px__http_resolve_options(const px_http_options_t *options,
                              px_http_options_t *out);

/* Whether name[0..len) equals lower (an ASCII lower-case literal) ignoring
 * case. */
bool px__http_name_is(const char *name, size_t len, const char *lower);

#define PX__HTTP_NAME_IS(name, len, literal)                                   \
    ((len) == sizeof(literal) - 1 && px__http_name_is((name), (len), (literal)))

/* Calls on_element(element, length, arg) for each non-empty element of a
 * comma-separated list (RFC 9110 §5.6.1), trimmed of whitespace; stops and
 * returns the first non-zero value on_element returns. */
int px__http_for_each_element(const char *list, size_t len,
                              int (*on_element)(const char *, size_t, void *),
                              void *arg);

#endif /* PX_HTTP_INTERNAL_H */
