/*
 * px_internal.h - what the engine's files share with each other.
 *
 * Architecture, in one place:
 *
 *   worker (px__worker_t): a slot that owns one backend instance (io_uring
 *     ring or epoll set), a wake-up eventfd, a ready list of connections with
 *     events to dispatch, a timer heap, and an inbox that other threads post
 *     to. Exactly one OS thread "holds" a worker at a time and runs its loop:
 *       poll the backend (collect events, never run user callbacks) ->
 *       drain the inbox -> fire due timers -> dispatch ready connections and
 *       work items (user callbacks) -> repeat.
 *   thread (px__thread_t): an OS thread of the pool. It holds at most one
 *     worker; a thread holding none waits as a spare.
 *   monitor: a thread that checks, every few milliseconds, whether a worker's
 *     thread has been inside one user callback for longer than handoff_ms.
 *     If so (the callback blocks, or it computes while a core is left for
 *     the others) it takes the worker from that thread (one CAS on the
 *     worker's state word, see below) and hands it to a spare, so the other
 *     connections of that worker keep being served: IOCP's "one active
 *     thread per core". The thread that blocked finishes its callback,
 *     notices it lost the worker, hands back what it was doing through the
 *     inbox, and becomes a spare.
 *   work stealing: a worker with nothing of its own to run takes the oldest
 *     work item (px_submit's, not px_submit_to's) queued on a worker that
 *     is inside a callback.
 *
 * The rule that makes the hand-off safe: backend state (ring, epoll set,
 * ready list, timer heap) is touched only by the thread that holds the
 * worker, and only outside user callbacks. User callbacks, and every other
 * thread, reach a worker through thread-safe paths only: a connection's
 * mutex-protected queues, direct non-blocking syscalls, and the inbox.
 *
 * Backends only collect events: they call the px__on_* functions below,
 * which copy received bytes into the connection's input buffer and put the
 * connection on the ready list. The core then dispatches.
 */
#ifndef PX_INTERNAL_H
#define PX_INTERNAL_H

#include "bytebuf.h"
#include "px.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ---- intrusive doubly linked queue ----------------------------------- */

typedef struct px__qnode_s {
    struct px__qnode_s *next, *prev;
} px__qnode_t;

static inline void px__q_init(px__qnode_t *q) { q->next = q->prev = q; }
static inline bool px__q_empty(const px__qnode_t *q) { return q->next == q; }
static inline void px__q_push(px__qnode_t *q, px__qnode_t *n)
{
    n->prev = q->prev;
    n->next = q;
    q->prev->next = n;
    q->prev = n;
}
static inline void px__q_remove(px__qnode_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}
static inline px__qnode_t *px__q_pop(px__qnode_t *q)
{
    if (px__q_empty(q))
        return NULL;
    px__qnode_t *n = q->next;
    px__q_remove(n);
    return n;
}
#define px__container_of(ptr, type, member)                                    \
    ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- backends --------------------------------------------------------- */

typedef struct px__worker_s px__worker_t;

/* A backend collects I/O events for one worker. Every function except wake
 * is called only by the thread holding the worker, outside user callbacks.
 * They return 0 or a negative errno. */
typedef struct {
    const char *name;
    /* Creates the instance (stored in w->backend) and arms reading of
     * w->wake_fd, whose readiness must make poll return. */
    int (*init)(px__worker_t *w);
    void (*destroy)(px__worker_t *w);
    /* Starts accepting on the listener's fd (shared by all workers; each
     * worker arms its own accept, the kernel wakes one of them). */
    int (*listen_start)(px__worker_t *w, px_listener_t *l);
    /* Stops accepting; when the backend no longer refers to l it calls
     * px__on_listen_stopped(w, l). */
    void (*listen_stop)(px__worker_t *w, px_listener_t *l);
    /* Starts reading from an established connection. */
    int (*conn_read_start)(px__worker_t *w, px_conn_t *c);
    /* Stops reading; bytes that still arrive are delivered as usual and
     * buffered by the core until reading resumes. */
    int (*conn_read_stop)(px__worker_t *w, px_conn_t *c);
    /* Reports (once) through px__on_writable when c's socket can take more
     * bytes. */
    int (*conn_want_write)(px__worker_t *w, px_conn_t *c);
    /* Starts a non-blocking connect already issued on c->fd (EINPROGRESS):
     * reports through px__on_connected. */
    int (*conn_connect)(px__worker_t *w, px_conn_t *c);
    /* Cancels everything outstanding on c; when nothing refers to c any more
     * the backend calls px__on_conn_released(w, c). The core closes the fd
     * afterwards. */
    void (*conn_release)(px__worker_t *w, px_conn_t *c);
    /* Reports (once) through px__on_watch_ready when the watch's fd is
     * readable (or failed). */
    int (*watch_arm)(px__worker_t *w, px_watch_t *x);
    /* Forgets the watch; when nothing refers to it any more the backend
     * calls px__on_watch_released(w, x). */
    void (*watch_stop)(px__worker_t *w, px_watch_t *x);
    /* Waits up to timeout_ns (-1: no limit, 0: don't wait) and reports what
     * happened through the px__on_* functions. Returns the number of events
     * handled or a negative errno. Nanoseconds, not milliseconds: a timer
     * due in 0.2 ms must not wait a whole millisecond (a server with many
     * short sleeps would add that to every one). */
    int (*poll)(px__worker_t *w, int64_t timeout_ns);
} px__backend_ops_t;

