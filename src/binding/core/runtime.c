/*
 * runtime.c - the engine loop's life as Python sees it: creation on first
 * use, the thread hooks that give engine threads a Python thread state,
 * the bookkeeping that tells run() when to end, the protocol handshake of
 * register(), stats() and is_parallel_thread(). run(), run_once(), stop()
 * and the main-thread queue are in mainthread.c.
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
 * In mode "interpreters" each thread instead keeps one thread state per
 * worker interpreter it runs (interp.c), and on_dispatch_enter attaches
 * the one of the worker it runs for.
 */
#include "core/runtime.h"
#include "interp/interp.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Thread_local PyThreadState *thread_tstate;
/* Mode "interpreters": the runtime (NULL in the other modes), the worker
 * the thread last ran for, whether it dispatches now, and how deep the
 * attaches outside a dispatch are nested. A thread is counted in the
 * interpreter it runs (interp.c's hold) while it dispatches, and while it
 * is attached outside a dispatch (a done callback after a close), so that
 * the interpreter is not replaced under it. */
static _Thread_local pxpy_runtime_t *thread_interps_rt;
static _Thread_local int thread_worker = -1;
static _Thread_local bool thread_dispatching;
static _Thread_local int thread_attach_depth;

/* ---- attaching --------------------------------------------------------- */

bool pxpy_attach(void)
{
    if (PyThreadState_GetUnchecked() != NULL)
        return false;
    pxpy_runtime_t *rt = thread_interps_rt;
    if (rt != NULL && !thread_dispatching && thread_worker >= 0 &&
        thread_attach_depth++ == 0)
        thread_tstate = pxpy_interp_hold(rt, thread_worker);
    if (thread_tstate == NULL)
        Py_FatalError("pyparallel: an engine callback ran on a thread "
                      "without a Python thread state");
    PyEval_RestoreThread(thread_tstate);
    return true;
}

void pxpy_detach(bool attached)
{
    if (!attached)
        return;
    PyEval_SaveThread();
    if (thread_interps_rt != NULL && !thread_dispatching &&
        thread_worker >= 0 && --thread_attach_depth == 0)
        pxpy_interp_unhold();
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
    pxpy_runtime_t *rt = data;
    if (rt->interps != NULL) {
        /* Made, and counted, as the thread dispatches. */
        thread_interps_rt = rt;
        thread_worker = worker;
        thread_tstate = NULL;
        return;
    }
    /* Created on the thread itself: on free-threaded builds a thread state
     * binds the creating OS thread's allocator heaps. */
    thread_tstate = PyThreadState_New(rt->interp);
    if (thread_tstate == NULL)
        Py_FatalError("pyparallel: out of memory for an engine thread's "
                      "Python thread state");
}

static void on_thread_stop(void *data, int worker)
{
    pxpy_runtime_t *rt = data;
    (void)worker;
    if (rt->interps != NULL) {
        pxpy_interp_thread_stop(rt);
        thread_tstate = NULL;
        thread_interps_rt = NULL;
        return;
    }
    PyEval_RestoreThread(thread_tstate);
    PyThreadState_Clear(thread_tstate);
    PyThreadState_DeleteCurrent();
    thread_tstate = NULL;
}

static void on_dispatch_enter(void *data, int worker)
{
    pxpy_runtime_t *rt = data;
    if (rt->interps != NULL) {
        thread_worker = worker;
        thread_dispatching = true;
        thread_tstate = pxpy_interp_hold(rt, worker);
    }
    PyEval_RestoreThread(thread_tstate);
}

static void on_dispatch_leave(void *data, int worker)
{
    pxpy_runtime_t *rt = data;
    (void)worker;
    PyEval_SaveThread();
    if (rt->interps != NULL) {
        thread_dispatching = false;
        pxpy_interp_unhold();
    }
}

/* ---- bookkeeping --------------------------------------------------------- */

bool pxpy_runtime_is_main(pxpy_runtime_t *rt)
{
    return PyThread_get_thread_ident() == rt->main_ident;
}

struct pxpy_chanlist_s **pxpy_runtime_channels(pxpy_runtime_t *rt)
{
    return &rt->channels;
}

