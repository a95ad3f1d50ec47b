/*
 * work.c - work on the workers: submit_work() and the Timer type.
 *
 * submit_work. A work item is one allocation holding the call in vectorcall
 * form (func, positional arguments, keyword values, and the keyword names
 * without submit_work's own callback/errback), the Future, and the optional
 * callback and errback. On the worker it marks the Future running (a Future
 * cancelled meanwhile is skipped), calls func, runs callback(result) or
 * errback(exc), and settles the Future last, so that whoever waits on the
 * Future sees the callback's effects. When the loop stops first, the engine
 * runs the item's cancellation instead, which cancels the Future.
 *
 * Timers. A Timer object is the engine timer's argument: the engine holds a
 * reference to it from px_timer_start until the timer's done callback
 * (after a one-shot fired, after cancel(), or at loop stop). The Timer holds
 * its own reference to the engine timer until it is freed, so cancel() is
 * safe at any time; a Timer whose timer is done ignores cancel().
 *
 * Both count as pending work for run() while they live.
 *
 * A function that returns an awaitable (a coroutine function) is awaited:
 * the coroutine runs as a task of the worker's asyncio loop (aio.c), and
 * the item's hooks and Future see the task's outcome.
 *
 * In mode "interpreters" both cross interpreters (xwork.c): the function
 * and its arguments are encoded here and run in a worker's interpreter.
 */
#include "interp/interp.h"
#include "shared/shared.h" /* pxpy_immortalize_code */

#include <math.h>
#include <stdatomic.h>

/* ---- submit_work -------------------------------------------------------- */

int pxpy_immortalize_func(PyObject *func)
{
    PyObject *wrapped = pxpy_partial_func(func);
    if (wrapped != NULL) {
        int rc = pxpy_immortalize_func(wrapped);
        Py_DECREF(wrapped);
        return rc;
    }
    if (PyErr_Occurred())
        return -1;
    PyObject *f = PyMethod_Check(func) ? PyMethod_GET_FUNCTION(func) : func;
    if (!PyFunction_Check(f))
        return 0;
    PyCodeObject *code = (PyCodeObject *)PyFunction_GET_CODE(f);
    if (_Py_IsImmortal(code->co_consts))
        return 0;
    return pxpy_immortalize_code(f);
}

typedef struct {
    pxpy_state *st;
    PyObject *future;
    PyObject *callback; /* or NULL */
    PyObject *errback;  /* or NULL */
    PyObject *kwnames;  /* or NULL */
    Py_ssize_t nargs;   /* positional arguments of func */
    Py_ssize_t nvalues; /* 1 (func) + nargs + keyword values */
    PyObject *argv[];   /* func, arguments, keyword values */
} work_item_t;

static void work_item_free(work_item_t *w)
{
    for (Py_ssize_t i = 0; i < w->nvalues; i++)
        Py_DECREF(w->argv[i]);
    Py_XDECREF(w->kwnames);
    Py_XDECREF(w->callback);
    Py_XDECREF(w->errback);
    Py_DECREF(w->future);
    PyMem_Free(w);
}

void pxpy_call_hook(pxpy_state *st, PyObject *hook, PyObject *arg,
                    const char *where)
{
    PyObject *r = PyObject_CallOneArg(hook, arg);
    if (r == NULL)
        pxpy_report_callback_error(st, where);
    Py_XDECREF(r);
}

/* Runs callback or errback and settles the Future with the outcome
 * (result, or NULL with the exception set), then frees the item. */
static void work_settle(work_item_t *w, PyObject *result)
{
    pxpy_state *st = w->st;
    if (result != NULL) {
        if (w->callback)
            pxpy_call_hook(st, w->callback, result, "submit_work callback");
        if (pxpy_future_set_result(w->future, result) < 0)
            pxpy_report_callback_error(st, "submit_work (the future)");
    } else {
        PyObject *exc = PyErr_GetRaisedException();
        if (w->errback)
            pxpy_call_hook(st, w->errback, exc, "submit_work errback");
        if (pxpy_future_set_exception(w->future, exc) < 0)
            pxpy_report_callback_error(st, "submit_work (the future)");
        Py_DECREF(exc);
    }
    work_item_free(w);
    pxpy_pending_add(st, -1);
}

