/*
 * datagram.c - UDP endpoints: datagram_endpoint() and the DatagramTransport
 * type, over the engine's px_udp_* (src/engine/udp.c).
 *
 * An endpoint is served on one worker, whose engine callbacks never
 * overlap, so its protocol instance needs no lock. datagram_endpoint()
 * returns a DatagramTransport (the "owner") and hands the engine a link
 * record as the endpoint's user data: on_open makes the protocol instance on
 * the worker and runs connection_made; on_datagram runs datagram_received
 * and sends what it returns back to the sender; on_error runs
 * error_received; on_close runs connection_lost, then drops the link's
 * references. The endpoint counts as registered for run() from its creation
 * to on_close.
 *
 * Mode "interpreters" (interp/xdgram.c): the owner lives in the main
 * interpreter and carries no protocol; on_open finds the class again in the
 * worker's interpreter and makes a second DatagramTransport there (the
 * "served" one) that the callbacks receive. Both refer to the same engine
 * endpoint, so sendto, close and the addresses work on either. The link's
 * reference to the owner is dropped in the main interpreter.
 *
 * A callback that raises is logged and counted, as protocol callbacks are;
 * unlike a connection, the endpoint stays open, since one bad datagram
 * should not end a server that serves every peer through one socket.
 */
#include "interp/interp.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

enum {
    HAS_MADE = 1u << 0,
    HAS_RECEIVED = 1u << 1,
    HAS_ERROR = 1u << 2,
    HAS_LOST = 1u << 3,
};

typedef struct {
    PyObject_HEAD
    pxpy_state *st;
    px_udp_t *_Atomic udp; /* our reference; set once */
    PyObject *cls;         /* the protocol class; NULL on a main-interpreter
                            * owner in mode "interpreters" */
    PyObject *instance;    /* callbacks only */
    unsigned has;          /* HAS_*: the members cls defines */
} dgram_t;

/* The engine endpoint's user data. */
typedef struct {
    pxpy_state *st;        /* the owner's */
    dgram_t *owner;        /* a reference, until on_close */
    dgram_t *served;       /* the callbacks' transport: a reference */
    struct pxpy_xi_s *cls; /* mode "interpreters": the class, encoded */
} link_t;

static dgram_t *dgram_new(pxpy_state *st, PyObject *cls)
{
    dgram_t *d = PyObject_GC_New(dgram_t, st->datagram_type);
    if (d == NULL)
        return NULL;
    d->st = st;
    atomic_init(&d->udp, NULL);
    d->cls = Py_XNewRef(cls);
    d->instance = NULL;
    d->has = 0;
    PyObject_GC_Track(d);
    return d;
}

/* Stores udp in d (taking a reference) unless it has one. */
static void dgram_adopt(dgram_t *d, px_udp_t *udp)
{
    px_udp_t *expected = NULL;
    px_udp_ref(udp);
    if (!atomic_compare_exchange_strong(&d->udp, &expected, udp))
        px_udp_unref(udp);
}

