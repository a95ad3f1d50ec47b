/*
 * register.c - server(), client() and register(): making transports and
 * serving them with a protocol class.
 *
 * A listening Transport (server()) listens at once, so that port 0 reports
 * its port and an address in use fails at the call; it is the listener's
 * user data, kept alive by the runtime until the loop stops. Connections it
 * accepts before register() wait for the protocol in their first callback
 * (pxpy_await_protocol). A client Transport (client()) only validates its
 * address; register() publishes the protocol and then connects, so its
 * callbacks always find the protocol. A client's host name is resolved by
 * the engine's resolver threads, not here: client() and register() may run
 * on a worker, whose other connections must not wait for a name server.
 *
 * Both take either host and port (TCP) or path (a Unix domain socket); a
 * Transport of a Unix socket keeps its port at -1 (transport.c). server()
 * also takes reuse_port (SO_REUSEPORT: several processes on one port), or
 * fd, a socket that already listens (systemd's socket activation, a
 * reload's parent), which it serves through a duplicate of its own.
 */
#include "interp/interp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

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

/* A Unix socket's path (str, bytes or os.PathLike) as the engine takes it:
 * bytes in the file system encoding, an abstract name with its leading NUL.
 * NULL with ValueError for a path the socket cannot have. */
static PyObject *unix_path(PyObject *path, const char *fname)
{
    PyObject *fs = PyOS_FSPath(path);
    if (fs == NULL)
        return NULL;
    PyObject *bytes =
        PyUnicode_Check(fs) ? PyUnicode_EncodeFSDefault(fs) : Py_NewRef(fs);
    Py_DECREF(fs);
    if (bytes == NULL)
        return NULL;
    const char *p = PyBytes_AS_STRING(bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    bool abstract = n > 0 && p[0] == '\0';
    const char *problem = NULL;
    if (n == 0)
        problem = "is empty";
    else if (abstract && n == 1)
        problem = "is an abstract name without a name after its NUL";
    else if (strlen(p + 1) != (size_t)n - 1) /* bytes end with a NUL */
        problem = "has a NUL byte (only an abstract name starts with one)";
    if (problem != NULL) {
        PyErr_Format(PyExc_ValueError, "%s() path %s", fname, problem);
        Py_DECREF(bytes);
        return NULL;
    }
    Py_ssize_t limit = PX_UNIX_PATH_MAX + abstract;
    if (n > limit) {
        PyErr_Format(PyExc_ValueError,
                     "%s() path is %zd bytes long; a Unix socket path holds "
                     "at most %zd bytes (sun_path is %d bytes%s)",
                     fname, n, limit, PX_UNIX_PATH_MAX + 1,
                     abstract ? "" : ", its terminating NUL included");
        Py_DECREF(bytes);
        return NULL;
    }
    return bytes;
}

/* Whether server()/client() got path rather than host and port: -1 with
 * an exception when both or neither were given. */
static int wants_path(PyObject *host, PyObject *port, PyObject *path,
                      const char *fname)
{
    if (path == Py_None) {
        if (host == Py_None || port == Py_None) {
            PyErr_Format(PyExc_TypeError,
                         "%s() needs host and port, or path= for a Unix "
                         "domain socket",
                         fname);
            return -1;
        }
        return 0;
    }
    if (host != Py_None || port != Py_None) {
        PyErr_Format(PyExc_ValueError,
                     "%s() takes host and port, or path, not both", fname);
        return -1;
    }
    return 1;
}

static const char *host_str(PyObject *host, const char *fname)
{
    if (!PyUnicode_Check(host)) {
        PyErr_Format(PyExc_TypeError, "%s() host must be a str, not %.100s",
                     fname, Py_TYPE(host)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8(host);
}

/* The errors of a Unix listen that a user acts on, named plainly. */
static PyObject *raise_unix_listen_error(pxpy_state *st, int rc, PyObject *path)
{
    const char *why = NULL;
    if (rc == -EADDRINUSE)
        why = "address already in use: a server accepts connections on this "
              "socket";
    else if (rc == -EEXIST)
        why = "the path exists and is not a socket (only a stale socket file, "
              "one that refuses connections, is replaced)";
    if (why == NULL) {
        PyObject *text = PyUnicode_FromFormat("unix:%S", path);
        if (text == NULL)
            return NULL;
        pxpy_raise_engine_error(st, rc, PyUnicode_AsUTF8(text));
        Py_DECREF(text);
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "isO", -rc, why, path);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* Stores a Unix path (checked by unix_path) in a Transport's address field,
 * as the engine reports addresses (px.h). */
static void store_path(char *field, PyObject *bytes)
{
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    memcpy(field, PyBytes_AS_STRING(bytes), (size_t)n);
    field[n] = '\0';
}

/* ---- server, client, register ------------------------------------------- */

/* Hands a server()'s Transport, whose addresses are set, its listener. */
static PyObject *publish_listener(pxpy_state *st, pxpy_transport_t *t,
                                  px_listener_t *listener)
{
    atomic_store(&t->listener, listener);
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

static PyObject *server_unix(pxpy_state *st, PyObject *path, int backlog)
{
    PyObject *bytes = unix_path(path, "server");
    if (bytes == NULL)
        return NULL;
    px_loop_t *loop = pxpy_loop(st);
    pxpy_transport_t *t =
        loop ? pxpy_transport_alloc(st, PXPY_TRANSPORT_LISTENER) : NULL;
    if (t == NULL) {
        Py_DECREF(bytes);
        return NULL;
    }
    px_listener_t *listener = NULL;
    int rc = px_listen_unix(loop, PyBytes_AS_STRING(bytes),
                            (size_t)PyBytes_GET_SIZE(bytes), backlog,
                            &pxpy_conn_callbacks, t, &listener);
    if (rc < 0) {
        Py_DECREF(bytes);
        Py_DECREF(t);
        PyObject *fs = PyOS_FSPath(path);
        if (fs != NULL)
            raise_unix_listen_error(st, rc, fs);
        Py_XDECREF(fs);
        return NULL;
    }
    store_path(t->sock_host, bytes);
    Py_DECREF(bytes);
    t->sock_port = -1;
    return publish_listener(st, t, listener);
}

/* The address fd is bound to, as a Transport keeps it: a numeric host and
 * a port, or a Unix socket's path and -1 (empty for an unnamed one). */
static void sockname_of_fd(int fd, char *host, size_t hostlen, int *port)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    host[0] = '\0';
    *port = -1;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        return;
    if (addr.ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&addr;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? len - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        n = strnlen(sun->sun_path, n < hostlen - 1 ? n : hostlen - 1);
        memcpy(host, sun->sun_path, n);
        host[n] = '\0';
        return;
    }
    if (getnameinfo((struct sockaddr *)&addr, len, host, (socklen_t)hostlen,
                    NULL, 0, NI_NUMERICHOST) != 0) {
        host[0] = '\0';
        return;
    }
    *port = ntohs(addr.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&addr)->sin6_port
                      : ((struct sockaddr_in *)&addr)->sin_port);
}

/* server(fd=N): a socket that already listens (socket activation, a
 * reload's parent), served as it is; its address is read from it. */
static PyObject *server_fd(pxpy_state *st, int fd)
{
    px_loop_t *loop = pxpy_loop(st);
    pxpy_transport_t *t =
        loop ? pxpy_transport_alloc(st, PXPY_TRANSPORT_LISTENER) : NULL;
    if (t == NULL)
        return NULL;
    /* The engine owns fd whatever happens: a duplicate keeps the caller's
     * descriptor theirs, as socket.socket(fileno=) users expect. */
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (own < 0) {
        Py_DECREF(t);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    px_listener_t *listener = NULL;
    int rc = px_listen_fd(loop, own, &pxpy_conn_callbacks, t, &listener);
    if (rc < 0) {
        Py_DECREF(t);
        char where[32];
        snprintf(where, sizeof(where), "fd %d", fd);
        return pxpy_raise_engine_error(st, rc, where);
    }
    sockname_of_fd(fd, t->sock_host, sizeof(t->sock_host), &t->sock_port);
    return publish_listener(st, t, listener);
}

static PyObject *server(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"host",       "port", "backlog", "path",
                                   "reuse_port", "fd",   NULL};
    PyObject *host_obj = Py_None, *port_obj = Py_None, *path = Py_None;
    PyObject *fd_obj = Py_None;
    int backlog = 1024, port, reuse_port = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO$iOpO:server", kwlist,
                                     &host_obj, &port_obj, &backlog, &path,
                                     &reuse_port, &fd_obj))
        return NULL;
    if (fd_obj != Py_None) {
        int fd = PyLong_Check(fd_obj) ? PyLong_AsInt(fd_obj) : -1;
        if (fd < 0 || host_obj != Py_None || port_obj != Py_None ||
            path != Py_None || reuse_port) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError,
                                "server(fd=) takes a listening socket's file "
                                "descriptor (an int >= 0) instead of host, "
                                "port, path and reuse_port");
            return NULL;
        }
        pxpy_state *st = pxpy_get_state(module);
        if (pxpy_in_worker_interp(st))
            return pxpy_not_in_worker_interp(st, "server()");
        return server_fd(st, fd);
    }
    int unix_socket = wants_path(host_obj, port_obj, path, "server");
    if (unix_socket < 0)
        return NULL;
    if (unix_socket && reuse_port) {
        PyErr_SetString(PyExc_ValueError,
                        "server() reuse_port is for TCP: a Unix domain socket "
                        "is shared by its path");
        return NULL;
    }
    const char *host = unix_socket ? "" : host_str(host_obj, "server");
    if (host == NULL ||
        (!unix_socket && parse_port(port_obj, "server", &port) < 0))
        return NULL;
    if (backlog < 1) {
        PyErr_SetString(PyExc_ValueError, "server() backlog must be >= 1");
        return NULL;
    }
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "server()");
    if (unix_socket)
        return server_unix(st, path, backlog);
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
    int rc = px_listen_ex(loop, numeric, port, backlog,
                          reuse_port ? PX_LISTEN_REUSEPORT : 0,
                          &pxpy_conn_callbacks, t, &listener);
    if (rc < 0) {
        Py_DECREF(t);
        char where[PXPY_HOST_MAX + 16];
        snprintf(where, sizeof(where), "%s:%d", host[0] ? host : "0.0.0.0",
                 port);
        return pxpy_raise_engine_error(st, rc, where);
    }
    snprintf(t->sock_host, sizeof(t->sock_host), "%s",
             numeric[0] ? numeric : "0.0.0.0");
    t->sock_port = px_listener_port(listener);
    return publish_listener(st, t, listener);
}

