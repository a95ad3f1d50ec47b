/*
 * utf8.c - UTF-8 validation for text messages and close reasons (RFC 6455
 * §8.1 fails a connection that sends invalid UTF-8 with 1007).
 *
 * The validator is incremental, because a character may be split between
 * two frames of a message or two reads of one frame. Its state is the
 * number of continuation bytes a character still needs and the range the
 * next one must fall in (RFC 3629 §4): the ranges exclude overlong forms,
 * UTF-16 surrogates and code points past U+10FFFF. ASCII, most of what
 * arrives, is skipped eight bytes at a time.
 */
#include "ws_internal.h"

#include <string.h>

#define STATE(need, lo, hi)                                                    \
    (((uint32_t)(need) << 16) | ((uint32_t)(lo) << 8) | (uint32_t)(hi))

uint32_t px__utf8_step(uint32_t state, const uint8_t *p, size_t len)
{
    if (state == PX__UTF8_REJECT)
        return state;
    unsigned need = state >> 16;
    unsigned lo = (state >> 8) & 0xFF, hi = state & 0xFF;
    const uint8_t *end = p + len;
    while (p < end) {
        if (need == 0) {
            while (end - p >= 8) {
                uint64_t word;
                memcpy(&word, p, 8);
                if (word & UINT64_C(0x8080808080808080))
                    break;
                p += 8;
            }
            if (p == end)
                break;
            unsigned c = *p++;
            if (c < 0x80)
                continue;
            lo = 0x80;
            hi = 0xBF;
            if (c >= 0xC2 && c <= 0xDF) {
                need = 1;
            } else if (c >= 0xE0 && c <= 0xEF) {
                need = 2;
                if (c == 0xE0)
                    lo = 0xA0; /* no overlong three-byte forms */
                else if (c == 0xED)
                    hi = 0x9F; /* no surrogates */
            } else if (c >= 0xF0 && c <= 0xF4) {
                need = 3;
                if (c == 0xF0)
                    lo = 0x90; /* no overlong four-byte forms */
                else if (c == 0xF4)
                    hi = 0x8F; /* nothing past U+10FFFF */
            } else {
                return PX__UTF8_REJECT;
            }
        } else {
            unsigned c = *p++;
            if (c < lo || c > hi)
                return PX__UTF8_REJECT;
            need--;
            lo = 0x80;
            hi = 0xBF;
        }
    }
    return need == 0 ? PX__UTF8_ACCEPT : STATE(need, lo, hi);
}

bool px_ws_utf8_valid(const void *buf, size_t len)
{
    return px__utf8_step(PX__UTF8_ACCEPT, buf, len) == PX__UTF8_ACCEPT;
}
