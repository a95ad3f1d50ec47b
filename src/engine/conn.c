/*
 * conn.c - a connection's life: adoption by a worker, event collection,
 * dispatch of its callbacks, pausing, closing and release.
 *
 * Lifecycle. A connection is created by an accept (px__on_accept) or by
 * px_connect, and adopted by one worker through its inbox; the worker's list
 * of live connections holds one reference. Backends report bytes, the end of
 * reading, writability and connect results; these only change the
 * connection's state under its mutex and put it on the worker's ready list.
 * px__conn_dispatch then runs the callbacks: on_open, on_data for buffered
 * bytes, on_eof once the peer's bytes are delivered after its orderly end
 * (if the owner has on_eof), on_send_complete per finished send, and
 * on_close last. Closing (a local px_conn_close, the peer's end when there
 * is no on_eof, an error, loop stop) drains or drops the send queue, asks
 * the backend to release the connection, closes the fd when the backend is
 * done with it, delivers on_close, and finally drops the worker's
 * reference. A half-closed connection (on_eof ran) is an open one that no
 * longer reads: it sends until its owner closes it.
 *
 * One thread at a time runs a connection's callbacks ("busy"). When its
 * thread is replaced while blocked in a callback, events keep being
 * collected by the worker's new holder; the blocked thread reschedules the
 * connection through the inbox when its callback returns.
 */
#include "px_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Received bytes buffered per connection before reading is throttled, and
 * the level at which it resumes. */
#define INPUT_HIGH_WATER (1u << 20)
#define INPUT_LOW_WATER (256u << 10)
/* Callbacks one connection runs before others get their turn. */
#define CONN_BUDGET 8
/* Capacity of a handed-over input buffer kept for the next bytes. */
#define SPARE_KEEP_BYTES (64u << 10)

static px__worker_t *balance(px__worker_t *w);

px__worker_t *px__place(px_loop_t *loop, px__worker_t *accepting)
{
    for (;;) {
        px__worker_t *w =
            accepting ? balance(accepting) : px__pick_worker(loop);
        atomic_fetch_add(&w->adopting, 1);
        /* Counted first and checked after: px_worker_retire sets the flag
         * and its owner then reads the counts, so either this sees the
         * flag or the owner sees the count (sequentially consistent). */
        if (!atomic_load(&w->retiring))
            return w;
        atomic_fetch_sub(&w->adopting, 1);
    }
}

px_conn_t *px__conn_new(px_loop_t *loop, px__worker_t *w, int fd,
                        const px_conn_callbacks_t *cbs, void *data)
{
    px_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        atomic_fetch_sub(&w->adopting, 1); /* px__place counted it */
        return NULL;
    }
    c->loop = loop;
    c->worker = w;
    c->fd = fd;
    atomic_init(&c->refs, 1);
    c->cbs = *cbs;
    c->data = data;
    c->next_send_id = 1;
    pthread_mutex_init(&c->lock, NULL);
    px__q_init(&c->ready_node);
    px__q_init(&c->all_node);
    return c;
}

void px_conn_ref(px_conn_t *c) { atomic_fetch_add(&c->refs, 1); }

void px_conn_unref(px_conn_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (!(atomic_load(&c->flags) & PX__CONN_ADOPTED))
        atomic_fetch_sub(&c->worker->adopting, 1); /* see px__place */
    px__conn_free_sendq_locked(c);
    /* Dispatch gives owned sends back before on_close; a connection that
     * never got that far gives them back here. */
    px__conn_give_back(c->released);
    px__bytebuf_free(&c->in);
    px__bytebuf_free(&c->in_spare);
    if (c->fd >= 0)
        close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void *px_conn_data(const px_conn_t *c) { return c->data; }
void px_conn_set_data(px_conn_t *c, void *data) { c->data = data; }
int px_conn_fd(const px_conn_t *c) { return c->fd; }
int px_conn_worker(const px_conn_t *c) { return c->worker->index; }

void px_conn_notify_sends(px_conn_t *c, int enable)
{
    atomic_store(&c->notify_sends, enable != 0);
}

static int conn_name(const px_conn_t *c, bool peer, char *host, size_t hostlen,
                     int *port)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    px_conn_t *mc = (px_conn_t *)c;
    pthread_mutex_lock(&mc->lock);
    int rc = c->fd < 0 ? PX_ECLOSED
             : peer    ? getpeername(c->fd, (struct sockaddr *)&addr, &len)
                       : getsockname(c->fd, (struct sockaddr *)&addr, &len);
    if (rc < 0 && rc != PX_ECLOSED)
        rc = -errno;
    pthread_mutex_unlock(&mc->lock);
    return rc < 0 ? rc : px__format_addr(&addr, len, host, hostlen, port);
}

