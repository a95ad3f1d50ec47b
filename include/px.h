/*
 * px.h - the pyparallel engine's public API.
 *
 * The engine is a completion-oriented I/O runtime with no Python dependency:
 * a pool of workers, each owning one I/O backend instance (an io_uring ring,
 * or an epoll set where io_uring is unavailable), runs connection callbacks,
 * work items and timers on every core. It follows Windows IOCP's rule of "one
 * active thread per core": a worker is a slot that one OS thread holds at a
 * time, and when the thread holding it stays inside one callback for longer
 * than the hand-off threshold (it blocked), a monitor hands the slot to a
 * spare thread so the worker's other connections keep being served.
 *
 * Conventions:
 *  - Every function that can fail returns 0 (or a count) on success and a
 *    negative errno-style code (PX_E*) on failure; none sets errno.
 *  - Callbacks of one connection never run concurrently; callbacks of
 *    different connections run in parallel on different workers.
 *  - Handles (loop, listener, connection, timer) are reference counted where
 *    they may outlive the caller's interest; closing is asynchronous.
 */
#ifndef PX_H
#define PX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: the engine's own, after the negated errno values. */
#define PX_ERRNO_MAP(X)                                                        \
    X(ECLOSED, -10001, "the connection is closed")                             \
    X(ESTOPPED, -10002, "the loop is stopped or stopping")                     \
    X(ESENDBUF, -10003, "the connection's send buffer is full")                \
    X(ENOBACKEND, -10004, "no usable I/O backend")                             \
    X(EBADSTATE, -10005, "the operation is not valid in this state")

enum {
#define PX_ERRNO_ENUM(name, value, message) PX_##name = (value),
    PX_ERRNO_MAP(PX_ERRNO_ENUM)
#undef PX_ERRNO_ENUM
};

/* A name that getaddrinfo could not resolve: PX_EAI(eai) carries its EAI_*
 * code (negative in glibc) so that px_strerror gives the resolver's own
 * message. EAI_SYSTEM is reported as the negated errno instead. */
#define PX_EAI_BASE (-11000)
#define PX_EAI(eai) (PX_EAI_BASE + (eai))
#define PX_IS_EAI(code) ((code) < PX_EAI_BASE && (code) > PX_EAI_BASE - 1000)
#define PX_EAI_CODE(code) ((code)-PX_EAI_BASE)

/* A message for any code these functions return (negated errno included). */
const char *px_strerror(int code);

typedef struct px_loop_s px_loop_t;
typedef struct px_listener_s px_listener_t;
typedef struct px_conn_s px_conn_t;
typedef struct px_timer_s px_timer_t;
typedef struct px_watch_s px_watch_t;

typedef enum {
    PX_BACKEND_AUTO = 0,
    PX_BACKEND_URING = 1,
    PX_BACKEND_EPOLL = 2,
} px_backend_kind_t;

/* Called on a thread the engine starts, before and after it runs anything
 * (worker_index: the worker it first holds, -1 for a spare): a binding
 * creates its runtime's per-thread state here. */
typedef void (*px_thread_hook_t)(void *hook_data, int worker_index);

/* Brackets every batch of callbacks a thread runs for a worker: the binding
 * acquires its runtime (a thread state, a GIL) in enter and releases it in
 * leave, so a thread waiting for I/O holds nothing. */
typedef void (*px_dispatch_hook_t)(void *hook_data, int worker_index);

typedef struct {
    int workers;               /* 0: PYPARALLEL_WORKERS or online CPUs */
    px_backend_kind_t backend; /* AUTO: PYPARALLEL_IO, then uring, epoll */
    size_t max_send_buffer;    /* bytes queued per connection; 0: 16 MiB */
    size_t hog_threshold;      /* queued bytes that mark an I/O hog; 0: 1 MiB */
    unsigned handoff_ms;       /* callback time that counts as blocked; 0: 10 */
    unsigned max_threads;      /* threads incl. spares: how many callbacks
                                * may block at once, plus the workers';
                                * 0: PYPARALLEL_MAX_THREADS or 256 */
    unsigned close_linger_ms;  /* a closing connection's queue may take
                                * this long to drain, then it is reset;
                                * 0: 30000 */
    px_thread_hook_t on_thread_start;
    px_thread_hook_t on_thread_stop;
    px_dispatch_hook_t on_dispatch_enter;
    px_dispatch_hook_t on_dispatch_leave;
    void *hook_data;
} px_loop_options_t;

