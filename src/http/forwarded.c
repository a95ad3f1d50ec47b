/*
 * forwarded.c - trusted proxies (px_http_ops.h): the list of addresses
 * and networks whose proxy headers are believed, and the reading of
 * "Forwarded" (RFC 7239) and "X-Forwarded-For"/"-Proto".
 *
 * Each proxy on the way appends the address it received the request from,
 * so the list reads from the client (left) to the last proxy (right). Only
 * the right end is vouched for: a client can send any list it likes, and
 * each trusted proxy appends to it. So the client is found from the right:
 * the first address that is not a trusted proxy's (or the leftmost, when
 * all are). Anything unparsable on the way stops the search: the request
 * keeps its peer as its client.
 */
#include "http_internal.h"
#include "ops_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Elements of a header list looked at, from the right. */
#define MAX_HOPS 32

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix; /* bits */
} net_t;

struct px__http_trust_s {
    bool all;
    size_t count;
    net_t nets[];
};

/* An address in text: 1 with its family and bytes (an IPv4-mapped IPv6
 * address counts as IPv4), 0 when it is not one. */
static int parse_ip(const char *s, size_t len, int *family,
                    unsigned char addr[16])
{
    char text[PX__HTTP_IP_MAX];
    if (len == 0 || len >= sizeof(text))
        return 0;
    memcpy(text, s, len);
    text[len] = '\0';
    char *zone = strchr(text, '%'); /* fe80::1%eth0 */
    if (zone != NULL)
        *zone = '\0';
    if (inet_pton(AF_INET, text, addr) == 1) {
        *family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, text, addr) != 1)
        return 0;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                             0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        *family = AF_INET;
    } else {
        *family = AF_INET6;
    }
    return 1;
}

static bool in_net(const net_t *n, int family, const unsigned char *addr)
{
    if (n->family != family)
        return false;
    int full = n->prefix / 8, rest = n->prefix % 8;
    if (memcmp(n->addr, addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (n->addr[full] & mask) == (addr[full] & mask);
}

static bool trusted(const px__http_trust_t *t, int family,
                    const unsigned char *addr)
{
    if (t->all)
        return true;
    for (size_t i = 0; i < t->count; i++)
        if (in_net(&t->nets[i], family, addr))
            return true;
    return false;
}

static int parse_entry(const char *s, size_t len, net_t *n)
{
    const char *slash = memchr(s, '/', len);
    const char *a = s;
    size_t a_len = slash ? (size_t)(slash - s) : len;
    if (a_len >= 2 && a[0] == '[' && a[a_len - 1] == ']') {
        a++;
        a_len -= 2;
    }
    if (!parse_ip(a, a_len, &n->family, n->addr))
        return -EINVAL;
    int max = n->family == AF_INET ? 32 : 128;
    n->prefix = max;
    if (slash == NULL)
        return 0;
    const char *p = slash + 1, *end = s + len;
    if (p == end)
        return -EINVAL;
    int v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || v > max)
            return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (v > max)
        return -EINVAL;
    n->prefix = v;
    return 0;
}

int px__http_trust_parse(const char *list, px__http_trust_t **out)
{
    *out = NULL;
    if (list == NULL)
        return 0;
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',' || *p == ' ';
    px__http_trust_t *t = calloc(1, sizeof(*t) + cap * sizeof(net_t));
    if (t == NULL)
        return -ENOMEM;
    size_t entries = 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t len = (size_t)(p - start);
        if (len == 0)
            continue;
        entries++;
        if (len == 1 && start[0] == '*') {
            t->all = true;
        } else if (parse_entry(start, len, &t->nets[t->count]) == 0) {
            t->count++;
        } else {
            free(t);
            return -EINVAL;
        }
    }
    if (entries == 0) {
        free(t);
        return 0;
    }
    *out = t;
    return 0;
}

void px__http_trust_free(px__http_trust_t *t) { free(t); }

bool px__http_trust_peer(const px__http_trust_t *t, const char *host, int port)
{
    /* A Unix domain socket's peers are those the socket file's
     * permissions let in: the proxy in front (as gunicorn decides). */
    if (port < 0)
        return true;
    int family;
    unsigned char addr[16];
    return parse_ip(host, strlen(host), &family, addr) &&
           trusted(t, family, addr);
}

/* ---- the headers -----------------------------------------------------------
 */

typedef struct {
    const char *node; /* for= or an X-Forwarded-For element */
    size_t node_len;
    const char *proto;
    size_t proto_len;
} hop_t;

typedef struct {
    hop_t hops[MAX_HOPS];
    size_t count;
} hops_t;

/* Appends a hop, keeping the rightmost MAX_HOPS. */
static hop_t *push(hops_t *h)
{
    if (h->count == MAX_HOPS) {
        memmove(h->hops, h->hops + 1, (MAX_HOPS - 1) * sizeof(hop_t));
        h->count--;
    }
    hop_t *hop = &h->hops[h->count++];
    memset(hop, 0, sizeof(*hop));
    return hop;
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/* The end of a part that stops at sep, skipping quoted strings. */
static const char *part_end(const char *p, const char *end, char sep)
{
    bool quoted = false;
    for (; p < end; p++) {
        if (quoted && *p == '\\' && p + 1 < end)
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == sep)
            return p;
    }
    return end;
}

static void unquote(const char **s, size_t *len)
{
    trim(s, len);
    if (*len >= 2 && (*s)[0] == '"' && (*s)[*len - 1] == '"') {
        (*s)++;
        *len -= 2;
    }
}

