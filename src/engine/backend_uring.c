/*
 * backend_uring.c - the io_uring I/O backend (liburing 2.3, kernel >= 6.1).
 *
 * Techniques, with the kernel that brought them:
 *  - one ring per worker, with a larger completion queue (IORING_SETUP_CQSIZE,
 *    5.5) and cooperative task work (IORING_SETUP_COOP_TASKRUN, 5.19; see
 *    ring_init) when the kernel takes them;
 *  - multishot accept on the listening socket that all workers share (5.19):
 *    every ring arms its own, the kernel completes each connection on one;
 *  - multishot receive (6.0) into a ring of provided buffers per worker
 *    (io_uring_register_buf_ring, 5.19), each buffer handed back to the
 *    kernel right after px__on_data has copied its bytes;
 *  - one-shot IORING_OP_POLL_ADD(POLLOUT) for writability and for the end of
 *    a non-blocking connect (whose result SO_ERROR then gives);
 *  - a multishot poll on the worker's wake-up eventfd;
 *  - one-shot IORING_OP_POLL_ADD(POLLIN) for watches (watch.c), cancelled
 *    when the watch stops;
 *  - cancellation by file descriptor (IORING_ASYNC_CANCEL_FD|ALL, 5.19);
 *  - batched submission: submissions queue up while the core runs and go to
 *    the kernel with one io_uring_submit_and_wait_timeout per poll, which
 *    then handles every completion present and advances the completion queue
 *    once for the batch.
 *
 * Each submission's user_data points at an op header {kind, object, ...}
 * embedded in the backend's per-worker, per-listener or per-connection
 * struct. An op is idle, in flight (the kernel holds it: its final
 * completion, the one without IORING_CQE_F_MORE, has not arrived) or
 * deferred (the submission queue was full even after a submit; it is
 * retried at the next poll). Every op in flight is counted on its owner; a
 * connection or listener being released frees its struct and reports
 * px__on_conn_released / px__on_listen_stopped only when that count is zero,
 * so no completion can ever point at freed memory.
 *
 * Multishot operations end by themselves at times (no buffers left, a
 * completion queue overflow, a cancellation the kernel made on its own when
 * a submitting thread exited): whenever one ends while it is still wanted,
 * it is armed again.
 */
#include "px_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define SQ_ENTRIES 256u
#define CQ_ENTRIES 4096u
/* Provided receive buffers per worker: BUF_COUNT of BUF_SIZE bytes (a power
 * of two count, as the buffer ring requires). */
#define BUF_COUNT 64u
#define BUF_SIZE (16u << 10)
#define BUF_GROUP 0
/* Pause before accepting again after an accept failed for lack of
 * resources (EMFILE, ENFILE, ENOBUFS, ENOMEM): re-arming at once would
 * spin. */
#define ACCEPT_RETRY_NS (100u * 1000000u)
/* Longest wait while some op could not be submitted (the next poll retries
 * it). */
#define DEFERRED_RETRY_NS (10 * (int64_t)1000000)

typedef enum {
    OP_WAKE,          /* multishot poll of w->wake_fd */
    OP_ACCEPT,        /* multishot accept */
    OP_ACCEPT_RETRY,  /* timeout, then accept again */
    OP_LISTEN_CANCEL, /* cancels the listener's op named by target */
    OP_RECV,          /* multishot recv with provided buffers */
    OP_POLL_OUT,      /* one-shot writability */
    OP_CONNECT,       /* one-shot POLLOUT ending a non-blocking connect */
    OP_CONN_CANCEL,   /* target: one op; no target: all ops on the fd */
    OP_WATCH,         /* one-shot POLLIN of a watch's fd */
    OP_WATCH_CANCEL,  /* cancels the watch's OP_WATCH */
} op_kind_t;

typedef enum { OP_IDLE, OP_INFLIGHT, OP_DEFERRED } op_state_t;

