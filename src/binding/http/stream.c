/*
 * stream.c - answers that come after the request callback: streamed bodies
 * (iterators, async iterators) and the HttpStream type that adapters write
 * through (HttpProtocol._px_stream()). Handlers that return an awaitable
 * are await.c's.
 *
 * An HttpStream stands for one exchange. While the request is unanswered
 * the protocol instance holds it (self->stream) and it holds the instance,
 * so both live until the answer; pxpy_http_request_done breaks the cycle,
 * and a stream that is not the one answering loses its exchange there
 * (ex NULL), so nothing acts on an exchange that is done, or on the next
 * request's (it has the same address). Between px_http_stream_start and
 * its on_done the C layer holds one more reference.
 *
 * A sync body is pumped in C: items are written while the C layer takes
 * them; when it reports the stream full, the pump parks, and on_drain (on
 * the connection's worker, in its dispatch) carries on, or has a work item
 * of that worker carry on when the request's body is streamed (see
 * resume_pump). The handler's thread is not held while the client reads,
 * and a parked pump costs nothing. An async body, and awrite(), wait in the
 * worker loop: on_drain wakes them with call_soon_threadsafe, through
 * callables registered with _when_drained(). write() from a thread other
 * than the request callback's waits on a condition variable, detached;
 * inside the callback it cannot wait, since the engine sends the
 * connection's queue only between its callbacks.
 *
 * The stream's flags and waiters are guarded by a pthread mutex, never held
 * while Python code runs (callbacks are called after it is released).
 */
#include "binding.h"
#include "http/http_binding.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

enum { STREAM_NEW = 0, STREAM_STARTED, STREAM_ENDED };

typedef struct {
    PyObject *fn;
    bool on_drain; /* false: called on the close only */
} waiter_t;

typedef struct {
    PyObject_HEAD
    pxpy_state *st;
    pxpy_http_protocol_t *protocol; /* until the exchange is done */
    px_http_exchange_t *ex;         /* NULL once done, or not ours */
    bool head_only;
    PyObject *iterator; /* a sync body being pumped */
    PyObject *pending;  /* its first item, read before the head went */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Guarded by lock. */
    int state;
    bool closed;     /* the connection closed: writes are dropped */
    bool peer_ended; /* the client ended its side (closed, or half-closed:
                        the two look alike until a write fails) */
    bool drained;    /* no write waits for on_drain */
    bool parked;     /* the pump waits for on_drain */
    waiter_t *waiters;
    size_t nwaiters, capwaiters;
} stream_t;

static int stream_end_now(stream_t *s);
static void stream_abort_now(stream_t *s);

/* ---- the request's exchange --------------------------------------------- */

void pxpy_http_request_done(pxpy_http_protocol_t *self)
{
    self->ex = NULL;
    if (self->body != NULL)
        pxpy_http_body_done(self);
    stream_t *s = (stream_t *)self->stream;
    if (s == NULL)
        return;
    self->stream = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->state == STREAM_NEW) {
        s->ex = NULL;
        s->state = STREAM_ENDED;
    }
    pthread_mutex_unlock(&s->lock);
    Py_DECREF(s);
}

/* The stream stops acting on its exchange: forgets it, and the request's
 * bookkeeping with it; returns the exchange (NULL when it had none). */
static px_http_exchange_t *take_exchange(stream_t *s)
{
    pthread_mutex_lock(&s->lock);
    px_http_exchange_t *ex = s->ex;
    s->ex = NULL;
    s->state = STREAM_ENDED;
    pthread_mutex_unlock(&s->lock);
    pxpy_http_protocol_t *self = s->protocol;
    if (ex != NULL && self != NULL && self->stream == (PyObject *)s)
        pxpy_http_request_done(self);
    return ex;
}

enum { TAKE_ALL, TAKE_DRAIN, TAKE_DISCONNECT };

/* Takes the waiters to call (which: all, those waiting for a drain, or
 * those waiting for the client to go) off the list; s->lock held. NULL
 * (and *n 0) when out of memory: they stay, and the next wake-up or the
 * stream's end takes them. */
