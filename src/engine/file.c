/*
 * file.c - whole-file reads and writes that never block a worker.
 *
 * A request (open, read or write in pieces of PX_FILE_PIECE bytes, close)
 * runs on one of the loop's file threads, started on the first request;
 * its result is then handed to the worker the caller named as a work item,
 * so the caller's done callback runs where its callbacks run. Regular files
 * are always "ready" to poll and epoll, so a worker cannot wait for them the
 * way it waits for sockets: the operations have to run somewhere else.
 *
 * With the io_uring backend each file thread owns a small ring and issues
 * every operation (IORING_OP_OPENAT, READ, WRITE, CLOSE) through it, so
 * reads of cached pages complete inline and the rest go to the kernel's
 * own workers; with the epoll backend the threads make the same calls as
 * plain system calls. One code path drives both: only the four primitives
 * differ.
 *
 * Stopping: px_loop_stop calls px__files_stop before it stops the workers.
 * New requests are refused from then on, the threads finish what is queued
 * (regular files only, so nothing waits for long), and every result is
 * queued to its worker, whose stop runs it through the same callback.
 */
#include "px_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_THREADS 4

typedef struct file_req_s {
    struct file_req_s *next;
    px_loop_t *loop;
    int worker;
    bool write;
    int flags; /* PX_FILE_* (writes) */
    char *path;
    uint64_t offset;
    int64_t length; /* reads: -1 to the end */
    const char *wdata;
    size_t wlen;
    char *rdata;
    size_t rlen;
    int64_t result; /* bytes read or written, or -errno */
    px_file_done_fn done;
    void *arg;
    px__work_t *work; /* allocated up front: delivery cannot fail */
} file_req_t;

struct px__files_s {
    px_loop_t *loop;
    bool use_uring;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    file_req_t *head, *tail;
    bool stopping;
    int nthreads;
    pthread_t threads[FILE_THREADS];
};

/* ---- the primitives: a ring of the thread's, or system calls ---------- */

typedef struct {
    struct io_uring ring;
    bool ring_ok;
} file_thread_t;

/* Issues the prepared submission and waits for its completion (the ring
 * holds one at a time, so a submission slot is always free). */
static int ring_run(file_thread_t *ft)
{
    int rc = io_uring_submit(&ft->ring);
    if (rc < 0)
        return rc;
    struct io_uring_cqe *cqe;
    do
        rc = io_uring_wait_cqe(&ft->ring, &cqe);
    while (rc == -EINTR);
    if (rc < 0)
        return rc;
    int res = cqe->res;
    io_uring_cqe_seen(&ft->ring, cqe);
    return res;
}

static int op_open(file_thread_t *ft, const char *path, int flags)
{
    if (ft->ring_ok) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ft->ring);
        io_uring_prep_openat(sqe, AT_FDCWD, path, flags, 0666);
        return ring_run(ft);
    }
    int fd = open(path, flags, 0666);
    return fd < 0 ? -errno : fd;
}

static ssize_t op_read(file_thread_t *ft, int fd, char *buf, size_t len,
                       uint64_t off)
{
    if (ft->ring_ok) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ft->ring);
        io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
        return ring_run(ft);
    }
    ssize_t n = pread(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : n;
}

/* off (uint64_t)-1: at the file's position (O_APPEND: its end). */
static ssize_t op_write(file_thread_t *ft, int fd, const char *buf, size_t len,
                        uint64_t off)
{
    if (ft->ring_ok) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ft->ring);
        io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
        return ring_run(ft);
    }
    ssize_t n = off == (uint64_t)-1 ? write(fd, buf, len)
                                    : pwrite(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : n;
}

static int op_close(file_thread_t *ft, int fd)
{
    if (ft->ring_ok) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ft->ring);
        io_uring_prep_close(sqe, fd);
        return ring_run(ft);
    }
    return close(fd) < 0 ? -errno : 0;
}

/* ---- one request ------------------------------------------------------ */