int px_conn_peername(const px_conn_t *c, char *host, size_t hostlen, int *port)
{
    return conn_name(c, true, host, hostlen, port);
}

int px_conn_sockname(const px_conn_t *c, char *host, size_t hostlen, int *port)
{
    return conn_name(c, false, host, hostlen, port);
}

/* ---- scheduling ------------------------------------------------------- */

/* Puts c on w's ready list; holder only, c->lock held. */
void px__conn_ready_locked(px__worker_t *w, px_conn_t *c)
{
    /* A finalized connection is off the worker's books: the ready list
     * holds no reference, so a late message (e.g. the READY posted by a
     * thread that lost the worker) must not bring it back. One not adopted
     * yet (its name still resolving) is not on them either: adopt
     * schedules it. */
    unsigned f = atomic_load(&c->flags);
    if ((f & PX__CONN_FINALIZED) || !(f & PX__CONN_ADOPTED))
        return;
    if (c->queued_ready || c->busy)
        return; /* a busy connection is rescheduled by its thread */
    c->queued_ready = true;
    px__q_push(&w->ready, &c->ready_node);
}

void px__conn_schedule(px_conn_t *c)
{
    px__worker_t *w = c->worker;
    if (px__held_worker() == w) {
        pthread_mutex_lock(&c->lock);
        px__conn_ready_locked(w, c);
        pthread_mutex_unlock(&c->lock);
        return;
    }
    px__worker_post(w, PX__MSG_CONN_READY, c);
}

/* The peer's end of input is due: every byte delivered, nothing closing;
 * c->lock held. */
static bool read_end_due_locked(const px_conn_t *c, unsigned f)
{
    return (f & PX__CONN_READ_ENDED) && !(f & PX__CONN_CLOSING) &&
           !c->open_pending && c->in.len == 0;
}

/* An orderly end goes to on_eof, which leaves closing to the owner; an
 * error, or an owner without on_eof, closes the connection. */
static bool eof_to_owner_locked(const px_conn_t *c)
{
    return c->read_error == 0 && c->cbs.on_eof != NULL;
}

/* Whether dispatch has something to do for c: the holder's own work
 * (finalizing, closing, re-arming), or callbacks, which wait while the
 * connection is suspended. */
static bool has_events_locked(px_conn_t *c)
{
    unsigned f = atomic_load(&c->flags);
    if (((f & PX__CONN_CLOSED) && !(f & PX__CONN_FINALIZED)) ||
        (c->write_error && !(f & PX__CONN_CLOSING)) || c->rearm_write ||
        ((f & PX__CONN_CLOSING) && !(f & PX__CONN_RELEASING) &&
         c->sendq_head == NULL))
        return true;
    if (c->suspended)
        return false;
    return c->open_pending || c->close_pending || c->released ||
           (c->in.len && !(f & (PX__CONN_PAUSED | PX__CONN_CLOSING))) ||
           (atomic_load(&c->notify_sends) &&
            c->notified_send_id < c->completed_send_id) ||
           (read_end_due_locked(c, f) &&
            !(eof_to_owner_locked(c) && c->eof_delivered));
}

/* ---- closing and release (holder only, c->lock not held) --------------- */

static void start_release(px__worker_t *w, px_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned f = atomic_load(&c->flags);
    bool go = !(f & PX__CONN_RELEASING);
    if (go)
        atomic_fetch_or(&c->flags, PX__CONN_RELEASING);
    pthread_mutex_unlock(&c->lock);
    if (go)
        w->backend_ops->conn_release(w, c);
}

/* A closing connection waits for its queue to drain, but not for ever: a
 * peer that stopped reading would otherwise hold the socket and up to
 * max_send_buffer bytes until the loop stops. */
