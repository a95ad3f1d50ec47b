/*
 * register.c - server(), client() and register(): making transports and
 * serving them with a protocol class.
 *
 * A listening Transport (server()) listens at once, so that port 0 reports
 * its port and a port in use fails at the call; it is the listener's user
 * data, kept alive by the runtime until the loop stops. Connections it
 * accepts before register() wait for the protocol in their first callback
 * (pxpy_await_protocol). A client Transport (client()) only validates and
 * resolves its address; register() publishes the protocol and then
 * connects, so its callbacks always find the protocol.
 */
#include "interp/interp.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

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
    pxpy_transport_t *t = pxpy_transport_alloc(st, PXPY_TRANSPORT_LISTENER);
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
    pxpy_transport_t *t = pxpy_transport_alloc(st, PXPY_TRANSPORT_CONNECTION);
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
        pxpy_transport_uncount(t);
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

int pxpy_register_exec(PyObject *module, pxpy_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, transport_module_methods);
}
