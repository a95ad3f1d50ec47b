/*
 * mainthread.c - the main thread's part: run(), run_once(), stop(), the
 * atexit shutdown, and the queue of calls that call_from_main_thread() and
 * call_from_main_thread_and_wait() hand to it.
 *
 * run() loops: run the queued calls, look at signals, then wait (detached)
 * for a call, stop() or idleness, at most SIGNAL_CHECK_NS at a time so that
 * Ctrl-C is seen. "Idle" means nothing is registered (listeners, client and
 * accepted connections), no work item or timer is pending and the queue is
 * empty. When run() ends, the loop is stopped (pxpy_runtime_shutdown_loop)
 * and the calls that connection_lost and friends queued meanwhile run.
 * With a graceful_timeout, the stop drains first (drain): the listeners
 * close and the accepted connections get until the timeout to end.
 * While the loop stops, the signal handlers keep running (the package's
 * ends the process on a second SIGINT or SIGTERM), and run's
 * graceful_timeout bounds how long a callback that does not return can
 * hold the stop up.
 *
 * A waited call lives on its waiter's stack; the main thread's last touch
 * of it is setting its state under rt->lock, and a loop stop cancels the
 * waited calls still queued (their waiters get AsyncError).
 */
#include "core/runtime.h"
#include "interp/interp.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* How often a waiting main thread looks at pending signals. */
#define SIGNAL_CHECK_NS (100 * 1000 * 1000)

/* ---- the main-thread queue ---------------------------------------------- */

static void free_call(pxpy_call_t *c)
{
    Py_XDECREF(c->func);
    Py_XDECREF(c->args);
    Py_XDECREF(c->kwargs);
    pxpy_xcall_free(c->xcall);
    c->xcall = NULL;
}

static void push_call_locked(pxpy_runtime_t *rt, pxpy_call_t *c)
{
    c->next = NULL;
    c->state = CALL_QUEUED;
    if (rt->tail)
        rt->tail->next = c;
    else
        rt->head = c;
    rt->tail = c;
    pthread_cond_signal(&rt->main_cond);
}

void pxpy_mainthread_post(pxpy_runtime_t *rt, pxpy_call_t *c)
{
    c->waited = false;
    pthread_mutex_lock(&rt->lock);
    push_call_locked(rt, c);
    pthread_mutex_unlock(&rt->lock);
}

bool pxpy_mainthread_post_and_wait(pxpy_runtime_t *rt, pxpy_call_t *c)
{
    c->waited = true;
    pxpy_blocking_t b = pxpy_blocking_begin();
    pthread_mutex_lock(&rt->lock);
    if (rt->shutting_down) {
        c->state = CALL_CANCELLED;
    } else {
        push_call_locked(rt, c);
        while (c->state == CALL_QUEUED)
            pthread_cond_wait(&rt->done_cond, &rt->lock);
    }
    pthread_mutex_unlock(&rt->lock);
    pxpy_blocking_end(b);
    return c->state != CALL_CANCELLED;
}

void pxpy_mainthread_cancel_waited_locked(pxpy_runtime_t *rt)
{
    pxpy_call_t **link = &rt->head;
    rt->tail = NULL;
    while (*link) {
        pxpy_call_t *c = *link;
        if (c->waited) {
            *link = c->next;
            c->state = CALL_CANCELLED;
        } else {
            rt->tail = c;
            link = &c->next;
        }
    }
    pthread_cond_broadcast(&rt->done_cond);
}