extern const px__backend_ops_t px__backend_uring;
extern const px__backend_ops_t px__backend_epoll;
/* Whether io_uring can be used here (kernel, seccomp, sysctl). */
bool px__uring_available(void);

/* Called by backends on the thread holding w. */
void px__on_accept(px__worker_t *w, px_listener_t *l, int fd);
void px__on_listen_stopped(px__worker_t *w, px_listener_t *l);
/* len > 0: bytes received; the core copies them. false when the core
 * stopped reading (conn_read_stop was called): read no more now. */
bool px__on_data(px__worker_t *w, px_conn_t *c, const char *data, size_t len);
/* Reading ended: error 0 for an orderly end of stream, else -errno. */
void px__on_read_end(px__worker_t *w, px_conn_t *c, int error);
void px__on_writable(px__worker_t *w, px_conn_t *c);
void px__on_connected(px__worker_t *w, px_conn_t *c, int error);
void px__on_conn_released(px__worker_t *w, px_conn_t *c);
void px__on_watch_ready(px__worker_t *w, px_watch_t *x);
void px__on_watch_released(px__worker_t *w, px_watch_t *x);
/* w->wake_fd became readable: the backend drains it (8 bytes) or leaves it
 * to this function, which reads it non-blockingly. */
void px__on_wake(px__worker_t *w);

/* ---- objects ---------------------------------------------------------- */

struct px_listener_s {
    px_loop_t *loop;
    px__qnode_t node; /* loop->listeners */
    atomic_int fd;    /* -1 once closed */
    int port;
    px_conn_callbacks_t cbs;
    void *conn_data;
    atomic_int workers_armed; /* workers still referring to it */
    atomic_bool closing;
    /* Per worker, touched by its holder only: 0 idle, 1 accepting,
     * 2 stopping. */
    unsigned char armed[PX_MAX_WORKERS];
    /* Per-worker backend bookkeeping (e.g. whether a multishot accept is
     * armed); indexed by worker. */
    void *backend_slot[PX_MAX_WORKERS];
    /* A Unix socket's file, unlinked when the socket closes if it is still
     * the one bound (device and inode); NULL for other listeners. */
    char *_Atomic unix_path;
    dev_t unix_dev;
    ino_t unix_ino;
};

enum {
    PX__CONN_OPEN = 1u << 0,       /* on_open has run (or is queued) */
    PX__CONN_READING = 1u << 1,    /* the backend reads (not paused) */
    PX__CONN_PAUSED = 1u << 2,     /* the user paused reading */
    PX__CONN_READ_ENDED = 1u << 3, /* EOF or error seen */
    PX__CONN_CLOSING = 1u << 4,    /* close requested: drain then close */
    PX__CONN_CLOSED = 1u << 5,     /* on_close delivered or queued */
    PX__CONN_WANT_WRITE = 1u << 6, /* waiting for writability */
    PX__CONN_CONNECTING = 1u << 7,
    PX__CONN_HOG = 1u << 8,
    PX__CONN_RELEASED = 1u << 9,    /* backend done with it */
    PX__CONN_RELEASING = 1u << 10,  /* backend asked to release it */
    PX__CONN_START_READ = 1u << 11, /* reading is to start (dispatch) */
    PX__CONN_FINALIZED = 1u << 12,  /* the worker dropped it */
    PX__CONN_RESOLVING = 1u << 13,  /* its name is being resolved: no
                                     * worker has it yet */
    PX__CONN_ADOPTED = 1u << 14,    /* its worker took it (adopt) */
    PX__CONN_ACCEPTED = 1u << 15,   /* from a listener: counted in
                                     * stat_served until finalized */
};

