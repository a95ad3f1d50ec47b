/*
 * test_endpoints.c - endpoints beyond numeric TCP addresses: Unix domain
 * sockets (echo, addresses, sendfile, a stale socket file, a live one, a
 * file that is not a socket, abstract names, bad paths, the unlink at
 * close) and outgoing connections to names, which the resolver threads
 * resolve (a name from /etc/hosts, a name that cannot resolve, closing and
 * stopping while a name resolves). Each case runs under both backends.
 */
#include "engine_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

/* A fresh directory (dir, 64 bytes) for the case's socket files, removed
 * by cleanup_dir, and the path of the file name in it (path, 128 bytes). */
static void make_dir(char *dir, char *path, const char *name)
{
    snprintf(dir, 64, "%s", "/tmp/px-endpoints-XXXXXX");
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    snprintf(path, 128, "%s/%s", dir, name);
}

static void cleanup_dir(const char *dir, const char *file)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    unlink(path);
    ASSERT_INT_EQ(rmdir(dir), 0);
}

/* A blocking client of the Unix socket at path (len bytes). */
static int unix_client(const char *path, size_t len)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_TRUE(fd >= 0);
    socklen_t slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (connect(fd, (struct sockaddr *)&sun, slen) < 0)
        TEST_FAIL("connect to %s: %s", path[0] ? path : "(abstract)",
                  strerror(errno));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void echo_round_trip(int fd)
{
    char buf[5];
    client_send_all(fd, "hello", 5);
    client_recv_exact(fd, buf, 5);
    ASSERT_SPAN_EQ(buf, 5, "hello");
}

/* ---- Unix domain sockets ---------------------------------------------- */

/* What the server saw of its first connection's addresses. */
static char seen_sock[PX_ADDRSTRLEN], seen_peer[PX_ADDRSTRLEN];
static atomic_int seen_sock_port, seen_peer_port;

static void naming_open(px_conn_t *conn)
{
    int port = 0;
    ASSERT_PX_OK(px_conn_sockname(conn, seen_sock, sizeof(seen_sock), &port));
    atomic_store(&seen_sock_port, port);
    ASSERT_PX_OK(px_conn_peername(conn, seen_peer, sizeof(seen_peer), &port));
    atomic_store(&seen_peer_port, port);
    conn_log_open(conn);
}

static void test_unix_echo(int backend)
{
    char dir[64], path[128];
    make_dir(dir, path, "echo.sock");
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t cbs = echo_callbacks;
    cbs.on_open = naming_open;
    px_listener_t *l = NULL;
    ASSERT_PX_OK(px_listen_unix(loop, path, strlen(path), 0, &cbs, &log, &l));
    ASSERT_INT_EQ(px_listener_port(l), -1);
    struct stat st;
    ASSERT_INT_EQ(stat(path, &st), 0);
    ASSERT_TRUE(S_ISSOCK(st.st_mode));

    int fd = unix_client(path, strlen(path));
    echo_round_trip(fd);
    conn_log_wait(&log, 0);
    ASSERT_STR_EQ(seen_sock, path);
    ASSERT_INT_EQ(atomic_load(&seen_sock_port), -1);
    /* The client's socket has no name: "" and a second NUL. */
    ASSERT_INT_EQ(seen_peer[0], 0);
    ASSERT_INT_EQ(seen_peer[1], 0);
    ASSERT_INT_EQ(atomic_load(&seen_peer_port), -1);
    close(fd);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&log.close_error), 0);

    /* Closing the listener removes its file. */
    px_listener_close(l);
    WAIT_FOR(access(path, F_OK) != 0, WAIT_MS);
    conn_log_release(&log);
    finish_loop(loop);
    cleanup_dir(dir, "echo.sock");
}

/* An outgoing connection over a Unix socket, with sendfile on it. */
typedef struct {
    conn_log_t log;
    int file_fd;
    char got[64];
    atomic_size_t got_len;
    char peer[PX_ADDRSTRLEN];
    atomic_int peer_port;
} dialer_t;