/* Runs the calls queued so far; returns how many ran. */
static Py_ssize_t run_queued_calls(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    pthread_mutex_lock(&rt->lock);
    pxpy_call_t *c = rt->head;
    rt->head = rt->tail = NULL;
    pthread_mutex_unlock(&rt->lock);
    Py_ssize_t n = 0;
    while (c) {
        pxpy_call_t *next = c->next;
        /* A call from a worker interpreter is encoded, and so is what
         * goes back to it. */
        bool crossing = c->xcall != NULL;
        PyObject *r = crossing ? pxpy_xcall_invoke(st, c->xcall)
                               : PyObject_Call(c->func, c->args, c->kwargs);
        free_call(c);
        n++;
        if (c->waited && crossing) {
            c->xresult = pxpy_xcall_outcome(st, r);
            Py_XDECREF(r);
            pthread_mutex_lock(&rt->lock);
            c->state = CALL_DONE;
            pthread_cond_broadcast(&rt->done_cond);
            pthread_mutex_unlock(&rt->lock);
        } else if (c->waited) {
            c->result = r;
            c->exc = r ? NULL : PyErr_GetRaisedException();
            pthread_mutex_lock(&rt->lock);
            c->state = CALL_DONE;
            pthread_cond_broadcast(&rt->done_cond);
            pthread_mutex_unlock(&rt->lock);
        } else {
            if (r == NULL)
                pxpy_report_callback_error(st, "call_from_main_thread");
            Py_XDECREF(r);
            PyMem_RawFree(c);
        }
        c = next;
    }
    return n;
}

/* Splits (func, *args) of a vectorcall into the call's fields. */
static int fill_call(pxpy_call_t *c, const char *fname, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames)
{
    memset(c, 0, sizeof(*c));
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing the function to call",
                     fname);
        return -1;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s() needs a callable, not %.100s",
                     fname, Py_TYPE(args[0])->tp_name);
        return -1;
    }
    c->func = Py_NewRef(args[0]);
    c->args = PyTuple_New(nargs - 1);
    if (c->args == NULL)
        return -1;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(c->args, i - 1, Py_NewRef(args[i]));
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw) {
        c->kwargs = PyDict_New();
        if (c->kwargs == NULL)
            return -1;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(c->kwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0)
                return -1;
    }
    return 0;
}

static PyObject *call_from_main_thread(PyObject *module, PyObject *const *args,
                                       Py_ssize_t nargs, PyObject *kwnames)
{
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_xwork_call_main(st, args, nargs, kwnames, false);
    pxpy_runtime_t *rt = st->runtime;
    pxpy_call_t *c = PyMem_RawMalloc(sizeof(*c));
    if (c == NULL)
        return PyErr_NoMemory();
    if (fill_call(c, "call_from_main_thread", args, nargs, kwnames) < 0) {
        free_call(c);
        PyMem_RawFree(c);
        return NULL;
    }
    pxpy_mainthread_post(rt, c);
    Py_RETURN_NONE;
}

static PyObject *call_from_main_thread_and_wait(PyObject *module,
                                                PyObject *const *args,
                                                Py_ssize_t nargs,
                                                PyObject *kwnames)
{
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st))
        return pxpy_xwork_call_main(st, args, nargs, kwnames, true);
    pxpy_runtime_t *rt = st->runtime;
    pxpy_call_t c;
    if (fill_call(&c, "call_from_main_thread_and_wait", args, nargs, kwnames) <
        0) {
        free_call(&c);
        return NULL;
    }
    if (pxpy_runtime_is_main(rt)) {
        free_call(&c);
        PyErr_SetString(st->async_error,
                        "call_from_main_thread_and_wait() was called on the "
                        "main thread, which would wait for itself: call the "
                        "function directly");
        return NULL;
    }
    if (!pxpy_mainthread_post_and_wait(rt, &c)) {
        free_call(&c); /* the main thread never took it */
        PyErr_SetString(st->async_error,
                        "the loop stopped before the main thread ran the "
                        "call");
        return NULL;
    }
    if (c.result == NULL) {
        PyErr_SetRaisedException(c.exc);
        return NULL;
    }
    return c.result;
}

/* ---- run, run_once, stop ------------------------------------------------ */

static int require_main_thread(pxpy_state *st, const char *fname)
{
    if (pxpy_runtime_is_main(st->runtime))
        return 0;
    PyErr_Format(st->async_error,
                 "%s() must be called from the main thread (it runs the "
                 "calls of call_from_main_thread)",
                 fname);
    return -1;
}

static bool idle_locked(pxpy_runtime_t *rt)
{
    return atomic_load(&rt->registered) <= 0 &&
           atomic_load(&rt->pending) <= 0 && rt->head == NULL;
}

typedef enum { WAIT_CALLS, WAIT_STOP, WAIT_IDLE, WAIT_TIMEOUT } wait_result_t;

