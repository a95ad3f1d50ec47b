/*
 * transport.c - the Transport type: a listening server, or one connection
 * (accepted or outgoing), with its addresses, close, pause/resume and the
 * methods that send (whose work is in send.c). register.c makes them.
 *
 * A connection's Transport is its engine connection's user data from
 * connect or accept until connection_lost (see protocol.c for that part of
 * its life); a listener's is kept alive by the runtime until the loop
 * stops.
 */
#include "interp/interp.h"

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

/* ---- addresses ---------------------------------------------------------- */

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

PyObject *pxpy_address(const char *host, int port)
{
    if (port >= 0)
        return Py_BuildValue("(si)", host, port);
    if (host[0] != '\0' || host[1] == '\0')
        return PyUnicode_DecodeFSDefault(host);
    PyObject *name = PyUnicode_DecodeFSDefault(host + 1);
    if (name == NULL)
        return NULL;
    PyObject *abstract = PyUnicode_FromFormat("%c%U", 0, name);
    Py_DECREF(name);
    return abstract;
}

static PyObject *address(pxpy_transport_t *t, bool peer)
{
    if (t->kind == PXPY_TRANSPORT_LISTENER && peer)
        Py_RETURN_NONE;
    if (atomic_load(&t->have_addrs)) {
        return peer ? pxpy_address(t->peer_host, t->peer_port)
                    : pxpy_address(t->sock_host, t->sock_port);
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
    return pxpy_address(host, port);
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

pxpy_transport_t *pxpy_transport_alloc(pxpy_state *st,
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
    pxpy_transport_t *t = pxpy_transport_alloc(st, PXPY_TRANSPORT_CONNECTION);
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

void pxpy_transport_uncount(pxpy_transport_t *t)
{
    if (atomic_fetch_and(&t->flags, ~(unsigned)PXPY_T_COUNTED) & PXPY_T_COUNTED)
        pxpy_registered_add(t->st, -1);
}

void pxpy_transport_mark_closed(pxpy_transport_t *t)
{
    atomic_fetch_or(&t->flags, PXPY_T_CLOSED);
    pxpy_transport_uncount(t);
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
    bool have = atomic_load(&t->have_addrs);
    if (t->kind == PXPY_TRANSPORT_LISTENER ? t->sock_port < 0
                                           : t->peer_port < 0) {
        PyObject *sock = pxpy_address(t->sock_host, t->sock_port);
        PyObject *peer = pxpy_address(t->peer_host, t->peer_port);
        PyObject *r = NULL;
        if (sock != NULL && peer != NULL)
            r = t->kind == PXPY_TRANSPORT_LISTENER
                    ? PyUnicode_FromFormat("<pyparallel.Transport listening "
                                           "on unix:%R %s>",
                                           sock, state)
                : have ? PyUnicode_FromFormat("<pyparallel.Transport unix:%R "
                                              "-> unix:%R %s>",
                                              sock, peer, state)
                       : PyUnicode_FromFormat("<pyparallel.Transport to "
                                              "unix:%R %s>",
                                              peer, state);
        Py_XDECREF(sock);
        Py_XDECREF(peer);
        return r;
    }
    if (t->kind == PXPY_TRANSPORT_LISTENER)
        return PyUnicode_FromFormat("<pyparallel.Transport listening on "
                                    "%s:%d %s>",
                                    t->sock_host, t->sock_port, state);
    if (!have)
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
        pxpy_transport_uncount(t);
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

static PyObject *transport_sendfile(PyObject *op, PyObject *args)
{
    PyObject *before, *path, *after;
    if (!PyArg_ParseTuple(args, "OOO:sendfile", &before, &path, &after))
        return NULL;
    return pxpy_transport_sendfile((pxpy_transport_t *)op, before, path, after,
                                   0, 0, true);
}

/* A listener's socket, for a reload to hand to its new process. */
static PyObject *transport_fileno(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    pxpy_transport_t *t = (pxpy_transport_t *)op;
    px_listener_t *listener =
        t->kind == PXPY_TRANSPORT_LISTENER ? atomic_load(&t->listener) : NULL;
    int fd = listener != NULL ? px_listener_fd(listener) : -1;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, listener != NULL
                                              ? "the listener is closed"
                                              : "fileno() is a listener's");
        return NULL;
    }
    return PyLong_FromLong(fd);
}

static PyObject *transport_sendfile_ranged(PyObject *op, PyObject *args)
{
    PyObject *before, *path, *after;
    long long offset, nbytes;
    if (!PyArg_ParseTuple(args, "OOOLL:sendfile_ranged", &before, &path, &after,
                          &offset, &nbytes))
        return NULL;
    return pxpy_transport_sendfile((pxpy_transport_t *)op, before, path, after,
                                   offset, nbytes, false);
}

static PyMethodDef transport_methods[] = {
    {"send", transport_send, METH_O,
     "send($self, data, /)\n--\n\nQueue data (bytes-like, str, or a tuple of "
     "those) "
     "for sending, from any thread; returns its send_id."},
    {"close", transport_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose once queued data is sent (a listener: stop "
     "accepting)."},
    {"fileno", transport_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nA listener's socket descriptor (it stays the "
     "listener's): what a reload hands to its new process."},
    {"is_closing", transport_is_closing, METH_NOARGS,
     "is_closing($self, /)\n--\n\nTrue once close() was called or the "
     "connection "
     "ended."},
    {"sendfile", transport_sendfile, METH_VARARGS,
     "sendfile($self, before, path, after, /)\n--\n\nSend before, the file at "
     "path "
     "and after as one send; returns its send_id."},
    {"sendfile_ranged", transport_sendfile_ranged, METH_VARARGS,
     "sendfile_ranged($self, before, path, after, offset, nbytes, /)\n--\n\n"
     "Like sendfile, for nbytes bytes of the file from offset."},
    {"pause_reading", transport_pause_reading, METH_NOARGS,
     "pause_reading($self, /)\n--\n\nStop delivering received data."},
    {"resume_reading", transport_resume_reading, METH_NOARGS,
     "resume_reading($self, /)\n--\n\nDeliver received data again."},
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

int pxpy_transport_exec(PyObject *module, pxpy_state *st)
{
    st->transport_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &transport_spec, NULL);
    if (st->transport_type == NULL)
        return -1;
    return PyModule_AddType(module, st->transport_type);
}