/* One entry of a connection's send queue. */
typedef struct px__send_s {
    struct px__send_s *next;
    uint64_t id;
    size_t head_len, head_off; /* bytes in data[0..head_len) */
    const char *owned;         /* the caller's bytes (px_conn_send_owned) */
    size_t owned_len, owned_off;
    px_release_fn release; /* given back once the send is done or dropped */
    void *release_arg;
    int file_fd; /* -1 when no file part */
    off_t file_off;
    size_t file_left;
    size_t tail_len, tail_off; /* bytes in data[head_len..) */
    char data[];
} px__send_t;

struct px_conn_s {
    px_loop_t *loop;
    px__worker_t *worker;
    int fd;
    atomic_int refs;
    px_conn_callbacks_t cbs;
    void *data;
    atomic_bool notify_sends;
    atomic_uint flags; /* PX__CONN_* */

    pthread_mutex_t lock;   /* guards everything below */
    px__bytebuf_t in;       /* received, not yet dispatched */
    px__bytebuf_t in_spare; /* reused for the next bytes */
    px__send_t *sendq_head, *sendq_tail;
    size_t queued;              /* bytes copied into the send queue */
    size_t queued_file;         /* file bytes queued for sendfile */
    size_t queued_owned;        /* the callers' bytes, not copied */
    px__send_t *released;       /* owned sends to give back, in
                                 * dispatch */
    uint64_t next_send_id;      /* id of the next px_conn_send */
    uint64_t completed_send_id; /* all sends up to this are written */
    uint64_t notified_send_id;  /* on_send_complete delivered up to */
    int close_error;            /* for on_close */
    int read_error;             /* how reading ended (0: EOF) */
    int write_error;            /* a failed write: close the conn */
    int connect_error;          /* an outgoing connection that failed before its
                                 * worker adopted it (resolution, a Unix connect) */
    bool close_requested, close_abort; /* px_conn_close was called */
    bool rearm_write;                  /* arm writability from dispatch */
    bool throttled;                    /* reading stopped: input backlog */
    bool hog;                          /* counted in stat_hogs */
    bool linger_armed;                 /* the close linger timer was armed */
    px_timer_t *linger_timer;          /* cancelled on release */
    bool busy;                         /* a thread is running its callbacks */
    bool queued_ready;                 /* on the worker's ready list */
    bool open_pending;                 /* on_open still to deliver */
    bool close_pending;                /* on_close still to deliver */
    bool eof_delivered;                /* on_eof ran (or is running) */
    bool suspended;                    /* px_conn_suspend_events */
    px__qnode_t ready_node;            /* worker's ready list (holder only) */
    px__qnode_t all_node;              /* worker's list of live connections */
    void *backend_state;               /* backend's per-connection data */
};

typedef struct px__work_s {
    px__qnode_t node;
    px_work_fn fn;
    px_work_fn cancel;
    void *arg;
    bool pinned; /* px_submit_to: runs on its worker only, never stolen */
} px__work_t;

struct px_timer_s {
    px_loop_t *loop;
    atomic_int refs;
    atomic_bool cancelled;
    uint64_t due_ns;
    uint64_t period_ns;
    px_work_fn fn;
    px_work_fn done;
    void *arg;
    size_t heap_index; /* position in the worker's heap */
    px__worker_t *worker;
};

/* A watch (watch.c). Its flags are guarded by lock, since owners arm and
 * stop it from any thread; the rest is the holder's. */
struct px_watch_s {
    px_loop_t *loop;
    px__worker_t *worker;
    int fd;
    atomic_int refs;
    px_work_fn on_ready;
    px_work_fn on_done;
    void *arg;
    pthread_mutex_t lock;
    bool want_arm;       /* px_watch_arm (or start) not yet acted on */
    bool fired;          /* readiness reported, on_ready still to run */
    bool running;        /* on_ready runs */
    bool stop_requested; /* px_watch_stop, or the loop's stop */
    bool released;       /* the backend no longer refers to it */
    bool done;           /* on_done ran (or runs) */
    /* Holder only. */
    bool armed;        /* a readiness report is asked of the backend */
    bool stop_handled; /* the backend was told to stop */
    bool queued;       /* on the worker's watch_ready list */
    px__qnode_t ready_node;
    px__qnode_t all_node; /* the worker's watches */
    void *backend_state;
};