/* Reads the environment and fills in defaults for every zero field. */
void px_loop_options_init(px_loop_options_t *opts);

int px_loop_new(px_loop_t **loop, const px_loop_options_t *opts);
/* Starts the worker threads. */
int px_loop_start(px_loop_t *loop);
/* Clean shutdown: stops accepting, closes every connection (their
 * on_close callbacks run), cancels pending work and timers (their cancel
 * callbacks run), and joins every thread. Safe to call from any thread that
 * is not one of the loop's own. */
int px_loop_stop(px_loop_t *loop);
/* Frees a stopped (or never started) loop. */
void px_loop_free(px_loop_t *loop);

/* Graceful drain, the first half of a graceful shutdown (drain.c): closes
 * every listener, so that new connections are refused, after taking the
 * connections already waiting in their backlogs, and marks the loop
 * draining. Everything else carries on: established connections, work,
 * timers. The owner lets its connections finish (an HTTP server answers
 * with "Connection: close" and closes idle keep-alive connections once a
 * short grace passed), waits until px_loop_served_open reaches 0, then
 * calls px_loop_stop, which aborts what is left. Listeners made after the
 * call are not closed by it. Any thread; idempotent; PX_ESTOPPED once the
 * loop stops. */
int px_loop_drain(px_loop_t *loop);
/* Whether px_loop_drain was called. */
int px_loop_draining(const px_loop_t *loop);
/* The connections accepted from listeners that are still open (outgoing
 * connections, say to a database, are not counted). */
uint64_t px_loop_served_open(const px_loop_t *loop);
/* Whether a drain is complete: every listener it closed has closed its
 * socket (after taking the backlog, whose connections count as served)
 * and no accepted connection is left open. */
int px_loop_drained(px_loop_t *loop);

/* Retiring one worker, which is how an owner replaces what serves on it
 * (the binding, a worker's interpreter) without stopping the loop. While
 * a worker retires, no accepted or outgoing connection is placed on it and
 * work without a worker goes to the others; its own connections, work and
 * timers carry on, and its owner lets those connections end (an HTTP
 * server answers with "Connection: close", as during a drain), waits until
 * px_worker_served_open and px_worker_connections reach 0, and un-retires
 * it. Retiring the only worker that is not retiring is refused (-EBUSY):
 * a connection always has somewhere to go. Any thread; -EINVAL for another
 * index, PX_ESTOPPED once the loop stops. */
int px_worker_retire(px_loop_t *loop, int worker, int retiring);
int px_worker_retiring(const px_loop_t *loop, int worker);
/* For two seconds after a worker stops retiring, whether a worker serves
 * more accepted connections than another that does not retire (one more
 * is allowed): keep-alive connections stay where they are, so the clients
 * that moved away from a retiring worker would otherwise leave it idle
 * once back. The HTTP server answers such a worker's next responses with
 * "Connection: close", and their clients come back through the balance of
 * new connections. Any thread. */
int px_worker_overloaded(px_loop_t *loop, int worker);
/* The accepted connections a worker serves, and all its connections. */
uint64_t px_worker_served_open(const px_loop_t *loop, int worker);
uint64_t px_worker_connections(const px_loop_t *loop, int worker);

int px_loop_worker_count(const px_loop_t *loop);
const char *px_loop_backend_name(const px_loop_t *loop);
/* The index of the worker the calling thread runs for, or -1 when the
 * calling thread is not one of the loop's. */
int px_current_worker(void);

/* ---- connections ------------------------------------------------------ */

typedef struct {
    /* Accepted or connected. */
    void (*on_open)(px_conn_t *conn);
    /* Received bytes; data is valid until the callback returns. */
    void (*on_data)(px_conn_t *conn, const char *data, size_t len);
    /* The send numbered send_id has been handed to the kernel in full.
     * Only called for connections that asked with px_conn_notify_sends. */
    void (*on_send_complete)(px_conn_t *conn, uint64_t send_id);
    /* The peer ended its side in order (a FIN: shutdown(SHUT_WR) or
     * close) and every byte it sent was delivered. Reading has stopped;
     * sending still works, and the connection stays open until the owner
     * calls px_conn_close, so answers produced later (by work items, other
     * threads) still reach a peer that only half-closed. Without this
     * callback the connection closes instead, once its queued data is
     * sent. A reset or a read error never comes here: it closes at once
     * and on_close carries the error. */
    void (*on_eof)(px_conn_t *conn);
    /* Always the last callback: the peer closed (error 0, when there is
     * no on_eof), the connection failed (a negative code), or it was
     * closed locally (PX_ECLOSED). For an outgoing connection that failed
     * to connect, on_open never ran and this callback carries the connect
     * error. */
    void (*on_close)(px_conn_t *conn, int error);
} px_conn_callbacks_t;