static void dialer_open(px_conn_t *conn)
{
    dialer_t *d = px_conn_data(conn);
    int port = 0;
    ASSERT_PX_OK(px_conn_peername(conn, d->peer, sizeof(d->peer), &port));
    atomic_store(&d->peer_port, port);
    struct iovec head = {(void *)"[", 1}, tail = {(void *)"]", 1};
    ASSERT_PX_OK(px_conn_sendfile(conn, &head, d->file_fd, 2, 6, &tail, NULL));
    conn_log_open(conn);
}

static void dialer_data(px_conn_t *conn, const char *data, size_t len)
{
    dialer_t *d = px_conn_data(conn);
    size_t at = atomic_load(&d->got_len);
    ASSERT_UINT_CMP(at + len, <=, sizeof(d->got));
    memcpy(d->got + at, data, len);
    atomic_store(&d->got_len, at + len);
    if (at + len == 8)
        px_conn_close(conn, 0);
}

static void test_unix_connect_sendfile(int backend)
{
    char dir[64], path[128], file[128];
    make_dir(dir, path, "s");
    snprintf(file, sizeof(file), "%s/data", dir);
    int ffd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_TRUE(ffd >= 0);
    ASSERT_INT_EQ(write(ffd, "0123456789", 10), 10);
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t server_log = CONN_LOG_INIT;
    px_listener_t *l = NULL;
    ASSERT_PX_OK(px_listen_unix(loop, path, strlen(path), 16, &echo_callbacks,
                                &server_log, &l));
    static dialer_t d;
    d.file_fd = ffd;
    px_conn_callbacks_t cbs = {.on_open = dialer_open,
                               .on_data = dialer_data,
                               .on_close = conn_log_close};
    px_conn_t *conn = NULL;
    ASSERT_PX_OK(px_connect_unix(loop, path, strlen(path), &cbs, &d, &conn));
    WAIT_FOR(atomic_load(&d.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&d.log.close_error), PX_ECLOSED);
    ASSERT_SPAN_EQ(d.got, atomic_load(&d.got_len), "[234567]");
    ASSERT_STR_EQ(d.peer, path);
    ASSERT_INT_EQ(atomic_load(&d.peer_port), -1);
    px_conn_unref(conn);

    /* Nobody listens on a missing file: on_close says so, as a refused
     * TCP connect does. */
    dialer_t missing = {.file_fd = ffd};
    char gone[160];
    snprintf(gone, sizeof(gone), "%s/none", dir);
    ASSERT_PX_OK(
        px_connect_unix(loop, gone, strlen(gone), &cbs, &missing, NULL));
    WAIT_FOR(atomic_load(&missing.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&missing.log.opened), 0);
    ASSERT_INT_EQ(atomic_load(&missing.log.close_error), -ENOENT);

    WAIT_FOR(atomic_load(&server_log.closed) == 1, WAIT_MS);
    conn_log_release(&server_log);
    conn_log_release(&d.log);
    finish_loop(loop);
    /* The loop's stop closed the listener, which removed its file. */
    ASSERT_INT_EQ(access(path, F_OK), -1);
    close(ffd);
    unlink(file);
    cleanup_dir(dir, "s");
}

