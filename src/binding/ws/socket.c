/*
 * socket.c - the WebSocket type (one upgraded connection: send, ping,
 * close, its state) and the WebSocketGroup type (a process-wide named
 * group to broadcast to).
 *
 * Sending copies the message into the connection's send queue (the engine
 * bounds it: see px_ws_send), so a WebSocket may be used from any thread,
 * worker or not; large messages are sent with the thread state detached.
 * A group is the engine's (px_ws_group_t): every interpreter of the
 * process that names a group reaches the same members, so a broadcast
 * from one worker reaches connections on all of them.
 */
#include "ws/ws_binding.h"

#include <string.h>

/* Messages from this size on are framed and queued detached. */
#define DETACH_BYTES (64u << 10)

/* ---- WebSocket ---------------------------------------------------------- */

pxpy_ws_socket_t *pxpy_ws_socket_new(pxpy_state *st, pxpy_ws_accept_t *acc,
                                     PyObject *subprotocol)
{
    PyTypeObject *tp = st->ws->socket_type;
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)tp->tp_alloc(tp, 0);
    if (ws == NULL)
        return NULL;
    atomic_init(&ws->state, PXPY_WS_OPEN);
    ws->request = Py_NewRef(acc->request);
    ws->subprotocol = Py_NewRef(subprotocol);
    if (PyObject_GetOptionalAttr(acc->target, st->ws->str_message_received,
                                 &ws->on_message) < 0 ||
        PyObject_GetOptionalAttr(acc->target, st->ws->str_websocket_closed,
                                 &ws->on_closed) < 0) {
        Py_DECREF(ws);
        return NULL;
    }
    return ws;
}

/* The message's bytes and opcode: str is text, a bytes-like object
 * binary. 0, or -1 with an exception; release view after. */
static int message_view(PyObject *msg, Py_buffer *view, int *opcode,
                        const char **data, Py_ssize_t *len)
{
    view->obj = NULL;
    if (PyUnicode_Check(msg)) {
        *data = PyUnicode_AsUTF8AndSize(msg, len);
        *opcode = PX_WS_OP_TEXT;
        return *data ? 0 : -1;
    }
    if (PyObject_GetBuffer(msg, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "a WebSocket message is str or bytes-like, not %.100s",
                     Py_TYPE(msg)->tp_name);
        return -1;
    }
    *data = view->buf;
    *len = view->len;
    *opcode = PX_WS_OP_BINARY;
    return 0;
}

static PyObject *socket_send(PyObject *op, PyObject *msg)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    if (ws->wc == NULL)
        Py_RETURN_FALSE;
    Py_buffer view;
    int opcode;
    const char *data;
    Py_ssize_t len;
    if (message_view(msg, &view, &opcode, &data, &len) < 0)
        return NULL;
    int rc;
    if ((size_t)len >= DETACH_BYTES) {
        Py_BEGIN_ALLOW_THREADS rc =
            px_ws_send(ws->wc, opcode, data, (size_t)len);
        Py_END_ALLOW_THREADS
    } else {
        rc = px_ws_send(ws->wc, opcode, data, (size_t)len);
    }
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    if (rc == PX_ECLOSED || rc == PX_ESENDBUF)
        Py_RETURN_FALSE;
    if (rc < 0)
        return pxpy_raise_engine_error(pxpy_state_from_object(op), rc,
                                       "sending a WebSocket message");
    Py_RETURN_TRUE;
}

static PyObject *socket_ping(PyObject *op, PyObject *args)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    Py_buffer data = {0};
    if (!PyArg_ParseTuple(args, "|y*:ping", &data))
        return NULL;
    int rc =
        ws->wc ? px_ws_ping(ws->wc, data.buf, (size_t)data.len) : PX_ECLOSED;
    PyBuffer_Release(&data);
    if (rc == -EINVAL) {
        PyErr_SetString(PyExc_ValueError,
                        "a ping's payload is at most 125 bytes");
        return NULL;
    }
    if (rc == PX_ECLOSED)
        Py_RETURN_FALSE;
    if (rc < 0)
        return pxpy_raise_engine_error(pxpy_state_from_object(op), rc,
                                       "sending a ping");
    Py_RETURN_TRUE;
}

