/*
 * send.c - a connection's send path: direct writes, the bounded send queue,
 * sendfile, and the flush on writability.
 *
 * Any thread may send. A send first tries a direct non-blocking write when
 * nothing is queued (PyParallel's synchronous fast path: most sends finish
 * here, with no copy and no wake-up of the worker); what the socket does not
 * take is copied into the queue and written by the worker's holder when the
 * backend reports writability. The queue is bounded by max_send_buffer, so a
 * peer that never reads (an "I/O hog") costs at most that much memory; past
 * hog_threshold the connection is counted as a hog in the statistics.
 * px_conn_send_owned lends the engine the caller's memory instead: it is
 * written from where it is, and counts towards the hog threshold but not
 * towards max_send_buffer, which bounds what the engine copies. A finished
 * or dropped owned send moves to the connection's released list, given
 * back to its owner from dispatch, where the owner's runtime is attached.
 * Sends are numbered per connection; completed_send_id advances when a
 * send's last byte is handed to the kernel.
 */
#include "px_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

/* Writes iov with MSG_NOSIGNAL (a peer that went away must give EPIPE, not
 * kill the process). more is MSG_MORE when file bytes follow: the head then
 * leaves in the same segment as the file's first bytes. One buffer goes
 * through send(), which spares the kernel copying in a msghdr and an iovec
 * array: most responses are one buffer. Returns bytes written or -errno
 * (-EAGAIN included). */
