/*
 * body.c - request bodies read as they arrive (a class with
 * stream_request_body = True): the HttpBody type, through which
 * Request.stream() (async, on the worker loop) and Request.reader() (a
 * file that blocks its thread) read a body the C layer streams
 * (px_http_body_read, px_http_server.h).
 *
 * An HttpBody stands for one exchange's body. The protocol instance holds
 * it (self->body) and so does the request; pxpy_http_request_done, which
 * runs before the request is answered, takes it off the exchange (ex NULL),
 * so nothing reads an exchange that is done, or the next request's (it has
 * the same address). While a px_http_body_wait is pending the C layer
 * holds one more reference, given back when it is told.
 *
 * Waiting: a blocking read waits on a condition variable, detached; an
 * async one registers a callable (_when_readable) that the wait's end calls,
 * on whichever thread learnt of it (the connection's worker, or the thread
 * that answered), where the stream's helper turns it into
 * call_soon_threadsafe. Each is woken by the one pending px_http_body_wait
 * being told ("told" counts them), or by the request being done.
 *
 * The mutex guards ex, the wait and the callables. It is held around the C
 * layer's calls (which never call back into this file) and never while
 * Python code runs or allocates: a thread blocked on it stays attached, so
 * it must not be held across anything that can stop the world.
 */
#include "binding.h"
#include "http/http_binding.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    pxpy_state *st;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Guarded by lock. */
    px_http_exchange_t *ex; /* NULL once the request is done */
    bool waiting;           /* a px_http_body_wait is pending */
    uint64_t told;          /* waits told, and requests done */
    PyObject **fns;         /* _when_readable callables */
    size_t nfns, capfns;
} body_t;

/* ---- errors ------------------------------------------------------------- */

/* Raises what a C layer code says about the body; returns NULL. */
static PyObject *body_error(int code)
{
    if (code == -ENOMEM)
        return PyErr_NoMemory();
    if (code == PX_EBADSTATE) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the request's body can no longer be read: its "
                        "response was given");
        return NULL;
    }
    int status = 400;
    char message[160];
    if (code == PX_ECLOSED) {
        PyOS_snprintf(message, sizeof(message),
                      "the client closed the connection before the end of "
                      "the request body");
    } else if (code == PX_HTTP_E_BODY_TIMEOUT) {
        status = 408;
        PyOS_snprintf(message, sizeof(message),
                      "the request body timed out (body_timeout, "
                      "min_body_rate)");
    } else if (code == PX_HTTP_E_BODY_TOO_LARGE) {
        status = 413;
        PyOS_snprintf(message, sizeof(message),
                      "the request body is larger than max_body_size");
    } else {
        if (px_http_error_status(code) != 0)
            status = px_http_error_status(code);
        PyOS_snprintf(message, sizeof(message), "invalid request body: %s",
                      code <= PX_HTTP_INCOMPLETE ? px_http_strerror(code)
                                                 : px_strerror(code));
    }
    PyObject *cls =
        pxpy_import_attr("pyparallel.http._request", "RequestBodyError");
    if (cls == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(cls, "si", message, status);
    Py_DECREF(cls);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ---- waiting ------------------------------------------------------------ */

static void call_fns(body_t *b, PyObject **fns, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallNoArgs(fns[i]);
        if (r == NULL)
            pxpy_report_callback_error(b->st, "an HttpBody waiter");
        Py_XDECREF(r);
        Py_DECREF(fns[i]);
    }
    PyMem_RawFree(fns);
}

/* Wakes every waiter: the C layer's wait was told (told), or the request
 * is done. */
static void wake(body_t *b, bool told)
{
    pthread_mutex_lock(&b->lock);
    if (told)
        b->waiting = false;
    else
        b->ex = NULL;
    b->told++;
    pthread_cond_broadcast(&b->cond);
    PyObject **fns = b->fns;
    size_t n = b->nfns;
    b->fns = NULL;
    b->nfns = b->capfns = 0;
    pthread_mutex_unlock(&b->lock);
    call_fns(b, fns, n);
}

/* The C layer's wait was told: on the thread that learnt something, with
 * no lock of the server held. */
static void on_told(void *arg)
{
    body_t *b = arg;
    bool attached = pxpy_attach();
    wake(b, true);
    Py_DECREF(b); /* the wait's */
    pxpy_detach(attached);
}

/* Makes sure a px_http_body_wait is pending; b->lock held. true when it
 * is, false when there is something to read already (or the request is
 * done). */
static bool ensure_waiting_locked(body_t *b)
{
    if (b->ex == NULL)
        return false;
    if (b->waiting)
        return true;
    Py_INCREF(b); /* the wait's: no deallocation under the lock */
    int rc = px_http_body_wait(b->ex, on_told, b);
    if (rc != 0) {
        Py_DECREF(b); /* the caller holds another */
        return false;
    }
    b->waiting = true;
    return true;
}

