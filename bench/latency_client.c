/*
 * latency_client.c - the open-loop load generator of bench/http.py's latency
 * scenario: HTTP/1.1 GET requests to 127.0.0.1 at a fixed rate, with the
 * latency of every request measured from the moment it was due.
 *
 * Why not wrk: a closed-loop generator sends a connection's next request only
 * once the previous response is in, so while a server stalls it sends almost
 * nothing, and the stall costs one slow sample instead of the many requests
 * that real clients would have sent meanwhile (coordinated omission). Here
 * request i is due at start + i / rate, whatever happened before. It goes out
 * at once on an idle keep-alive connection, or, when every connection waits
 * for a response, as soon as one is free; either way its latency runs from
 * its due time to the last byte of its response, so queueing in the client
 * because the server is slow is counted against the server, as it should.
 *
 * One thread, one epoll set, a timerfd armed for the next due time (no
 * spinning: the generator shares the cores with the server). A connection the
 * server closes (Connection: close, or a keep-alive timeout) is reopened; a
 * request that was in flight on it counts as an error. Only requests due after
 * the warm-up are recorded. After the last due time the generator waits up to
 * DRAIN_SECONDS for the responses still owed; those that never come count as
 * unanswered. The result is one line of JSON on stdout: counts, percentiles
 * of latency in microseconds, and this process's CPU time.
 *
 *   latency_client PORT PATH RATE CONNECTIONS WARMUP_S DURATION_S
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "clients.h"

#define MAX_CONNECTIONS 4096
#define MAX_EVENTS 256
#define HEAD_BUFFER 16384
#define DRAIN_SECONDS 10.0
/* A backlog of due requests this long means the rate is above what the
 * server sustains: the run stops rather than measure a growing queue. */
#define MAX_QUEUED 1000000

enum state { CLOSED, CONNECTING, IDLE, BUSY };

typedef struct {
    int fd;
    enum state state;
    double due;         /* due time of the request in flight */
    size_t head_len;    /* bytes of response head buffered so far */
    uint64_t body_left; /* body bytes still to read, once the head is in */
    int in_body;        /* the head is parsed; reading the body */
    int close_after;    /* the response said Connection: close */
    int status;         /* status code of the response being read */
    char head[HEAD_BUFFER];
} connection_t;

typedef struct {
    int port;
    const char *path;
    double rate;
    int connections;
    double warmup;
    double duration;
} options_t;

typedef struct {
    double *due; /* ring of due times of requests waiting for a connection */
    size_t head, count, capacity;
} queue_t;

typedef struct {
    double *latency_us; /* one per recorded response */
    size_t recorded;
    uint64_t sent, completed, errors, bad_status, reconnects;
} results_t;

static int parse_options(int argc, char **argv, options_t *o)
{
    if (argc != 7)
        return -1;
    char *end;
    o->port = (int)strtol(argv[1], &end, 10);
    if (*end || o->port <= 0 || o->port > 65535)
        return -1;
    o->path = argv[2];
    if (o->path[0] != '/' || strpbrk(o->path, " \r\n"))
        return -1;
    o->rate = strtod(argv[3], &end);
    if (*end || !(o->rate > 0))
        return -1;
    o->connections = (int)strtol(argv[4], &end, 10);
    if (*end || o->connections < 1 || o->connections > MAX_CONNECTIONS)
        return -1;
    o->warmup = strtod(argv[5], &end);
    if (*end || o->warmup < 0)
        return -1;
    o->duration = strtod(argv[6], &end);
    if (*end || !(o->duration > 0))
        return -1;
    return 0;
}

static int open_connection(int epfd, connection_t *c, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int connected = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    if (!connected && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct epoll_event ev = {.events = EPOLLIN | (connected ? 0 : EPOLLOUT),
                             .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    c->fd = fd;
    c->state = connected ? IDLE : CONNECTING;
    return 0;
}

static void close_connection(connection_t *c)
{
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = CLOSED;
}

static int send_request(connection_t *c, const char *request, size_t len,
                        double due)
{
    ssize_t n = send(c->fd, request, len, MSG_NOSIGNAL);
    if (n != (ssize_t)len)
        return -1; /* a request this small fits an idle socket's buffer */
    c->state = BUSY;
    c->due = due;
    c->head_len = 0;
    c->in_body = 0;
    return 0;
}

/* Finds the value of a header field in a NUL-terminated head, or NULL. */
static const char *field_value(const char *head, const char *name)
{
    size_t len = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line != NULL;
         line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, len) == 0 && line[len] == ':') {
            const char *value = line + len + 1;
            while (*value == ' ' || *value == '\t')
                value++;
            return value;
        }
    }
    return NULL;
}

