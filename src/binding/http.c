/*
 * http.c - the HTTP server in the binding: the _core.HttpProtocol base
 * class, the per-class configuration register() reads from it, the request
 * callback that calls _px_handle, and the framing of what it returns. The
 * request and file-response types are in http_types.c.
 *
 * Everything HTTP happens in the engine's HTTP layer (px_http_server.h);
 * Python runs only the handler. register(transport, cls) with a subclass
 * of HttpProtocol makes protocol.c hand the connection's events to this
 * file: pxpy_http_open when the instance exists, pxpy_http_data for each
 * on_data, pxpy_http_eof when the client half-closed, pxpy_http_closed
 * before connection_lost. For each request, on_request builds a
 * request (of the class's _px_request_class, a subclass of
 * _core.HttpRequest), calls instance._px_handle(request), and answers with
 * what it returned: a (status, fields, body) tuple or bytes or str (200,
 * text/plain), framed in C, or a _core.FileResponse, sent from the file
 * (conditionals and ranges in C, the bytes with sendfile).
 *
 * The exact routes of a pyparallel.http.HttpServer are served without
 * _px_handle: its _px_dispatch() gives the route table, and a request whose
 * decoded path and method are in it goes straight to the handler. That
 * skips one Python frame per request, which on the plaintext benchmark was
 * a fifth of the server's CPU. Everything else (405, pattern routes, static
 * files, 404) still goes through _px_handle.
 *
 * The answer is always given inside the callback, so the engine never
 * continues a connection on another thread: the instance and the transport
 * outlive every callback of their connection.
 *
 * Field names the server writes itself (Content-Length, Transfer-Encoding,
 * Date, Connection) are dropped from a handler's fields rather than
 * refused; "Connection: close" closes the connection after the response. A
 * field that could inject a line (CR, LF, other controls, a name that is
 * not a token) makes the response a 500, with the error logged: the handler
 * asked for something the server must not send.
 */
#include "binding.h"
#include "http_binding.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Header fields converted on the stack before allocating. */
#define STACK_FIELDS 16

static const px_http_header_t text_plain = {"Content-Type", 12,
                                            "text/plain; charset=utf-8", 25};
/* What a handler's bytes are sent as (pyparallel.http's convention). */
static const px_http_header_t text_plain_bytes = {"Content-Type", 12,
                                                  "text/plain", 10};

/* ---- the configuration of a registered class ---------------------------- */

typedef struct {
    const char *name;
    bool is_timeout; /* seconds (a float), else a byte count */
    double default_value;
} limit_t;

/* In the order of the fields they fill, see read_limits. */
static const limit_t limits[] = {
    {"max_header_size", false, 16384}, {"max_uri_size", false, 8192},
    {"max_body_size", false, 1048576}, {"header_timeout", true, 10.0},
    {"body_timeout", true, 30.0},      {"keepalive_timeout", true, 5.0},
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

/* A byte limit: an int >= 1 (max_body_size also None: unlimited). */
static int read_size(PyObject *cls, const limit_t *l, PyObject *v,
                     uint64_t *out)
{
    if (v == Py_None && strcmp(l->name, "max_body_size") == 0) {
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
    return 0;
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

static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req);

int pxpy_http_config_new(pxpy_state *st, PyObject *cls, PyObject **out)
{
    *out = NULL;
    pxpy_http_t *h = st->http;
    int is_http = PyObject_IsSubclass(cls, (PyObject *)h->protocol_type);
    if (is_http <= 0)
        return is_http;
    px_http_server_options_t opts = {.on_request = on_request};
    if (read_limits(cls, &opts) < 0)
        return -1;
    pxpy_http_config_t *cfg =
        PyObject_GC_New(pxpy_http_config_t, h->config_type);
    if (cfg == NULL)
        return -1;
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
    if (rc < 0) {
        pxpy_raise_engine_error(st, rc, "starting the HTTP server");
        goto error;
    }
    *out = (PyObject *)cfg;
    return 0;
error:
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
    return 0;
}

static int protocol_clear(PyObject *op)
{
    pxpy_http_protocol_t *self = (pxpy_http_protocol_t *)op;
    Py_CLEAR(self->config);
    Py_CLEAR(self->client);
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
    }
    return (PyObject *)self;
}

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
     "max_body_size (bytes) and header_timeout, body_timeout, "
     "keepalive_timeout (seconds, None: none) are read at register()."},
    {Py_tp_new, protocol_new},
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
    for (size_t i = 0; i < LIMIT_COUNT && rc == 0; i++) {
        PyObject *v = limits[i].is_timeout
                          ? PyFloat_FromDouble(limits[i].default_value)
                          : PyLong_FromDouble(limits[i].default_value);
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
}