static int dgram_traverse(PyObject *op, visitproc visit, void *arg)
{
    dgram_t *d = (dgram_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(d->cls);
    Py_VISIT(d->instance);
    return 0;
}

static int dgram_clear(PyObject *op)
{
    dgram_t *d = (dgram_t *)op;
    Py_CLEAR(d->cls);
    Py_CLEAR(d->instance);
    return 0;
}

static void dgram_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    dgram_clear(op);
    px_udp_t *udp = atomic_load(&((dgram_t *)op)->udp);
    if (udp != NULL)
        px_udp_unref(udp);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* ---- callbacks ---------------------------------------------------------- */

static void report(dgram_t *d, const char *what)
{
    char where[320];
    snprintf(where, sizeof(where), "%.200s.%s",
             d->cls ? ((PyTypeObject *)d->cls)->tp_name : "?", what);
    pxpy_report_callback_error(d->st, where);
}

static PyObject *call(dgram_t *d, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *args[] = {d->instance, (PyObject *)d, a, b};
    size_t n = b ? 4 : a ? 3 : 2;
    return PyObject_VectorcallMethod(name, args, n, NULL);
}

static int send_to(dgram_t *d, PyObject *data, PyObject *addr, const char *who,
                   bool from_callback);

/* What a callback returned: None, or data to send to addr (None: the
 * connected remote). */
static void deliver(dgram_t *d, const char *what, PyObject *r, PyObject *addr)
{
    if (r == NULL) {
        report(d, what);
        return;
    }
    if (r != Py_None && send_to(d, r, addr, what, true) < 0)
        report(d, what);
    Py_DECREF(r);
}

static void on_open(px_udp_t *udp)
{
    bool attached = pxpy_attach();
    link_t *link = px_udp_data(udp);
    pxpy_state *st = link->st;
    dgram_t *d;
    if (link->cls != NULL) {
        PyObject *cls = pxpy_xdgram_worker_class(&st, link->cls);
        d = cls ? dgram_new(st, cls) : NULL;
        Py_XDECREF(cls);
        if (d == NULL) {
            pxpy_report_callback_error(st, "opening a datagram endpoint");
            px_udp_close(udp);
            pxpy_detach(attached);
            return;
        }
    } else {
        d = (dgram_t *)Py_NewRef(link->owner);
    }
    dgram_adopt(d, udp);
    link->served = d;
    static const struct {
        int name;
        unsigned flag;
    } members[] = {
        {PXPY_STR_CONNECTION_MADE, HAS_MADE},
        {PXPY_STR_DATAGRAM_RECEIVED, HAS_RECEIVED},
        {PXPY_STR_ERROR_RECEIVED, HAS_ERROR},
        {PXPY_STR_CONNECTION_LOST, HAS_LOST},
    };
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        int has =
            PyObject_HasAttrWithError(d->cls, st->str_cache[members[i].name]);
        if (has < 0)
            PyErr_Clear();
        if (has > 0)
            d->has |= members[i].flag;
    }
    d->instance = PyObject_CallNoArgs(d->cls);
    if (d->instance == NULL) {
        report(d, "__init__");
        px_udp_close(udp);
    } else if (d->has & HAS_MADE) {
        deliver(d, "connection_made",
                call(d, PXPY_STR(st, CONNECTION_MADE), NULL, NULL), Py_None);
    }
    pxpy_detach(attached);
}

static void on_datagram(px_udp_t *udp, const char *data, size_t len,
                        const char *host, int port)
{
    bool attached = pxpy_attach();
    link_t *link = px_udp_data(udp);
    dgram_t *d = link->served;
    if (d != NULL && d->instance != NULL && (d->has & HAS_RECEIVED)) {
        PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        PyObject *addr = Py_BuildValue("(si)", host, port);
        PyObject *r = b && addr
                          ? call(d, PXPY_STR(d->st, DATAGRAM_RECEIVED), b, addr)
                          : NULL;
        deliver(d, "datagram_received", r, addr);
        Py_XDECREF(b);
        Py_XDECREF(addr);
    }
    pxpy_detach(attached);
}

static PyObject *error_object(pxpy_state *st, int error)
{
    if (error < 0 && error > -4096)
        return PyObject_CallFunction(PyExc_OSError, "is", -error,
                                     px_strerror(error));
    return PyObject_CallFunction(st->async_error, "s", px_strerror(error));
}

static void on_error(px_udp_t *udp, int error)
{
    bool attached = pxpy_attach();
    link_t *link = px_udp_data(udp);
    dgram_t *d = link->served;
    if (d != NULL && d->instance != NULL && (d->has & HAS_ERROR)) {
        PyObject *exc = error_object(d->st, error);
        PyObject *r =
            exc ? call(d, PXPY_STR(d->st, ERROR_RECEIVED), exc, NULL) : NULL;
        Py_XDECREF(exc);
        if (r == NULL)
            report(d, "error_received");
        Py_XDECREF(r);
    }
    pxpy_detach(attached);
}

