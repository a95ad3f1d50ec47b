/*
 * accept.c - the upgrade of an HTTP request to a WebSocket: the
 * WebSocketAccept type a handler returns (pyparallel.http's @websocket
 * routes and the ASGI adapter make it), its answer (answer.c hands it
 * here), and the engine's callbacks into the handler's object:
 * message_received(ws, message) for each message, websocket_closed(ws,
 * code, reason) once. Either may be a coroutine function: its coroutine
 * runs as a task of the worker's asyncio loop.
 *
 * The engine's settings holders (px_ws_server_t: limits, timeouts and the
 * ping sweep) are made once per loop and settings and kept in the module
 * state, so that a class's connections share one sweep timer.
 */
#include "ws/ws_binding.h"

#include <math.h>
#include <string.h>

#define NS_PER_S 1e9

/* ---- WebSocketAccept ---------------------------------------------------- */

/* Seconds (None: never) as the engine's nanoseconds. */
static int timeout_ns(PyObject *v, const char *name, uint64_t *out)
{
    if (v == Py_None) {
        *out = PX_HTTP_NO_TIMEOUT;
        return 0;
    }
    double s = PyFloat_AsDouble(v);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (!(s > 0) || !isfinite(s) || s > 1e9) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a positive number of seconds or None", name);
        return -1;
    }
    *out = (uint64_t)(s * NS_PER_S);
    return 0;
}

static int accept_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    pxpy_ws_accept_t *self = (pxpy_ws_accept_t *)op;
    static char *kwlist[] = {
        "target",        "opened",           "request",       "subprotocols",
        "headers",       "max_message_size", "ping_interval", "ping_timeout",
        "close_timeout", "max_send_buffer",  "compression",   NULL};
    PyObject *target, *opened = Py_None, *request = Py_None;
    PyObject *subprotocols = NULL, *headers = Py_None;
    unsigned long long max_message = 1u << 20, max_send = 4u << 20;
    PyObject *ping_interval = NULL, *ping_timeout = NULL, *close_timeout = NULL;
    int compression = 1;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "O|OOOO$KOOOKp:WebSocketAccept", kwlist, &target,
            &opened, &request, &subprotocols, &headers, &max_message,
            &ping_interval, &ping_timeout, &close_timeout, &max_send,
            &compression))
        return -1;
    if (opened != Py_None && !PyCallable_Check(opened)) {
        PyErr_SetString(PyExc_TypeError, "opened must be callable or None");
        return -1;
    }
    PyObject *protocols =
        subprotocols ? PySequence_Tuple(subprotocols) : PyTuple_New(0);
    if (protocols == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(protocols); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(protocols, i))) {
            Py_DECREF(protocols);
            PyErr_SetString(PyExc_TypeError, "subprotocols must be str");
            return -1;
        }
    }
    if (headers != Py_None && !PyList_Check(headers) &&
        !PyTuple_Check(headers)) {
        Py_DECREF(protocols);
        PyErr_SetString(PyExc_TypeError,
                        "headers must be a list of (name, value) pairs");
        return -1;
    }
    uint64_t d = 20 * (uint64_t)NS_PER_S;
    self->ping_interval_ns = self->ping_timeout_ns = d;
    self->close_timeout_ns = 5 * (uint64_t)NS_PER_S;
    if ((ping_interval && timeout_ns(ping_interval, "ping_interval",
                                     &self->ping_interval_ns) < 0) ||
        (ping_timeout && timeout_ns(ping_timeout, "ping_timeout",
                                    &self->ping_timeout_ns) < 0) ||
        (close_timeout && timeout_ns(close_timeout, "close_timeout",
                                     &self->close_timeout_ns) < 0)) {
        Py_DECREF(protocols);
        return -1;
    }
    if (max_message == 0 || max_send == 0) {
        Py_DECREF(protocols);
        PyErr_SetString(PyExc_ValueError,
                        "max_message_size and max_send_buffer must be > 0");
        return -1;
    }
    Py_XSETREF(self->target, Py_NewRef(target));
    Py_XSETREF(self->opened, Py_NewRef(opened));
    Py_XSETREF(self->request, Py_NewRef(request));
    Py_XSETREF(self->subprotocols, protocols);
    Py_XSETREF(self->headers, Py_NewRef(headers));
    self->max_message_size = max_message;
    self->max_send_buffer = (size_t)max_send;
    self->compression = compression != 0;
    return 0;
}

static int accept_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_ws_accept_t *self = (pxpy_ws_accept_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->target);
    Py_VISIT(self->opened);
    Py_VISIT(self->request);
    Py_VISIT(self->subprotocols);
    Py_VISIT(self->headers);
    return 0;
}