void pxpy_http_closed(pxpy_transport_t *t)
{
    pxpy_http_protocol_t *self = http_instance(t);
    if (self != NULL && self->hc != NULL) {
        px_http_conn_closed(self->hc);
        self->hc = NULL;
    }
}

/* ---- answering ---------------------------------------------------------- */

/* Header fields converted from Python, and what keeps their bytes alive. */
typedef struct {
    px_http_header_t stack[STACK_FIELDS];
    px_http_header_t *fields;
    size_t count, cap;
    PyObject *owners; /* a list of encoded values, or NULL */
} fields_t;

static void fields_init(fields_t *f)
{
    f->fields = f->stack;
    f->count = 0;
    f->cap = STACK_FIELDS;
    f->owners = NULL;
}

static void fields_free(fields_t *f)
{
    if (f->fields != f->stack)
        PyMem_Free(f->fields);
    Py_XDECREF(f->owners);
}

static int fields_reserve(fields_t *f, size_t extra)
{
    if (f->count + extra <= f->cap)
        return 0;
    size_t cap = (f->count + extra) * 2;
    px_http_header_t *grown = PyMem_Malloc(cap * sizeof(*grown));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(grown, f->fields, f->count * sizeof(*grown));
    if (f->fields != f->stack)
        PyMem_Free(f->fields);
    f->fields = grown;
    f->cap = cap;
    return 0;
}

/* The bytes of a field name or value: ASCII as it is, other text as
 * Latin-1 (a value outside it is an error). */
static const char *field_text(fields_t *f, PyObject *s, size_t *len)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError,
                     "header fields must be (str, str) pairs, not with a "
                     "%.100s",
                     Py_TYPE(s)->tp_name);
        return NULL;
    }
    if (PyUnicode_IS_ASCII(s)) {
        *len = (size_t)PyUnicode_GET_LENGTH(s);
        return PyUnicode_DATA(s);
    }
    PyObject *encoded = PyUnicode_AsLatin1String(s);
    if (encoded == NULL)
        return NULL;
    if (f->owners == NULL && (f->owners = PyList_New(0)) == NULL) {
        Py_DECREF(encoded);
        return NULL;
    }
    int rc = PyList_Append(f->owners, encoded);
    Py_DECREF(encoded);
    if (rc < 0)
        return NULL;
    *len = (size_t)PyBytes_GET_SIZE(encoded);
    return PyBytes_AS_STRING(encoded);
}

/* Appends the fields of a list or tuple of (name, value) pairs (or None). */
static int fields_add(fields_t *f, PyObject *seq)
{
    if (seq == Py_None)
        return 0;
    if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError,
                     "header fields must be a list of (name, value) pairs or "
                     "None, not %.100s",
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    /* A list cannot change under us: its items are only read, with
     * references held, and nothing here runs Python code. */
    PyObject *items = PySequence_Fast(seq, "header fields");
    if (items == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    int rc = fields_reserve(f, (size_t)n);
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(items, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "header fields must be (name, value) tuples, not "
                         "%.100R",
                         pair);
            rc = -1;
            break;
        }
        px_http_header_t *h = &f->fields[f->count];
        h->name = field_text(f, PyTuple_GET_ITEM(pair, 0), &h->name_len);
        h->value = h->name
                       ? field_text(f, PyTuple_GET_ITEM(pair, 1), &h->value_len)
                       : NULL;
        if (h->value == NULL)
            rc = -1;
        else
            f->count++;
    }
    Py_DECREF(items);
    return rc;
}

