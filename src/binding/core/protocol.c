/*
 * protocol.c - protocol classes: what register() learns about a class once
 * (the protocol cache), and the engine's connection callbacks, which turn
 * connection events into calls of the protocol's members.
 *
 * The cache. register() looks every member up on the class once: a callback
 * defined as a plain function is called directly with the instance as its
 * first argument (the common case: no bound method per event); anything
 * else (staticmethod, classmethod, a callable object) is called as a method
 * by name, which is what Python would do. initial_bytes_to_send and
 * next_bytes_to_send are converted to bytes once, or kept as a callable
 * taking no arguments (a function whose only parameter is self is called
 * with the instance). lines_mode and max_line_length are read once too.
 *
 * A connection's life, as protocol.c sees it: on_open creates the Transport
 * for an accepted connection (the listener's Transport is the initial user
 * data; a connection that arrives before register() waits for the
 * protocol), instantiates the class, sends initial_bytes_to_send and runs
 * connection_made; on_data runs data_received, lines_received or replies
 * with next_bytes_to_send; on_eof (the peer half-closed) runs
 * eof_received, whose true result keeps the connection open for sending,
 * or closes it; on_send_complete runs send_complete; on_close runs
 * connection_lost and drops the engine's reference to the Transport.
 * Whatever a callback returns is sent (eof_received's is a flag). A
 * callback that raises goes to exception_handler, or is logged and counted
 * and closes the connection, after which the connection gets no more
 * data.
 *
 * Any of these members may be async def (or return another awaitable): the
 * coroutine runs as a task of the connection's worker's asyncio loop
 * (aio.c), the connection's next events wait until it is done, and what it
 * returns is treated as the member's return value (see "awaiting").
 *
 * Mode "interpreters" (interp/xproto.c): the protocol cache and the
 * Transport of a connection live in the interpreter of the worker that
 * serves it; on_open and on_close ask xproto.c for them.
 */
#include "interp/interp.h"
#include "shared/shared.h" /* pxpy_immortalize_code */

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_MAX_LINE_LENGTH 65536

typedef enum {
    CB_ABSENT = 0,
    CB_FUNCTION, /* a plain function: cb(instance, transport, ...) */
    CB_METHOD,   /* anything else: instance.<name>(transport, ...) */
} cb_kind_t;

typedef enum {
    DATA_NONE = 0,
    DATA_BYTES,  /* value is bytes */
    DATA_CALL,   /* value() */
    DATA_METHOD, /* value(instance) */
} data_kind_t;

typedef struct {
    PyObject *value;
    data_kind_t kind;
} data_attr_t;

typedef struct {
    PyObject_HEAD
    PyObject *cls;
    PyObject *cb[PXPY_CB_COUNT];
    cb_kind_t cb_kind[PXPY_CB_COUNT];
    data_attr_t initial; /* initial_bytes_to_send */
    data_attr_t next;    /* next_bytes_to_send */
    bool lines_mode;
    Py_ssize_t max_line_length;
    PyObject *http; /* HttpProtocol subclasses: http/config.c's */
} pxpy_protocol_t;

#define PROTOCOL(t) ((pxpy_protocol_t *)(t)->protocol)

static const char *class_name(pxpy_protocol_t *p)
{
    return ((PyTypeObject *)p->cls)->tp_name;
}

/* ---- the cache ---------------------------------------------------------- */

/* The class attribute name as stored in the class or a base (not bound),
 * as a new reference; NULL without an exception when absent. */
static PyObject *class_lookup(PyTypeObject *cls, PyObject *name)
{
    PyObject *mro = cls->tp_mro;
    Py_ssize_t n = mro ? PyTuple_GET_SIZE(mro) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *dict =
            PyType_GetDict((PyTypeObject *)PyTuple_GET_ITEM(mro, i));
        if (dict == NULL)
            continue;
        PyObject *value;
        int rc = PyDict_GetItemRef(dict, name, &value);
        Py_DECREF(dict);
        if (rc != 0)
            return rc > 0 ? value : NULL;
    }
    return NULL;
}

