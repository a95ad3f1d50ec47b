/*
 * send.c - sends: the gathering of Python data (bytes-like objects, str,
 * tuples of those) into one engine send, and files sent with their
 * surrounding bytes (sendfile, sendfile_ranged).
 *
 * Sends gather their data without copying: bytes (and ASCII str) are
 * pointed at, other buffers are exported for the duration of the call, and
 * the engine copies only what the socket does not take at once. Errors
 * follow one rule: data that cannot be sent is a TypeError even on a
 * closed connection; a send on a closed or failed connection is AsyncError
 * for a caller, and is dropped quietly for what a callback returned (its
 * connection_lost reports why).
 */
#include "binding.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* iovecs gathered on the stack before a send allocates. */
#define STACK_IOVS 16

static const char sendable_kinds[] =
    "bytes, bytearray, memoryview, str or a tuple of those";

/* ---- gathering data ----------------------------------------------------- */

/* What one gathered element holds on to until the send returns. */
typedef struct {
    Py_buffer view;  /* view.obj != NULL: an exported buffer */
    PyObject *owner; /* UTF-8 bytes of a non-ASCII str */
} held_t;

/* Points iov at o's bytes. Returns 0, 1 when o is not sendable (no
 * exception set), or -1 with an exception. */
static int gather_one(PyObject *o, struct iovec *iov, held_t *h)
{
    h->view.obj = NULL;
    h->owner = NULL;
    if (PyBytes_Check(o)) {
        iov->iov_base = PyBytes_AS_STRING(o);
        iov->iov_len = (size_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        if (PyUnicode_IS_ASCII(o)) {
            iov->iov_base = PyUnicode_DATA(o);
            iov->iov_len = (size_t)PyUnicode_GET_LENGTH(o);
            return 0;
        }
        h->owner = PyUnicode_AsUTF8String(o);
        if (h->owner == NULL)
            return -1;
        iov->iov_base = PyBytes_AS_STRING(h->owner);
        iov->iov_len = (size_t)PyBytes_GET_SIZE(h->owner);
        return 0;
    }
    if (PyObject_CheckBuffer(o)) {
        if (PyObject_GetBuffer(o, &h->view, PyBUF_SIMPLE) < 0)
            return -1;
        iov->iov_base = h->view.buf;
        iov->iov_len = (size_t)h->view.len;
        return 0;
    }
    return 1;
}

static void release_held(held_t *h, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (h[i].view.obj != NULL)
            PyBuffer_Release(&h[i].view);
        Py_XDECREF(h[i].owner);
    }
}

/* who: "send() got" style, or the name of a callback whose return value
 * this is (returned). */
static void not_sendable(const char *who, bool returned, PyObject *o,
                         bool in_tuple)
{
    PyErr_Format(PyExc_TypeError, "%s%s %.100s%s; expected %s%s", who,
                 returned ? "() returned" : "", Py_TYPE(o)->tp_name,
                 in_tuple ? " inside a tuple" : "", sendable_kinds,
                 returned ? ", or None" : "");
}

/* Gathers data into iov (n entries); h parallels iov. Returns the count or
 * -1 with an exception; on success the caller releases h. */
static Py_ssize_t gather(PyObject *data, const char *who, bool returned,
                         struct iovec *iov, held_t *h)
{
    if (!PyTuple_Check(data)) {
        int rc = gather_one(data, iov, h);
        if (rc > 0)
            not_sendable(who, returned, data, false);
        return rc == 0 ? 1 : -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(data);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(data, i);
        int rc = gather_one(item, &iov[i], &h[i]);
        if (rc != 0) {
            if (rc > 0)
                not_sendable(who, returned, item, true);
            release_held(h, i);
            return -1;
        }
    }
    return n;
}