static void linger_expired(void *arg) { px_conn_close(arg, 1); }

static void linger_done(void *arg) { px_conn_unref(arg); }

static void arm_linger(px_conn_t *c)
{
    uint64_t ns = (uint64_t)c->loop->opts.close_linger_ms * 1000000u;
    px_conn_ref(c); /* the timer's, dropped by linger_done */
    px_timer_t *timer = NULL;
    if (px_timer_start(c->loop, ns, 0, linger_expired, linger_done, c, &timer) <
        0) {
        px_conn_unref(c); /* stopping: the loop aborts every connection */
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->flags) & PX__CONN_RELEASED) {
        pthread_mutex_unlock(&c->lock);
        px_timer_cancel(timer);
        px_timer_unref(timer);
        return;
    }
    c->linger_timer = timer;
    pthread_mutex_unlock(&c->lock);
}

/* Begins closing: with abort (or nothing queued) the connection is released
 * now, else once the send queue drains. error is what on_close reports. */
void px__conn_begin_close(px__worker_t *w, px_conn_t *c, int error, bool abort)
{
    pthread_mutex_lock(&c->lock);
    unsigned f = atomic_load(&c->flags);
    if (!(f & PX__CONN_CLOSING)) {
        atomic_fetch_or(&c->flags, PX__CONN_CLOSING);
        c->close_error = error;
    }
    if (abort)
        px__conn_free_sendq_locked(c);
    bool release_now = c->sendq_head == NULL || (f & PX__CONN_CONNECTING);
    bool stop_reading = (f & PX__CONN_READING) && !release_now;
    if (stop_reading)
        atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_READING);
    bool linger = !release_now && !c->linger_armed;
    c->linger_armed = c->linger_armed || linger;
    pthread_mutex_unlock(&c->lock);
    if (stop_reading)
        w->backend_ops->conn_read_stop(w, c);
    if (release_now)
        start_release(w, c);
    else if (linger)
        arm_linger(c);
}

void px__on_conn_released(px__worker_t *w, px_conn_t *c)
{
    (void)w;
    pthread_mutex_lock(&c->lock);
    atomic_fetch_or(&c->flags, PX__CONN_RELEASED);
    int fd = c->fd;
    c->fd = -1;
    px__conn_free_sendq_locked(c);
    c->close_pending = true;
    px__conn_ready_locked(w, c);
    px_timer_t *linger = c->linger_timer;
    c->linger_timer = NULL;
    pthread_mutex_unlock(&c->lock);
    if (fd >= 0)
        close(fd);
    if (linger) {
        px_timer_cancel(linger);
        px_timer_unref(linger);
    }
}

/* Drops the worker's reference once on_close has run; holder only. */
static void finalize(px__worker_t *w, px_conn_t *c)
{
    px__q_remove(&c->all_node);
    atomic_fetch_sub(&w->nconns, 1);
    atomic_fetch_sub(&c->loop->stat_connections, 1);
    if (atomic_load(&c->flags) & PX__CONN_ACCEPTED) {
        atomic_fetch_sub(&c->loop->stat_served, 1);
        atomic_fetch_sub(&w->nserved, 1);
    }
    px_conn_unref(c);
}

void px__conn_close_all(px__worker_t *w)
{
    /* begin_close may release synchronously, which never removes from the
     * list (finalize does, from dispatch), so plain iteration is safe. */
    for (px__qnode_t *n = w->conns.next; n != &w->conns; n = n->next) {
        px_conn_t *c = px__container_of(n, px_conn_t, all_node);
        px__conn_begin_close(w, c, PX_ECLOSED, true);
    }
}

void px_conn_close(px_conn_t *c, int abort)
{
    pthread_mutex_lock(&c->lock);
    unsigned f = atomic_load(&c->flags);
    bool already = (f & PX__CONN_CLOSING) && !abort;
    if (!already) {
        c->close_requested = true;
        c->close_abort = c->close_abort || abort;
    }
    if (f & PX__CONN_RESOLVING) {
        /* No worker has it yet: the resolver fails it with PX_ECLOSED
         * once the name is known (it tests close_requested under c->lock,
         * so the request cannot be missed). */
        pthread_mutex_unlock(&c->lock);
        return;
    }
    pthread_mutex_unlock(&c->lock);
    if (already)
        return;
    px__worker_t *w = c->worker;
    if (px__held_worker() == w)
        px__conn_begin_close(w, c, PX_ECLOSED, abort);
    else
        px__worker_post(w, PX__MSG_CONN_CLOSE, c);
}

