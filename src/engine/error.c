/*
 * error.c - messages for the engine's error codes.
 *
 * Engine functions return negated errno values or the PX_E* codes of
 * px.h's PX_ERRNO_MAP; both kinds are described here so that callers need
 * one function to turn any code into text.
 */
#include "px.h"

#include <netdb.h>
#include <string.h>

const char *px_strerror(int code)
{
    switch (code) {
#define PX_ERRNO_CASE(name, value, message)                                    \
    case PX_##name:                                                            \
        return message;
        PX_ERRNO_MAP(PX_ERRNO_CASE)
#undef PX_ERRNO_CASE
    default:
        break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code); /* glibc's table is read-only and shared */
    if (PX_IS_EAI(code))
        return gai_strerror(PX_EAI_CODE(code)); /* static strings as well */
    return "unknown error";
}