/* Waits, detached, for a queued call, stop() or (when until_idle) for
 * nothing to be left to wait for, at most until deadline_ns (0: no limit)
 * and at most SIGNAL_CHECK_NS, so that the caller can look at signals. */
static wait_result_t wait_main(pxpy_runtime_t *rt, uint64_t deadline_ns,
                               bool until_idle)
{
    uint64_t now = px_now_ns();
    uint64_t until = now + SIGNAL_CHECK_NS;
    if (deadline_ns && deadline_ns < until)
        until = deadline_ns;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                          .tv_nsec = (long)(until % 1000000000u)};
    wait_result_t r;
    pxpy_blocking_t b = pxpy_blocking_begin();
    pthread_mutex_lock(&rt->lock);
    for (;;) {
        if (rt->stop_requested) {
            r = WAIT_STOP;
            break;
        }
        if (rt->head != NULL) {
            r = WAIT_CALLS;
            break;
        }
        if (until_idle && idle_locked(rt)) {
            r = WAIT_IDLE;
            break;
        }
        if (pthread_cond_timedwait(&rt->main_cond, &rt->lock, &ts) ==
            ETIMEDOUT) {
            r = WAIT_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    pxpy_blocking_end(b);
    return r;
}

/* Stops the loop; see pxpy_runtime_shutdown_loop for the timeout and the
 * signals. An exception set on entry, or raised by a signal handler during
 * the stop, is left set. */
static void end_run(pxpy_state *st, uint64_t timeout_ns, bool watch_signals)
{
    pxpy_runtime_t *rt = st->runtime;
    pxpy_runtime_shutdown_loop(st, timeout_ns, watch_signals);
    /* Calls queued by connection_lost and friends during the stop. */
    PyObject *exc = PyErr_GetRaisedException();
    run_queued_calls(st);
    PyErr_SetRaisedException(exc);
    pthread_mutex_lock(&rt->lock);
    rt->stop_requested = false;
    rt->in_run = false;
    rt->stop_began_ns = 0;
    atomic_store(&rt->drain_announced, false);
    pthread_mutex_unlock(&rt->lock);
}

/* Seconds (a number > 0) or None (0: no limit) as nanoseconds. */
static int parse_graceful_timeout(PyObject *value, uint64_t *out)
{
    *out = 0;
    if (value == Py_None)
        return 0;
    double seconds = PyFloat_AsDouble(value);
    if (seconds == -1.0 && PyErr_Occurred())
        return -1;
    if (!(seconds > 0.0) || seconds > 1e9) {
        PyErr_SetString(PyExc_ValueError,
                        "graceful_timeout must be None or a number of "
                        "seconds > 0");
        return -1;
    }
    *out = (uint64_t)(seconds * 1e9);
    if (*out == 0)
        *out = 1; /* below a nanosecond, but a limit all the same */
    return 0;
}

/* How often a draining main thread looks at the served connections. */
#define DRAIN_CHECK_NS (20 * 1000 * 1000)

/* Keeps the main thread's part going (queued calls, signal handlers) until
 * deadline, or until no accepted connection is left when drained is set;
 * false when stop() came again or a signal handler raised (its exception
 * is left set). */
static bool serve_until(pxpy_state *st, px_loop_t *loop, uint64_t deadline,
                        bool drained)
{
    pxpy_runtime_t *rt = st->runtime;
    pthread_mutex_lock(&rt->lock);
    rt->stop_requested = false;
    pthread_mutex_unlock(&rt->lock);
    while (!drained || !px_loop_drained(loop)) {
        run_queued_calls(st);
        if (PyErr_CheckSignals() < 0)
            return false;
        uint64_t now = px_now_ns();
        if (now >= deadline)
            return true;
        uint64_t until = now + DRAIN_CHECK_NS;
        if (wait_main(rt, until < deadline ? until : deadline, false) ==
            WAIT_STOP)
            return false;
    }
    return true;
}

/* The graceful half of a bounded stop. For delay_ns first, everything
 * goes on as before except that draining() is true, so that a health
 * route tells a load balancer to send no more while the listeners still
 * accept what it sends meanwhile. Then the loop drains (its listeners
 * close; see px_loop_drain) while this thread keeps running the queued
 * calls and the signal handlers, until no accepted connection is left (an
 * HTTP server closes each at the end of its exchange, or once idle),
 * timeout_ns has passed, or stop() is called again. An exception a signal
 * handler raises ends it and is left set. The stop that follows shares the
 * drain's timeout (rt->stop_began_ns). */
static void drain(pxpy_state *st, uint64_t timeout_ns, uint64_t delay_ns)
{
    pxpy_runtime_t *rt = st->runtime;
    px_loop_t *loop = atomic_load(&rt->loop);
    if (loop == NULL)
        return;
    if (delay_ns != 0) {
        atomic_store(&rt->drain_announced, true);
        if (!serve_until(st, loop, px_now_ns() + delay_ns, false) &&
            PyErr_Occurred())
            return;
    }
    uint64_t began = px_now_ns();
    rt->stop_began_ns = began;
    if (px_loop_drain(loop) == 0)
        serve_until(st, loop, began + timeout_ns, true);
}

static PyObject *run(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"mode", "graceful_timeout", "drain_delay",
                                   NULL};
    PyObject *mode = NULL, *graceful = Py_None;
    double delay = 0.0;
    uint64_t timeout_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOd:run", kwlist, &mode,
                                     &graceful, &delay) ||
        parse_graceful_timeout(graceful, &timeout_ns) < 0)
        return NULL;
    if (!(delay >= 0.0) || delay > 1e9 || (delay > 0.0 && timeout_ns == 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "drain_delay must be a number of seconds >= 0, and "
                        "needs a graceful_timeout");
        return NULL;
    }
    pxpy_state *st = pxpy_get_state(module);
    pxpy_runtime_t *rt = st->runtime;
    if (require_main_thread(st, "run") < 0)
        return NULL;
    if (rt->in_run) {
        PyErr_SetString(st->async_error,
                        "run() is already running (called from a callback "
                        "of call_from_main_thread?)");
        return NULL;
    }
    if (pxpy_runtime_ensure_loop(st, mode == Py_None ? NULL : mode) == NULL)
        return NULL;
    /* A stop() from another thread while the loop already served (say, a
     * client that is done before the main thread reached run()) ends this
     * run at once. */
    pthread_mutex_lock(&rt->lock);
    rt->in_run = true;
    pthread_mutex_unlock(&rt->lock);
    bool failed = false;
    for (;;) {
        run_queued_calls(st);
        if (PyErr_CheckSignals() < 0) {
            failed = true; /* a handler raised, e.g. KeyboardInterrupt */
            break;
        }
        wait_result_t w = wait_main(rt, 0, true);
        if (w == WAIT_IDLE)
            break;
        if (w == WAIT_STOP) {
            /* With a bound, the stop is graceful: a drain first. */
            if (timeout_ns != 0)
                drain(st, timeout_ns, (uint64_t)(delay * 1e9));
            failed = PyErr_Occurred() != NULL;
            break;
        }
    }
    end_run(st, timeout_ns, true);
    if (failed || PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *run_once(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:run_once", kwlist,
                                     &timeout))
        return NULL;
    pxpy_state *st = pxpy_get_state(module);
    pxpy_runtime_t *rt = st->runtime;
    bool no_limit = timeout == Py_None;
    uint64_t deadline = 0;
    if (!no_limit) {
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(seconds >= 0.0) || seconds > 1e9) {
            PyErr_SetString(PyExc_ValueError,
                            "timeout must be None or a number of seconds "
                            ">= 0");
            return NULL;
        }
        deadline = px_now_ns() + (uint64_t)(seconds * 1e9);
    }
    if (require_main_thread(st, "run_once") < 0 || pxpy_loop(st) == NULL)
        return NULL;
    Py_ssize_t n = run_queued_calls(st);
    while (n == 0) {
        if (!no_limit && px_now_ns() >= deadline)
            break;
        if (PyErr_CheckSignals() < 0)
            return NULL;
        wait_result_t w = wait_main(rt, no_limit ? 0 : deadline, false);
        if (w == WAIT_CALLS)
            n = run_queued_calls(st);
    }
    return PyLong_FromSsize_t(n);
}

