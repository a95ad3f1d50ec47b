/*
 * transport.c - the Transport type, server(), client() and register(), and
 * the gathering of Python data into engine sends.
 *
 * A listening Transport (server()) listens at once, so that port 0 reports
 * its port and a port in use fails at the call; it is the listener's user
 * data, kept alive by the runtime until the loop stops. Connections it
 * accepts before register() wait for the protocol in their first callback
 * (pxpy_await_protocol). A client Transport (client()) only validates and
 * resolves its address; register() publishes the protocol and then
 * connects, so its callbacks always find the protocol. A connection's
 * Transport is its engine connection's user data from connect or accept
 * until connection_lost (see protocol.c for that part of its life).
 *
 * Sends gather their data without copying: bytes (and ASCII str) are
 * pointed at, other buffers are exported for the duration of the call, and
 * the engine copies only what the socket does not take at once.
 */
#include "interp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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

/* ---- addresses ---------------------------------------------------------- */

/* Resolves host ("" for every IPv4 address) to a numeric address, the way
 * the engine would, so that sockname reports what is really bound. */
static int resolve_numeric(pxpy_state *st, const char *host, char *out,
                           size_t outlen)
{
    (void)st;
    if (host[0] == '\0') {
        snprintf(out, outlen, "%s", "");
        return 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc == 0)
        rc = getnameinfo(res->ai_addr, res->ai_addrlen, out, (socklen_t)outlen,
                         NULL, 0, NI_NUMERICHOST);
    if (res)
        freeaddrinfo(res);
    Py_END_ALLOW_THREADS if (rc != 0)
    {
        PyErr_Format(PyExc_OSError, "cannot resolve host '%.200s': %s", host,
                     gai_strerror(rc));
        return -1;
    }
    return 0;
}

static int parse_port(PyObject *port, const char *fname, int *out)
{
    if (!PyLong_Check(port)) {
        PyErr_Format(PyExc_TypeError, "%s() port must be an int, not %.100s",
                     fname, Py_TYPE(port)->tp_name);
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(port, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0 || v > 65535) {
        PyErr_Format(PyExc_ValueError, "%s() port must be in 0..65535, not %R",
                     fname, port);
        return -1;
    }
    *out = (int)v;
    return 0;
}

void pxpy_transport_capture_addrs(pxpy_transport_t *t)
{
    px_conn_t *conn = atomic_load(&t->conn);
    if (conn == NULL || atomic_load(&t->have_addrs))
        return;
    if (px_conn_peername(conn, t->peer_host, sizeof(t->peer_host),
                         &t->peer_port) == 0 &&
        px_conn_sockname(conn, t->sock_host, sizeof(t->sock_host),
                         &t->sock_port) == 0)
        atomic_store(&t->have_addrs, true);
}

static PyObject *address(pxpy_transport_t *t, bool peer)
{
    if (t->kind == PXPY_TRANSPORT_LISTENER && peer)
        Py_RETURN_NONE;
    if (atomic_load(&t->have_addrs)) {
        return peer ? Py_BuildValue("(si)", t->peer_host, t->peer_port)
                    : Py_BuildValue("(si)", t->sock_host, t->sock_port);
    }
    /* Not captured (the connection is not open yet): ask the socket. */
    px_conn_t *conn = atomic_load(&t->conn);
    if (conn == NULL)
        Py_RETURN_NONE;
    char host[PXPY_HOST_MAX];
    int port;
    int rc = peer ? px_conn_peername(conn, host, sizeof(host), &port)
                  : px_conn_sockname(conn, host, sizeof(host), &port);
    if (rc < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(si)", host, port);
}

static PyObject *transport_get_peername(PyObject *op, void *Py_UNUSED(c))
{
    return address((pxpy_transport_t *)op, true);
}

static PyObject *transport_get_sockname(PyObject *op, void *Py_UNUSED(c))
{
    return address((pxpy_transport_t *)op, false);
}

/* ---- life cycle --------------------------------------------------------- */

static pxpy_transport_t *transport_alloc(pxpy_state *st,
                                         pxpy_transport_kind_t kind)
{
    pxpy_transport_t *t = PyObject_GC_New(pxpy_transport_t, st->transport_type);
    if (t == NULL)
        return NULL;
    t->st = st;
    t->kind = kind;
    atomic_init(&t->conn, NULL);
    atomic_init(&t->listener, NULL);
    t->protocol = NULL;
    t->instance = NULL;
    atomic_init(&t->flags, 0);
    t->line_buf = NULL;
    t->line_len = t->line_cap = 0;
    atomic_init(&t->have_addrs, false);
    t->peer_port = t->sock_port = 0;
    t->peer_host[0] = t->sock_host[0] = '\0';
    t->xproto = NULL;
    t->main_peer = NULL;
    return t;
}

pxpy_transport_t *pxpy_transport_new_connection(pxpy_state *st, px_conn_t *conn)
{
    pxpy_transport_t *t = transport_alloc(st, PXPY_TRANSPORT_CONNECTION);
    if (t == NULL)
        return NULL;
    px_conn_ref(conn);
    atomic_store(&t->conn, conn);
    atomic_store(&t->flags, PXPY_T_ACCEPTED);
    return t;
}

PyObject *pxpy_transport_handle(pxpy_state *st, px_conn_t *conn)
{
    pxpy_transport_t *t = pxpy_transport_new_connection(st, conn);
    if (t == NULL)
        return NULL;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

/* Drops the registration count of t, once. */
static void uncount(pxpy_transport_t *t)
{
    if (atomic_fetch_and(&t->flags, ~(unsigned)PXPY_T_COUNTED) & PXPY_T_COUNTED)
        pxpy_registered_add(t->st, -1);
}

void pxpy_transport_mark_closed(pxpy_transport_t *t)
{
    atomic_fetch_or(&t->flags, PXPY_T_CLOSED);
    uncount(t);
    atomic_store(&t->listener, NULL); /* freed with its loop */
}

static int transport_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(t->protocol);
    Py_VISIT(t->instance);
    return 0;
}

static int transport_clear(PyObject *op)
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->instance);
    return 0;
}

