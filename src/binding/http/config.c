/*
 * config.c - the HTTP server in the binding: the _core.HttpProtocol base
 * class, the per-class configuration register() reads from it (limits,
 * _px_handle, the request class, the exact-route table), and the hooks
 * through which protocol.c hands an HTTP connection's events to the
 * engine's HTTP layer. answer.c calls the handler for each request and
 * frames what it returns; types.c holds the request and file-response
 * types.
 *
 * Everything HTTP happens in the engine's HTTP layer (px_http_server.h);
 * Python runs only the handler. register(transport, cls) with a subclass
 * of HttpProtocol makes protocol.c hand the connection's events to this
 * file: pxpy_http_open when the instance exists, pxpy_http_data for each
 * on_data, pxpy_http_eof when the client half-closed, pxpy_http_closed
 * before connection_lost.
 *
 * The exact routes of a pyparallel.http.HttpServer are served without
 * _px_handle: its _px_dispatch() gives the route table (read_dispatch
 * below), and answer.c sends a request whose decoded path and method are
 * in it straight to the handler. That skips one Python frame per request,
 * which on the plaintext benchmark was a fifth of the server's CPU.
 */
#include "binding.h"
#include "http/http_binding.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the configuration of a registered class ---------------------------- */

typedef struct {
    const char *name;
    bool is_timeout;      /* seconds (a float), else a byte count */
    bool may_be_none;     /* a count that may be None: no limit */
    double default_value; /* 0: px_http_default_body_memory() */
} limit_t;

/* None is UINT64_MAX for every count that may be None. */
_Static_assert(PX_HTTP_NO_MIN_RATE == UINT64_MAX &&
                   PX_HTTP_NO_MEMORY_BOUND == UINT64_MAX,
               "a count's None is UINT64_MAX");

/* In the order of the fields they fill, see read_limits. */
static const limit_t limits[] = {
    {"max_header_size", false, false, 16384},
    {"max_uri_size", false, false, 8192},
    {"max_body_size", false, true, 1048576},
    {"header_timeout", true, false, 10.0},
    {"body_timeout", true, false, 30.0},
    {"keepalive_timeout", true, false, 5.0},
    {"min_body_rate", false, true, 1024},
    {"max_body_memory", false, true, 0},
};

#define LIMIT_COUNT (sizeof(limits) / sizeof(limits[0]))

static int config_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_http_config_t *cfg = (pxpy_http_config_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(cfg->handle);
    Py_VISIT(cfg->request_type);
    Py_VISIT(cfg->exact);
    Py_VISIT(cfg->handlers);
    Py_VISIT(cfg->to_wire);
    Py_VISIT(cfg->failed);
    return 0;
}

static int config_clear(PyObject *op)
{
    pxpy_http_config_t *cfg = (pxpy_http_config_t *)op;
    Py_CLEAR(cfg->handle);
    Py_CLEAR(cfg->request_type);
    Py_CLEAR(cfg->exact);
    Py_CLEAR(cfg->handlers);
    Py_CLEAR(cfg->to_wire);
    Py_CLEAR(cfg->failed);
    return 0;
}