static int response_error(int rc)
{
    if (rc == -ENOMEM) {
        PyErr_NoMemory();
        return -1;
    }
    const char *why =
        rc <= PX_HTTP_INCOMPLETE ? px_http_strerror(rc) : px_strerror(rc);
    PyErr_Format(PyExc_ValueError, "cannot send the response: %s", why);
    return -1;
}

/* Answers with the result of px_http_respond*: 0 when the exchange is
 * done, -1 with an exception when it is still open. */
static int responded(int rc)
{
    if (rc == 0 || rc == PX_ECLOSED)
        return 0;
    return response_error(rc);
}

static int status_of(PyObject *v, int *status)
{
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "the status must be an int, not %.100s",
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow;
    long s = PyLong_AsLongAndOverflow(v, &overflow);
    if (s == -1 && PyErr_Occurred())
        return -1;
    *status = overflow || s < 0 || s > 999 ? 0 : (int)s;
    return 0;
}

/* (status, fields, body). */
static int answer_tuple(px_http_exchange_t *ex, PyObject *result)
{
    if (PyTuple_GET_SIZE(result) != 3) {
        PyErr_Format(PyExc_TypeError,
                     "_px_handle must return (status, fields, body), not a "
                     "tuple of %zd",
                     PyTuple_GET_SIZE(result));
        return -1;
    }
    int status;
    if (status_of(PyTuple_GET_ITEM(result, 0), &status) < 0)
        return -1;
    fields_t f;
    fields_init(&f);
    if (fields_add(&f, PyTuple_GET_ITEM(result, 1)) < 0) {
        fields_free(&f);
        return -1;
    }
    PyObject *body = PyTuple_GET_ITEM(result, 2);
    int rc;
    if (PyBytes_Check(body)) {
        rc = px_http_respond(ex, status, f.fields, f.count,
                             PyBytes_AS_STRING(body),
                             (size_t)PyBytes_GET_SIZE(body));
    } else if (PyUnicode_Check(body)) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(body, &len);
        if (utf8 == NULL) {
            fields_free(&f);
            return -1;
        }
        rc = px_http_respond(ex, status, f.fields, f.count, utf8, (size_t)len);
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
            fields_free(&f);
            PyErr_Format(PyExc_TypeError,
                         "the body must be bytes, bytearray, memoryview or "
                         "str, not %.100s",
                         Py_TYPE(body)->tp_name);
            return -1;
        }
        rc = px_http_respond(ex, status, f.fields, f.count, view.buf,
                             (size_t)view.len);
        PyBuffer_Release(&view);
    }
    fields_free(&f);
    return responded(rc);
}

/* Answers a file that cannot be opened: 404 when it is missing, 403 when
 * it may not be read; -1 (an OSError) otherwise. */
static int answer_unopened(px_http_exchange_t *ex, int error, PyObject *path)
{
    int status;
    switch (error) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
    case ELOOP:
    case EISDIR:
        status = 404;
        break;
    case EACCES:
    case EPERM:
        status = 403;
        break;
    default:
        errno = error;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    const char *reason = status == 404 ? "Not Found\n" : "Forbidden\n";
    return responded(
        px_http_respond(ex, status, &text_plain, 1, reason, strlen(reason)));
}