/* stop() acts on the loop that runs now. While run() runs, it ends it.
 * Otherwise, from another thread while a loop exists, it is kept for the
 * run() about to start (the caller may have raced the main thread to it);
 * with no loop, or from the main thread outside run(), there is nothing to
 * stop. Stopping the loop forgets a kept stop(). */
static PyObject *stop(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_runtime_t *rt = pxpy_get_state(module)->runtime;
    bool has_loop = atomic_load(&rt->loop) != NULL;
    bool main = pxpy_runtime_is_main(rt);
    pthread_mutex_lock(&rt->lock);
    if (rt->in_run || (has_loop && !main && !rt->shutting_down)) {
        rt->stop_requested = true;
        pthread_cond_signal(&rt->main_cond);
    }
    pthread_mutex_unlock(&rt->lock);
    Py_RETURN_NONE;
}

/* Whether a graceful stop began (see drain), its delay included, so that a
 * health route can answer 503 and a load balancer send no more. */
static PyObject *draining(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_runtime_t *rt = pxpy_get_state(module)->runtime;
    px_loop_t *loop = atomic_load(&rt->loop);
    return PyBool_FromLong(atomic_load(&rt->drain_announced) ||
                           (loop != NULL && px_loop_draining(loop)));
}

/* atexit: stop the loop before the interpreter finalises, while engine
 * threads can still attach. */