bool pxpy_is_main_thread(pxpy_state *st)
{
    return pxpy_runtime_is_main(st->runtime);
}

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
    atomic_fetch_add(&st->pending, delta);
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
                           PyObject *protocol, struct pxpy_xproto_s *xproto)
{
    pxpy_runtime_t *rt = st->runtime;
    pthread_mutex_lock(&rt->lock);
    bool free_slot = t->protocol == NULL;
    if (free_slot) {
        t->xproto = xproto;
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

/* ---- the loop ----------------------------------------------------------- */

/* The engine reads at most this many from PYPARALLEL_MAX_THREADS. */
#define MAX_THREADS_LIMIT (1 << 20)

/* PYPARALLEL_WORKERS, PYPARALLEL_MAX_THREADS and PYPARALLEL_IO, checked
 * here rather than quietly replaced by defaults: a deployment that sets
 * them wants to know they apply. */
/* The count in the environment variable name (left at 0 when unset), from
 * 1 to max; -1 with ValueError naming what it counts otherwise. */
static int count_from_environment(const char *name, const char *what, long max,
                                  long *out)
{
    const char *v = getenv(name);
    *out = 0;
    if (v == NULL || v[0] == '\0')
        return 0;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end != '\0' || n < 1 || n > max) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a number of %s from 1 to %ld, not '%.50s'",
                     name, what, max, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int options_from_environment(px_loop_options_t *opts)
{
    long workers, threads;
    if (count_from_environment("PYPARALLEL_WORKERS", "workers", PX_MAX_WORKERS,
                               &workers) < 0 ||
        count_from_environment("PYPARALLEL_MAX_THREADS", "threads",
                               MAX_THREADS_LIMIT, &threads) < 0)
        return -1;
    if (workers)
        opts->workers = (int)workers;
    if (threads)
        opts->max_threads = (unsigned)threads;
    const char *v = getenv("PYPARALLEL_IO");
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
    if (mode != PXPY_MODE_INTERPRETERS && !rt->gcpace_probed) {
        rt->gcpace_probed = true;
        if (pxpy_gcpace_new(&rt->gcpace) < 0) {
            px_loop_free(loop);
            return NULL;
        }
    }
    if (mode == PXPY_MODE_INTERPRETERS &&
        pxpy_interps_start(st, px_loop_worker_count(loop)) < 0) {
        px_loop_free(loop);
        return NULL;
    }
    /* The threads start attaching to the interpreter at once; let them
     * while this thread waits for nothing but thread creation. */
    pxpy_blocking_t b = pxpy_blocking_begin();
    rc = px_loop_start(loop);
    if (rc == 0 && mode != PXPY_MODE_INTERPRETERS)
        rc = pxpy_gcpace_start(rt->gcpace, loop);
    if (rc < 0) {
        px_loop_stop(loop);
        px_loop_free(loop);
    }
    pxpy_blocking_end(b);
    if (rc < 0) {
        pxpy_interps_stop(st, true);
        pxpy_raise_engine_error(st, rc, "starting the engine");
        return NULL;
    }
    atomic_store(&rt->loop, loop);
    return loop;
}

px_loop_t *pxpy_runtime_ensure_loop(pxpy_state *st, PyObject *mode_name)
{
    pxpy_runtime_t *rt = st->runtime;
    px_loop_t *loop = atomic_load(&rt->loop);
    if (loop != NULL && mode_name == NULL)
        return loop;
    if (rt->st != st) {
        /* A worker interpreter uses the main interpreter's loop only. */
        if (loop == NULL)
            PyErr_SetString(st->async_error, "the loop is stopping");
        else if (mode_name != NULL)
            pxpy_not_in_worker_interp(st, "choosing a mode");
        return mode_name == NULL ? loop : NULL;
    }
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
                     "stats()): set PYPARALLEL_MODE, or call run(mode=...) "
                     "before any of those",
                     pxpy_mode_name(st->mode));
        loop = NULL;
    }
    PyMutex_Unlock(&rt->loop_lock);
    return loop;
}

px_loop_t *pxpy_loop(pxpy_state *st)
{
    return pxpy_runtime_ensure_loop(st, NULL);
}

/* How often the main thread, waiting for the loop to stop, runs the signal
 * handlers and looks at the clock. */
#define STOP_CHECK_NS (100 * 1000 * 1000)
/* The least time a bounded stop gets after its drain. */
#define STOP_AFTER_DRAIN_NS (500 * 1000 * 1000)

typedef struct {
    pxpy_runtime_t *rt;
    px_loop_t *loop;
} stopper_t;