static waiter_t *take_waiters(stream_t *s, int which, size_t *n)
{
    *n = 0;
    waiter_t *taken = PyMem_RawMalloc((s->nwaiters + 1) * sizeof(*taken));
    if (taken == NULL)
        return NULL;
    size_t kept = 0;
    for (size_t i = 0; i < s->nwaiters; i++) {
        bool take = which == TAKE_ALL ||
                    s->waiters[i].on_drain == (which == TAKE_DRAIN);
        if (take)
            taken[(*n)++] = s->waiters[i];
        else
            s->waiters[kept++] = s->waiters[i];
    }
    s->nwaiters = kept;
    return taken;
}

static void call_waiters(stream_t *s, waiter_t *fire, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallNoArgs(fire[i].fn);
        if (r == NULL)
            pxpy_report_callback_error(s->st, "an HttpStream waiter");
        Py_XDECREF(r);
        Py_DECREF(fire[i].fn);
    }
    PyMem_RawFree(fire);
}

static void close_iterator(stream_t *s);
static void pump(stream_t *s);

static void pump_work(void *arg)
{
    bool attached = pxpy_attach();
    pump(arg);
    Py_DECREF((PyObject *)arg);
    pxpy_detach(attached);
}

static void pump_cancel(void *arg)
{
    bool attached = pxpy_attach();
    stream_t *s = arg;
    close_iterator(s);
    stream_abort_now(s);
    Py_DECREF(s);
    pxpy_detach(attached);
}

/* Carries on with a parked pump. From on_drain, which runs in the
 * connection's dispatch: a body that reads the request's streamed body
 * (body.c) could wait there for bytes that the connection only receives
 * between its callbacks, so such a pump goes on in a work item instead. */
static void resume_pump(stream_t *s, bool closed)
{
    pxpy_http_protocol_t *self = s->protocol;
    pthread_mutex_lock(&s->lock);
    px_http_exchange_t *ex = s->ex;
    pthread_mutex_unlock(&s->lock);
    px_loop_t *loop = NULL;
    if (!closed && ex != NULL && self != NULL && self->body != NULL)
        loop = pxpy_loop(s->st);
    if (loop == NULL) {
        PyErr_Clear();
        pump(s);
        return;
    }
    Py_INCREF(s);
    int worker = px_conn_worker(px_http_exchange_conn(ex));
    if (px_submit_to(loop, worker, pump_work, pump_cancel, s) < 0) {
        /* The loop is stopping: the pump cannot go on. */
        close_iterator(s);
        stream_abort_now(s);
        Py_DECREF(s);
    }
}

/* on_drain (closed false) and on_close (true): wakes what waits. */
static void wake(stream_t *s, bool closed)
{
    pthread_mutex_lock(&s->lock);
    if (closed)
        s->closed = true;
    s->drained = true;
    size_t nfire;
    waiter_t *fire = take_waiters(s, closed ? TAKE_ALL : TAKE_DRAIN, &nfire);
    bool parked = s->parked;
    s->parked = false;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (fire != NULL)
        call_waiters(s, fire, nfire);
    if (parked)
        resume_pump(s, closed);
}

static void on_drain(void *arg)
{
    bool attached = pxpy_attach();
    wake(arg, false);
    pxpy_detach(attached);
}

static void on_close(void *arg)
{
    bool attached = pxpy_attach();
    wake(arg, true);
    pxpy_detach(attached);
}

static void on_done(void *arg)
{
    bool attached = pxpy_attach();
    Py_DECREF((PyObject *)arg); /* the C layer's */
    pxpy_detach(attached);
}

void pxpy_http_stream_conn_ended(pxpy_http_protocol_t *self)
{
    stream_t *s = (stream_t *)self->stream;
    if (s == NULL)
        return;
    Py_INCREF(s);
    pthread_mutex_lock(&s->lock);
    s->peer_ended = true;
    size_t nfire;
    waiter_t *fire = take_waiters(s, TAKE_DISCONNECT, &nfire);
    pthread_mutex_unlock(&s->lock);
    if (fire != NULL)
        call_waiters(s, fire, nfire);
    Py_DECREF(s);
}