/* Whether a function must be given the instance: it takes a positional
 * parameter (self) or *args. */
static bool takes_self(PyObject *func)
{
    PyCodeObject *code = (PyCodeObject *)PyFunction_GetCode(func);
    return code->co_argcount > 0 || (code->co_flags & CO_VARARGS);
}

static int load_callback(pxpy_protocol_t *p, pxpy_state *st, int cb)
{
    PyObject *name = st->str_cache[cb];
    PyObject *raw = class_lookup((PyTypeObject *)p->cls, name);
    if (raw == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (raw == Py_None) {
        Py_DECREF(raw);
        return 0;
    }
    if (PyFunction_Check(raw)) {
        p->cb[cb] = raw;
        p->cb_kind[cb] = CB_FUNCTION;
        return 0;
    }
    bool descriptor = Py_TYPE(raw)->tp_descr_get != NULL;
    if (!descriptor && !PyCallable_Check(raw)) {
        PyErr_Format(PyExc_TypeError,
                     "protocol %.200s.%U must be a method, not %.100s",
                     class_name(p), name, Py_TYPE(raw)->tp_name);
        Py_DECREF(raw);
        return -1;
    }
    Py_DECREF(raw);
    p->cb_kind[cb] = CB_METHOD;
    return 0;
}

static int load_data(pxpy_protocol_t *p, PyObject *name, data_attr_t *out)
{
    PyObject *raw = class_lookup((PyTypeObject *)p->cls, name);
    if (raw == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (raw == Py_None) {
        Py_DECREF(raw);
        return 0;
    }
    if (PyFunction_Check(raw)) {
        out->value = raw;
        out->kind = takes_self(raw) ? DATA_METHOD : DATA_CALL;
        return 0;
    }
    Py_DECREF(raw);
    /* A staticmethod or classmethod unwraps (or binds) through the class. */
    PyObject *value = PyObject_GetAttr(p->cls, name);
    if (value == NULL)
        return -1;
    if (PyCallable_Check(value)) {
        out->value = value;
        out->kind = DATA_CALL;
        return 0;
    }
    char who[256];
    snprintf(who, sizeof(who), "protocol %.120s.%s is", class_name(p),
             PyUnicode_AsUTF8(name));
    out->value = pxpy_sendable_to_bytes(value, who);
    Py_DECREF(value);
    if (out->value == NULL)
        return -1;
    out->kind = DATA_BYTES;
    return 0;
}

static int load_line_options(pxpy_protocol_t *p, pxpy_state *st)
{
    PyObject *v =
        class_lookup((PyTypeObject *)p->cls, PXPY_STR(st, LINES_MODE));
    if (v == NULL && PyErr_Occurred())
        return -1;
    if (v != NULL) {
        int on = PyObject_IsTrue(v);
        Py_DECREF(v);
        if (on < 0)
            return -1;
        p->lines_mode = on;
    }
    p->max_line_length = DEFAULT_MAX_LINE_LENGTH;
    v = class_lookup((PyTypeObject *)p->cls, PXPY_STR(st, MAX_LINE_LENGTH));
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError,
                     "protocol %.200s.max_line_length must be an int, not "
                     "%.100s",
                     class_name(p), Py_TYPE(v)->tp_name);
        Py_DECREF(v);
        return -1;
    }
    p->max_line_length = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (p->max_line_length == -1 && PyErr_Occurred())
        return -1;
    if (p->max_line_length < 1) {
        PyErr_Format(PyExc_ValueError,
                     "protocol %.200s.max_line_length must be >= 1",
                     class_name(p));
        return -1;
    }
    return 0;
}