static void *stopper_main(void *arg)
{
    stopper_t *s = arg;
    px_loop_stop(s->loop);
    pthread_mutex_lock(&s->rt->lock);
    s->rt->loop_stopped = true;
    pthread_cond_broadcast(&s->rt->main_cond);
    pthread_mutex_unlock(&s->rt->lock);
    return NULL;
}

static void flush_python_stream(const char *name)
{
    PyObject *stream = PySys_GetObject(name); /* borrowed */
    if (stream == NULL || stream == Py_None)
        return;
    PyObject *r = PyObject_CallMethod(stream, "flush", NULL);
    Py_XDECREF(r);
    PyErr_Clear();
}

static _Noreturn void exit_stop_overran(uint64_t timeout_ns)
{
    flush_python_stream("stdout");
    flush_python_stream("stderr");
    fprintf(stderr,
            "pyparallel: the loop did not stop within %.3g s (a callback "
            "has not returned); exiting\n",
            (double)timeout_ns / 1e9);
    fflush(stderr);
    _exit(1);
}

static void stop_loop_detached(px_loop_t *loop)
{
    pxpy_blocking_t b = pxpy_blocking_begin();
    px_loop_stop(loop);
    pxpy_blocking_end(b);
}

/* px_loop_stop waits for every callback to return, which a callback that
 * blocks forever never does. So it runs on a thread of its own while this
 * (attached) thread waits in slices: between them the signal handlers run
 * and the deadline is checked. An exception a handler raises is kept (the
 * first one) and left set once the loop has stopped. */
static void stop_loop_bounded(pxpy_runtime_t *rt, px_loop_t *loop,
                              uint64_t timeout_ns, bool watch_signals)
{
    if (timeout_ns == 0 && !watch_signals) {
        stop_loop_detached(loop);
        return;
    }
    stopper_t s = {.rt = rt, .loop = loop};
    pthread_t stopper;
    pthread_mutex_lock(&rt->lock);
    rt->loop_stopped = false;
    pthread_mutex_unlock(&rt->lock);
    if (pthread_create(&stopper, NULL, stopper_main, &s) != 0) {
        /* No thread to spare: stop unbounded rather than not at all. */
        stop_loop_detached(loop);
        return;
    }
    PyObject *exc = PyErr_GetRaisedException();
    /* After a drain that used the budget up, the stop still gets a moment
     * to abort the connections left, which takes no time unless a callback
     * does not return. */
    uint64_t now = px_now_ns();
    uint64_t began = rt->stop_began_ns ? rt->stop_began_ns : now;
    uint64_t deadline = 0;
    if (timeout_ns) {
        deadline = began + timeout_ns;
        if (deadline < now + STOP_AFTER_DRAIN_NS)
            deadline = now + STOP_AFTER_DRAIN_NS;
    }
    for (;;) {
        uint64_t until = px_now_ns() + STOP_CHECK_NS;
        if (deadline && deadline < until)
            until = deadline;
        struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                              .tv_nsec = (long)(until % 1000000000u)};
        pxpy_blocking_t b = pxpy_blocking_begin();
        pthread_mutex_lock(&rt->lock);
        while (!rt->loop_stopped &&
               pthread_cond_timedwait(&rt->main_cond, &rt->lock, &ts) !=
                   ETIMEDOUT)
            ;
        bool stopped = rt->loop_stopped;
        pthread_mutex_unlock(&rt->lock);
        pxpy_blocking_end(b);
        if (stopped)
            break;
        if (watch_signals && PyErr_CheckSignals() < 0) {
            if (exc == NULL)
                exc = PyErr_GetRaisedException();
            else
                PyErr_Clear();
        }
        if (deadline && px_now_ns() >= deadline)
            exit_stop_overran(timeout_ns);
    }
    pthread_join(stopper, NULL);
    PyErr_SetRaisedException(exc);
}