static void work_awaited(void *arg, PyObject *result)
{
    work_settle(arg, result);
}

static void work_run(void *arg)
{
    work_item_t *w = arg;
    pxpy_state *st = w->st;
    bool attached = pxpy_attach();
    int running = pxpy_future_set_running(w->future);
    if (running <= 0) {
        if (running < 0)
            pxpy_report_callback_error(st, "submit_work (starting the future)");
        work_item_free(w);
        pxpy_pending_add(st, -1);
        pxpy_detach(attached);
        return;
    }
    /* argv[0] is func: the slot before the arguments, which the offset flag
     * lets the callee borrow. */
    PyObject *result = PyObject_Vectorcall(
        w->argv[0], w->argv + 1,
        (size_t)w->nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, w->kwnames);
    /* A coroutine function's call: its coroutine runs as a task of this
     * worker's loop, and the item is settled when the task ends (it stays
     * pending for run() meanwhile). */
    if (result != NULL && pxpy_is_awaitable(result)) {
        int rc = pxpy_aio_spawn(st, result, work_awaited, w);
        Py_CLEAR(result);
        if (rc == 0) {
            pxpy_detach(attached);
            return;
        }
    }
    work_settle(w, result);
    Py_XDECREF(result);
    pxpy_detach(attached);
}

static void work_cancel(void *arg)
{
    work_item_t *w = arg;
    pxpy_state *st = w->st;
    bool attached = pxpy_attach();
    /* Cancelled, then "notified" as an executor would, so that wait() and
     * as_completed() learn it too. */
    pxpy_future_cancel(w->future);
    if (pxpy_future_set_running(w->future) < 0)
        pxpy_report_callback_error(st, "submit_work (cancelling the future)");
    work_item_free(w);
    pxpy_pending_add(st, -1);
    pxpy_detach(attached);
}

static int check_hook(PyObject *hook, const char *name)
{
    if (hook == Py_None || PyCallable_Check(hook))
        return 0;
    PyErr_Format(PyExc_TypeError,
                 "submit_work() %s must be callable or None, not %.100s", name,
                 Py_TYPE(hook)->tp_name);
    return -1;
}

/* Mode "interpreters": the keywords other than callback and errback. */
static PyObject *submit_crossing(pxpy_state *st, px_loop_t *loop, int worker,
                                 PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames, Py_ssize_t own,
                                 PyObject *callback, PyObject *errback)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (own == 0)
        return pxpy_xwork_submit(st, loop, worker, args, nargs, kwnames,
                                 args + nargs, callback, errback);
    PyObject *names = PyTuple_New(nkw - own);
    PyObject **values =
        PyMem_Malloc((size_t)(nkw - own + 1) * sizeof(PyObject *));
    PyObject *future = NULL;
    if (names != NULL && values != NULL) {
        Py_ssize_t k = 0;
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (PyUnicode_Compare(name, PXPY_STR(st, CALLBACK)) == 0 ||
                PyUnicode_Compare(name, PXPY_STR(st, ERRBACK)) == 0)
                continue;
            PyTuple_SET_ITEM(names, k, Py_NewRef(name));
            values[k++] = args[nargs + i];
        }
        future = pxpy_xwork_submit(st, loop, worker, args, nargs,
                                   k ? names : NULL, values, callback, errback);
    } else if (values == NULL) {
        PyErr_NoMemory();
    }
    Py_XDECREF(names);
    PyMem_Free(values);
    return future;
}

/* submit_work(func, /, *args, callback=None, errback=None, **kwargs), on
 * the given worker, or (worker negative) the next one in turn. */