PyObject *pxpy_protocol_new(pxpy_state *st, PyObject *cls)
{
    pxpy_protocol_t *p = PyObject_GC_New(pxpy_protocol_t, st->protocol_type);
    if (p == NULL)
        return NULL;
    p->cls = Py_NewRef(cls);
    for (int i = 0; i < PXPY_CB_COUNT; i++) {
        p->cb[i] = NULL;
        p->cb_kind[i] = CB_ABSENT;
    }
    p->initial = (data_attr_t){NULL, DATA_NONE};
    p->next = (data_attr_t){NULL, DATA_NONE};
    p->lines_mode = false;
    p->max_line_length = DEFAULT_MAX_LINE_LENGTH;
    p->http = NULL;
    PyObject_GC_Track(p);
    for (int i = 0; i < PXPY_CB_COUNT; i++)
        if (load_callback(p, st, i) < 0)
            goto error;
    if (load_data(p, PXPY_STR(st, INITIAL_BYTES_TO_SEND), &p->initial) < 0 ||
        load_data(p, PXPY_STR(st, NEXT_BYTES_TO_SEND), &p->next) < 0 ||
        load_line_options(p, st) < 0 ||
        pxpy_http_config_new(st, cls, &p->http) < 0)
        goto error;
    /* Its methods run on every worker: see pxpy_immortalize_func. */
    if (pxpy_immortalize_code(cls) < 0)
        goto error;
    return (PyObject *)p;
error:
    Py_DECREF(p);
    return NULL;
}

bool pxpy_protocol_wants_sends(PyObject *protocol)
{
    return ((pxpy_protocol_t *)protocol)->cb_kind[PXPY_CB_SEND_COMPLETE] !=
           CB_ABSENT;
}

static int protocol_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_protocol_t *p = (pxpy_protocol_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(p->cls);
    for (int i = 0; i < PXPY_CB_COUNT; i++)
        Py_VISIT(p->cb[i]);
    Py_VISIT(p->initial.value);
    Py_VISIT(p->next.value);
    Py_VISIT(p->http);
    return 0;
}

static int protocol_clear(PyObject *op)
{
    pxpy_protocol_t *p = (pxpy_protocol_t *)op;
    Py_CLEAR(p->cls);
    for (int i = 0; i < PXPY_CB_COUNT; i++)
        Py_CLEAR(p->cb[i]);
    Py_CLEAR(p->initial.value);
    Py_CLEAR(p->next.value);
    Py_CLEAR(p->http);
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

static PyType_Slot protocol_slots[] = {
    {Py_tp_doc, "What register() learned about a protocol class."},
    {Py_tp_traverse, protocol_traverse},
    {Py_tp_clear, protocol_clear},
    {Py_tp_dealloc, protocol_dealloc},
    {0, NULL},
};

static PyType_Spec protocol_spec = {
    .name = "pyparallel._core.ProtocolCache",
    .basicsize = sizeof(pxpy_protocol_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = protocol_slots,
};

int pxpy_protocol_exec(PyObject *module, pxpy_state *st)
{
    st->protocol_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &protocol_spec, NULL);
    return st->protocol_type ? 0 : -1;
}

/* ---- calling the protocol ----------------------------------------------- */

/* Calls callback cb with (transport[, arg]); a new reference or NULL. */
static PyObject *call_member(pxpy_transport_t *t, int cb, PyObject *arg)
{
    pxpy_protocol_t *p = PROTOCOL(t);
    PyObject *args[] = {t->instance, (PyObject *)t, arg};
    size_t n = arg ? 3 : 2;
    if (p->cb_kind[cb] == CB_FUNCTION)
        return PyObject_Vectorcall(p->cb[cb], args, n, NULL);
    return PyObject_VectorcallMethod(t->st->str_cache[cb], args, n, NULL);
}

static void close_after_error(pxpy_transport_t *t)
{
    atomic_fetch_or(&t->flags, PXPY_T_FAILED);
    px_conn_t *conn = atomic_load(&t->conn);
    if (conn != NULL)
        px_conn_close(conn, 0);
}

/* Handles the exception a protocol member (named what) raised: the
 * exception handler takes it, or it is logged and counted and the
 * connection closes. */
static void member_failed(pxpy_transport_t *t, const char *what)
{
    pxpy_protocol_t *p = PROTOCOL(t);
    char where[320];
    if (p->cb_kind[PXPY_CB_EXCEPTION_HANDLER] != CB_ABSENT &&
        t->instance != NULL && strcmp(what, "exception_handler") != 0) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *r = call_member(t, PXPY_CB_EXCEPTION_HANDLER, exc);
        Py_DECREF(exc);
        if (r != NULL) {
            Py_DECREF(r);
            return;
        }
        what = "exception_handler";
    }
    snprintf(where, sizeof(where), "%.200s.%s", class_name(p), what);
    pxpy_report_callback_error(t->st, where);
    close_after_error(t);
}