/* ---- events from backends (holder, inside poll: no backend calls) ------ */

/* Whether the backend should read for c: open, not paused, its input not
 * ended, and its backlog below the throttle's level (which, once reached,
 * drops to the low level before reading resumes); c->lock held. */
static bool wants_input_locked(const px_conn_t *c, unsigned f)
{
    return !(f & (PX__CONN_CLOSING | PX__CONN_RELEASING)) &&
           (f & PX__CONN_OPEN) &&
           !(f & (PX__CONN_PAUSED | PX__CONN_READ_ENDED)) &&
           c->in.len < (c->throttled ? INPUT_LOW_WATER : INPUT_HIGH_WATER);
}

bool px__on_data(px__worker_t *w, px_conn_t *c, const char *data, size_t len)
{
    atomic_fetch_add_explicit(&c->loop->stat_bytes_in, len,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stat_events, 1, memory_order_relaxed);
    pthread_mutex_lock(&c->lock);
    unsigned f = atomic_load(&c->flags);
    bool stop = false;
    if (!(f & (PX__CONN_CLOSING | PX__CONN_RELEASING))) {
        if (px__bytebuf_append(&c->in, data, len) < 0) {
            /* Out of memory for input: fail the connection rather than
             * lose bytes silently. */
            atomic_fetch_or(&c->flags, PX__CONN_READ_ENDED);
            c->read_error = -ENOMEM;
        }
        /* Paused or backlogged: reading stops here, not at the next
         * dispatch. A holder busy in callbacks, or an io_uring multishot
         * receive that runs until its cancellation is submitted, would
         * otherwise go on filling c->in (and a paused owner's buffers)
         * far past the level that asked to stop. */
        f = atomic_load(&c->flags);
        if ((f & PX__CONN_READING) && !wants_input_locked(c, f)) {
            atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_READING);
            c->throttled = c->in.len >= INPUT_LOW_WATER;
            stop = true;
        }
        px__conn_ready_locked(w, c);
    }
    pthread_mutex_unlock(&c->lock);
    if (stop)
        w->backend_ops->conn_read_stop(w, c);
    return !stop;
}

void px__on_read_end(px__worker_t *w, px_conn_t *c, int error)
{
    pthread_mutex_lock(&c->lock);
    unsigned f = atomic_load(&c->flags);
    if (!(f & PX__CONN_READ_ENDED)) {
        atomic_fetch_or(&c->flags, PX__CONN_READ_ENDED);
        atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_READING);
        c->read_error = error;
    }
    px__conn_ready_locked(w, c);
    pthread_mutex_unlock(&c->lock);
}

void px__on_connected(px__worker_t *w, px_conn_t *c, int error)
{
    pthread_mutex_lock(&c->lock);
    atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_CONNECTING);
    if (error) {
        atomic_fetch_or(&c->flags, PX__CONN_READ_ENDED);
        c->read_error = error;
    } else {
        atomic_fetch_or(&c->flags, PX__CONN_OPEN | PX__CONN_START_READ);
        c->open_pending = true;
        if (c->sendq_head)
            c->rearm_write = true;
    }
    px__conn_ready_locked(w, c);
    pthread_mutex_unlock(&c->lock);
}

/* ---- adoption and inbox messages (holder, outside poll) ---------------- */

static void adopt(px__worker_t *w, px_conn_t *c)
{
    atomic_fetch_or(&c->flags, PX__CONN_ADOPTED);
    atomic_fetch_sub(&w->adopting, 1); /* counted by px__place */
    px_conn_ref(c);                    /* the list's reference */
    px__q_push(&w->conns, &c->all_node);
    atomic_fetch_add(&w->nconns, 1);
    atomic_fetch_add(&c->loop->stat_connections, 1);
    if (w->stopping) {
        px__conn_begin_close(w, c, PX_ECLOSED, true);
        return;
    }
    unsigned f = atomic_load(&c->flags);
    if (f & PX__CONN_CONNECTING) {
        int rc = c->connect_error ? c->connect_error
                                  : w->backend_ops->conn_connect(w, c);
        if (rc < 0)
            px__on_connected(w, c, rc);
        return;
    }
    pthread_mutex_lock(&c->lock);
    atomic_fetch_or(&c->flags, PX__CONN_OPEN | PX__CONN_START_READ);
    c->open_pending = true;
    px__conn_ready_locked(w, c);
    pthread_mutex_unlock(&c->lock);
}