/* A socket file bound and then abandoned, as a crashed server leaves it. */
static void leave_stale_socket(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_INT_EQ(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
}

static void test_unix_existing_files(int backend)
{
    char dir[64], path[128];
    make_dir(dir, path, "s");
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;

    /* A stale socket is replaced. */
    leave_stale_socket(path);
    px_listener_t *l = NULL;
    ASSERT_PX_OK(
        px_listen_unix(loop, path, strlen(path), 0, &echo_callbacks, &log, &l));
    int fd = unix_client(path, strlen(path));
    echo_round_trip(fd);
    close(fd);

    /* A live one is not: the second server is refused, the first still
     * serves. */
    px_listener_t *second = NULL;
    ASSERT_INT_EQ(px_listen_unix(loop, path, strlen(path), 0, &echo_callbacks,
                                 &log, &second),
                  -EADDRINUSE);
    fd = unix_client(path, strlen(path));
    echo_round_trip(fd);
    close(fd);
    px_listener_close(l);
    WAIT_FOR(access(path, F_OK) != 0, WAIT_MS);

    /* A file that is not a socket is never removed. */
    int ffd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_TRUE(ffd >= 0);
    close(ffd);
    ASSERT_INT_EQ(px_listen_unix(loop, path, strlen(path), 0, &echo_callbacks,
                                 &log, &second),
                  -EEXIST);
    ASSERT_INT_EQ(access(path, F_OK), 0);
    unlink(path);

    /* A server that replaced a file it found stale keeps it when the
     * first listener (whose file that was) closes later. */
    px_listener_t *a = NULL, *b = NULL;
    ASSERT_PX_OK(
        px_listen_unix(loop, path, strlen(path), 0, &echo_callbacks, &log, &a));
    ASSERT_INT_EQ(unlink(path), 0);
    ASSERT_PX_OK(
        px_listen_unix(loop, path, strlen(path), 0, &echo_callbacks, &log, &b));
    px_listener_close(a);
    sleep_ms(100);
    fd = unix_client(path, strlen(path));
    echo_round_trip(fd);
    close(fd);

    /* Three round trips, and the probe that found the live server (which
     * that server may have accepted before it closed). */
    WAIT_FOR(atomic_load(&log.closed) >= 3 &&
                 atomic_load(&log.closed) == atomic_load(&log.opened),
             WAIT_MS);
    conn_log_release(&log);
    finish_loop(loop);
    cleanup_dir(dir, "s");
}

static void test_unix_abstract_and_bad_paths(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t cbs = echo_callbacks;
    cbs.on_open = naming_open;
    char name[64];
    int n = snprintf(name, sizeof(name), "%cpx-test-%d", '\0', (int)getpid());
    px_listener_t *l = NULL;
    ASSERT_PX_OK(px_listen_unix(loop, name, (size_t)n, 0, &cbs, &log, &l));
    int fd = unix_client(name, (size_t)n);
    echo_round_trip(fd);
    conn_log_wait(&log, 0);
    /* Reported as a NUL byte, then the name. */
    ASSERT_INT_EQ(seen_sock[0], 0);
    ASSERT_STR_EQ(seen_sock + 1, name + 1);
    close(fd);
    WAIT_FOR(atomic_load(&log.closed) == 1, WAIT_MS);

    /* The longest path fits, one byte more does not; empty paths, a bare
     * NUL and NULs inside a file name are refused. */
    char longest[PX_UNIX_PATH_MAX + 2];
    memset(longest, 'x', sizeof(longest));
    longest[0] = '\0';
    px_listener_t *x = NULL;
    ASSERT_PX_OK(
        px_listen_unix(loop, longest, PX_UNIX_PATH_MAX + 1, 0, &cbs, &log, &x));
    ASSERT_INT_EQ(
        px_listen_unix(loop, longest, PX_UNIX_PATH_MAX + 2, 0, &cbs, &log, &x),
        -ENAMETOOLONG);
    longest[0] = 'x';
    ASSERT_INT_EQ(
        px_listen_unix(loop, longest, PX_UNIX_PATH_MAX + 1, 0, &cbs, &log, &x),
        -ENAMETOOLONG);
    ASSERT_INT_EQ(
        px_connect_unix(loop, longest, PX_UNIX_PATH_MAX + 1, &cbs, &log, NULL),
        -ENAMETOOLONG);
    ASSERT_INT_EQ(px_listen_unix(loop, "", 0, 0, &cbs, &log, &x), -EINVAL);
    ASSERT_INT_EQ(px_listen_unix(loop, "\0", 1, 0, &cbs, &log, &x), -EINVAL);
    ASSERT_INT_EQ(px_listen_unix(loop, "a\0b", 3, 0, &cbs, &log, &x), -EINVAL);
    ASSERT_INT_EQ(px_connect_unix(loop, "", 0, &cbs, &log, NULL), -EINVAL);
    conn_log_release(&log);
    finish_loop(loop);
}

/* ---- names -------------------------------------------------------------- */

/* A name longer than DNS allows in one label: glibc refuses it without
 * asking any name server, so the failure needs no network. */
static const char *unresolvable(void)
{
    static char name[80];
    memset(name, 'a', 64);
    snprintf(name + 64, sizeof(name) - 64, "%s", ".invalid");
    return name;
}

static void test_connect_by_name(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t server_log = CONN_LOG_INIT;
    int port = listen_local(loop, &echo_callbacks, &server_log, NULL);

    /* "localhost" comes from /etc/hosts, through a resolver thread. */
    static dialer_t d;
    char file[] = "/tmp/px-endpoints-data-XXXXXX";
    d.file_fd = mkstemp(file);
    ASSERT_TRUE(d.file_fd >= 0);
    unlink(file);
    ASSERT_INT_EQ(write(d.file_fd, "0123456789", 10), 10);
    px_conn_callbacks_t cbs = {.on_open = dialer_open,
                               .on_data = dialer_data,
                               .on_close = conn_log_close};
    px_conn_t *conn = NULL;
    ASSERT_PX_OK(px_connect(loop, "localhost", port, &cbs, &d, &conn));
    WAIT_FOR(atomic_load(&d.log.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&d.log.opened), 1);
    ASSERT_SPAN_EQ(d.got, atomic_load(&d.got_len), "[234567]");
    ASSERT_INT_EQ(atomic_load(&d.peer_port), port);
    px_conn_unref(conn);

    /* A name that does not resolve: on_close carries the resolver's
     * code, and px_strerror its message. */
    conn_log_t failed = CONN_LOG_INIT;
    px_conn_callbacks_t plain = {.on_open = conn_log_open,
                                 .on_close = conn_log_close};
    ASSERT_PX_OK(px_connect(loop, unresolvable(), port, &plain, &failed, NULL));
    WAIT_FOR(atomic_load(&failed.closed) == 1, WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&failed.opened), 0);
    int error = atomic_load(&failed.close_error);
    ASSERT_TRUE(PX_IS_EAI(error));
    ASSERT_INT_EQ(PX_EAI_CODE(error), EAI_NONAME);
    ASSERT_STR_EQ(px_strerror(error), gai_strerror(EAI_NONAME));

    /* Closed at once, while its name may still resolve: on_close runs
     * exactly once, and on_open never runs after it. */
    conn_log_t closed = CONN_LOG_INIT;
    for (int i = 0; i < 20; i++) {
        px_conn_t *c = NULL;
        ASSERT_PX_OK(px_connect(loop, "localhost", port, &plain, &closed, &c));
        px_conn_close(c, i % 2);
        px_conn_unref(c);
    }
    WAIT_FOR(atomic_load(&closed.closed) == 20, WAIT_MS);
    WAIT_FOR(atomic_load(&server_log.closed) == atomic_load(&server_log.opened),
             WAIT_MS);
    ASSERT_INT_EQ(atomic_load(&closed.close_errors), 20);
    ASSERT_INT_EQ(px_connect(loop, "localhost", 70000, &plain, &closed, NULL),
                  -EINVAL);
    conn_log_release(&server_log);
    conn_log_release(&d.log);
    conn_log_release(&closed);
    finish_loop(loop);
    close(d.file_fd);
}