static void config_dealloc(PyObject *op)
{
    pxpy_http_config_t *cfg = (pxpy_http_config_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    config_clear(op);
    if (cfg->server != NULL)
        px_http_server_free(cfg->server);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot config_slots[] = {
    {Py_tp_doc, "What register() read from an HttpProtocol subclass."},
    {Py_tp_traverse, config_traverse},
    {Py_tp_clear, config_clear},
    {Py_tp_dealloc, config_dealloc},
    {0, NULL},
};

static PyType_Spec config_spec = {
    .name = "pyparallel._core.HttpConfig",
    .basicsize = sizeof(pxpy_http_config_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = config_slots,
};

/* A byte limit: an int >= 1, or None when the limit allows none. */
static int read_size(PyObject *cls, const limit_t *l, PyObject *v,
                     uint64_t *out)
{
    if (v == Py_None && l->may_be_none) {
        *out = UINT64_MAX;
        return 0;
    }
    if (!PyLong_Check(v) || PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%.200s.%s must be an int, not %.100s",
                     ((PyTypeObject *)cls)->tp_name, l->name,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(v);
    if ((n == (unsigned long long)-1 && PyErr_Occurred()) || n < 1 ||
        n > SIZE_MAX / 4) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "%.200s.%s must be a positive int "
                     "that fits in memory, not %R",
                     ((PyTypeObject *)cls)->tp_name, l->name, v);
        return -1;
    }
    *out = n;
    return 0;
}

/* A timeout: seconds > 0, or None for none. */
static int read_timeout(PyObject *cls, const limit_t *l, PyObject *v,
                        uint64_t *out)
{
    if (v == Py_None) {
        *out = PX_HTTP_NO_TIMEOUT;
        return 0;
    }
    double seconds = PyFloat_AsDouble(v);
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    if (!(seconds > 0.0) || !isfinite(seconds) || seconds > 1e9) {
        PyErr_Format(PyExc_ValueError,
                     "%.200s.%s must be a number of seconds "
                     "> 0 (or None: no timeout), not %R",
                     ((PyTypeObject *)cls)->tp_name, l->name, v);
        return -1;
    }
    *out = (uint64_t)(seconds * 1e9);
    if (*out == 0)
        *out = 1;
    return 0;
}

static int read_limits(PyObject *cls, px_http_server_options_t *opts)
{
    uint64_t values[LIMIT_COUNT];
    for (size_t i = 0; i < LIMIT_COUNT; i++) {
        PyObject *v = PyObject_GetAttrString(cls, limits[i].name);
        if (v == NULL)
            return -1;
        int rc = limits[i].is_timeout
                     ? read_timeout(cls, &limits[i], v, &values[i])
                     : read_size(cls, &limits[i], v, &values[i]);
        Py_DECREF(v);
        if (rc < 0)
            return -1;
    }
    opts->limits.max_header_size = (size_t)values[0];
    opts->limits.max_uri_size = (size_t)values[1];
    opts->limits.max_body_size = values[2];
    opts->header_timeout_ns = values[3];
    opts->body_timeout_ns = values[4];
    opts->keepalive_timeout_ns = values[5];
    opts->min_body_rate = values[6];
    opts->max_body_memory = values[7];
    return 0;
}

/* stream_request_body: a bool. */
static int read_stream_body(PyObject *cls, px_http_server_options_t *opts)
{
    PyObject *v = PyObject_GetAttrString(cls, "stream_request_body");
    if (v == NULL)
        return -1;
    int rc = PyBool_Check(v) ? 0 : -1;
    if (rc < 0)
        PyErr_Format(PyExc_TypeError,
                     "%.200s.stream_request_body must be a bool, not %.100s",
                     ((PyTypeObject *)cls)->tp_name, Py_TYPE(v)->tp_name);
    opts->stream_request_body = v == Py_True;
    Py_DECREF(v);
    return rc;
}

/* forwarded_allow_ips: a str of addresses and networks separated by
 * commas, an iterable of them, or None; *text (a new reference, or NULL
 * for none) keeps the comma-separated list alive for the server's
 * parsing, which says whether each entry is an address. */
static int read_forwarded(PyObject *cls, PyObject **text)
{
    *text = NULL;
    PyObject *v = PyObject_GetAttrString(cls, "forwarded_allow_ips");
    if (v == NULL)
        return -1;
    if (v == Py_None) {
        Py_DECREF(v);
        return 0;
    }
    if (PyUnicode_Check(v)) {
        *text = PyUnicode_AsUTF8String(v);
    } else {
        PyObject *sep = PyUnicode_FromString(",");
        PyObject *joined = sep ? PyUnicode_Join(sep, v) : NULL;
        Py_XDECREF(sep);
        if (joined == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError,
                         "%.200s.forwarded_allow_ips must be a str, an "
                         "iterable of str or None, not %R",
                         ((PyTypeObject *)cls)->tp_name, v);
        }
        *text = joined ? PyUnicode_AsUTF8String(joined) : NULL;
        Py_XDECREF(joined);
    }
    Py_DECREF(v);
    return *text ? 0 : -1;
}

/* The _px_handle stored in the class or a base, unbound; NULL with an
 * exception when there is none. */
static PyObject *find_handle(pxpy_http_t *h, PyObject *cls)
{
    PyObject *mro = ((PyTypeObject *)cls)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *dict =
            PyType_GetDict((PyTypeObject *)PyTuple_GET_ITEM(mro, i));
        if (dict == NULL)
            continue;
        PyObject *value;
        int rc = PyDict_GetItemRef(dict, h->str_px_handle, &value);
        Py_DECREF(dict);
        if (rc < 0)
            return NULL;
        if (rc > 0)
            return value;
    }
    PyErr_Format(PyExc_TypeError,
                 "%.200s must define _px_handle(self, request) to serve HTTP "
                 "(subclass pyparallel.http.HttpServer, which does)",
                 ((PyTypeObject *)cls)->tp_name);
    return NULL;
}

