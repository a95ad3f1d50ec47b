/*
 * runtime.c - the engine loop's life as Python sees it: creation on first
 * use, the thread hooks that give engine threads a Python thread state,
 * run()/run_once()/stop(), the main-thread queue behind
 * call_from_main_thread*, the bookkeeping that tells run() when to end,
 * stats() and is_parallel_thread().
 *
 * Lifecycle. The first call that needs the engine (server, client,
 * submit_work, timer, stats, run) creates and starts a loop in the mode of
 * PYPARALLEL_MODE (or run's mode argument, or the build's default). run()
 * then serves the main-thread queue until stop() is called, a signal
 * handler calls it, or nothing is registered and no work is pending; then
 * the loop is stopped (connections closed, work cancelled, threads joined)
 * and the next use starts a fresh one. A stopped loop's memory is kept
 * until the next one stops ("retired"), so that a thread that read the loop
 * pointer just before the stop meets a stopped loop (its calls fail with
 * PX_ESTOPPED) rather than freed memory.
 *
 * Threads. Each engine thread creates its own PyThreadState in the
 * interpreter that owns the loop when it starts (on_thread_start), attaches
 * it for each batch of callbacks (on_dispatch_enter/leave) and deletes it
 * when it ends. The calling thread's state is kept in a C11 thread-local,
 * the binding's only static that is not a read-only table: a thread state
 * belongs to one OS thread, so a thread-local is where it naturally lives.
 *
 * Locking. rt->lock (a pthread mutex, never held while attaching or
 * calling Python) guards the main-thread queue, the flags and the protocol
 * handshake; rt->loop_lock (a PyMutex, which detaches while it waits)
 * serialises creating and retiring loops.
 */
#include "binding.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often a waiting main thread looks at pending signals. */
#define SIGNAL_CHECK_NS (100 * 1000 * 1000)

static _Thread_local PyThreadState *thread_tstate;

typedef enum { CALL_QUEUED, CALL_DONE, CALL_CANCELLED } call_state_t;

/* A call queued for the main thread. A waited call lives on its waiter's
 * stack; the main thread's last touch is setting state, under rt->lock. */
typedef struct pxpy_call_s {
    struct pxpy_call_s *next;
    PyObject *func, *args, *kwargs;
    bool waited;
    call_state_t state;
    PyObject *result;     /* waited: the result, or NULL with exc */
    PyObject *exc;
} pxpy_call_t;

struct pxpy_runtime_s {
    pxpy_state *st;
    PyInterpreterState *interp;
    unsigned long main_ident;      /* the interpreter's main thread */

    PyMutex loop_lock;
    px_loop_t *_Atomic loop;
    px_loop_t *retired;            /* the previous, stopped loop */
    PyObject *listeners;           /* listening transports of this loop */

    _Atomic Py_ssize_t registered;
    _Atomic Py_ssize_t pending;
    _Atomic uint64_t errors;

    pthread_mutex_t lock;
    pthread_cond_t main_cond;      /* the main thread waits for calls */
    pthread_cond_t done_cond;      /* waiters of waited calls */
    pthread_cond_t protocol_cond;  /* engine threads wait for register() */
    pxpy_call_t *head, *tail;
    bool stop_requested;
    bool shutting_down;
    bool in_run;
};

/* ---- attaching --------------------------------------------------------- */

bool pxpy_attach(void)
{
    if (PyThreadState_GetUnchecked() != NULL)
        return false;
    if (thread_tstate == NULL)
        Py_FatalError("pyparallel: an engine callback ran on a thread "
                      "without a Python thread state");
    PyEval_RestoreThread(thread_tstate);
    return true;
}

void pxpy_detach(bool attached)
{
    if (attached)
        PyEval_SaveThread();
}

pxpy_blocking_t pxpy_blocking_begin(void)
{
    pxpy_blocking_t b;
    b.previous = thread_tstate;
    b.tstate = PyEval_SaveThread();
    thread_tstate = b.tstate;
    return b;
}

void pxpy_blocking_end(pxpy_blocking_t b)
{
    PyEval_RestoreThread(b.tstate);
    thread_tstate = b.previous;
}

/* ---- thread hooks (engine threads) --------------------------------------- */