/* Stopping the loop while names resolve: every connection still gets its
 * on_close, and the stop does not wait for the resolver. */
static void test_stop_while_resolving(int backend)
{
    px_loop_t *loop = start_loop(backend, NULL);
    conn_log_t log = CONN_LOG_INIT;
    px_conn_callbacks_t plain = {.on_open = conn_log_open,
                                 .on_close = conn_log_close};
    for (int i = 0; i < 16; i++)
        ASSERT_PX_OK(px_connect(loop, i % 2 ? "localhost" : unresolvable(),
                                closed_port(), &plain, &log, NULL));
    ASSERT_PX_OK(px_loop_stop(loop));
    ASSERT_INT_EQ(atomic_load(&log.closed), 16);
    ASSERT_INT_EQ(px_connect(loop, "localhost", 80, &plain, &log, NULL),
                  PX_ESTOPPED);
    conn_log_release(&log);
    px_loop_free(loop);
}

static const test_case_t cases[] = {
    ENGINE_CASE(test_unix_echo),
    ENGINE_CASE(test_unix_connect_sendfile),
    ENGINE_CASE(test_unix_existing_files),
    ENGINE_CASE(test_unix_abstract_and_bad_paths),
    ENGINE_CASE(test_connect_by_name),
    ENGINE_CASE(test_stop_while_resolving),
};

TEST_MAIN(cases)
