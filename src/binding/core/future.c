/*
 * future.c - pyparallel.Future, the concurrent.futures.Future that
 * submit_work() returns, with its state machine in C.
 *
 * Why: concurrent.futures.Future keeps its state under a threading.Condition
 * built in Python; creating one, settling it and reading its result cost
 * several microseconds, more than the rest of a submit_work round trip.
 * pyparallel.Future is a subclass of concurrent.futures.Future (so isinstance
 * checks, asyncio.wrap_future, wait() and as_completed() keep working) whose
 * methods are all implemented here:
 *
 *  - state, result and exception live in C fields; the state is an atomic
 *    word written last (release) when the future settles, so done() and
 *    result() on a settled future read it without locking;
 *  - transitions run in a critical section on the future (a per-object lock
 *    on free-threaded builds, the GIL otherwise);
 *  - result()/exception() that must wait sleep on one condition variable per
 *    module, detached from the interpreter; a settling future broadcasts it
 *    only when someone sleeps on that future;
 *  - the threading.Condition, _waiters and _state attributes that wait() and
 *    as_completed() use from Python exist on demand: the condition is created
 *    the first time someone asks for it, and from then on a settling future
 *    calls the waiters and notifies the condition while holding it, exactly
 *    as the Python implementation does.
 *
 * The class is built in two layers: the C type _FutureCore holds the fields
 * and methods, and pyparallel.Future is the Python-level class
 * (_FutureCore, concurrent.futures.Future), created in the exec slot.
 */
#include "binding.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define WAIT_SLICE_NS (100 * 1000 * 1000)

enum {
    F_PENDING = 0,
    F_RUNNING,
    F_CANCELLED,
    F_CANCELLED_AND_NOTIFIED,
    F_FINISHED,
    F_STATES
};

static const char *const state_names[F_STATES] = {
    "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED",
};
static const char *const state_descriptions[F_STATES] = {
    "pending", "running", "cancelled", "cancelled", "finished",
};

struct pxpy_futures_s {
    PyObject *states[F_STATES]; /* concurrent.futures' state strings */
    PyObject *cancelled_error;
    PyObject *invalid_state_error;
    PyObject *logger;         /* logging.getLogger("concurrent.futures") */
    PyObject *condition_type; /* threading.Condition */
    pthread_mutex_t sleep_lock;
    pthread_cond_t sleep_cond; /* result()/exception() waiting */
};

typedef struct {
    PyObject_HEAD
    pxpy_state *st;
    _Atomic int state;
    _Atomic int sleepers; /* threads in wait_settled() */
    PyObject *result;     /* set before state becomes FINISHED */
    PyObject *exception;
    PyObject *callbacks; /* list, or NULL */
    PyObject *waiters;   /* list for wait()/as_completed(), or NULL */
    PyObject *condition; /* threading.Condition, or NULL */
} pxpy_future_t;

#define FUTURE(op) ((pxpy_future_t *)(op))

static bool is_cancelled(int s)
{
    return s == F_CANCELLED || s == F_CANCELLED_AND_NOTIFIED;
}

static bool is_done(int s) { return is_cancelled(s) || s == F_FINISHED; }

static pxpy_state *state_of(PyObject *op)
{
    pxpy_future_t *self = FUTURE(op);
    if (self->st == NULL)
        self->st = pxpy_state_from_object(op);
    return self->st;
}

/* ---- waking and notifying ------------------------------------------------ */

static void wake_sleepers(pxpy_state *st, pxpy_future_t *self)
{
    if (atomic_load(&self->sleepers) == 0)
        return;
    pthread_mutex_lock(&st->futures->sleep_lock);
    pthread_cond_broadcast(&st->futures->sleep_cond);
    pthread_mutex_unlock(&st->futures->sleep_lock);
}

static void call_method(PyObject *obj, const char *name, PyObject *arg)
{
    PyObject *r = arg ? PyObject_CallMethod(obj, name, "O", arg)
                      : PyObject_CallMethod(obj, name, NULL);
    if (r == NULL)
        PyErr_WriteUnraisable(obj);
    Py_XDECREF(r);
}