static void on_close(px_udp_t *udp, int error)
{
    bool attached = pxpy_attach();
    link_t *link = px_udp_data(udp);
    dgram_t *d = link->served;
    if (d != NULL && d->instance != NULL && (d->has & HAS_LOST)) {
        /* A local close and the loop's stop are both ends the program
         * asked for: None, as for a connection. */
        PyObject *exc = error == 0 || error == PX_ESTOPPED
                            ? Py_NewRef(Py_None)
                            : error_object(d->st, error);
        PyObject *r =
            exc ? call(d, PXPY_STR(d->st, CONNECTION_LOST), exc, NULL) : NULL;
        Py_XDECREF(exc);
        if (r == NULL)
            report(d, "connection_lost");
        Py_XDECREF(r);
    }
    px_udp_set_data(udp, NULL);
    if (d != NULL) {
        /* The instance often refers to the transport: break the cycle. */
        Py_CLEAR(d->instance);
        Py_DECREF(d);
    }
    pxpy_state *st = link->st;
    if (link->cls != NULL) {
        pxpy_xdgram_free_class(link->cls);
        pxpy_xdgram_release_main(st, (PyObject *)link->owner);
    } else {
        Py_DECREF(link->owner);
    }
    PyMem_RawFree(link);
    pxpy_registered_add(st, -1);
    pxpy_detach(attached);
}

static const px_udp_callbacks_t udp_callbacks = {
    .on_open = on_open,
    .on_datagram = on_datagram,
    .on_error = on_error,
    .on_close = on_close,
};

/* ---- addresses ------------------------------------------------------------
 */

/* (host, port) or None into host (NULL for None) and port; fname and what
 * name the argument in errors. */
static int parse_addr(PyObject *addr, const char *fname, const char *what,
                      const char **host, int *port)
{
    *host = NULL;
    *port = 0;
    if (addr == Py_None)
        return 0;
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(addr, 0)) ||
        !PyLong_Check(PyTuple_GET_ITEM(addr, 1))) {
        PyErr_Format(PyExc_TypeError,
                     "%s() %s must be a (host, port) tuple or None, not %R",
                     fname, what, addr);
        return -1;
    }
    *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0));
    if (*host == NULL)
        return -1;
    int overflow;
    long v = PyLong_AsLongAndOverflow(PyTuple_GET_ITEM(addr, 1), &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0 || v > 65535) {
        PyErr_Format(PyExc_ValueError, "%s() %s port must be in 0..65535: %R",
                     fname, what, addr);
        return -1;
    }
    *port = (int)v;
    return 0;
}

static PyObject *addr_tuple(int rc, const char *host, int port)
{
    if (rc < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(si)", host, port);
}

/* ---- the DatagramTransport type -------------------------------------------
 */

static px_udp_t *udp_of(dgram_t *d)
{
    px_udp_t *udp = atomic_load(&d->udp);
    if (udp == NULL)
        PyErr_SetString(d->st->async_error, "the endpoint is not open");
    return udp;
}

/* from_callback: what a callback returned, which an endpoint the callback
 * closed drops quietly, as a connection does. */
static int send_to(dgram_t *d, PyObject *data, PyObject *addr, const char *who,
                   bool from_callback)
{
    const char *host;
    int port;
    if (parse_addr(addr, "sendto", "addr", &host, &port) < 0)
        return -1;
    px_udp_t *udp = udp_of(d);
    if (udp == NULL)
        return -1;
    PyObject *bytes = pxpy_sendable_to_bytes(data, who);
    if (bytes == NULL)
        return -1;
    int rc = px_udp_sendto(udp, PyBytes_AS_STRING(bytes),
                           (size_t)PyBytes_GET_SIZE(bytes), host, port);
    Py_DECREF(bytes);
    if (rc == PX_ECLOSED && from_callback)
        return 0;
    if (rc == -EINVAL && host != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "sendto() needs a numeric IPv4 or IPv6 address, not "
                     "'%.200s' (resolve names with socket.getaddrinfo first)",
                     host);
        return -1;
    }
    if (rc < 0) {
        char where[PXPY_HOST_MAX + 16];
        if (host != NULL)
            snprintf(where, sizeof(where), "%.63s:%d", host, port);
        pxpy_raise_engine_error(d->st, rc, host ? where : NULL);
        return -1;
    }
    return 0;
}