/* Listens on host:port (host NULL or "" for all IPv4 addresses; a name is
 * resolved, by the caller's thread: listening reports its errors at once).
 * Connections accepted on it use cbs, and start with user data conn_data. */
int px_listen(px_loop_t *loop, const char *host, int port, int backlog,
              const px_conn_callbacks_t *cbs, void *conn_data,
              px_listener_t **listener);

/* The longest Unix domain socket path: sun_path less its terminating NUL
 * (an abstract name, which has none, may be one byte longer). */
#define PX_UNIX_PATH_MAX 107
/* Room for any address px_conn_peername and px_conn_sockname report. */
#define PX_ADDRSTRLEN 112

/* Listens on a Unix domain stream socket: path is len bytes, a file system
 * path (relative ones resolve against the current directory, as bind does)
 * or, when it starts with a NUL byte, a Linux abstract name. The socket
 * file is created with mode 0777 less the process's umask, and connecting
 * needs write permission on it. An existing file at path is removed only
 * when it is a socket that refuses connections (a crashed server's);
 * otherwise -EADDRINUSE (a server accepts on it) or -EEXIST (not a
 * socket). The file is unlinked when the listener's socket closes, unless
 * another file replaced it meanwhile. -ENAMETOOLONG past
 * PX_UNIX_PATH_MAX. */
int px_listen_unix(px_loop_t *loop, const char *path, size_t len, int backlog,
                   const px_conn_callbacks_t *cbs, void *conn_data,
                   px_listener_t **listener);
/* px_listen with flags: PX_LISTEN_REUSEPORT sets SO_REUSEPORT, so that
 * several processes listen on one port and the kernel spreads the new
 * connections among them. */
#define PX_LISTEN_REUSEPORT 1
int px_listen_ex(px_loop_t *loop, const char *host, int port, int backlog,
                 int flags, const px_conn_callbacks_t *cbs, void *conn_data,
                 px_listener_t **listener);

/* Accepts on a socket that already listens (a stream socket, TCP or Unix
 * domain), such as one inherited through systemd's socket activation or
 * from the process that started this one: the listener owns fd from then
 * on, even when the call fails, and closes it with the listener. A Unix
 * socket's file is left in place. -ENOTSOCK for a descriptor that is not
 * a socket, -EINVAL for one that is not a listening stream socket. */
int px_listen_fd(px_loop_t *loop, int fd, const px_conn_callbacks_t *cbs,
                 void *conn_data, px_listener_t **listener);

/* The listening socket's descriptor, to hand to another process (a
 * reload's new one: see px_listen_fd); -1 once it closed. It stays the
 * listener's. */
int px_listener_fd(const px_listener_t *listener);

/* Leaves a Unix socket's file in place when the listener closes: another
 * process serves the socket now (a reload's new one, which got it through
 * px_listener_fd). Any thread; no effect on other listeners. */
void px_listener_keep_file(px_listener_t *listener);

/* The bound port (useful after listening on port 0); -1 for a Unix
 * socket. */
int px_listener_port(const px_listener_t *listener);
/* Stops accepting; established connections are not affected. */
void px_listener_close(px_listener_t *listener);

/* Connects asynchronously; the connection's callbacks report the outcome.
 * A numeric address is used as it is; a name is resolved by the loop's
 * resolver threads, never by the caller or a worker, so that a slow name
 * server stalls no other connection. A name that does not resolve reaches
 * on_close as PX_EAI(code), the way a refused connect reaches it as
 * -ECONNREFUSED. */
int px_connect(px_loop_t *loop, const char *host, int port,
               const px_conn_callbacks_t *cbs, void *conn_data,
               px_conn_t **conn);
/* Connects to the Unix domain stream socket at path (as px_listen_unix
 * takes it); a refused or missing socket reaches on_close as well. */
int px_connect_unix(px_loop_t *loop, const char *path, size_t len,
                    const px_conn_callbacks_t *cbs, void *conn_data,
                    px_conn_t **conn);

