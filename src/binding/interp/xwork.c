/*
 * xwork.c - work that crosses interpreters in mode "interpreters":
 * submit_work() (and so map()), the calls of timers, and
 * call_from_main_thread(_and_wait) from a worker interpreter.
 *
 * An encoded call (pxpy_xcall_t) is the function, found by name or
 * pickled, and its arguments, all cross-interpreter data; any interpreter
 * can run it. A work item is such a call plus its Future, which stays in
 * the interpreter that submitted it (the "owner": the main interpreter, or
 * a worker's when a worker submits). On a worker the item enters the
 * owner's interpreter to mark the Future running, runs the call in the
 * worker's interpreter, encodes the result or exception, and enters the
 * owner's interpreter again to decode it, run callback or errback there,
 * and settle the Future. The engine thread holds one interpreter's GIL at
 * a time (interp.c), so the owner's GIL is never waited for while the
 * worker's is held.
 *
 * A function that returns an awaitable (a coroutine function) is awaited
 * on the worker: the coroutine runs as a task of the asyncio loop of the
 * worker's interpreter (core/aio.c), and the task's outcome crosses.
 *
 * Logging records of a worker's interpreter cross the same way
 * (_log_in_main): at once on an engine thread, through the main thread's
 * queue from other threads of the worker's interpreter.
 */
#include "core/mainthread.h"
#include "interp/interp_internal.h"

struct pxpy_xcall_s {
    pxpy_xi_t *func;
    pxpy_xi_t *args; /* (args, kwnames or None, kwvalues) */
};
typedef struct pxpy_xcall_s pxpy_xcall_t;

/* ---- encoded calls ------------------------------------------------------ */

void pxpy_xcall_free(pxpy_xcall_t *xc)
{
    if (xc == NULL)
        return;
    pxpy_xi_free(xc->func);
    pxpy_xi_free(xc->args);
    PyMem_RawFree(xc);
}

/* func(*args, **dict(zip(kwnames, kwvalues))) encoded; fname names the API
 * in errors. */