/* _keep_socket_file(listener): a reload handed the listener's socket to
 * another process, which serves it from now on: the file stays when this
 * process's listener closes. Nothing for a TCP listener. */
static PyObject *keep_socket_file(PyObject *module, PyObject *arg)
{
    pxpy_state *st = pxpy_get_state(module);
    if (!PyObject_TypeCheck(arg, st->transport_type) ||
        ((pxpy_transport_t *)arg)->kind != PXPY_TRANSPORT_LISTENER) {
        PyErr_SetString(PyExc_TypeError,
                        "_keep_socket_file() takes a listener (server())");
        return NULL;
    }
    px_listener_t *listener = atomic_load(&((pxpy_transport_t *)arg)->listener);
    if (listener != NULL)
        px_listener_keep_file(listener);
    Py_RETURN_NONE;
}

static PyObject *client(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"host", "port", "path", NULL};
    PyObject *host_obj = Py_None, *port_obj = Py_None, *path = Py_None;
    int port = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO$O:client", kwlist,
                                     &host_obj, &port_obj, &path))
        return NULL;
    int unix_socket = wants_path(host_obj, port_obj, path, "client");
    if (unix_socket < 0)
        return NULL;
    const char *host = unix_socket ? "" : host_str(host_obj, "client");
    if (host == NULL ||
        (!unix_socket && parse_port(port_obj, "client", &port) < 0))
        return NULL;
    size_t hostlen = strlen(host);
    if (!unix_socket && (hostlen == 0 || hostlen >= PXPY_HOST_MAX)) {
        PyErr_Format(PyExc_ValueError,
                     hostlen ? "client() host is %zu bytes long; a host name "
                               "has at most %d"
                             : "client() needs a host to connect to",
                     hostlen, PXPY_HOST_MAX - 1);
        return NULL;
    }
    PyObject *bytes = unix_socket ? unix_path(path, "client") : NULL;
    if (unix_socket && bytes == NULL)
        return NULL;
    pxpy_state *st = pxpy_get_state(module);
    pxpy_transport_t *t =
        pxpy_in_worker_interp(st)
            ? (pxpy_transport_t *)pxpy_not_in_worker_interp(st, "client()")
            : pxpy_transport_alloc(st, PXPY_TRANSPORT_CONNECTION);
    if (t == NULL) {
        Py_XDECREF(bytes);
        return NULL;
    }
    /* Until it connects, the peer fields hold the address to connect to:
     * the name as given (the engine resolves it), or the path. */
    if (unix_socket)
        store_path(t->peer_host, bytes);
    else
        memcpy(t->peer_host, host, hostlen + 1);
    Py_XDECREF(bytes);
    t->peer_port = port;
    PyObject_GC_Track(t);
    return (PyObject *)t;
}