int px__conn_outgoing(px_loop_t *loop, int fd, int error,
                      const px_conn_callbacks_t *cbs, void *conn_data,
                      px_conn_t **out)
{
    px_conn_t *c =
        px__conn_new(loop, px__place(loop, NULL), fd, cbs, conn_data);
    if (c == NULL) {
        if (fd >= 0)
            close(fd);
        return -ENOMEM;
    }
    c->connect_error = error;
    atomic_fetch_or(&c->flags, PX__CONN_CONNECTING);
    if (out) {
        px_conn_ref(c);
        *out = c;
    }
    int rc = px__worker_post(c->worker, PX__MSG_CONN_ADOPT, c);
    px_conn_unref(c);
    return rc;
}

/* The worker a new connection goes to: the one with the fewest live
 * connections, the accepting worker on a tie, never a retiring one (when
 * the accepting worker retires, px_worker_retire made sure another does
 * not). The kernel tends to wake the same ring or epoll set for every
 * accept, so without this most connections would land on one worker and
 * one core. Adoption counts connections when the ADOPT message is handled,
 * so a burst of accepts in one poll is spread by the pending count as
 * well. */
static px__worker_t *balance(px__worker_t *w)
{
    px_loop_t *loop = w->loop;
    px__worker_t *best = w;
    int best_load = atomic_load(&w->retiring)
                        ? INT_MAX
                        : atomic_load(&w->nconns) + atomic_load(&w->adopting);
    for (int i = 0; i < loop->nworkers; i++) {
        px__worker_t *o = &loop->workers[i];
        if (atomic_load(&o->retiring))
            continue;
        int load = atomic_load(&o->nconns) + atomic_load(&o->adopting);
        if (load < best_load) {
            best = o;
            best_load = load;
        }
    }
    return best;
}

void px__on_accept(px__worker_t *w, px_listener_t *l, int fd)
{
    atomic_fetch_add(&w->loop->stat_accepted, 1);
    if (px__set_nonblocking(fd) < 0) {
        close(fd); /* refuse the connection rather than half-serve it */
        return;
    }
    px__worker_t *target = px__place(w->loop, w);
    px_conn_t *c = px__conn_new(w->loop, target, fd, &l->cbs, l->conn_data);
    if (c == NULL) {
        close(fd);
        return;
    }
    /* Counted from here, not from adoption, so that a drain waiting for
     * the served connections to end cannot miss one being handed over. */
    atomic_fetch_or(&c->flags, PX__CONN_ACCEPTED);
    atomic_fetch_add(&w->loop->stat_served, 1);
    atomic_fetch_add(&target->nserved, 1);
    /* Adopted from the inbox, right after this poll: backends must not be
     * called from inside their own event reports. */
    px__worker_post(target, PX__MSG_CONN_ADOPT, c);
    px_conn_unref(c);
}

void px__conn_handle_msg(px__worker_t *w, px__msg_t *m)
{
    px_conn_t *c = m->u.conn;
    unsigned f = atomic_load(&c->flags);
    switch (m->kind) {
    case PX__MSG_CONN_ADOPT:
        adopt(w, c);
        return;
    case PX__MSG_CONN_READY:
        pthread_mutex_lock(&c->lock);
        px__conn_ready_locked(w, c);
        pthread_mutex_unlock(&c->lock);
        return;
    case PX__MSG_CONN_WANT_WRITE:
        if (!(f & (PX__CONN_RELEASING | PX__CONN_CONNECTING)))
            w->backend_ops->conn_want_write(w, c);
        return;
    case PX__MSG_CONN_PAUSE:
    case PX__MSG_CONN_RESUME:
        /* The flags were set by the caller; reconcile reading. */
        pthread_mutex_lock(&c->lock);
        px__conn_ready_locked(w, c);
        pthread_mutex_unlock(&c->lock);
        return;
    case PX__MSG_CONN_CLOSE: {
        pthread_mutex_lock(&c->lock);
        bool abort = c->close_abort;
        pthread_mutex_unlock(&c->lock);
        px__conn_begin_close(w, c, PX_ECLOSED, abort);
        return;
    }
    default:
        return;
    }
}