/* ---- coroutine callbacks ------------------------------------------------ */

/* A member that returned an awaitable (an async def callback): it runs as a
 * task of the worker's asyncio loop, and the connection's events are held
 * back (px_conn_suspend_events) until the task is done, so one
 * connection's callbacks still run in order and never overlap. What the
 * task returns is then treated as the member's return value. */
typedef struct {
    pxpy_transport_t *t; /* a reference */
    const char *what;
    int cb;          /* PXPY_CB_*: what to do with the outcome */
    PyObject *lines; /* lines mode: bytes received after the line */
} awaited_t;

static awaited_t *await_member(pxpy_transport_t *t, int cb, const char *what,
                               PyObject *awaitable);

/* Sends what a member returned (None: nothing), or handles its failure; an
 * awaitable is awaited first (and returned: the caller holds on until it
 * is done). */
static awaited_t *deliver(pxpy_transport_t *t, const char *what, PyObject *r)
{
    if (r == NULL) {
        member_failed(t, what);
        return NULL;
    }
    if (r != Py_None) {
        if (pxpy_is_awaitable(r))
            return await_member(t, PXPY_CB_COUNT, what, r);
        if (pxpy_transport_send(t, r, what, true) < 0)
            member_failed(t, what);
    }
    Py_DECREF(r);
    return NULL;
}

/* initial_bytes_to_send / next_bytes_to_send. */
static void send_data_attr(pxpy_transport_t *t, const data_attr_t *d,
                           const char *what)
{
    PyObject *r;
    switch (d->kind) {
    case DATA_BYTES:
        r = Py_NewRef(d->value);
        break;
    case DATA_CALL:
        r = PyObject_CallNoArgs(d->value);
        break;
    case DATA_METHOD:
        r = PyObject_CallOneArg(d->value, t->instance);
        break;
    case DATA_NONE:
    default:
        return;
    }
    deliver(t, what, r);
}

static bool may_deliver(pxpy_transport_t *t)
{
    return t != NULL && t->kind == PXPY_TRANSPORT_CONNECTION &&
           t->instance != NULL &&
           !(atomic_load(&t->flags) & (PXPY_T_FAILED | PXPY_T_CLOSED));
}

/* ---- lines mode --------------------------------------------------------- */

static int line_too_long(pxpy_transport_t *t)
{
    PyErr_Format(PyExc_ValueError,
                 "a line is longer than max_line_length (%zd bytes); set "
                 "max_line_length on the protocol class to allow longer ones",
                 PROTOCOL(t)->max_line_length);
    return -1;
}

/* Delivers one complete line (without its \n; a trailing \r goes too);
 * returns the task when lines_received is awaited. */
