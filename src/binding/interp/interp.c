/*
 * interp.c - the worker interpreters of mode "interpreters": their creation
 * when the loop starts and their end when it stops, the engine threads'
 * thread states in them, switching a thread between interpreters, and the
 * reporting of a worker interpreter's errors through the main one.
 *
 * Life of a worker interpreter. start_loop (runtime.c) creates one per
 * worker on the calling thread, before the engine's threads start:
 * Py_NewInterpreterFromConfig with its own GIL and the isolated settings
 * (own allocator, extensions must support subinterpreters, no fork, exec
 * nor daemon threads); it gets the main interpreter's sys.path and
 * sys.argv, imports pyparallel._core (whose state then shares the main
 * state's runtime) and learns how to import the main script. Then its
 * first thread state is deleted: from then on it runs only on engine
 * threads, each with a thread state of its own. After px_loop_stop has
 * joined those threads (deleting their thread states), the loop's owner
 * thread enters each interpreter with a fresh thread state and drops what
 * the main interpreter's structures held in it (the listeners' protocol
 * caches); the interpreters are then parked, not ended: the next loop with
 * the same worker count takes them back (with the main interpreter's
 * sys.path and sys.argv again), and only the package's atexit hook, the
 * module's teardown or a loop with another worker count ends them, with
 * Py_EndInterpreter. Parking is what keeps run()/stop() cycles from
 * growing the process: CPython keeps part of every ended interpreter's
 * memory (measured on 3.13: 3.5 MiB per two bare interpreters created and
 * ended, about 7 MiB once they have imported pyparallel and logging), and
 * the modules a worker imported are already there for the next run, as in
 * modes "threads" and "gil".
 *
 * Memory. The "memory" a worker reports is how much the process's resident
 * set grew while its interpreter was created and set up (/proc/self/statm):
 * the interpreter's own allocator arenas, its modules and their objects.
 * It is measured once, at creation; what the application's code allocates
 * later is not in it.
 */
#include "core/runtime.h"
#include "interp/interp_internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The thread states of the calling engine thread, one per interpreter it
 * has run Python in. Thread-local like runtime.c's thread state, for the
 * same reason: a thread state belongs to one OS thread. */
typedef struct {
    PyThreadState *ts;
    pxpy_worker_interp_t *w; /* the interpreter it was made in */
} cached_tstate_t;

typedef struct {
    PyThreadState *main;
    /* Made in interpreters replaced since, to delete once detached. */
    cached_tstate_t *replaced;
    int nreplaced, replaced_cap;
    int count;
    cached_tstate_t worker[];
} thread_states_t;

static _Thread_local thread_states_t *thread_states;

/* The interpreter the calling engine thread is counted in while it
 * dispatches a worker's callbacks or is attached outside them
 * (pxpy_interp_hold), and how many holds are open. */
static _Thread_local pxpy_worker_interp_t *held;
static _Thread_local int held_index;
static _Thread_local int holding;
/* The worker interpreter pxpy_interp_enter switched the thread to last
 * (its leave restores the previous one). */
static _Thread_local pxpy_worker_interp_t *entered;
static _Thread_local int entered_index;

/* ---- memory ------------------------------------------------------------- */

static int64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    long long size = 0, resident = 0;
    int n = fscanf(f, "%lld %lld", &size, &resident);
    fclose(f);
    return n == 2 ? (int64_t)resident * sysconf(_SC_PAGESIZE) : 0;
}

/* ---- creating ----------------------------------------------------------- */

/* What every worker interpreter gets from the main one. */
typedef struct {
    pxpy_xi_t *path;        /* tuple(sys.path) */
    pxpy_xi_t *argv;        /* tuple(sys.argv) */
    pxpy_xi_t *main_source; /* pyparallel._interp.main_source() */
} setup_t;

static void setup_free(setup_t *s)
{
    pxpy_xi_free(s->path);
    pxpy_xi_free(s->argv);
    pxpy_xi_free(s->main_source);
}

static pxpy_xi_t *encode_sys_list(pxpy_state *st, const char *name)
{
    PyObject *list = PySys_GetObject(name); /* borrowed */
    PyObject *t = list ? PySequence_Tuple(list) : PyTuple_New(0);
    if (t == NULL)
        return NULL;
    pxpy_xi_t *xi = pxpy_xi_encode(st, t, name);
    Py_DECREF(t);
    return xi;
}

