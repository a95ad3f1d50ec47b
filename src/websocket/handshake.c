/*
 * handshake.c - the opening handshake of a WebSocket (RFC 6455 §4.2): the
 * checks on the client's upgrade request, Sec-WebSocket-Accept, the offered
 * subprotocols, the permessage-deflate negotiation (RFC 7692 §7.1) and the
 * "101 Switching Protocols" head that accepts it.
 *
 * Sec-WebSocket-Accept needs SHA-1 and base64: they come from OpenSSL's
 * libcrypto (EVP_Digest, EVP_EncodeBlock), which every Debian-like system
 * has and keeps patched, and which CPython's ssl module loads anyway, rather
 * than from a SHA-1 of our own.
 */
#include "ws_internal.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const char *px_ws_strerror(int code)
{
    switch (code) {
#define PX_WS_ERROR_CASE(name, value, status, message)                         \
    case PX_WS_##name:                                                         \
        return message;
        PX_WS_ERROR_MAP(PX_WS_ERROR_CASE)
#undef PX_WS_ERROR_CASE
    }
    return NULL;
}

int px_ws_error_status(int code)
{
    switch (code) {
#define PX_WS_STATUS_CASE(name, value, status, message)                        \
    case PX_WS_##name:                                                         \
        return status;
        PX_WS_ERROR_MAP(PX_WS_STATUS_CASE)
#undef PX_WS_STATUS_CASE
    }
    return 0;
}

void px_ws_accept_key(const char *key, size_t len,
                      char out[PX_WS_ACCEPT_LEN + 1])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) ||
        !EVP_DigestUpdate(ctx, key, len) ||
        !EVP_DigestUpdate(ctx, GUID, sizeof(GUID) - 1) ||
        !EVP_DigestFinal_ex(ctx, digest, &digest_len) || digest_len != 20) {
        /* Only an allocation can fail here: an empty accept value fails
         * the client's check, which is what a refusal would do. */
        EVP_MD_CTX_free(ctx);
        out[0] = '\0';
        return;
    }
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, digest, 20);
    out[PX_WS_ACCEPT_LEN] = '\0';
}

/* ---- token lists -------------------------------------------------------- */

static int element_is(const char *e, size_t len, void *lower)
{
    size_t want = strlen(lower);
    return len == want && px__http_name_is(e, len, lower);
}

/* Whether some field named name lists token (lower case). */
static bool lists_token(const px_http_request_t *req, const char *name,
                        const char *token)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++) {
        const px_http_header_t *h = &req->headers[i];
        if (h->name_len == name_len &&
            px__http_name_is(h->name, h->name_len, name) &&
            px__http_for_each_element(h->value, h->value_len, element_is,
                                      (void *)token))
            return true;
    }
    return false;
}

static bool is_base64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* A key is 16 bytes in base64: 22 characters and "==" (§4.1). */
static bool key_valid(const char *key, size_t len)
{
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_base64_char(key[i]))
            return false;
    /* The last character carries 2 bits of the 16th byte and 4 unused
     * ones, which must be zero. */
    return strchr("AQgw", key[21]) != NULL;
}

/* ---- permessage-deflate (RFC 7692 §7.1) --------------------------------- */

typedef struct {
    bool compression;
    int cap_bits;
    px_ws_deflate_t *out;
    bool found;
} offer_ctx_t;

static size_t trim(const char **s, size_t len)
{
    while (len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        len--;
    }
    while (len > 0 && ((*s)[len - 1] == ' ' || (*s)[len - 1] == '\t'))
        len--;
    return len;
}

/* Reads a window-bits value (maybe quoted): 8..15, or -1. */
static int window_bits(const char *v, size_t len)
{
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
        v++;
        len -= 2;
    }
    if (len == 1 && v[0] >= '8' && v[0] <= '9')
        return v[0] - '0';
    if (len == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + v[1] - '0';
    return -1;
}