static void on_thread_start(void *data, int worker)
{
    (void)worker;
    pxpy_runtime_t *rt = data;
    /* Created on the thread itself: on free-threaded builds a thread state
     * binds the creating OS thread's allocator heaps. */
    thread_tstate = PyThreadState_New(rt->interp);
    if (thread_tstate == NULL)
        Py_FatalError("pyparallel: out of memory for an engine thread's "
                      "Python thread state");
}

static void on_thread_stop(void *data, int worker)
{
    (void)data;
    (void)worker;
    PyEval_RestoreThread(thread_tstate);
    PyThreadState_Clear(thread_tstate);
    PyThreadState_DeleteCurrent();
    thread_tstate = NULL;
}

static void on_dispatch_enter(void *data, int worker)
{
    (void)data;
    (void)worker;
    PyEval_RestoreThread(thread_tstate);
}

static void on_dispatch_leave(void *data, int worker)
{
    (void)data;
    (void)worker;
    PyEval_SaveThread();
}

/* ---- bookkeeping --------------------------------------------------------- */

static void wake_main(pxpy_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    pthread_cond_signal(&rt->main_cond);
    pthread_mutex_unlock(&rt->lock);
}

void pxpy_registered_add(pxpy_state *st, Py_ssize_t delta)
{
    pxpy_runtime_t *rt = st->runtime;
    if (atomic_fetch_add(&rt->registered, delta) + delta == 0)
        wake_main(rt);
}

void pxpy_pending_add(pxpy_state *st, Py_ssize_t delta)
{
    pxpy_runtime_t *rt = st->runtime;
    if (atomic_fetch_add(&rt->pending, delta) + delta == 0)
        wake_main(rt);
}

void pxpy_count_error(pxpy_state *st)
{
    atomic_fetch_add_explicit(&st->runtime->errors, 1, memory_order_relaxed);
}

int pxpy_keep_listener(pxpy_state *st, PyObject *transport)
{
    pxpy_runtime_t *rt = st->runtime;
    PyMutex_Lock(&rt->loop_lock);
    if (rt->listeners == NULL)
        rt->listeners = PyList_New(0);
    int rc = rt->listeners ? PyList_Append(rt->listeners, transport) : -1;
    PyMutex_Unlock(&rt->loop_lock);
    return rc;
}

bool pxpy_publish_protocol(pxpy_state *st, pxpy_transport_t *t,
                           PyObject *protocol)
{
    pxpy_runtime_t *rt = st->runtime;
    pthread_mutex_lock(&rt->lock);
    bool free_slot = t->protocol == NULL;
    if (free_slot) {
        t->protocol = Py_NewRef(protocol);
        pthread_cond_broadcast(&rt->protocol_cond);
    }
    pthread_mutex_unlock(&rt->lock);
    return free_slot;
}

PyObject *pxpy_await_protocol(pxpy_state *st, pxpy_transport_t *t)
{
    pxpy_runtime_t *rt = st->runtime;
    pthread_mutex_lock(&rt->lock);
    PyObject *protocol = t->protocol;
    pthread_mutex_unlock(&rt->lock);
    if (protocol != NULL)
        return protocol;
    /* A connection arrived between server()/client() and register():
     * wait for the protocol without holding the thread state. */
    pxpy_blocking_t b = pxpy_blocking_begin();
    pthread_mutex_lock(&rt->lock);
    while (t->protocol == NULL && !rt->shutting_down &&
           !(atomic_load(&t->flags) & (PXPY_T_CLOSING | PXPY_T_CLOSED)))
        pthread_cond_wait(&rt->protocol_cond, &rt->lock);
    protocol = t->protocol;
    pthread_mutex_unlock(&rt->lock);
    pxpy_blocking_end(b);
    return protocol;
}

void pxpy_wake_protocol_waiters(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    pthread_mutex_lock(&rt->lock);
    pthread_cond_broadcast(&rt->protocol_cond);
    pthread_mutex_unlock(&rt->lock);
}

/* ---- the loop ------------------------------------------------------------- */

/* PYPARALLEL_WORKERS and PYPARALLEL_IO, checked here rather than quietly
 * replaced by defaults: a deployment that sets them wants to know they
 * apply. */