static PyObject *dgram_sendto(PyObject *op, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "addr", NULL};
    PyObject *data = NULL, *addr = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2 || nargs + nkw < 1 || nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError,
                        "sendto() takes data and an optional addr");
        return NULL;
    }
    data = nargs > 0 ? args[0] : NULL;
    if (nargs > 1)
        addr = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, names[1]) == 0 && nargs < 2)
            addr = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(name, names[0]) == 0 &&
                 nargs < 1)
            data = args[nargs + i];
        else {
            PyErr_Format(PyExc_TypeError,
                         "sendto() got an unexpected keyword argument %R",
                         name);
            return NULL;
        }
    }
    if (data == NULL) {
        PyErr_SetString(PyExc_TypeError, "sendto() missing data");
        return NULL;
    }
    if (send_to((dgram_t *)op, data, addr, "sendto() got", false) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *dgram_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    px_udp_t *udp = atomic_load(&((dgram_t *)op)->udp);
    if (udp != NULL)
        px_udp_close(udp);
    Py_RETURN_NONE;
}

static PyObject *dgram_get_sockname(PyObject *op, void *Py_UNUSED(closure))
{
    px_udp_t *udp = udp_of((dgram_t *)op);
    if (udp == NULL)
        return NULL;
    char host[PXPY_HOST_MAX];
    int port = 0;
    int rc = px_udp_sockname(udp, host, sizeof(host), &port);
    return addr_tuple(rc, host, port);
}

static PyObject *dgram_get_peername(PyObject *op, void *Py_UNUSED(closure))
{
    px_udp_t *udp = udp_of((dgram_t *)op);
    if (udp == NULL)
        return NULL;
    char host[PXPY_HOST_MAX];
    int port = 0;
    int rc = px_udp_peername(udp, host, sizeof(host), &port);
    return addr_tuple(rc, host, port);
}

static PyObject *dgram_repr(PyObject *op)
{
    px_udp_t *udp = atomic_load(&((dgram_t *)op)->udp);
    char host[PXPY_HOST_MAX];
    int port = 0;
    if (udp == NULL || px_udp_sockname(udp, host, sizeof(host), &port) < 0)
        return PyUnicode_FromString("<pyparallel.DatagramTransport>");
    return PyUnicode_FromFormat("<pyparallel.DatagramTransport %s:%d>", host,
                                port);
}

