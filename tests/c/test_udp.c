/*
 * test_udp.c - datagram endpoints: an echo endpoint returns datagrams of
 * every size up to the largest UDP payload, whole and in order, over IPv4
 * and IPv6; on_open comes first and on_close last, exactly once, and no two
 * callbacks of an endpoint overlap or run off its worker; a connected
 * endpoint reports the ICMP error of a closed port through on_error or its
 * next send; closing before the endpoint opened, closing from a callback
 * and the loop's stop all end in one on_close; sends after it fail with
 * PX_ECLOSED; several threads send at once. Each case runs under both
 * backends.
 */
#include "engine_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

typedef struct {
    int worker; /* where the endpoint lives, once open */
    bool echo;  /* on_datagram sends the datagram back */
    bool close_on_datagram;
    atomic_int opened, closed, datagrams, errors;
    atomic_int close_error, last_error;
    atomic_int overlaps, bad_order, bad_worker;
    atomic_int in_callback;
    atomic_size_t bytes;
} probe_t;

static void enter(px_udp_t *u, probe_t *p)
{
    if (atomic_exchange(&p->in_callback, 1))
        atomic_fetch_add(&p->overlaps, 1);
    if (px_current_worker() != px_udp_worker(u))
        atomic_fetch_add(&p->bad_worker, 1);
    if (atomic_load(&p->closed))
        atomic_fetch_add(&p->bad_order, 1);
}

static void leave(probe_t *p) { atomic_store(&p->in_callback, 0); }

static void probe_open(px_udp_t *u)
{
    probe_t *p = px_udp_data(u);
    enter(u, p);
    if (atomic_fetch_add(&p->opened, 1) != 0)
        atomic_fetch_add(&p->bad_order, 1);
    leave(p);
}

static void probe_datagram(px_udp_t *u, const char *data, size_t len,
                           const char *host, int port)
{
    probe_t *p = px_udp_data(u);
    enter(u, p);
    if (atomic_load(&p->opened) != 1)
        atomic_fetch_add(&p->bad_order, 1);
    atomic_fetch_add(&p->datagrams, 1);
    atomic_fetch_add(&p->bytes, len);
    if (p->echo)
        ASSERT_PX_OK(px_udp_sendto(u, data, len, host, port));
    if (p->close_on_datagram)
        px_udp_close(u);
    leave(p);
}

static void probe_error(px_udp_t *u, int error)
{
    probe_t *p = px_udp_data(u);
    enter(u, p);
    atomic_store(&p->last_error, error);
    atomic_fetch_add(&p->errors, 1);
    leave(p);
}

static void probe_close(px_udp_t *u, int error)
{
    probe_t *p = px_udp_data(u);
    enter(u, p);
    atomic_store(&p->close_error, error);
    atomic_fetch_add(&p->closed, 1);
    leave(p);
}

static const px_udp_callbacks_t probe_callbacks = {
    .on_open = probe_open,
    .on_datagram = probe_datagram,
    .on_error = probe_error,
    .on_close = probe_close,
};

static void check_clean(probe_t *p)
{
    ASSERT_INT_EQ(atomic_load(&p->opened), 1);
    ASSERT_INT_EQ(atomic_load(&p->closed), 1);
    ASSERT_INT_EQ(atomic_load(&p->overlaps), 0);
    ASSERT_INT_EQ(atomic_load(&p->bad_order), 0);
    ASSERT_INT_EQ(atomic_load(&p->bad_worker), 0);
}

/* A blocking UDP socket of the family, bound to its loopback address, with
 * bounded waits. */
static int peer_socket(int family)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_TRUE(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    ASSERT_INT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct sockaddr_storage a = {0};
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*s4);
    }
    ASSERT_INT_EQ(bind(fd, (struct sockaddr *)&a, len), 0);
    return fd;
}

static int peer_port(int fd)
{
    struct sockaddr_storage a;
    socklen_t len = sizeof(a);
    ASSERT_INT_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    return a.ss_family == AF_INET6
               ? ntohs(((struct sockaddr_in6 *)&a)->sin6_port)
               : ntohs(((struct sockaddr_in *)&a)->sin_port);
}

static void peer_send(int fd, const char *host, int port, const void *data,
                      size_t len)
{
    struct sockaddr_storage a = {0};
    socklen_t alen;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&a;
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        alen = sizeof(*s6);
    } else {
        ASSERT_INT_EQ(inet_pton(AF_INET, host, &s4->sin_addr), 1);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        alen = sizeof(*s4);
    }
    ASSERT_INT_EQ(sendto(fd, data, len, 0, (struct sockaddr *)&a, alen),
                  (intmax_t)len);
}

static size_t peer_recv(int fd, void *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap, 0);
    if (n < 0)
        TEST_FAIL("recv: %s", strerror(errno));
    return (size_t)n;
}