void px_conn_ref(px_conn_t *conn);
void px_conn_unref(px_conn_t *conn);
void *px_conn_data(const px_conn_t *conn);
void px_conn_set_data(px_conn_t *conn, void *data);
int px_conn_fd(const px_conn_t *conn);
int px_conn_worker(const px_conn_t *conn);
/* Ask for on_send_complete after every send. */
void px_conn_notify_sends(px_conn_t *conn, int enable);

/* Queues buffers for sending, in call order, from any thread. The data is
 * copied unless it is written at once. *send_id (if not NULL) receives the
 * send's number: sends are numbered from 1 per connection. Fails with
 * PX_ESENDBUF when the connection already queues max_send_buffer bytes. */
int px_conn_send(px_conn_t *conn, const struct iovec *iov, int iovcnt,
                 uint64_t *send_id);
/* Gives memory lent to the engine back to its owner. */
typedef void (*px_release_fn)(void *arg);
/* Sends head (copied as px_conn_send copies, may be NULL), then len bytes
 * at data, which are not copied: they stay the caller's, valid and
 * unchanged until release(arg) runs. release runs exactly once: before the
 * call returns when the call fails (any code) or everything was written at
 * once; otherwise on the connection's worker, in its dispatch (where its
 * callbacks run, before on_close), once the last byte was handed to the
 * kernel or the send was dropped because the connection closed. Only the
 * head counts against max_send_buffer: the engine bounds what it copies,
 * not what its caller already holds, so a large response is sent at the
 * pace the peer reads without a second copy. -EINVAL (and no release)
 * when release is NULL. */
int px_conn_send_owned(px_conn_t *conn, const struct iovec *head,
                       const void *data, size_t len, px_release_fn release,
                       void *arg, uint64_t *send_id);
/* Sends head, then nbytes of file fd from offset (with sendfile, no copy
 * through user space), then tail, as one send. The engine dups fd. */
int px_conn_sendfile(px_conn_t *conn, const struct iovec *head, int fd,
                     off_t offset, size_t nbytes, const struct iovec *tail,
                     uint64_t *send_id);
/* Closes after the queued data is sent (abort: drop it and reset). */
void px_conn_close(px_conn_t *conn, int abort);
int px_conn_pause_reading(px_conn_t *conn);
int px_conn_resume_reading(px_conn_t *conn);
/* Peer and local addresses as "host", port (hostlen: PX_ADDRSTRLEN is
 * enough). For a Unix domain socket *port is -1 and host is the path, ""
 * when the socket has none (as a connecting socket usually has not); an
 * abstract name is a NUL byte followed by the name and its own NUL. */
int px_conn_peername(const px_conn_t *conn, char *host, size_t hostlen,
                     int *port);
int px_conn_sockname(const px_conn_t *conn, char *host, size_t hostlen,
                     int *port);
/* Bytes accepted by the send functions but not yet written. */
size_t px_conn_queued_bytes(const px_conn_t *conn);
/* Holds the connection's callbacks back, for an owner whose handling of an
 * event goes on after its callback returned (a coroutine): until
 * px_conn_resume_events, no callback of the connection runs; what happens
 * meanwhile (bytes, the peer's end, finished sends, the close) is kept and
 * delivered in order afterwards, and received bytes are bounded as for a
 * slow callback. Any thread. A suspended connection is not finished, so the
 * loop's stop waits until it is resumed. */
void px_conn_suspend_events(px_conn_t *conn);
void px_conn_resume_events(px_conn_t *conn);

/* ---- work and timers -------------------------------------------------- */

/* A work item runs fn(arg) once on a worker; when the loop stops first,
 * cancel(arg) runs instead, on a worker thread inside the dispatch bracket
 * (so a binding may touch its runtime there). It is queued on the least
 * busy worker, and an idle worker takes it from there while that worker is
 * inside a callback: fn must not depend on which worker runs it. */
typedef void (*px_work_fn)(void *arg);
int px_submit(px_loop_t *loop, px_work_fn fn, px_work_fn cancel, void *arg);
/* px_submit on the given worker (0 .. px_loop_worker_count - 1), in FIFO
 * order with that worker's other work, and never taken by another: for
 * state that lives on one worker. -EINVAL for another index. */
int px_submit_to(px_loop_t *loop, int worker, px_work_fn fn, px_work_fn cancel,
                 void *arg);