/* Accepts or declines one offer: "permessage-deflate; param[=value]...". */
static int consider_offer(const char *e, size_t len, void *arg)
{
    offer_ctx_t *ctx = arg;
    const char *end = e + len;
    const char *semi = memchr(e, ';', len);
    const char *name = e;
    size_t name_len = trim(&name, (size_t)((semi ? semi : end) - e));
    if (!(name_len == 18 && px__http_name_is(name, 18, "permessage-deflate")))
        return 0;
    px_ws_deflate_t d = {.enabled = true,
                         .server_max_window_bits = ctx->cap_bits,
                         .client_max_window_bits = 15};
    bool seen[4] = {false, false, false, false};
    while (semi != NULL) {
        const char *p = semi + 1;
        semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *pn = p;
        size_t pn_len = trim(&pn, (size_t)((eq ? eq : pe) - p));
        const char *pv = eq ? eq + 1 : NULL;
        size_t pv_len = eq ? trim(&pv, (size_t)(pe - pv)) : 0;
        int which;
        if (PX__HTTP_NAME_IS(pn, pn_len, "server_no_context_takeover"))
            which = 0;
        else if (PX__HTTP_NAME_IS(pn, pn_len, "client_no_context_takeover"))
            which = 1;
        else if (PX__HTTP_NAME_IS(pn, pn_len, "server_max_window_bits"))
            which = 2;
        else if (PX__HTTP_NAME_IS(pn, pn_len, "client_max_window_bits"))
            which = 3;
        else
            return 0; /* an unknown parameter: decline this offer */
        if (seen[which])
            return 0;
        seen[which] = true;
        int bits = pv ? window_bits(pv, pv_len) : 0;
        switch (which) {
        case 0:
            if (pv)
                return 0;
            d.server_no_context_takeover = true;
            break;
        case 1:
            if (pv)
                return 0;
            d.client_no_context_takeover = true;
            break;
        case 2:
            /* zlib makes no 8-bit raw deflate window: decline. */
            if (bits < 9)
                return 0;
            if (bits < d.server_max_window_bits)
                d.server_max_window_bits = bits;
            break;
        case 3:
            if (pv && bits < 0)
                return 0;
            d.client_bits_offered = true;
            if (pv)
                d.client_max_window_bits = bits;
            break;
        }
    }
    *ctx->out = d;
    ctx->found = true;
    return 1;
}

/* ---- the request -------------------------------------------------------- */

int px_ws_handshake_check(const px_http_request_t *req, bool compression,
                          int max_window_bits, px_ws_handshake_t *hs)
{
    memset(hs, 0, sizeof(*hs));
    if (!lists_token(req, "upgrade", "websocket") ||
        !lists_token(req, "connection", "upgrade"))
        return PX_WS_E_NOT_UPGRADE;
    if (req->method_id != PX_HTTP_METHOD_GET)
        return PX_WS_E_METHOD;
    if (req->minor_version < 1)
        return PX_WS_E_HTTP_VERSION;
    const px_http_header_t *version = NULL, *key = NULL;
    for (size_t i = 0; i < req->num_headers; i++) {
        const px_http_header_t *h = &req->headers[i];
        if (PX__HTTP_NAME_IS(h->name, h->name_len, "sec-websocket-version")) {
            if (version != NULL)
                return PX_WS_E_VERSION;
            version = h;
        } else if (PX__HTTP_NAME_IS(h->name, h->name_len,
                                    "sec-websocket-key")) {
            if (key != NULL)
                return PX_WS_E_KEY;
            key = h;
        } else if (PX__HTTP_NAME_IS(h->name, h->name_len,
                                    "sec-websocket-protocol")) {
            /* Offers past the eighth field are not considered. */
            if (hs->num_protocols <
                sizeof(hs->protocols) / sizeof(hs->protocols[0]))
                hs->protocols[hs->num_protocols++] = h;
        }
    }
    if (version == NULL || version->value_len != 2 ||
        memcmp(version->value, "13", 2) != 0)
        return PX_WS_E_VERSION;
    if (key == NULL || !key_valid(key->value, key->value_len))
        return PX_WS_E_KEY;
    hs->key = key->value;
    hs->key_len = key->value_len;
    if (!compression)
        return 0;
    int cap = max_window_bits >= 9 && max_window_bits <= 15
                  ? max_window_bits
                  : PX_WS_DEFAULT_SERVER_WINDOW_BITS;
    offer_ctx_t ctx = {compression, cap, &hs->deflate, false};
    for (size_t i = 0; i < req->num_headers && !ctx.found; i++) {
        const px_http_header_t *h = &req->headers[i];
        if (PX__HTTP_NAME_IS(h->name, h->name_len, "sec-websocket-extensions"))
            px__http_for_each_element(h->value, h->value_len, consider_offer,
                                      &ctx);
    }
    return 0;
}