static PyObject *submit_on(pxpy_state *st, int worker, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "submit_work() missing the function to run");
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError,
                     "submit_work() needs a callable, not %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    /* Pick callback/errback out of the keywords. */
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *callback = Py_None, *errback = Py_None;
    Py_ssize_t own = 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Compare(name, PXPY_STR(st, CALLBACK)) == 0) {
            callback = args[nargs + i];
            own++;
        } else if (PyUnicode_Compare(name, PXPY_STR(st, ERRBACK)) == 0) {
            errback = args[nargs + i];
            own++;
        }
    }
    if (check_hook(callback, "callback") < 0 ||
        check_hook(errback, "errback") < 0)
        return NULL;
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    if (st->mode == PXPY_MODE_INTERPRETERS)
        return submit_crossing(st, loop, worker, args, nargs, kwnames, own,
                               callback, errback);
    if (pxpy_immortalize_func(args[0]) < 0)
        return NULL;

    Py_ssize_t nvalues = nargs + nkw - own;
    work_item_t *w =
        PyMem_Malloc(sizeof(*w) + (size_t)nvalues * sizeof(PyObject *));
    if (w == NULL)
        return PyErr_NoMemory();
    w->st = st;
    w->nargs = nargs - 1;
    w->nvalues = 0;
    w->callback = callback == Py_None ? NULL : Py_NewRef(callback);
    w->errback = errback == Py_None ? NULL : Py_NewRef(errback);
    w->kwnames = NULL;
    w->future = pxpy_future_new(st);
    if (w->future == NULL) {
        Py_XDECREF(w->callback);
        Py_XDECREF(w->errback);
        PyMem_Free(w);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        w->argv[w->nvalues++] = Py_NewRef(args[i]);
    if (nkw - own > 0) {
        if (own == 0) {
            w->kwnames = Py_NewRef(kwnames);
        } else {
            w->kwnames = PyTuple_New(nkw - own);
            if (w->kwnames == NULL) {
                work_item_free(w);
                return NULL;
            }
        }
        Py_ssize_t k = 0;
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (own && (PyUnicode_Compare(name, PXPY_STR(st, CALLBACK)) == 0 ||
                        PyUnicode_Compare(name, PXPY_STR(st, ERRBACK)) == 0))
                continue;
            if (own)
                PyTuple_SET_ITEM(w->kwnames, k++, Py_NewRef(name));
            w->argv[w->nvalues++] = Py_NewRef(args[nargs + i]);
        }
    }
    PyObject *future = Py_NewRef(w->future);
    pxpy_pending_add(st, 1);
    int rc = pxpy_submit_on(loop, worker, work_run, work_cancel, w);
    if (rc < 0) {
        work_item_free(w);
        pxpy_pending_add(st, -1);
        Py_DECREF(future);
        return pxpy_raise_engine_error(st, rc, "submit_work");
    }
    return future;
}

static PyObject *submit_work(PyObject *module, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames)
{
    return submit_on(pxpy_get_state(module), -1, args, nargs, kwnames);
}

/* _submit_to(worker, func, /, *args, **kwargs): submit_work on one worker,
 * for what must run on each (in mode "interpreters", in each worker's
 * interpreter and on its loop: an ASGI app's lifespan). */
static PyObject *submit_to(PyObject *module, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames)
{
    pxpy_state *st = pxpy_get_state(module);
    if (nargs < 2 || !PyLong_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "_submit_to() takes a worker index and a function");
        return NULL;
    }
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    int overflow;
    long worker = PyLong_AsLongAndOverflow(args[0], &overflow);
    if (worker == -1 && PyErr_Occurred())
        return NULL;
    int count = px_loop_worker_count(loop);
    if (overflow || worker < 0 || worker >= count) {
        PyErr_Format(PyExc_ValueError,
                     "_submit_to(): worker %R out of range 0..%d", args[0],
                     count - 1);
        return NULL;
    }
    return submit_on(st, (int)worker, args + 1, nargs - 1, kwnames);
}

