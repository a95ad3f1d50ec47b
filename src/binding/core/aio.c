/*
 * aio.c - an asyncio event loop per worker, driven by the engine.
 *
 * Each worker gets one pyparallel._aio.WorkerEventLoop, created on first
 * use on that worker, in the interpreter that serves it (the worker's own in
 * mode "interpreters"): coroutines of submit_work() and async protocol
 * callbacks run as its tasks (pxpy_aio_spawn), and worker_loop() returns it.
 *
 * The worker waits on one thing. The loop's selector is an epoll fd that
 * the engine watches on the loop's worker (px_watch_start); asyncio's
 * self-pipe is in it, so a call_soon_threadsafe from anywhere wakes the
 * worker, and WorkerEventLoop makes call_soon and call_at from outside an
 * iteration write to it too. The selector itself never blocks. Each time
 * the watch fires, a timer of the loop is due, or callbacks were left
 * ready, the binding runs one iteration (_px_step) and then looks at what
 * the loop waits for:
 *   - callbacks ready: a work item on the same worker runs the next
 *     iteration, after the worker's other queued events (fairness);
 *   - a timer due at some time: an engine timer on the worker, replaced
 *     only by an earlier one (a late wake-up is only one idle iteration);
 *   - otherwise, and with a timer too: the watch is armed again.
 * A plain protocol callback never touches any of this, so a server without
 * coroutines keeps its path and its cost.
 *
 * One thread at a time. A worker can run on several OS threads over time
 * (a blocked callback's worker goes to another thread), and a coroutine
 * that blocks blocks its loop's iteration; the worker's new holder must not
 * run the same loop meanwhile. Every iteration goes through run(), which
 * lets one thread in (running) and makes any other that comes meanwhile
 * leave a note (again) that the runner honours before it leaves, so no
 * wake-up is lost. The running loop (asyncio's per-thread one) is set for
 * the thread of each iteration only (_run_forever_setup/_cleanup).
 *
 * Closing. When the engine stops (or the worker's interpreter is about
 * to be replaced: pxpy_aio_close_worker), it stops the watch; its on_done marks
 * the loop closing and the next run() (that one, or the iteration that is under
 * way when it ends) closes it: tasks are cancelled and let finish, async
 * generators and the default executor shut down (_px_close). The C struct
 * is reference counted by what may still call into it (the watch, a queued
 * work item, a pending timer) and freed with the last of them; the Python
 * objects go at the close, in the loop's own interpreter.
 */
#include "binding.h"

#include <stdatomic.h>
#include <unistd.h>

typedef struct aio_s {
    pxpy_state *st; /* of the interpreter the loop lives in */
    px_loop_t *loop;
    int worker;
    atomic_int refs;
    PyObject *pyloop;      /* the WorkerEventLoop, until closed */
    PyObject *step;        /* its _px_step */
    PyObject *wait;        /* its _px_wait */
    PyObject *spawn;       /* pyparallel._aio.spawn */
    PyObject *spawn_eager; /* pyparallel._aio.spawn_eager */
    px_watch_t *watch;
    /* Touched by the running thread only (run()). */
    px_timer_t *timer; /* the pending wake-up, our reference */
    uint64_t timer_due;
    bool closed;
    atomic_bool close_done; /* close_loop returned */
    /* The watch is armed and has not fired. Atomic: on_watch_ready clears
     * it on the worker's holder while, after a hand-off, the thread that
     * runs the loop may be another one, arming it. */
    atomic_bool watch_armed;
    atomic_bool running;
    atomic_bool again;
    atomic_bool work_queued;
    atomic_bool closing;
} aio_t;

/* Per module state (so per interpreter): the loop of each worker this
 * interpreter serves. */
struct pxpy_aio_s {
    aio_t *_Atomic worker[PX_MAX_WORKERS];
};

static void aio_unref(aio_t *a)
{
    if (atomic_fetch_sub(&a->refs, 1) == 1) {
        if (a->watch != NULL)
            px_watch_unref(a->watch);
        PyMem_RawFree(a);
    }
}