static PyObject *socket_close(PyObject *op, PyObject *args, PyObject *kwargs)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    static char *kwlist[] = {"code", "reason", NULL};
    int code = PX_WS_CLOSE_NORMAL;
    const char *reason = "";
    Py_ssize_t len = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|is#:close", kwlist, &code,
                                     &reason, &len))
        return NULL;
    if (ws->wc != NULL &&
        px_ws_close(ws->wc, code, reason, (size_t)len) == -EINVAL) {
        PyErr_Format(PyExc_ValueError,
                     "close code %d is not one to send (1000-1003, "
                     "1007-1014, 3000-4999), or the reason is over 123 bytes",
                     code);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *socket_get_closed(PyObject *op, void *closure)
{
    (void)closure;
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    return PyBool_FromLong(atomic_load(&ws->state) == PXPY_WS_CLOSED ||
                           ws->wc == NULL || px_ws_closing(ws->wc));
}

static PyObject *socket_get_close_code(PyObject *op, void *closure)
{
    (void)closure;
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    if (atomic_load(&ws->state) != PXPY_WS_CLOSED)
        Py_RETURN_NONE;
    return PyLong_FromLong(ws->close_code);
}

static PyObject *socket_get_close_reason(PyObject *op, void *closure)
{
    (void)closure;
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    if (atomic_load(&ws->state) != PXPY_WS_CLOSED || ws->close_reason == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(ws->close_reason);
}

static PyObject *socket_get_buffered(PyObject *op, void *closure)
{
    (void)closure;
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    return PyLong_FromSize_t(ws->wc ? px_ws_buffered_amount(ws->wc) : 0);
}

static int socket_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(ws->request);
    Py_VISIT(ws->subprotocol);
    Py_VISIT(ws->on_message);
    Py_VISIT(ws->on_closed);
    Py_VISIT(ws->close_reason);
    return PyObject_VisitManagedDict(op, visit, arg);
}

static int socket_clear(PyObject *op)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    Py_CLEAR(ws->request);
    Py_CLEAR(ws->subprotocol);
    Py_CLEAR(ws->on_message);
    Py_CLEAR(ws->on_closed);
    Py_CLEAR(ws->close_reason);
    PyObject_ClearManagedDict(op);
    return 0;
}

static void socket_dealloc(PyObject *op)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    socket_clear(op);
    if (ws->wc != NULL)
        px_ws_conn_unref(ws->wc);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *socket_repr(PyObject *op)
{
    pxpy_ws_socket_t *ws = (pxpy_ws_socket_t *)op;
    return PyUnicode_FromFormat(
        "<WebSocket %s subprotocol=%R>",
        atomic_load(&ws->state) == PXPY_WS_CLOSED ? "closed" : "open",
        ws->subprotocol);
}