void px_conn_suspend_events(px_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    c->suspended = true;
    pthread_mutex_unlock(&c->lock);
}

void px_conn_resume_events(px_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    c->suspended = false;
    bool more = has_events_locked(c);
    pthread_mutex_unlock(&c->lock);
    if (more)
        px__conn_schedule(c);
}

int px_conn_pause_reading(px_conn_t *c)
{
    unsigned f = atomic_fetch_or(&c->flags, PX__CONN_PAUSED);
    if (f & (PX__CONN_CLOSING | PX__CONN_RELEASING))
        return PX_ECLOSED;
    if (!(f & PX__CONN_PAUSED))
        px__worker_post(c->worker, PX__MSG_CONN_PAUSE, c);
    return 0;
}

int px_conn_resume_reading(px_conn_t *c)
{
    unsigned f = atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_PAUSED);
    if (f & (PX__CONN_CLOSING | PX__CONN_RELEASING))
        return PX_ECLOSED;
    if (f & PX__CONN_PAUSED)
        px__worker_post(c->worker, PX__MSG_CONN_RESUME, c);
    return 0;
}

/* ---- dispatch --------------------------------------------------------- */

static bool closing_released(unsigned f)
{
    return (f & PX__CONN_RELEASING) != 0;
}

/* Brings reading and closing in line with the connection's state: the
 * holder's part of dispatch, run before and after the callbacks. */
static void reconcile(px__worker_t *w, px_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned f = atomic_load(&c->flags);
    bool closing = f & (PX__CONN_CLOSING | PX__CONN_RELEASING);
    bool want_read = wants_input_locked(c, f);
    c->throttled = !closing && c->in.len >= INPUT_LOW_WATER &&
                   (c->throttled || c->in.len >= INPUT_HIGH_WATER);
    bool reading = f & PX__CONN_READING;
    bool start = want_read && !reading;
    bool stop = !want_read && reading && !(f & PX__CONN_READ_ENDED);
    if (start)
        atomic_fetch_or(&c->flags, PX__CONN_READING);
    if (stop)
        atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_READING);
    atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_START_READ);
    bool flush = c->rearm_write && !closing_released(f);
    c->rearm_write = false;
    bool drained = (f & PX__CONN_CLOSING) && !(f & PX__CONN_RELEASING) &&
                   c->sendq_head == NULL;
    int write_error = closing ? 0 : c->write_error;
    bool eof_close = read_end_due_locked(c, f) && !eof_to_owner_locked(c);
    bool req_close = c->close_requested && !closing;
    bool req_abort = c->close_abort;
    int read_error = c->read_error;
    pthread_mutex_unlock(&c->lock);

    if (start && w->backend_ops->conn_read_start(w, c) < 0)
        px__on_read_end(w, c, -EIO);
    if (stop)
        w->backend_ops->conn_read_stop(w, c);
    if (flush)
        w->backend_ops->conn_want_write(w, c);
    if (write_error)
        px__conn_begin_close(w, c, write_error, true);
    else if (req_close)
        px__conn_begin_close(w, c, PX_ECLOSED, req_abort);
    else if (eof_close)
        px__conn_begin_close(w, c, read_error, read_error != 0);
    else if (drained)
        start_release(w, c);
}

typedef enum {
    EV_NONE,
    EV_OPEN,
    EV_DATA,
    EV_EOF,
    EV_SENT,
    EV_RELEASE,
    EV_CLOSE
} conn_event_t;