static awaited_t *deliver_line(pxpy_transport_t *t, const char *line,
                               size_t len)
{
    if (len && line[len - 1] == '\r')
        len--;
    if ((Py_ssize_t)len > PROTOCOL(t)->max_line_length) {
        line_too_long(t);
        member_failed(t, "lines_received");
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize(line, (Py_ssize_t)len);
    PyObject *r = b ? call_member(t, PXPY_CB_LINES_RECEIVED, b) : NULL;
    Py_XDECREF(b);
    return deliver(t, "lines_received", r);
}

/* The bytes after an awaited line wait in its task, to be delivered when it
 * is done. */
static void keep_rest(awaited_t *aw, const char *p, const char *end)
{
    if (aw == NULL || p >= end)
        return;
    aw->lines = PyBytes_FromStringAndSize(p, end - p);
    if (aw->lines == NULL)
        member_failed(aw->t, "lines_received");
}

static int buffer_partial(pxpy_transport_t *t, const char *data, size_t len)
{
    size_t need = t->line_len + len;
    if (need > (size_t)PROTOCOL(t)->max_line_length + 1)
        return line_too_long(t); /* + 1: room for a \r before its \n */
    if (need > t->line_cap) {
        size_t cap = t->line_cap ? t->line_cap : 256;
        while (cap < need)
            cap *= 2;
        char *grown = PyMem_RawRealloc(t->line_buf, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->line_buf = grown;
        t->line_cap = cap;
    }
    memcpy(t->line_buf + t->line_len, data, len);
    t->line_len = need;
    return 0;
}

static void deliver_lines(pxpy_transport_t *t, const char *data, size_t len)
{
    const char *p = data, *end = data + len;
    if (t->line_len) {
        const char *nl = memchr(p, '\n', len);
        if (nl == NULL) {
            if (buffer_partial(t, p, len) < 0)
                member_failed(t, "lines_received");
            return;
        }
        if (buffer_partial(t, p, (size_t)(nl - p)) < 0) {
            member_failed(t, "lines_received");
            return;
        }
        size_t n = t->line_len;
        t->line_len = 0;
        awaited_t *aw = deliver_line(t, t->line_buf, n);
        p = nl + 1;
        if (aw != NULL) {
            keep_rest(aw, p, end);
            return;
        }
    }
    while (p < end && may_deliver(t)) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            if (buffer_partial(t, p, (size_t)(end - p)) < 0)
                member_failed(t, "lines_received");
            return;
        }
        awaited_t *aw = deliver_line(t, p, (size_t)(nl - p));
        p = nl + 1;
        if (aw != NULL) {
            keep_rest(aw, p, end);
            return;
        }
    }
}

/* ---- awaiting ------------------------------------------------------------ */

static void eof_outcome(pxpy_transport_t *t, PyObject *r);
static void lost_cleanup(pxpy_transport_t *t);

static void member_awaited(void *arg, PyObject *result)
{
    awaited_t *aw = arg;
    pxpy_transport_t *t = aw->t;
    /* Cancelled: the loop is stopping (or the coroutine gave up), not a
     * failure of the protocol. */
    if (result == NULL && pxpy_aio_cancelled()) {
        PyErr_Clear();
        result = Py_None;
    }
    /* Cleared first: an outcome that is awaited in turn sets it again. */
    atomic_fetch_and(&t->flags, ~PXPY_T_AWAITING);
    if (aw->cb == PXPY_CB_EOF_RECEIVED) {
        eof_outcome(t, result ? Py_NewRef(result) : NULL);
    } else if (aw->cb == PXPY_CB_CONNECTION_LOST) {
        if (result == NULL)
            member_failed(t, "connection_lost");
        lost_cleanup(t);
    } else {
        awaited_t *next =
            deliver(t, aw->what, result ? Py_NewRef(result) : NULL);
        if (next == NULL && aw->lines != NULL && may_deliver(t))
            deliver_lines(t, PyBytes_AS_STRING(aw->lines),
                          (size_t)PyBytes_GET_SIZE(aw->lines));
    }
    /* Resumed unless the outcome (or the lines after it) is awaited in
     * turn, which suspended the connection again. */
    if (aw->cb != PXPY_CB_CONNECTION_LOST &&
        !(atomic_load(&t->flags) & PXPY_T_AWAITING)) {
        px_conn_t *conn = atomic_load(&t->conn);
        if (conn != NULL)
            px_conn_resume_events(conn);
    }
    Py_XDECREF(aw->lines);
    Py_DECREF(t);
    PyMem_RawFree(aw);
}