static void transport_dealloc(PyObject *op)
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    transport_clear(op);
    px_conn_t *conn = atomic_exchange(&t->conn, NULL);
    if (conn != NULL)
        px_conn_unref(conn);
    PyMem_RawFree(t->line_buf);
    pxpy_xproto_free(t->xproto);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *transport_repr(PyObject *op)
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    unsigned f = atomic_load(&t->flags);
    const char *state = (f & PXPY_T_CLOSED)    ? "closed"
                        : (f & PXPY_T_CLOSING) ? "closing"
                                               : "open";
    if (t->kind == PXPY_TRANSPORT_LISTENER)
        return PyUnicode_FromFormat("<pyparallel.Transport listening on "
                                    "%s:%d %s>",
                                    t->sock_host, t->sock_port, state);
    if (!atomic_load(&t->have_addrs))
        return PyUnicode_FromFormat("<pyparallel.Transport to %s:%d %s>",
                                    t->peer_host, t->peer_port, state);
    return PyUnicode_FromFormat("<pyparallel.Transport %s:%d -> %s:%d %s>",
                                t->sock_host, t->sock_port, t->peer_host,
                                t->peer_port, state);
}

/* ---- methods ------------------------------------------------------------ */

static PyObject *transport_send(PyObject *op, PyObject *data)
{
    int64_t id =
        pxpy_transport_send((pxpy_transport_t *)op, data, "send() got", false);
    return id < 0 ? NULL : PyLong_FromLongLong(id);
}

static PyObject *transport_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    unsigned before = atomic_fetch_or(&t->flags, PXPY_T_CLOSING);
    if (before & (PXPY_T_CLOSING | PXPY_T_CLOSED))
        Py_RETURN_NONE;
    if (t->kind == PXPY_TRANSPORT_LISTENER) {
        px_listener_t *listener = atomic_load(&t->listener);
        if (listener != NULL)
            px_listener_close(listener);
        atomic_fetch_or(&t->flags, PXPY_T_CLOSED);
        uncount(t);
        /* Connections accepted before register() stop waiting. */
        pxpy_wake_protocol_waiters(t->st);
        Py_RETURN_NONE;
    }
    px_conn_t *conn = atomic_load(&t->conn);
    if (conn != NULL)
        px_conn_close(conn, 0);
    else
        atomic_fetch_or(&t->flags, PXPY_T_CLOSED); /* never connected */
    Py_RETURN_NONE;
}