/* What a submission's user_data points at. */
typedef struct uring_op_s {
    op_kind_t kind;
    op_state_t state;
    void *object; /* px__worker_t, px_listener_t, px_conn_t, px_watch_t */
    struct uring_op_s *target; /* the op a cancel op cancels */
    int *outstanding;          /* the owner's count of ops in flight */
    px__qnode_t deferred_node; /* uring_worker_t.deferred */
} uring_op_t;

typedef struct {
    uring_op_t accept, retry, accept_cancel, retry_cancel;
    struct __kernel_timespec retry_ts; /* read by the kernel at submit */
    int outstanding;
    bool stopping;
} uring_listen_t;

typedef struct {
    uring_op_t recv, poll_out, connect, recv_cancel, cancel_all;
    int outstanding;
    bool want_read;
    bool read_ended;
    bool releasing;
} uring_conn_t;

typedef struct {
    uring_op_t poll, cancel;
    int outstanding;
    bool stopping;
} uring_watch_t;

typedef struct {
    struct io_uring ring;
    uring_op_t wake;
    int wake_outstanding;
    px__qnode_t deferred; /* ops waiting for a submission slot */
    struct io_uring_buf_ring *buf_ring;
    size_t buf_ring_bytes; /* its mapping's size */
    char *buf_mem;         /* BUF_COUNT * BUF_SIZE */
} uring_worker_t;

static void op_init(uring_op_t *op, op_kind_t kind, void *object,
                    int *outstanding)
{
    *op = (uring_op_t){
        .kind = kind, .object = object, .outstanding = outstanding};
    px__q_init(&op->deferred_node);
}

/* ---- ring set-up ------------------------------------------------------ */

/* Ring set-up flags. IORING_SETUP_SINGLE_ISSUER and DEFER_TASKRUN are
 * deliberately absent: the thread that holds a worker, and so submits to its
 * ring, changes over time (the hand-off of a worker whose thread blocked in a
 * callback), and a completion must never wait for a particular thread to
 * enter the kernel. COOP_TASKRUN is safe: the task work that posts a
 * completion still wakes the submitting thread wherever it sleeps
 * interruptibly (the ring wait, a lock, a sleep, a socket read: a blocked
 * callback); what it drops is the inter-processor interrupt that the default
 * mode sends to a submitter that is running, which picks the work up at its
 * next system call or timer tick instead. Sent for every batch of bytes a
 * client wrote, that interrupt made the worker run the receive at once,
 * contending for the socket's lock with the client's CPU still delivering
 * the segment: measured with wrk on 2 cores, it cost about a quarter of the
 * server's and of the client's CPU per request. TASKRUN_FLAG lets liburing
 * see pending task work and enter the kernel for it. */
static int ring_init(struct io_uring *ring)
{
    static const unsigned flag_sets[] = {
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct io_uring_params p = {.flags = flag_sets[i]};
        if (p.flags & IORING_SETUP_CQSIZE)
            p.cq_entries = CQ_ENTRIES;
        rc = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
        if (rc != -EINVAL)
            return rc;
    }
    return rc;
}

/* Maps and registers a buffer ring of `entries` buffers (page-aligned, as
 * the kernel requires); the caller adds the buffers. */
static int buf_ring_setup(struct io_uring *ring, unsigned entries,
                          struct io_uring_buf_ring **out, size_t *bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = entries * sizeof(struct io_uring_buf);
    len = (len + page - 1) / page * page;
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)mem,
                                   .ring_entries = entries,
                                   .bgid = BUF_GROUP};
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        munmap(mem, len);
        return rc;
    }
    *out = mem;
    io_uring_buf_ring_init(*out);
    *bytes = len;
    return 0;
}

static char *buf_addr(uring_worker_t *u, unsigned bid)
{
    return u->buf_mem + (size_t)bid * BUF_SIZE;
}