typedef struct {
    const char *token;
    size_t len;
    bool found;
} find_ctx_t;

static int find_protocol(const char *e, size_t len, void *arg)
{
    find_ctx_t *f = arg;
    if (len == f->len && memcmp(e, f->token, len) == 0) {
        f->found = true;
        return 1;
    }
    return 0;
}

bool px_ws_handshake_offers(const px_ws_handshake_t *hs, const char *token,
                            size_t len)
{
    find_ctx_t f = {token, len, false};
    for (size_t i = 0; i < hs->num_protocols && !f.found; i++)
        px__http_for_each_element(hs->protocols[i]->value,
                                  hs->protocols[i]->value_len, find_protocol,
                                  &f);
    return f.found;
}

typedef struct {
    void (*fn)(void *arg, const char *token, size_t len);
    void *arg;
} each_ctx_t;

static int each_protocol(const char *e, size_t len, void *arg)
{
    each_ctx_t *c = arg;
    c->fn(c->arg, e, len);
    return 0;
}

void px_ws_handshake_each_protocol(const px_ws_handshake_t *hs,
                                   void (*fn)(void *arg, const char *token,
                                              size_t len),
                                   void *arg)
{
    each_ctx_t c = {fn, arg};
    for (size_t i = 0; i < hs->num_protocols; i++)
        px__http_for_each_element(hs->protocols[i]->value,
                                  hs->protocols[i]->value_len, each_protocol,
                                  &c);
}

/* ---- the answer --------------------------------------------------------- */

static bool field_safe(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    return true;
}

static int put(px__bytebuf_t *b, const char *s, size_t len)
{
    return px__bytebuf_append(b, s, len);
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

int px_ws_handshake_response(const px_ws_handshake_t *hs,
                             const char *subprotocol, size_t subprotocol_len,
                             const px_http_header_t *extra, size_t num_extra,
                             char **head, size_t *len)
{
    if (subprotocol != NULL && subprotocol_len > 0 &&
        !px_ws_handshake_offers(hs, subprotocol, subprotocol_len))
        return PX_WS_E_SUBPROTOCOL;
    for (size_t i = 0; i < num_extra; i++) {
        const px_http_header_t *h = &extra[i];
        if (h->name_len == 0 || !field_safe(h->name, h->name_len) ||
            !field_safe(h->value, h->value_len) ||
            memchr(h->name, ':', h->name_len) != NULL)
            return PX_HTTP_E_RESPONSE_HEADER;
    }
    char accept[PX_WS_ACCEPT_LEN + 1];
    px_ws_accept_key(hs->key, hs->key_len, accept);
    px__bytebuf_t b = {0};
    int rc = 0;
    rc |= PUT_LIT(&b, "HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: ");
    rc |= put(&b, accept, strlen(accept));
    if (subprotocol != NULL && subprotocol_len > 0) {
        rc |= PUT_LIT(&b, "\r\nSec-WebSocket-Protocol: ");
        rc |= put(&b, subprotocol, subprotocol_len);
    }
    if (hs->deflate.enabled) {
        char ext[160];
        int n = snprintf(ext, sizeof(ext),
                         "\r\nSec-WebSocket-Extensions: permessage-deflate%s%s"
                         "; server_max_window_bits=%d",
                         hs->deflate.server_no_context_takeover
                             ? "; server_no_context_takeover"
                             : "",
                         hs->deflate.client_no_context_takeover
                             ? "; client_no_context_takeover"
                             : "",
                         hs->deflate.server_max_window_bits);
        rc |= put(&b, ext, (size_t)n);
    }
    for (size_t i = 0; i < num_extra; i++) {
        rc |= PUT_LIT(&b, "\r\n");
        rc |= put(&b, extra[i].name, extra[i].name_len);
        rc |= PUT_LIT(&b, ": ");
        rc |= put(&b, extra[i].value, extra[i].value_len);
    }
    rc |= PUT_LIT(&b, "\r\n\r\n");
    if (rc != 0) {
        px__bytebuf_free(&b);
        return -ENOMEM;
    }
    *head = b.data;
    *len = b.len;
    return 0;
}