/* Every size from empty to the largest IPv4 UDP payload comes back whole. */
static void echo_sizes(int backend, int family)
{
    const char *host = family == AF_INET6 ? "::1" : "127.0.0.1";
    int peer = peer_socket(family);
    px_loop_t *loop = start_loop(backend, NULL);
    probe_t p = {.echo = true};
    px_udp_t *u;
    ASSERT_PX_OK(
        px_udp_open(loop, -1, host, 0, NULL, 0, &probe_callbacks, &p, &u));
    char name[64];
    int port = 0;
    ASSERT_PX_OK(px_udp_sockname(u, name, sizeof(name), &port));
    ASSERT_STR_EQ(name, host);
    ASSERT_TRUE(port > 0);
    ASSERT_INT_EQ(px_udp_peername(u, name, sizeof(name), &port), -ENOTCONN);
    ASSERT_PX_OK(px_udp_sockname(u, name, sizeof(name), &port));

    static const size_t sizes[] = {0, 1, 2, 512, 1472, 1473, 9000, 65507};
    static char out[65536], in[65536 + 1];
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill_pattern(out, sizes[i], total, (unsigned)i);
        peer_send(peer, host, port, out, sizes[i]);
        ASSERT_UINT_EQ(peer_recv(peer, in, sizeof(in)), sizes[i]);
        check_pattern(in, sizes[i], total, (unsigned)i);
        total += sizes[i];
    }
    ASSERT_INT_EQ(atomic_load(&p.datagrams), 8);
    ASSERT_UINT_EQ(atomic_load(&p.bytes), total);
    /* Too large for any datagram. */
    ASSERT_INT_EQ(px_udp_sendto(u, out, PX_UDP_MAX_DATAGRAM + 1, host, 1),
                  -EMSGSIZE);
    ASSERT_INT_EQ(px_udp_sendto(u, "x", 1, "not an address", 1), -EINVAL);
    ASSERT_INT_EQ(px_udp_sendto(u, "x", 1, NULL, 0), -EDESTADDRREQ);
    px_udp_close(u);
    WAIT_FOR(atomic_load(&p.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&p.close_error), 0);
    ASSERT_INT_EQ(px_udp_sendto(u, "x", 1, host, peer_port(peer)), PX_ECLOSED);
    px_udp_close(u); /* idempotent */
    px_udp_unref(u);
    finish_loop(loop);
    check_clean(&p);
    close(peer);
}

static void test_echo_ipv4(int backend) { echo_sizes(backend, AF_INET); }

static void test_echo_ipv6(int backend)
{
    int probe = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                             .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (probe >= 0)
        close(probe);
    if (!ok)
        exit(TEST_EXIT_SKIP); /* no IPv6 loopback here */
    echo_sizes(backend, AF_INET6);
}

/* A connected endpoint: the remote's datagrams arrive, sends need no
 * address, and a closed port's ICMP error is reported. */
static void test_connected(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    int peer = peer_socket(AF_INET);
    probe_t p = {0};
    px_udp_t *u;
    ASSERT_PX_OK(px_udp_open(loop, 1, NULL, 0, "127.0.0.1", peer_port(peer),
                             &probe_callbacks, &p, &u));
    ASSERT_INT_EQ(px_udp_worker(u), 1);
    char host[64];
    int port = 0, local = 0;
    ASSERT_PX_OK(px_udp_peername(u, host, sizeof(host), &port));
    ASSERT_STR_EQ(host, "127.0.0.1");
    ASSERT_INT_EQ(port, peer_port(peer));
    ASSERT_PX_OK(px_udp_sockname(u, host, sizeof(host), &local));
    ASSERT_PX_OK(px_udp_sendto(u, "ping", 4, NULL, 0));
    char buf[16];
    ASSERT_UINT_EQ(peer_recv(peer, buf, sizeof(buf)), 4);
    ASSERT_TRUE(memcmp(buf, "ping", 4) == 0);
    peer_send(peer, "127.0.0.1", local, "pong", 4);
    WAIT_FOR(atomic_load(&p.datagrams) == 1, WAIT_MS);
    px_udp_close(u);
    WAIT_FOR(atomic_load(&p.closed) == 1, WAIT_MS);
    px_udp_unref(u);

    /* Nothing listens on the remote port: the kernel's ICMP answer comes
     * back as ECONNREFUSED, to on_error or to a later send. */
    probe_t q = {0};
    ASSERT_PX_OK(px_udp_open(loop, -1, NULL, 0, "127.0.0.1", closed_port(),
                             &probe_callbacks, &q, &u));
    int refused = 0;
    uint64_t until = px_now_ns() + (uint64_t)WAIT_MS * 1000000u;
    while (!refused && atomic_load(&q.errors) == 0) {
        if (px_now_ns() > until)
            TEST_FAIL("no ECONNREFUSED from a closed port");
        int rc = px_udp_sendto(u, "x", 1, NULL, 0);
        if (rc == -ECONNREFUSED)
            refused = 1;
        else
            ASSERT_PX_OK(rc);
        sleep_ms(5);
    }
    if (!refused)
        ASSERT_INT_EQ(atomic_load(&q.last_error), -ECONNREFUSED);
    px_udp_close(u);
    WAIT_FOR(atomic_load(&q.closed) == 1, WAIT_MS);
    px_udp_unref(u);
    finish_loop(loop);
    check_clean(&p);
    check_clean(&q);
    close(peer);
}