static int64_t run_read(file_thread_t *ft, file_req_t *r, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return -errno;
    if (S_ISDIR(sb.st_mode))
        return -EISDIR;
    if (!S_ISREG(sb.st_mode))
        return -EINVAL; /* a pipe or a device may never end */
    uint64_t size = (uint64_t)sb.st_size;
    uint64_t avail = size > r->offset ? size - r->offset : 0;
    uint64_t want = r->length < 0 ? UINT64_MAX : (uint64_t)r->length;
    size_t cap = (size_t)(avail < want ? avail : want);
    /* One byte more than the size, so that a file that grew since fstat
     * is read on; the buffer doubles while it does. */
    if (r->length < 0 || cap < want)
        cap += 1;
    r->rdata = malloc(cap ? cap : 1);
    if (r->rdata == NULL)
        return -ENOMEM;
    size_t got = 0;
    while (got < want) {
        if (got == cap) {
            size_t ncap = cap * 2;
            char *p = realloc(r->rdata, ncap);
            if (p == NULL)
                return -ENOMEM;
            r->rdata = p;
            cap = ncap;
        }
        size_t piece = cap - got;
        if (piece > PX_FILE_PIECE)
            piece = PX_FILE_PIECE;
        if (piece > want - got)
            piece = (size_t)(want - got);
        ssize_t n = op_read(ft, fd, r->rdata + got, piece, r->offset + got);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    r->rlen = got;
    return (int64_t)got;
}

static int64_t run_write(file_thread_t *ft, file_req_t *r, int fd)
{
    bool append = r->flags & PX_FILE_APPEND;
    size_t done = 0;
    while (done < r->wlen) {
        size_t piece = r->wlen - done;
        if (piece > PX_FILE_PIECE)
            piece = PX_FILE_PIECE;
        ssize_t n = op_write(ft, fd, r->wdata + done, piece,
                             append ? (uint64_t)-1 : done);
        if (n < 0)
            return n;
        if (n == 0)
            return -EIO;
        done += (size_t)n;
    }
    return (int64_t)done;
}

static void run_request(file_thread_t *ft, file_req_t *r)
{
    int flags = O_CLOEXEC;
    if (!r->write)
        flags |= O_RDONLY | O_NONBLOCK; /* a FIFO must not hang the open */
    else
        flags |= O_WRONLY | O_CREAT |
                 ((r->flags & PX_FILE_APPEND) ? O_APPEND : O_TRUNC) |
                 ((r->flags & PX_FILE_EXCLUSIVE) ? O_EXCL : 0);
    int fd = op_open(ft, r->path, flags);
    if (fd < 0) {
        r->result = fd;
        return;
    }
    r->result = r->write ? run_write(ft, r, fd) : run_read(ft, r, fd);
    int rc = op_close(ft, fd);
    /* A write's data may be lost at close (NFS, a full quota). */
    if (r->write && r->result >= 0 && rc < 0)
        r->result = rc;
}

/* The work item on the caller's worker (also its cancellation: the result
 * is known, so it is delivered either way). */
static void deliver(void *arg)
{
    file_req_t *r = arg;
    if (r->result < 0) {
        free(r->rdata);
        r->rdata = NULL;
        r->rlen = 0;
    }
    r->done(r->arg, r->result, r->rdata, r->rlen);
    free(r->path);
    free(r);
}

static void *file_thread_main(void *arg)
{
    px__files_t *fs = arg;
    file_thread_t ft = {0};
    ft.ring_ok = fs->use_uring && io_uring_queue_init(4, &ft.ring, 0) == 0;
    pthread_mutex_lock(&fs->lock);
    for (;;) {
        while (fs->head == NULL && !fs->stopping)
            pthread_cond_wait(&fs->cond, &fs->lock);
        file_req_t *r = fs->head;
        if (r == NULL)
            break;
        fs->head = r->next;
        if (fs->head == NULL)
            fs->tail = NULL;
        pthread_mutex_unlock(&fs->lock);
        run_request(&ft, r);
        r->work->fn = deliver;
        r->work->cancel = deliver;
        r->work->arg = r;
        /* Settled on the worker that asked: never taken by another. */
        r->work->pinned = true;
        px__worker_submit(&r->loop->workers[r->worker], r->work);
        pthread_mutex_lock(&fs->lock);
    }
    pthread_mutex_unlock(&fs->lock);
    if (ft.ring_ok)
        io_uring_queue_exit(&ft.ring);
    return NULL;
}

/* ---- the service ------------------------------------------------------ */

/* The loop's file service, made and started on first use; NULL when the
 * threads cannot be started. */
static px__files_t *files_of(px_loop_t *loop)
{
    px__files_t *fs = atomic_load(&loop->files);
    if (fs != NULL)
        return fs;
    fs = calloc(1, sizeof(*fs));
    if (fs == NULL)
        return NULL;
    fs->loop = loop;
    fs->use_uring = loop->backend_ops == &px__backend_uring;
    pthread_mutex_init(&fs->lock, NULL);
    pthread_cond_init(&fs->cond, NULL);
    px__files_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&loop->files, &expected, fs)) {
        pthread_cond_destroy(&fs->cond);
        pthread_mutex_destroy(&fs->lock);
        free(fs);
        return expected;
    }
    pthread_mutex_lock(&fs->lock);
    for (int i = 0; i < FILE_THREADS; i++) {
        if (pthread_create(&fs->threads[i], NULL, file_thread_main, fs) != 0)
            break;
        fs->nthreads++;
    }
    pthread_mutex_unlock(&fs->lock);
    return fs;
}