void pxpy_runtime_shutdown_loop(pxpy_state *st, uint64_t timeout_ns,
                                bool watch_signals)
{
    pxpy_runtime_t *rt = st->runtime;
    PyMutex_Lock(&rt->loop_lock);
    px_loop_t *loop = atomic_load(&rt->loop);
    if (loop != NULL) {
        pthread_mutex_lock(&rt->lock);
        rt->shutting_down = true;
        pxpy_mainthread_cancel_waited_locked(rt);
        pthread_cond_broadcast(&rt->protocol_cond);
        pthread_mutex_unlock(&rt->lock);
    }
    PyMutex_Unlock(&rt->loop_lock);
    if (loop == NULL)
        return;

    /* Not under loop_lock: callbacks that run during the stop may call
     * into the runtime (they get "the loop is stopping"). */
    stop_loop_bounded(rt, loop, timeout_ns, watch_signals);
    PyObject *exc = PyErr_GetRaisedException();
    pxpy_interps_stop(st, false);

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
    PyErr_SetRaisedException(exc);
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

/* One dict per worker: callbacks, queue_depth, handoffs, steals,
 * busy_ns. */
static PyObject *worker_stats(const px_stats_t *s)
{
    PyObject *list = PyList_New(s->workers);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < s->workers; i++) {
        PyObject *d = PyDict_New();
        if (d == NULL || set_u64(d, "callbacks", s->worker[i].callbacks) < 0 ||
            set_u64(d, "queue_depth", s->worker[i].queue_depth) < 0 ||
            set_u64(d, "handoffs", s->worker[i].handoffs) < 0 ||
            set_u64(d, "steals", s->worker[i].steals) < 0 ||
            set_u64(d, "busy_ns", s->worker[i].busy_ns) < 0) {
            Py_XDECREF(d);
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

/* Mode "interpreters": each worker's "memory" (interp.c says what it
 * measures); every mode: the live channels. */
static int add_mode_stats(pxpy_state *st, PyObject *d)
{
    int64_t memory[PX_MAX_WORKERS];
    int n = pxpy_interps_memory(st, memory, PX_MAX_WORKERS);
    PyObject *workers = PyDict_GetItemString(d, "worker"); /* borrowed */
    for (int i = 0; i < n && workers && i < PyList_GET_SIZE(workers); i++)
        if (set_u64(PyList_GET_ITEM(workers, i), "memory",
                    (uint64_t)(memory[i] > 0 ? memory[i] : 0)) < 0)
            return -1;
    if (set_u64(d, "broken_interpreters",
                atomic_load(&st->runtime->broken_interps)) < 0 ||
        set_u64(d, "recycled_interpreters",
                atomic_load(&st->runtime->recycled_interps)) < 0 ||
        set_u64(d, "recycle_failures",
                atomic_load(&st->runtime->recycle_failures)) < 0)
        return -1;
    PyObject *channels = pxpy_channel_stats(st);
    if (channels == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, "channels", channels);
    Py_DECREF(channels);
    return rc;
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
        set_u64(d, "datagrams_dropped", s->datagrams_dropped) < 0 ||
        set_u64(d, "errors", atomic_load(&st->runtime->errors)) < 0 ||
        set_u64(d, "gc_paced", pxpy_gcpace_collections(st->runtime->gcpace)) <
            0) {
        Py_XDECREF(workers);
        Py_XDECREF(d);
        PyMem_Free(s);
        return NULL;
    }
    Py_DECREF(workers);
    PyMem_Free(s);
    if (add_mode_stats(st, d) < 0)
        Py_CLEAR(d);
    return d;
}

static PyObject *worker_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    px_loop_t *loop = pxpy_loop(pxpy_get_state(module));
    return loop ? PyLong_FromLong(px_loop_worker_count(loop)) : NULL;
}

/* ---- module part ------------------------------------------------------- */

static PyMethodDef runtime_methods[] = {
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
    if (PyModule_AddFunctions(module, runtime_methods) < 0)
        return -1;
    return pxpy_mainthread_exec(module, st);
}

int pxpy_runtime_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    if (st->runtime != NULL && st->runtime->st == st)
        Py_VISIT(st->runtime->listeners);
    return 0;
}

void pxpy_runtime_free(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    if (rt == NULL)
        return;
    if (rt->st != st) {
        st->runtime = NULL; /* a worker interpreter's: the main state's */
        return;
    }
    pxpy_runtime_shutdown_loop(st, 0, false);
    pxpy_interps_end_parked(st);
    if (rt->retired != NULL)
        px_loop_free(rt->retired);
    pxpy_mainthread_free_queue(rt);
    pxpy_channel_free_list(rt);
    pxpy_gcpace_free(rt->gcpace);
    rt->gcpace = NULL;
    Py_CLEAR(rt->listeners);
    pthread_cond_destroy(&rt->protocol_cond);
    pthread_cond_destroy(&rt->done_cond);
    pthread_cond_destroy(&rt->main_cond);
    pthread_mutex_destroy(&rt->lock);
    st->runtime = NULL;
    PyMem_RawFree(rt);
}