static int options_from_environment(px_loop_options_t *opts)
{
    const char *v = getenv("PYPARALLEL_WORKERS");
    if (v != NULL && v[0] != '\0') {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || *end != '\0' || n < 1 || n > PX_MAX_WORKERS) {
            PyErr_Format(PyExc_ValueError,
                         "PYPARALLEL_WORKERS must be a number of workers "
                         "from 1 to %d, not '%.50s'",
                         PX_MAX_WORKERS, v);
            return -1;
        }
        opts->workers = (int)n;
    }
    v = getenv("PYPARALLEL_IO");
    if (v != NULL && v[0] != '\0') {
        if (strcmp(v, "uring") == 0 || strcmp(v, "io_uring") == 0) {
            opts->backend = PX_BACKEND_URING;
        } else if (strcmp(v, "epoll") == 0) {
            opts->backend = PX_BACKEND_EPOLL;
        } else if (strcmp(v, "auto") != 0) {
            PyErr_Format(PyExc_ValueError,
                         "PYPARALLEL_IO must be uring, epoll or auto, not "
                         "'%.50s'",
                         v);
            return -1;
        }
    }
    return 0;
}

static px_loop_t *start_loop(pxpy_state *st, pxpy_mode_t mode)
{
    pxpy_runtime_t *rt = st->runtime;
    px_loop_options_t opts;
    px_loop_options_init(&opts);
    if (options_from_environment(&opts) < 0)
        return NULL;
    opts.on_thread_start = on_thread_start;
    opts.on_thread_stop = on_thread_stop;
    opts.on_dispatch_enter = on_dispatch_enter;
    opts.on_dispatch_leave = on_dispatch_leave;
    opts.hook_data = rt;
    px_loop_t *loop = NULL;
    int rc = px_loop_new(&loop, &opts);
    if (rc == PX_ENOBACKEND && opts.backend == PX_BACKEND_URING) {
        PyErr_SetString(st->async_error,
                        "PYPARALLEL_IO=uring, but io_uring is unavailable "
                        "here (kernel, seccomp profile or the "
                        "kernel.io_uring_disabled sysctl): use "
                        "PYPARALLEL_IO=epoll");
        return NULL;
    }
    if (rc < 0) {
        pxpy_raise_engine_error(st, rc, "starting the engine");
        return NULL;
    }
    st->mode = mode;
    /* The threads start attaching to the interpreter at once; let them
     * while this thread waits for nothing but thread creation. */
    pxpy_blocking_t b = pxpy_blocking_begin();
    rc = px_loop_start(loop);
    if (rc < 0) {
        px_loop_stop(loop);
        px_loop_free(loop);
    }
    pxpy_blocking_end(b);
    if (rc < 0) {
        pxpy_raise_engine_error(st, rc, "starting the engine");
        return NULL;
    }
    atomic_store(&rt->loop, loop);
    return loop;
}

/* The loop, started in mode (NULL: the default) when there is none. */
static px_loop_t *ensure_loop(pxpy_state *st, PyObject *mode_name)
{
    pxpy_runtime_t *rt = st->runtime;
    px_loop_t *loop = atomic_load(&rt->loop);
    if (loop != NULL && mode_name == NULL)
        return loop;
    pxpy_mode_t mode;
    if (pxpy_parse_mode(mode_name, &mode) < 0)
        return NULL;
    PyMutex_Lock(&rt->loop_lock);
    pthread_mutex_lock(&rt->lock);
    bool stopping = rt->shutting_down;
    pthread_mutex_unlock(&rt->lock);
    loop = atomic_load(&rt->loop);
    if (stopping) {
        PyErr_SetString(st->async_error,
                        "the loop is stopping; try again once run() or "
                        "stop() has returned");
        loop = NULL;
    } else if (loop == NULL) {
        loop = start_loop(st, mode);
    } else if (mode_name != NULL && mode != st->mode) {
        PyErr_Format(PyExc_ValueError,
                     "the loop already runs in mode '%s' (it starts with the "
                     "first server(), client(), submit_work(), timer() or "
                     "stats()); pass the mode before that, through "
                     "PYPARALLEL_MODE, or stop() the loop first",
                     pxpy_mode_name(st->mode));
        loop = NULL;
    }
    PyMutex_Unlock(&rt->loop_lock);
    return loop;
}

px_loop_t *pxpy_loop(pxpy_state *st)
{
    return ensure_loop(st, NULL);
}

/* Marks every waited call cancelled and wakes its waiter; rt->lock held. */
static void cancel_waited_calls_locked(pxpy_runtime_t *rt)
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