static void run(aio_t *a);

static void on_work(void *arg)
{
    aio_t *a = arg;
    atomic_store(&a->work_queued, false);
    run(a);
    aio_unref(a);
}

static void on_work_cancelled(void *arg)
{
    aio_t *a = arg;
    atomic_store(&a->work_queued, false);
    aio_unref(a);
}

static void on_timer(void *arg) { run(arg); }

static void on_timer_done(void *arg) { aio_unref(arg); }

static void on_watch_ready(void *arg)
{
    aio_t *a = arg;
    atomic_store(&a->watch_armed, false);
    run(a);
}

static void on_watch_done(void *arg)
{
    aio_t *a = arg;
    atomic_store(&a->closing, true);
    run(a);
    aio_unref(a); /* the watch's */
}

static void drop_timer(aio_t *a)
{
    if (a->timer != NULL) {
        px_timer_cancel(a->timer);
        px_timer_unref(a->timer);
        a->timer = NULL;
    }
}

/* The next iteration, soon: a work item on the loop's worker, after the
 * worker's other queued events (fairness). Any thread. */
static void step_soon(aio_t *a)
{
    if (atomic_exchange(&a->work_queued, true))
        return;
    atomic_fetch_add(&a->refs, 1);
    if (px_submit_to(a->loop, a->worker, on_work, on_work_cancelled, a) < 0) {
        /* The engine stops: the watch's on_done closes the loop. */
        atomic_store(&a->work_queued, false);
        atomic_fetch_sub(&a->refs, 1);
    }
}

/* What the loop waits for after an iteration: delay 0 (callbacks ready),
 * seconds until a timer, or < 0 (I/O only). */
static void schedule(aio_t *a, double delay)
{
    if (delay == 0) {
        step_soon(a);
        return;
    }
    if (delay > 0) {
        uint64_t now = px_now_ns();
        uint64_t ns = delay > 1e9 ? (uint64_t)1e18 : (uint64_t)(delay * 1e9);
        /* A pending wake-up that is due no later serves; one that is past
         * is firing now and cannot be relied on. */
        if (a->timer == NULL || a->timer_due <= now ||
            a->timer_due > now + ns) {
            drop_timer(a);
            px_timer_t *t = NULL;
            atomic_fetch_add(&a->refs, 1);
            if (px_timer_start_on(a->loop, a->worker, ns, 0, on_timer,
                                  on_timer_done, a, &t) == 0) {
                a->timer = t;
                a->timer_due = now + ns;
            } else {
                atomic_fetch_sub(&a->refs, 1);
            }
        }
    }
    /* Marked armed before arming: the watch may fire, and on_watch_ready
     * clear the mark on another thread, before px_watch_arm returns. Marked
     * after, that report would be overwritten, and every later iteration
     * would skip its poll while nothing re-arms the watch. */
    if (!atomic_load(&a->watch_armed)) {
        atomic_store(&a->watch_armed, true);
        if (px_watch_arm(a->watch) != 0)
            atomic_store(&a->watch_armed, false);
    }
}

/* What _px_step or _px_wait returned (a new reference, or NULL with an
 * exception, which is reported) as schedule() takes it. */
static double delay_of(aio_t *a, PyObject *r)
{
    double delay = -1;
    if (r == NULL) {
        pxpy_report_callback_error(a->st, "the worker's asyncio loop");
    } else if (r != Py_None) {
        delay = PyFloat_AsDouble(r);
        if (delay == -1 && PyErr_Occurred()) {
            pxpy_report_callback_error(a->st, "the worker's asyncio loop");
            delay = -1;
        }
    }
    Py_XDECREF(r);
    return delay;
}

static void step(aio_t *a)
{
    /* While the watch is armed the selector has nothing to report (the
     * watch fires, and runs an iteration, once it has): the iteration
     * skips its poll, a system call per request otherwise. */
    schedule(
        a, delay_of(a, PyObject_CallOneArg(a->step, atomic_load(&a->watch_armed)
                                                        ? Py_False
                                                        : Py_True)));
}