/* Runs fn(arg) once on each of the loop's threads (those that exist now;
 * later ones start after it), soon: a thread runs it between callbacks, a
 * spare wakes for it, a thread inside a long callback runs it after. For
 * per-thread state of the owner's (its thread-local Python thread states)
 * that only the thread itself may drop. One visit at a time: -EBUSY while
 * the previous one has not reached every thread; PX_ESTOPPED once the
 * loop stops. */
int px_loop_visit_threads(px_loop_t *loop, px_work_fn fn, void *arg);

/* Runs fn(arg) on a worker after delay_ns, then every period_ns if that is
 * not zero. done(arg) runs exactly once when the timer is done: after a
 * one-shot fired, or after px_timer_cancel, or at loop stop. */
int px_timer_start(px_loop_t *loop, uint64_t delay_ns, uint64_t period_ns,
                   px_work_fn fn, px_work_fn done, void *arg,
                   px_timer_t **timer);
/* px_timer_start on the given worker rather than the next one in turn. */
int px_timer_start_on(px_loop_t *loop, int worker, uint64_t delay_ns,
                      uint64_t period_ns, px_work_fn fn, px_work_fn done,
                      void *arg, px_timer_t **timer);
/* Cancels (idempotent); a run already under way completes. */
void px_timer_cancel(px_timer_t *timer);
void px_timer_ref(px_timer_t *timer);
void px_timer_unref(px_timer_t *timer);

/* ---- watches ---------------------------------------------------------- */

/* A watch reports, on one chosen worker, when a file descriptor that the
 * engine does not own becomes readable (an event loop's selector, a pipe,
 * an eventfd), so that a worker waits for it and for its own I/O in one
 * place. It is one-shot: after on_ready(arg) ran, px_watch_arm asks for
 * the next report. on_ready runs on the worker as its callbacks do (the
 * hand-off of a blocked worker applies), never twice at once.
 *
 * px_watch_start arms it at once; *watch (if not NULL) receives a
 * reference, released with px_watch_unref. px_watch_stop ends it; then,
 * once the backend no longer refers to fd, on_done(arg) runs exactly once
 * on the worker, never while on_ready runs: that is where the owner closes
 * fd and frees arg. At loop stop every watch is stopped this way. fd must
 * stay open until on_done. px_watch_arm and px_watch_stop may be called
 * from any thread, on_ready included; arming a stopped watch gives
 * PX_ESTOPPED. */
int px_watch_start(px_loop_t *loop, int worker, int fd, px_work_fn on_ready,
                   px_work_fn on_done, void *arg, px_watch_t **watch);
int px_watch_arm(px_watch_t *watch);
void px_watch_stop(px_watch_t *watch);
void px_watch_ref(px_watch_t *watch);
void px_watch_unref(px_watch_t *watch);

/* ---- datagram endpoints (udp.c) --------------------------------------- */

/* A UDP socket served on one worker. Its callbacks never run concurrently:
 * on_open first, then on_datagram and on_error as the socket reports them,
 * and on_close last (after px_udp_close, or at the loop's stop). */
typedef struct px_udp_s px_udp_t;

/* Datagrams up to this size are received whole (the largest UDP payload). */
#define PX_UDP_MAX_DATAGRAM 65536
/* Datagrams that px_udp_sendto may hold back while the socket's buffer is
 * full (EAGAIN, ENOBUFS), and their bytes: past either bound a datagram is
 * dropped and counted in px_stats_t.datagrams_dropped, as the network may
 * drop any datagram. */
#define PX_UDP_MAX_QUEUED 1024
#define PX_UDP_MAX_QUEUED_BYTES (4u << 20)

typedef struct {
    void (*on_open)(px_udp_t *udp);
    /* A datagram from host:port; data is valid until the callback returns. */
    void (*on_datagram)(px_udp_t *udp, const char *data, size_t len,
                        const char *host, int port);
    /* A receive reported an error (an ICMP "port unreachable" for a
     * datagram sent earlier shows as -ECONNREFUSED); the endpoint stays
     * open. */
    void (*on_error)(px_udp_t *udp, int error);
    /* Always the last callback: error 0 after px_udp_close, PX_ESTOPPED
     * when the loop stopped. */
    void (*on_close)(px_udp_t *udp, int error);
} px_udp_callbacks_t;