static PyObject *transport_is_closing(PyObject *op,
                                      PyObject *Py_UNUSED(ignored))
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    return PyBool_FromLong(
        (atomic_load(&t->flags) & (PXPY_T_CLOSING | PXPY_T_CLOSED)) != 0);
}

static PyObject *reading(PyObject *op, bool pause)
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    if (t->kind == PXPY_TRANSPORT_LISTENER) {
        PyErr_SetString(t->st->async_error,
                        "a listening transport does not read: pause or "
                        "resume its connections");
        return NULL;
    }
    px_conn_t *conn = atomic_load(&t->conn);
    /* Like asyncio: on a closed connection there is nothing to do. */
    if (conn != NULL && !(atomic_load(&t->flags) & PXPY_T_CLOSED)) {
        if (pause)
            px_conn_pause_reading(conn);
        else
            px_conn_resume_reading(conn);
    }
    Py_RETURN_NONE;
}

static PyObject *transport_pause_reading(PyObject *op,
                                         PyObject *Py_UNUSED(ignored))
{
    return reading(op, true);
}

static PyObject *transport_resume_reading(PyObject *op,
                                          PyObject *Py_UNUSED(ignored))
{
    return reading(op, false);
}

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
 * subclass, naming the file). */
static int open_file(PyObject *path, int *fd, off_t *size)
{
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(path, &encoded))
        return -1;
    const char *name = PyBytes_AS_STRING(encoded);
    int err = 0;
    struct stat sb;
    Py_BEGIN_ALLOW_THREADS *fd = open(name, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        err = errno;
    else if (fstat(*fd, &sb) < 0)
        err = errno;
    else if (S_ISDIR(sb.st_mode))
        err = EISDIR;
    if (err && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    Py_END_ALLOW_THREADS Py_DECREF(encoded);
    if (err) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    *size = sb.st_size;
    return 0;
}

static PyObject *send_file(pxpy_transport_t *t, PyObject *before,
                           PyObject *path, PyObject *after, long long offset,
                           long long nbytes, bool whole)
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
        if (offset + nbytes > (long long)size) {
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

static PyObject *transport_sendfile(PyObject *op, PyObject *args)
{
    PyObject *before, *path, *after;
    if (!PyArg_ParseTuple(args, "OOO:sendfile", &before, &path, &after))
        return NULL;
    return send_file((pxpy_transport_t *)op, before, path, after, 0, 0, true);
}

static PyObject *transport_sendfile_ranged(PyObject *op, PyObject *args)
{
    PyObject *before, *path, *after;
    long long offset, nbytes;
    if (!PyArg_ParseTuple(args, "OOOLL:sendfile_ranged", &before, &path, &after,
                          &offset, &nbytes))
        return NULL;
    return send_file((pxpy_transport_t *)op, before, path, after, offset,
                     nbytes, false);
}

static PyMethodDef transport_methods[] = {
    {"send", transport_send, METH_O,
     "send(data, /)\n--\n\nQueue data (bytes-like, str, or a tuple of those) "
     "for sending, from any thread; returns its send_id."},
    {"close", transport_close, METH_NOARGS,
     "close()\n--\n\nClose once queued data is sent (a listener: stop "
     "accepting)."},
    {"is_closing", transport_is_closing, METH_NOARGS,
     "is_closing()\n--\n\nTrue once close() was called or the connection "
     "ended."},
    {"sendfile", transport_sendfile, METH_VARARGS,
     "sendfile(before, path, after, /)\n--\n\nSend before, the file at path "
     "and after as one send; returns its send_id."},
    {"sendfile_ranged", transport_sendfile_ranged, METH_VARARGS,
     "sendfile_ranged(before, path, after, offset, nbytes, /)\n--\n\n"
     "Like sendfile, for nbytes bytes of the file from offset."},
    {"pause_reading", transport_pause_reading, METH_NOARGS,
     "pause_reading()\n--\n\nStop delivering received data."},
    {"resume_reading", transport_resume_reading, METH_NOARGS,
     "resume_reading()\n--\n\nDeliver received data again."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef transport_getset[] = {
    {"peername", transport_get_peername, NULL,
     "The remote address as (host, port); None for a listener or before "
     "connecting.",
     NULL},
    {"sockname", transport_get_sockname, NULL,
     "The local address as (host, port).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot transport_slots[] = {
    {Py_tp_doc, "A connection, or a listening server (see "
                "pyparallel.server, pyparallel.client)."},
    {Py_tp_methods, transport_methods},
    {Py_tp_getset, transport_getset},
    {Py_tp_repr, transport_repr},
    {Py_tp_traverse, transport_traverse},
    {Py_tp_clear, transport_clear},
    {Py_tp_dealloc, transport_dealloc},
    {0, NULL},
};

static PyType_Spec transport_spec = {
    .name = "pyparallel.Transport",
    .basicsize = sizeof(pxpy_transport_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = transport_slots,
};

/* ---- server, client, register ------------------------------------------- */

static PyObject *server(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"host", "port", "backlog", NULL};
    const char *host;
    PyObject *port_obj;
    int backlog = 1024, port;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO|$i:server", kwlist,
                                     &host, &port_obj, &backlog))
        return NULL;
    if (parse_port(port_obj, "server", &port) < 0)
        return NULL;
    if (backlog < 1) {
        PyErr_SetString(PyExc_ValueError, "server() backlog must be >= 1");
        return NULL;
    }
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "server()");
    char numeric[PXPY_HOST_MAX];
    if (resolve_numeric(st, host, numeric, sizeof(numeric)) < 0)
        return NULL;
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    pxpy_transport_t *t = transport_alloc(st, PXPY_TRANSPORT_LISTENER);
    if (t == NULL)
        return NULL;
    px_listener_t *listener = NULL;
    int rc = px_listen(loop, numeric, port, backlog, &pxpy_conn_callbacks, t,
                       &listener);
    if (rc < 0) {
        Py_DECREF(t);
        char where[PXPY_HOST_MAX + 16];
        snprintf(where, sizeof(where), "%s:%d", host[0] ? host : "0.0.0.0",
                 port);
        return pxpy_raise_engine_error(st, rc, where);
    }
    atomic_store(&t->listener, listener);
    snprintf(t->sock_host, sizeof(t->sock_host), "%s",
             numeric[0] ? numeric : "0.0.0.0");
    t->sock_port = px_listener_port(listener);
    atomic_store(&t->have_addrs, true);
    PyObject_GC_Track(t);
    if (pxpy_keep_listener(st, (PyObject *)t) < 0) {
        /* Out of memory. The listener may still hand t to a connection
         * until the loop stops, so t must stay alive: it leaks. */
        px_listener_close(listener);
        return NULL;
    }
    return (PyObject *)t;
}

static PyObject *client(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"host", "port", NULL};
    const char *host;
    PyObject *port_obj;
    int port;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO:client", kwlist, &host,
                                     &port_obj))
        return NULL;
    if (parse_port(port_obj, "client", &port) < 0)
        return NULL;
    if (host[0] == '\0') {
        PyErr_SetString(PyExc_ValueError, "client() needs a host to connect "
                                          "to");
        return NULL;
    }
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "client()");
    pxpy_transport_t *t = transport_alloc(st, PXPY_TRANSPORT_CONNECTION);
    if (t == NULL)
        return NULL;
    /* Until it connects, the peer fields hold the address to connect to. */
    if (resolve_numeric(st, host, t->peer_host, sizeof(t->peer_host)) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    t->peer_port = port;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

/* Starts the connection of a registered client Transport. */
static int connect_client(pxpy_state *st, pxpy_transport_t *t, px_loop_t *loop)
{
    px_conn_t *conn = NULL;
    Py_INCREF(t); /* the connection's, released after connection_lost */
    int rc = px_connect(loop, t->peer_host, t->peer_port, &pxpy_conn_callbacks,
                        t, &conn);
    if (rc < 0) {
        Py_DECREF(t);
        char where[PXPY_HOST_MAX + 16];
        snprintf(where, sizeof(where), "%s:%d", t->peer_host, t->peer_port);
        pxpy_raise_engine_error(st, rc, where);
        return -1;
    }
    /* The connection's first callback may have stored it already. */
    px_conn_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&t->conn, &expected, conn))
        px_conn_unref(conn);
    return 0;
}