/* Parses a complete head (NUL-terminated, ending at its blank line). */
static int parse_head(connection_t *c, size_t head_end)
{
    char saved = c->head[head_end];
    c->head[head_end] = '\0';
    int ok = strncmp(c->head, "HTTP/1.", 7) == 0 && strlen(c->head) > 12;
    if (ok) {
        c->status = atoi(c->head + 9);
        const char *length = field_value(c->head, "Content-Length");
        const char *connection = field_value(c->head, "Connection");
        ok = length != NULL;
        c->body_left = ok ? strtoull(length, NULL, 10) : 0;
        /* HTTP/1.0 closes unless it says keep-alive; 1.1 unless close. */
        if (c->head[7] == '0')
            c->close_after = connection == NULL ||
                             strncasecmp(connection, "keep-alive", 10) != 0;
        else
            c->close_after =
                connection != NULL && strncasecmp(connection, "close", 5) == 0;
    }
    c->head[head_end] = saved;
    return ok ? 0 : -1;
}

static void record(results_t *r, const options_t *o, double start,
                   connection_t *c, double now)
{
    r->completed++;
    if (c->status != 200) {
        r->bad_status++;
        return;
    }
    if (c->due >= start + o->warmup)
        r->latency_us[r->recorded++] = (now - c->due) * 1e6;
}

/* Reads what arrived; returns 1 when a response completed, 0 when more is
 * needed, -1 when the connection is gone or spoke nonsense. */