/* Inbox messages: what other threads ask of a worker. */
typedef enum {
    PX__MSG_CONN_READY,      /* dispatch c (events were queued elsewhere) */
    PX__MSG_CONN_WANT_WRITE, /* arm writability for c */
    PX__MSG_CONN_PAUSE,
    PX__MSG_CONN_RESUME,
    PX__MSG_CONN_CLOSE, /* c is closing: drain, then release */
    PX__MSG_CONN_ADOPT, /* a new connection for this worker */
    PX__MSG_LISTEN,     /* start accepting on l */
    PX__MSG_UNLISTEN,
    PX__MSG_TIMER,        /* add t to the heap */
    PX__MSG_TIMER_CANCEL, /* remove t from the heap */
    PX__MSG_WATCH_ADD,    /* a new watch for this worker */
    PX__MSG_WATCH_UPDATE, /* arm, stop or carry on with a watch */
    PX__MSG_STOP,
} px__msg_kind_t;

typedef struct px__msg_s {
    struct px__msg_s *next;
    px__msg_kind_t kind;
    union {
        void *object;
        px_conn_t *conn;
        px_listener_t *listener;
        px_timer_t *timer;
        px_watch_t *watch;
    } u;
} px__msg_t;

/* State word of a worker: the holder's epoch in the high bits and whether
 * the holder is inside a user callback in bit 0. The monitor takes a worker
 * by CAS from (epoch | IN_CALLBACK) to (epoch + 1); the holder leaving a
 * callback CASes from (epoch | IN_CALLBACK) to (epoch). Whoever wins owns
 * the worker, so exactly one thread holds it at any time. */
#define PX__IN_CALLBACK 1u
#define PX__EPOCH_ONE 2u

struct px__worker_s {
    px_loop_t *loop;
    int index;
    const px__backend_ops_t *backend_ops;
    void *backend;        /* the backend's instance */
    int wake_fd;          /* eventfd */
    atomic_bool sleeping; /* holder waits in poll: wake needed */

    _Atomic uint64_t state;          /* epoch | PX__IN_CALLBACK */
    _Atomic uint64_t callback_since; /* px_now_ns() at callback start */
    struct px__thread_s *_Atomic holder;

    pthread_mutex_t inbox_lock; /* guards inbox and work queue */
    px__msg_t *inbox_head, *inbox_tail;
    atomic_size_t inbox_count;
    px__qnode_t work; /* px__work_t, FIFO */
    atomic_size_t work_count;
    atomic_size_t stealable_count; /* of those, not pinned */

    /* Holder-only state. */
    bool stopping;           /* STOP received */
    int listeners_armed;     /* listeners accepting on it */
    px__qnode_t ready;       /* connections with events */
    px__qnode_t conns;       /* all live connections */
    px__qnode_t watches;     /* every watch until its on_done */
    px__qnode_t watch_ready; /* watches with on_ready or on_done due */
    px_timer_t **timers;     /* binary min-heap by due_ns */
    size_t timer_count, timer_cap;

    /* The monitor's sample of the callback under way (monitor only). */
    uint64_t mon_since, mon_wall, mon_cpu;
    /* Until when callbacks are handed off as they start (px_now_ns): set
     * whenever one of its callbacks is found blocked (worker.c). */
    _Atomic uint64_t blocking_until;
    /* Callbacks in a row that were handed off as they started and then
     * returned within a threshold: enough of them end the spell. */
    atomic_uint quick_in_spell;

    /* The monitor's verdict on the callback under way (monitor only): it
     * computes for longer than a threshold. */
    bool mon_computing;
    bool mon_starved; /* its last verdict: runnable, short of a CPU */

    atomic_int nconns;    /* live connections it owns */
    atomic_int adopting;  /* placed on it (px__place), not adopted yet */
    atomic_int nserved;   /* of nconns and adopting, the accepted ones */
    atomic_bool retiring; /* px_worker_retire: no new connections */

    /* Statistics (relaxed atomics). */
    atomic_uint_fast64_t stat_callbacks;
    atomic_uint_fast64_t stat_handoffs;
    atomic_uint_fast64_t stat_steals;
    atomic_uint_fast64_t stat_events;
    atomic_uint_fast64_t stat_busy_ns;
};

