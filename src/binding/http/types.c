/*
 * types.c - the objects the HTTP handler exchanges with C: the
 * request it receives (_core.HttpRequest) and the file answer it may return
 * (_core.FileResponse).
 *
 * An HttpRequest is one allocation: the object, the offsets of its fields
 * and a copy of the request head live in one block, so it stays valid after
 * the callback that made it (a handler may keep it) without pointing into
 * the engine's buffer. The body is a bytes object, or, for a body the C
 * layer streams (stream_request_body), an HttpBody (body.c) that `body`
 * reads whole on first use; the method, the version and the client address
 * are shared objects. The other attributes are made
 * from the copy on first access and cached, under the object's critical
 * section so that threads reading one request at once agree on the cache.
 *
 * pyparallel.http.Request subclasses it (with no slots of its own: the C
 * layer makes its instances directly, without running Python) and adds the
 * parsed query and the header mapping, which it keeps in the _query and
 * _headers members. Those two hold objects a handler may change (the
 * query dict), and Python-defined subclasses are always collected types,
 * so requests are tracked by the garbage collector like any container.
 */
#include "http/http_binding.h"
#include "http/request.h"

#include <stddef.h>
#include <string.h>

static PyObject *method_name(pxpy_http_t *h, const px_http_request_t *head)
{
    if (head->method_id != PX_HTTP_METHOD_OTHER &&
        head->method_id <= PX_HTTP_METHOD_PATCH)
        return Py_NewRef(h->methods[head->method_id]);
    return PyUnicode_DecodeLatin1(head->method, (Py_ssize_t)head->method_len,
                                  NULL);
}