static int setup_gather(pxpy_state *st, setup_t *s)
{
    memset(s, 0, sizeof(*s));
    PyObject *source = NULL;
    PyObject *f = pxpy_import_attr("pyparallel._interp", "main_source");
    if (f != NULL) {
        source = PyObject_CallNoArgs(f);
        Py_DECREF(f);
    }
    if (source == NULL)
        return -1;
    s->main_source = pxpy_xi_encode(st, source, "the main script's name");
    Py_DECREF(source);
    s->path = encode_sys_list(st, "path");
    s->argv = encode_sys_list(st, "argv");
    return s->main_source && s->path && s->argv ? 0 : -1;
}

static int set_sys_list(pxpy_state *st, const char *name, pxpy_xi_t *xi)
{
    PyObject *t = pxpy_xi_decode(st, xi);
    PyObject *list = t ? PySequence_List(t) : NULL;
    int rc = list ? PySys_SetObject(name, list) : -1;
    Py_XDECREF(list);
    Py_XDECREF(t);
    return rc;
}

/* In the new interpreter (attached): import pyparallel._core, join its
 * state to the main runtime, then give it the main interpreter's paths and
 * the main script's name. */
static int setup_worker(pxpy_state *main_st, int index, setup_t *s,
                        pxpy_worker_interp_t *w)
{
    w->module = PyImport_ImportModule("pyparallel._core");
    if (w->module == NULL)
        return -1;
    pxpy_state *st = pxpy_get_state(w->module);
    w->st = st;
    pxpy_runtime_free(st); /* its own, never used: it shares the main one */
    st->runtime = main_st->runtime;
    st->interp_index = index;
    st->mode = PXPY_MODE_INTERPRETERS;
    if (set_sys_list(st, "path", s->path) < 0 ||
        set_sys_list(st, "argv", s->argv) < 0)
        return -1;
    PyObject *source = pxpy_xi_decode(st, s->main_source);
    if (source == NULL)
        return -1;
    PyObject *f = pxpy_import_attr("pyparallel._interp", "setup_worker");
    PyObject *r = f ? PyObject_Call(f, source, NULL) : NULL;
    Py_XDECREF(f);
    Py_DECREF(source);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Ends worker interpreter w from the calling thread (attached to the main
 * interpreter, which it is again afterwards). */
static void end_interpreter(pxpy_worker_interp_t *w)
{
    PyThreadState *ts = PyThreadState_New(w->interp);
    if (ts == NULL)
        Py_FatalError("pyparallel: out of memory ending a worker interpreter");
    PyThreadState *main_ts = PyThreadState_Swap(ts);
    Py_CLEAR(w->module);
    Py_EndInterpreter(ts);
    PyThreadState_Swap(main_ts);
    w->interp = NULL;
    w->st = NULL;
}

static pxpy_worker_interp_t *record_new(void)
{
    pxpy_worker_interp_t *w = PyMem_RawCalloc(1, sizeof(*w));
    if (w == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    atomic_init(&w->active, 0);
    atomic_init(&w->tstates, 0);
    return w;
}

static void record_free(pxpy_worker_interp_t *w) { PyMem_RawFree(w); }

static const PyInterpreterConfig worker_config = {
    .use_main_obmalloc = 0,
    .allow_fork = 0,
    .allow_exec = 0,
    .allow_threads = 1,
    .allow_daemon_threads = 0,
    .check_multi_interp_extensions = 1,
    .gil = PyInterpreterConfig_OWN_GIL,
};

/* Creates worker interpreter index in w; on failure, raises (in the
 * calling, main interpreter) what went wrong in the new one. */
static int create_interpreter(pxpy_state *st, int index, setup_t *s,
                              pxpy_worker_interp_t *w)
{
    int64_t before = resident_bytes();
    PyThreadState *main_ts = PyThreadState_Get();
    PyThreadState *ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&ts, &worker_config);
    if (PyStatus_Exception(status)) {
        PyThreadState_Swap(main_ts);
        PyErr_Format(st->async_error, "cannot create worker interpreter %d: %s",
                     index, status.err_msg ? status.err_msg : "unknown error");
        return -1;
    }
    w->interp = PyThreadState_GetInterpreter(ts);
    w->id = PyInterpreterState_GetID(w->interp);
    if (setup_worker(st, index, s, w) < 0) {
        /* Carried to the main interpreter as text (its state may not
         * exist in this one). */
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *text = exc ? PyObject_Str(exc) : NULL;
        const char *u = text ? PyUnicode_AsUTF8(text) : NULL;
        char message[1024];
        PyOS_snprintf(message, sizeof(message), "%s: %s",
                      exc ? Py_TYPE(exc)->tp_name : "error",
                      u ? u : "(no message)");
        PyErr_Clear();
        Py_XDECREF(text);
        Py_XDECREF(exc);
        Py_CLEAR(w->module);
        Py_EndInterpreter(ts);
        PyThreadState_Swap(main_ts);
        w->interp = NULL;
        PyErr_Format(st->async_error,
                     "cannot set up worker interpreter %d (mode "
                     "'interpreters'): %s",
                     index, message);
        return -1;
    }
    /* Engine threads bring their own thread states. */
    PyThreadState_Clear(ts);
    PyThreadState_Swap(main_ts);
    PyThreadState_Delete(ts);
    w->rss_bytes = resident_bytes() - before;
    return 0;
}

/* Gives the parked interpreters the main interpreter's sys.path and
 * sys.argv again, which the program may have changed between runs. */
static int refresh_parked(pxpy_state *st, pxpy_interps_t *interps)
{
    setup_t s;
    if (setup_gather(st, &s) < 0) {
        setup_free(&s);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < interps->count && rc == 0; i++) {
        pxpy_worker_interp_t *w = atomic_load(&interps->w[i]);
        PyThreadState *ts = PyThreadState_New(w->interp);
        if (ts == NULL) {
            PyErr_NoMemory();
            rc = -1;
            break;
        }
        PyThreadState *main_ts = PyThreadState_Swap(ts);
        if (set_sys_list(w->st, "path", s.path) < 0 ||
            set_sys_list(w->st, "argv", s.argv) < 0) {
            /* What failed was in the worker's interpreter: say it in the
             * main one. */
            PyErr_Clear();
            rc = -1;
        }
        PyThreadState_Clear(ts);
        PyThreadState_Swap(main_ts);
        PyThreadState_Delete(ts);
        if (rc < 0)
            PyErr_Format(st->async_error,
                         "cannot update worker interpreter %d's sys.path "
                         "and sys.argv",
                         i);
    }
    setup_free(&s);
    return rc;
}

static void end_all(pxpy_interps_t *interps)
{
    for (int i = 0; i < interps->count; i++) {
        pxpy_worker_interp_t *w = atomic_load(&interps->w[i]);
        end_interpreter(w);
        record_free(w);
    }
    while (interps->retired != NULL) {
        pxpy_worker_interp_t *w = interps->retired;
        interps->retired = w->next_retired;
        if (!w->ended)
            end_interpreter(w);
        record_free(w);
    }
    PyMem_RawFree(interps);
}

int pxpy_interps_start(pxpy_state *st, int workers)
{
    pxpy_runtime_t *rt = st->runtime;
    pxpy_interps_t *parked = rt->parked_interps;
    rt->parked_interps = NULL;
    if (parked != NULL && parked->count == workers) {
        if (refresh_parked(st, parked) < 0) {
            PyObject *exc = PyErr_GetRaisedException();
            end_all(parked);
            PyErr_SetRaisedException(exc);
            return -1;
        }
        rt->interps = parked;
        return 0;
    }
    if (parked != NULL)
        end_all(parked); /* another worker count: start afresh */
    pxpy_interps_t *interps = PyMem_RawCalloc(
        1, sizeof(*interps) + (size_t)workers * sizeof(interps->w[0]));
    if (interps == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    setup_t s;
    int rc = setup_gather(st, &s);
    for (int i = 0; i < workers && rc == 0; i++) {
        pxpy_worker_interp_t *w = record_new();
        rc = w ? create_interpreter(st, i, &s, w) : -1;
        if (rc == 0) {
            atomic_init(&interps->w[i], w);
            interps->count = i + 1;
        } else if (w != NULL) {
            record_free(w);
        }
    }
    setup_free(&s);
    if (rc < 0) {
        PyObject *exc = PyErr_GetRaisedException();
        end_all(interps);
        PyErr_SetRaisedException(exc);
        return -1;
    }
    rt->interps = interps;
    return 0;
}

pxpy_worker_interp_t *pxpy_interp_create(pxpy_state *st, int index)
{
    pxpy_worker_interp_t *w = record_new();
    if (w == NULL)
        return NULL;
    setup_t s;
    int rc = setup_gather(st, &s);
    if (rc == 0)
        rc = create_interpreter(st, index, &s, w);
    setup_free(&s);
    if (rc < 0) {
        record_free(w);
        return NULL;
    }
    return w;
}

int pxpy_interp_prepare(pxpy_state *st, pxpy_worker_interp_t *w,
                        struct pxpy_xcall_s *xc)
{
    PyThreadState *ts = PyThreadState_New(w->interp);
    if (ts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyThreadState *main_ts = PyThreadState_Swap(ts);
    PyObject *r = pxpy_xcall_invoke(w->st, xc);
    /* What went wrong there is carried here encoded (its objects stay). */
    pxpy_xi_t *failure = r == NULL ? pxpy_xi_encode_exception(w->st) : NULL;
    Py_XDECREF(r);
    PyThreadState_Clear(ts);
    PyThreadState_Swap(main_ts);
    PyThreadState_Delete(ts);
    if (r != NULL)
        return 0;
    PyObject *exc = failure ? pxpy_xi_decode(st, failure) : NULL;
    pxpy_xi_free(failure);
    if (exc != NULL)
        PyErr_SetRaisedException(exc);
    else if (!PyErr_Occurred())
        PyErr_SetString(st->async_error,
                        "preparing the new interpreter failed");
    return -1;
}

void pxpy_interp_discard(pxpy_worker_interp_t *w)
{
    end_interpreter(w);
    record_free(w);
}

static void interps_stop(pxpy_state *st, bool loop_locked);

void pxpy_interps_stop(pxpy_state *st, bool loop_locked)
{
    pxpy_runtime_t *rt = st->runtime;
    /* A replacement under way gives up or finishes first (the loop has
     * stopped), and none starts meanwhile. */
    PyMutex_Lock(&rt->recycle_lock);
    interps_stop(st, loop_locked);
    PyMutex_Unlock(&rt->recycle_lock);
}

static void interps_stop(pxpy_state *st, bool loop_locked)
{
    pxpy_runtime_t *rt = st->runtime;
    /* The engine's threads are gone; stats() may still be looking. */
    if (!loop_locked)
        PyMutex_Lock(&rt->loop_lock);
    pxpy_interps_t *interps = rt->interps;
    rt->interps = NULL;
    if (!loop_locked)
        PyMutex_Unlock(&rt->loop_lock);
    if (interps == NULL)
        return;
    /* The listeners' protocol caches in the workers' interpreters, found
     * now: the list is the main interpreter's, which this thread leaves. */
    Py_ssize_t nlisteners = rt->listeners ? PyList_GET_SIZE(rt->listeners) : 0;
    pxpy_xproto_t **xprotos = PyMem_RawCalloc(
        (size_t)(nlisteners ? nlisteners : 1), sizeof(pxpy_xproto_t *));
    if (xprotos == NULL)
        Py_FatalError("pyparallel: out of memory stopping the worker "
                      "interpreters");
    for (Py_ssize_t k = 0; k < nlisteners; k++)
        xprotos[k] =
            ((pxpy_transport_t *)PyList_GET_ITEM(rt->listeners, k))->xproto;
    for (int i = 0; i < interps->count; i++) {
        pxpy_worker_interp_t *w = atomic_load(&interps->w[i]);
        PyThreadState *ts = PyThreadState_New(w->interp);
        if (ts == NULL)
            Py_FatalError("pyparallel: out of memory stopping a worker "
                          "interpreter");
        PyThreadState *main_ts = PyThreadState_Swap(ts);
        for (Py_ssize_t k = 0; k < nlisteners; k++)
            if (xprotos[k] != NULL)
                pxpy_xproto_clear_worker(xprotos[k], i);
        PyThreadState_Clear(ts);
        PyThreadState_Swap(main_ts);
        PyThreadState_Delete(ts);
    }
    PyMem_RawFree(xprotos);
    if (rt->parked_interps != NULL)
        end_all(rt->parked_interps);
    rt->parked_interps = interps;
}

void pxpy_interps_end_parked(pxpy_state *st)
{
    pxpy_runtime_t *rt = st->runtime;
    if (rt == NULL || rt->parked_interps == NULL)
        return;
    pxpy_interps_t *parked = rt->parked_interps;
    rt->parked_interps = NULL;
    end_all(parked);
}

int pxpy_interps_memory(pxpy_state *st, int64_t *memory, int n)
{
    pxpy_runtime_t *rt = st->runtime;
    PyMutex_Lock(&rt->loop_lock);
    pxpy_interps_t *interps = rt->interps;
    int count = interps ? interps->count : 0;
    for (int i = 0; i < count && i < n; i++)
        memory[i] = atomic_load(&interps->w[i])->rss_bytes;
    PyMutex_Unlock(&rt->loop_lock);
    return count;
}

pxpy_state *pxpy_interp_state(pxpy_runtime_t *rt, int index)
{
    if (index == PXPY_MAIN)
        return rt->st;
    /* The one the calling thread is counted in, when it is: while a
     * replacement waits for the thread to leave it, the worker's is
     * already the new one. */
    if (entered != NULL && entered_index == index)
        return entered->st;
    if (held != NULL && held_index == index)
        return held->st;
    return atomic_load(&rt->interps->w[index])->st;
}

/* ---- counting the threads in an interpreter ---------------------------- */

/* Counts the calling thread in worker index's interpreter. Counted first
 * and checked after: a replacement stores the new record and then waits
 * for the old one's count to fall to zero, so either this thread sees the
 * new record, or the replacement sees it counted in the old one. */
static pxpy_worker_interp_t *acquire(pxpy_interps_t *interps, int index)
{
    for (;;) {
        pxpy_worker_interp_t *w = atomic_load(&interps->w[index]);
        atomic_fetch_add(&w->active, 1);
        if (atomic_load(&interps->w[index]) == w)
            return w;
        atomic_fetch_sub(&w->active, 1);
    }
}

static void release(pxpy_worker_interp_t *w)
{
    atomic_fetch_sub(&w->active, 1);
}

pxpy_worker_interp_t *pxpy_interp_swap(pxpy_runtime_t *rt, int index,
                                       pxpy_worker_interp_t *w)
{
    pxpy_worker_interp_t *old = atomic_exchange(&rt->interps->w[index], w);
    Py_BEGIN_ALLOW_THREADS while (atomic_load(&old->active) != 0) usleep(1000);
    Py_END_ALLOW_THREADS return old;
}

/* The threads that the code of the interpreter the caller is attached to
 * started and that still run (their names), which Py_EndInterpreter would
 * wait for; NULL with an exception. */
static PyObject *own_threads(void)
{
    PyObject *f = pxpy_import_attr("pyparallel._interp", "own_threads");
    PyObject *r = f ? PyObject_CallNoArgs(f) : NULL;
    Py_XDECREF(f);
    return r;
}

const char *pxpy_interp_end_replaced(pxpy_state *st, pxpy_worker_interp_t *old,
                                     uint64_t timeout_ns)
{
    pxpy_runtime_t *rt = st->runtime;
    uint64_t deadline = px_now_ns() + timeout_ns;
    Py_BEGIN_ALLOW_THREADS while (atomic_load(&old->tstates) != 0 &&
                                  px_now_ns() < deadline) usleep(1000);
    Py_END_ALLOW_THREADS old->next_retired = rt->interps->retired;
    rt->interps->retired = old;
    if (atomic_load(&old->tstates) != 0)
        return "an engine thread is still in a long callback";
    PyThreadState *ts = PyThreadState_New(old->interp);
    if (ts == NULL)
        Py_FatalError("pyparallel: out of memory ending a worker interpreter");
    PyThreadState *main_ts = PyThreadState_Swap(ts);
    PyObject *threads = own_threads(); /* old's: attached to it */
    bool alone = threads != NULL && PyList_Check(threads) &&
                 PyList_GET_SIZE(threads) == 0;
    if (threads == NULL)
        PyErr_Clear();
    Py_XDECREF(threads);
    if (!alone) {
        PyThreadState_Clear(ts);
        PyThreadState_Swap(main_ts);
        PyThreadState_Delete(ts);
        return "threads its code started still run";
    }
    Py_CLEAR(old->module);
    Py_EndInterpreter(ts);
    PyThreadState_Swap(main_ts);
    old->interp = NULL;
    old->st = NULL;
    old->ended = true;
    return NULL;
}

/* ---- thread states ------------------------------------------------------ */

static thread_states_t *states_of_thread(pxpy_runtime_t *rt)
{
    if (thread_states == NULL) {
        int n = rt->interps->count;
        thread_states = PyMem_RawCalloc(
            1, sizeof(thread_states_t) + (size_t)n * sizeof(cached_tstate_t));
        if (thread_states == NULL)
            Py_FatalError("pyparallel: out of memory for an engine thread's "
                          "thread states");
        thread_states->count = n;
    }
    return thread_states;
}

static PyThreadState *new_tstate(PyInterpreterState *interp)
{
    PyThreadState *ts = PyThreadState_New(interp);
    if (ts == NULL)
        Py_FatalError("pyparallel: out of memory for an engine thread's "
                      "Python thread state");
    return ts;
}

/* Deletes a thread state of the calling thread (detached); uncounted
 * after, so that its interpreter is not ended under it. */
static void delete_own(cached_tstate_t c)
{
    PyEval_RestoreThread(c.ts);
    PyThreadState_Clear(c.ts);
    PyThreadState_DeleteCurrent();
    if (c.w != NULL)
        atomic_fetch_sub(&c.w->tstates, 1);
}

/* Deletes the thread states this thread made in interpreters replaced
 * since (detached). */
static void drop_replaced(thread_states_t *ts, pxpy_runtime_t *rt)
{
    if (rt->interps != NULL)
        for (int i = 0; i < ts->count; i++) {
            cached_tstate_t *c = &ts->worker[i];
            if (c->ts != NULL && c->w != atomic_load(&rt->interps->w[i])) {
                delete_own(*c);
                c->ts = NULL;
            }
        }
    for (int i = 0; i < ts->nreplaced; i++)
        delete_own(ts->replaced[i]);
    ts->nreplaced = 0;
}

void pxpy_interp_drop_replaced(void *arg)
{
    if (thread_states != NULL && PyThreadState_GetUnchecked() == NULL)
        drop_replaced(thread_states, arg);
}

/* The calling thread's thread state in w (worker index's interpreter, the
 * thread counted in it), made on first use. One made in an interpreter
 * that was replaced since is set aside, to delete once detached. */
static PyThreadState *tstate_in(pxpy_runtime_t *rt, int index,
                                pxpy_worker_interp_t *w)
{
    thread_states_t *ts = states_of_thread(rt);
    cached_tstate_t *c = &ts->worker[index];
    if (c->ts != NULL && c->w != w) {
        if (ts->nreplaced == ts->replaced_cap) {
            int cap = ts->replaced_cap ? 2 * ts->replaced_cap : 4;
            cached_tstate_t *grown =
                PyMem_RawRealloc(ts->replaced, (size_t)cap * sizeof(*grown));
            if (grown == NULL)
                Py_FatalError("pyparallel: out of memory for an engine "
                              "thread's thread states");
            ts->replaced = grown;
            ts->replaced_cap = cap;
        }
        ts->replaced[ts->nreplaced++] = *c;
        c->ts = NULL;
    }
    if (c->ts == NULL) {
        c->ts = new_tstate(w->interp);
        c->w = w;
        atomic_fetch_add(&w->tstates, 1);
    }
    return c->ts;
}

static PyThreadState *main_tstate(pxpy_runtime_t *rt)
{
    thread_states_t *ts = states_of_thread(rt);
    if (ts->main == NULL)
        ts->main = new_tstate(rt->interp);
    return ts->main;
}

PyThreadState *pxpy_interp_hold(pxpy_runtime_t *rt, int worker)
{
    if (holding++ == 0) {
        if (thread_states != NULL && thread_states->nreplaced > 0 &&
            PyThreadState_GetUnchecked() == NULL)
            drop_replaced(thread_states, rt);
        held = acquire(rt->interps, worker);
        held_index = worker;
    }
    return tstate_in(rt, held_index, held);
}

void pxpy_interp_unhold(void)
{
    if (--holding == 0) {
        release(held);
        held = NULL;
    }
}

void pxpy_interp_thread_stop(pxpy_runtime_t *rt)
{
    (void)rt;
    thread_states_t *ts = thread_states;
    if (ts == NULL)
        return;
    for (int i = 0; i < ts->count; i++)
        if (ts->worker[i].ts != NULL)
            delete_own(ts->worker[i]);
    for (int i = 0; i < ts->nreplaced; i++)
        delete_own(ts->replaced[i]);
    if (ts->main != NULL)
        delete_own((cached_tstate_t){ts->main, NULL});
    thread_states = NULL;
    PyMem_RawFree(ts->replaced);
    PyMem_RawFree(ts);
}

pxpy_entered_t pxpy_interp_enter(pxpy_runtime_t *rt, int index)
{
    PyThreadState *cur = PyThreadState_GetUnchecked();
    if (px_current_worker() < 0 && thread_states == NULL)
        Py_FatalError("pyparallel: a thread that is not the engine's "
                      "tried to enter a worker interpreter");
    pxpy_entered_t e = {.previous = NULL, .switched = false};
    if (index == PXPY_MAIN) {
        if (cur == NULL || PyThreadState_GetInterpreter(cur) != rt->interp) {
            e.previous = PyThreadState_Swap(main_tstate(rt));
            e.switched = true;
        }
        return e;
    }
    pxpy_worker_interp_t *w = acquire(rt->interps, index);
    if (cur != NULL && PyThreadState_GetInterpreter(cur) == w->interp) {
        release(w);
        return e;
    }
    PyThreadState *want = tstate_in(rt, index, w);
    e = (pxpy_entered_t){.previous = PyThreadState_Swap(want),
                         .switched = true,
                         .counted = w,
                         .outer = entered,
                         .outer_index = entered_index};
    entered = w;
    entered_index = index;
    return e;
}

void pxpy_interp_leave(pxpy_entered_t e)
{
    if (e.switched)
        PyThreadState_Swap(e.previous);
    if (e.counted != NULL) {
        entered = e.outer;
        entered_index = e.outer_index;
        release(e.counted);
    }
}

/* ---- errors ------------------------------------------------------------- */

PyObject *pxpy_not_in_worker_interp(pxpy_state *st, const char *what)
{
    PyErr_Format(st->async_error,
                 "%s is not available inside a worker interpreter (mode "
                 "'interpreters'): do it in the main interpreter, passing "
                 "what it needs through a Channel or call_from_main_thread()",
                 what);
    return NULL;
}

void pxpy_interp_report_error(pxpy_state *st, const char *where)
{
    pxpy_runtime_t *rt = st->runtime;
    /* sys.exit() in a handler asked for this interpreter's end, which
     * cannot happen under the engine's feet: counted, so that a supervisor
     * (the HTTP command line) replaces it. */
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
        atomic_fetch_add(&rt->broken_interps, 1);
        atomic_store(&rt->broken_worker[st->interp_index], true);
    }
    pxpy_xi_t *xi = pxpy_xi_encode_exception(st);
    pxpy_entered_t e = pxpy_interp_enter(rt, PXPY_MAIN);
    pxpy_state *main_st = rt->st;
    PyObject *exc = xi ? pxpy_xi_decode(main_st, xi) : NULL;
    if (exc != NULL)
        PyErr_SetRaisedException(exc);
    /* With nothing decoded, what is set (the failure to) is logged. */
    if (PyErr_Occurred())
        pxpy_report_callback_error(main_st, where);
    else
        pxpy_count_error(main_st);
    pxpy_xi_free(xi);
    pxpy_interp_leave(e);
    PyErr_Clear();
}

/* ---- module part -------------------------------------------------------- */

int pxpy_interp_exec(PyObject *module, pxpy_state *st)
{
    if (pxpy_xi_exec(module, st) < 0 || pxpy_sharedbuf_exec(module, st) < 0 ||
        pxpy_xwork_exec(module, st) < 0 || pxpy_recycle_exec(module, st) < 0)
        return -1;
    return pxpy_channel_exec(module, st);
}

int pxpy_interp_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->sharedbuf_type);
    Py_VISIT(st->channel_type);
    return pxpy_xi_traverse(st, visit, arg);
}

void pxpy_interp_free(pxpy_state *st)
{
    pxpy_xi_free_state(st);
    Py_CLEAR(st->sharedbuf_type);
    Py_CLEAR(st->channel_type);
}