static int accept_clear(PyObject *op)
{
    pxpy_ws_accept_t *self = (pxpy_ws_accept_t *)op;
    Py_CLEAR(self->target);
    Py_CLEAR(self->opened);
    Py_CLEAR(self->request);
    Py_CLEAR(self->subprotocols);
    Py_CLEAR(self->headers);
    return 0;
}

static void accept_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    accept_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot accept_slots[] = {
    {Py_tp_doc,
     "WebSocketAccept(target, opened=None, request=None, subprotocols=(), "
     "headers=None, *, max_message_size=1048576, ping_interval=20.0, "
     "ping_timeout=20.0, close_timeout=5.0, max_send_buffer=4194304, "
     "compression=True)\n--\n\n"
     "What a handler returns to upgrade its request to a WebSocket: the C "
     "layer checks the handshake (answering 400 or 426 when it is not one), "
     "picks the first of subprotocols the client offered, negotiates "
     "permessage-deflate when compression is true, answers 101 with "
     "headers, and calls opened(ws). target's message_received(ws, "
     "message) and websocket_closed(ws, code, reason) are called for the "
     "connection's messages and its close."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, accept_init},
    {Py_tp_traverse, accept_traverse},
    {Py_tp_clear, accept_clear},
    {Py_tp_dealloc, accept_dealloc},
    {0, NULL},
};

static PyType_Spec accept_spec = {
    .name = "pyparallel._core.WebSocketAccept",
    .basicsize = sizeof(pxpy_ws_accept_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = accept_slots,
};

/* ---- the engine's callbacks --------------------------------------------- */

static void report(pxpy_ws_socket_t *ws, PyObject *callable, const char *member)
{
    pxpy_state *st = pxpy_state_from_object((PyObject *)ws);
    char where[256];
    PyObject *owner =
        PyMethod_Check(callable) ? PyMethod_GET_SELF(callable) : callable;
    PyOS_snprintf(where, sizeof(where), "%.150s.%s", Py_TYPE(owner)->tp_name,
                  member);
    pxpy_report_callback_error(st, where);
}

typedef struct {
    pxpy_ws_socket_t *ws;
    const char *member;
} task_t;

static void task_done(void *arg, PyObject *result)
{
    task_t *t = arg;
    if (result == NULL) {
        if (pxpy_aio_cancelled()) {
            PyErr_Clear();
        } else {
            pxpy_state *st = pxpy_state_from_object((PyObject *)t->ws);
            pxpy_report_callback_error(st, t->member);
            if (t->ws->wc != NULL)
                px_ws_close(t->ws->wc, PX_WS_CLOSE_INTERNAL_ERROR, NULL, 0);
        }
    }
    Py_XDECREF(result);
    Py_DECREF(t->ws);
    PyMem_Free(t);
}

/* Calls callable(ws, args...) and deals with what it gave: a coroutine
 * runs as a task; a failure is reported and closes the connection with
 * 1011. */
static void call_member(pxpy_ws_socket_t *ws, PyObject *callable,
                        const char *member, PyObject *const *args, size_t nargs)
{
    PyObject *r = PyObject_Vectorcall(callable, args, nargs, NULL);
    if (r != NULL && pxpy_is_awaitable(r)) {
        task_t *t = PyMem_Malloc(sizeof(*t));
        pxpy_state *st = pxpy_state_from_object((PyObject *)ws);
        if (t != NULL) {
            t->ws = (pxpy_ws_socket_t *)Py_NewRef(ws);
            t->member = member;
            if (pxpy_aio_spawn_eager(st, r, task_done, t) == 0) {
                Py_DECREF(r);
                return;
            }
            Py_DECREF(ws);
            PyMem_Free(t);
        } else {
            PyErr_NoMemory();
        }
        Py_CLEAR(r);
    }
    if (r == NULL) {
        report(ws, callable, member);
        if (ws->wc != NULL)
            px_ws_close(ws->wc, PX_WS_CLOSE_INTERNAL_ERROR, NULL, 0);
    }
    Py_XDECREF(r);
}

static void on_message(px_ws_conn_t *wc, int opcode, const char *data,
                       size_t len)
{
    pxpy_ws_socket_t *ws = px_ws_conn_data(wc);
    if (ws == NULL || ws->on_message == NULL)
        return;
    PyObject *msg = opcode == PX_WS_OP_TEXT
                        ? PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, NULL)
                        : PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (msg == NULL) {
        report(ws, ws->on_message, "message_received");
        px_ws_close(wc, PX_WS_CLOSE_INTERNAL_ERROR, NULL, 0);
        return;
    }
    PyObject *args[] = {(PyObject *)ws, msg};
    PyObject *callable = Py_NewRef(ws->on_message);
    call_member(ws, callable, "message_received", args, 2);
    Py_DECREF(callable);
    Py_DECREF(msg);
}