static ssize_t write_iov(int fd, struct iovec *iov, int iovcnt, int more)
{
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT | more;
    for (;;) {
        ssize_t n = iovcnt == 1 ? send(fd, iov->iov_base, iov->iov_len, flags)
                                : sendmsg(fd, &msg, flags);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

/* Ends a send taken off the queue: an owned one waits on the released list
 * for dispatch. */
static void send_done_locked(px_conn_t *c, px__send_t *s)
{
    if (s->file_fd >= 0)
        close(s->file_fd);
    s->file_fd = -1;
    if (s->release) {
        s->next = c->released;
        c->released = s;
    } else {
        free(s);
    }
}

void px__conn_free_sendq_locked(px_conn_t *c)
{
    px__send_t *s = c->sendq_head;
    while (s) {
        px__send_t *next = s->next;
        send_done_locked(c, s);
        s = next;
    }
    c->sendq_head = c->sendq_tail = NULL;
    c->queued = 0;
    c->queued_file = 0;
    c->queued_owned = 0;
    if (c->hog) {
        c->hog = false;
        atomic_fetch_sub(&c->loop->stat_hogs, 1);
    }
}

void px__conn_give_back(px__send_t *s)
{
    while (s) {
        px__send_t *next = s->next;
        s->release(s->release_arg);
        free(s);
        s = next;
    }
}

static void account_queue_locked(px_conn_t *c)
{
    size_t threshold = c->loop->opts.hog_threshold;
    size_t unsent = c->queued + c->queued_file + c->queued_owned;
    if (!c->hog && unsent > threshold) {
        c->hog = true;
        atomic_fetch_add(&c->loop->stat_hogs, 1);
    } else if (c->hog && unsent <= threshold / 2) {
        c->hog = false;
        atomic_fetch_sub(&c->loop->stat_hogs, 1);
    }
}

/* Writes the head, file and tail parts of s; returns 1 when s is done, 0
 * when the socket is full, or -errno. */
static int write_entry(px_conn_t *c, px__send_t *s)
{
    while (s->head_off < s->head_len) {
        struct iovec iov = {s->data + s->head_off, s->head_len - s->head_off};
        ssize_t n = write_iov(c->fd, &iov, 1, s->file_left ? MSG_MORE : 0);
        if (n < 0)
            return n == -EAGAIN ? 0 : (int)n;
        s->head_off += (size_t)n;
        c->queued -= (size_t)n;
        atomic_fetch_add_explicit(&c->loop->stat_bytes_out, (uint64_t)n,
                                  memory_order_relaxed);
    }
    while (s->owned_off < s->owned_len) {
        struct iovec iov = {(char *)s->owned + s->owned_off,
                            s->owned_len - s->owned_off};
        ssize_t n = write_iov(c->fd, &iov, 1, 0);
        if (n < 0)
            return n == -EAGAIN ? 0 : (int)n;
        s->owned_off += (size_t)n;
        c->queued_owned -= (size_t)n;
        atomic_fetch_add_explicit(&c->loop->stat_bytes_out, (uint64_t)n,
                                  memory_order_relaxed);
    }
    while (s->file_left > 0) {
        ssize_t n = sendfile(c->fd, s->file_fd, &s->file_off, s->file_left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -errno;
        }
        if (n == 0)
            return -EPIPE; /* the file shrank under us: the send cannot finish
                            */
        s->file_left -= (size_t)n;
        c->queued_file -= (size_t)n;
        atomic_fetch_add_explicit(&c->loop->stat_bytes_out, (uint64_t)n,
                                  memory_order_relaxed);
    }
    while (s->tail_off < s->tail_len) {
        struct iovec iov = {s->data + s->head_len + s->tail_off,
                            s->tail_len - s->tail_off};
        ssize_t n = write_iov(c->fd, &iov, 1, 0);
        if (n < 0)
            return n == -EAGAIN ? 0 : (int)n;
        s->tail_off += (size_t)n;
        c->queued -= (size_t)n;
        atomic_fetch_add_explicit(&c->loop->stat_bytes_out, (uint64_t)n,
                                  memory_order_relaxed);
    }
    return 1;
}

int px__conn_flush_locked(px_conn_t *c)
{
    while (c->sendq_head) {
        px__send_t *s = c->sendq_head;
        int rc = write_entry(c, s);
        if (rc <= 0) {
            account_queue_locked(c);
            return rc;
        }
        c->completed_send_id = s->id;
        c->sendq_head = s->next;
        if (c->sendq_head == NULL)
            c->sendq_tail = NULL;
        send_done_locked(c, s);
    }
    account_queue_locked(c);
    return 0;
}

/* Records a write error: the holder closes the connection (reconcile). */
static void fail_locked(px_conn_t *c, int error)
{
    if (c->write_error == 0)
        c->write_error = error;
}

/* Asks for writability once; c->lock held. Returns whether the caller must
 * arm it (true) — done after unlocking. */
static bool want_write_locked(px_conn_t *c)
{
    unsigned f = atomic_load(&c->flags);
    if (f & (PX__CONN_WANT_WRITE | PX__CONN_CONNECTING))
        return false;
    atomic_fetch_or(&c->flags, PX__CONN_WANT_WRITE);
    return true;
}

static void arm_write(px_conn_t *c)
{
    px__worker_t *w = c->worker;
    if (px__held_worker() == w)
        w->backend_ops->conn_want_write(w, c);
    else
        px__worker_post(w, PX__MSG_CONN_WANT_WRITE, c);
}

/* Tells the dispatcher that sends completed or failed; after unlocking. A
 * connection whose callback runs right now rechecks its events when the
 * callback returns, so it needs no message. */
static bool needs_schedule_locked(px_conn_t *c, uint64_t completed_before)
{
    if (c->busy)
        return false;
    return c->write_error != 0 || c->released != NULL ||
           (atomic_load(&c->notify_sends) &&
            c->completed_send_id != completed_before);
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    return total;
}

/* Copies what is left of iov after skip bytes into dst. */
static void copy_iov(char *dst, const struct iovec *iov, int iovcnt,
                     size_t skip)
{
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(dst, (const char *)iov[i].iov_base + skip, len - skip);
        dst += len - skip;
        skip = 0;
    }
}

static int check_open_locked(px_conn_t *c)
{
    unsigned f = atomic_load(&c->flags);
    if ((f & (PX__CONN_CLOSING | PX__CONN_RELEASING)) || c->fd < 0 ||
        c->close_requested)
        return PX_ECLOSED;
    if (c->write_error)
        return c->write_error;
    return 0;
}

static void enqueue_locked(px_conn_t *c, px__send_t *s, size_t bytes)
{
    s->next = NULL;
    if (c->sendq_tail)
        c->sendq_tail->next = s;
    else
        c->sendq_head = s;
    c->sendq_tail = s;
    c->queued += bytes;
    account_queue_locked(c);
}

/* Finishes a send call: arms writability and schedules as needed. */
static int finish_send(px_conn_t *c, bool arm, bool schedule, int rc)
{
    if (arm)
        arm_write(c);
    if (schedule)
        px__conn_schedule(c);
    return rc;
}

/* Gives lent memory back, if any: sends that did not take it. */
static void give_back_now(px_release_fn release, void *arg)
{
    if (release)
        release(arg);
}

/* One send of iov: the last lent_len bytes of it (its last entry) are lent
 * by the caller until release(arg), the rest is copied if not written at
 * once. Only the copied bytes count against max_send_buffer. */
static int send_iov(px_conn_t *c, const struct iovec *iov, int iovcnt,
                    size_t lent_len, px_release_fn release, void *arg,
                    uint64_t *send_id)
{
    size_t total = iov_total(iov, iovcnt);
    size_t copied = total - lent_len;
    pthread_mutex_lock(&c->lock);
    int rc = check_open_locked(c);
    if (rc == 0 && c->queued + copied > c->loop->opts.max_send_buffer)
        rc = PX_ESENDBUF;
    if (rc < 0) {
        pthread_mutex_unlock(&c->lock);
        give_back_now(release, arg);
        return rc;
    }
    uint64_t id = c->next_send_id++;
    uint64_t completed_before = c->completed_send_id;
    if (send_id)
        *send_id = id;
    size_t written = 0;
    unsigned f = atomic_load(&c->flags);
    if (c->sendq_head == NULL && !(f & PX__CONN_CONNECTING)) {
        ssize_t n = total ? write_iov(c->fd, (struct iovec *)iov,
                                      iovcnt > 1024 ? 1024 : iovcnt, 0)
                          : 0;
        if (n < 0 && n != -EAGAIN) {
            fail_locked(c, (int)n);
            bool sched = needs_schedule_locked(c, completed_before);
            pthread_mutex_unlock(&c->lock);
            give_back_now(release, arg);
            return finish_send(c, false, sched, (int)n);
        }
        written = n > 0 ? (size_t)n : 0;
        atomic_fetch_add_explicit(&c->loop->stat_bytes_out, written,
                                  memory_order_relaxed);
        if (written == total) {
            c->completed_send_id = id;
            bool sched = needs_schedule_locked(c, completed_before);
            pthread_mutex_unlock(&c->lock);
            give_back_now(release, arg);
            return finish_send(c, false, sched, 0);
        }
    }
    size_t copy_left = written < copied ? copied - written : 0;
    px__send_t *s = malloc(sizeof(*s) + copy_left);
    if (s == NULL) {
        /* Part of the send may be on the wire already: the stream is
         * broken, so the connection must go. */
        fail_locked(c, -ENOMEM);
        bool sched = needs_schedule_locked(c, completed_before);
        pthread_mutex_unlock(&c->lock);
        give_back_now(release, arg);
        return finish_send(c, false, sched, -ENOMEM);
    }
    *s = (px__send_t){.id = id, .head_len = copy_left, .file_fd = -1};
    copy_iov(s->data, iov, lent_len ? iovcnt - 1 : iovcnt, written);
    if (release) {
        s->owned = iov[iovcnt - 1].iov_base;
        s->owned_len = lent_len;
        s->owned_off = written > copied ? written - copied : 0;
        s->release = release;
        s->release_arg = arg;
        c->queued_owned += lent_len - s->owned_off;
    }
    enqueue_locked(c, s, copy_left);
    bool arm = want_write_locked(c);
    pthread_mutex_unlock(&c->lock);
    return finish_send(c, arm, false, 0);
}

int px_conn_send(px_conn_t *c, const struct iovec *iov, int iovcnt,
                 uint64_t *send_id)
{
    if (iovcnt < 0 || (iovcnt > 0 && iov == NULL))
        return -EINVAL;
    return send_iov(c, iov, iovcnt, 0, NULL, NULL, send_id);
}

int px_conn_send_owned(px_conn_t *c, const struct iovec *head, const void *data,
                       size_t len, px_release_fn release, void *arg,
                       uint64_t *send_id)
{
    if (release == NULL)
        return -EINVAL;
    if (len > 0 && data == NULL) {
        release(arg);
        return -EINVAL;
    }
    struct iovec iov[2];
    int n = 0;
    if (head && head->iov_len)
        iov[n++] = *head;
    iov[n++] = (struct iovec){(void *)data, len};
    return send_iov(c, iov, n, len, release, arg, send_id);
}

int px_conn_sendfile(px_conn_t *c, const struct iovec *head, int fd,
                     off_t offset, size_t nbytes, const struct iovec *tail,
                     uint64_t *send_id)
{
    if (offset < 0 || fd < 0)
        return -EINVAL;
    size_t head_len = head ? head->iov_len : 0;
    size_t tail_len = tail ? tail->iov_len : 0;
    px__send_t *s = malloc(sizeof(*s) + head_len + tail_len);
    if (s == NULL)
        return -ENOMEM;
    int dup_fd = nbytes ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (nbytes && dup_fd < 0) {
        free(s);
        return -errno;
    }
    *s = (px__send_t){.head_len = head_len,
                      .file_fd = dup_fd,
                      .file_off = offset,
                      .file_left = nbytes,
                      .tail_len = tail_len};
    if (head_len)
        memcpy(s->data, head->iov_base, head_len);
    if (tail_len)
        memcpy(s->data + head_len, tail->iov_base, tail_len);

    pthread_mutex_lock(&c->lock);
    int rc = check_open_locked(c);
    if (rc == 0 &&
        c->queued + head_len + tail_len > c->loop->opts.max_send_buffer)
        rc = PX_ESENDBUF;
    if (rc < 0) {
        pthread_mutex_unlock(&c->lock);
        if (dup_fd >= 0)
            close(dup_fd);
        free(s);
        return rc;
    }
    s->id = c->next_send_id++;
    if (send_id)
        *send_id = s->id;
    uint64_t completed_before = c->completed_send_id;
    bool was_empty = c->sendq_head == NULL;
    /* File bytes occupy no memory, so max_send_buffer does not count them,
     * but hog accounting does: a peer that does not read them is a hog. */
    c->queued_file += nbytes;
    enqueue_locked(c, s, head_len + tail_len);
    bool arm = false;
    unsigned f = atomic_load(&c->flags);
    if (was_empty && !(f & PX__CONN_CONNECTING)) {
        rc = px__conn_flush_locked(c);
        if (rc < 0)
            fail_locked(c, rc);
        else if (c->sendq_head)
            arm = want_write_locked(c);
    } else {
        arm = want_write_locked(c);
    }
    bool sched = needs_schedule_locked(c, completed_before);
    pthread_mutex_unlock(&c->lock);
    return finish_send(c, arm, sched, rc);
}

void px__on_writable(px__worker_t *w, px_conn_t *c)
{
    (void)w;
    pthread_mutex_lock(&c->lock);
    atomic_fetch_and(&c->flags, ~(unsigned)PX__CONN_WANT_WRITE);
    uint64_t completed_before = c->completed_send_id;
    unsigned f = atomic_load(&c->flags);
    if (c->fd >= 0 && !(f & PX__CONN_RELEASING)) {
        int rc = px__conn_flush_locked(c);
        if (rc < 0)
            fail_locked(c, rc);
        else if (c->sendq_head) {
            /* Re-armed from dispatch: backends are not called from inside
             * their own event reports. */
            atomic_fetch_or(&c->flags, PX__CONN_WANT_WRITE);
            c->rearm_write = true;
        }
    }
    if (c->write_error || c->rearm_write ||
        c->completed_send_id != completed_before || (f & PX__CONN_CLOSING))
        px__conn_ready_locked(w, c);
    pthread_mutex_unlock(&c->lock);
}

size_t px_conn_queued_bytes(const px_conn_t *c)
{
    px_conn_t *mc = (px_conn_t *)c;
    pthread_mutex_lock(&mc->lock);
    size_t queued = c->queued + c->queued_file + c->queued_owned;
    pthread_mutex_unlock(&mc->lock);
    return queued;
}