static void log_callback_error(pxpy_state *st, PyObject *self)
{
    PyObject *r =
        PyObject_CallMethod(st->futures->logger, "exception", "sO",
                            "exception calling callback for %r", self);
    if (r == NULL)
        PyErr_WriteUnraisable(self);
    Py_XDECREF(r);
}

/* Runs the done-callbacks (a list taken from the future), logging what
 * they raise like concurrent.futures. Steals callbacks. */
static void invoke_callbacks(pxpy_state *st, PyObject *self,
                             PyObject *callbacks)
{
    if (callbacks == NULL)
        return;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks); i++) {
        PyObject *r = PyObject_CallOneArg(PyList_GET_ITEM(callbacks, i), self);
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_Exception))
                log_callback_error(st, self);
            else
                PyErr_WriteUnraisable(self);
        }
        Py_XDECREF(r);
    }
    Py_DECREF(callbacks);
}

/* ---- transitions -------------------------------------------------------- */

/* A state change. It runs in a critical section on the future; when
 * wait()/as_completed() made the future's threading.Condition exist, also
 * with that condition held, as in concurrent.futures: they read _state and
 * install their waiters under the condition, so a change they did not see
 * must not happen before it reaches their waiters. */
typedef struct {
    int before;             /* state before the change */
    PyObject *result, *exc; /* for FINISHED */
    int to;                 /* new state, or -1 for "no change" */
    PyObject *callbacks;    /* taken when settling */
} change_t;

static void apply_locked(pxpy_future_t *self, change_t *c)
{
    c->before = atomic_load(&self->state);
    int to = -1;
    switch (c->to) {
    case F_FINISHED:
        to = is_done(c->before) ? -1 : F_FINISHED;
        break;
    case F_CANCELLED:
        to = c->before == F_PENDING ? F_CANCELLED : -1;
        break;
    case F_RUNNING: /* set_running_or_notify_cancel */
        to = c->before == F_PENDING     ? F_RUNNING
             : c->before == F_CANCELLED ? F_CANCELLED_AND_NOTIFIED
                                        : -1;
        break;
    default:
        break;
    }
    c->to = to;
    if (to == F_FINISHED) {
        self->result = Py_XNewRef(c->result);
        self->exception = Py_XNewRef(c->exc);
    }
    if (to == F_FINISHED || to == F_CANCELLED) {
        c->callbacks = self->callbacks;
        self->callbacks = NULL;
    }
    if (to >= 0)
        atomic_store(&self->state, to);
}

/* Applies c; then, still holding the condition, tells the waiters of
 * wait()/as_completed() (add_result, add_exception, add_cancelled) and
 * notifies the condition, as concurrent.futures does for each change. */
static void change_state(pxpy_future_t *self, change_t *c)
{
    PyObject *condition = NULL;
    for (;;) {
        if (condition != NULL) {
            PyObject *r = PyObject_CallMethod(condition, "acquire", NULL);
            if (r == NULL)
                PyErr_WriteUnraisable(condition); /* go on unlocked */
            Py_XDECREF(r);
        }
        bool retry = false;
        PyObject *waiters = NULL, *seen = NULL;
        Py_BEGIN_CRITICAL_SECTION(self);
        if (self->condition != condition) {
            /* The condition appeared meanwhile: take it first. */
            retry = true;
        } else {
            apply_locked(self, c);
            waiters = Py_XNewRef(self->waiters);
        }
        if (retry)
            seen = Py_NewRef(self->condition);
        Py_END_CRITICAL_SECTION();
        if (retry) {
            condition = seen;
            continue;
        }
        const char *method =
            c->to == F_FINISHED ? (c->exc ? "add_exception" : "add_result")
            : c->to == F_CANCELLED_AND_NOTIFIED ? "add_cancelled"
                                                : NULL;
        for (Py_ssize_t i = 0;
             method && waiters && i < PyList_GET_SIZE(waiters); i++)
            call_method(PyList_GET_ITEM(waiters, i), method, (PyObject *)self);
        Py_XDECREF(waiters);
        if (condition != NULL) {
            /* (A cancellation's notice needs no notify: cancel() did.) */
            if (c->to == F_FINISHED || c->to == F_CANCELLED)
                call_method(condition, "notify_all", NULL);
            call_method(condition, "release", NULL);
            Py_DECREF(condition);
        }
        return;
    }
}

