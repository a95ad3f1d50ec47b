/*
 * echo_client.c - the load generator of bench/echo.py: many connections to an
 * echo server on 127.0.0.1, each keeping a fixed number of small messages in
 * flight (pipelined), for a bounded time and count.
 *
 * One thread, one epoll set, level-triggered. Every connection first sends
 * `depth` messages of `size` bytes; whenever echoed bytes complete messages,
 * it sends as many new ones, so each connection always has `depth` messages
 * in flight. The stream is a repeating pattern whose period (251, prime) is
 * not a multiple of the message size, and every echoed byte is checked
 * against it: a server that drops, reorders or corrupts data fails the run
 * instead of being measured. The server may split or coalesce messages as it
 * likes (TCP keeps no boundaries), so messages are counted as echoed bytes
 * divided by the message size.
 *
 * After a warm-up, the measured window runs for `duration` seconds or until
 * `max_messages` have been echoed, whichever comes first. The server's CPU
 * time (utime + stime of all its threads, from /proc/<pid>/stat) and this
 * process's own are read at both ends of the window, so they cover exactly
 * the messages counted. The result is one line of JSON on stdout. A run in
 * which no byte comes back for five seconds, or that overruns its time bound,
 * fails with a message on stderr and exit status 1.
 *
 *   echo_client PORT SERVER_PID CONNECTIONS DEPTH SIZE \
 *               WARMUP_S DURATION_S MAX_MESSAGES
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clients.h"

#define PATTERN_PERIOD 251
#define MAX_CONNECTIONS 10000
#define MAX_DEPTH 1024
#define MAX_SIZE 65536
#define STALL_SECONDS 5.0
/* Time allowed past warm-up + duration before the run counts as hung. */
#define OVERRUN_SECONDS 10.0
#define READ_BUFFER 65536

typedef struct {
    int fd;
    uint64_t sent;     /* bytes handed to the kernel */
    uint64_t received; /* bytes echoed back and checked */
    uint64_t owed;     /* bytes that should be sent but met a full socket */
    int want_out;      /* EPOLLOUT is armed */
} connection_t;

typedef struct {
    int port;
    long server_pid;
    int connections;
    int depth;
    int size;
    double warmup;
    double duration;
    uint64_t max_messages;
} options_t;

/* Twice the period plus one message, so any window of `size` bytes starting
 * at offset % period is contiguous. */
static unsigned char pattern[2 * PATTERN_PERIOD + MAX_SIZE];

/* utime + stime of a process, in seconds; negative errno on failure. */
static int process_cpu_seconds(long pid, double *seconds)
{
    char path[64], stat[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, stat, sizeof(stat) - 1);
    int err = n < 0 ? -errno : 0;
    close(fd);
    if (err)
        return err;
    stat[n] = '\0';
    /* The command name may contain spaces and ")", so fields are counted
     * from the last ")": state is field 3, utime 14, stime 15. */
    char *p = strrchr(stat, ')');
    if (p == NULL)
        return -EINVAL;
    unsigned long long utime, stime;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
               &utime, &stime) != 2)
        return -EINVAL;
    *seconds = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

static int connect_one(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    /* Connect while blocking (immediate on loopback), then go non-blocking. */
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int set_interest(int epfd, connection_t *c, int want_out)
{
    if (c->want_out == want_out)
        return 0;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -errno;
    c->want_out = want_out;
    return 0;
}

/* Sends what the connection owes, continuing the pattern; arms EPOLLOUT when
 * the socket is full. */
static int flush_owed(int epfd, connection_t *c)
{
    while (c->owed > 0) {
        size_t chunk = c->owed < MAX_SIZE ? (size_t)c->owed : MAX_SIZE;
        ssize_t n = send(c->fd, pattern + c->sent % PATTERN_PERIOD, chunk,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return set_interest(epfd, c, 1);
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c->sent += (uint64_t)n;
        c->owed -= (uint64_t)n;
    }
    return set_interest(epfd, c, 0);
}

/* Reads and checks echoed bytes, then tops the pipeline up to `depth`. */
static int on_readable(int epfd, connection_t *c, const options_t *o,
                       unsigned char *buf, uint64_t *echoed)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, READ_BUFFER, 0);
        if (n == 0)
            return -ECONNRESET;
        if (n < 0) {
            if (errno == EAGAIN)
                break;
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if ((uint64_t)n > c->sent - c->received)
            return -EPROTO; /* more bytes than were sent */
        for (ssize_t off = 0; off < n;) {
            size_t start =
                (size_t)((c->received + (uint64_t)off) % PATTERN_PERIOD);
            size_t run =
                (size_t)(n - off) < MAX_SIZE ? (size_t)(n - off) : MAX_SIZE;
            if (memcmp(buf + off, pattern + start, run) != 0)
                return -EBADMSG;
            off += (ssize_t)run;
        }
        c->received += (uint64_t)n;
        *echoed += (uint64_t)n;
    }
    uint64_t size = (uint64_t)o->size;
    uint64_t in_flight = (c->sent + c->owed) / size - c->received / size;
    if (in_flight < (uint64_t)o->depth)
        c->owed += ((uint64_t)o->depth - in_flight) * size;
    return flush_owed(epfd, c);
}