static void buf_recycle(uring_worker_t *u, unsigned bid)
{
    io_uring_buf_ring_add(u->buf_ring, buf_addr(u, bid), BUF_SIZE,
                          (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    io_uring_buf_ring_advance(u->buf_ring, 1);
}

/* Whether this kernel and process can run this backend: io_uring not
 * disabled by sysctl nor blocked by seccomp (containers answer -EPERM or
 * -ENOSYS), and every feature used here present. Nothing is cached: a ring
 * costs a few system calls, and loops are not created often. */
bool px__uring_available(void)
{
    int fd = open("/proc/sys/kernel/io_uring_disabled", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char c = '0';
        ssize_t n = read(fd, &c, 1);
        close(fd);
        /* 2: disabled for everyone; 1: only for a group, which the ring
         * set-up below finds out. */
        if (n == 1 && c == '2')
            return false;
    }
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) < 0)
        return false;
    /* liburing falls back to timeout submissions without EXT_ARG, whose
     * completions this backend would not expect. */
    unsigned need_features =
        IORING_FEAT_EXT_ARG | IORING_FEAT_NODROP | IORING_FEAT_FAST_POLL;
    bool ok = (ring.features & need_features) == need_features;
    struct io_uring_probe *probe = ok ? io_uring_get_probe_ring(&ring) : NULL;
    /* Multishot receive and accept are flags, not opcodes; SEND_ZC came
     * with the kernel that completed them (6.0) and stands for it. */
    static const int need_ops[] = {
        IORING_OP_ACCEPT,  IORING_OP_RECV,         IORING_OP_POLL_ADD,
        IORING_OP_TIMEOUT, IORING_OP_ASYNC_CANCEL, IORING_OP_SEND_ZC,
    };
    ok = probe != NULL;
    for (size_t i = 0; ok && i < sizeof(need_ops) / sizeof(need_ops[0]); i++)
        ok = io_uring_opcode_supported(probe, need_ops[i]);
    if (probe)
        io_uring_free_probe(probe);
    struct io_uring_buf_ring *br;
    size_t bytes;
    if (ok && buf_ring_setup(&ring, 1, &br, &bytes) == 0) {
        io_uring_unregister_buf_ring(&ring, BUF_GROUP);
        munmap(br, bytes);
    } else {
        ok = false;
    }
    io_uring_queue_exit(&ring);
    return ok;
}

/* ---- submission ------------------------------------------------------- */