/* Stops the loop, if one runs: closes connections (connection_lost runs),
 * cancels work and timers, joins the threads. Main thread, attached. */
static void shutdown_loop(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    PyMutex_Lock(&rt->loop_lock);
    px_loop_t *loop = atomic_load(&rt->loop);
    if (loop != NULL) {
        pthread_mutex_lock(&rt->lock);
        rt->shutting_down = true;
        cancel_waited_calls_locked(rt);
        pthread_cond_broadcast(&rt->protocol_cond);
        pthread_mutex_unlock(&rt->lock);
    }
    PyMutex_Unlock(&rt->loop_lock);
    if (loop == NULL)
        return;

    /* Not under loop_lock: callbacks that run during the stop may call
     * into the runtime (they get "the loop is stopping"). */
    pxpy_blocking_t b = pxpy_blocking_begin();
    px_loop_stop(loop);
    pxpy_blocking_end(b);

    PyMutex_Lock(&rt->loop_lock);
    PyObject *listeners = rt->listeners;
    rt->listeners = PyList_New(0);
    atomic_store(&rt->loop, NULL);
    if (rt->retired != NULL)
        px_loop_free(rt->retired);
    rt->retired = loop;
    pthread_mutex_lock(&rt->lock);
    rt->shutting_down = false;
    pthread_mutex_unlock(&rt->lock);
    PyMutex_Unlock(&rt->loop_lock);

    if (listeners != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(listeners); i++)
            pxpy_transport_mark_closed(
                (pxpy_transport_t *)PyList_GET_ITEM(listeners, i));
        Py_DECREF(listeners);
    }
    if (rt->listeners == NULL)
        PyErr_Clear(); /* pxpy_keep_listener retries */
    /* Every connection has had its connection_lost and every work item
     * and timer its cancellation: what is left counted nothing real. */
    atomic_store(&rt->registered, 0);
    atomic_store(&rt->pending, 0);
}

/* ---- the main-thread queue ------------------------------------------------ */