static int answer_file(px_http_exchange_t *ex,
                       const px_http_server_request_t *req, PyObject *result)
{
    pxpy_file_response_t *file = (pxpy_file_response_t *)result;
    if (file->path == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "a FileResponse made without __init__");
        return -1;
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(file->path, &path))
        return -1;
    int fd, error = 0;
    struct stat st;
    Py_BEGIN_ALLOW_THREADS
        /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
        fd = open(PyBytes_AS_STRING(path),
                  O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        error = errno;
    else if (fstat(fd, &st) < 0)
        error = errno;
    else if (!S_ISREG(st.st_mode))
        error = EISDIR;
    Py_END_ALLOW_THREADS if (error != 0)
    {
        if (fd >= 0)
            close(fd);
        int rc = answer_unopened(ex, error, file->path);
        Py_DECREF(path);
        return rc;
    }
    Py_DECREF(path);

    px_http_file_plan_t plan;
    px_http_file_plan(req, &st, file->status, &plan);
    fields_t f;
    fields_init(&f);
    int rc = fields_add(&f, file->headers);
    if (rc == 0 && file->content_type != Py_None)
        rc = fields_reserve(&f, 1);
    if (rc == 0 && file->content_type != Py_None) {
        px_http_header_t *h = &f.fields[f.count];
        h->name = "Content-Type";
        h->name_len = 12;
        h->value = field_text(&f, file->content_type, &h->value_len);
        rc = h->value ? (f.count++, 0) : -1;
    }
    if (rc == 0)
        rc = fields_reserve(&f, plan.num_headers);
    if (rc == 0) {
        memcpy(f.fields + f.count, plan.headers,
               plan.num_headers * sizeof(plan.headers[0]));
        f.count += plan.num_headers;
        rc = responded(px_http_respond_file(ex, plan.status, f.fields, f.count,
                                            fd, plan.offset, plan.length));
    }
    close(fd);
    fields_free(&f);
    return rc;
}

/* A handler's bytes or str, as they are: 200, text/plain (str: UTF-8).
 * Framed here rather than in Python, because on the plaintext path the
 * call and the tuple of to_wire() cost as much as the handler itself. */
static int answer_text(px_http_exchange_t *ex, PyObject *result)
{
    if (PyBytes_CheckExact(result))
        return responded(px_http_respond(ex, 200, &text_plain_bytes, 1,
                                         PyBytes_AS_STRING(result),
                                         (size_t)PyBytes_GET_SIZE(result)));
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(result, &len);
    if (utf8 == NULL)
        return -1;
    return responded(
        px_http_respond(ex, 200, &text_plain, 1, utf8, (size_t)len));
}

static int answer(pxpy_http_config_t *cfg, px_http_exchange_t *ex,
                  const px_http_server_request_t *req, PyObject *result)
{
    if (PyTuple_Check(result))
        return answer_tuple(ex, result);
    if (PyBytes_CheckExact(result) || PyUnicode_CheckExact(result))
        return answer_text(ex, result);
    if (Py_IS_TYPE(result, cfg->st->http->file_type))
        return answer_file(ex, req, result);
    PyErr_Format(PyExc_TypeError,
                 "_px_handle must return (status, fields, body), bytes, str "
                 "or a FileResponse, not %.100s",
                 Py_TYPE(result)->tp_name);
    return -1;
}

/* The fallback when the handler failed: logged, answered 500. */
static void answer_failure(pxpy_http_config_t *cfg, px_http_exchange_t *ex,
                           PyObject *instance, const char *what)
{
    char where[256];
    PyOS_snprintf(where, sizeof(where), "%.150s.%s", Py_TYPE(instance)->tp_name,
                  what);
    pxpy_report_callback_error(cfg->st, where);
    static const char body[] = "Internal Server Error\n";
    int rc = px_http_respond(ex, 500, &text_plain, 1, body, sizeof(body) - 1);
    if (rc != 0 && rc != PX_ECLOSED)
        px_http_abort(ex);
}

static PyObject *client_address(pxpy_http_protocol_t *self)
{
    if (self->client == NULL) {
        pxpy_transport_t *t = self->transport;
        if (t != NULL && atomic_load(&t->have_addrs))
            self->client = Py_BuildValue("(si)", t->peer_host, t->peer_port);
        else
            self->client = Py_NewRef(Py_None);
    }
    return self->client;
}