static int invalid_state(pxpy_state *st, PyObject *self, int s)
{
    PyErr_Format(st->futures->invalid_state_error, "%s: %R", state_names[s],
                 self);
    return -1;
}

/* set_result / set_exception. */
static int settle(PyObject *op, PyObject *result, PyObject *exc)
{
    pxpy_future_t *self = FUTURE(op);
    pxpy_state *st = state_of(op);
    change_t c = {.result = result, .exc = exc, .to = F_FINISHED};
    change_state(self, &c);
    if (c.to < 0)
        return invalid_state(st, op, c.before);
    wake_sleepers(st, self);
    invoke_callbacks(st, op, c.callbacks);
    return 0;
}

int pxpy_future_set_result(PyObject *future, PyObject *result)
{
    return settle(future, result, NULL);
}

int pxpy_future_set_exception(PyObject *future, PyObject *exc)
{
    return settle(future, NULL, exc);
}

int pxpy_future_set_running(PyObject *op)
{
    pxpy_future_t *self = FUTURE(op);
    change_t c = {.to = F_RUNNING};
    change_state(self, &c);
    if (c.to == F_RUNNING)
        return 1;
    if (c.to == F_CANCELLED_AND_NOTIFIED)
        return 0;
    PyErr_Format(PyExc_RuntimeError, "Future in unexpected state: %s",
                 state_names[c.before]);
    return -1;
}

int pxpy_future_cancel(PyObject *op)
{
    pxpy_future_t *self = FUTURE(op);
    pxpy_state *st = state_of(op);
    change_t c = {.to = F_CANCELLED};
    change_state(self, &c);
    if (c.to < 0)
        return is_cancelled(c.before);
    wake_sleepers(st, self);
    invoke_callbacks(st, op, c.callbacks);
    return 1;
}

PyObject *pxpy_future_new(pxpy_state *st)
{
    PyTypeObject *tp = (PyTypeObject *)st->future_type;
    PyObject *op = tp->tp_alloc(tp, 0);
    if (op != NULL)
        FUTURE(op)->st = st;
    return op;
}

/* ---- waiting ------------------------------------------------------------ */

/* Waits until the future settles or timeout (seconds, or NULL/None for no
 * limit) passes. Returns the state, or -1 with an exception (a signal
 * handler raised while the main thread waited). */
static int wait_settled(PyObject *op, PyObject *timeout)
{
    pxpy_future_t *self = FUTURE(op);
    int s = atomic_load(&self->state);
    if (is_done(s))
        return s;
    uint64_t deadline = 0;
    if (timeout != NULL && timeout != Py_None) {
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1.0 && PyErr_Occurred())
            return -1;
        if (!(seconds > 0))
            return s;
        deadline =
            px_now_ns() + (uint64_t)(seconds > 1e9 ? 1e18 : seconds * 1e9);
    }
    pxpy_state *st = state_of(op);
    /* The main thread wakes up now and then for signal handlers (Ctrl-C
     * interrupts a result() as it interrupts a lock). */
    bool main = pxpy_is_main_thread(st);
    for (;;) {
        uint64_t until = deadline;
        if (main) {
            uint64_t slice = px_now_ns() + WAIT_SLICE_NS;
            if (until == 0 || slice < until)
                until = slice;
        }
        struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                              .tv_nsec = (long)(until % 1000000000u)};
        pxpy_blocking_t b = pxpy_blocking_begin();
        pthread_mutex_lock(&st->futures->sleep_lock);
        atomic_fetch_add(&self->sleepers, 1);
        int rc = 0;
        while (!is_done(atomic_load(&self->state)) && rc != ETIMEDOUT)
            rc = until ? pthread_cond_timedwait(&st->futures->sleep_cond,
                                                &st->futures->sleep_lock, &ts)
                       : pthread_cond_wait(&st->futures->sleep_cond,
                                           &st->futures->sleep_lock);
        atomic_fetch_sub(&self->sleepers, 1);
        pthread_mutex_unlock(&st->futures->sleep_lock);
        pxpy_blocking_end(b);
        s = atomic_load(&self->state);
        if (is_done(s) || (deadline && px_now_ns() >= deadline))
            return s;
        if (main && PyErr_CheckSignals() < 0)
            return -1;
    }
}