static PyMethodDef socket_methods[] = {
    {"send", socket_send, METH_O,
     "send($self, message, /)\n--\n\n"
     "Sends message: a str as a text message, a bytes-like object as a "
     "binary one, compressed when the client negotiated it. Any thread. "
     "True when queued; False when the connection is closing, or when the "
     "client left max_send_buffer bytes unread (the connection is then "
     "closed with 1008)."},
    {"ping", socket_ping, METH_VARARGS,
     "ping($self, data=b'', /)\n--\n\n"
     "Sends a ping (at most 125 bytes); the client's pong arrives by itself. "
     "False when the connection is closing."},
    {"close", (PyCFunction)(void (*)(void))socket_close,
     METH_VARARGS | METH_KEYWORDS,
     "close($self, /, code=1000, reason='')\n--\n\n"
     "Starts the closing handshake: the connection closes when the client "
     "answers, or after close_timeout. A second close does nothing."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef socket_members[] = {
    {"request", Py_T_OBJECT_EX, offsetof(pxpy_ws_socket_t, request),
     Py_READONLY, "The upgrade request."},
    {"subprotocol", Py_T_OBJECT_EX, offsetof(pxpy_ws_socket_t, subprotocol),
     Py_READONLY, "The subprotocol chosen, or None."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef socket_getset[] = {
    {"closed", socket_get_closed, NULL,
     "Whether the closing handshake started or the connection closed.", NULL},
    {"close_code", socket_get_close_code, NULL,
     "Once closed: the close code (the client's; 1006 when it left without "
     "one); None before.",
     NULL},
    {"close_reason", socket_get_close_reason, NULL,
     "Once closed: the close reason; None before.", NULL},
    {"buffered_amount", socket_get_buffered, NULL,
     "Bytes queued for the client and not yet sent.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot socket_slots[] = {
    {Py_tp_doc, "A WebSocket connection, made by the upgrade of a request "
                "(see pyparallel.http.websocket); attributes may be set on "
                "it for the connection's own state."},
    {Py_tp_traverse, socket_traverse},
    {Py_tp_clear, socket_clear},
    {Py_tp_dealloc, socket_dealloc},
    {Py_tp_repr, socket_repr},
    {Py_tp_methods, socket_methods},
    {Py_tp_members, socket_members},
    {Py_tp_getset, socket_getset},
    {0, NULL},
};

static PyType_Spec socket_spec = {
    .name = "pyparallel._core.WebSocket",
    .basicsize = sizeof(pxpy_ws_socket_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_MANAGED_DICT |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = socket_slots,
};

/* ---- WebSocketGroup ----------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    px_ws_group_t *group;
    PyObject *name;
} pxpy_ws_group_obj_t;

static int group_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    pxpy_ws_group_obj_t *self = (pxpy_ws_group_obj_t *)op;
    static char *kwlist[] = {"name", NULL};
    PyObject *name;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U:WebSocketGroup", kwlist,
                                     &name))
        return -1;
    if (self->group != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "WebSocketGroup already set up");
        return -1;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(name, &len);
    if (text == NULL)
        return -1;
    int rc = px_ws_group_get(text, (size_t)len, &self->group);
    if (rc < 0) {
        pxpy_raise_engine_error(pxpy_state_from_object(op), rc,
                                "making a WebSocket group");
        return -1;
    }
    self->name = Py_NewRef(name);
    return 0;
}

/* ws as a WebSocket of this module, or NULL with TypeError. */
static pxpy_ws_socket_t *as_socket(PyObject *group, PyObject *ws)
{
    pxpy_state *st = pxpy_state_from_object(group);
    if (!Py_IS_TYPE(ws, st->ws->socket_type)) {
        PyErr_Format(PyExc_TypeError, "expected a WebSocket, not %.100s",
                     Py_TYPE(ws)->tp_name);
        return NULL;
    }
    return (pxpy_ws_socket_t *)ws;
}

static px_ws_group_t *group_of(PyObject *op)
{
    pxpy_ws_group_obj_t *self = (pxpy_ws_group_obj_t *)op;
    if (self->group == NULL)
        PyErr_SetString(PyExc_RuntimeError,
                        "WebSocketGroup.__init__ was not called");
    return self->group;
}

static PyObject *group_join(PyObject *op, PyObject *arg)
{
    px_ws_group_t *g = group_of(op);
    pxpy_ws_socket_t *ws = g ? as_socket(op, arg) : NULL;
    if (ws == NULL)
        return NULL;
    if (ws->wc == NULL || px_ws_group_join(g, ws->wc) < 0)
        Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

static PyObject *group_leave(PyObject *op, PyObject *arg)
{
    px_ws_group_t *g = group_of(op);
    pxpy_ws_socket_t *ws = g ? as_socket(op, arg) : NULL;
    if (ws == NULL)
        return NULL;
    if (ws->wc != NULL)
        px_ws_group_leave(g, ws->wc);
    Py_RETURN_NONE;
}

static PyObject *group_broadcast(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"message", "exclude", NULL};
    PyObject *msg, *exclude = Py_None;
    px_ws_group_t *g = group_of(op);
    if (g == NULL || !PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:broadcast",
                                                  kwlist, &msg, &exclude))
        return NULL;
    const px_ws_conn_t *except = NULL;
    if (exclude != Py_None) {
        pxpy_ws_socket_t *ws = as_socket(op, exclude);
        if (ws == NULL)
            return NULL;
        except = ws->wc;
    }
    Py_buffer view;
    int opcode;
    const char *data;
    Py_ssize_t len;
    if (message_view(msg, &view, &opcode, &data, &len) < 0)
        return NULL;
    long sent;
    /* Many members make even a small message worth detaching for. */
    Py_BEGIN_ALLOW_THREADS sent =
        px_ws_group_broadcast(g, opcode, data, (size_t)len, except);
    Py_END_ALLOW_THREADS if (view.obj != NULL) PyBuffer_Release(&view);
    if (sent < 0)
        return pxpy_raise_engine_error(pxpy_state_from_object(op), (int)sent,
                                       "broadcasting a WebSocket message");
    return PyLong_FromLong(sent);
}

static Py_ssize_t group_len(PyObject *op)
{
    px_ws_group_t *g = group_of(op);
    return g ? (Py_ssize_t)px_ws_group_size(g) : -1;
}

static int group_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((pxpy_ws_group_obj_t *)op)->name);
    return 0;
}

static int group_clear(PyObject *op)
{
    Py_CLEAR(((pxpy_ws_group_obj_t *)op)->name);
    return 0;
}

static void group_dealloc(PyObject *op)
{
    pxpy_ws_group_obj_t *self = (pxpy_ws_group_obj_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    group_clear(op);
    if (self->group != NULL)
        px_ws_group_unref(self->group);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *group_repr(PyObject *op)
{
    pxpy_ws_group_obj_t *self = (pxpy_ws_group_obj_t *)op;
    return PyUnicode_FromFormat("<WebSocketGroup %R>", self->name);
}

static PyMethodDef group_methods[] = {
    {"join", group_join, METH_O,
     "join($self, ws, /)\n--\n\n"
     "Adds ws; False when it is closing. It leaves by itself when it "
     "closes."},
    {"leave", group_leave, METH_O,
     "leave($self, ws, /)\n--\n\nRemoves ws (when it is a member)."},
    {"broadcast", (PyCFunction)(void (*)(void))group_broadcast,
     METH_VARARGS | METH_KEYWORDS,
     "broadcast($self, /, message, exclude=None)\n--\n\n"
     "Sends message (str: text, bytes-like: binary) to every member but "
     "exclude, on whichever worker each is; returns how many it was queued "
     "for. A member that left max_send_buffer unread is closed with 1008 "
     "instead of being sent more."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef group_members[] = {
    {"name", Py_T_OBJECT_EX, offsetof(pxpy_ws_group_obj_t, name), Py_READONLY,
     "The group's name."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot group_slots[] = {
    {Py_tp_doc,
     "WebSocketGroup(name)\n--\n\n"
     "The process-wide group of WebSockets called name: every worker and "
     "interpreter that names it reaches the same members. Broadcasting "
     "frames a message once and queues it for every member without a lock "
     "common to all groups."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, group_init},
    {Py_tp_traverse, group_traverse},
    {Py_tp_clear, group_clear},
    {Py_tp_dealloc, group_dealloc},
    {Py_tp_repr, group_repr},
    {Py_tp_methods, group_methods},
    {Py_tp_members, group_members},
    {Py_mp_length, group_len},
    {0, NULL},
};

static PyType_Spec group_spec = {
    .name = "pyparallel._core.WebSocketGroup",
    .basicsize = sizeof(pxpy_ws_group_obj_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = group_slots,
};

int pxpy_ws_socket_exec(PyObject *module, pxpy_state *st)
{
    pxpy_ws_t *w = st->ws;
    w->socket_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &socket_spec, NULL);
    w->group_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &group_spec, NULL);
    if (w->socket_type == NULL || w->group_type == NULL ||
        PyModule_AddType(module, w->socket_type) < 0 ||
        PyModule_AddType(module, w->group_type) < 0)
        return -1;
    return 0;
}