static int submit_request(px_loop_t *loop, file_req_t *r)
{
    if (atomic_load(&loop->stopping) || !atomic_load(&loop->started))
        return PX_ESTOPPED;
    px__files_t *fs = files_of(loop);
    if (fs == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&fs->lock);
    int rc = 0;
    /* px_loop_stop sets loop->stopping before it stops the file threads
     * under this lock: a request queued here is always run. */
    if (fs->stopping || atomic_load(&loop->stopping))
        rc = PX_ESTOPPED;
    else if (fs->nthreads == 0)
        rc = -EAGAIN;
    if (rc == 0) {
        if (fs->tail)
            fs->tail->next = r;
        else
            fs->head = r;
        fs->tail = r;
        pthread_cond_signal(&fs->cond);
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static file_req_t *new_request(px_loop_t *loop, int worker, const char *path,
                               px_file_done_fn done, void *arg, int *rc)
{
    *rc = -EINVAL;
    if (path == NULL || done == NULL || worker >= loop->nworkers)
        return NULL;
    if (worker < 0)
        worker = (int)(atomic_fetch_add(&loop->next_worker, 1) %
                       (unsigned)loop->nworkers);
    *rc = -ENOMEM;
    file_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->path = strdup(path);
    r->work = malloc(sizeof(*r->work));
    if (r->path == NULL || r->work == NULL) {
        free(r->path);
        free(r->work);
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->worker = worker;
    r->done = done;
    r->arg = arg;
    return r;
}

static int start_request(px_loop_t *loop, file_req_t *r)
{
    int rc = submit_request(loop, r);
    if (rc < 0) {
        free(r->path);
        free(r->work);
        free(r);
    }
    return rc;
}

int px_file_read(px_loop_t *loop, int worker, const char *path, uint64_t offset,
                 int64_t length, px_file_done_fn done, void *arg)
{
    if (length < -1)
        return -EINVAL;
    int rc;
    file_req_t *r = new_request(loop, worker, path, done, arg, &rc);
    if (r == NULL)
        return rc;
    r->offset = offset;
    r->length = length;
    return start_request(loop, r);
}

int px_file_write(px_loop_t *loop, int worker, const char *path,
                  const void *data, size_t len, int flags, px_file_done_fn done,
                  void *arg)
{
    if ((flags & ~(PX_FILE_APPEND | PX_FILE_EXCLUSIVE)) != 0 ||
        (data == NULL && len > 0))
        return -EINVAL;
    int rc;
    file_req_t *r = new_request(loop, worker, path, done, arg, &rc);
    if (r == NULL)
        return rc;
    r->write = true;
    r->flags = flags;
    r->wdata = data;
    r->wlen = len;
    return start_request(loop, r);
}

static void files_stop(px__files_t *fs)
{
    pthread_mutex_lock(&fs->lock);
    fs->stopping = true;
    pthread_cond_broadcast(&fs->cond);
    int n = fs->nthreads;
    fs->nthreads = 0;
    pthread_mutex_unlock(&fs->lock);
    for (int i = 0; i < n; i++)
        pthread_join(fs->threads[i], NULL);
}

void px__files_stop(px_loop_t *loop)
{
    px__files_t *fs = atomic_load(&loop->files);
    if (fs != NULL)
        files_stop(fs);
}

void px__files_free(px_loop_t *loop)
{
    px__files_t *fs = atomic_exchange(&loop->files, NULL);
    if (fs == NULL)
        return;
    files_stop(fs);
    pthread_cond_destroy(&fs->cond);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
}
