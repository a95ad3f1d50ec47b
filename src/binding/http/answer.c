/*
 * answer.c - the request callback of an HttpProtocol connection: it builds
 * the request (of the class's _px_request_class, a subclass of
 * _core.HttpRequest), calls the handler (an exact route's, or
 * instance._px_handle(request)), and answers with what it returned: a
 * (status, fields, body) tuple or bytes or str (200, text/plain), framed in
 * C, or a _core.FileResponse, sent from the file (conditionals and ranges
 * in C, the bytes with sendfile). A body that is an iterator, an awaitable
 * (an async def handler) or the request's HttpStream is answered later, by
 * stream.c; what keeps the instance alive then is said there.
 *
 * A request whose body is still arriving (stream_request_body) is handled
 * in a work item of the connection's worker rather than in the callback:
 * its handler may wait for the body, which the connection receives between
 * its callbacks, so waiting inside one would wait for ever. Out of the
 * callback, a handler that blocks is handed off like any blocking one, and
 * the worker keeps receiving its body meanwhile.
 *
 * Field names the server writes itself (Content-Length, Transfer-Encoding,
 * Date, Connection) are dropped from a handler's fields rather than
 * refused; "Connection: close" closes the connection after the response. A
 * field that could inject a line (CR, LF, other controls, a name that is
 * not a token) makes the response a 500, with the error logged: the handler
 * asked for something the server must not send.
 */
#include "binding.h"
#include "http/http_binding.h"
#include "px_http_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const px_http_header_t text_plain = {"Content-Type", 12,
                                            "text/plain; charset=utf-8", 25};
/* What a handler's bytes are sent as (pyparallel.http's convention). */
const px_http_header_t pxpy_http_text_plain_bytes = {"Content-Type", 12,
                                                     "text/plain", 10};

/* ---- answering ---------------------------------------------------------- */

void pxpy_http_fields_init(pxpy_http_fields_t *f)
{
    f->fields = f->stack;
    f->count = 0;
    f->cap = PXPY_HTTP_STACK_FIELDS;
    f->owners = NULL;
}

void pxpy_http_fields_free(pxpy_http_fields_t *f)
{
    if (f->fields != f->stack)
        PyMem_Free(f->fields);
    Py_XDECREF(f->owners);
}

static int fields_reserve(pxpy_http_fields_t *f, size_t extra)
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
static const char *field_text(pxpy_http_fields_t *f, PyObject *s, size_t *len)
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

int pxpy_http_fields_add(pxpy_http_fields_t *f, PyObject *seq)
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

int pxpy_http_response_error(int rc)
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
    return pxpy_http_response_error(rc);
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

/* Bodies past this size are lent to the engine rather than copied: the
 * server then holds the handler's object until the client has read it all
 * (a smaller one is copied next to its head at once). */
#define LEND_BODY_MIN (64u << 10)

/* A body lent to the engine: the buffer export or the object whose bytes
 * are sent, given back by release_lent (on the caller's thread, or from
 * the connection's dispatch, where this interpreter is attached). */
typedef struct {
    Py_buffer view; /* view.obj != NULL: an export to release */
    PyObject *owner;
} lent_t;

static void release_lent(void *arg)
{
    lent_t *lent = arg;
    if (lent->view.obj != NULL)
        PyBuffer_Release(&lent->view);
    Py_XDECREF(lent->owner);
    PyMem_RawFree(lent);
}

/* Answers with body bytes that owner (or the export in view, taken over)
 * keeps alive: a large body is lent, a small one copied. */
static int respond_body(px_http_exchange_t *ex, int status,
                        const px_http_header_t *fields, size_t count,
                        const char *data, size_t len, PyObject *owner,
                        Py_buffer *view)
{
    if (len < LEND_BODY_MIN) {
        int rc = px_http_respond(ex, status, fields, count, data, len);
        if (view != NULL)
            PyBuffer_Release(view);
        return rc;
    }
    lent_t *lent = PyMem_RawMalloc(sizeof(*lent));
    if (lent == NULL) {
        if (view != NULL)
            PyBuffer_Release(view);
        return -ENOMEM;
    }
    lent->view.obj = NULL;
    if (view != NULL)
        lent->view = *view;
    lent->owner = Py_XNewRef(owner);
    return px_http_respond_owned(ex, status, fields, count, data, len,
                                 release_lent, lent);
}