PyObject *pxpy_http_request_new(pxpy_state *st, PyTypeObject *type,
                                const px_http_server_request_t *req,
                                PyObject *client, PyObject *body_source,
                                bool https)
{
    pxpy_http_t *h = st->http;
    size_t num_fields = req->head.num_headers;
    size_t extra = num_fields * sizeof(field_span_t) + req->raw_head_len;
    /* Offsets are 32-bit: heads are bounded by max_header_size. */
    if (req->raw_head_len > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "request head too large");
        return NULL;
    }
    /* tp_alloc zeroes the block, so the collector can visit it at once. */
    http_request_t *r =
        (http_request_t *)type->tp_alloc(type, (Py_ssize_t)extra);
    if (r == NULL)
        return NULL;
    r->version = Py_NewRef(h->versions[req->head.minor_version ? 1 : 0]);
    r->client = Py_NewRef(client);
    r->scheme = Py_NewRef(h->schemes[https ? 1 : 0]);
    r->keep_alive = Py_NewRef(req->keep_alive ? Py_True : Py_False);
    r->target = r->raw_path = r->path = r->query_string = r->fields = NULL;
    r->query_cache = r->headers_cache = NULL;
    r->num_fields = (uint32_t)num_fields;
    r->head_len = (uint32_t)req->raw_head_len;
    const char *head = req->raw_head;
    memcpy(HEAD(r), head, req->raw_head_len);
    for (size_t i = 0; i < num_fields; i++) {
        const px_http_header_t *f = &req->head.headers[i];
        FIELDS(r)
        [i] =
            (field_span_t){(uint32_t)(f->name - head), (uint32_t)f->name_len,
                           (uint32_t)(f->value - head), (uint32_t)f->value_len};
    }
    r->target_off = (uint32_t)(req->head.target - head);
    r->target_len = (uint32_t)req->head.target_len;
    bool path_in_head =
        req->path >= head && req->path < head + req->raw_head_len;
    r->path_off = path_in_head ? (uint32_t)(req->path - head) : 0;
    r->path_len = path_in_head ? (uint32_t)req->path_len : 0;
    r->query_off = req->query_len ? (uint32_t)(req->query - head) : 0;
    r->query_len = (uint32_t)req->query_len;
    r->method = method_name(h, &req->head);
    if (req->body_streamed)
        r->body_source = Py_NewRef(body_source);
    else
        r->body =
            PyBytes_FromStringAndSize(req->body, (Py_ssize_t)req->body_len);
    if (r->method == NULL || (r->body == NULL && r->body_source == NULL)) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static int request_traverse(PyObject *op, visitproc visit, void *arg)
{
    http_request_t *r = (http_request_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(r->client);
    Py_VISIT(r->body_source);
    Py_VISIT(r->fields);
    Py_VISIT(r->query_cache);
    Py_VISIT(r->headers_cache);
    return 0;
}

static int request_clear(PyObject *op)
{
    http_request_t *r = (http_request_t *)op;
    Py_CLEAR(r->method);
    Py_CLEAR(r->version);
    Py_CLEAR(r->client);
    Py_CLEAR(r->scheme);
    Py_CLEAR(r->body);
    Py_CLEAR(r->body_source);
    Py_CLEAR(r->keep_alive);
    Py_CLEAR(r->target);
    Py_CLEAR(r->raw_path);
    Py_CLEAR(r->path);
    Py_CLEAR(r->query_string);
    Py_CLEAR(r->fields);
    Py_CLEAR(r->query_cache);
    Py_CLEAR(r->headers_cache);
    return 0;
}

static void request_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    request_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* Text of the request target: visible ASCII, checked by the parser. */
static PyObject *ascii_text(const char *s, uint32_t len)
{
    PyObject *str = PyUnicode_New(len, 127);
    if (str != NULL)
        memcpy(PyUnicode_DATA(str), s, len);
    return str;
}

static PyObject *build_target(http_request_t *r)
{
    return ascii_text(HEAD(r) + r->target_off, r->target_len);
}

static PyObject *build_raw_path(http_request_t *r)
{
    if (r->path_len == 0)
        return PyUnicode_FromStringAndSize("/", 1);
    return ascii_text(HEAD(r) + r->path_off, r->path_len);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

static bool path_has_escapes(const http_request_t *r)
{
    return memchr(HEAD(r) + r->path_off, '%', r->path_len) != NULL;
}

/* The path with every %XX escape decoded (a '%' not followed by two hex
 * digits stays as it is), read as UTF-8 with U+FFFD for what is not:
 * urllib.parse.unquote's result. Routing looks this string up. Only for a
 * path with escapes: without, the path is raw_path's string. */
static PyObject *build_path(http_request_t *r)
{
    const char *raw = HEAD(r) + r->path_off;
    /* Decoding only shortens: the raw length bounds the result. */
    char *bytes = PyMem_Malloc(r->path_len);
    if (bytes == NULL)
        return PyErr_NoMemory();
    size_t n = 0;
    for (uint32_t i = 0; i < r->path_len; i++) {
        int hi, lo;
        if (raw[i] == '%' && i + 2 < r->path_len &&
            (hi = hex_value(raw[i + 1])) >= 0 &&
            (lo = hex_value(raw[i + 2])) >= 0) {
            bytes[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            bytes[n++] = raw[i];
        }
    }
    PyObject *path = PyUnicode_DecodeUTF8(bytes, (Py_ssize_t)n, "replace");
    PyMem_Free(bytes);
    return path;
}

static PyObject *build_query(http_request_t *r)
{
    return ascii_text(HEAD(r) + r->query_off, r->query_len);
}

PyObject *pxpy_http_field_pairs(const http_request_t *r,
                                pxpy_http_span_fn name_of,
                                pxpy_http_span_fn value_of)
{
    PyObject *list = PyList_New(r->num_fields);
    if (list == NULL)
        return NULL;
    const char *head = HEAD(r);
    for (uint32_t i = 0; i < r->num_fields; i++) {
        const field_span_t *f = &FIELDS(r)[i];
        PyObject *name = name_of(head + f->name_off, f->name_len);
        PyObject *value =
            name ? value_of(head + f->value_off, f->value_len) : NULL;
        PyObject *pair = value ? PyTuple_Pack(2, name, value) : NULL;
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, pair);
    }
    return list;
}

/* Field values may hold obs-text: Latin-1, as RFC 9110 §5.5 suggests. */
static PyObject *latin1_text(const char *s, uint32_t len)
{
    return PyUnicode_DecodeLatin1(s, len, NULL);
}

static PyObject *build_fields(http_request_t *r)
{
    return pxpy_http_field_pairs(r, ascii_text, latin1_text);
}

/* The cached attribute in *slot, made by build on first access. */
static PyObject *cached(http_request_t *r, PyObject **slot,
                        PyObject *(*build)(http_request_t *))
{
    PyObject *v;
    Py_BEGIN_CRITICAL_SECTION(r);
    v = *slot;
    if (v == NULL)
        v = *slot = build(r);
    Py_XINCREF(v);
    Py_END_CRITICAL_SECTION();
    return v;
}

static PyObject *get_target(PyObject *op, void *Py_UNUSED(c))
{
    http_request_t *r = (http_request_t *)op;
    return cached(r, &r->target, build_target);
}

static PyObject *get_raw_path(PyObject *op, void *Py_UNUSED(c))
{
    http_request_t *r = (http_request_t *)op;
    return cached(r, &r->raw_path, build_raw_path);
}

static PyObject *get_path(PyObject *op, void *Py_UNUSED(c))
{
    http_request_t *r = (http_request_t *)op;
    if (!path_has_escapes(r))
        return cached(r, &r->raw_path, build_raw_path);
    return cached(r, &r->path, build_path);
}

PyObject *pxpy_http_request_path(PyObject *request)
{
    return get_path(request, NULL);
}

PyObject *pxpy_http_request_method(PyObject *request)
{
    return ((http_request_t *)request)->method;
}

/* Who has the body. stream() and reader() take it once (TAKEN); `body`
 * reads a streamed one whole (READ) unless they took it first. */
enum { BODY_FREE = 0, BODY_TAKEN, BODY_READ };

static PyObject *get_body(PyObject *op, void *Py_UNUSED(c))
{
    http_request_t *r = (http_request_t *)op;
    PyObject *body = NULL, *source = NULL;
    int state = BODY_FREE;
    Py_BEGIN_CRITICAL_SECTION(r);
    body = Py_XNewRef(r->body);
    state = r->body_state;
    if (body == NULL && state == BODY_FREE) {
        r->body_state = BODY_READ;
        source = Py_NewRef(r->body_source);
    }
    Py_END_CRITICAL_SECTION();
    if (body != NULL)
        return body;
    if (source == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        state == BODY_TAKEN
                            ? "request.body: the body is being read through "
                              "request.stream() or request.reader(); read it "
                              "there"
                            : "request.body: another thread is reading the "
                              "body whole");
        return NULL;
    }
    /* Waits for the rest of the body, detached; without the critical
     * section, which a wait would suspend anyway. */
    body = pxpy_http_body_read_all(source);
    Py_DECREF(source);
    if (body == NULL)
        return NULL;
    Py_BEGIN_CRITICAL_SECTION(r);
    if (r->body == NULL)
        r->body = Py_NewRef(body);
    Py_END_CRITICAL_SECTION();
    return body;
}

/* The body for stream() or reader(), once: bytes when it is whole (a
 * buffered body, or a streamed one `body` read), else the HttpBody. */
static PyObject *take_body(PyObject *op, PyObject *Py_UNUSED(unused))
{
    http_request_t *r = (http_request_t *)op;
    PyObject *taken = NULL;
    int state;
    Py_BEGIN_CRITICAL_SECTION(r);
    state = r->body_state;
    if (state != BODY_TAKEN && (r->body != NULL || state == BODY_FREE)) {
        r->body_state = BODY_TAKEN;
        taken = Py_NewRef(r->body != NULL ? r->body : r->body_source);
    }
    Py_END_CRITICAL_SECTION();
    if (taken == NULL)
        PyErr_SetString(PyExc_RuntimeError,
                        state == BODY_TAKEN
                            ? "the request body was consumed already: "
                              "stream() and reader() may be called once per "
                              "request"
                            : "the request body is being read whole through "
                              "request.body");
    return taken;
}

static PyObject *get_query_string(PyObject *op, void *Py_UNUSED(c))
{
    http_request_t *r = (http_request_t *)op;
    return cached(r, &r->query_string, build_query);
}

/* A new list each time: a handler may change what it gets. */
static PyObject *get_fields(PyObject *op, void *Py_UNUSED(c))
{
    http_request_t *r = (http_request_t *)op;
    PyObject *fields = cached(r, &r->fields, build_fields);
    if (fields == NULL)
        return NULL;
    PyObject *copy = PyList_GetSlice(fields, 0, PyList_GET_SIZE(fields));
    Py_DECREF(fields);
    return copy;
}

static PyObject *request_repr(PyObject *op)
{
    http_request_t *r = (http_request_t *)op;
    PyObject *target = cached(r, &r->target, build_target);
    PyObject *name = target ? PyType_GetName(Py_TYPE(op)) : NULL;
    PyObject *repr =
        name ? PyUnicode_FromFormat("<%U %U %U>", name, r->method, target)
             : NULL;
    Py_XDECREF(name);
    Py_XDECREF(target);
    return repr;
}

static PyMemberDef request_members[] = {
    {"method", Py_T_OBJECT_EX, offsetof(http_request_t, method), Py_READONLY,
     "The method, as received (\"GET\", \"POST\", ...)."},
    {"version", Py_T_OBJECT_EX, offsetof(http_request_t, version), Py_READONLY,
     "\"HTTP/1.1\" or \"HTTP/1.0\"."},
    {"client", Py_T_OBJECT_EX, offsetof(http_request_t, client), Py_READONLY,
     "The client's (host, port), or the one a trusted proxy names "
     "(forwarded_allow_ips)."},
    {"scheme", Py_T_OBJECT_EX, offsetof(http_request_t, scheme), Py_READONLY,
     "\"http\", or \"https\" when a trusted proxy says the client used "
     "it."},
    {"keep_alive", Py_T_OBJECT_EX, offsetof(http_request_t, keep_alive),
     Py_READONLY, "Whether the connection stays open after the response."},
    {"_query", Py_T_OBJECT_EX, offsetof(http_request_t, query_cache), 0,
     "Storage for a subclass's parsed query."},
    {"_headers", Py_T_OBJECT_EX, offsetof(http_request_t, headers_cache), 0,
     "Storage for a subclass's header mapping."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef request_getset[] = {
    {"target", get_target, NULL,
     "The request target as received (path and query).", NULL},
    {"path", get_path, NULL,
     "The target's path, percent-decoded (UTF-8, U+FFFD where invalid).", NULL},
    {"raw_path", get_raw_path, NULL,
     "The target's path as received (not percent-decoded).", NULL},
    {"query_string", get_query_string, NULL,
     "What follows '?' in the target, as received (\"\" when none).", NULL},
    {"header_fields", get_fields, NULL,
     "The header fields: a new list of (name, value), in order, Latin-1.",
     NULL},
    {"body", get_body, NULL,
     "The body (bytes; a chunked body decoded). A streamed body "
     "(stream_request_body) is read whole on first use, waiting for it.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef request_methods[] = {
    {"_px_take_body", take_body, METH_NOARGS,
     "_px_take_body($self, /)\n--\n\n"
     "The body for stream() or reader(), once: bytes when it is whole, "
     "else the HttpBody it arrives through. RuntimeError the second time."},
    {"_px_asgi_scope",
     (PyCFunction)(void (*)(void))pxpy_http_request_asgi_scope, METH_FASTCALL,
     "_px_asgi_scope($self, type, asgi, scheme, root_path, server, "
     "extensions, /)\n--\n\n"
     "A new ASGI connection scope for this request (with its method for "
     "type \"http\"): the given values, and the ones the request has."},
    {"_px_asks_websocket", pxpy_http_request_asks_websocket, METH_NOARGS,
     "_px_asks_websocket($self, /)\n--\n\n"
     "Whether the request's first Upgrade field names websocket."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot request_slots[] = {
    {Py_tp_doc, "One HTTP request, as the C layer parsed it."},
    {Py_tp_dealloc, request_dealloc},
    {Py_tp_traverse, request_traverse},
    {Py_tp_clear, request_clear},
    {Py_tp_repr, request_repr},
    {Py_tp_members, request_members},
    {Py_tp_getset, request_getset},
    {Py_tp_methods, request_methods},
    {0, NULL},
};

static PyType_Spec request_spec = {
    .name = "pyparallel._core.HttpRequest",
    .basicsize = offsetof(http_request_t, data),
    .itemsize = 1,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = request_slots,
};

/* ---- FileResponse ------------------------------------------------------- */

static int file_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"path", "content_type", "status", "headers",
                                   NULL};
    pxpy_file_response_t *self = (pxpy_file_response_t *)op;
    PyObject *path, *content_type, *headers = Py_None;
    int status = 200;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|iO:FileResponse", kwlist,
                                     &path, &content_type, &status, &headers))
        return -1;
    if (content_type != Py_None && !PyUnicode_Check(content_type)) {
        PyErr_Format(PyExc_TypeError,
                     "content_type must be a str or None, not %.100s",
                     Py_TYPE(content_type)->tp_name);
        return -1;
    }
    if (status < 200 || status > 599) {
        PyErr_Format(PyExc_ValueError, "status must be within 200..599, not %d",
                     status);
        return -1;
    }
    if (headers != Py_None && !PyList_Check(headers) &&
        !PyTuple_Check(headers)) {
        PyErr_Format(PyExc_TypeError,
                     "headers must be a list of (name, value) pairs or None, "
                     "not %.100s",
                     Py_TYPE(headers)->tp_name);
        return -1;
    }
    PyObject *fspath = PyOS_FSPath(path);
    if (fspath == NULL)
        return -1;
    Py_XSETREF(self->path, fspath);
    Py_XSETREF(self->content_type, Py_NewRef(content_type));
    Py_XSETREF(self->headers, Py_NewRef(headers));
    self->status = status;
    return 0;
}

static int file_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_file_response_t *self = (pxpy_file_response_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->path);
    Py_VISIT(self->content_type);
    Py_VISIT(self->headers);
    return 0;
}

static int file_clear(PyObject *op)
{
    pxpy_file_response_t *self = (pxpy_file_response_t *)op;
    Py_CLEAR(self->path);
    Py_CLEAR(self->content_type);
    Py_CLEAR(self->headers);
    return 0;
}

static void file_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    file_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *file_repr(PyObject *op)
{
    pxpy_file_response_t *self = (pxpy_file_response_t *)op;
    return PyUnicode_FromFormat("<FileResponse %R %R status=%d>", self->path,
                                self->content_type, self->status);
}

static PyMemberDef file_members[] = {
    {"path", Py_T_OBJECT_EX, offsetof(pxpy_file_response_t, path), Py_READONLY,
     "The file's path."},
    {"content_type", Py_T_OBJECT_EX,
     offsetof(pxpy_file_response_t, content_type), Py_READONLY,
     "The Content-Type to send (None: none)."},
    {"status", Py_T_INT, offsetof(pxpy_file_response_t, status), Py_READONLY,
     "The status when the whole file is sent (conditionals and ranges "
     "apply to 200 only)."},
    {"headers", Py_T_OBJECT_EX, offsetof(pxpy_file_response_t, headers),
     Py_READONLY, "Further header fields, or None."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot file_slots[] = {
    {Py_tp_doc,
     "FileResponse(path, content_type, status=200, headers=None)\n--\n\n"
     "A response _px_handle may return: the file at path, sent by the C "
     "layer with sendfile. With status 200 it answers If-None-Match and "
     "If-Modified-Since (304) and one byte range (206, 416) itself, and "
     "adds ETag and Last-Modified. A missing file is answered 404, one "
     "that may not be read 403."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, file_init},
    {Py_tp_traverse, file_traverse},
    {Py_tp_clear, file_clear},
    {Py_tp_dealloc, file_dealloc},
    {Py_tp_repr, file_repr},
    {Py_tp_members, file_members},
    {0, NULL},
};

static PyType_Spec file_spec = {
    .name = "pyparallel._core.FileResponse",
    .basicsize = sizeof(pxpy_file_response_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = file_slots,
};

/* ---- module part -------------------------------------------------------- */

int pxpy_http_types_exec(PyObject *module, pxpy_state *st)
{
    pxpy_http_t *h = st->http;
    static const char *const methods[] = {
        [PX_HTTP_METHOD_GET] = "GET",
        [PX_HTTP_METHOD_HEAD] = "HEAD",
        [PX_HTTP_METHOD_POST] = "POST",
        [PX_HTTP_METHOD_PUT] = "PUT",
        [PX_HTTP_METHOD_DELETE] = "DELETE",
        [PX_HTTP_METHOD_OPTIONS] = "OPTIONS",
        [PX_HTTP_METHOD_TRACE] = "TRACE",
        [PX_HTTP_METHOD_PATCH] = "PATCH",
    };
    for (int i = PX_HTTP_METHOD_GET; i <= PX_HTTP_METHOD_PATCH; i++)
        if ((h->methods[i] = PyUnicode_InternFromString(methods[i])) == NULL)
            return -1;
    if ((h->versions[0] = PyUnicode_InternFromString("HTTP/1.0")) == NULL ||
        (h->versions[1] = PyUnicode_InternFromString("HTTP/1.1")) == NULL ||
        (h->schemes[0] = PyUnicode_InternFromString("http")) == NULL ||
        (h->schemes[1] = PyUnicode_InternFromString("https")) == NULL ||
        pxpy_http_asgi_init(h) < 0)
        return -1;
    h->request_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &request_spec, NULL);
    h->file_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &file_spec, NULL);
    if (h->request_type == NULL || h->file_type == NULL ||
        PyModule_AddType(module, h->request_type) < 0 ||
        PyModule_AddType(module, h->file_type) < 0)
        return -1;
    return 0;
}

int pxpy_http_types_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    pxpy_http_t *h = st->http;
    Py_VISIT(h->request_type);
    Py_VISIT(h->file_type);
    return 0;
}

void pxpy_http_types_free(pxpy_state *st)
{
    pxpy_http_t *h = st->http;
    Py_CLEAR(h->request_type);
    Py_CLEAR(h->file_type);
    for (size_t i = 0; i < sizeof(h->methods) / sizeof(h->methods[0]); i++)
        Py_CLEAR(h->methods[i]);
    Py_CLEAR(h->versions[0]);
    Py_CLEAR(h->versions[1]);
    Py_CLEAR(h->schemes[0]);
    Py_CLEAR(h->schemes[1]);
    pxpy_http_asgi_free(h);
}