/* Picks the next callback to run; c->lock held. */
static conn_event_t next_event_locked(px_conn_t *c, px__bytebuf_t *data,
                                      uint64_t *send_id, int *error,
                                      px__send_t **released)
{
    unsigned f = atomic_load(&c->flags);
    if ((f & PX__CONN_CLOSED) || c->suspended)
        return EV_NONE;
    if (c->open_pending) {
        c->open_pending = false;
        return EV_OPEN;
    }
    if (c->in.len && !(f & (PX__CONN_PAUSED | PX__CONN_CLOSING))) {
        /* Hand the bytes over and collect new ones in the spare buffer,
         * so the callback runs without the lock. */
        *data = c->in;
        c->in = c->in_spare;
        c->in_spare = (px__bytebuf_t){0};
        return EV_DATA;
    }
    if (read_end_due_locked(c, f) && eof_to_owner_locked(c) &&
        !c->eof_delivered) {
        c->eof_delivered = true;
        return EV_EOF;
    }
    /* Sends that finished before the connection closed are reported
     * before on_close, which is always last. */
    if (atomic_load(&c->notify_sends) &&
        c->notified_send_id < c->completed_send_id) {
        *send_id = ++c->notified_send_id;
        return EV_SENT;
    }
    if (c->released) {
        *released = c->released;
        c->released = NULL;
        return EV_RELEASE;
    }
    if (c->close_pending) {
        c->close_pending = false;
        *error = c->close_error;
        atomic_fetch_or(&c->flags, PX__CONN_CLOSED);
        return EV_CLOSE;
    }
    return EV_NONE;
}

bool px__conn_dispatch(px__worker_t *w, px_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    c->queued_ready = false;
    unsigned f = atomic_load(&c->flags);
    if (c->busy) {
        pthread_mutex_unlock(&c->lock);
        return true;
    }
    if ((f & PX__CONN_CLOSED) && !(f & PX__CONN_FINALIZED)) {
        atomic_fetch_or(&c->flags, PX__CONN_FINALIZED);
        pthread_mutex_unlock(&c->lock);
        finalize(w, c);
        return true;
    }
    pthread_mutex_unlock(&c->lock);
    reconcile(w, c);

    pthread_mutex_lock(&c->lock);
    c->busy = true;
    for (int budget = CONN_BUDGET; budget > 0; budget--) {
        px__bytebuf_t data = {0};
        uint64_t send_id = 0;
        int error = 0;
        px__send_t *released = NULL;
        conn_event_t ev =
            next_event_locked(c, &data, &send_id, &error, &released);
        if (ev == EV_NONE)
            break;
        pthread_mutex_unlock(&c->lock);

        px__callback_enter(w);
        switch (ev) {
        case EV_OPEN:
            if (c->cbs.on_open)
                c->cbs.on_open(c);
            break;
        case EV_DATA:
            if (c->cbs.on_data)
                c->cbs.on_data(c, data.data, data.len);
            break;
        case EV_EOF:
            c->cbs.on_eof(c);
            break;
        case EV_SENT:
            if (c->cbs.on_send_complete)
                c->cbs.on_send_complete(c, send_id);
            break;
        case EV_RELEASE:
            px__conn_give_back(released);
            break;
        case EV_CLOSE:
            if (c->cbs.on_close)
                c->cbs.on_close(c, error);
            break;
        case EV_NONE:
            break;
        }
        bool held = px__callback_leave(w);

        pthread_mutex_lock(&c->lock);
        if (ev == EV_DATA) {
            /* Kept for the next bytes, unless a burst grew it large: the
             * connection would hold that memory for its whole life (an
             * HTTP connection receiving a 1 MiB body held it twice). */
            data.len = 0;
            px__bytebuf_trim(&data, SPARE_KEEP_BYTES);
            if (c->in_spare.data == NULL)
                c->in_spare = data;
            else
                px__bytebuf_free(&data);
        }
        if (!held) {
            /* Another thread holds the worker now: let it carry on. Our
             * reference keeps c alive between unlocking, when the new
             * holder may close and finalize it, and posting. */
            px_conn_ref(c);
            c->busy = false;
            pthread_mutex_unlock(&c->lock);
            px__worker_post(c->worker, PX__MSG_CONN_READY, c);
            px_conn_unref(c);
            return false;
        }
    }
    c->busy = false;
    bool more = has_events_locked(c);
    pthread_mutex_unlock(&c->lock);
    reconcile(w, c);
    if (more) {
        pthread_mutex_lock(&c->lock);
        px__conn_ready_locked(w, c);
        pthread_mutex_unlock(&c->lock);
    }
    return true;
}