/* A streamed body's Content-Length, the tuple's fourth item: an int, or
 * None for a chunked body. */
static int length_of(PyObject *v, uint64_t *length)
{
    *length = PX_HTTP_STREAM_CHUNKED;
    if (v == Py_None)
        return 0;
    unsigned long long n = PyLong_Check(v) ? PyLong_AsUnsignedLongLong(v) : 0;
    if (!PyLong_Check(v) || (n == (unsigned long long)-1 && PyErr_Occurred()) ||
        n >= PX_HTTP_STREAM_CHUNKED) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "a streamed body's length must be an int from 0, or "
                     "None, not %.100R",
                     v);
        return -1;
    }
    *length = n;
    return 0;
}

/* (status, fields, body), or (status, fields, body, length) for a body
 * that is an iterator. */
static int answer_tuple(pxpy_http_answer_t *a, PyObject *result)
{
    px_http_exchange_t *ex = a->ex;
    Py_ssize_t size = PyTuple_GET_SIZE(result);
    if (size != 3 && size != 4) {
        PyErr_Format(PyExc_TypeError,
                     "_px_handle must return (status, fields, body), not a "
                     "tuple of %zd",
                     size);
        return -1;
    }
    int status;
    if (status_of(PyTuple_GET_ITEM(result, 0), &status) < 0)
        return -1;
    pxpy_http_fields_t f;
    pxpy_http_fields_init(&f);
    if (pxpy_http_fields_add(&f, PyTuple_GET_ITEM(result, 1)) < 0) {
        pxpy_http_fields_free(&f);
        return -1;
    }
    PyObject *body = PyTuple_GET_ITEM(result, 2);
    if (size == 4 || pxpy_http_is_stream_body(body)) {
        pxpy_http_fields_free(&f);
        uint64_t length = PX_HTTP_STREAM_CHUNKED;
        if (size == 4 && length_of(PyTuple_GET_ITEM(result, 3), &length) < 0)
            return -1;
        return pxpy_http_stream_body(a, status, PyTuple_GET_ITEM(result, 1),
                                     body, length);
    }
    int rc;
    if (PyBytes_Check(body)) {
        rc =
            respond_body(ex, status, f.fields, f.count, PyBytes_AS_STRING(body),
                         (size_t)PyBytes_GET_SIZE(body), body, NULL);
    } else if (PyUnicode_Check(body)) {
        /* The UTF-8 form is cached in the str: holding the str holds it. */
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(body, &len);
        if (utf8 == NULL) {
            pxpy_http_fields_free(&f);
            return -1;
        }
        rc = respond_body(ex, status, f.fields, f.count, utf8, (size_t)len,
                          body, NULL);
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
            pxpy_http_fields_free(&f);
            PyErr_Format(PyExc_TypeError,
                         "the body must be bytes, bytearray, memoryview or "
                         "str, not %.100s",
                         Py_TYPE(body)->tp_name);
            return -1;
        }
        rc = respond_body(ex, status, f.fields, f.count, view.buf,
                          (size_t)view.len, NULL, &view);
    }
    pxpy_http_fields_free(&f);
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

/* Plans a file answer from the request's conditional and range fields:
 * those of the request at hand, or, after the callback, of its head parsed
 * again (it parsed once, so it parses the same way); with neither (an
 * adapter's answer through HttpStream.respond, whose app decided already),
 * the whole file. */
static void plan_file(const pxpy_http_answer_t *a, const struct stat *st,
                      int status, px_http_file_plan_t *plan)
{
    if (a->req != NULL) {
        px_http_file_plan(a->req, st, status, plan);
        return;
    }
    px_http_server_request_t req;
    memset(&req, 0, sizeof(req));
    if (a->raw_head == NULL) {
        px_http_file_plan(&req, st, status, plan);
        return;
    }
    px_http_header_t headers[PX_HTTP_SERVER_MAX_HEADERS];
    const char *head = PyBytes_AS_STRING(a->raw_head);
    size_t len = (size_t)PyBytes_GET_SIZE(a->raw_head);
    px_http_options_t limits = {.max_header_size = len,
                                .max_uri_size = len,
                                .max_headers = PX_HTTP_SERVER_MAX_HEADERS};
    if (px_http_parse_request(head, len, 0, &limits, &req.head, headers,
                              PX_HTTP_SERVER_MAX_HEADERS) != (ssize_t)len)
        req.head.num_headers = 0; /* no conditionals: the whole file */
    px_http_file_plan(&req, st, status, plan);
}

