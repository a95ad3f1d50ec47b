/*
 * ws_client.c - the load generator of bench/ws.py: many WebSocket
 * connections to a server on 127.0.0.1, in one of two scenarios.
 *
 *   echo  every connection keeps `depth` binary messages of 16 bytes in
 *         flight; each echoed message is checked, timed (its payload carries
 *         the time it was sent) and replaced by a new one.
 *   room  every connection joins one room; the first also sends `rate`
 *         messages per second, which the server broadcasts to every member:
 *         each delivery is timed from the message's sending (its fan-out
 *         latency).
 *
 * One thread, one epoll set, level-triggered. The handshakes are made first,
 * one after the other (the run does not time them). Client frames are
 * masked with the zero key, which RFC 6455 allows and which leaves the
 * payload as it is. After a warm-up, the measured window runs `duration`
 * seconds; the result is one line of JSON on stdout: messages delivered per
 * second and latency percentiles (microseconds) over the window. A run in
 * which nothing arrives for five seconds, or whose server closes a
 * connection, fails with a message on stderr and exit status 1.
 *
 *   ws_client echo PORT PATH CONNECTIONS DEPTH WARMUP_S DURATION_S
 *   ws_client room PORT PATH CONNECTIONS RATE WARMUP_S DURATION_S
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clients.h"

#define MAX_CONNECTIONS 20000
#define PAYLOAD 16
#define FRAME (2 + 4 + PAYLOAD) /* a client frame: header, zero mask, payload  \
                                 */
#define READ_BUFFER 65536
#define STALL_SECONDS 5.0
#define MAX_SAMPLES (16u << 20)

typedef struct {
    int fd;
    char in[READ_BUFFER];
    size_t len;
} conn_t;

static conn_t *conns;
static int nconns;
static uint32_t *samples; /* latencies in the window, microseconds */
static size_t nsamples;
static uint64_t delivered; /* messages in the window */

static void die(const char *what)
{
    fprintf(stderr, "ws_client: %s: %s\n", what,
            errno ? strerror(errno) : "failed");
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (errno == EAGAIN) {
                struct timespec pause = {0, 50000};
                nanosleep(&pause, NULL);
            }
            continue;
        }
        if (n <= 0)
            die("send");
        data += n;
        len -= (size_t)n;
    }
}

static int open_ws(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char req[512];
    int n = snprintf(
        req, sizeof(req),
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
        path, port);
    send_all(fd, req, (size_t)n);
    /* Read the 101's head byte by byte: nothing after it may be lost. */
    char head[2048];
    size_t got = 0;
    while (got < 4 || memcmp(head + got - 4, "\r\n\r\n", 4) != 0) {
        if (got == sizeof(head) || recv(fd, head + got, 1, 0) != 1)
            die("handshake");
        got++;
    }
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "ws_client: handshake refused: %.*s\n", (int)got, head);
        exit(1);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void frame_at(char *out, uint64_t sent_ns)
{
    out[0] = (char)0x82; /* FIN, binary */
    out[1] = (char)(0x80 | PAYLOAD);
    memset(out + 2, 0, 4); /* the zero mask */
    memcpy(out + 6, &sent_ns, 8);
    memset(out + 14, 'x', PAYLOAD - 8);
}

static void send_messages(conn_t *c, int count)
{
    char buf[FRAME * 64];
    while (count > 0) {
        int k = count > 64 ? 64 : count;
        uint64_t t = now_ns();
        for (int i = 0; i < k; i++)
            frame_at(buf + i * FRAME, t);
        send_all(c->fd, buf, (size_t)(k * FRAME));
        count -= k;
    }
}

/* Takes the whole frames in c->in; returns how many messages it held, each
 * timed into the samples when counting. */