static void free_call(pxpy_call_t *c)
{
    Py_XDECREF(c->func);
    Py_XDECREF(c->args);
    Py_XDECREF(c->kwargs);
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
        PyObject *r = PyObject_Call(c->func, c->args, c->kwargs);
        free_call(c);
        n++;
        if (c->waited) {
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

static bool is_main_thread(pxpy_runtime_t *rt)
{
    return PyThread_get_thread_ident() == rt->main_ident;
}

bool pxpy_is_main_thread(pxpy_state *st)
{
    return is_main_thread(st->runtime);
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
    pxpy_runtime_t *rt = pxpy_get_state(module)->runtime;
    pxpy_call_t *c = PyMem_RawMalloc(sizeof(*c));
    if (c == NULL)
        return PyErr_NoMemory();
    if (fill_call(c, "call_from_main_thread", args, nargs, kwnames) < 0) {
        free_call(c);
        PyMem_RawFree(c);
        return NULL;
    }
    pthread_mutex_lock(&rt->lock);
    push_call_locked(rt, c);
    pthread_mutex_unlock(&rt->lock);
    Py_RETURN_NONE;
}

static PyObject *call_from_main_thread_and_wait(PyObject *module,
                                                PyObject *const *args,
                                                Py_ssize_t nargs,
                                                PyObject *kwnames)
{
    pxpy_state *st = pxpy_get_state(module);
    pxpy_runtime_t *rt = st->runtime;
    pxpy_call_t c;
    if (fill_call(&c, "call_from_main_thread_and_wait", args, nargs,
                  kwnames) < 0) {
        free_call(&c);
        return NULL;
    }
    if (is_main_thread(rt)) {
        free_call(&c);
        PyErr_SetString(st->async_error,
                        "call_from_main_thread_and_wait() was called on the "
                        "main thread, which would wait for itself: call the "
                        "function directly");
        return NULL;
    }
    c.waited = true;
    pxpy_blocking_t b = pxpy_blocking_begin();
    pthread_mutex_lock(&rt->lock);
    if (rt->shutting_down) {
        c.state = CALL_CANCELLED;
    } else {
        push_call_locked(rt, &c);
        while (c.state == CALL_QUEUED)
            pthread_cond_wait(&rt->done_cond, &rt->lock);
    }
    pthread_mutex_unlock(&rt->lock);
    pxpy_blocking_end(b);
    if (c.state == CALL_CANCELLED) {
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

/* ---- run, run_once, stop --------------------------------------------------- */

static int require_main_thread(pxpy_state *st, const char *fname)
{
    if (is_main_thread(st->runtime))
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

static void end_run(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    shutdown_loop(st);
    /* Calls queued by connection_lost and friends during the stop. */
    PyObject *exc = PyErr_GetRaisedException();
    run_queued_calls(st);
    PyErr_SetRaisedException(exc);
    pthread_mutex_lock(&rt->lock);
    rt->stop_requested = false;
    rt->in_run = false;
    pthread_mutex_unlock(&rt->lock);
}

static PyObject *run(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"mode", NULL};
    PyObject *mode = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O:run", kwlist, &mode))
        return NULL;
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
    if (ensure_loop(st, mode == Py_None ? NULL : mode) == NULL)
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
        if (w == WAIT_STOP || w == WAIT_IDLE)
            break;
    }
    end_run(st);
    if (failed)
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
    bool main = is_main_thread(rt);
    pthread_mutex_lock(&rt->lock);
    if (rt->in_run || (has_loop && !main && !rt->shutting_down)) {
        rt->stop_requested = true;
        pthread_cond_signal(&rt->main_cond);
    }
    pthread_mutex_unlock(&rt->lock);
    Py_RETURN_NONE;
}

/* atexit: stop the loop before the interpreter finalises, while engine
 * threads can still attach. */
static PyObject *shutdown(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_get_state(module);
    if (!st->runtime->in_run)
        end_run(st);
    Py_RETURN_NONE;
}

/* ---- introspection ---------------------------------------------------- */

static PyObject *is_parallel_thread(PyObject *module,
                                    PyObject *Py_UNUSED(ignored))
{
    (void)module;
    return PyBool_FromLong(px_current_worker() >= 0);
}

static int set_u64(PyObject *d, const char *key, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static int set_str(PyObject *d, const char *key, const char *v)
{
    PyObject *o = PyUnicode_FromString(v);
    if (o == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

/* One dict per worker: callbacks, queue_depth, handoffs. */
static PyObject *worker_stats(const px_stats_t *s)
{
    PyObject *list = PyList_New(s->workers);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < s->workers; i++) {
        PyObject *d = PyDict_New();
        if (d == NULL || set_u64(d, "callbacks", s->worker[i].callbacks) < 0 ||
            set_u64(d, "queue_depth", s->worker[i].queue_depth) < 0 ||
            set_u64(d, "handoffs", s->worker[i].handoffs) < 0) {
            Py_XDECREF(d);
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyObject *stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_get_state(module);
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    /* px_stats_t holds PX_MAX_WORKERS entries: too big for the stack of a
     * thread with a small one. */
    px_stats_t *s = PyMem_Malloc(sizeof(*s));
    if (s == NULL)
        return PyErr_NoMemory();
    px_loop_stats(loop, s);
    const char *backend = px_loop_backend_name(loop);
    PyObject *d = PyDict_New();
    PyObject *workers = d ? worker_stats(s) : NULL;
    if (workers == NULL || set_str(d, "mode", pxpy_mode_name(st->mode)) < 0 ||
        set_str(d, "io", strstr(backend, "uring") ? "io_uring" : backend) < 0 ||
        set_u64(d, "workers", (uint64_t)s->workers) < 0 ||
        set_u64(d, "threads", (uint64_t)s->threads) < 0 ||
        PyDict_SetItemString(d, "worker", workers) < 0 ||
        set_u64(d, "connections", s->connections) < 0 ||
        set_u64(d, "accepted", s->accepted) < 0 ||
        set_u64(d, "bytes_in", s->bytes_in) < 0 ||
        set_u64(d, "bytes_out", s->bytes_out) < 0 ||
        set_u64(d, "io_hogs", s->io_hogs) < 0 ||
        set_u64(d, "pending_work", s->pending_work) < 0 ||
        set_u64(d, "errors", atomic_load(&st->runtime->errors)) < 0) {
        Py_XDECREF(workers);
        Py_XDECREF(d);
        PyMem_Free(s);
        return NULL;
    }
    Py_DECREF(workers);
    PyMem_Free(s);
    return d;
}

static PyObject *worker_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    px_loop_t *loop = pxpy_loop(pxpy_get_state(module));
    return loop ? PyLong_FromLong(px_loop_worker_count(loop)) : NULL;
}

/* ---- module part ------------------------------------------------------- */

static PyMethodDef runtime_methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_VARARGS | METH_KEYWORDS,
     "run(*, mode=None)\n--\n\n"
     "Serve until stop(), SIGINT/SIGTERM, or until nothing is registered and "
     "no work is pending; then stop the loop."},
    {"run_once", (PyCFunction)(void (*)(void))run_once,
     METH_VARARGS | METH_KEYWORDS,
     "run_once(timeout=None)\n--\n\n"
     "Run the calls queued for the main thread, waiting up to timeout "
     "seconds for one (None: until one arrives or nothing is left to wait "
     "for). Returns how many ran."},
    {"stop", stop, METH_NOARGS,
     "stop()\n--\n\nMake run() return (from any thread); no effect when "
     "run() is not running."},
    {"_shutdown", shutdown, METH_NOARGS,
     "_shutdown()\n--\n\nStop the loop (the package's atexit hook)."},
    {"call_from_main_thread", (PyCFunction)(void (*)(void))call_from_main_thread,
     METH_FASTCALL | METH_KEYWORDS,
     "call_from_main_thread(func, /, *args, **kwargs)\n--\n\n"
     "Queue func(*args, **kwargs) for run()/run_once() on the main thread."},
    {"call_from_main_thread_and_wait",
     (PyCFunction)(void (*)(void))call_from_main_thread_and_wait,
     METH_FASTCALL | METH_KEYWORDS,
     "call_from_main_thread_and_wait(func, /, *args, **kwargs)\n--\n\n"
     "Run func on the main thread and return its result (or raise its "
     "exception)."},
    {"is_parallel_thread", is_parallel_thread, METH_NOARGS,
     "is_parallel_thread()\n--\n\nTrue on the engine's threads."},
    {"stats", stats, METH_NOARGS,
     "stats()\n--\n\nA dict of the engine's counters."},
    {"_worker_count", worker_count, METH_NOARGS,
     "_worker_count()\n--\n\nThe number of workers."},
    {NULL, NULL, 0, NULL},
};

static int find_main_ident(pxpy_runtime_t *rt)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return -1;
    PyObject *main = PyObject_CallMethod(threading, "main_thread", NULL);
    Py_DECREF(threading);
    if (main == NULL)
        return -1;
    PyObject *ident = PyObject_GetAttrString(main, "ident");
    Py_DECREF(main);
    if (ident == NULL)
        return -1;
    rt->main_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    return PyErr_Occurred() ? -1 : 0;
}

int pxpy_runtime_exec(PyObject *module, pxpy_state *st)
{
    pxpy_runtime_t *rt = PyMem_RawCalloc(1, sizeof(*rt));
    if (rt == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->runtime = rt;
    rt->st = st;
    rt->interp = PyInterpreterState_Get();
    pthread_mutex_init(&rt->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->main_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&rt->done_cond, NULL);
    pthread_cond_init(&rt->protocol_cond, NULL);
    rt->listeners = PyList_New(0);
    if (rt->listeners == NULL || find_main_ident(rt) < 0)
        return -1;
    return PyModule_AddFunctions(module, runtime_methods);
}

int pxpy_runtime_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    if (st->runtime != NULL)
        Py_VISIT(st->runtime->listeners);
    return 0;
}

void pxpy_runtime_free(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    if (rt == NULL)
        return;
    shutdown_loop(st);
    if (rt->retired != NULL)
        px_loop_free(rt->retired);
    pthread_mutex_lock(&rt->lock);
    cancel_waited_calls_locked(rt);
    pthread_mutex_unlock(&rt->lock);
    pxpy_call_t *c = rt->head;
    while (c) {
        pxpy_call_t *next = c->next;
        free_call(c);
        PyMem_RawFree(c);
        c = next;
    }
    Py_CLEAR(rt->listeners);
    pthread_cond_destroy(&rt->protocol_cond);
    pthread_cond_destroy(&rt->done_cond);
    pthread_cond_destroy(&rt->main_cond);
    pthread_mutex_destroy(&rt->lock);
    st->runtime = NULL;
    PyMem_RawFree(rt);
}