/* ---- methods ------------------------------------------------------------ */

static int parse_timeout(const char *fname, PyObject *const *args,
                         Py_ssize_t nargs, PyObject *kwnames,
                         PyObject **timeout)
{
    *timeout = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument", fname);
        return -1;
    }
    if (nargs == 1) {
        *timeout = args[0];
    } else if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                             "timeout") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'", fname,
                         PyTuple_GET_ITEM(kwnames, 0));
            return -1;
        }
        *timeout = args[0];
    }
    return 0;
}

static PyObject *outcome(PyObject *op, int s, bool want_exception)
{
    pxpy_future_t *self = FUTURE(op);
    if (s < 0)
        return NULL;
    if (is_cancelled(s)) {
        PyErr_SetNone(state_of(op)->futures->cancelled_error);
        return NULL;
    }
    if (s != F_FINISHED) {
        PyErr_SetNone(PyExc_TimeoutError);
        return NULL;
    }
    if (want_exception)
        return Py_NewRef(self->exception ? self->exception : Py_None);
    if (self->exception != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(self->exception), self->exception);
        return NULL;
    }
    return Py_NewRef(self->result ? self->result : Py_None);
}

static PyObject *future_result(PyObject *op, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    if (parse_timeout("result", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    return outcome(op, wait_settled(op, timeout), false);
}

static PyObject *future_exception(PyObject *op, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    if (parse_timeout("exception", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    return outcome(op, wait_settled(op, timeout), true);
}

static PyObject *future_done(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(is_done(atomic_load(&FUTURE(op)->state)));
}

static PyObject *future_cancelled(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(is_cancelled(atomic_load(&FUTURE(op)->state)));
}

static PyObject *future_running(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(atomic_load(&FUTURE(op)->state) == F_RUNNING);
}

static PyObject *future_cancel(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(pxpy_future_cancel(op));
}

static PyObject *future_set_running(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    int r = pxpy_future_set_running(op);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *future_set_result(PyObject *op, PyObject *result)
{
    return settle(op, result, NULL) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *future_set_exception(PyObject *op, PyObject *exc)
{
    return settle(op, NULL, exc) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *future_add_done_callback(PyObject *op, PyObject *fn)
{
    pxpy_future_t *self = FUTURE(op);
    int rc = 0;
    bool now = false;
    Py_BEGIN_CRITICAL_SECTION(self);
    if (is_done(atomic_load(&self->state))) {
        now = true;
    } else {
        if (self->callbacks == NULL)
            self->callbacks = PyList_New(0);
        rc = self->callbacks ? PyList_Append(self->callbacks, fn) : -1;
    }
    Py_END_CRITICAL_SECTION();
    if (rc < 0)
        return NULL;
    if (now) {
        PyObject *r = PyObject_CallOneArg(fn, op);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL;
            log_callback_error(state_of(op), op);
        }
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

static PyObject *future_repr(PyObject *op)
{
    pxpy_future_t *self = FUTURE(op);
    int s = atomic_load(&self->state);
    const char *name = Py_TYPE(op)->tp_name;
    if (s != F_FINISHED)
        return PyUnicode_FromFormat("<%s at %p state=%s>", name, op,
                                    state_descriptions[s]);
    PyObject *v = self->exception ? self->exception : self->result;
    return PyUnicode_FromFormat("<%s at %p state=finished %s %s>", name, op,
                                self->exception ? "raised" : "returned",
                                v ? Py_TYPE(v)->tp_name : "NoneType");
}

/* ---- the attributes concurrent.futures' functions use ------------------- */

static PyObject *get_state(PyObject *op, void *Py_UNUSED(c))
{
    return Py_NewRef(
        state_of(op)->futures->states[atomic_load(&FUTURE(op)->state)]);
}

static PyObject *get_result(PyObject *op, void *Py_UNUSED(c))
{
    pxpy_future_t *self = FUTURE(op);
    if (atomic_load(&self->state) != F_FINISHED || self->result == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(self->result);
}

static PyObject *get_exception(PyObject *op, void *Py_UNUSED(c))
{
    pxpy_future_t *self = FUTURE(op);
    if (atomic_load(&self->state) != F_FINISHED || self->exception == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(self->exception);
}

/* A list field created on first use (it must stay the same object). */
static PyObject *lazy_list(pxpy_future_t *self, PyObject **field)
{
    (void)self; /* unused where critical sections compile to nothing */
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL)
        return NULL;
    PyObject *list;
    Py_BEGIN_CRITICAL_SECTION(self);
    if (*field == NULL)
        *field = Py_NewRef(fresh);
    list = Py_NewRef(*field);
    Py_END_CRITICAL_SECTION();
    Py_DECREF(fresh);
    return list;
}

static PyObject *get_waiters(PyObject *op, void *Py_UNUSED(c))
{
    return lazy_list(FUTURE(op), &FUTURE(op)->waiters);
}

static PyObject *get_done_callbacks(PyObject *op, void *Py_UNUSED(c))
{
    return lazy_list(FUTURE(op), &FUTURE(op)->callbacks);
}

static PyObject *get_condition(PyObject *op, void *Py_UNUSED(c))
{
    pxpy_future_t *self = FUTURE(op);
    PyObject *fresh =
        PyObject_CallNoArgs(state_of(op)->futures->condition_type);
    if (fresh == NULL)
        return NULL;
    PyObject *condition;
    Py_BEGIN_CRITICAL_SECTION(self);
    if (self->condition == NULL)
        self->condition = Py_NewRef(fresh);
    condition = Py_NewRef(self->condition);
    Py_END_CRITICAL_SECTION();
    Py_DECREF(fresh);
    return condition;
}

/* ---- type --------------------------------------------------------------- */

static int future_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Future() takes no arguments");
        return -1;
    }
    state_of(op);
    return 0;
}

static int future_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_future_t *self = FUTURE(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->result);
    Py_VISIT(self->exception);
    Py_VISIT(self->callbacks);
    Py_VISIT(self->waiters);
    Py_VISIT(self->condition);
    return 0;
}

static int future_clear(PyObject *op)
{
    pxpy_future_t *self = FUTURE(op);
    Py_CLEAR(self->result);
    Py_CLEAR(self->exception);
    Py_CLEAR(self->callbacks);
    Py_CLEAR(self->waiters);
    Py_CLEAR(self->condition);
    return 0;
}

static void future_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    future_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef future_methods[] = {
    {"result", (PyCFunction)(void (*)(void))future_result,
     METH_FASTCALL | METH_KEYWORDS,
     "result(timeout=None)\n--\n\nThe call's result (or raise its "
     "exception), waiting up to timeout seconds."},
    {"exception", (PyCFunction)(void (*)(void))future_exception,
     METH_FASTCALL | METH_KEYWORDS,
     "exception(timeout=None)\n--\n\nThe exception the call raised, or "
     "None."},
    {"done", future_done, METH_NOARGS, "done()\n--\n\n"},
    {"cancelled", future_cancelled, METH_NOARGS, "cancelled()\n--\n\n"},
    {"running", future_running, METH_NOARGS, "running()\n--\n\n"},
    {"cancel", future_cancel, METH_NOARGS, "cancel()\n--\n\n"},
    {"add_done_callback", future_add_done_callback, METH_O,
     "add_done_callback(fn, /)\n--\n\n"},
    {"set_running_or_notify_cancel", future_set_running, METH_NOARGS,
     "set_running_or_notify_cancel()\n--\n\n"},
    {"set_result", future_set_result, METH_O, "set_result(result, /)\n--\n\n"},
    {"set_exception", future_set_exception, METH_O,
     "set_exception(exception, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef future_getset[] = {
    {"_state", get_state, NULL, NULL, NULL},
    {"_result", get_result, NULL, NULL, NULL},
    {"_exception", get_exception, NULL, NULL, NULL},
    {"_waiters", get_waiters, NULL, NULL, NULL},
    {"_done_callbacks", get_done_callbacks, NULL, NULL, NULL},
    {"_condition", get_condition, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot future_slots[] = {
    {Py_tp_doc, "The state machine of pyparallel.Future, in C."},
    {Py_tp_init, future_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, future_methods},
    {Py_tp_getset, future_getset},
    {Py_tp_repr, future_repr},
    {Py_tp_traverse, future_traverse},
    {Py_tp_clear, future_clear},
    {Py_tp_dealloc, future_dealloc},
    {0, NULL},
};

static PyType_Spec future_spec = {
    .name = "pyparallel._core._FutureCore",
    .basicsize = sizeof(pxpy_future_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = future_slots,
};

/* ---- module part -------------------------------------------------------- */

/* class Future(_FutureCore, concurrent.futures.Future) in package
 * pyparallel. */
static PyObject *make_future_class(PyObject *core)
{
    PyObject *base = pxpy_import_attr("concurrent.futures", "Future");
    if (base == NULL)
        return NULL;
    PyObject *ns = Py_BuildValue(
        "{s:s, s:s, s:s, s:()}", "__module__", "pyparallel", "__qualname__",
        "Future", "__doc__",
        "The concurrent.futures.Future of a work item (submit_work), with its "
        "state kept in C.",
        "__slots__");
    PyObject *cls =
        ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(OO)O", "Future",
                                   core, base, ns)
           : NULL;
    Py_XDECREF(ns);
    Py_DECREF(base);
    return cls;
}

int pxpy_future_exec(PyObject *module, pxpy_state *st)
{
    pxpy_futures_t *f = PyMem_RawCalloc(1, sizeof(*f));
    if (f == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->futures = f;
    pthread_mutex_init(&f->sleep_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->sleep_cond, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < F_STATES; i++) {
        f->states[i] =
            pxpy_import_attr("concurrent.futures._base", state_names[i]);
        if (f->states[i] == NULL)
            return -1;
    }
    f->cancelled_error =
        pxpy_import_attr("concurrent.futures", "CancelledError");
    f->invalid_state_error =
        pxpy_import_attr("concurrent.futures", "InvalidStateError");
    f->condition_type = pxpy_import_attr("threading", "Condition");
    PyObject *get_logger = pxpy_import_attr("logging", "getLogger");
    f->logger = get_logger ? PyObject_CallFunction(get_logger, "s",
                                                   "concurrent.futures")
                           : NULL;
    Py_XDECREF(get_logger);
    if (f->cancelled_error == NULL || f->invalid_state_error == NULL ||
        f->condition_type == NULL || f->logger == NULL)
        return -1;
    st->future_core_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &future_spec, NULL);
    if (st->future_core_type == NULL)
        return -1;
    st->future_type = make_future_class((PyObject *)st->future_core_type);
    if (st->future_type == NULL)
        return -1;
    return PyModule_AddObjectRef(module, "Future", st->future_type);
}

int pxpy_future_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    pxpy_futures_t *f = st->futures;
    Py_VISIT(st->future_core_type);
    if (f == NULL)
        return 0;
    for (int i = 0; i < F_STATES; i++)
        Py_VISIT(f->states[i]);
    Py_VISIT(f->cancelled_error);
    Py_VISIT(f->invalid_state_error);
    Py_VISIT(f->logger);
    Py_VISIT(f->condition_type);
    return 0;
}

void pxpy_future_free(pxpy_state *st)
{
    pxpy_futures_t *f = st->futures;
    Py_CLEAR(st->future_core_type);
    if (f == NULL)
        return;
    for (int i = 0; i < F_STATES; i++)
        Py_CLEAR(f->states[i]);
    Py_CLEAR(f->cancelled_error);
    Py_CLEAR(f->invalid_state_error);
    Py_CLEAR(f->logger);
    Py_CLEAR(f->condition_type);
    pthread_cond_destroy(&f->sleep_cond);
    pthread_mutex_destroy(&f->sleep_lock);
    st->futures = NULL;
    PyMem_RawFree(f);
}