static void close_loop(aio_t *a)
{
    struct pxpy_aio_s *slots = a->st->aio;
    aio_t *expected = a;
    /* From now on worker_loop() on this worker makes a new loop (the next
     * engine loop's). */
    atomic_compare_exchange_strong(&slots->worker[a->worker], &expected, NULL);
    a->closed = true;
    drop_timer(a);
    PyObject *r = PyObject_CallMethod(a->pyloop, "_px_close", NULL);
    if (r == NULL)
        pxpy_report_callback_error(a->st, "closing the worker's asyncio loop");
    Py_XDECREF(r);
    Py_CLEAR(a->step);
    Py_CLEAR(a->wait);
    Py_CLEAR(a->spawn);
    Py_CLEAR(a->spawn_eager);
    Py_CLEAR(a->pyloop);
    atomic_store(&a->close_done, true);
}

/* One iteration (or the close), on one thread at a time; see the top. */
static void run(aio_t *a)
{
    bool attached = pxpy_attach();
    atomic_store(&a->again, true);
    while (atomic_load(&a->again) && !atomic_exchange(&a->running, true)) {
        atomic_store(&a->again, false);
        if (!a->closed) {
            if (atomic_load(&a->closing))
                close_loop(a);
            else
                step(a);
        }
        atomic_store(&a->running, false);
    }
    pxpy_detach(attached);
}

/* ---- the loop of the calling worker ------------------------------------ */

/* Closes a loop that never ran and drops it. */
static void discard(aio_t *a)
{
    a->closed = true;
    PyObject *r = PyObject_CallMethod(a->pyloop, "close", NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_CLEAR(a->step);
    Py_CLEAR(a->wait);
    Py_CLEAR(a->spawn);
    Py_CLEAR(a->spawn_eager);
    Py_CLEAR(a->pyloop);
    aio_unref(a);
}

static aio_t *create(pxpy_state *st, px_loop_t *loop, int worker)
{
    PyObject *cls = pxpy_import_attr("pyparallel._aio", "WorkerEventLoop");
    aio_t *a = cls ? PyMem_RawCalloc(1, sizeof(*a)) : NULL;
    if (a == NULL) {
        if (cls != NULL)
            PyErr_NoMemory();
        Py_XDECREF(cls);
        return NULL;
    }
    a->st = st;
    a->loop = loop;
    a->worker = worker;
    atomic_init(&a->refs, 1); /* the watch's */
    a->pyloop = PyObject_CallNoArgs(cls);
    Py_DECREF(cls);
    if (a->pyloop == NULL) {
        PyMem_RawFree(a);
        return NULL;
    }
    a->step = PyObject_GetAttrString(a->pyloop, "_px_step");
    a->wait = a->step ? PyObject_GetAttrString(a->pyloop, "_px_wait") : NULL;
    a->spawn = a->wait ? pxpy_import_attr("pyparallel._aio", "spawn") : NULL;
    a->spawn_eager =
        a->spawn ? pxpy_import_attr("pyparallel._aio", "spawn_eager") : NULL;
    PyObject *fdobj = a->spawn_eager
                          ? PyObject_CallMethod(a->pyloop, "_px_fileno", NULL)
                          : NULL;
    int fd = fdobj ? PyLong_AsInt(fdobj) : -1;
    Py_XDECREF(fdobj);
    if (fd < 0) {
        PyObject *exc = PyErr_GetRaisedException();
        discard(a);
        PyErr_SetRaisedException(exc);
        return NULL;
    }
    aio_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&st->aio->worker[worker], &expected,
                                        a)) {
        /* Another thread of this worker (a hand-off) made one first. */
        discard(a);
        return expected;
    }
    atomic_store(&a->watch_armed, true); /* px_watch_start arms it */
    int rc = px_watch_start(loop, worker, fd, on_watch_ready, on_watch_done, a,
                            &a->watch);
    if (rc < 0) {
        atomic_store(&st->aio->worker[worker], NULL);
        discard(a);
        pxpy_raise_engine_error(st, rc, "starting the worker's loop");
        return NULL;
    }
    return a;
}