static awaited_t *await_member(pxpy_transport_t *t, int cb, const char *what,
                               PyObject *awaitable)
{
    awaited_t *aw = PyMem_RawCalloc(1, sizeof(*aw));
    if (aw == NULL) {
        Py_DECREF(awaitable);
        PyErr_NoMemory();
        member_failed(t, what);
        return NULL;
    }
    aw->t = (pxpy_transport_t *)Py_NewRef(t);
    aw->what = what;
    aw->cb = cb;
    px_conn_t *conn = atomic_load(&t->conn);
    if (cb != PXPY_CB_CONNECTION_LOST) {
        atomic_fetch_or(&t->flags, PXPY_T_AWAITING);
        if (conn != NULL)
            px_conn_suspend_events(conn);
    }
    int rc = pxpy_aio_spawn(t->st, awaitable, member_awaited, aw);
    Py_DECREF(awaitable);
    if (rc < 0) {
        member_awaited(aw, NULL);
        return NULL;
    }
    return aw;
}

/* ---- engine callbacks --------------------------------------------------- */

/* Creates the instance, then sends initial_bytes_to_send and runs
 * connection_made. */
static void open_protocol(pxpy_transport_t *t, px_conn_t *conn)
{
    pxpy_protocol_t *p = PROTOCOL(t);
    atomic_fetch_or(&t->flags, PXPY_T_STARTED);
    t->instance = PyObject_CallNoArgs(p->cls);
    if (t->instance == NULL) {
        member_failed(t, "__init__");
        return;
    }
    if (p->http != NULL) {
        if (pxpy_http_open(t, conn, p->http) < 0)
            member_failed(t, "__init__");
        return;
    }
    if (p->cb_kind[PXPY_CB_SEND_COMPLETE] != CB_ABSENT)
        px_conn_notify_sends(conn, 1);
    send_data_attr(t, &p->initial, "initial_bytes_to_send");
    if (p->cb_kind[PXPY_CB_CONNECTION_MADE] != CB_ABSENT && may_deliver(t))
        deliver(t, "connection_made",
                call_member(t, PXPY_CB_CONNECTION_MADE, NULL));
}

/* The connection's Transport, storing conn in it when a client's connect
 * completes before px_connect returned. */
static pxpy_transport_t *transport_of(px_conn_t *conn)
{
    pxpy_transport_t *t = px_conn_data(conn);
    if (t != NULL && t->kind == PXPY_TRANSPORT_CONNECTION &&
        atomic_load(&t->conn) == NULL) {
        px_conn_t *expected = NULL;
        px_conn_ref(conn);
        if (!atomic_compare_exchange_strong(&t->conn, &expected, conn))
            px_conn_unref(conn);
    }
    return t;
}

static void on_open(px_conn_t *conn)
{
    bool attached = pxpy_attach();
    pxpy_transport_t *t = transport_of(conn);
    if (t != NULL && t->kind == PXPY_TRANSPORT_LISTENER) {
        pxpy_transport_t *listener = t;
        pxpy_state *st = listener->st;
        PyObject *protocol = pxpy_await_protocol(st, listener);
        if (protocol != NULL && listener->xproto != NULL) {
            /* Served in this worker's interpreter. */
            protocol = pxpy_xproto_accept(&st, listener->xproto);
            if (protocol == NULL) {
                pxpy_report_callback_error(st, "accepting a connection");
                px_conn_close(conn, 1);
                pxpy_detach(attached);
                return;
            }
        }
        t = protocol ? pxpy_transport_new_connection(st, conn) : NULL;
        if (t == NULL) {
            /* The listener closed or the loop stops before register(), or
             * out of memory: refuse the connection. */
            if (protocol != NULL)
                pxpy_report_callback_error(st, "accepting a connection");
            px_conn_close(conn, 1);
            pxpy_detach(attached);
            return;
        }
        t->protocol = Py_NewRef(protocol);
        atomic_fetch_or(&t->flags, PXPY_T_COUNTED);
        pxpy_registered_add(st, 1);
        PyObject_GC_Track(t);
        px_conn_set_data(conn, t); /* our reference becomes the engine's */
    } else if (t != NULL && t->xproto != NULL) {
        t = pxpy_xproto_client_open(t, conn);
        if (t == NULL) {
            px_conn_close(conn, 1);
            pxpy_detach(attached);
            return;
        }
    }
    if (t != NULL) {
        pxpy_transport_capture_addrs(t);
        open_protocol(t, conn);
    }
    pxpy_detach(attached);
}