void pxpy_http_stream_conn_closed(pxpy_http_protocol_t *self)
{
    if (self->stream != NULL) {
        PyObject *s = Py_NewRef(self->stream);
        wake((stream_t *)s, true);
        Py_DECREF(s);
    }
}

/* ---- the type ----------------------------------------------------------- */

static stream_t *stream_new(pxpy_http_protocol_t *self)
{
    pxpy_state *st = self->config->st;
    stream_t *s = PyObject_GC_New(stream_t, st->http->stream_type);
    if (s == NULL)
        return NULL;
    s->st = st;
    s->protocol = (pxpy_http_protocol_t *)Py_NewRef(self);
    s->ex = self->ex;
    s->head_only = px_http_exchange_head_only(self->ex);
    s->iterator = s->pending = NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->state = STREAM_NEW;
    s->closed = self->hc == NULL;
    s->peer_ended = self->input_ended;
    s->drained = true;
    s->parked = false;
    s->waiters = NULL;
    s->nwaiters = s->capwaiters = 0;
    PyObject_GC_Track(s);
    return s;
}

/* The request's stream, made on first use. */
static stream_t *request_stream(pxpy_http_protocol_t *self)
{
    if (self->ex == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_px_stream(): no request of this connection awaits "
                        "its answer");
        return NULL;
    }
    if (self->stream == NULL)
        self->stream = (PyObject *)stream_new(self);
    return (stream_t *)Py_XNewRef(self->stream);
}

PyObject *pxpy_http_protocol_stream(PyObject *self, PyObject *unused)
{
    (void)unused;
    return (PyObject *)request_stream((pxpy_http_protocol_t *)self);
}