/* ---- Timer -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pxpy_state *st;
    PyObject *func;
    PyObject *args;             /* tuple */
    px_timer_t *timer;          /* our reference; set before it can fire */
    _Atomic bool done;          /* the engine is finished with it */
    struct pxpy_xcall_s *xcall; /* mode "interpreters": what it runs */
} pxpy_timer_t;

static void timer_fire(void *arg)
{
    pxpy_timer_t *self = arg;
    bool attached = pxpy_attach();
    if (self->xcall != NULL) {
        pxpy_xcall_run_on_worker(self->st->runtime, self->xcall,
                                 "timer callback");
        pxpy_detach(attached);
        return;
    }
    PyObject *r =
        PyObject_Vectorcall(self->func, ((PyTupleObject *)self->args)->ob_item,
                            (size_t)PyTuple_GET_SIZE(self->args), NULL);
    if (r == NULL)
        pxpy_report_callback_error(self->st, "timer callback");
    Py_XDECREF(r);
    pxpy_detach(attached);
}

static void timer_done(void *arg)
{
    pxpy_timer_t *self = arg;
    pxpy_state *st = self->st;
    if (self->xcall != NULL) {
        /* The Timer is an object of the interpreter that started it. */
        pxpy_entered_t e = pxpy_interp_enter(st->runtime, st->interp_index);
        atomic_store(&self->done, true);
        Py_DECREF(self);
        pxpy_pending_add(st, -1);
        pxpy_interp_leave(e);
        return;
    }
    bool attached = pxpy_attach();
    atomic_store(&self->done, true);
    Py_DECREF(self); /* the engine's reference */
    pxpy_pending_add(st, -1);
    pxpy_detach(attached);
}

static int seconds_to_ns(PyObject *value, const char *name, bool positive,
                         uint64_t *ns)
{
    double s = PyFloat_AsDouble(value);
    if (s == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError,
                         "timer() %s must be a number of seconds, not %.100s",
                         name, Py_TYPE(value)->tp_name);
        }
        return -1;
    }
    if (!isfinite(s) || s < 0 || (positive && s == 0) || s > 1e9) {
        PyErr_Format(PyExc_ValueError, "timer() %s must be %s, not %R", name,
                     positive ? "a number of seconds > 0"
                              : "a number of seconds >= 0",
                     value);
        return -1;
    }
    *ns = (uint64_t)(s * 1e9);
    if (positive && *ns == 0)
        *ns = 1;
    return 0;
}

/* timer(delay, func, /, *args, period=None) */
static PyObject *timer_start(PyObject *module, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames)
{
    pxpy_state *st = pxpy_get_state(module);
    PyObject *period = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, "period") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "timer() got an unexpected keyword argument '%U'",
                         name);
            return NULL;
        }
        period = args[nargs + i];
    }
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError,
                        "timer() needs a delay and a function: "
                        "timer(delay, func, *args, period=None)");
        return NULL;
    }
    uint64_t delay_ns, period_ns = 0;
    if (seconds_to_ns(args[0], "delay", false, &delay_ns) < 0 ||
        (period != Py_None &&
         seconds_to_ns(period, "period", true, &period_ns) < 0))
        return NULL;
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "timer() needs a callable, not %.100s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    struct pxpy_xcall_s *xcall = NULL;
    if (st->mode == PXPY_MODE_INTERPRETERS) {
        xcall = pxpy_xcall_new(st, "timer()", args[1], args + 2, nargs - 2);
        if (xcall == NULL)
            return NULL;
    } else if (pxpy_immortalize_func(args[1]) < 0) {
        return NULL;
    }
    pxpy_timer_t *self = PyObject_GC_New(pxpy_timer_t, st->timer_type);
    if (self == NULL) {
        pxpy_xcall_free(xcall);
        return NULL;
    }
    self->xcall = xcall;
    self->st = st;
    self->func = Py_NewRef(args[1]);
    self->args = PyTuple_New(nargs - 2);
    self->timer = NULL;
    atomic_init(&self->done, false);
    if (self->args == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t i = 2; i < nargs; i++)
        PyTuple_SET_ITEM(self->args, i - 2, Py_NewRef(args[i]));
    PyObject_GC_Track(self);

    pxpy_pending_add(st, 1);
    Py_INCREF(self); /* the engine's, dropped by timer_done */
    int rc = px_timer_start(loop, delay_ns, period_ns, timer_fire, timer_done,
                            self, &self->timer);
    if (rc < 0) {
        /* The timer never reaches a worker: its done callback won't run. */
        Py_DECREF(self);
        pxpy_pending_add(st, -1);
        Py_DECREF(self);
        return pxpy_raise_engine_error(st, rc, "timer");
    }
    return (PyObject *)self;
}