/* Opens a UDP socket bound to host:port (host NULL or "" with a remote:
 * any local address of the remote's family and a port the kernel picks)
 * and, when remote_host is not NULL, connected to remote_host:remote_port
 * (then only its datagrams arrive, and px_udp_sendto may omit the
 * address). Names are resolved, numeric addresses are not. Served on the
 * given worker (-1: the next in turn). */
int px_udp_open(px_loop_t *loop, int worker, const char *host, int port,
                const char *remote_host, int remote_port,
                const px_udp_callbacks_t *cbs, void *data, px_udp_t **udp);
/* Sends one datagram to host:port (a numeric IPv4 or IPv6 address; NULL:
 * the connected remote), from any thread, without blocking: when the
 * socket's buffer is full it is queued and sent later by the worker (see
 * PX_UDP_MAX_QUEUED). Errors the kernel reports at once are returned
 * (-EMSGSIZE for a datagram too large, -ECONNREFUSED after an ICMP error
 * on a connected socket); PX_ECLOSED after px_udp_close. */
int px_udp_sendto(px_udp_t *udp, const void *data, size_t len, const char *host,
                  int port);
/* Closes (idempotent, any thread): datagrams still queued are dropped. */
void px_udp_close(px_udp_t *udp);
void px_udp_ref(px_udp_t *udp);
void px_udp_unref(px_udp_t *udp);
void *px_udp_data(const px_udp_t *udp);
void px_udp_set_data(px_udp_t *udp, void *data);
int px_udp_worker(const px_udp_t *udp);
/* The bound address, and the connected remote (-ENOTCONN without one). */
int px_udp_sockname(const px_udp_t *udp, char *host, size_t hostlen, int *port);
int px_udp_peername(const px_udp_t *udp, char *host, size_t hostlen, int *port);

/* ---- files (file.c) ---------------------------------------------------- */

/* Reads and writes of whole regular files, off the workers: they run on the
 * loop's file threads (through an io_uring of theirs with the io_uring
 * backend) in pieces of PX_FILE_PIECE bytes, and done(arg, result, data,
 * len) then runs on the given worker (-1: the next in turn), like a work
 * item: result is the count of bytes read or written, or a negative errno
 * (-ENOENT, -EISDIR, -EINVAL for a file that is not regular, ...). A
 * read's data is malloc'd and becomes the callback's to free (NULL after
 * an error). When the loop stops first, done still runs, at the stop. */
#define PX_FILE_PIECE (1u << 20)
#define PX_FILE_APPEND 1    /* write at the end instead of truncating */
#define PX_FILE_EXCLUSIVE 2 /* fail with -EEXIST when the file exists */

typedef void (*px_file_done_fn)(void *arg, int64_t result, char *data,
                                size_t len);
/* Reads length bytes (-1: to the end of the file) from offset; fewer at
 * the end of the file. */
int px_file_read(px_loop_t *loop, int worker, const char *path, uint64_t offset,
                 int64_t length, px_file_done_fn done, void *arg);
/* Writes len bytes at data, which stay the caller's and unchanged until
 * done runs, to path: created (mode 0666 less the umask) when missing,
 * truncated first unless flags has PX_FILE_APPEND. */
int px_file_write(px_loop_t *loop, int worker, const char *path,
                  const void *data, size_t len, int flags, px_file_done_fn done,
                  void *arg);

/* ---- statistics ------------------------------------------------------- */

#define PX_MAX_WORKERS 256

typedef struct {
    uint64_t callbacks;   /* callbacks and work items run */
    uint64_t queue_depth; /* events and work waiting for this worker */
    uint64_t handoffs;    /* times its thread was replaced while blocked,
                           * or while computing, in one callback */
    uint64_t steals;      /* work items it took from a busy worker */
    uint64_t busy_ns;     /* time in callbacks, counted as each returns
                           * (one whose worker was handed off meanwhile
                           * is not: the worker went on without it) */
} px_worker_stats_t;

typedef struct {
    int workers;
    int threads;          /* OS threads, spares included */
    uint64_t connections; /* open now */
    uint64_t accepted;    /* in total */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t io_hogs; /* connections over hog_threshold now */
    uint64_t pending_work;
    uint64_t datagrams_dropped; /* sends over PX_UDP_MAX_QUEUED, or failed
                                 * after being queued */
    px_worker_stats_t worker[PX_MAX_WORKERS];
} px_stats_t;

void px_loop_stats(px_loop_t *loop, px_stats_t *stats);

/* Monotonic nanoseconds. */
uint64_t px_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif /* PX_H */