static int stream_traverse(PyObject *op, visitproc visit, void *arg)
{
    stream_t *s = (stream_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(s->protocol);
    Py_VISIT(s->iterator);
    Py_VISIT(s->pending);
    for (size_t i = 0; i < s->nwaiters; i++)
        Py_VISIT(s->waiters[i].fn);
    return 0;
}

static int stream_clear(PyObject *op)
{
    stream_t *s = (stream_t *)op;
    Py_CLEAR(s->protocol);
    Py_CLEAR(s->iterator);
    Py_CLEAR(s->pending);
    for (size_t i = 0; i < s->nwaiters; i++)
        Py_CLEAR(s->waiters[i].fn);
    s->nwaiters = 0;
    return 0;
}

static void stream_dealloc(PyObject *op)
{
    stream_t *s = (stream_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    /* Dropped while it still owned its exchange: the connection closes,
     * rather than waiting for an answer nobody will give. */
    if (s->ex != NULL) {
        if (s->state == STREAM_STARTED)
            px_http_stream_abort(s->ex);
        else
            px_http_abort(s->ex);
        s->ex = NULL;
    }
    stream_clear(op);
    PyMem_RawFree(s->waiters);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* The exchange to act on, or NULL with RuntimeError; want: the state. */
static px_http_exchange_t *exchange_in(stream_t *s, int want, const char *what)
{
    pthread_mutex_lock(&s->lock);
    px_http_exchange_t *ex = s->state == want ? s->ex : NULL;
    int state = s->state;
    pthread_mutex_unlock(&s->lock);
    if (ex == NULL)
        PyErr_Format(PyExc_RuntimeError, "HttpStream.%s(): the stream %s", what,
                     state == STREAM_NEW       ? "is not started"
                     : state == STREAM_STARTED ? "is started already"
                                               : "has ended");
    return ex;
}

static const px_http_stream_options_t stream_options = {
    .on_drain = on_drain,
    .on_close = on_close,
    .on_done = on_done,
};

/* Starts the response: 0, 1 when the connection closed meanwhile (the
 * exchange is done), -1 with an exception (the exchange stays open). */
static int start(stream_t *s, int status, PyObject *fields, uint64_t length)
{
    px_http_exchange_t *ex = exchange_in(s, STREAM_NEW, "start");
    if (ex == NULL)
        return -1;
    pxpy_http_fields_t f;
    pxpy_http_fields_init(&f);
    if (fields != NULL && pxpy_http_fields_add(&f, fields) < 0) {
        pxpy_http_fields_free(&f);
        return -1;
    }
    if (fields == NULL)
        f.fields[f.count++] = pxpy_http_text_plain_bytes;
    px_http_stream_options_t opts = stream_options;
    opts.arg = s;
    Py_INCREF(s); /* the C layer's, given back by on_done */
    int rc = px_http_stream_start(ex, status, f.fields, f.count, length, &opts);
    pxpy_http_fields_free(&f);
    if (rc == 0) {
        pthread_mutex_lock(&s->lock);
        s->state = STREAM_STARTED;
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    Py_DECREF(s);
    if (rc == PX_ECLOSED) {
        take_exchange(s);
        return 1;
    }
    return pxpy_http_response_error(rc);
}

/* The bytes of a body item: bytes-like, or str as UTF-8. */
static int item_bytes(PyObject *item, Py_buffer *view)
{
    if (PyUnicode_Check(item)) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(item, &len);
        if (utf8 == NULL)
            return -1;
        return PyBuffer_FillInfo(view, item, (void *)utf8, len, 1,
                                 PyBUF_SIMPLE);
    }
    if (PyObject_GetBuffer(item, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "a streamed body's items must be bytes-like or str, not "
                     "%.100s",
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    return 0;
}

/* Writes an item: 0 queued, PX_HTTP_STREAM_FULL, PX_ECLOSED (the client
 * went away), or -1 with an exception (also past the content length). */
static int write_item(stream_t *s, PyObject *item)
{
    px_http_exchange_t *ex = exchange_in(s, STREAM_STARTED, "write");
    if (ex == NULL)
        return -1;
    Py_buffer view;
    if (item_bytes(item, &view) < 0)
        return -1;
    pthread_mutex_lock(&s->lock);
    s->drained = false;
    pthread_mutex_unlock(&s->lock);
    int rc = px_http_stream_write(ex, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (rc == PX_ECLOSED) {
        pthread_mutex_lock(&s->lock);
        s->closed = true;
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    if (rc == PX_HTTP_E_RESPONSE_FRAMING) {
        PyErr_SetString(PyExc_ValueError,
                        "more body than the Content-Length given");
        return -1;
    }
    if (rc < 0)
        return pxpy_http_response_error(rc);
    return rc;
}

static int stream_end_now(stream_t *s)
{
    px_http_exchange_t *ex = take_exchange(s);
    int rc = ex ? px_http_stream_end(ex) : 0;
    Py_CLEAR(s->protocol);
    return rc;
}

static void stream_abort_now(stream_t *s)
{
    pthread_mutex_lock(&s->lock);
    bool started = s->state == STREAM_STARTED;
    pthread_mutex_unlock(&s->lock);
    px_http_exchange_t *ex = take_exchange(s);
    if (ex != NULL && started)
        px_http_stream_abort(ex);
    else if (ex != NULL)
        px_http_abort(ex);
    Py_CLEAR(s->protocol);
}

/* ---- sync bodies -------------------------------------------------------- */

static void close_iterator(stream_t *s)
{
    PyObject *it = s->iterator;
    s->iterator = NULL;
    Py_CLEAR(s->pending);
    if (it == NULL)
        return;
    PyObject *close;
    if (PyObject_GetOptionalAttrString(it, "close", &close) > 0) {
        PyObject *r = PyObject_CallNoArgs(close);
        if (r == NULL)
            pxpy_report_callback_error(s->st, "a streamed body's close()");
        Py_XDECREF(r);
        Py_DECREF(close);
    } else if (PyErr_Occurred()) {
        pxpy_report_callback_error(s->st, "a streamed body's close()");
    }
    Py_DECREF(it);
}

/* A body that failed after its head was sent: logged, the connection
 * closed (the client must not take a truncated body for a whole one). */
static void body_failed(stream_t *s)
{
    char where[200];
    PyOS_snprintf(where, sizeof(where), "the streamed body of %.150s",
                  s->protocol ? Py_TYPE(s->protocol)->tp_name : "?");
    pxpy_report_callback_error(s->st, where);
    close_iterator(s);
    stream_abort_now(s);
}

/* Writes items while the stream takes them; parks when it is full (on_drain
 * calls again). Runs on the connection's worker. */
static void pump(stream_t *s)
{
    Py_INCREF(s);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        bool gone = s->closed;
        pthread_mutex_unlock(&s->lock);
        if (gone || s->iterator == NULL) {
            close_iterator(s);
            stream_end_now(s);
            break;
        }
        PyObject *item = s->pending;
        s->pending = NULL;
        if (item == NULL)
            item = PyIter_Next(s->iterator);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                body_failed(s);
            } else {
                close_iterator(s);
                if (stream_end_now(s) == PX_HTTP_E_RESPONSE_FRAMING)
                    PyErr_WarnEx(PyExc_RuntimeWarning,
                                 "a streamed body ended short of its "
                                 "Content-Length: the connection was closed",
                                 1);
            }
            break;
        }
        int rc = write_item(s, item);
        Py_DECREF(item);
        if (rc == PX_ECLOSED)
            continue; /* disconnected: closed and ended above */
        if (rc < 0) {
            body_failed(s);
            break;
        }
        if (rc == PX_HTTP_STREAM_FULL) {
            pthread_mutex_lock(&s->lock);
            bool go_on = s->drained;
            s->parked = !go_on;
            pthread_mutex_unlock(&s->lock);
            if (!go_on)
                break;
        }
    }
    Py_DECREF(s);
}

/* The Python helper that streams an async body: a coroutine. */
static PyObject *async_body(stream_t *s, int status, PyObject *fields,
                            PyObject *body, uint64_t length)
{
    PyObject *fn =
        pxpy_import_attr("pyparallel.http._response", "stream_async_body");
    if (fn == NULL)
        return NULL;
    PyObject *len = length == PX_HTTP_STREAM_CHUNKED
                        ? Py_NewRef(Py_None)
                        : PyLong_FromUnsignedLongLong(length);
    PyObject *coro =
        len ? PyObject_CallFunction(fn, "OiOOO", s, status,
                                    fields ? fields : Py_None, body, len)
            : NULL;
    Py_XDECREF(len);
    Py_DECREF(fn);
    return coro;
}

bool pxpy_http_is_stream_body(PyObject *result)
{
    return PyIter_Check(result) || PyAIter_Check(result);
}

int pxpy_http_stream_body(pxpy_http_answer_t *a, int status, PyObject *fields,
                          PyObject *body, uint64_t length)
{
    stream_t *s = request_stream(a->self);
    if (s == NULL)
        return -1;
    if (!PyIter_Check(body)) {
        /* Async: a task of the worker loop; it returns the stream. */
        PyObject *coro = async_body(s, status, fields, body, length);
        Py_DECREF(s);
        if (coro == NULL)
            return -1;
        int rc = pxpy_http_await(a, coro, false);
        Py_DECREF(coro);
        return rc;
    }
    s->iterator = Py_NewRef(body);
    /* The first item before the head: a body that fails at once is
     * answered 500 like any failing handler. */
    if (!s->head_only) {
        s->pending = PyIter_Next(body);
        if (s->pending == NULL && PyErr_Occurred()) {
            PyObject *exc = PyErr_GetRaisedException();
            close_iterator(s);
            PyErr_SetRaisedException(exc);
            Py_DECREF(s);
            return -1;
        }
    }
    int rc = start(s, status, fields, length);
    if (rc != 0) {
        PyObject *exc = PyErr_GetRaisedException();
        close_iterator(s);
        PyErr_SetRaisedException(exc);
        Py_DECREF(s);
        return rc < 0 ? -1 : 1;
    }
    if (s->head_only)
        close_iterator(s);
    pump(s);
    Py_DECREF(s);
    return 1;
}

int pxpy_http_stream_returned(pxpy_http_answer_t *a, PyObject *stream)
{
    stream_t *s = (stream_t *)stream;
    pthread_mutex_lock(&s->lock);
    bool ours = s->ex == a->ex && s->protocol == a->self;
    pthread_mutex_unlock(&s->lock);
    if (!ours && a->self->ex != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a handler returned an HttpStream that is not its "
                        "request's");
        return -1;
    }
    return 1;
}

/* ---- methods ------------------------------------------------------------ */

static PyObject *stream_start(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"status", "headers", "content_length", NULL};
    int status;
    PyObject *headers = Py_None, *length_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|OO:start", kwlist,
                                     &status, &headers, &length_obj))
        return NULL;
    uint64_t length = PX_HTTP_STREAM_CHUNKED;
    if (length_obj != Py_None) {
        unsigned long long n = PyLong_AsUnsignedLongLong(length_obj);
        if (n == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
        length = n;
    }
    PyObject *fields = NULL;
    if (headers != Py_None) {
        PyObject *normalise =
            pxpy_import_attr("pyparallel.http._response", "normalise_fields");
        fields = normalise ? PyObject_CallOneArg(normalise, headers) : NULL;
        Py_XDECREF(normalise);
        if (fields == NULL)
            return NULL;
    } else {
        fields = PyList_New(0);
        if (fields == NULL)
            return NULL;
    }
    int rc = start((stream_t *)op, status, fields, length);
    Py_DECREF(fields);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Whether write() may wait: not on the thread of the connection's request
 * callback (see the top of the file). */
static bool may_wait(stream_t *s)
{
    pxpy_http_protocol_t *self = s->protocol;
    return self == NULL || self->callback_thread != PyThread_get_thread_ident();
}

static PyObject *stream_write_nowait(PyObject *op, PyObject *data)
{
    int rc = write_item((stream_t *)op, data);
    if (rc < 0 && rc != PX_ECLOSED)
        return NULL;
    return PyLong_FromLong(rc == PX_ECLOSED ? 2 : rc);
}

static PyObject *stream_write(PyObject *op, PyObject *data)
{
    stream_t *s = (stream_t *)op;
    int rc = write_item(s, data);
    if (rc == PX_ECLOSED)
        Py_RETURN_FALSE;
    if (rc < 0)
        return NULL;
    if (rc == PX_HTTP_STREAM_FULL && may_wait(s)) {
        pxpy_blocking_t saved = pxpy_blocking_begin();
        pthread_mutex_lock(&s->lock);
        while (!s->drained && !s->closed)
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        pxpy_blocking_end(saved);
    }
    pthread_mutex_lock(&s->lock);
    bool gone = s->closed;
    pthread_mutex_unlock(&s->lock);
    return PyBool_FromLong(!gone);
}

/* Registers fn to be called when the stream drains or the client goes
 * away (on_drain), or only then (not on_drain): False, registering
 * nothing, when that happened already. */
static PyObject *when(stream_t *s, PyObject *fn, bool on_drain)
{
    pthread_mutex_lock(&s->lock);
    bool now = s->closed || (on_drain ? s->drained : s->peer_ended);
    if (!now && s->nwaiters == s->capwaiters) {
        size_t cap = s->capwaiters ? s->capwaiters * 2 : 4;
        waiter_t *grown = PyMem_RawRealloc(s->waiters, cap * sizeof(*grown));
        if (grown == NULL) {
            pthread_mutex_unlock(&s->lock);
            return PyErr_NoMemory();
        }
        s->waiters = grown;
        s->capwaiters = cap;
    }
    if (!now)
        s->waiters[s->nwaiters++] = (waiter_t){Py_NewRef(fn), on_drain};
    pthread_mutex_unlock(&s->lock);
    return PyBool_FromLong(!now);
}

static PyObject *stream_when_drained(PyObject *op, PyObject *fn)
{
    return when((stream_t *)op, fn, true);
}

static PyObject *stream_when_disconnected(PyObject *op, PyObject *fn)
{
    return when((stream_t *)op, fn, false);
}

/* awrite() and wait_disconnected(): coroutines of pyparallel.http's. */
static PyObject *call_helper(PyObject *op, const char *name, PyObject *arg)
{
    PyObject *fn = pxpy_import_attr("pyparallel.http._response", name);
    if (fn == NULL)
        return NULL;
    PyObject *r = arg ? PyObject_CallFunctionObjArgs(fn, op, arg, NULL)
                      : PyObject_CallOneArg(fn, op);
    Py_DECREF(fn);
    return r;
}

static PyObject *stream_awrite(PyObject *op, PyObject *data)
{
    return call_helper(op, "stream_awrite", data);
}

static PyObject *stream_wait_disconnected(PyObject *op, PyObject *unused)
{
    (void)unused;
    return call_helper(op, "stream_wait_disconnected", NULL);
}

static PyObject *stream_end(PyObject *op, PyObject *unused)
{
    (void)unused;
    stream_t *s = (stream_t *)op;
    pthread_mutex_lock(&s->lock);
    int state = s->state;
    bool gone = s->closed;
    pthread_mutex_unlock(&s->lock);
    if (state == STREAM_ENDED && gone)
        Py_RETURN_NONE;
    if (exchange_in(s, STREAM_STARTED, "end") == NULL)
        return NULL;
    stream_end_now(s);
    Py_RETURN_NONE;
}

/* The whole answer at once, as a handler's result is given: what an
 * adapter sends when the app's response arrived complete (most do), in one
 * call instead of start, write and end, and for the answers a stream
 * cannot give (204, 304, a file). */
static PyObject *stream_respond(PyObject *op, PyObject *answer)
{
    stream_t *s = (stream_t *)op;
    /* A file, or (ASGI's websocket.accept) the upgrade to a WebSocket. */
    bool is_file = Py_IS_TYPE(answer, s->st->http->file_type) ||
                   pxpy_ws_is_accept(s->st, answer);
    if (!is_file && (!PyTuple_Check(answer) || PyTuple_GET_SIZE(answer) != 3 ||
                     pxpy_http_is_stream_body(PyTuple_GET_ITEM(answer, 2)))) {
        PyErr_Format(PyExc_TypeError,
                     "HttpStream.respond() takes (status, fields, body) with "
                     "a bytes-like or str body, or a FileResponse, not %.100s "
                     "(stream a body with start(), write() and end())",
                     Py_TYPE(answer)->tp_name);
        return NULL;
    }
    if (exchange_in(s, STREAM_NEW, "respond") == NULL)
        return NULL;
    pxpy_http_protocol_t *self =
        (pxpy_http_protocol_t *)Py_XNewRef(s->protocol);
    /* Taken before answering: once answered, the connection's next request
     * may start on another thread, and it must find nothing of this one. */
    px_http_exchange_t *ex = take_exchange(s);
    int rc = 0;
    if (ex != NULL && self != NULL) {
        pxpy_http_answer_t a = {self, ex, NULL, NULL, NULL};
        rc = pxpy_http_answer(&a, answer);
        if (rc < 0) {
            /* The answer was refused (a bad status or field) with nothing
             * sent: the request is ours alone to answer. */
            static const char body[] = "Internal Server Error\n";
            int sent = px_http_respond(ex, 500, &pxpy_http_text_plain_bytes, 1,
                                       body, sizeof(body) - 1);
            if (sent != 0 && sent != PX_ECLOSED)
                px_http_abort(ex);
        }
    }
    Py_CLEAR(s->protocol);
    Py_XDECREF(self);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *stream_abort(PyObject *op, PyObject *unused)
{
    (void)unused;
    stream_abort_now((stream_t *)op);
    Py_RETURN_NONE;
}

static PyObject *get_flag(stream_t *s, int which)
{
    pthread_mutex_lock(&s->lock);
    bool v = which == 0   ? s->closed || s->peer_ended
             : which == 1 ? s->state != STREAM_NEW
                          : s->state == STREAM_ENDED;
    pthread_mutex_unlock(&s->lock);
    return PyBool_FromLong(v);
}

static PyObject *stream_get_disconnected(PyObject *op, void *closure)
{
    (void)closure;
    return get_flag((stream_t *)op, 0);
}

static PyObject *stream_get_started(PyObject *op, void *closure)
{
    (void)closure;
    return get_flag((stream_t *)op, 1);
}

static PyObject *stream_get_ended(PyObject *op, void *closure)
{
    (void)closure;
    return get_flag((stream_t *)op, 2);
}

static PyObject *stream_get_head_only(PyObject *op, void *closure)
{
    (void)closure;
    return PyBool_FromLong(((stream_t *)op)->head_only);
}

static PyMethodDef stream_methods[] = {
    {"start", (PyCFunction)(void (*)(void))stream_start,
     METH_VARARGS | METH_KEYWORDS,
     "start($self, status, headers=None, content_length=None)\n--\n\n"
     "Sends the head; content_length None: chunked."},
    {"write", stream_write, METH_O,
     "write($self, data, /)\n--\n\nQueues data; waits while the client is "
     "behind "
     "(except in the request callback). False once the client went away."},
    {"awrite", stream_awrite, METH_O,
     "awrite($self, data, /)\n--\n\nA coroutine: write() that awaits in the "
     "worker "
     "loop."},
    {"end", stream_end, METH_NOARGS, "end($self, /)\n--\n\nFinishes the body."},
    {"respond", stream_respond, METH_O,
     "respond($self, answer, /)\n--\n\nAnswers at once with (status, fields, "
     "body) or a FileResponse (a file sent whole), instead of start(), "
     "write() and end()."},
    {"abort", stream_abort, METH_NOARGS,
     "abort($self, /)\n--\n\nEnds the exchange by closing the connection."},
    {"wait_disconnected", stream_wait_disconnected, METH_NOARGS,
     "wait_disconnected($self, /)\n--\n\nA coroutine that returns once the "
     "client's "
     "connection closed."},
    {"_write", stream_write_nowait, METH_O,
     "_write($self, data, /)\n--\n\nQueues data without waiting: 0, 1 when the "
     "stream "
     "is full (see _when_drained), 2 when the client went away."},
    {"_when_drained", stream_when_drained, METH_O,
     "_when_drained($self, fn, /)\n--\n\nfn() runs (on the connection's "
     "worker) once "
     "the stream drained or the client went away; False when it did "
     "already."},
    {"_when_disconnected", stream_when_disconnected, METH_O,
     "_when_disconnected($self, fn, /)\n--\n\nfn() runs once the client went "
     "away; "
     "False when it did already."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef stream_getset[] = {
    {"disconnected", stream_get_disconnected, NULL,
     "True once the client's connection closed.", NULL},
    {"started", stream_get_started, NULL, "True once start() ran.", NULL},
    {"ended", stream_get_ended, NULL, "True once the stream ended.", NULL},
    {"head_only", stream_get_head_only, NULL,
     "True for a HEAD request: the body is not sent.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "The streamed answer of one request: "
                "HttpProtocol._px_stream() returns it (see docs/http.md)."},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    .name = "pyparallel._core.HttpStream",
    .basicsize = sizeof(stream_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stream_slots,
};

int pxpy_http_stream_exec(PyObject *module, pxpy_state *st)
{
    st->http->stream_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &stream_spec, NULL);
    if (st->http->stream_type == NULL)
        return -1;
    return PyModule_AddType(module, st->http->stream_type);
}