PyObject *pxpy_sendable_to_bytes(PyObject *data, const char *who)
{
    if (PyBytes_CheckExact(data))
        return Py_NewRef(data);
    Py_ssize_t cap = PyTuple_Check(data) ? PyTuple_GET_SIZE(data) : 1;
    struct iovec *iov = PyMem_Malloc((size_t)(cap ? cap : 1) * sizeof(*iov));
    held_t *held = PyMem_Malloc((size_t)(cap ? cap : 1) * sizeof(*held));
    PyObject *result = NULL;
    Py_ssize_t n = iov && held ? gather(data, who, false, iov, held) : -1;
    if (iov == NULL || held == NULL)
        PyErr_NoMemory();
    if (n >= 0) {
        size_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            total += iov[i].iov_len;
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (result != NULL) {
            char *p = PyBytes_AS_STRING(result);
            for (Py_ssize_t i = 0; i < n; i++) {
                memcpy(p, iov[i].iov_base, iov[i].iov_len);
                p += iov[i].iov_len;
            }
        }
        release_held(held, n);
    }
    PyMem_Free(iov);
    PyMem_Free(held);
    return result;
}

static px_conn_t *connection_of(pxpy_transport_t *t)
{
    pxpy_state *st = t->st;
    if (t->kind == PXPY_TRANSPORT_LISTENER) {
        PyErr_SetString(st->async_error,
                        "a listening transport has no peer: use the "
                        "transports its connections receive");
        return NULL;
    }
    px_conn_t *conn = atomic_load(&t->conn);
    if (atomic_load(&t->flags) & PXPY_T_CLOSED) {
        PyErr_SetString(st->async_error, "the transport is closed");
        return NULL;
    }
    if (conn == NULL) {
        PyErr_SetString(st->async_error,
                        "the transport is not connected yet: register() it "
                        "and wait for connection_made");
        return NULL;
    }
    return conn;
}

/* Whether an engine send error means the connection is closed or failed
 * (rather than a full send buffer or a lack of memory). */
static bool is_closed_error(int rc)
{
    return rc == PX_ECLOSED || (rc < 0 && rc > -4096 && rc != -ENOMEM);
}

static int64_t send_result(pxpy_transport_t *t, int rc, uint64_t id)
{
    if (rc == 0)
        return (int64_t)id;
    if (rc == PX_ECLOSED)
        PyErr_SetString(t->st->async_error,
                        "send on a closed transport (close() was called or "
                        "the connection ended)");
    else if (is_closed_error(rc))
        /* The write failed (the peer went away: EPIPE, ECONNRESET): the
         * connection is closing, and connection_lost will carry the error.
         * For the sender it is simply closed, as the docs promise. */
        PyErr_Format(t->st->async_error,
                     "send on a closed transport (the connection failed: "
                     "%s)",
                     px_strerror(rc));
    else
        pxpy_raise_engine_error(t->st, rc, NULL);
    return -1;
}

int64_t pxpy_transport_send(pxpy_transport_t *t, PyObject *data,
                            const char *who, bool from_callback)
{
    struct iovec iov_stack[STACK_IOVS];
    held_t held_stack[STACK_IOVS];
    struct iovec *iov = iov_stack;
    held_t *held = held_stack;
    Py_ssize_t cap = PyTuple_Check(data) ? PyTuple_GET_SIZE(data) : 1;
    if (cap > STACK_IOVS) {
        iov = PyMem_Malloc((size_t)cap * sizeof(*iov));
        held = PyMem_Malloc((size_t)cap * sizeof(*held));
        if (iov == NULL || held == NULL) {
            PyMem_Free(iov);
            PyMem_Free(held);
            PyErr_NoMemory();
            return -1;
        }
    }
    int64_t result = -1;
    /* Data that cannot be sent is an error even on a closed connection. */
    Py_ssize_t n = gather(data, who, from_callback, iov, held);
    if (n >= 0) {
        size_t total = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            total += iov[i].iov_len;
        px_conn_t *conn = NULL;
        if (from_callback && total == 0)
            result = 0;
        else
            conn = connection_of(t);
        if (conn != NULL) {
            uint64_t id = 0;
            int rc = px_conn_send(conn, iov, (int)n, &id);
            result = from_callback && is_closed_error(rc)
                         ? 0 /* connection_lost reports it */
                         : send_result(t, rc, id);
        }
        release_held(held, n);
    }
    if (iov != iov_stack) {
        PyMem_Free(iov);
        PyMem_Free(held);
    }
    return result;
}