/* Waits, detached, until the body has something to say or the request is
 * done. */
static void wait_readable(body_t *b)
{
    pthread_mutex_lock(&b->lock);
    bool wait = ensure_waiting_locked(b);
    uint64_t seen = b->told;
    pthread_mutex_unlock(&b->lock);
    if (!wait)
        return;
    pxpy_blocking_t saved = pxpy_blocking_begin();
    pthread_mutex_lock(&b->lock);
    while (b->told == seen)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
    pxpy_blocking_end(saved);
}

/* ---- reading ------------------------------------------------------------ */

/* px_http_body_available, or PX_EBADSTATE once the request is done. */
static ssize_t available(body_t *b)
{
    pthread_mutex_lock(&b->lock);
    ssize_t rc = b->ex ? px_http_body_available(b->ex) : PX_EBADSTATE;
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static ssize_t read_into(body_t *b, void *buf, size_t len)
{
    pthread_mutex_lock(&b->lock);
    ssize_t rc = b->ex ? px_http_body_read(b->ex, buf, len) : PX_EBADSTATE;
    pthread_mutex_unlock(&b->lock);
    return rc;
}

/* Up to size bytes (size < 0: what is there) without waiting: bytes (b""
 * at the end), Py_None when none came yet, or NULL with an exception. */
static PyObject *read_now(body_t *b, Py_ssize_t size)
{
    ssize_t avail = available(b);
    if (avail == PX_HTTP_INCOMPLETE)
        Py_RETURN_NONE;
    if (avail == 0 || size == 0)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (avail < 0)
        return body_error((int)avail);
    /* Only readers take bytes: what is available stays so. */
    Py_ssize_t n = size < 0 || size > avail ? (Py_ssize_t)avail : size;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, n);
    if (bytes == NULL)
        return NULL;
    ssize_t got = read_into(b, PyBytes_AS_STRING(bytes), (size_t)n);
    if (got == n)
        return bytes;
    Py_DECREF(bytes);
    if (got >= 0) {
        /* Another reader of the same body took some meanwhile. */
        return read_now(b, size);
    }
    return got == PX_HTTP_INCOMPLETE ? Py_NewRef(Py_None)
                                     : body_error((int)got);
}

/* Up to size bytes (size < 0: the rest of the body), waiting for at least
 * one: b"" only at the end. */
static PyObject *read_waiting(body_t *b, Py_ssize_t size)
{
    for (;;) {
        PyObject *r = read_now(b, size);
        if (r != Py_None)
            return r;
        Py_DECREF(r);
        wait_readable(b);
    }
}