static PyObject *timer_cancel(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    pxpy_timer_t *self = (pxpy_timer_t *)op;
    if (self->timer != NULL && !atomic_load(&self->done))
        px_timer_cancel(self->timer);
    Py_RETURN_NONE;
}

static PyObject *timer_repr(PyObject *op)
{
    pxpy_timer_t *self = (pxpy_timer_t *)op;
    return PyUnicode_FromFormat("<pyparallel.Timer %R%s>", self->func,
                                atomic_load(&self->done) ? " done" : "");
}

static int timer_traverse(PyObject *op, visitproc visit, void *arg)
{
    pxpy_timer_t *self = (pxpy_timer_t *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->func);
    Py_VISIT(self->args);
    return 0;
}

static int timer_clear(PyObject *op)
{
    pxpy_timer_t *self = (pxpy_timer_t *)op;
    Py_CLEAR(self->func);
    Py_CLEAR(self->args);
    return 0;
}

static void timer_dealloc(PyObject *op)
{
    pxpy_timer_t *self = (pxpy_timer_t *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    timer_clear(op);
    if (self->timer != NULL)
        px_timer_unref(self->timer);
    pxpy_xcall_free(self->xcall);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef timer_methods[] = {
    {"cancel", timer_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\nStop the timer (a run under way completes); "
     "calling "
     "it again is harmless."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot timer_slots[] = {
    {Py_tp_doc, "A timer started by pyparallel.timer()."},
    {Py_tp_methods, timer_methods},
    {Py_tp_repr, timer_repr},
    {Py_tp_traverse, timer_traverse},
    {Py_tp_clear, timer_clear},
    {Py_tp_dealloc, timer_dealloc},
    {0, NULL},
};

static PyType_Spec timer_spec = {
    .name = "pyparallel.Timer",
    .basicsize = sizeof(pxpy_timer_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = timer_slots,
};

/* ---- module part ------------------------------------------------------- */

static PyMethodDef work_methods[] = {
    {"submit_work", (PyCFunction)(void (*)(void))submit_work,
     METH_FASTCALL | METH_KEYWORDS,
     "submit_work(func, /, *args, callback=None, errback=None, **kwargs)\n"
     "--\n\n"
     "Run func(*args, **kwargs) on a worker; returns a "
     "concurrent.futures.Future."},
    {"_submit_to", (PyCFunction)(void (*)(void))submit_to,
     METH_FASTCALL | METH_KEYWORDS,
     "_submit_to($module, worker, func, /, *args, **kwargs)\n--\n\n"
     "submit_work() on the given worker (0 .. workers - 1)."},
    {"timer", (PyCFunction)(void (*)(void))timer_start,
     METH_FASTCALL | METH_KEYWORDS,
     "timer(delay, func, /, *args, period=None)\n--\n\n"
     "Run func(*args) on a worker after delay seconds (then every period "
     "seconds); returns a Timer."},
    {NULL, NULL, 0, NULL},
};

int pxpy_work_exec(PyObject *module, pxpy_state *st)
{
    st->timer_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &timer_spec, NULL);
    if (st->timer_type == NULL)
        return -1;
    if (PyModule_AddType(module, st->timer_type) < 0)
        return -1;
    return PyModule_AddFunctions(module, work_methods);
}