/* The class's _px_request_class: HttpRequest or a subclass of it that adds
 * no slots (the C layer allocates its instances itself). */
static int read_request_class(pxpy_http_t *h, PyObject *cls,
                              pxpy_http_config_t *cfg)
{
    PyObject *v = PyObject_GetAttrString(cls, "_px_request_class");
    if (v == NULL)
        return -1;
    if (!PyType_Check(v) ||
        !PyType_IsSubtype((PyTypeObject *)v, h->request_type) ||
        ((PyTypeObject *)v)->tp_basicsize != h->request_type->tp_basicsize ||
        ((PyTypeObject *)v)->tp_dictoffset != 0 ||
        ((PyTypeObject *)v)->tp_weaklistoffset != 0) {
        PyErr_Format(PyExc_TypeError,
                     "%.200s._px_request_class must be "
                     "pyparallel._core.HttpRequest or a subclass of it with "
                     "__slots__ = (), not %R",
                     ((PyTypeObject *)cls)->tp_name, v);
        Py_DECREF(v);
        return -1;
    }
    cfg->request_type = (PyTypeObject *)v;
    return 0;
}

/* cls._px_dispatch(): None, or (exact, handlers, to_wire, failed) for the
 * exact routes C serves itself (see the top of this file). A class without
 * _px_dispatch has every request go to _px_handle. */
static int read_dispatch(PyObject *cls, pxpy_http_config_t *cfg)
{
    PyObject *method;
    int rc = PyObject_GetOptionalAttrString(cls, "_px_dispatch", &method);
    if (rc <= 0)
        return rc;
    PyObject *table = PyObject_CallNoArgs(method);
    Py_DECREF(method);
    if (table == NULL)
        return -1;
    if (table == Py_None) {
        Py_DECREF(table);
        return 0;
    }
    if (!PyTuple_Check(table) || PyTuple_GET_SIZE(table) != 4 ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(table, 0)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(table, 1)) ||
        !PyCallable_Check(PyTuple_GET_ITEM(table, 2)) ||
        !PyCallable_Check(PyTuple_GET_ITEM(table, 3))) {
        PyErr_Format(PyExc_TypeError,
                     "%.200s._px_dispatch() must return None or (exact "
                     "routes dict, handlers tuple, to_wire, failed), not %R",
                     ((PyTypeObject *)cls)->tp_name, table);
        Py_DECREF(table);
        return -1;
    }
    cfg->exact = Py_NewRef(PyTuple_GET_ITEM(table, 0));
    cfg->handlers = Py_NewRef(PyTuple_GET_ITEM(table, 1));
    cfg->to_wire = Py_NewRef(PyTuple_GET_ITEM(table, 2));
    cfg->failed = Py_NewRef(PyTuple_GET_ITEM(table, 3));
    Py_DECREF(table);
    return 0;
}

int pxpy_http_config_new(pxpy_state *st, PyObject *cls, PyObject **out)
{
    *out = NULL;
    pxpy_http_t *h = st->http;
    int is_http = PyObject_IsSubclass(cls, (PyObject *)h->protocol_type);
    if (is_http <= 0)
        return is_http;
    px_http_server_options_t opts = {.on_request = pxpy_http_on_request};
    PyObject *forwarded = NULL;
    if (read_limits(cls, &opts) < 0 || read_stream_body(cls, &opts) < 0 ||
        read_forwarded(cls, &forwarded) < 0)
        return -1;
    opts.forwarded_allow_ips = forwarded ? PyBytes_AS_STRING(forwarded) : NULL;
    pxpy_http_config_t *cfg =
        PyObject_GC_New(pxpy_http_config_t, h->config_type);
    if (cfg == NULL) {
        Py_XDECREF(forwarded);
        return -1;
    }
    cfg->st = st;
    cfg->server = NULL;
    cfg->handle = NULL;
    cfg->request_type = NULL;
    cfg->exact = cfg->handlers = cfg->to_wire = cfg->failed = NULL;
    PyObject_GC_Track(cfg);
    cfg->handle = find_handle(h, cls);
    if (cfg->handle == NULL || read_request_class(h, cls, cfg) < 0 ||
        read_dispatch(cls, cfg) < 0)
        goto error;
    cfg->handle_is_function = PyFunction_Check(cfg->handle);
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        goto error;
    opts.data = cfg;
    int rc = px_http_server_new(loop, &opts, &cfg->server);
    if (rc == -EINVAL && forwarded != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "%.200s.forwarded_allow_ips: '%.200s' is not a list of "
                     "IP addresses and networks (a.b.c.d, ::1, 10.0.0.0/8) "
                     "or *",
                     ((PyTypeObject *)cls)->tp_name,
                     PyBytes_AS_STRING(forwarded));
        goto error;
    }
    if (rc < 0) {
        pxpy_raise_engine_error(st, rc, "starting the HTTP server");
        goto error;
    }
    Py_XDECREF(forwarded);
    *out = (PyObject *)cfg;
    return 0;