static void on_data(px_conn_t *conn, const char *data, size_t len)
{
    bool attached = pxpy_attach();
    pxpy_transport_t *t = px_conn_data(conn);
    if (may_deliver(t)) {
        pxpy_protocol_t *p = PROTOCOL(t);
        if (p->http != NULL) {
            pxpy_http_data(t, data, len);
        } else if (p->next.kind != DATA_NONE) {
            send_data_attr(t, &p->next, "next_bytes_to_send");
        } else if (p->lines_mode) {
            if (p->cb_kind[PXPY_CB_LINES_RECEIVED] != CB_ABSENT)
                deliver_lines(t, data, len);
        } else if (p->cb_kind[PXPY_CB_DATA_RECEIVED] != CB_ABSENT) {
            PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
            PyObject *r = b ? call_member(t, PXPY_CB_DATA_RECEIVED, b) : NULL;
            Py_XDECREF(b);
            deliver(t, "data_received", r);
        }
    }
    pxpy_detach(attached);
}

/* The peer half-closed (asyncio's rule): eof_received returning true keeps
 * the connection open for the protocol to send and close; otherwise (or
 * without eof_received) it closes once what is queued is sent. An HTTP
 * connection closes when its requests are answered. */
static void on_eof(px_conn_t *conn)
{
    bool attached = pxpy_attach();
    pxpy_transport_t *t = px_conn_data(conn);
    bool keep_open = false;
    if (may_deliver(t)) {
        pxpy_protocol_t *p = PROTOCOL(t);
        if (p->http != NULL) {
            pxpy_http_eof(t);
            keep_open = true;
        } else if (p->cb_kind[PXPY_CB_EOF_RECEIVED] != CB_ABSENT) {
            PyObject *r = call_member(t, PXPY_CB_EOF_RECEIVED, NULL);
            if (r != NULL && pxpy_is_awaitable(r)) {
                await_member(t, PXPY_CB_EOF_RECEIVED, "eof_received", r);
                pxpy_detach(attached);
                return;
            }
            eof_outcome(t, r);
            pxpy_detach(attached);
            return;
        }
    }
    if (!keep_open)
        px_conn_close(conn, 0);
    pxpy_detach(attached);
}

/* What eof_received returned (consumed; NULL: it raised): true keeps the
 * connection open. */
static void eof_outcome(pxpy_transport_t *t, PyObject *r)
{
    int truth = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (truth < 0)
        member_failed(t, "eof_received");
    px_conn_t *conn = atomic_load(&t->conn);
    if (truth <= 0 && conn != NULL)
        px_conn_close(conn, 0);
}

static void on_send_complete(px_conn_t *conn, uint64_t send_id)
{
    bool attached = pxpy_attach();
    pxpy_transport_t *t = px_conn_data(conn);
    if (may_deliver(t) &&
        PROTOCOL(t)->cb_kind[PXPY_CB_SEND_COMPLETE] != CB_ABSENT) {
        PyObject *id = PyLong_FromUnsignedLongLong(send_id);
        PyObject *r = id ? call_member(t, PXPY_CB_SEND_COMPLETE, id) : NULL;
        Py_XDECREF(id);
        deliver(t, "send_complete", r);
    }
    pxpy_detach(attached);
}

/* A client's name that did not resolve: socket.gaierror, as
 * socket.getaddrinfo raises it, with the name added to the resolver's
 * message. */