typedef struct px__thread_s {
    px_loop_t *loop;
    pthread_t tid;
    px__worker_t *_Atomic worker; /* the worker it holds, or NULL */
    uint64_t epoch;               /* state epoch when it took it */
    int last_worker;              /* index of the last worker held */
    _Atomic pid_t kernel_tid;     /* for the monitor's /proc look-up */
    atomic_bool taken_computing;  /* lost its worker while computing in
                                   * a callback (counted in the loop's
                                   * computing_orphans until it returns) */
    bool gave_early;              /* gave its worker away as its callback
                                   * started; the callback's start: */
    uint64_t early_wall, early_cpu;
    pthread_cond_t wake; /* spare waiting for a worker */
    struct px__thread_s *next_spare;
    struct px__thread_s *next_all;
    uint64_t visit_seen; /* the last visit it ran (visit.c) */
} px__thread_t;

struct px_loop_s {
    px_loop_options_t opts;
    int nworkers;
    px__worker_t *workers;
    const px__backend_ops_t *backend_ops;
    atomic_bool stopping;
    atomic_bool started;
    atomic_bool draining; /* px_loop_drain: listeners closed (drain.c) */
    atomic_int nretiring; /* workers retiring (px_worker_retire) */
    /* Until when px_worker_overloaded may be true (0: not now). */
    _Atomic uint64_t rebalance_until_ns;
    atomic_uint next_worker; /* round-robin for new work */

    pthread_mutex_t threads_lock; /* guards the thread lists */
    px__thread_t *threads;        /* all threads */
    px__thread_t *spares;         /* threads waiting for a worker */
    int nthreads;
    int workers_finished;
    pthread_cond_t finished_cond;
    bool threads_exit; /* spares exit instead of waiting */
    /* px_loop_visit_threads (visit.c): the visit, and the threads that
     * have not run it yet (threads_lock). */
    _Atomic uint64_t visit_epoch;
    px_work_fn visit_fn;
    void *visit_arg;
    int visits_left;
    /* Threads still computing in the callback their worker was taken from:
     * together with the holders computing past a threshold, the cores that
     * long computations occupy (worker.c). */
    atomic_int computing_orphans;
    pthread_t monitor;
    pthread_cond_t monitor_wake;
    bool monitor_running;
    bool monitor_exit;

    pthread_mutex_t listeners_lock;
    px__qnode_t listeners; /* every px_listener_t, until free */

    struct px__resolver_s *resolver; /* name resolution (net.c) */

    atomic_uint_fast64_t stat_connections;
    atomic_uint_fast64_t stat_accepted;
    atomic_uint_fast64_t stat_served; /* accepted connections open now */
    atomic_uint_fast64_t stat_bytes_in;
    atomic_uint_fast64_t stat_bytes_out;
    atomic_uint_fast64_t stat_hogs;
    atomic_uint_fast64_t stat_datagrams_dropped; /* udp.c */

    struct px__files_s *_Atomic files; /* file.c, made on first use */
};

/* ---- functions shared across files ------------------------------------ */

/* Posts a message to w's inbox and wakes its holder when needed. */
int px__worker_post(px__worker_t *w, px__msg_kind_t kind, void *object);
void px__worker_wake(px__worker_t *w);
/* The worker the calling thread holds and may touch the backend of, outside
 * a callback; NULL otherwise. */
px__worker_t *px__held_worker(void);

/* Connection internals (conn.c, send.c). The worker a new connection goes
 * to (accepting: the worker that accepted it; NULL: an outgoing one), never
 * a retiring one, counted in its adopting until adopted; px__conn_new then
 * takes over that count. */
px__worker_t *px__place(px_loop_t *loop, px__worker_t *accepting);
px_conn_t *px__conn_new(px_loop_t *loop, px__worker_t *w, int fd,
                        const px_conn_callbacks_t *cbs, void *data);
/* Puts c on its worker's ready list, or posts it there when the calling
 * thread does not hold the worker. c->lock must not be held. */
void px__conn_schedule(px_conn_t *c);
/* Runs the connection's pending callbacks (holder thread, w->state marks
 * the callback). Returns false when the thread lost the worker meanwhile. */
bool px__conn_dispatch(px__worker_t *w, px_conn_t *c);
/* Writes as much of the send queue as the socket takes; c->lock held.
 * Returns 0, PX_E* or -errno (a write error closes the connection). */
int px__conn_flush_locked(px_conn_t *c);
void px__conn_free_sendq_locked(px_conn_t *c);
/* Runs the release of every owned send on the list and frees them. */
void px__conn_give_back(px__send_t *released);
void px__conn_handle_msg(px__worker_t *w, px__msg_t *m);
void px__conn_close_all(px__worker_t *w);
void px__conn_begin_close(px__worker_t *w, px_conn_t *c, int error, bool abort);
/* Puts c on w's ready list; holder only, c->lock held. */
void px__conn_ready_locked(px__worker_t *w, px_conn_t *c);