static PyObject *shutdown(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_get_state(module);
    /* A worker interpreter's module ends with its interpreter, not the
     * loop. */
    if (st->runtime != NULL && st->runtime->st == st && !st->runtime->in_run) {
        end_run(st, 0, false);
        pxpy_interps_end_parked(st);
    }
    Py_RETURN_NONE;
}

void pxpy_mainthread_free_queue(pxpy_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    pxpy_mainthread_cancel_waited_locked(rt);
    pxpy_call_t *c = rt->head;
    rt->head = rt->tail = NULL;
    pthread_mutex_unlock(&rt->lock);
    while (c) {
        pxpy_call_t *next = c->next;
        free_call(c);
        PyMem_RawFree(c);
        c = next;
    }
}

/* ---- module part ------------------------------------------------------- */

static PyMethodDef mainthread_methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_VARARGS | METH_KEYWORDS,
     "run($module, /, *, mode=None, graceful_timeout=None, drain_delay=0.0)"
     "\n--\n\n"
     "Serve until stop(), SIGINT/SIGTERM, or until nothing is registered and "
     "no work is pending; then stop the loop. With graceful_timeout, a stop "
     "drains first (after drain_delay seconds of draining() being true "
     "while serving on: listeners closed, accepted connections left to "
     "finish), and a drain and stop that take longer than graceful_timeout "
     "seconds in all end the process."},
    {"run_once", (PyCFunction)(void (*)(void))run_once,
     METH_VARARGS | METH_KEYWORDS,
     "run_once(timeout=None)\n--\n\n"
     "Run the calls queued for the main thread, waiting up to timeout "
     "seconds for one (None: until one arrives). Returns how many ran."},
    {"stop", stop, METH_NOARGS,
     "stop()\n--\n\nMake run() return (from any thread); with a "
     "graceful_timeout, after a drain."},
    {"draining", draining, METH_NOARGS,
     "draining($module, /)\n--\n\nTrue once a graceful stop began: the "
     "listeners are "
     "closed and the connections left finish."},
    {"_shutdown", shutdown, METH_NOARGS,
     "_shutdown()\n--\n\nStop the loop (the package's atexit hook)."},
    {"call_from_main_thread",
     (PyCFunction)(void (*)(void))call_from_main_thread,
     METH_FASTCALL | METH_KEYWORDS,
     "call_from_main_thread(func, /, *args, **kwargs)\n--\n\n"
     "Queue func(*args, **kwargs) for run()/run_once() on the main thread."},
    {"call_from_main_thread_and_wait",
     (PyCFunction)(void (*)(void))call_from_main_thread_and_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "call_from_main_thread_and_wait(func, /, *args, **kwargs)\n--\n\n"
     "Run func on the main thread and return its result (or raise its "
     "exception)."},
    {NULL, NULL, 0, NULL},
};

int pxpy_mainthread_exec(PyObject *module, pxpy_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, mainthread_methods);
}