/* The calling worker's loop, created on first use; NULL with an exception
 * off the workers. */
static aio_t *current(pxpy_state *st)
{
    int worker = px_current_worker();
    if (worker < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the worker loops exist on the workers only: call "
                        "this from a callback, a work item or a timer");
        return NULL;
    }
    aio_t *a = atomic_load(&st->aio->worker[worker]);
    if (a != NULL)
        return a;
    px_loop_t *loop = pxpy_loop(st);
    return loop ? create(st, loop, worker) : NULL;
}

void pxpy_aio_close_worker(pxpy_state *st)
{
    int worker = px_current_worker();
    aio_t *a = worker >= 0 ? atomic_load(&st->aio->worker[worker]) : NULL;
    if (a == NULL)
        return;
    atomic_fetch_add(&a->refs, 1);
    /* The engine stops watching the selector before the loop closes it;
     * the watch's on_done then finds the loop closed. */
    px_watch_stop(a->watch);
    atomic_store(&a->closing, true);
    /* run() closes it here, or has the thread that runs an iteration now
     * (after a hand-off) close it before that one leaves. */
    run(a);
    Py_BEGIN_ALLOW_THREADS while (!atomic_load(&a->close_done)) usleep(1000);
    Py_END_ALLOW_THREADS aio_unref(a);
}

/* ---- tasks ----------------------------------------------------------------
 */

typedef struct {
    pxpy_aio_done_fn done;
    void *arg;
    bool fired;
} spawn_t;

static void spawn_finish(spawn_t *s, PyObject *result)
{
    s->fired = true;
    s->done(s->arg, result);
}

static PyObject *spawn_done(PyObject *capsule, PyObject *task)
{
    spawn_t *s = PyCapsule_GetPointer(capsule, NULL);
    if (s == NULL)
        return NULL;
    if (s->fired)
        Py_RETURN_NONE;
    PyObject *result = PyObject_CallMethod(task, "result", NULL);
    spawn_finish(s, result);
    Py_XDECREF(result);
    Py_RETURN_NONE;
}

/* A task destroyed without finishing (it ignored its cancellation past the
 * close's budget) still ends its caller's wait, as cancelled. */
static void spawn_free(PyObject *capsule)
{
    spawn_t *s = PyCapsule_GetPointer(capsule, NULL);
    if (s == NULL) {
        PyErr_Clear();
        return;
    }
    if (!s->fired) {
        PyObject *saved = PyErr_GetRaisedException();
        PyObject *cancelled = pxpy_import_attr("asyncio", "CancelledError");
        if (cancelled != NULL) {
            PyErr_SetNone(cancelled);
            Py_DECREF(cancelled);
        }
        spawn_finish(s, NULL);
        PyErr_SetRaisedException(saved);
    }
    PyMem_RawFree(s);
}

static PyMethodDef spawn_done_def = {
    "_px_task_done", spawn_done, METH_O,
    "Hands a finished task's outcome to the binding."};

bool pxpy_is_awaitable(PyObject *obj)
{
    PyAsyncMethods *am = Py_TYPE(obj)->tp_as_async;
    return am != NULL && am->am_await != NULL;
}

/* Calls spawn_eager when no other thread runs the loop (the task's first
 * step runs here, on this thread, as the loop's), else spawn. The task;
 * None when it finished in its first step (done ran); NULL with an
 * exception. */