PyObject *pxpy_http_body_read_all(PyObject *body)
{
    body_t *b = (body_t *)body;
    PyObject *parts = PyList_New(0);
    if (parts == NULL)
        return NULL;
    for (;;) {
        PyObject *part = read_waiting(b, -1);
        if (part == NULL) {
            Py_DECREF(parts);
            return NULL;
        }
        if (PyBytes_GET_SIZE(part) == 0) {
            Py_DECREF(part);
            break;
        }
        int rc = PyList_Append(parts, part);
        Py_DECREF(part);
        if (rc < 0) {
            Py_DECREF(parts);
            return NULL;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(parts), total = 0;
    if (n == 1) {
        PyObject *all = Py_NewRef(PyList_GET_ITEM(parts, 0));
        Py_DECREF(parts);
        return all;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        total += PyBytes_GET_SIZE(PyList_GET_ITEM(parts, i));
    PyObject *all = PyBytes_FromStringAndSize(NULL, total);
    char *at = all ? PyBytes_AS_STRING(all) : NULL;
    for (Py_ssize_t i = 0; at != NULL && i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        memcpy(at, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        at += PyBytes_GET_SIZE(part);
    }
    Py_DECREF(parts);
    return all;
}

/* ---- the exchange ------------------------------------------------------- */

PyObject *pxpy_http_body_new(pxpy_http_protocol_t *self, px_http_exchange_t *ex)
{
    pxpy_state *st = self->config->st;
    body_t *b = PyObject_GC_New(body_t, st->http->body_type);
    if (b == NULL)
        return NULL;
    b->st = st;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->ex = ex;
    b->waiting = false;
    b->told = 0;
    b->fns = NULL;
    b->nfns = b->capfns = 0;
    PyObject_GC_Track(b);
    Py_XSETREF(self->body, Py_NewRef(b));
    return (PyObject *)b;
}

void pxpy_http_body_done(pxpy_http_protocol_t *self)
{
    body_t *b = (body_t *)self->body;
    if (b == NULL)
        return;
    self->body = NULL;
    wake(b, false);
    Py_DECREF(b);
}

/* ---- the type ----------------------------------------------------------- */

static int body_traverse(PyObject *op, visitproc visit, void *arg)
{
    body_t *b = (body_t *)op;
    Py_VISIT(Py_TYPE(op));
    for (size_t i = 0; i < b->nfns; i++)
        Py_VISIT(b->fns[i]);
    return 0;
}

static int body_clear(PyObject *op)
{
    body_t *b = (body_t *)op;
    PyObject **fns = b->fns;
    size_t n = b->nfns;
    b->fns = NULL;
    b->nfns = b->capfns = 0;
    for (size_t i = 0; i < n; i++)
        Py_DECREF(fns[i]);
    PyMem_RawFree(fns);
    return 0;
}

static void body_dealloc(PyObject *op)
{
    body_t *b = (body_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    body_clear(op);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int size_arg(PyObject *const *args, Py_ssize_t nargs, const char *name,
                    Py_ssize_t *size)
{
    *size = -1;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most 1 argument (%zd given)", name, nargs);
        return -1;
    }
    if (nargs == 0 || args[0] == Py_None)
        return 0;
    *size = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    return *size == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *body_read(PyObject *op, PyObject *const *args,
                           Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (size_arg(args, nargs, "read", &size) < 0)
        return NULL;
    if (size < 0)
        return pxpy_http_body_read_all(op);
    return read_waiting((body_t *)op, size);
}

static PyObject *body_read_nowait(PyObject *op, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    Py_ssize_t size;
    if (size_arg(args, nargs, "_read", &size) < 0)
        return NULL;
    return read_now((body_t *)op, size);
}

static PyObject *body_readinto(PyObject *op, PyObject *arg)
{
    body_t *b = (body_t *)op;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0)
        return NULL;
    ssize_t got = 0;
    while (view.len > 0) {
        got = read_into(b, view.buf, (size_t)view.len);
        if (got != PX_HTTP_INCOMPLETE)
            break;
        wait_readable(b);
    }
    PyBuffer_Release(&view);
    if (got < 0)
        return body_error((int)got);
    return PyLong_FromSsize_t(got);
}

static PyObject *body_when_readable(PyObject *op, PyObject *fn)
{
    body_t *b = (body_t *)op;
    pthread_mutex_lock(&b->lock);
    bool wait = b->ex != NULL &&
                px_http_body_available(b->ex) == PX_HTTP_INCOMPLETE &&
                ensure_waiting_locked(b);
    if (wait && b->nfns == b->capfns) {
        size_t cap = b->capfns ? b->capfns * 2 : 2;
        PyObject **grown = PyMem_RawRealloc(b->fns, cap * sizeof(*grown));
        if (grown == NULL) {
            pthread_mutex_unlock(&b->lock);
            return PyErr_NoMemory();
        }
        b->fns = grown;
        b->capfns = cap;
    }
    if (wait)
        b->fns[b->nfns++] = Py_NewRef(fn);
    pthread_mutex_unlock(&b->lock);
    return PyBool_FromLong(wait);
}

static PyMethodDef body_methods[] = {
    {"read", (PyCFunction)(void (*)(void))body_read, METH_FASTCALL,
     "read($self, size=-1, /)\n--\n\n"
     "Up to size bytes of the body (size < 0: the rest of it), waiting, "
     "detached, for at least one; b'' at its end. Raises RequestBodyError "
     "when the body failed (the client went away, a limit, a timeout)."},
    {"readinto", body_readinto, METH_O,
     "readinto($self, buffer, /)\n--\n\n"
     "Reads into buffer as read() does; returns the count (0 at the end)."},
    {"_read", (PyCFunction)(void (*)(void))body_read_nowait, METH_FASTCALL,
     "_read($self, size=-1, /)\n--\n\n"
     "Up to size bytes without waiting: b'' at the end, None when none "
     "came yet (see _when_readable)."},
    {"_when_readable", body_when_readable, METH_O,
     "_when_readable($self, fn, /)\n--\n\n"
     "fn() runs once _read() has something to say (or the request is "
     "done); False, registering nothing, when it has already."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot body_slots[] = {
    {Py_tp_doc, "The body of a request being received, read as it arrives "
                "(stream_request_body; Request.stream() and "
                "Request.reader() read through it)."},
    {Py_tp_traverse, body_traverse},
    {Py_tp_clear, body_clear},
    {Py_tp_dealloc, body_dealloc},
    {Py_tp_methods, body_methods},
    {0, NULL},
};

static PyType_Spec body_spec = {
    .name = "pyparallel._core.HttpBody",
    .basicsize = sizeof(body_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = body_slots,
};

int pxpy_http_body_exec(PyObject *module, pxpy_state *st)
{
    st->http->body_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &body_spec, NULL);
    if (st->http->body_type == NULL)
        return -1;
    return PyModule_AddType(module, st->http->body_type);
}