static pxpy_xcall_t *xcall_encode(pxpy_state *st, const char *fname,
                                  PyObject *func, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames,
                                  PyObject *const *kwvalues)
{
    char who[96];
    pxpy_xcall_t *xc = PyMem_RawCalloc(1, sizeof(*xc));
    if (xc == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyOS_snprintf(who, sizeof(who), "%s function", fname);
    xc->func = pxpy_xi_encode_callable(st, func, who);
    if (xc->func == NULL) {
        pxpy_xcall_free(xc);
        return NULL;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *positional = PyTuple_New(nargs);
    PyObject *values = PyTuple_New(nkw);
    PyObject *packed = NULL;
    if (positional != NULL && values != NULL) {
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(positional, i, Py_NewRef(args[i]));
        for (Py_ssize_t i = 0; i < nkw; i++)
            PyTuple_SET_ITEM(values, i, Py_NewRef(kwvalues[i]));
        packed =
            PyTuple_Pack(3, positional, kwnames ? kwnames : Py_None, values);
    }
    Py_XDECREF(positional);
    Py_XDECREF(values);
    if (packed != NULL) {
        PyOS_snprintf(who, sizeof(who), "%s argument", fname);
        xc->args = pxpy_xi_encode(st, packed, who);
        Py_DECREF(packed);
    }
    if (xc->args == NULL) {
        pxpy_xcall_free(xc);
        return NULL;
    }
    return xc;
}

PyObject *pxpy_xcall_invoke(pxpy_state *st, pxpy_xcall_t *xc)
{
    PyObject *func = pxpy_xi_decode(st, xc->func);
    if (func == NULL)
        return NULL;
    PyObject *packed = pxpy_xi_decode(st, xc->args);
    if (packed == NULL) {
        Py_DECREF(func);
        return NULL;
    }
    PyObject *positional = PyTuple_GET_ITEM(packed, 0);
    PyObject *kwnames = PyTuple_GET_ITEM(packed, 1);
    PyObject *values = PyTuple_GET_ITEM(packed, 2);
    Py_ssize_t nargs = PyTuple_GET_SIZE(positional);
    Py_ssize_t nkw = PyTuple_GET_SIZE(values);
    PyObject *small[8];
    PyObject **argv =
        nargs + nkw <= 8
            ? small
            : PyMem_Malloc((size_t)(nargs + nkw) * sizeof(PyObject *));
    PyObject *result = NULL;
    if (argv == NULL) {
        PyErr_NoMemory();
    } else {
        for (Py_ssize_t i = 0; i < nargs; i++)
            argv[i] = PyTuple_GET_ITEM(positional, i);
        for (Py_ssize_t i = 0; i < nkw; i++)
            argv[nargs + i] = PyTuple_GET_ITEM(values, i);
        result = PyObject_Vectorcall(func, argv, (size_t)nargs,
                                     kwnames == Py_None ? NULL : kwnames);
        if (argv != small)
            PyMem_Free(argv);
    }
    Py_DECREF(packed);
    Py_DECREF(func);
    return result;
}

pxpy_xcall_t *pxpy_xcall_new(pxpy_state *st, const char *fname, PyObject *func,
                             PyObject *const *args, Py_ssize_t nargs)
{
    if (pxpy_xi_check_bootstrapped(st, fname) < 0)
        return NULL;
    return xcall_encode(st, fname, func, args, nargs, NULL, NULL);
}

void pxpy_xcall_run_on_worker(pxpy_runtime_t *rt, pxpy_xcall_t *xc,
                              const char *where)
{
    pxpy_state *st = pxpy_interp_state(rt, px_current_worker());
    PyObject *r = pxpy_xcall_invoke(st, xc);
    if (r == NULL)
        pxpy_report_callback_error(st, where);
    Py_XDECREF(r);
}

/* ---- work items --------------------------------------------------------- */

typedef struct {
    pxpy_runtime_t *rt;
    pxpy_state *owner;  /* the Future's interpreter's state */
    PyObject *future;   /* owner's objects, */
    PyObject *callback; /* or NULL */
    PyObject *errback;  /* or NULL */
    pxpy_xcall_t *call;
    pxpy_state *worker_st; /* a coroutine's: where it runs */
} xwork_t;

/* In the owner's interpreter. */
static void xwork_free(xwork_t *x)
{
    Py_XDECREF(x->callback);
    Py_XDECREF(x->errback);
    Py_DECREF(x->future);
    pxpy_xcall_free(x->call);
    pxpy_pending_add(x->owner, -1);
    PyMem_RawFree(x);
}

/* In the owner's interpreter: decodes the outcome, runs the hooks and
 * settles the Future, then frees the item. */
static void settle(xwork_t *x, pxpy_xi_t *outcome)
{
    pxpy_state *st = x->owner;
    PyObject *value = outcome ? pxpy_xi_decode(st, outcome) : NULL;
    bool failed = value == NULL || pxpy_xi_is_exception(outcome);
    if (value == NULL) {
        /* The outcome did not survive the crossing: that is the error. */
        value = PyErr_GetRaisedException();
        if (value == NULL)
            value = PyObject_CallFunction(
                st->async_error, "s",
                "the work item's outcome could not cross interpreters");
    }
    if (value == NULL) {
        pxpy_report_callback_error(st, "submit_work (the future)");
    } else if (failed) {
        if (x->errback)
            pxpy_call_hook(st, x->errback, value, "submit_work errback");
        if (pxpy_future_set_exception(x->future, value) < 0)
            pxpy_report_callback_error(st, "submit_work (the future)");
    } else {
        if (x->callback)
            pxpy_call_hook(st, x->callback, value, "submit_work callback");
        if (pxpy_future_set_result(x->future, value) < 0)
            pxpy_report_callback_error(st, "submit_work (the future)");
    }
    Py_XDECREF(value);
    xwork_free(x);
}

/* In the worker's interpreter (st): encodes the outcome (result, or NULL
 * with the exception set), and settles the item in the owner's. */
static void xwork_finish(xwork_t *x, pxpy_state *st, PyObject *result)
{
    pxpy_xi_t *outcome =
        result ? pxpy_xi_encode(st, result, "submit_work() result") : NULL;
    if (outcome == NULL)
        outcome = pxpy_xi_encode_exception(st);
    pxpy_entered_t e = pxpy_interp_enter(x->rt, x->owner->interp_index);
    settle(x, outcome);
    pxpy_xi_free(outcome);
    pxpy_interp_leave(e);
}

static void xwork_awaited(void *arg, PyObject *result)
{
    xwork_t *x = arg;
    xwork_finish(x, x->worker_st, result);
}

static void xwork_run(void *arg)
{
    xwork_t *x = arg;
    pxpy_runtime_t *rt = x->rt;
    int owner = x->owner->interp_index;
    bool attached = pxpy_attach();

    pxpy_entered_t e = pxpy_interp_enter(rt, owner);
    int running = pxpy_future_set_running(x->future);
    if (running <= 0) {
        if (running < 0)
            pxpy_report_callback_error(x->owner,
                                       "submit_work (starting the future)");
        xwork_free(x);
        pxpy_interp_leave(e);
        pxpy_detach(attached);
        return;
    }
    pxpy_interp_leave(e);

    pxpy_state *st = pxpy_interp_state(rt, px_current_worker());
    PyObject *result = pxpy_xcall_invoke(st, x->call);
    /* A coroutine runs as a task of this worker's loop, in this
     * interpreter; its outcome crosses when it ends. */
    if (result != NULL && pxpy_is_awaitable(result)) {
        x->worker_st = st;
        int rc = pxpy_aio_spawn(st, result, xwork_awaited, x);
        Py_CLEAR(result);
        if (rc == 0) {
            pxpy_detach(attached);
            return;
        }
    }
    xwork_finish(x, st, result);
    Py_XDECREF(result);
    pxpy_detach(attached);
}

static void xwork_cancel(void *arg)
{
    xwork_t *x = arg;
    bool attached = pxpy_attach();
    pxpy_entered_t e = pxpy_interp_enter(x->rt, x->owner->interp_index);
    pxpy_future_cancel(x->future);
    if (pxpy_future_set_running(x->future) < 0)
        pxpy_report_callback_error(x->owner,
                                   "submit_work (cancelling the future)");
    xwork_free(x);
    pxpy_interp_leave(e);
    pxpy_detach(attached);
}

PyObject *pxpy_xwork_submit(pxpy_state *st, px_loop_t *loop, int worker,
                            PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames, PyObject *const *kwvalues,
                            PyObject *callback, PyObject *errback)
{
    if (pxpy_xi_check_bootstrapped(st, "submit_work()") < 0)
        return NULL;
    xwork_t *x = PyMem_RawCalloc(1, sizeof(*x));
    if (x == NULL)
        return PyErr_NoMemory();
    x->call = xcall_encode(st, "submit_work()", args[0], args + 1, nargs - 1,
                           kwnames, kwvalues);
    x->future = x->call ? pxpy_future_new(st) : NULL;
    if (x->future == NULL) {
        pxpy_xcall_free(x->call);
        PyMem_RawFree(x);
        return NULL;
    }
    x->rt = st->runtime;
    x->owner = st;
    x->callback = callback == Py_None ? NULL : Py_NewRef(callback);
    x->errback = errback == Py_None ? NULL : Py_NewRef(errback);
    PyObject *future = Py_NewRef(x->future);
    pxpy_pending_add(st, 1);
    int rc = pxpy_submit_on(loop, worker, xwork_run, xwork_cancel, x);
    if (rc < 0) {
        xwork_free(x);
        Py_DECREF(future);
        return pxpy_raise_engine_error(st, rc, "submit_work");
    }
    return future;
}

/* ---- calls for the main thread ------------------------------------------ */

pxpy_xi_t *pxpy_xcall_outcome(pxpy_state *st, PyObject *r)
{
    pxpy_xi_t *xi = r ? pxpy_xi_encode(st, r, "a result for a worker") : NULL;
    return xi ? xi : pxpy_xi_encode_exception(st);
}

PyObject *pxpy_xwork_call_main(pxpy_state *st, PyObject *const *args,
                               Py_ssize_t nargs, PyObject *kwnames, bool wait)
{
    const char *fname =
        wait ? "call_from_main_thread_and_wait()" : "call_from_main_thread()";
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "%s missing the function to call", fname);
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s needs a callable, not %.100s", fname,
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    pxpy_xcall_t *xc = xcall_encode(st, fname, args[0], args + 1, nargs - 1,
                                    kwnames, args + nargs);
    if (xc == NULL)
        return NULL;
    pxpy_runtime_t *rt = st->runtime;
    pxpy_call_t local;
    pxpy_call_t *c = wait ? &local : PyMem_RawMalloc(sizeof(*c));
    if (c == NULL) {
        pxpy_xcall_free(xc);
        return PyErr_NoMemory();
    }
    memset(c, 0, sizeof(*c));
    c->xcall = xc;
    if (!wait) {
        pxpy_mainthread_post(rt, c);
        Py_RETURN_NONE;
    }
    if (!pxpy_mainthread_post_and_wait(rt, c)) {
        pxpy_xcall_free(c->xcall); /* the main thread never took it */
        PyErr_SetString(st->async_error,
                        "the loop stopped before the main thread ran the "
                        "call");
        return NULL;
    }
    PyObject *r = c->xresult ? pxpy_xi_decode(st, c->xresult) : NULL;
    if (r != NULL && pxpy_xi_is_exception(c->xresult)) {
        PyErr_SetRaisedException(r);
        r = NULL;
    } else if (r == NULL && !PyErr_Occurred()) {
        PyErr_SetString(st->async_error,
                        "the call's outcome could not cross interpreters");
    }
    pxpy_xi_free(c->xresult);
    return r;
}

/* ---- logging ------------------------------------------------------------ */

/* In the main interpreter: pyparallel._interp.log_record(fields, message,
 * exc), each argument decoded (exc may be NULL: None). */
static void log_record_in_main(pxpy_state *main_st, pxpy_xi_t *fields,
                               pxpy_xi_t *message, pxpy_xi_t *exc)
{
    PyObject *f = pxpy_xi_decode(main_st, fields);
    PyObject *m = f ? pxpy_xi_decode(main_st, message) : NULL;
    PyObject *e =
        m ? (exc ? pxpy_xi_decode(main_st, exc) : Py_NewRef(Py_None)) : NULL;
    PyObject *log =
        e ? pxpy_import_attr("pyparallel._interp", "log_record") : NULL;
    PyObject *r = log ? PyObject_CallFunctionObjArgs(log, f, m, e, NULL) : NULL;
    if (r == NULL)
        PyErr_WriteUnraisable(NULL); /* logging cannot report itself */
    Py_XDECREF(r);
    Py_XDECREF(log);
    Py_XDECREF(e);
    Py_XDECREF(m);
    Py_XDECREF(f);
}

/* _log_in_main(fields, message, exc): a worker interpreter's log record
 * (pyparallel._interp's handler), handed to the main interpreter. */
static PyObject *log_in_main(PyObject *module, PyObject *const *args,
                             Py_ssize_t nargs)
{
    pxpy_state *st = pxpy_get_state(module);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_log_in_main(fields, message, exc) takes 3 arguments");
        return NULL;
    }
    if (!pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "_log_in_main()");
    pxpy_runtime_t *rt = st->runtime;
    if (px_current_worker() < 0) {
        /* A thread of the worker's interpreter that is not the engine's:
         * the main thread logs it. */
        PyObject *log = pxpy_import_attr("pyparallel._interp", "log_record");
        if (log == NULL)
            return NULL;
        PyObject *call[] = {log, args[0], args[1], args[2]};
        PyObject *r = pxpy_xwork_call_main(st, call, 4, NULL, false);
        if (r == NULL && args[2] != Py_None &&
            PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear(); /* an exception that cannot cross: without it */
            call[3] = Py_None;
            r = pxpy_xwork_call_main(st, call, 4, NULL, false);
        }
        Py_DECREF(log);
        return r;
    }
    pxpy_xi_t *fields = pxpy_xi_encode(st, args[0], "a log record's field");
    pxpy_xi_t *message =
        fields ? pxpy_xi_encode(st, args[1], "a log message") : NULL;
    pxpy_xi_t *exc = NULL;
    if (message != NULL && args[2] != Py_None) {
        PyErr_SetRaisedException(Py_NewRef(args[2]));
        exc = pxpy_xi_encode_exception(st);
    }
    if (message != NULL && (exc != NULL || args[2] == Py_None)) {
        pxpy_entered_t e = pxpy_interp_enter(rt, PXPY_MAIN);
        log_record_in_main(pxpy_interp_state(rt, PXPY_MAIN), fields, message,
                           exc);
        pxpy_interp_leave(e);
    }
    pxpy_xi_free(fields);
    pxpy_xi_free(message);
    pxpy_xi_free(exc);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef xwork_methods[] = {
    {"_log_in_main", (PyCFunction)(void (*)(void))log_in_main, METH_FASTCALL,
     "_log_in_main(fields, message, exc, /)\n--\n\nHand a worker "
     "interpreter's log record to the main interpreter's logging."},
    {NULL, NULL, 0, NULL},
};

int pxpy_xwork_exec(PyObject *module, pxpy_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, xwork_methods);
}
