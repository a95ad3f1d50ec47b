/*
 * net.c - socket helpers: name resolution, non-blocking mode and address
 * formatting, shared by listeners, outgoing connections and the peer/local
 * name queries.
 */
#include "px_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int px__resolve(const char *host, int port, struct sockaddr_storage *addr,
                socklen_t *len)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    memset(addr, 0, sizeof(*addr));
    if (host == NULL || host[0] == '\0') {
        struct sockaddr_in *sin = (struct sockaddr_in *)addr;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof(*sin);
        return 0;
    }
    /* Numeric addresses are by far the common case; resolve them without
     * getaddrinfo, which may read /etc/nsswitch.conf and friends. */
    struct sockaddr_in *sin = (struct sockaddr_in *)addr;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof(*sin);
        return 0;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*sin6);
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return rc == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    if (addr->ss_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    return 0;
}

int px__set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int px__format_addr(const struct sockaddr_storage *addr, char *host,
                    size_t hostlen, int *port)
{
    const void *src;
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
        src = &sin->sin_addr;
        *port = ntohs(sin->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
        src = &sin6->sin6_addr;
        *port = ntohs(sin6->sin6_port);
    } else {
        return -EAFNOSUPPORT;
    }
    if (inet_ntop(addr->ss_family, src, host, (socklen_t)hostlen) == NULL)
        return -errno;
    return 0;
}

int px__open_socket(const char *host, int port, struct sockaddr_storage *addr,
                    socklen_t *len)
{
    int rc = px__resolve(host, port, addr, len);
    if (rc < 0)
        return rc;
    int fd =
        socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}