/* Watches (watch.c), holder only. */
void px__watch_handle_msg(px__worker_t *w, px__msg_t *m);
/* Runs the watch's due callback; false when the thread lost the worker. */
bool px__watch_dispatch(px__worker_t *w, px_watch_t *x);
void px__watches_stop_all(px__worker_t *w);

/* Timers (timer.c), holder only. */
void px__timers_add(px__worker_t *w, px_timer_t *t);
void px__timers_remove(px__worker_t *w, px_timer_t *t);
/* Fires due timers, entering the dispatch bracket first if *entered is
 * false; returns ns until the next one (-1: none; at most a minute). *lost
 * is set when the thread lost the worker in a timer callback. */
int64_t px__timers_run(px__worker_t *w, bool *entered, bool *lost);
void px__timers_cancel_all(px__worker_t *w);

/* Worker and threads (worker.c). */
int px__worker_init(px_loop_t *loop, px__worker_t *w, int index);
void px__worker_destroy(px__worker_t *w);
int px__worker_submit(px__worker_t *w, px__work_t *work);
int px__threads_start(px_loop_t *loop);
/* visit.c: whether a visit waits for t, and running it (t's own thread,
 * outside callbacks). */
bool px__thread_visit_due(const px__thread_t *t);
void px__thread_visit(px__thread_t *t);
int px__monitor_start(px_loop_t *loop);
void px__threads_join(px_loop_t *loop);
void px__dispatch_enter(px__worker_t *w);
void px__dispatch_leave(px__worker_t *w);
/* Callback bracketing. Enter marks the worker's state word as in a
 * callback; leave returns false when the monitor took the worker. */
void px__callback_enter(px__worker_t *w);
bool px__callback_leave(px__worker_t *w);

/* Starts an outgoing connection on fd (a connect issued, or -1 with error
 * set): a worker adopts it, then its callbacks report the outcome. */
int px__conn_outgoing(px_loop_t *loop, int fd, int error,
                      const px_conn_callbacks_t *cbs, void *conn_data,
                      px_conn_t **out);

/* Loop (loop.c). */
void px__loop_worker_finished(px_loop_t *loop, px__worker_t *w);
/* The least loaded worker, for new work and outgoing connections. */
px__worker_t *px__pick_worker(px_loop_t *loop);
/* A listener on a bound, listening fd (owned from now on), not yet
 * accepting: set its other fields, then px__listener_publish. */
px_listener_t *px__listener_new(px_loop_t *loop, int fd, int port,
                                const px_conn_callbacks_t *cbs,
                                void *conn_data);
/* Makes every worker accept on it. */
void px__listener_publish(px_listener_t *l);
void px__listener_start(px__worker_t *w, px_listener_t *l);
void px__listener_stop(px__worker_t *w, px_listener_t *l);
void px__listeners_stop_all(px__worker_t *w);

/* Files (file.c): stop finishes the requests queued and joins the file
 * threads (px_loop_stop, before the workers stop); free releases them. */
typedef struct px__files_s px__files_t;
void px__files_stop(px_loop_t *loop);
void px__files_free(px_loop_t *loop);

/* Sockets (net.c). */
/* host:port into addr: a numeric address (NULL or "": every IPv4 one), or
 * a name resolved with getaddrinfo, which blocks: for the calling thread
 * of px_listen and px_udp_open, never a worker's. */
int px__resolve(const char *host, int port, struct sockaddr_storage *addr,
                socklen_t *len);
int px__set_nonblocking(int fd);
/* Formats an address of len bytes as px_conn_peername reports it. */
int px__format_addr(const struct sockaddr_storage *addr, socklen_t len,
                    char *host, size_t hostlen, int *port);
/* Removes a Unix listener's file if it is still the one it bound. */
void px__listener_unlink(px_listener_t *l);
/* A draining loop's listener about to close its socket fd: takes the
 * connections already waiting in its backlog, which closing would reset
 * (drain.c; holder of w). */
void px__listener_take_backlog(px__worker_t *w, px_listener_t *l, int fd);

/* The resolver threads (net.c): created with the loop; detached when it
 * stops (every connection still waiting for its name then fails with
 * PX_ECLOSED), released when it is freed. */
int px__resolver_new(px_loop_t *loop);
void px__resolver_detach(px_loop_t *loop);
void px__resolver_release(px_loop_t *loop);

#endif /* PX_INTERNAL_H */
