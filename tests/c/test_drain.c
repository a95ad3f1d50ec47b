/*
 * test_drain.c - the graceful drain and listening on inherited sockets:
 * px_loop_drain refuses new connections while established ones keep being
 * served and counted by px_loop_served_open until they end; connections
 * waiting in a listener's backlog when it closes are served, not reset;
 * px_listen_fd serves a socket the test made (as systemd would hand one
 * over) and refuses descriptors that cannot listen; PX_LISTEN_REUSEPORT
 * lets two listeners share a port; px_listener_keep_file leaves a Unix
 * socket's file in place. Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void echo_roundtrip(int fd, const char *text)
{
    size_t len = strlen(text);
    char buf[64];
    ASSERT_UINT_CMP(len, <, sizeof(buf));
    client_send_all(fd, text, len);
    client_recv_exact(fd, buf, len);
    ASSERT_TRUE(memcmp(buf, text, len) == 0);
}

static void test_drain_refuses_new_and_serves_open(int backend)
{
    conn_log_t log = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_start(&f, backend);
    echo_roundtrip(f.fd, "before");
    ASSERT_UINT_EQ(px_loop_served_open(f.loop), 1);
    ASSERT_INT_EQ(px_loop_draining(f.loop), 0);

    ASSERT_PX_OK(px_loop_drain(f.loop));
    ASSERT_PX_OK(px_loop_drain(f.loop)); /* idempotent */
    ASSERT_INT_EQ(px_loop_draining(f.loop), 1);
    /* The listener closes asynchronously, on the workers: the probes that
     * still got in are served and closed as usual. */
    int fd, probes = 0;
    uint64_t until = px_now_ns() + (uint64_t)WAIT_MS * 1000000u;
    /* A probe that reaches the backlog just as the socket closes is
     * reset: the window between the last accept and the close. */
    while ((fd = client_try_connect(f.port)) >= 0 || fd == -ECONNRESET) {
        if (fd >= 0)
            close(fd);
        probes++;
        if (px_now_ns() > until)
            TEST_FAIL("connections are still accepted after the drain");
        sleep_ms(1);
    }
    ASSERT_INT_EQ(fd, -ECONNREFUSED);

    WAIT_FOR(atomic_load(&log.closed) == atomic_load(&log.opened) - 1, WAIT_MS);
    ASSERT_INT_CMP(atomic_load(&log.opened), <=, 1 + probes);
    /* A probe leaves the count once its worker drops it, just after its
     * on_close. The established connection is served as before, and
     * counted. */
    WAIT_FOR(px_loop_served_open(f.loop) == 1, WAIT_MS);
    echo_roundtrip(f.fd, "during");
    ASSERT_UINT_EQ(px_loop_served_open(f.loop), 1);
    ASSERT_INT_EQ(px_loop_drained(f.loop), 0);
    engine_fixture_disconnect(&f);
    WAIT_FOR(px_loop_served_open(f.loop) == 0, WAIT_MS);
    ASSERT_INT_EQ(px_loop_drained(f.loop), 1);
    engine_fixture_stop(&f);
}

/* An outgoing connection is not one the drain waits for. */
static void test_outgoing_connections_are_not_served_ones(int backend)
{
    conn_log_t log = CONN_LOG_INIT, dialer = CONN_LOG_INIT;
    engine_fixture_t f = {.callbacks = &echo_callbacks, .conn_data = &log};
    engine_fixture_serve(&f, backend);
    px_conn_t *out = NULL;
    ASSERT_PX_OK(px_connect(f.loop, "127.0.0.1", f.port, &echo_callbacks,
                            &dialer, &out));
    conn_log_wait(&dialer, 0);
    WAIT_FOR(atomic_load(&log.opened) == 1, WAIT_MS);
    ASSERT_UINT_EQ(px_loop_served_open(f.loop), 1); /* the accepted end */
    px_stats_t st;
    px_loop_stats(f.loop, &st);
    ASSERT_UINT_EQ(st.connections, 2);
    px_conn_close(out, 0);
    px_conn_unref(out);
    WAIT_FOR(px_loop_served_open(f.loop) == 0, WAIT_MS);
    conn_log_release(&dialer);
    engine_fixture_stop(&f);
}

#define BACKLOG_CLIENTS 8

/* Connections the kernel completed before the drain, that no worker has
 * accepted yet: the loop is started only after the drain, so all of them
 * wait in the backlog when the listener closes. */
static void test_backlog_is_served_not_reset(int backend)
{
    px_loop_t *loop = new_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    int port = listen_local(loop, &echo_callbacks, &log, NULL);
    int fds[BACKLOG_CLIENTS];
    for (int i = 0; i < BACKLOG_CLIENTS; i++)
        fds[i] = client_connect(port);
    ASSERT_PX_OK(px_loop_drain(loop));
    /* Its listener has not closed yet: not drained, although nothing is
     * served. */
    ASSERT_UINT_EQ(px_loop_served_open(loop), 0);
    ASSERT_INT_EQ(px_loop_drained(loop), 0);
    ASSERT_PX_OK(px_loop_start(loop));
    for (int i = 0; i < BACKLOG_CLIENTS; i++)
        echo_roundtrip(fds[i], "waited");
    ASSERT_INT_EQ(atomic_load(&log.opened), BACKLOG_CLIENTS);
    int fd = client_try_connect(port);
    ASSERT_INT_EQ(fd, -ECONNREFUSED);
    for (int i = 0; i < BACKLOG_CLIENTS; i++)
        close(fds[i]);
    WAIT_FOR(atomic_load(&log.closed) == BACKLOG_CLIENTS, WAIT_MS);
    ASSERT_UINT_EQ(px_loop_served_open(loop), 0);
    conn_log_release(&log);
    finish_loop(loop);
}