static int take_frames(conn_t *c, int counting, uint64_t now)
{
    size_t at = 0;
    int messages = 0;
    while (c->len - at >= 2) {
        unsigned char *p = (unsigned char *)c->in + at;
        size_t n = p[1] & 0x7F, h = 2;
        if (n == 126) {
            if (c->len - at < 4)
                break;
            n = ((size_t)p[2] << 8) | p[3];
            h = 4;
        } else if (n == 127) {
            fprintf(stderr, "ws_client: unexpected large frame\n");
            exit(1);
        }
        if (c->len - at < h + n)
            break;
        int opcode = p[0] & 0x0F;
        if (opcode == 0x8) {
            fprintf(stderr, "ws_client: the server closed a connection\n");
            exit(1);
        }
        if (opcode == 0x2 && n == PAYLOAD) {
            uint64_t sent;
            memcpy(&sent, p + h, 8);
            messages++;
            if (counting) {
                delivered++;
                if (nsamples < MAX_SAMPLES)
                    samples[nsamples++] = (uint32_t)((now - sent) / 1000u);
            }
        } else if (opcode == 0x9) { /* a ping: answer it */
            char pong[6 + 125];
            pong[0] = (char)0x8A;
            pong[1] = (char)(0x80 | n);
            memset(pong + 2, 0, 4);
            memcpy(pong + 6, p + h, n);
            send_all(c->fd, pong, 6 + n);
        }
        at += h + n;
    }
    memmove(c->in, c->in + at, c->len - at);
    c->len -= at;
    return messages;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double q)
{
    if (nsamples == 0)
        return 0;
    size_t i = (size_t)(q * (double)(nsamples - 1));
    return samples[i];
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: ws_client echo|room PORT PATH CONNECTIONS "
                        "DEPTH|RATE WARMUP_S DURATION_S\n");
        return 2;
    }
    int room = strcmp(argv[1], "room") == 0;
    int port = atoi(argv[2]);
    const char *path = argv[3];
    nconns = atoi(argv[4]);
    double param = atof(argv[5]), warmup = atof(argv[6]),
           duration = atof(argv[7]);
    if (nconns < 1 || nconns > MAX_CONNECTIONS || param <= 0)
        die("arguments");
    conns = calloc((size_t)nconns, sizeof(*conns));
    samples = malloc(MAX_SAMPLES * sizeof(*samples));
    int ep = epoll_create1(0);
    if (conns == NULL || samples == NULL || ep < 0)
        die("setup");
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = open_ws(port, path);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
            die("epoll_ctl");
    }
    /* A room's members are all in before the first message. */
    if (room) {
        struct timespec settle = {0, 200000000};
        nanosleep(&settle, NULL);
    }
    double cpu0 = 0, start = now_seconds(), window_start = start + warmup;
    double window_end = window_start + duration, last_progress = start;
    double interval = room ? 1.0 / param : 0, next_send = start;
    int counting = 0;
    if (!room)
        for (int i = 0; i < nconns; i++)
            send_messages(&conns[i], (int)param);
    struct epoll_event events[256];
    for (;;) {
        double t = now_seconds();
        if (!counting && t >= window_start) {
            counting = 1;
            cpu0 = own_cpu_seconds();
        }
        if (t >= window_end)
            break;
        if (t - last_progress > STALL_SECONDS) {
            fprintf(stderr, "ws_client: nothing arrived for %g s\n",
                    STALL_SECONDS);
            return 1;
        }
        if (room && t >= next_send) {
            send_messages(&conns[0], 1);
            next_send += interval;
            if (next_send < t - 1.0) /* fallen far behind: do not burst */
                next_send = t;
        }
        int timeout_ms = room ? (int)((next_send - t) * 1000) : 100;
        if (timeout_ms < 0)
            timeout_ms = 0;
        int n =
            epoll_wait(ep, events, 256, timeout_ms > 100 ? 100 : timeout_ms);
        uint64_t now = now_ns();
        for (int e = 0; e < n; e++) {
            conn_t *c = &conns[events[e].data.u32];
            ssize_t r = recv(c->fd, c->in + c->len, READ_BUFFER - c->len, 0);
            if (r == 0) {
                fprintf(stderr, "ws_client: the server closed a connection\n");
                return 1;
            }
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                die("recv");
            }
            c->len += (size_t)r;
            int got = take_frames(c, counting, now);
            if (got > 0) {
                last_progress = now_seconds();
                if (!room)
                    send_messages(c, got);
            }
        }
    }
    double seconds = now_seconds() - window_start;
    double cpu = own_cpu_seconds() - cpu0;
    qsort(samples, nsamples, sizeof(*samples), cmp_u32);
    printf("{\"messages\": %llu, \"seconds\": %.6f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, "
           "\"client_cpu_seconds\": %.6f}\n",
           (unsigned long long)delivered, seconds, percentile(0.50),
           percentile(0.99), cpu);
    return 0;
}