static void on_closed(px_ws_conn_t *wc, int code, const char *reason,
                      size_t len)
{
    pxpy_ws_socket_t *ws = px_ws_conn_data(wc);
    if (ws == NULL)
        return;
    px_ws_conn_set_data(wc, NULL);
    PyObject *text = PyUnicode_DecodeUTF8(reason, (Py_ssize_t)len, "replace");
    if (text == NULL) {
        PyErr_Clear();
        text = Py_NewRef(Py_GetConstantBorrowed(Py_CONSTANT_EMPTY_STR));
    }
    ws->close_code = code;
    Py_XSETREF(ws->close_reason, Py_NewRef(text));
    atomic_store(&ws->state, PXPY_WS_CLOSED);
    /* The members refer to the handler's object, which may refer to ws:
     * dropping them now breaks that cycle. */
    PyObject *closed_cb = ws->on_closed;
    ws->on_closed = NULL;
    Py_CLEAR(ws->on_message);
    if (closed_cb != NULL) {
        PyObject *code_obj = PyLong_FromLong(code);
        if (code_obj != NULL) {
            PyObject *args[] = {(PyObject *)ws, code_obj, text};
            call_member(ws, closed_cb, "websocket_closed", args, 3);
            Py_DECREF(code_obj);
        } else {
            report(ws, closed_cb, "websocket_closed");
        }
        Py_DECREF(closed_cb);
    }
    Py_DECREF(text);
    Py_DECREF(ws); /* the connection's */
}

/* ---- the settings holders ----------------------------------------------- */

static void server_capsule_free(PyObject *capsule)
{
    px_ws_server_free(PyCapsule_GetPointer(capsule, "px_ws_server"));
}

/* The engine's holder of acc's settings on the current loop (borrowed
 * from the state's cache); NULL with an exception. */