error:
    Py_XDECREF(forwarded);
    Py_DECREF(cfg);
    return -1;
}

/* ---- the HttpProtocol base class ---------------------------------------- */

static int protocol_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_http_protocol_t *self = (pxpy_http_protocol_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->config);
    Py_VISIT(self->client);
    Py_VISIT(self->stream);
    Py_VISIT(self->body);
    return 0;
}

static int protocol_clear(PyObject *op)
{
    pxpy_http_protocol_t *self = (pxpy_http_protocol_t *)op;
    Py_CLEAR(self->config);
    Py_CLEAR(self->client);
    Py_CLEAR(self->stream);
    Py_CLEAR(self->body);
    return 0;
}

static void protocol_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    protocol_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *protocol_new(PyTypeObject *type, PyObject *args,
                              PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    pxpy_http_protocol_t *self =
        (pxpy_http_protocol_t *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->hc = NULL;
        self->config = NULL;
        self->client = NULL;
        self->transport = NULL;
        self->ex = NULL;
        self->request_seq = 0;
        self->callback_thread = 0;
        self->stream = NULL;
        self->body = NULL;
        self->input_ended = false;
    }
    return (PyObject *)self;
}

static PyMethodDef protocol_methods[] = {
    {"_px_stream", pxpy_http_protocol_stream, METH_NOARGS,
     "_px_stream($self, /)\n--\n\n"
     "The HttpStream of the request being handled (made on first use): "
     "a handler that asks for it answers through it, and returns it."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot protocol_slots[] = {
    {Py_tp_doc,
     "HttpProtocol()\n--\n\n"
     "Base class of HTTP protocols (pyparallel.http.HttpServer). Register a "
     "subclass with px.register(transport, cls): the C layer parses and "
     "frames HTTP/1.1 and calls _px_handle(request) for each request, on "
     "the connection's instance (one per connection, made without "
     "arguments). _px_handle returns (status, fields, body), bytes or "
     "str (200, text/plain; str as UTF-8 with charset=utf-8) or a "
     "FileResponse. The class attributes max_header_size, max_uri_size, "
     "max_body_size, max_body_memory (bytes), min_body_rate (bytes/s), "
     "header_timeout, body_timeout, keepalive_timeout (seconds, None: "
     "none), stream_request_body (True: the handler is called once the "
     "head is complete, and reads the body as it arrives) and "
     "forwarded_allow_ips (the proxies whose X-Forwarded-For, "
     "X-Forwarded-Proto and Forwarded fields are believed) are read at "
     "register()."},
    {Py_tp_new, protocol_new},
    {Py_tp_methods, protocol_methods},
    {Py_tp_traverse, protocol_traverse},
    {Py_tp_clear, protocol_clear},
    {Py_tp_dealloc, protocol_dealloc},
    {0, NULL},
};

static PyType_Spec protocol_spec = {
    .name = "pyparallel._core.HttpProtocol",
    .basicsize = sizeof(pxpy_http_protocol_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = protocol_slots,
};

/* The defaults, as class attributes of HttpProtocol: the limits, and
 * requests made as plain HttpRequest objects. */
static int add_class_defaults(pxpy_http_t *h, PyTypeObject *type)
{
    PyObject *dict = PyType_GetDict(type);
    if (dict == NULL)
        return -1;
    int rc = PyDict_SetItemString(dict, "_px_request_class",
                                  (PyObject *)h->request_type);
    if (rc == 0)
        rc = PyDict_SetItemString(dict, "stream_request_body", Py_False);
    PyObject *loopback = rc == 0 ? PyUnicode_FromString("127.0.0.1") : NULL;
    rc = loopback ? PyDict_SetItemString(dict, "forwarded_allow_ips", loopback)
                  : -1;
    Py_XDECREF(loopback);
    for (size_t i = 0; i < LIMIT_COUNT && rc == 0; i++) {
        double value = limits[i].default_value;
        if (value == 0)
            value = (double)px_http_default_body_memory();
        PyObject *v = limits[i].is_timeout ? PyFloat_FromDouble(value)
                                           : PyLong_FromDouble(value);
        rc = v ? PyDict_SetItemString(dict, limits[i].name, v) : -1;
        Py_XDECREF(v);
    }
    Py_DECREF(dict);
    PyType_Modified(type);
    return rc;
}

/* ---- protocol.c's hooks ------------------------------------------------- */

static pxpy_http_protocol_t *http_instance(pxpy_transport_t *t)
{
    PyObject *inst = t->instance;
    if (inst == NULL || !PyObject_TypeCheck(inst, t->st->http->protocol_type))
        return NULL;
    return (pxpy_http_protocol_t *)inst;
}

int pxpy_http_open(pxpy_transport_t *t, px_conn_t *conn, PyObject *config)
{
    pxpy_http_protocol_t *self = http_instance(t);
    if (self == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "the protocol made a %.100s, not an HttpProtocol "
                     "instance (does __new__ return something else?)",
                     Py_TYPE(t->instance)->tp_name);
        return -1;
    }
    pxpy_http_config_t *cfg = (pxpy_http_config_t *)config;
    Py_XSETREF(self->config, (pxpy_http_config_t *)Py_NewRef(config));
    self->transport = t;
    int rc = px_http_conn_start(cfg->server, conn, self, &self->hc);
    if (rc < 0) {
        self->hc = NULL;
        pxpy_raise_engine_error(t->st, rc, "serving an HTTP connection");
        return -1;
    }
    return 0;
}

void pxpy_http_data(pxpy_transport_t *t, const char *data, size_t len)
{
    pxpy_http_protocol_t *self = http_instance(t);
    if (self != NULL && self->hc != NULL)
        px_http_conn_input(self->hc, data, len);
}

void pxpy_http_eof(pxpy_transport_t *t)
{
    pxpy_http_protocol_t *self = http_instance(t);
    if (self != NULL && self->hc != NULL)
        px_http_conn_eof(self->hc);
    if (self != NULL) {
        self->input_ended = true;
        pxpy_http_stream_conn_ended(self);
    }
}

void pxpy_http_closed(pxpy_transport_t *t)
{
    pxpy_http_protocol_t *self = http_instance(t);
    if (self != NULL && self->hc != NULL) {
        px_http_conn_closed(self->hc);
        self->hc = NULL;
    }
    if (self != NULL)
        pxpy_http_stream_conn_closed(self);
}

/* ---- module part -------------------------------------------------------- */

int pxpy_http_exec(PyObject *module, pxpy_state *st)
{
    pxpy_http_t *h = PyMem_Calloc(1, sizeof(*h));
    if (h == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->http = h;
    h->str_px_handle = PyUnicode_InternFromString("_px_handle");
    if (h->str_px_handle == NULL)
        return -1;
    h->config_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &config_spec, NULL);
    h->protocol_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &protocol_spec, NULL);
    if (h->config_type == NULL || h->protocol_type == NULL ||
        pxpy_http_types_exec(module, st) < 0 ||
        pxpy_http_stream_exec(module, st) < 0 ||
        pxpy_http_body_exec(module, st) < 0 ||
        pxpy_http_ops_exec(module, st) < 0 ||
        add_class_defaults(h, h->protocol_type) < 0 ||
        PyModule_AddType(module, h->protocol_type) < 0)
        return -1;
    return 0;
}

int pxpy_http_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    pxpy_http_t *h = st->http;
    if (h == NULL)
        return 0;
    Py_VISIT(h->protocol_type);
    Py_VISIT(h->config_type);
    Py_VISIT(h->stream_type);
    Py_VISIT(h->body_type);
    return pxpy_http_types_traverse(st, visit, arg);
}

void pxpy_http_free(pxpy_state *st)
{
    pxpy_http_t *h = st->http;
    if (h == NULL)
        return;
    pxpy_http_types_free(st);
    Py_CLEAR(h->protocol_type);
    Py_CLEAR(h->config_type);
    Py_CLEAR(h->stream_type);
    Py_CLEAR(h->body_type);
    Py_CLEAR(h->str_px_handle);
    PyMem_Free(h);
    st->http = NULL;
}
