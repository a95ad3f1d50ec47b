/*
 * await.c - answers of handlers that return an awaitable (async def, and
 * the coroutine of an ASGI request): run as tasks of the worker loop of
 * the connection's worker, started eagerly (their first step runs in the
 * request's callback), and answered with their outcome once it is known,
 * if the request is still the one being handled by then (a stream or a
 * closed connection may have ended it meanwhile).
 */
#include "binding.h"
#include "http/http_binding.h"

typedef struct {
    pxpy_http_later_t later;
    bool raw;
} awaited_t;

static void awaited(void *arg, PyObject *result)
{
    awaited_t *w = arg;
    pxpy_http_protocol_t *self = w->later.self;
    bool ours = pxpy_http_later_current(&w->later);
    pxpy_http_answer_t a = pxpy_http_later_answer(&w->later);
    if (result == NULL) {
        if (!ours) {
            PyErr_Clear();
        } else if (pxpy_aio_cancelled()) {
            /* The loop is stopping: nothing will answer. */
            PyErr_Clear();
            pxpy_http_request_done(self);
            px_http_abort(a.ex);
        } else {
            pxpy_http_answer_failed(&a, "async handler");
        }
    } else if (ours) {
        PyObject *wire = Py_NewRef(result);
        pxpy_http_config_t *cfg = self->config;
        if (w->raw && cfg->to_wire != NULL && !PyBytes_CheckExact(wire) &&
            !PyUnicode_CheckExact(wire))
            Py_SETREF(wire, PyObject_CallOneArg(cfg->to_wire, wire));
        /* A stream answering keeps the request; anything else is given
         * now, on a thread the next request may run on at once. */
        if (wire != NULL && !Py_IS_TYPE(wire, cfg->st->http->stream_type) &&
            !pxpy_is_awaitable(wire) && !pxpy_http_is_stream_body(wire) &&
            !(PyTuple_Check(wire) && PyTuple_GET_SIZE(wire) >= 3 &&
              pxpy_http_is_stream_body(PyTuple_GET_ITEM(wire, 2))))
            pxpy_http_request_done(self);
        int rc = wire ? pxpy_http_answer(&a, wire) : -1;
        Py_XDECREF(wire);
        if (rc < 0)
            pxpy_http_answer_failed(&a, "async handler's result");
        else if (rc == 0)
            pxpy_http_request_done(self);
    }
    pxpy_http_later_release(&w->later);
    PyMem_RawFree(w);
}

int pxpy_http_await(pxpy_http_answer_t *a, PyObject *awaitable, bool raw)
{
    awaited_t *w = PyMem_RawCalloc(1, sizeof(*w));
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (pxpy_http_later_hold(&w->later, a) < 0) {
        PyMem_RawFree(w);
        return -1;
    }
    w->raw = raw;
    if (pxpy_aio_spawn_eager(a->self->config->st, awaitable, awaited, w) < 0) {
        pxpy_http_later_release(&w->later);
        PyMem_RawFree(w);
        return -1;
    }
    return 1;
}