/* The handler of the request's exact route, borrowed: 1 when there is
 * one, 0 when the table has none (_px_handle decides: 405, patterns, static
 * files, 404), -1 with an exception. Methods outside the parser's list are
 * left to _px_handle too. */
static int exact_handler(pxpy_http_config_t *cfg,
                         const px_http_server_request_t *req, PyObject *request,
                         PyObject **handler)
{
    if (req->head.method_id == PX_HTTP_METHOD_OTHER ||
        req->head.method_id > PX_HTTP_METHOD_PATCH)
        return 0;
    PyObject *path = pxpy_http_request_path(request);
    if (path == NULL)
        return -1;
    PyObject *methods, *index;
    int rc = PyDict_GetItemRef(cfg->exact, path, &methods);
    Py_DECREF(path);
    if (rc <= 0)
        return rc;
    rc = PyDict_Check(methods)
             ? PyDict_GetItemRef(
                   methods, cfg->st->http->methods[req->head.method_id], &index)
             : 0;
    Py_DECREF(methods);
    if (rc <= 0)
        return rc;
    Py_ssize_t i = PyLong_Check(index) ? PyLong_AsSsize_t(index) : -1;
    Py_DECREF(index);
    if (i < 0 || i >= PyTuple_GET_SIZE(cfg->handlers)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError,
                            "_px_dispatch(): a route's handler index is "
                            "outside the handlers tuple");
        return -1;
    }
    *handler = PyTuple_GET_ITEM(cfg->handlers, i);
    return 1;
}

/* Calls handler(instance, request) and converts what it returns as
 * _px_handle would: bytes and str as they are, anything else through
 * to_wire; an Exception through failed(instance, request, exc). */
static PyObject *call_handler(pxpy_http_config_t *cfg, PyObject *handler,
                              PyObject *instance, PyObject *request)
{
    PyObject *args[] = {instance, request, NULL};
    PyObject *result = PyObject_Vectorcall(handler, args, 2, NULL);
    if (result != NULL && !PyBytes_CheckExact(result) &&
        !PyUnicode_CheckExact(result))
        Py_SETREF(result, PyObject_CallOneArg(cfg->to_wire, result));
    /* Like _px_handle's "except Exception": BaseExceptions go by. */
    if (result == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        args[2] = PyErr_GetRaisedException();
        result = PyObject_Vectorcall(cfg->failed, args, 3, NULL);
        Py_DECREF(args[2]);
    }
    return result;
}

/* The engine's request callback: runs on a worker, attached (it is called
 * from protocol.c's on_data). */
static void on_request(px_http_exchange_t *ex,
                       const px_http_server_request_t *req)
{
    pxpy_http_protocol_t *self = px_http_exchange_conn_data(ex);
    pxpy_http_config_t *cfg = self->config;
    PyObject *client = client_address(self);
    PyObject *request =
        client ? pxpy_http_request_new(cfg->st, cfg->request_type, req, client)
               : NULL;
    PyObject *result = NULL;
    if (request != NULL) {
        PyObject *handler = NULL;
        int rc = cfg->exact ? exact_handler(cfg, req, request, &handler) : 0;
        if (rc > 0) {
            result = call_handler(cfg, handler, (PyObject *)self, request);
        } else if (rc == 0) {
            PyObject *args[] = {(PyObject *)self, request};
            result = cfg->handle_is_function
                         ? PyObject_Vectorcall(cfg->handle, args, 2, NULL)
                         : PyObject_VectorcallMethod(
                               cfg->st->http->str_px_handle, args, 2, NULL);
        }
        Py_DECREF(request);
    }
    if (result == NULL)
        answer_failure(cfg, ex, (PyObject *)self, "_px_handle");
    else if (answer(cfg, ex, req, result) < 0)
        answer_failure(cfg, ex, (PyObject *)self, "_px_handle's result");
    Py_XDECREF(result);
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
    Py_CLEAR(h->str_px_handle);
    PyMem_Free(h);
    st->http = NULL;
}