/* One Forwarded field value: elements by ',', pairs by ';'. */
static void read_forwarded(hops_t *h, const char *v, size_t len)
{
    const char *end = v + len;
    while (v < end) {
        const char *e = part_end(v, end, ',');
        hop_t *hop = push(h);
        for (const char *p = v; p < e;) {
            const char *q = part_end(p, e, ';');
            const char *eq = memchr(p, '=', (size_t)(q - p));
            if (eq != NULL) {
                const char *name = p, *value = eq + 1;
                size_t name_len = (size_t)(eq - p);
                size_t value_len = (size_t)(q - value);
                trim(&name, &name_len);
                unquote(&value, &value_len);
                if (PX__HTTP_NAME_IS(name, name_len, "for")) {
                    hop->node = value;
                    hop->node_len = value_len;
                } else if (PX__HTTP_NAME_IS(name, name_len, "proto")) {
                    hop->proto = value;
                    hop->proto_len = value_len;
                }
            }
            p = q < e ? q + 1 : e;
        }
        v = e < end ? e + 1 : end;
    }
}

/* One X-Forwarded-For (or -Proto) field value: elements by ','. */
static void read_list(hops_t *h, const char *v, size_t len, bool proto)
{
    const char *end = v + len;
    while (v < end) {
        const char *e = memchr(v, ',', (size_t)(end - v));
        e = e ? e : end;
        const char *s = v;
        size_t n = (size_t)(e - v);
        trim(&s, &n);
        if (n > 0) {
            hop_t *hop = push(h);
            if (proto) {
                hop->proto = s;
                hop->proto_len = n;
            } else {
                hop->node = s;
                hop->node_len = n;
            }
        }
        v = e < end ? e + 1 : end;
    }
}

/* A node ("1.2.3.4", "1.2.3.4:80", "[::1]:80", "::1"): its address and
 * port; false for anything else ("unknown", an obfuscated "_name"). */
static bool parse_node(const char *s, size_t len, int *family,
                       unsigned char addr[16], const char **ip, size_t *ip_len,
                       int *port)
{
    const char *port_text = NULL;
    *ip = s;
    *ip_len = len;
    if (len == 0)
        return false; /* an element without for= */
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return false;
        *ip = s + 1;
        *ip_len = (size_t)(close - s - 1);
        if (close + 1 < s + len) {
            if (close[1] != ':')
                return false;
            port_text = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon != NULL &&
            memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) == NULL) {
            *ip_len = (size_t)(colon - s);
            port_text = colon + 1;
        }
    }
    *port = 0;
    if (port_text != NULL) {
        int v = 0;
        const char *p = port_text;
        for (; p < s + len && *p >= '0' && *p <= '9' && v <= 65535; p++)
            v = v * 10 + (*p - '0');
        /* An obfuscated port ("_abc") leaves it unknown. */
        if (p == s + len && v <= 65535)
            *port = v;
    }
    return parse_ip(*ip, *ip_len, family, addr) == 1;
}

static bool is_https(const char *proto, size_t len)
{
    return PX__HTTP_NAME_IS(proto, len, "https") ||
           PX__HTTP_NAME_IS(proto, len, "wss");
}

void px__http_forwarded(const px__http_trust_t *t, px__http_obs_t *obs,
                        const px_http_request_t *head)
{
    /* Runs for every request of a trusted peer: the hop arrays (3 KiB)
     * are not cleared, only counted from 0. */
    hops_t fwd, xff, xfp;
    fwd.count = xff.count = xfp.count = 0;
    for (size_t i = 0; i < head->num_headers; i++) {
        const px_http_header_t *f = &head->headers[i];
        if (PX__HTTP_NAME_IS(f->name, f->name_len, "forwarded"))
            read_forwarded(&fwd, f->value, f->value_len);
        else if (PX__HTTP_NAME_IS(f->name, f->name_len, "x-forwarded-for"))
            read_list(&xff, f->value, f->value_len, false);
        else if (PX__HTTP_NAME_IS(f->name, f->name_len, "x-forwarded-proto"))
            read_list(&xfp, f->value, f->value_len, true);
    }
    hops_t *h = fwd.count > 0 ? &fwd : &xff;
    size_t chosen = h->count;
    const char *ip = NULL;
    size_t ip_len = 0;
    int port = 0;
    for (size_t i = h->count; i-- > 0;) {
        int family;
        unsigned char addr[16];
        if (!parse_node(h->hops[i].node, h->hops[i].node_len, &family, addr,
                        &ip, &ip_len, &port)) {
            /* "unknown", obfuscated or garbage: the client stays unknown,
             * but this hop's proto still tells the scheme. */
            chosen = i;
            ip = NULL;
            break;
        }
        chosen = i;
        if (!trusted(t, family, addr))
            break;
    }
    if (chosen < h->count && ip != NULL) {
        memcpy(obs->fwd_host, ip, ip_len);
        obs->fwd_host[ip_len] = '\0';
        obs->fwd_port = port;
        obs->forwarded = true;
    }
    /* The scheme: the chosen hop's proto; with X-Forwarded-Proto, the
     * element matching the chosen address when the lists match, else
     * the last one. */
    const hop_t *proto = NULL;
    if (h == &fwd) {
        if (chosen < fwd.count)
            proto = &fwd.hops[chosen];
    } else if (xfp.count > 0) {
        proto = xfp.count == xff.count && chosen < xff.count
                    ? &xfp.hops[chosen]
                    : &xfp.hops[xfp.count - 1];
    }
    if (proto != NULL && proto->proto != NULL)
        obs->https = is_https(proto->proto, proto->proto_len);
}