static PyObject *resolve_error(int error, const char *host)
{
    PyObject *name =
        PyUnicode_DecodeUTF8(host, (Py_ssize_t)strlen(host), "replace");
    PyObject *message = name ? PyUnicode_FromFormat("%s (resolving %R)",
                                                    px_strerror(error), name)
                             : NULL;
    PyObject *exc = message ? pxpy_gaierror(error, message) : NULL;
    Py_XDECREF(message);
    Py_XDECREF(name);
    return exc;
}

/* connection_lost's exc: None for a clean or local close, else an OSError
 * (the errno's subclass; socket.gaierror for a name that did not resolve)
 * or an AsyncError. */
static PyObject *close_reason(pxpy_state *st, int error, const char *host)
{
    if (error == 0 || error == PX_ECLOSED)
        return Py_NewRef(Py_None);
    if (PX_IS_EAI(error))
        return resolve_error(error, host);
    if (error < 0 && error > -4096)
        return PyObject_CallFunction(PyExc_OSError, "is", -error,
                                     px_strerror(error));
    return PyObject_CallFunction(st->async_error, "s", px_strerror(error));
}

static void on_close(px_conn_t *conn, int error)
{
    bool attached = pxpy_attach();
    pxpy_transport_t *t = transport_of(conn);
    if (t == NULL || t->kind == PXPY_TRANSPORT_LISTENER) {
        /* Never opened: the listener's Transport was never replaced. */
        pxpy_detach(attached);
        return;
    }
    if (t->xproto != NULL) {
        /* A client that never opened in mode "interpreters". */
        pxpy_transport_t *main_t = t;
        t = pxpy_xproto_client_open(main_t, conn);
        if (t == NULL) {
            pxpy_detach(attached);
            return;
        }
    }
    /* A client whose connect failed never ran on_open: it still learns
     * why, through connection_lost. */
    if (!(atomic_load(&t->flags) & PXPY_T_STARTED) && t->protocol != NULL) {
        atomic_fetch_or(&t->flags, PXPY_T_STARTED);
        t->instance = PyObject_CallNoArgs(PROTOCOL(t)->cls);
        if (t->instance == NULL)
            member_failed(t, "__init__");
    }
    atomic_fetch_or(&t->flags, PXPY_T_CLOSED);
    if (t->instance != NULL && PROTOCOL(t)->http != NULL)
        pxpy_http_closed(t);
    if (t->instance != NULL &&
        PROTOCOL(t)->cb_kind[PXPY_CB_CONNECTION_LOST] != CB_ABSENT) {
        PyObject *exc = close_reason(t->st, error, t->peer_host);
        PyObject *r = exc ? call_member(t, PXPY_CB_CONNECTION_LOST, exc) : NULL;
        Py_XDECREF(exc);
        if (r != NULL && pxpy_is_awaitable(r)) {
            /* The rest waits for the coroutine (the engine is done with
             * the connection). */
            px_conn_set_data(conn, NULL);
            await_member(t, PXPY_CB_CONNECTION_LOST, "connection_lost", r);
            Py_DECREF(t); /* the engine's reference */
            pxpy_detach(attached);
            return;
        }
        if (r == NULL)
            member_failed(t, "connection_lost");
        Py_XDECREF(r);
    }
    px_conn_set_data(conn, NULL);
    lost_cleanup(t);
    Py_DECREF(t); /* the engine's reference */
    pxpy_detach(attached);
}

/* After connection_lost (or its coroutine) ended. */
static void lost_cleanup(pxpy_transport_t *t)
{
    /* The instance often refers to the transport: break that cycle now. */
    Py_CLEAR(t->instance);
    PyMem_RawFree(t->line_buf);
    t->line_buf = NULL;
    t->line_len = t->line_cap = 0;
    pxpy_transport_uncount(t);
    pxpy_transport_t *main_peer = t->main_peer;
    t->main_peer = NULL;
    if (main_peer != NULL)
        pxpy_xproto_release_peer(main_peer);
}

const px_conn_callbacks_t pxpy_conn_callbacks = {
    .on_open = on_open,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_send_complete = on_send_complete,
    .on_close = on_close,
};