static px_ws_server_t *server_for(pxpy_state *st, pxpy_ws_accept_t *acc)
{
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    PyObject *key = Py_BuildValue("(nKKKKn)", (Py_ssize_t)(uintptr_t)loop,
                                  (unsigned long long)acc->max_message_size,
                                  (unsigned long long)acc->ping_interval_ns,
                                  (unsigned long long)acc->ping_timeout_ns,
                                  (unsigned long long)acc->close_timeout_ns,
                                  (Py_ssize_t)acc->max_send_buffer);
    if (key == NULL)
        return NULL;
    PyObject *servers = st->ws->servers;
    PyObject *capsule = NULL;
    if (PyDict_GetItemRef(servers, key, &capsule) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    if (capsule != NULL) {
        px_ws_server_t *s = PyCapsule_GetPointer(capsule, "px_ws_server");
        Py_DECREF(capsule);
        /* A loop that stopped may have been freed and its address given to
         * this one: its holder's sweep has ended with it, and is replaced
         * below. */
        if (px_ws_server_running(s)) {
            Py_DECREF(key);
            return s;
        }
    }
    px_ws_server_options_t o = {
        .max_message_size = acc->max_message_size,
        .ping_interval_ns = acc->ping_interval_ns,
        .ping_timeout_ns = acc->ping_timeout_ns,
        .close_timeout_ns = acc->close_timeout_ns,
        .max_send_buffer = acc->max_send_buffer,
        .on_message = on_message,
        .on_closed = on_closed,
    };
    px_ws_server_t *s = NULL;
    int rc = px_ws_server_new(loop, &o, &s);
    if (rc < 0) {
        Py_DECREF(key);
        pxpy_raise_engine_error(st, rc, "starting a WebSocket server");
        return NULL;
    }
    capsule = PyCapsule_New(s, "px_ws_server", server_capsule_free);
    if (capsule == NULL) {
        px_ws_server_free(s);
        Py_DECREF(key);
        return NULL;
    }
    /* Holders of a loop that stopped are of no more use. */
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    PyObject *stale = PyList_New(0);
    while (stale != NULL && PyDict_Next(servers, &pos, &k, &v))
        if (PyLong_AsSsize_t(PyTuple_GET_ITEM(k, 0)) !=
                (Py_ssize_t)(uintptr_t)loop &&
            PyList_Append(stale, k) < 0)
            Py_CLEAR(stale);
    for (Py_ssize_t i = 0; stale != NULL && i < PyList_GET_SIZE(stale); i++)
        PyDict_DelItem(servers, PyList_GET_ITEM(stale, i));
    Py_XDECREF(stale);
    rc = PyDict_SetItem(servers, key, capsule);
    Py_DECREF(key);
    Py_DECREF(capsule); /* the dict's reference keeps it */
    return rc < 0 ? NULL : s;
}

/* ---- the answer -----------------------------------------------------------
 */

bool pxpy_ws_is_accept(pxpy_state *st, PyObject *result)
{
    return st->ws != NULL && Py_IS_TYPE(result, st->ws->accept_type);
}

/* Answers a request that is not a WebSocket handshake, or a bad one. */
static int refuse(pxpy_http_answer_t *a, int code)
{
    const char *message = px_ws_strerror(code);
    char body[128];
    int n = PyOS_snprintf(body, sizeof(body), "%s\n", message);
    px_http_header_t fields[3] = {
        {"Content-Type", 12, "text/plain; charset=utf-8", 25},
    };
    size_t count = 1;
    if (code == PX_WS_E_VERSION)
        fields[count++] =
            (px_http_header_t){"Sec-WebSocket-Version", 21, "13", 2};
    if (code == PX_WS_E_NOT_UPGRADE)
        fields[count++] = (px_http_header_t){"Upgrade", 7, "websocket", 9};
    pxpy_http_request_done(a->self);
    int rc = px_http_respond(a->ex, px_ws_error_status(code), fields, count,
                             body, (size_t)n);
    if (rc != 0 && rc != PX_ECLOSED)
        px_http_abort(a->ex);
    return 0;
}

/* The request's head rebuilt from a Request object's method, version and
 * header fields (for an answer given through an HttpStream, which keeps
 * neither the parsed request nor its raw head); *keep holds the strings
 * the head points into. */
static int head_from_request(PyObject *request, px_http_request_t *head,
                             px_http_header_t *fields, PyObject **keep)
{
    PyObject *method = PyObject_GetAttrString(request, "method");
    PyObject *version =
        method ? PyObject_GetAttrString(request, "version") : NULL;
    PyObject *list =
        version ? PyObject_GetAttrString(request, "header_fields") : NULL;
    *keep = list ? PyTuple_Pack(3, method, version, list) : NULL;
    Py_XDECREF(method);
    Py_XDECREF(version);
    Py_XDECREF(list);
    if (*keep == NULL)
        return -1;
    method = PyTuple_GET_ITEM(*keep, 0);
    version = PyTuple_GET_ITEM(*keep, 1);
    list = PyTuple_GET_ITEM(*keep, 2);
    Py_ssize_t len;
    memset(head, 0, sizeof(*head));
    if ((head->method = PyUnicode_AsUTF8AndSize(method, &len)) == NULL)
        return -1;
    head->method_len = (size_t)len;
    head->method_id = len == 3 && memcmp(head->method, "GET", 3) == 0
                          ? PX_HTTP_METHOD_GET
                          : PX_HTTP_METHOD_OTHER;
    const char *v = PyUnicode_AsUTF8(version);
    if (v == NULL)
        return -1;
    head->minor_version = strcmp(v, "HTTP/1.0") == 0 ? 0 : 1;
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "header_fields must be a list");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > PX_HTTP_SERVER_MAX_HEADERS)
        n = PX_HTTP_SERVER_MAX_HEADERS;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError,
                            "header_fields must be (name, value) pairs");
            return -1;
        }
        Py_ssize_t nl, vl;
        fields[i].name =
            PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &nl);
        fields[i].value =
            fields[i].name
                ? PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &vl)
                : NULL;
        if (fields[i].value == NULL)
            return -1;
        fields[i].name_len = (size_t)nl;
        fields[i].value_len = (size_t)vl;
    }
    head->headers = fields;
    head->num_headers = (size_t)n;
    return 0;
}

/* The request's head: from the callback's request, its raw head, or the
 * accept's Request object; *keep holds what it points into. */
static int request_head(pxpy_http_answer_t *a, pxpy_ws_accept_t *acc,
                        px_http_request_t *head, px_http_header_t *fields,
                        PyObject **keep)
{
    *keep = NULL;
    if (a->req != NULL) {
        *head = a->req->head;
        return 0;
    }
    if (a->raw_head == NULL)
        return head_from_request(acc->request, head, fields, keep);
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(a->raw_head, &data, &len) < 0)
        return -1;
    px_http_options_t o = {.max_header_size = (size_t)len,
                           .max_uri_size = (size_t)len,
                           .max_headers = PX_HTTP_SERVER_MAX_HEADERS,
                           .allow_unknown_methods = 1};
    if (px_http_parse_request(data, (size_t)len, 0, &o, head, fields,
                              PX_HTTP_SERVER_MAX_HEADERS) != len) {
        PyErr_SetString(PyExc_RuntimeError, "the request head did not parse");
        return -1;
    }
    return 0;
}