static PyMethodDef dgram_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))dgram_sendto,
     METH_FASTCALL | METH_KEYWORDS,
     "sendto($self, data, addr=None)\n--\n\n"
     "Send data as one datagram to addr, a (host, port) tuple with a numeric "
     "address (None: the remote of a connected endpoint)."},
    {"close", dgram_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Close the endpoint; connection_lost runs on its worker."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef dgram_getset[] = {
    {"sockname", dgram_get_sockname, NULL, "The bound address as (host, port).",
     NULL},
    {"peername", dgram_get_peername, NULL,
     "The remote address as (host, port); None when not connected.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot dgram_slots[] = {
    {Py_tp_doc, "A UDP endpoint (see pyparallel.datagram_endpoint)."},
    {Py_tp_methods, dgram_methods},
    {Py_tp_getset, dgram_getset},
    {Py_tp_repr, dgram_repr},
    {Py_tp_traverse, dgram_traverse},
    {Py_tp_clear, dgram_clear},
    {Py_tp_dealloc, dgram_dealloc},
    {0, NULL},
};

static PyType_Spec dgram_spec = {
    .name = "pyparallel.DatagramTransport",
    .basicsize = sizeof(dgram_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = dgram_slots,
};

/* ---- datagram_endpoint() --------------------------------------------------
 */

static PyObject *datagram_endpoint(PyObject *module, PyObject *args,
                                   PyObject *kwargs)
{
    static char *const kwlist[] = {"protocol", "local_addr", "remote_addr",
                                   NULL};
    PyObject *cls, *local = Py_None, *remote = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OO:datagram_endpoint",
                                     kwlist, &cls, &local, &remote))
        return NULL;
    if (!PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError,
                     "datagram_endpoint() protocol must be a class, not %.100s",
                     Py_TYPE(cls)->tp_name);
        return NULL;
    }
    const char *lhost, *rhost;
    int lport, rport;
    if (parse_addr(local, "datagram_endpoint", "local_addr", &lhost, &lport) <
            0 ||
        parse_addr(remote, "datagram_endpoint", "remote_addr", &rhost, &rport) <
            0)
        return NULL;
    if (lhost == NULL && rhost == NULL) {
        PyErr_SetString(PyExc_ValueError, "datagram_endpoint() needs "
                                          "local_addr, remote_addr or both");
        return NULL;
    }
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "datagram_endpoint()");
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    bool crossing = st->mode == PXPY_MODE_INTERPRETERS;
    link_t *link = PyMem_RawCalloc(1, sizeof(*link));
    if (link == NULL)
        return PyErr_NoMemory();
    link->st = st;
    link->owner = dgram_new(st, crossing ? NULL : cls);
    if (link->owner != NULL && crossing) {
        link->cls = pxpy_xdgram_encode_class(st, cls);
        if (link->cls == NULL)
            Py_CLEAR(link->owner);
    }
    if (link->owner == NULL) {
        PyMem_RawFree(link);
        return NULL;
    }
    dgram_t *owner = (dgram_t *)Py_NewRef(link->owner);
    pxpy_registered_add(st, 1);
    px_udp_t *udp = NULL;
    int rc;
    /* Names are resolved here, as server() resolves them. */
    Py_BEGIN_ALLOW_THREADS rc = px_udp_open(loop, -1, lhost, lport, rhost,
                                            rport, &udp_callbacks, link, &udp);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        pxpy_registered_add(st, -1);
        if (link->cls != NULL)
            pxpy_xdgram_free_class(link->cls);
        Py_DECREF(link->owner);
        PyMem_RawFree(link);
        Py_DECREF(owner);
        char where[2 * PXPY_HOST_MAX + 32];
        snprintf(where, sizeof(where), "%.63s:%d", lhost ? lhost : rhost,
                 lhost ? lport : rport);
        return pxpy_raise_engine_error(st, rc, where);
    }
    dgram_adopt(owner, udp);
    px_udp_unref(udp);
    return (PyObject *)owner;
}

static PyMethodDef datagram_module_methods[] = {
    {"datagram_endpoint", (PyCFunction)(void (*)(void))datagram_endpoint,
     METH_VARARGS | METH_KEYWORDS,
     "datagram_endpoint($module, /, protocol, *, local_addr=None, "
     "remote_addr=None)\n--\n\n"
     "A UDP endpoint served on a worker by an instance of protocol; returns "
     "its DatagramTransport."},
    {NULL, NULL, 0, NULL},
};

int pxpy_datagram_exec(PyObject *module, pxpy_state *st)
{
    st->datagram_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &dgram_spec, NULL);
    if (st->datagram_type == NULL ||
        PyModule_AddType(module, st->datagram_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, datagram_module_methods);
}