/* Starts the connection of a registered client Transport. */
static int connect_client(pxpy_state *st, pxpy_transport_t *t, px_loop_t *loop)
{
    px_conn_t *conn = NULL;
    Py_INCREF(t); /* the connection's, released after connection_lost */
    int rc;
    if (t->peer_port < 0) {
        const char *path = t->peer_host;
        size_t len = path[0] ? strlen(path) : 1 + strlen(path + 1);
        rc = px_connect_unix(loop, path, len, &pxpy_conn_callbacks, t, &conn);
    } else {
        rc = px_connect(loop, t->peer_host, t->peer_port, &pxpy_conn_callbacks,
                        t, &conn);
    }
    if (rc < 0) {
        Py_DECREF(t);
        char where[PXPY_HOST_MAX + 16];
        if (t->peer_port < 0)
            snprintf(where, sizeof(where), "unix:%s", t->peer_host);
        else
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
     "server($module, /, host=None, port=None, *, backlog=1024, "
     "path=None, reuse_port=False, fd=None)\n--\n\n"
     "Listen on host:port (reuse_port: with SO_REUSEPORT), on the Unix "
     "domain socket at path, or on the listening socket fd (a duplicate); "
     "returns the listening Transport."},
    {"_keep_socket_file", keep_socket_file, METH_O,
     "_keep_socket_file($module, listener, /)\n--\n\n"
     "Leave the listener's Unix socket file when it closes: another process "
     "serves the socket now (a reload)."},
    {"client", (PyCFunction)(void (*)(void))client,
     METH_VARARGS | METH_KEYWORDS,
     "client($module, /, host=None, port=None, *, path=None)\n--\n\n"
     "A Transport that connects to host:port, or to the Unix domain socket "
     "at path, once registered."},
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