/* ---- files ------------------------------------------------------------- */

/* The single buffer before or after a file. */
static int gather_edge(PyObject *o, const char *name, struct iovec *iov,
                       held_t *h)
{
    int rc = gather_one(o, iov, h);
    if (rc > 0) {
        PyErr_Format(PyExc_TypeError,
                     "sendfile() %s must be bytes, bytearray, memoryview or "
                     "str, not %.100s",
                     name, Py_TYPE(o)->tp_name);
        return -1;
    }
    return rc;
}

/* Opens path for reading; fills *size. -1 with OSError (the errno's
 * subclass, naming the file), or ValueError for what is not a regular
 * file. O_NONBLOCK: opening a FIFO must not wait for a writer, and a
 * device or FIFO has no size to send. */
static int open_file(PyObject *path, int *fd, off_t *size)
{
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(path, &encoded))
        return -1;
    const char *name = PyBytes_AS_STRING(encoded);
    int err = 0;
    bool regular = true;
    struct stat sb;
    Py_BEGIN_ALLOW_THREADS *fd =
        open(name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (*fd < 0)
        err = errno;
    else if (fstat(*fd, &sb) < 0)
        err = errno;
    else if (S_ISDIR(sb.st_mode))
        err = EISDIR;
    else
        regular = S_ISREG(sb.st_mode);
    if ((err || !regular) && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    Py_END_ALLOW_THREADS Py_DECREF(encoded);
    if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    if (!regular) {
        PyErr_Format(PyExc_ValueError,
                     "cannot send %R: it is not a regular file (a FIFO, "
                     "socket or device); only regular files can be sent",
                     path);
        return -1;
    }
    *size = sb.st_size;
    return 0;
}

PyObject *pxpy_transport_sendfile(pxpy_transport_t *t, PyObject *before,
                                  PyObject *path, PyObject *after,
                                  long long offset, long long nbytes,
                                  bool whole)
{
    px_conn_t *conn = connection_of(t);
    if (conn == NULL)
        return NULL;
    if (!whole && (offset < 0 || nbytes < 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "sendfile_ranged() offset and nbytes must be >= 0");
        return NULL;
    }
    struct iovec head, tail;
    held_t h[2];
    if (gather_edge(before, "before", &head, &h[0]) < 0)
        return NULL;
    if (gather_edge(after, "after", &tail, &h[1]) < 0) {
        release_held(h, 1);
        return NULL;
    }
    PyObject *result = NULL;
    int fd;
    off_t size;
    if (open_file(path, &fd, &size) == 0) {
        if (whole) {
            offset = 0;
            nbytes = (long long)size;
        }
        /* Both come from Python: their sum may not fit (offset
         * 2**63-1), so it is checked rather than computed. */
        long long end;
        if (__builtin_add_overflow(offset, nbytes, &end) ||
            end > (long long)size) {
            PyErr_Format(PyExc_ValueError,
                         "sendfile_ranged() range of %lld bytes at offset "
                         "%lld reaches past the end of %R (%lld bytes)",
                         nbytes, offset, path, (long long)size);
        } else {
            uint64_t id = 0;
            int rc = px_conn_sendfile(conn, &head, fd, (off_t)offset,
                                      (size_t)nbytes, &tail, &id);
            int64_t r = send_result(t, rc, id);
            result = r < 0 ? NULL : PyLong_FromLongLong(r);
        }
        close(fd);
    }
    release_held(h, 2);
    return result;
}