static PyObject *start_task(aio_t *a, PyObject *awaitable, PyObject *cb,
                            bool eager)
{
    if (!eager || atomic_exchange(&a->running, true)) {
        PyObject *task = PyObject_CallFunctionObjArgs(a->spawn, a->pyloop,
                                                      awaitable, cb, NULL);
        /* spawn() does not wake the loop through its self-pipe (a write,
         * then a read and a poll): the task's first step is queued here. */
        if (task != NULL)
            step_soon(a);
        return task;
    }
    PyObject *task = PyObject_CallFunctionObjArgs(a->spawn_eager, a->pyloop,
                                                  awaitable, cb, NULL);
    if (task != NULL && task != Py_None) {
        /* The task waits. Still the loop's runner, this thread tells the
         * engine what the loop waits for now (a handler's sleep is a timer
         * of it) rather than queueing an iteration that would find only
         * that, one per request that waits. */
        if (a->closed || atomic_load(&a->closing))
            step_soon(a);
        else
            schedule(a, delay_of(a, PyObject_CallNoArgs(a->wait)));
    }
    atomic_store(&a->running, false);
    /* Another thread came to run an iteration meanwhile and left it to the
     * runner (see run()): queued now. */
    if (atomic_exchange(&a->again, false))
        step_soon(a);
    return task;
}

static int spawn_on(pxpy_state *st, PyObject *awaitable, pxpy_aio_done_fn done,
                    void *arg, bool eager)
{
    aio_t *a = current(st);
    if (a == NULL)
        return -1;
    if (a->pyloop == NULL) {
        PyErr_SetString(st->async_error,
                        "the worker's loop is closed: the loop is stopping");
        return -1;
    }
    spawn_t *s = PyMem_RawCalloc(1, sizeof(*s));
    if (s == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->done = done;
    s->arg = arg;
    PyObject *capsule = PyCapsule_New(s, NULL, spawn_free);
    if (capsule == NULL) {
        PyMem_RawFree(s);
        return -1;
    }
    PyObject *cb = PyCFunction_New(&spawn_done_def, capsule);
    PyObject *task = cb ? start_task(a, awaitable, cb, eager) : NULL;
    Py_XDECREF(cb);
    if (task == NULL) {
        if (s->fired) {
            /* done ran (the task finished) and something failed after:
             * the outcome is given, the rest is reported. */
            pxpy_report_callback_error(st, "starting a task");
            Py_DECREF(capsule);
            return 0;
        }
        s->fired = true; /* the caller handles the failure */
        Py_DECREF(capsule);
        return -1;
    }
    Py_DECREF(task);
    Py_DECREF(capsule);
    return 0;
}

int pxpy_aio_spawn(pxpy_state *st, PyObject *awaitable, pxpy_aio_done_fn done,
                   void *arg)
{
    return spawn_on(st, awaitable, done, arg, false);
}

int pxpy_aio_spawn_eager(pxpy_state *st, PyObject *awaitable,
                         pxpy_aio_done_fn done, void *arg)
{
    return spawn_on(st, awaitable, done, arg, true);
}

/* ---- module part ----------------------------------------------------------
 */

static PyObject *worker_loop(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    aio_t *a = current(pxpy_get_state(module));
    if (a == NULL)
        return NULL;
    if (a->pyloop == NULL) {
        PyErr_SetString(pxpy_get_state(module)->async_error,
                        "the worker's loop is closed: the loop is stopping");
        return NULL;
    }
    return Py_NewRef(a->pyloop);
}

static PyMethodDef aio_methods[] = {
    {"worker_loop", worker_loop, METH_NOARGS,
     "worker_loop()\n--\n\nThe asyncio event loop of the calling worker "
     "(created on first use)."},
    {NULL, NULL, 0, NULL},
};

int pxpy_aio_exec(PyObject *module, pxpy_state *st)
{
    st->aio = PyMem_RawCalloc(1, sizeof(*st->aio));
    if (st->aio == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return PyModule_AddFunctions(module, aio_methods);
}

void pxpy_aio_free(pxpy_state *st)
{
    /* The engine loop has stopped by now (runtime.c), which closed every
     * worker loop. */
    PyMem_RawFree(st->aio);
    st->aio = NULL;
}

bool pxpy_aio_cancelled(void)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *cancelled = pxpy_import_attr("asyncio", "CancelledError");
    bool is = cancelled != NULL && PyErr_GivenExceptionMatches(exc, cancelled);
    Py_XDECREF(cancelled);
    PyErr_Clear();
    PyErr_SetRaisedException(exc);
    return is;
}
