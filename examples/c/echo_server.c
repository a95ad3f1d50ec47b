/*
 * echo_server.c - an echo server written against the pyparallel engine
 * alone (include/px.h), with no Python involved.
 *
 * usage: echo_server [port]        (default 8007; 0 picks a free port)
 *
 * Environment: PYPARALLEL_WORKERS (default: one worker per online CPU) and
 * PYPARALLEL_IO=epoll|uring (default: io_uring where available).
 *
 * What it shows:
 *  - a loop with one worker per core, a listener, and connection callbacks
 *    that run in parallel on all workers;
 *  - sending from a callback: px_conn_send writes at once when the socket
 *    takes the bytes, and queues a copy otherwise;
 *  - back-pressure: a client that sends but does not read would make the
 *    queue grow, so past HIGH_WATER queued bytes the connection stops
 *    reading, asks to hear about finished sends, and resumes once the queue
 *    is back under LOW_WATER;
 *  - clean shutdown on SIGINT or SIGTERM: px_loop_stop closes every
 *    connection and joins every thread.
 *
 * Signals are blocked before the loop starts, so that the engine's threads
 * inherit the mask and the main thread alone receives them, in sigwait.
 */
#include "px.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_PORT 8007
#define HIGH_WATER (1u << 20)
#define LOW_WATER (256u << 10)

static void on_data(px_conn_t *conn, const char *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    int rc = px_conn_send(conn, &iov, 1, NULL);
    if (rc == PX_ECLOSED)
        return; /* closing already; on_close follows */
    if (rc < 0) {
        fprintf(stderr, "echo_server: send: %s; closing the connection\n",
                px_strerror(rc));
        px_conn_close(conn, 1);
        return;
    }
    if (px_conn_queued_bytes(conn) > HIGH_WATER) {
        px_conn_notify_sends(conn, 1);
        px_conn_pause_reading(conn);
    }
}

/* Called only while a connection is paused for back-pressure. */
static void on_send_complete(px_conn_t *conn, uint64_t send_id)
{
    (void)send_id;
    if (px_conn_queued_bytes(conn) < LOW_WATER) {
        px_conn_notify_sends(conn, 0);
        px_conn_resume_reading(conn);
    }
}

static void on_close(px_conn_t *conn, int error)
{
    (void)conn;
    /* 0: the client closed; PX_ECLOSED: closed here (or at shutdown). */
    if (error != 0 && error != PX_ECLOSED)
        fprintf(stderr, "echo_server: a connection failed: %s\n",
                px_strerror(error));
}

static int parse_port(const char *arg)
{
    char *end;
    long port = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || port < 0 || port > 65535)
        return -1;
    return (int)port;
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
                                   strcmp(argv[1], "--help") == 0))) {
        fprintf(stderr, "usage: %s [port]\n", argv[0]);
        return 2;
    }
    int port = argc == 2 ? parse_port(argv[1]) : DEFAULT_PORT;
    if (port < 0) {
        fprintf(stderr, "echo_server: bad port %s (0-65535)\n", argv[1]);
        return 2;
    }

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    px_loop_options_t opts;
    px_loop_options_init(&opts);
    px_loop_t *loop;
    int rc = px_loop_new(&loop, &opts);
    if (rc < 0) {
        fprintf(stderr, "echo_server: %s\n", px_strerror(rc));
        return 1;
    }
    rc = px_loop_start(loop);
    px_conn_callbacks_t cbs = {.on_data = on_data,
                               .on_send_complete = on_send_complete,
                               .on_close = on_close};
    px_listener_t *listener;
    if (rc == 0)
        rc = px_listen(loop, NULL, port, 1024, &cbs, NULL, &listener);
    if (rc < 0) {
        fprintf(stderr, "echo_server: port %d: %s\n", port, px_strerror(rc));
        px_loop_stop(loop);
        px_loop_free(loop);
        return 1;
    }
    printf("echo_server: listening on port %d (%d workers, %s)\n",
           px_listener_port(listener), px_loop_worker_count(loop),
           px_loop_backend_name(loop));
    fflush(stdout);

    int sig;
    sigwait(&signals, &sig);
    px_stats_t st;
    px_loop_stats(loop, &st);
    px_loop_stop(loop);
    printf("echo_server: %s: stopped after %llu connections, %llu bytes "
           "echoed\n",
           sig == SIGINT ? "SIGINT" : "SIGTERM",
           (unsigned long long)st.accepted, (unsigned long long)st.bytes_out);
    px_loop_free(loop);
    return 0;
}