static int on_readable(connection_t *c)
{
    char scratch[65536];
    for (;;) {
        char *into = c->in_body ? scratch : c->head + c->head_len;
        size_t room =
            c->in_body ? sizeof(scratch) : sizeof(c->head) - 1 - c->head_len;
        if (room == 0)
            return -1; /* a head larger than the buffer */
        if (c->in_body && c->body_left < room)
            room = (size_t)c->body_left;
        if (c->in_body && room == 0)
            return 1;
        ssize_t n = recv(c->fd, into, room, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        if (c->in_body) {
            c->body_left -= (uint64_t)n;
            if (c->body_left == 0)
                return 1;
            continue;
        }
        c->head_len += (size_t)n;
        c->head[c->head_len] = '\0';
        char *end = strstr(c->head, "\r\n\r\n");
        if (end == NULL)
            continue;
        size_t head_end = (size_t)(end - c->head) + 4;
        if (parse_head(c, head_end) < 0)
            return -1;
        size_t extra = c->head_len - head_end;
        if (extra > c->body_left)
            return -1; /* bytes past this response: none were asked for */
        c->body_left -= extra;
        c->in_body = 1;
        if (c->body_left == 0)
            return 1;
    }
}

static int queue_push(queue_t *q, double due)
{
    if (q->count == q->capacity)
        return -1;
    q->due[(q->head + q->count) % q->capacity] = due;
    q->count++;
    return 0;
}

static double queue_pop(queue_t *q)
{
    double due = q->due[q->head];
    q->head = (q->head + 1) % q->capacity;
    q->count--;
    return due;
}

static void arm_timer(int tfd, double at)
{
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)at;
    its.it_value.tv_nsec = (long)((at - floor(at)) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1; /* zero would disarm it */
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(p * (double)n);
    return sorted[rank == 0 ? 0 : rank - 1];
}

int main(int argc, char **argv)
{
    options_t o;
    if (parse_options(argc, argv, &o) < 0) {
        fprintf(stderr, "usage: latency_client PORT PATH RATE CONNECTIONS "
                        "WARMUP_S DURATION_S\n");
        return 2;
    }
    char request[1024];
    int request_len =
        snprintf(request, sizeof(request),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", o.path);
    if (request_len >= (int)sizeof(request)) {
        fprintf(stderr, "latency_client: path too long\n");
        return 2;
    }
    uint64_t total = (uint64_t)ceil((o.warmup + o.duration) * o.rate);
    results_t r = {.latency_us = malloc(sizeof(double) * (total + 1))};
    queue_t q = {.due = malloc(sizeof(double) * MAX_QUEUED),
                 .capacity = MAX_QUEUED};
    connection_t *conns = calloc((size_t)o.connections, sizeof(*conns));
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!r.latency_us || !q.due || !conns || epfd < 0 || tfd < 0) {
        perror("latency_client: set-up");
        return 1;
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);
    for (int i = 0; i < o.connections; i++) {
        int err = open_connection(epfd, &conns[i], o.port);
        if (err < 0) {
            fprintf(stderr, "latency_client: connect to port %d: %s\n", o.port,
                    strerror(-err));
            return 1;
        }
    }

    double cpu_start = own_cpu_seconds();
    double start = now_seconds() + 0.05; /* the connections settle first */
    double last_due = start + (double)(total - 1) / o.rate;
    uint64_t next = 0; /* index of the next request to fall due */
    arm_timer(tfd, start);
    struct epoll_event events[MAX_EVENTS];
    int failed = 0;
    while (!failed) {
        double now = now_seconds();
        if (next == total && q.count == 0) {
            int busy = 0;
            for (int i = 0; i < o.connections; i++)
                busy += conns[i].state == BUSY;
            if (busy == 0 || now > last_due + DRAIN_SECONDS)
                break;
        }
        /* Every request now due goes out on an idle connection, or waits
         * in the queue (its due time kept) for one. */
        for (; next < total && start + (double)next / o.rate <= now; next++) {
            if (queue_push(&q, start + (double)next / o.rate) < 0) {
                fprintf(stderr,
                        "latency_client: %d requests queued: the rate "
                        "is above what the server sustains\n",
                        MAX_QUEUED);
                failed = 1;
                break;
            }
        }
        for (int i = 0; i < o.connections && q.count > 0; i++) {
            connection_t *c = &conns[i];
            if (c->state != IDLE)
                continue;
            if (send_request(c, request, (size_t)request_len, q.due[q.head]) <
                0) {
                r.errors++;
                close_connection(c);
                continue;
            }
            queue_pop(&q);
            r.sent++;
        }
        for (int i = 0; i < o.connections; i++) {
            if (conns[i].state == CLOSED && now <= last_due + DRAIN_SECONDS) {
                if (open_connection(epfd, &conns[i], o.port) == 0)
                    r.reconnects++;
            }
        }
        if (next < total)
            arm_timer(tfd, start + (double)next / o.rate);
        else
            arm_timer(tfd, now + 0.1); /* to notice the end of draining */
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("latency_client: epoll_wait");
            return 1;
        }
        now = now_seconds();
        for (int i = 0; i < n; i++) {
            connection_t *c = events[i].data.ptr;
            if (c == NULL) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof(expirations)) < 0 &&
                    errno != EAGAIN)
                    perror("latency_client: timerfd");
                continue;
            }
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0) {
                    close_connection(c);
                    continue;
                }
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                c->state = IDLE;
                continue;
            }
            if (c->state == IDLE) {
                /* Nothing was asked: the server is closing the connection. */
                char byte;
                ssize_t got = recv(c->fd, &byte, 1, MSG_DONTWAIT);
                if (got >= 0 || errno != EAGAIN) {
                    r.errors += got > 0; /* bytes nobody asked for */
                    close_connection(c);
                }
                continue;
            }
            int done = on_readable(c);
            if (done < 0) {
                r.errors++;
                close_connection(c);
            } else if (done > 0) {
                record(&r, &o, start, c, now);
                if (c->close_after)
                    close_connection(c);
                else
                    c->state = IDLE;
            }
        }
    }
    double cpu = own_cpu_seconds() - cpu_start;
    uint64_t unanswered = 0;
    for (int i = 0; i < o.connections; i++)
        unanswered += conns[i].state == BUSY;
    unanswered += q.count + (total - next);

    qsort(r.latency_us, r.recorded, sizeof(double), compare_doubles);
    double sum = 0;
    for (size_t i = 0; i < r.recorded; i++)
        sum += r.latency_us[i];
    const double *l = r.latency_us;
    size_t m = r.recorded;
    printf("{\"rate\": %.1f, \"duration_s\": %.3f, \"due\": %llu, "
           "\"sent\": %llu, \"completed\": %llu, \"recorded\": %zu, "
           "\"errors\": %llu, \"bad_status\": %llu, \"unanswered\": %llu, "
           "\"reconnects\": %llu, \"p50_us\": %.1f, \"p90_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"mean_us\": %.1f, \"client_cpu_s\": %.4f}\n",
           o.rate, o.duration, (unsigned long long)total,
           (unsigned long long)r.sent, (unsigned long long)r.completed, m,
           (unsigned long long)r.errors, (unsigned long long)r.bad_status,
           (unsigned long long)unanswered, (unsigned long long)r.reconnects,
           percentile(l, m, 0.50), percentile(l, m, 0.90),
           percentile(l, m, 0.99), percentile(l, m, 0.999), m ? l[m - 1] : 0.0,
           m ? sum / (double)m : 0.0, cpu);
    for (int i = 0; i < o.connections; i++)
        if (conns[i].state != CLOSED)
            close(conns[i].fd);
    close(tfd);
    close(epfd);
    free(conns);
    free(q.due);
    free(r.latency_us);
    return failed ? 1 : 0;
}