static void test_drain_after_stop_is_refused(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    ASSERT_PX_OK(px_loop_stop(loop));
    ASSERT_INT_EQ(px_loop_drain(loop), PX_ESTOPPED);
    px_loop_free(loop);
}

/* A listening socket on 127.0.0.1 made outside the engine. */
static int listening_socket(int *port, int flags)
{
    int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    ASSERT_INT_CMP(fd, >=, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ASSERT_INT_EQ(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ASSERT_INT_EQ(listen(fd, 16), 0);
    socklen_t len = sizeof(sin);
    ASSERT_INT_EQ(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void test_listen_fd_serves_an_inherited_socket(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    int port;
    /* Blocking, as a socket another process made may be. */
    int lfd = listening_socket(&port, 0);
    px_listener_t *l = NULL;
    ASSERT_PX_OK(px_listen_fd(loop, lfd, &echo_callbacks, &log, &l));
    ASSERT_INT_EQ(px_listener_port(l), port);
    ASSERT_TRUE(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
    int fd = client_connect(port);
    echo_roundtrip(fd, "inherited");
    close(fd);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);

    /* What cannot listen is refused, and the descriptor closed. */
    int pipefd[2];
    ASSERT_INT_EQ(pipe(pipefd), 0);
    ASSERT_INT_EQ(px_listen_fd(loop, pipefd[0], &echo_callbacks, &log, &l),
                  -ENOTSOCK);
    ASSERT_INT_EQ(fcntl(pipefd[0], F_GETFD), -1);
    close(pipefd[1]);
    int unbound = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_INT_EQ(px_listen_fd(loop, unbound, &echo_callbacks, &log, &l),
                  -EINVAL);
    int dgram = socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_INT_EQ(px_listen_fd(loop, dgram, &echo_callbacks, &log, &l),
                  -EINVAL);
    conn_log_release(&log);
    finish_loop(loop);
}

static void test_reuseport_shares_a_port(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t first = CONN_LOG_INIT, second = CONN_LOG_INIT;
    px_listener_t *a = NULL, *b = NULL;
    ASSERT_PX_OK(px_listen_ex(loop, "127.0.0.1", 0, 16, PX_LISTEN_REUSEPORT,
                              &echo_callbacks, &first, &a));
    int port = px_listener_port(a);
    ASSERT_PX_OK(px_listen_ex(loop, "127.0.0.1", port, 16, PX_LISTEN_REUSEPORT,
                              &echo_callbacks, &second, &b));
    ASSERT_INT_EQ(
        px_listen(loop, "127.0.0.1", port, 16, &echo_callbacks, &first, &b),
        -EADDRINUSE);
    ASSERT_INT_EQ(px_listen_ex(loop, "127.0.0.1", port, 16, 1 << 8,
                               &echo_callbacks, &first, &b),
                  -EINVAL);
    /* The kernel spreads connections over both sockets by their hash:
     * enough of them reach each. */
    for (int i = 0; i < 64 && (atomic_load(&first.opened) == 0 ||
                               atomic_load(&second.opened) == 0);
         i++) {
        int fd = client_connect(port);
        echo_roundtrip(fd, "shared");
        close(fd);
    }
    ASSERT_INT_CMP(atomic_load(&first.opened), >, 0);
    ASSERT_INT_CMP(atomic_load(&second.opened), >, 0);
    WAIT_FOR(px_loop_served_open(loop) == 0, WAIT_MS);
    conn_log_release(&first);
    conn_log_release(&second);
    finish_loop(loop);
}

/* A listener whose socket another process now serves leaves the file. */
static void test_keep_file_leaves_the_socket_file(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    char dir[] = "/tmp/px-test-drain-XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof(path), "%s/sock", dir);
    px_listener_t *kept = NULL, *removed = NULL;
    ASSERT_PX_OK(px_listen_unix(loop, path, strlen(path), 16, &echo_callbacks,
                                &log, &kept));
    px_listener_keep_file(kept);
    px_listener_close(kept);
    WAIT_FOR(px_listener_fd(kept) < 0, WAIT_MS);
    struct stat st;
    ASSERT_INT_EQ(stat(path, &st), 0);
    ASSERT_TRUE(S_ISSOCK(st.st_mode));
    /* Without it, the file goes with the socket (a stale one is replaced
     * first). */
    ASSERT_PX_OK(px_listen_unix(loop, path, strlen(path), 16, &echo_callbacks,
                                &log, &removed));
    px_listener_close(removed);
    WAIT_FOR(px_listener_fd(removed) < 0, WAIT_MS);
    ASSERT_INT_EQ(stat(path, &st), -1);
    ASSERT_INT_EQ(rmdir(dir), 0);
    finish_loop(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_drain_refuses_new_and_serves_open),
    ENGINE_CASE(test_outgoing_connections_are_not_served_ones),
    ENGINE_CASE(test_backlog_is_served_not_reset),
    ENGINE_CASE(test_drain_after_stop_is_refused),
    ENGINE_CASE(test_listen_fd_serves_an_inherited_socket),
    ENGINE_CASE(test_reuseport_shares_a_port),
    ENGINE_CASE(test_keep_file_leaves_the_socket_file),
};

TEST_MAIN(cases)