static int parse_options(int argc, char **argv, options_t *o)
{
    if (argc != 9)
        return -EINVAL;
    char *end;
    long values[5];
    for (int i = 0; i < 5; i++) {
        errno = 0;
        values[i] = strtol(argv[1 + i], &end, 10);
        if (errno || *end || values[i] <= 0)
            return -EINVAL;
    }
    o->port = (int)values[0];
    o->server_pid = values[1];
    o->connections = (int)values[2];
    o->depth = (int)values[3];
    o->size = (int)values[4];
    o->warmup = strtod(argv[6], &end);
    if (*end || o->warmup < 0)
        return -EINVAL;
    o->duration = strtod(argv[7], &end);
    if (*end || o->duration <= 0)
        return -EINVAL;
    o->max_messages = strtoull(argv[8], &end, 10);
    if (*end || o->max_messages == 0)
        return -EINVAL;
    if (o->port > 65535 || o->connections > MAX_CONNECTIONS ||
        o->depth > MAX_DEPTH || o->size > MAX_SIZE)
        return -ERANGE;
    return 0;
}

typedef struct {
    double time, server_cpu, own_cpu;
    uint64_t bytes;
} snapshot_t;

static int take_snapshot(const options_t *o, uint64_t echoed, snapshot_t *s)
{
    s->time = now_seconds();
    s->own_cpu = own_cpu_seconds();
    s->bytes = echoed;
    return process_cpu_seconds(o->server_pid, &s->server_cpu);
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "echo_client: %s: %s\n", what, strerror(-err));
    return 1;
}

int main(int argc, char **argv)
{
    options_t o;
    int err = parse_options(argc, argv, &o);
    if (err) {
        fprintf(stderr,
                "usage: echo_client PORT SERVER_PID CONNECTIONS DEPTH SIZE "
                "WARMUP_S DURATION_S MAX_MESSAGES (port, pid, counts > 0; "
                "at most %d connections, depth %d, size %d)\n",
                MAX_CONNECTIONS, MAX_DEPTH, MAX_SIZE);
        return 2;
    }
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (unsigned char)('a' + (i % PATTERN_PERIOD) % 26);

    static unsigned char buf[READ_BUFFER];
    connection_t *conns = calloc((size_t)o.connections, sizeof(*conns));
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || epfd < 0)
        return fail("set-up", conns == NULL ? -ENOMEM : -errno);
    for (int i = 0; i < o.connections; i++) {
        connection_t *c = &conns[i];
        c->fd = connect_one(o.port);
        if (c->fd < 0)
            return fail("connect to 127.0.0.1", c->fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            return fail("epoll_ctl", -errno);
        c->owed = (uint64_t)o.depth * (uint64_t)o.size;
        if ((err = flush_owed(epfd, c)) < 0)
            return fail("send", err);
    }

    snapshot_t first = {0}, last = {0};
    int measuring = 0;
    double start = now_seconds(), last_progress = start;
    double deadline = start + o.warmup + o.duration + OVERRUN_SECONDS;
    uint64_t stop_bytes = 0, echoed = 0;
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, 100);
        if (n < 0 && errno != EINTR)
            return fail("epoll_wait", -errno);
        for (int i = 0; i < n; i++) {
            connection_t *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                err = on_readable(epfd, c, &o, buf, &echoed);
            else
                err = flush_owed(epfd, c);
            if (err < 0)
                return fail(err == -EBADMSG
                                ? "echoed bytes differ from those sent"
                                : "connection",
                            err);
        }
        double t = now_seconds();
        if (n > 0)
            last_progress = t;
        if (t - last_progress > STALL_SECONDS)
            return fail("no echo for 5 s", -ETIMEDOUT);
        if (t > deadline)
            return fail("run overran its time bound", -ETIMEDOUT);
        if (!measuring && t - start >= o.warmup) {
            if ((err = take_snapshot(&o, echoed, &first)) < 0)
                return fail("read server CPU time", err);
            stop_bytes = first.bytes + o.max_messages * (uint64_t)o.size;
            measuring = 1;
        } else if (measuring &&
                   (t - first.time >= o.duration || echoed >= stop_bytes)) {
            if ((err = take_snapshot(&o, echoed, &last)) < 0)
                return fail("read server CPU time", err);
            break;
        }
    }
    for (int i = 0; i < o.connections; i++)
        close(conns[i].fd);
    close(epfd);
    free(conns);

    printf(
        "{\"messages\": %llu, \"seconds\": %.6f, \"server_cpu_seconds\": %.3f, "
        "\"client_cpu_seconds\": %.3f, \"connections\": %d, \"depth\": %d, "
        "\"size\": %d}\n",
        (unsigned long long)((last.bytes - first.bytes) / (uint64_t)o.size),
        last.time - first.time, last.server_cpu - first.server_cpu,
        last.own_cpu - first.own_cpu, o.connections, o.depth, o.size);
    return 0;
}