static int answer_file(const pxpy_http_answer_t *a, PyObject *result)
{
    px_http_exchange_t *ex = a->ex;
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
    plan_file(a, &st, file->status, &plan);
    pxpy_http_fields_t f;
    pxpy_http_fields_init(&f);
    int rc = pxpy_http_fields_add(&f, file->headers);
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
    pxpy_http_fields_free(&f);
    return rc;
}

/* A handler's bytes or str, as they are: 200, text/plain (str: UTF-8).
 * Framed here rather than in Python, because on the plaintext path the
 * call and the tuple of to_wire() cost as much as the handler itself. */
static int answer_text(px_http_exchange_t *ex, PyObject *result)
{
    if (PyBytes_CheckExact(result))
        return responded(respond_body(
            ex, 200, &pxpy_http_text_plain_bytes, 1, PyBytes_AS_STRING(result),
            (size_t)PyBytes_GET_SIZE(result), result, NULL));
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(result, &len);
    if (utf8 == NULL)
        return -1;
    return responded(
        respond_body(ex, 200, &text_plain, 1, utf8, (size_t)len, result, NULL));
}

int pxpy_http_answer(pxpy_http_answer_t *a, PyObject *result)
{
    pxpy_http_config_t *cfg = a->self->config;
    if (PyTuple_Check(result))
        return answer_tuple(a, result);
    if (pxpy_ws_is_accept(cfg->st, result))
        return pxpy_ws_answer(a, result);
    if (PyBytes_CheckExact(result) || PyUnicode_CheckExact(result))
        return answer_text(a->ex, result);
    if (Py_IS_TYPE(result, cfg->st->http->file_type))
        return answer_file(a, result);
    if (Py_IS_TYPE(result, cfg->st->http->stream_type))
        return pxpy_http_stream_returned(a, result);
    if (pxpy_is_awaitable(result))
        return pxpy_http_await(a, result, false);
    if (pxpy_http_is_stream_body(result))
        return pxpy_http_stream_body(a, 200, NULL, result,
                                     PX_HTTP_STREAM_CHUNKED);
    PyErr_Format(PyExc_TypeError,
                 "_px_handle must return (status, fields, body), bytes, str, "
                 "a FileResponse, an iterator, an awaitable or the request's "
                 "HttpStream, not %.100s",
                 Py_TYPE(result)->tp_name);
    return -1;
}

/* The fallback when the handler failed: logged, answered 500. */
static void answer_failure(pxpy_http_answer_t *a, const char *what)
{
    char where[256];
    PyOS_snprintf(where, sizeof(where), "%.150s.%s", Py_TYPE(a->self)->tp_name,
                  what);
    pxpy_report_callback_error(a->self->config->st, where);
    static const char body[] = "Internal Server Error\n";
    pxpy_http_request_done(a->self);
    int rc =
        px_http_respond(a->ex, 500, &text_plain, 1, body, sizeof(body) - 1);
    if (rc != 0 && rc != PX_ECLOSED)
        px_http_abort(a->ex);
}

void pxpy_http_answer_failed(pxpy_http_answer_t *a, const char *what)
{
    pxpy_http_config_t *cfg = a->self->config;
    /* Like _px_handle's "except Exception": BaseExceptions go by. */
    if (cfg->failed == NULL || a->request == NULL ||
        !PyErr_ExceptionMatches(PyExc_Exception)) {
        answer_failure(a, what);
        return;
    }
    PyObject *args[] = {(PyObject *)a->self, a->request,
                        PyErr_GetRaisedException()};
    pxpy_http_request_done(a->self);
    PyObject *result = PyObject_Vectorcall(cfg->failed, args, 3, NULL);
    Py_DECREF(args[2]);
    int rc = result ? pxpy_http_answer(a, result) : -1;
    Py_XDECREF(result);
    if (rc < 0)
        answer_failure(a, "_px_failed");
}