/* Closed before its on_open ran, from its own callback, and by the loop's
 * stop: one on_close each, after on_open. */
static void test_close_paths(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    probe_t early = {0}, inside = {.close_on_datagram = true}, stopped = {0};
    px_udp_t *ue, *ui, *us;
    ASSERT_PX_OK(px_udp_open(loop, 0, "127.0.0.1", 0, NULL, 0, &probe_callbacks,
                             &early, &ue));
    px_udp_close(ue);
    ASSERT_PX_OK(px_udp_open(loop, 1, "127.0.0.1", 0, NULL, 0, &probe_callbacks,
                             &inside, &ui));
    ASSERT_PX_OK(px_udp_open(loop, 0, "127.0.0.1", 0, NULL, 0, &probe_callbacks,
                             &stopped, &us));
    WAIT_FOR(atomic_load(&early.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&early.close_error), 0);

    char host[64];
    int port;
    ASSERT_PX_OK(px_udp_sockname(ui, host, sizeof(host), &port));
    int peer = peer_socket(AF_INET);
    for (int i = 0; i < 5; i++)
        peer_send(peer, "127.0.0.1", port, "x", 1);
    WAIT_FOR(atomic_load(&inside.closed) == 1, WAIT_MS);
    /* The batch stops at the close: no datagram after it. */
    ASSERT_INT_EQ(atomic_load(&inside.datagrams), 1);

    WAIT_FOR(atomic_load(&stopped.opened) == 1, WAIT_MS);
    finish_loop(loop);
    ASSERT_INT_EQ(atomic_load(&stopped.close_error), PX_ESTOPPED);
    ASSERT_INT_EQ(px_udp_sendto(us, "x", 1, "127.0.0.1", port), PX_ECLOSED);
    px_udp_unref(ue);
    px_udp_unref(ui);
    px_udp_unref(us);
    check_clean(&early);
    check_clean(&inside);
    check_clean(&stopped);
    close(peer);
}

#define SENDERS 4
#define PER_SENDER 25

typedef struct {
    px_udp_t *u;
    int port;
    int index;
} sender_t;

static void *sender_main(void *arg)
{
    sender_t *s = arg;
    char msg[8];
    for (int i = 0; i < PER_SENDER; i++) {
        int n = snprintf(msg, sizeof(msg), "%d:%d", s->index, i);
        ASSERT_PX_OK(px_udp_sendto(s->u, msg, (size_t)n, "127.0.0.1", s->port));
    }
    return NULL;
}

/* Threads that are not the loop's send at once; each one's datagrams
 * arrive in its order. */
static void test_concurrent_senders(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    probe_t p = {0};
    px_udp_t *u;
    ASSERT_PX_OK(px_udp_open(loop, -1, "127.0.0.1", 0, NULL, 0,
                             &probe_callbacks, &p, &u));
    int peer = peer_socket(AF_INET);
    sender_t s[SENDERS];
    pthread_t tid[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        s[i] = (sender_t){u, peer_port(peer), i};
        tid[i] = start_thread(sender_main, &s[i]);
    }
    int next[SENDERS] = {0};
    for (int k = 0; k < SENDERS * PER_SENDER; k++) {
        char buf[16];
        size_t n = peer_recv(peer, buf, sizeof(buf) - 1);
        buf[n] = '\0';
        int who, seq;
        ASSERT_INT_EQ(sscanf(buf, "%d:%d", &who, &seq), 2);
        ASSERT_TRUE(who >= 0 && who < SENDERS);
        ASSERT_INT_EQ(seq, next[who]);
        next[who]++;
    }
    for (int i = 0; i < SENDERS; i++)
        join_thread(tid[i]);
    px_stats_t st;
    px_loop_stats(loop, &st);
    ASSERT_UINT_EQ(st.datagrams_dropped, 0);
    px_udp_close(u);
    WAIT_FOR(atomic_load(&p.closed) == 1, WAIT_MS);
    px_udp_unref(u);
    finish_loop(loop);
    check_clean(&p);
    close(peer);
}

TEST(test_bad_arguments)
{
    px_loop_t *loop = start_loop(PX_BACKEND_EPOLL, NULL);
    probe_t p = {0};
    px_udp_t *u = NULL;
    ASSERT_INT_EQ(px_udp_open(loop, TEST_WORKERS, "127.0.0.1", 0, NULL, 0,
                              &probe_callbacks, &p, &u),
                  -EINVAL);
    ASSERT_INT_EQ(px_udp_open(loop, -1, "127.0.0.1", 70000, NULL, 0,
                              &probe_callbacks, &p, &u),
                  -EINVAL);
    ASSERT_TRUE(u == NULL);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_echo_ipv4),          ENGINE_CASE(test_echo_ipv6),
    ENGINE_CASE(test_connected),          ENGINE_CASE(test_close_paths),
    ENGINE_CASE(test_concurrent_senders), TEST_CASE(bad_arguments),
};

TEST_MAIN(cases)