static struct io_uring_sqe *get_sqe(uring_worker_t *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (sqe == NULL) {
        /* The queue is full: hand it to the kernel now and take a slot. */
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static void prep_op(px__worker_t *w, uring_op_t *op, struct io_uring_sqe *sqe)
{
    switch (op->kind) {
    case OP_WAKE:
        /* A multishot poll rather than a read: one submission serves every
         * wake-up (a read would be re-armed after each), and px__on_wake
         * reads the counter, as the backend contract allows. */
        io_uring_prep_poll_multishot(sqe, w->wake_fd, POLLIN);
        break;
    case OP_ACCEPT: {
        px_listener_t *l = op->object;
        io_uring_prep_multishot_accept(sqe, atomic_load(&l->fd), NULL, NULL,
                                       SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    }
    case OP_ACCEPT_RETRY: {
        px_listener_t *l = op->object;
        uring_listen_t *s = l->backend_slot[w->index];
        s->retry_ts = (struct __kernel_timespec){.tv_nsec = ACCEPT_RETRY_NS};
        io_uring_prep_timeout(sqe, &s->retry_ts, 0, 0);
        break;
    }
    case OP_LISTEN_CANCEL:
        io_uring_prep_cancel(sqe, op->target, 0);
        break;
    case OP_RECV: {
        px_conn_t *c = op->object;
        io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BUF_GROUP;
        break;
    }
    case OP_POLL_OUT:
    case OP_CONNECT: {
        px_conn_t *c = op->object;
        io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
        break;
    }
    case OP_CONN_CANCEL: {
        px_conn_t *c = op->object;
        if (op->target)
            io_uring_prep_cancel(sqe, op->target, 0);
        else
            io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
        break;
    }
    case OP_WATCH: {
        px_watch_t *x = op->object;
        io_uring_prep_poll_add(sqe, x->fd, POLLIN);
        break;
    }
    case OP_WATCH_CANCEL:
        io_uring_prep_cancel(sqe, op->target, 0);
        break;
    }
}

/* Queues op for submission at the next poll (or now, when the queue is
 * full); an op already queued or in flight is left alone. */
static void op_submit(px__worker_t *w, uring_op_t *op)
{
    uring_worker_t *u = w->backend;
    if (op->state != OP_IDLE)
        return;
    struct io_uring_sqe *sqe = get_sqe(u);
    if (sqe == NULL) {
        op->state = OP_DEFERRED;
        px__q_push(&u->deferred, &op->deferred_node);
        return;
    }
    prep_op(w, op, sqe);
    io_uring_sqe_set_data(sqe, op);
    op->state = OP_INFLIGHT;
    (*op->outstanding)++;
}

/* Takes back an op that never reached the queue. */
static void op_undefer(uring_op_t *op)
{
    if (op->state != OP_DEFERRED)
        return;
    px__q_remove(&op->deferred_node);
    op->state = OP_IDLE;
}

/* The op's final completion arrived. */
static void op_done(uring_op_t *op)
{
    op->state = OP_IDLE;
    (*op->outstanding)--;
}

static void submit_deferred(px__worker_t *w)
{
    uring_worker_t *u = w->backend;
    px__qnode_t pending;
    px__q_init(&pending);
    px__qnode_t *n;
    while ((n = px__q_pop(&u->deferred)) != NULL)
        px__q_push(&pending, n);
    while ((n = px__q_pop(&pending)) != NULL) {
        uring_op_t *op = px__container_of(n, uring_op_t, deferred_node);
        op->state = OP_IDLE;
        op_submit(w, op);
    }
}

/* ---- worker ----------------------------------------------------------- */

static void worker_free(uring_worker_t *u)
{
    if (u->buf_ring) {
        io_uring_unregister_buf_ring(&u->ring, BUF_GROUP);
        munmap(u->buf_ring, u->buf_ring_bytes);
    }
    io_uring_queue_exit(&u->ring);
    free(u->buf_mem);
    free(u);
}

static int uring_init(px__worker_t *w)
{
    uring_worker_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return -ENOMEM;
    int rc = ring_init(&u->ring);
    if (rc < 0) {
        free(u);
        return rc;
    }
    px__q_init(&u->deferred);
    u->buf_mem = malloc((size_t)BUF_COUNT * BUF_SIZE);
    rc = u->buf_mem ? buf_ring_setup(&u->ring, BUF_COUNT, &u->buf_ring,
                                     &u->buf_ring_bytes)
                    : -ENOMEM;
    if (rc < 0) {
        u->buf_ring = NULL;
        worker_free(u);
        return rc;
    }
    for (unsigned bid = 0; bid < BUF_COUNT; bid++)
        io_uring_buf_ring_add(u->buf_ring, buf_addr(u, bid), BUF_SIZE,
                              (unsigned short)bid,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)bid);
    io_uring_buf_ring_advance(u->buf_ring, BUF_COUNT);
    w->backend = u;
    op_init(&u->wake, OP_WAKE, w, &u->wake_outstanding);
    op_submit(w, &u->wake);
    return 0;
}

static void uring_destroy(px__worker_t *w)
{
    worker_free(w->backend);
    w->backend = NULL;
}

/* ---- listeners -------------------------------------------------------- */

static int uring_listen_start(px__worker_t *w, px_listener_t *l)
{
    uring_listen_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    op_init(&s->accept, OP_ACCEPT, l, &s->outstanding);
    op_init(&s->retry, OP_ACCEPT_RETRY, l, &s->outstanding);
    op_init(&s->accept_cancel, OP_LISTEN_CANCEL, l, &s->outstanding);
    op_init(&s->retry_cancel, OP_LISTEN_CANCEL, l, &s->outstanding);
    s->accept_cancel.target = &s->accept;
    s->retry_cancel.target = &s->retry;
    l->backend_slot[w->index] = s;
    op_submit(w, &s->accept);
    return 0;
}

/* Reports the listener stopped once nothing of it is in flight. */
static void listen_maybe_stopped(px__worker_t *w, px_listener_t *l)
{
    uring_listen_t *s = l->backend_slot[w->index];
    if (!s->stopping || s->outstanding > 0)
        return;
    l->backend_slot[w->index] = NULL;
    free(s);
    px__on_listen_stopped(w, l);
}

static void uring_listen_stop(px__worker_t *w, px_listener_t *l)
{
    uring_listen_t *s = l->backend_slot[w->index];
    s->stopping = true;
    op_undefer(&s->accept);
    op_undefer(&s->retry);
    if (s->accept.state == OP_INFLIGHT)
        op_submit(w, &s->accept_cancel);
    if (s->retry.state == OP_INFLIGHT)
        op_submit(w, &s->retry_cancel);
    listen_maybe_stopped(w, l);
}

/* Accept errors after which accepting again at once makes sense. */
static bool accept_error_transient(int res)
{
    return res == -ECONNABORTED || res == -EINTR || res == -EAGAIN ||
           res == -ECANCELED;
}

static void handle_accept(px__worker_t *w, uring_op_t *op,
                          struct io_uring_cqe *cqe)
{
    px_listener_t *l = op->object;
    uring_listen_t *s = l->backend_slot[w->index];
    if (cqe->res >= 0) {
        /* A connection the accept took as it was being cancelled: a drain
         * serves it (the client completed its connect before the listener
         * closed); otherwise it is refused. */
        if (s->stopping && !(atomic_load(&w->loop->draining) &&
                             !atomic_load(&w->loop->stopping)))
            close(cqe->res);
        else
            px__on_accept(w, l, cqe->res);
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    op_done(op);
    if (!s->stopping) {
        if (cqe->res >= 0 || accept_error_transient(cqe->res))
            op_submit(w, &s->accept);
        else
            op_submit(w, &s->retry);
    }
    listen_maybe_stopped(w, l);
}

static void handle_listen_op(px__worker_t *w, uring_op_t *op)
{
    px_listener_t *l = op->object;
    uring_listen_t *s = l->backend_slot[w->index];
    op_done(op);
    if (op->kind == OP_ACCEPT_RETRY && !s->stopping)
        op_submit(w, &s->accept);
    listen_maybe_stopped(w, l);
}

/* ---- connections ------------------------------------------------------ */

/* Finds or makes the backend's struct for c; 0 or -errno. There is none
 * once c was released (its fd is gone then): nothing would free it. */
static int conn_state(px_conn_t *c, uring_conn_t **out)
{
    if (c->backend_state == NULL) {
        if (c->fd < 0)
            return -EBADF;
        uring_conn_t *s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        op_init(&s->recv, OP_RECV, c, &s->outstanding);
        op_init(&s->poll_out, OP_POLL_OUT, c, &s->outstanding);
        op_init(&s->connect, OP_CONNECT, c, &s->outstanding);
        op_init(&s->recv_cancel, OP_CONN_CANCEL, c, &s->outstanding);
        op_init(&s->cancel_all, OP_CONN_CANCEL, c, &s->outstanding);
        s->recv_cancel.target = &s->recv;
        c->backend_state = s;
    }
    *out = c->backend_state;
    return 0;
}

static int uring_conn_read_start(px__worker_t *w, px_conn_t *c)
{
    uring_conn_t *s;
    int rc = conn_state(c, &s);
    if (rc < 0)
        return rc;
    if (s->read_ended || s->releasing)
        return 0;
    s->want_read = true;
    /* A recv still in flight (even one being cancelled) is re-armed when
     * its final completion arrives, since reading is wanted again. */
    op_submit(w, &s->recv);
    return 0;
}

static int uring_conn_read_stop(px__worker_t *w, px_conn_t *c)
{
    uring_conn_t *s = c->backend_state;
    if (s == NULL || !s->want_read)
        return 0;
    s->want_read = false;
    op_undefer(&s->recv);
    if (s->recv.state == OP_INFLIGHT) {
        /* Submitted now, not at the next poll: this may run amid a batch
         * of completions, and the multishot receive goes on filling the
         * buffers handed back during the batch (the batch then goes on
         * with them) until the kernel sees the cancellation. */
        uring_worker_t *u = w->backend;
        op_submit(w, &s->recv_cancel);
        io_uring_submit(&u->ring);
    }
    return 0;
}

static int uring_conn_want_write(px__worker_t *w, px_conn_t *c)
{
    uring_conn_t *s;
    int rc = conn_state(c, &s);
    if (rc < 0)
        return rc;
    if (!s->releasing)
        op_submit(w, &s->poll_out);
    return 0;
}

static int uring_conn_connect(px__worker_t *w, px_conn_t *c)
{
    uring_conn_t *s;
    int rc = conn_state(c, &s);
    if (rc < 0)
        return rc;
    op_submit(w, &s->connect);
    return 0;
}

/* Reports the connection released once nothing of it is in flight. */
static void conn_maybe_released(px__worker_t *w, px_conn_t *c)
{
    uring_conn_t *s = c->backend_state;
    if (!s->releasing || s->outstanding > 0)
        return;
    c->backend_state = NULL;
    free(s);
    px__on_conn_released(w, c);
}

static void uring_conn_release(px__worker_t *w, px_conn_t *c)
{
    uring_conn_t *s = c->backend_state;
    if (s == NULL) {
        px__on_conn_released(w, c);
        return;
    }
    s->releasing = true;
    s->want_read = false;
    op_undefer(&s->recv);
    op_undefer(&s->poll_out);
    op_undefer(&s->connect);
    op_undefer(&s->recv_cancel);
    bool busy = s->recv.state == OP_INFLIGHT ||
                s->poll_out.state == OP_INFLIGHT ||
                s->connect.state == OP_INFLIGHT;
    if (busy)
        op_submit(w, &s->cancel_all);
    conn_maybe_released(w, c);
}

static void handle_recv(px__worker_t *w, uring_op_t *op,
                        struct io_uring_cqe *cqe)
{
    uring_worker_t *u = w->backend;
    px_conn_t *c = op->object;
    uring_conn_t *s = c->backend_state;
    int res = cqe->res;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && !s->releasing)
            px__on_data(w, c, buf_addr(u, bid), (size_t)res);
        buf_recycle(u, bid);
    }
    if (res == 0 || (res < 0 && res != -ENOBUFS && res != -ECANCELED)) {
        s->read_ended = true;
        if (!s->releasing)
            px__on_read_end(w, c, res);
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    op_done(op);
    if (s->want_read && !s->read_ended && !s->releasing)
        op_submit(w, op);
    conn_maybe_released(w, c);
}

static void handle_conn_op(px__worker_t *w, uring_op_t *op,
                           struct io_uring_cqe *cqe)
{
    px_conn_t *c = op->object;
    uring_conn_t *s = c->backend_state;
    op_done(op);
    if (s->releasing || op->kind == OP_CONN_CANCEL) {
        conn_maybe_released(w, c);
        return;
    }
    if (cqe->res == -ECANCELED) {
        /* Not asked for (the kernel cancels the requests of a thread that
         * exits): still wanted, so armed again. */
        op_submit(w, op);
        return;
    }
    if (op->kind == OP_POLL_OUT) {
        /* An error or hang-up is reported as writable too: the flush that
         * follows finds the error. */
        px__on_writable(w, c);
        return;
    }
    int err = cqe->res < 0 ? -cqe->res : 0;
    socklen_t len = sizeof(err);
    if (err == 0 && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    px__on_connected(w, c, -err);
}

/* ---- watches ---------------------------------------------------------- */

static int uring_watch_arm(px__worker_t *w, px_watch_t *x)
{
    uring_watch_t *s = x->backend_state;
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        op_init(&s->poll, OP_WATCH, x, &s->outstanding);
        op_init(&s->cancel, OP_WATCH_CANCEL, x, &s->outstanding);
        s->cancel.target = &s->poll;
        x->backend_state = s;
    }
    op_submit(w, &s->poll);
    return 0;
}

/* Reports the watch released once nothing of it is in flight. */
static void watch_maybe_released(px__worker_t *w, px_watch_t *x)
{
    uring_watch_t *s = x->backend_state;
    if (!s->stopping || s->outstanding > 0)
        return;
    x->backend_state = NULL;
    free(s);
    px__on_watch_released(w, x);
}

static void uring_watch_stop(px__worker_t *w, px_watch_t *x)
{
    uring_watch_t *s = x->backend_state;
    if (s == NULL) {
        px__on_watch_released(w, x);
        return;
    }
    s->stopping = true;
    op_undefer(&s->poll);
    if (s->poll.state == OP_INFLIGHT)
        op_submit(w, &s->cancel);
    watch_maybe_released(w, x);
}

static void handle_watch_op(px__worker_t *w, uring_op_t *op,
                            struct io_uring_cqe *cqe)
{
    px_watch_t *x = op->object;
    uring_watch_t *s = x->backend_state;
    op_done(op);
    if (s->stopping || op->kind == OP_WATCH_CANCEL) {
        watch_maybe_released(w, x);
        return;
    }
    if (cqe->res == -ECANCELED) {
        /* Not asked for (the kernel cancels the requests of a thread that
         * exits): still wanted, so armed again. */
        op_submit(w, op);
        return;
    }
    /* An error or hang-up is reported as readiness too: the owner's read
     * finds it. */
    px__on_watch_ready(w, x);
}

/* ---- poll ------------------------------------------------------------- */

static void handle_cqe(px__worker_t *w, struct io_uring_cqe *cqe)
{
    uring_op_t *op = io_uring_cqe_get_data(cqe);
    if (op == NULL)
        return;
    switch (op->kind) {
    case OP_WAKE:
        px__on_wake(w);
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            op_done(op);
            op_submit(w, op);
        }
        break;
    case OP_ACCEPT:
        handle_accept(w, op, cqe);
        break;
    case OP_ACCEPT_RETRY:
    case OP_LISTEN_CANCEL:
        handle_listen_op(w, op);
        break;
    case OP_RECV:
        handle_recv(w, op, cqe);
        break;
    case OP_POLL_OUT:
    case OP_CONNECT:
    case OP_CONN_CANCEL:
        handle_conn_op(w, op, cqe);
        break;
    case OP_WATCH:
    case OP_WATCH_CANCEL:
        handle_watch_op(w, op, cqe);
        break;
    }
}

static int uring_poll(px__worker_t *w, int64_t timeout_ns)
{
    uring_worker_t *u = w->backend;
    submit_deferred(w);
    if (!px__q_empty(&u->deferred) &&
        (timeout_ns < 0 || timeout_ns > DEFERRED_RETRY_NS))
        timeout_ns = DEFERRED_RETRY_NS;
    struct io_uring_cqe *cqe;
    int rc;
    if (timeout_ns == 0) {
        rc = io_uring_submit(&u->ring);
    } else if (timeout_ns < 0) {
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, NULL, NULL);
    } else {
        struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                       .tv_nsec = timeout_ns % 1000000000};
        rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    }
    /* Timeouts and interruptions are ordinary; -EBUSY and -EAGAIN mean the
     * kernel wants completions reaped first, which follows. */
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
        return rc;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        handle_cqe(w, cqe);
        /* Bounded: completions keep arriving while this runs. */
        if (++seen == CQ_ENTRIES)
            break;
    }
    io_uring_cq_advance(&u->ring, seen);
    return (int)seen;
}

const px__backend_ops_t px__backend_uring = {
    .name = "io_uring",
    .init = uring_init,
    .destroy = uring_destroy,
    .listen_start = uring_listen_start,
    .listen_stop = uring_listen_stop,
    .conn_read_start = uring_conn_read_start,
    .conn_read_stop = uring_conn_read_stop,
    .conn_want_write = uring_conn_want_write,
    .conn_connect = uring_conn_connect,
    .conn_release = uring_conn_release,
    .watch_arm = uring_watch_arm,
    .watch_stop = uring_watch_stop,
    .poll = uring_poll,
};