static PyObject *client_address(pxpy_http_protocol_t *self)
{
    if (self->client == NULL) {
        pxpy_transport_t *t = self->transport;
        /* Over a Unix socket there is no network peer: None, as
         * uvicorn's scope gives. */
        if (t != NULL && atomic_load(&t->have_addrs) && t->peer_port >= 0)
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
static int exact_handler(pxpy_http_config_t *cfg, PyObject *request,
                         PyObject **handler)
{
    /* The parser answers other methods 501: this is one of the shared
     * method strings the route table is keyed by. */
    PyObject *method = pxpy_http_request_method(request);
    PyObject *path = pxpy_http_request_path(request);
    if (path == NULL)
        return -1;
    PyObject *methods, *index;
    int rc = PyDict_GetItemRef(cfg->exact, path, &methods);
    Py_DECREF(path);
    if (rc <= 0)
        return rc;
    rc = PyDict_Check(methods) ? PyDict_GetItemRef(methods, method, &index) : 0;
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
 * to_wire; an Exception through failed(instance, request, exc). An
 * awaitable is returned as it is, with *raw set: its outcome is converted
 * when it is ready. */
static PyObject *call_handler(pxpy_http_config_t *cfg, PyObject *handler,
                              PyObject *instance, PyObject *request, bool *raw)
{
    PyObject *args[] = {instance, request, NULL};
    PyObject *result = PyObject_Vectorcall(handler, args, 2, NULL);
    if (result != NULL && !PyBytes_CheckExact(result) &&
        !PyUnicode_CheckExact(result)) {
        if (pxpy_is_awaitable(result)) {
            *raw = true;
            return result;
        }
        Py_SETREF(result, PyObject_CallOneArg(cfg->to_wire, result));
    }
    /* Like _px_handle's "except Exception": BaseExceptions go by. */
    if (result == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        args[2] = PyErr_GetRaisedException();
        result = PyObject_Vectorcall(cfg->failed, args, 3, NULL);
        Py_DECREF(args[2]);
    }
    return result;
}

/* Calls the handler of the request in a (its exact route's, or
 * _px_handle) and answers with what it gives, or answers its failure. */
static void serve(pxpy_http_answer_t *a)
{
    pxpy_http_protocol_t *self = a->self;
    pxpy_http_config_t *cfg = self->config;
    PyObject *result = NULL;
    bool raw = false;
    PyObject *handler = NULL;
    int rc = cfg->exact ? exact_handler(cfg, a->request, &handler) : 0;
    if (rc > 0) {
        result = call_handler(cfg, handler, (PyObject *)self, a->request, &raw);
    } else if (rc == 0) {
        PyObject *args[] = {(PyObject *)self, a->request};
        result = cfg->handle_is_function
                     ? PyObject_Vectorcall(cfg->handle, args, 2, NULL)
                     : PyObject_VectorcallMethod(cfg->st->http->str_px_handle,
                                                 args, 2, NULL);
    }
    if (result == NULL) {
        answer_failure(a, "_px_handle");
    } else if (raw) {
        rc = pxpy_http_await(a, result, true);
        if (rc < 0)
            answer_failure(a, "_px_handle");
    } else if ((rc = pxpy_http_answer(a, result)) < 0) {
        pxpy_http_answer_failed(a, "_px_handle's result");
    } else if (rc == 0) {
        /* Answered now: the next request waits for the answer, so
         * forgetting the exchange now is in time. */
        pxpy_http_request_done(self);
    }
    Py_XDECREF(result);
}

/* ---- answers after the callback ---------------------------------------- */

int pxpy_http_later_hold(pxpy_http_later_t *l, const pxpy_http_answer_t *a)
{
    l->raw_head =
        a->req ? PyBytes_FromStringAndSize(a->req->raw_head,
                                           (Py_ssize_t)a->req->raw_head_len)
               : Py_XNewRef(a->raw_head);
    if (l->raw_head == NULL)
        return -1;
    l->self = (pxpy_http_protocol_t *)Py_NewRef(a->self);
    l->ex = a->ex;
    l->seq = a->self->request_seq;
    l->request = Py_XNewRef(a->request);
    return 0;
}

void pxpy_http_later_release(pxpy_http_later_t *l)
{
    Py_CLEAR(l->self);
    Py_CLEAR(l->request);
    Py_CLEAR(l->raw_head);
}

bool pxpy_http_later_current(const pxpy_http_later_t *l)
{
    return l->self->ex == l->ex && l->self->request_seq == l->seq;
}

pxpy_http_answer_t pxpy_http_later_answer(const pxpy_http_later_t *l)
{
    pxpy_http_answer_t a = {l->self, l->ex, NULL, l->raw_head, l->request};
    return a;
}

/* A request served by a work item (see the top of this file). */
static void serve_later_run(void *arg)
{
    pxpy_http_later_t *l = arg;
    bool attached = pxpy_attach();
    if (pxpy_http_later_current(l)) {
        pxpy_http_answer_t a = pxpy_http_later_answer(l);
        serve(&a);
    }
    pxpy_http_later_release(l);
    PyMem_RawFree(l);
    pxpy_detach(attached);
}

/* The loop stops first: nothing will answer. */
static void serve_later_cancel(void *arg)
{
    pxpy_http_later_t *l = arg;
    bool attached = pxpy_attach();
    if (pxpy_http_later_current(l)) {
        pxpy_http_request_done(l->self);
        px_http_abort(l->ex);
    }
    pxpy_http_later_release(l);
    PyMem_RawFree(l);
    pxpy_detach(attached);
}

/* Queues the request in a on the connection's worker: 0, or -1 with an
 * exception (the exchange still open). */
static int serve_later(pxpy_http_answer_t *a)
{
    px_loop_t *loop = pxpy_loop(a->self->config->st);
    if (loop == NULL)
        return -1;
    pxpy_http_later_t *l = PyMem_RawMalloc(sizeof(*l));
    if (l == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (pxpy_http_later_hold(l, a) < 0) {
        PyMem_RawFree(l);
        return -1;
    }
    int worker = px_conn_worker(px_http_exchange_conn(a->ex));
    int rc = px_submit_to(loop, worker, serve_later_run, serve_later_cancel, l);
    if (rc < 0) {
        pxpy_http_later_release(l);
        PyMem_RawFree(l);
        pxpy_raise_engine_error(a->self->config->st, rc,
                                "queueing an HTTP request");
        return -1;
    }
    return 0;
}

/* The engine's request callback: runs on the connection's worker (inside
 * protocol.c's on_data, or in a work item that serves a request pipelined
 * behind a late answer), attached. */
void pxpy_http_on_request(px_http_exchange_t *ex,
                          const px_http_server_request_t *req)
{
    bool attached = pxpy_attach();
    pxpy_http_protocol_t *self = px_http_exchange_conn_data(ex);
    pxpy_http_config_t *cfg = self->config;
    /* Held for the callback: a late answer's work item is no callback of
     * the connection, so its close may run meanwhile. */
    Py_INCREF(self);
    self->ex = ex;
    self->request_seq++;
    pxpy_http_answer_t a = {self, ex, req, NULL, NULL};
    const char *fwd_host;
    int fwd_port, https;
    PyObject *client;
    if (px_http_exchange_forwarded(ex, &fwd_host, &fwd_port, &https))
        client = Py_BuildValue("(si)", fwd_host, fwd_port);
    else
        client = Py_XNewRef(client_address(self));
    PyObject *body = NULL;
    if (client != NULL && req->body_streamed)
        body = pxpy_http_body_new(self, ex);
    if (client != NULL && (body != NULL || !req->body_streamed))
        a.request = pxpy_http_request_new(cfg->st, cfg->request_type, req,
                                          client, body, https != 0);
    Py_XDECREF(body);
    Py_XDECREF(client);
    if (a.request == NULL) {
        answer_failure(&a, "_px_handle");
    } else if (req->body_streamed) {
        if (serve_later(&a) < 0)
            answer_failure(&a, "_px_handle");
    } else {
        self->callback_thread = PyThread_get_thread_ident();
        serve(&a);
        self->callback_thread = 0;
    }
    Py_XDECREF(a.request);
    Py_DECREF(self);
    pxpy_detach(attached);
}