/* Upgrades once the handshake checked out; returns as pxpy_ws_answer. */
static int upgrade(pxpy_http_answer_t *a, pxpy_ws_accept_t *acc,
                   const px_ws_handshake_t *hs)
{
    pxpy_state *st = a->self->config->st;
    PyObject *chosen = Py_None;
    const char *sp = NULL;
    Py_ssize_t sp_len = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(acc->subprotocols); i++) {
        PyObject *p = PyTuple_GET_ITEM(acc->subprotocols, i);
        const char *text = PyUnicode_AsUTF8AndSize(p, &sp_len);
        if (text == NULL)
            return -1;
        if (px_ws_handshake_offers(hs, text, (size_t)sp_len)) {
            chosen = p;
            sp = text;
            break;
        }
    }
    if (chosen == Py_None)
        sp_len = 0;
    px_ws_server_t *server = server_for(st, acc);
    if (server == NULL)
        return -1;
    pxpy_http_fields_t f;
    pxpy_http_fields_init(&f);
    if (pxpy_http_fields_add(&f, acc->headers) < 0) {
        pxpy_http_fields_free(&f);
        return -1;
    }
    pxpy_ws_socket_t *ws = pxpy_ws_socket_new(st, acc, chosen);
    if (ws == NULL) {
        pxpy_http_fields_free(&f);
        return -1;
    }
    pxpy_http_request_done(a->self);
    px_ws_conn_t *wc = NULL;
    int rc = px_ws_upgrade(a->ex, server, hs, sp, (size_t)sp_len, f.fields,
                           f.count, ws, &wc);
    pxpy_http_fields_free(&f);
    if (rc < 0) {
        Py_DECREF(ws);
        if (rc == PX_ECLOSED || rc == PX_EBADSTATE)
            return 0; /* the exchange is done */
        return pxpy_http_response_error(rc);
    }
    ws->wc = wc;
    Py_INCREF(ws); /* the connection's, until on_closed */
    if (acc->opened != Py_None) {
        PyObject *args[] = {(PyObject *)ws};
        call_member(ws, acc->opened, "websocket handler", args, 1);
    }
    Py_DECREF(ws);
    return 0;
}

int pxpy_ws_answer(pxpy_http_answer_t *a, PyObject *result)
{
    pxpy_ws_accept_t *acc = (pxpy_ws_accept_t *)result;
    px_http_request_t head;
    px_http_header_t fields[PX_HTTP_SERVER_MAX_HEADERS];
    PyObject *keep = NULL;
    if (request_head(a, acc, &head, fields, &keep) < 0) {
        Py_XDECREF(keep);
        return -1;
    }
    px_ws_handshake_t hs;
    int rc = px_ws_handshake_check(&head, acc->compression, 0, &hs);
    rc = rc < 0 ? refuse(a, rc) : upgrade(a, acc, &hs);
    Py_XDECREF(keep);
    return rc;
}

/* ---- module part -------------------------------------------------------- */

int pxpy_ws_exec(PyObject *module, pxpy_state *st)
{
    pxpy_ws_t *w = PyMem_Calloc(1, sizeof(*w));
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->ws = w;
    w->servers = PyDict_New();
    w->str_message_received = PyUnicode_InternFromString("message_received");
    w->str_websocket_closed = PyUnicode_InternFromString("websocket_closed");
    w->accept_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &accept_spec, NULL);
    if (w->servers == NULL || w->str_message_received == NULL ||
        w->str_websocket_closed == NULL || w->accept_type == NULL ||
        PyModule_AddType(module, w->accept_type) < 0)
        return -1;
    return pxpy_ws_socket_exec(module, st);
}

int pxpy_ws_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    pxpy_ws_t *w = st->ws;
    if (w == NULL)
        return 0;
    Py_VISIT(w->accept_type);
    Py_VISIT(w->socket_type);
    Py_VISIT(w->group_type);
    Py_VISIT(w->servers);
    return 0;
}

void pxpy_ws_free(pxpy_state *st)
{
    pxpy_ws_t *w = st->ws;
    if (w == NULL)
        return;
    Py_CLEAR(w->accept_type);
    Py_CLEAR(w->socket_type);
    Py_CLEAR(w->group_type);
    Py_CLEAR(w->servers);
    Py_CLEAR(w->str_message_received);
    Py_CLEAR(w->str_websocket_closed);
    PyMem_Free(w);
    st->ws = NULL;
}