static PyObject *register_protocol(PyObject *module, PyObject *args,
                                   PyObject *kwargs)
{
    static char *const kwlist[] = {"transport", "protocol", NULL};
    PyObject *transport, *cls;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:register", kwlist,
                                     &transport, &cls))
        return NULL;
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "register()");
    if (!PyObject_TypeCheck(transport, st->transport_type)) {
        PyErr_Format(PyExc_TypeError,
                     "register() transport must be a Transport from server() "
                     "or client(), not %.100s",
                     Py_TYPE(transport)->tp_name);
        return NULL;
    }
    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError,
                     "register() protocol must be a class (it is "
                     "instantiated for every connection), not %s%.100s",
                     PyType_Check(Py_TYPE(cls)) &&
                             PyType_GetFlags(Py_TYPE(cls)) & Py_TPFLAGS_HEAPTYPE
                         ? "an instance of "
                         : "",
                     Py_TYPE(cls)->tp_name);
        return NULL;
    }
    pxpy_transport_t *t = (pxpy_transport_t *)transport;
    unsigned f = atomic_load(&t->flags);
    if (f & PXPY_T_ACCEPTED) {
        PyErr_SetString(PyExc_ValueError,
                        "this transport is an accepted connection: its "
                        "protocol is its server's");
        return NULL;
    }
    if (t->protocol != NULL) {
        PyErr_SetString(PyExc_ValueError, "this transport is already "
                                          "registered");
        return NULL;
    }
    if (f & (PXPY_T_CLOSING | PXPY_T_CLOSED)) {
        PyErr_SetString(st->async_error,
                        "the transport is closed (or its loop stopped): "
                        "create a new one");
        return NULL;
    }
    PyObject *protocol = pxpy_protocol_new(st, cls);
    if (protocol == NULL)
        return NULL;
    px_loop_t *loop = pxpy_loop(st);
    pxpy_xproto_t *xproto = NULL;
    if (loop != NULL && st->mode == PXPY_MODE_INTERPRETERS) {
        xproto = pxpy_xproto_new(st, cls,
                                 t->kind == PXPY_TRANSPORT_LISTENER
                                     ? px_loop_worker_count(loop)
                                     : 0);
        if (xproto == NULL) {
            Py_DECREF(protocol);
            return NULL;
        }
    }
    if (loop == NULL || !pxpy_publish_protocol(st, t, protocol, xproto)) {
        if (loop != NULL)
            PyErr_SetString(PyExc_ValueError,
                            "this transport is already registered");
        pxpy_xproto_free(xproto);
        Py_DECREF(protocol);
        return NULL;
    }
    Py_DECREF(protocol);
    atomic_fetch_or(&t->flags, PXPY_T_COUNTED);
    pxpy_registered_add(st, 1);
    if (xproto != NULL && t->kind == PXPY_TRANSPORT_LISTENER)
        pxpy_xproto_prewarm(st, xproto, loop);
    if (t->kind == PXPY_TRANSPORT_CONNECTION &&
        connect_client(st, t, loop) < 0) {
        uncount(t);
        atomic_fetch_or(&t->flags, PXPY_T_CLOSED);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef transport_module_methods[] = {
    {"server", (PyCFunction)(void (*)(void))server,
     METH_VARARGS | METH_KEYWORDS,
     "server(host, port, *, backlog=1024)\n--\n\n"
     "Listen on host:port; returns the listening Transport."},
    {"client", (PyCFunction)(void (*)(void))client,
     METH_VARARGS | METH_KEYWORDS,
     "client(host, port)\n--\n\n"
     "A Transport that connects to host:port once registered."},
    {"register", (PyCFunction)(void (*)(void))register_protocol,
     METH_VARARGS | METH_KEYWORDS,
     "register(transport, protocol)\n--\n\n"
     "Serve the transport's connections with the protocol class."},
    {NULL, NULL, 0, NULL},
};

int pxpy_transport_exec(PyObject *module, pxpy_state *st)
{
    st->transport_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &transport_spec, NULL);
    if (st->transport_type == NULL)
        return -1;
    if (PyModule_AddType(module, st->transport_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, transport_module_methods);
}
