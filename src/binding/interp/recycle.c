/*
 * recycle.c - replacing one worker's interpreter with a fresh one while
 * the loop serves (mode "interpreters"): what --max-requests and a broken
 * interpreter ask of the HTTP command line's supervisor
 * (pyparallel._lifecycle).
 *
 * Objects never cross interpreters, so a worker's connections cannot move
 * to the new interpreter: they finish on the old one, while the other
 * workers take the new connections. _recycle_worker(worker, timeout,
 * [prepare, *args]):
 *   1. creates the new interpreter, as the loop's start does, and runs
 *      prepare(*args) in it (the application's import: the slow part, done
 *      while the worker still serves), so that a failure there changes
 *      nothing;
 *   2. retires the worker (px_worker_retire): new connections go to the
 *      others; its own are answered with "Connection: close", closed once
 *      idle for the drain's grace, WebSockets with 1001; it waits until
 *      the worker has no connection left;
 *   3. on the worker, in the old interpreter: closes the worker's asyncio
 *      loop (an ASGI app's lifespan shutdown runs there) and drops the
 *      listeners' protocol caches;
 *   4. waits for the work, timers and file reads the old interpreter
 *      started to end, makes the new interpreter the worker's, and waits
 *      until no thread is left in the old one (interp.c counts them);
 *   5. has each engine thread delete its own thread state in the old one
 *      (px_loop_visit_threads), then ends it.
 * _recycle_worker returns None, or why the old interpreter could not be
 * ended yet (threads its code started still run, or an engine thread is
 * in a long callback): it then ends with the others, when the loop stops.
 * The worker stays retired: the caller runs an ASGI app's lifespan startup
 * in the new interpreter (with _submit_to) before it calls
 * _retire_worker(worker, False). When step 2 or the first wait of 4 takes
 * longer than the timeout (a long stream, a work item that does not end),
 * the worker is un-retired, the new interpreter ended, and TimeoutError
 * raised: nothing changed, and the caller may try again later. A second
 * replacement waits for the first (recycle_lock), and the loop's end waits
 * for one under way, which gives up at once when the loop drains.
 */
#include "core/runtime.h"
#include "interp/interp_internal.h"

#include <errno.h>
#include <unistd.h>

/* How often the waits look again. */
#define RECYCLE_POLL_US 2000

/* ---- step 3, on the worker ---------------------------------------------- */

typedef struct {
    pxpy_runtime_t *rt;
    int index;
    Py_ssize_t nxprotos;
    pxpy_xproto_t **xprotos;
    atomic_int outcome; /* 0 under way, 1 done, -1 cancelled */
} retire_t;

static void retire_run(void *arg)
{
    retire_t *r = arg;
    bool attached = pxpy_attach();
    /* The worker's interpreter is still the old one: the thread is
     * counted in it for the dispatch, so no replacement can be done. */
    pxpy_state *st = pxpy_interp_state(r->rt, r->index);
    pxpy_aio_close_worker(st);
    for (Py_ssize_t k = 0; k < r->nxprotos; k++)
        if (r->xprotos[k] != NULL)
            pxpy_xproto_clear_worker(r->xprotos[k], r->index);
    pxpy_detach(attached);
    atomic_store(&r->outcome, 1);
}

static void retire_cancel(void *arg)
{
    retire_t *r = arg;
    atomic_store(&r->outcome, -1);
}

/* ---- waiting ------------------------------------------------------------ */

typedef enum { WAITED, TIMED_OUT, LOOP_ENDS } waited_t;

/* Waits, detached, until done(arg) or the deadline, or the loop drains or
 * stops (a graceful stop takes over what the replacement waits for; loop
 * NULL: it does not). */
static waited_t wait_until(px_loop_t *loop, bool (*done)(void *), void *arg,
                           uint64_t deadline_ns)
{
    waited_t outcome = WAITED;
    Py_BEGIN_ALLOW_THREADS while (!done(arg))
    {
        if (loop != NULL && px_loop_draining(loop)) {
            outcome = LOOP_ENDS;
            break;
        }
        if (px_now_ns() >= deadline_ns) {
            outcome = TIMED_OUT;
            break;
        }
        usleep(RECYCLE_POLL_US);
    }
    Py_END_ALLOW_THREADS return outcome;
}

typedef struct {
    px_loop_t *loop;
    int index;
} worker_ref_t;

static bool worker_empty(void *arg)
{
    worker_ref_t *w = arg;
    return px_worker_served_open(w->loop, w->index) == 0 &&
           px_worker_connections(w->loop, w->index) == 0;
}

static bool retired(void *arg)
{
    return atomic_load(&((retire_t *)arg)->outcome) != 0;
}

static bool nothing_pending(void *arg)
{
    return atomic_load(&((pxpy_state *)arg)->pending) == 0;
}

/* ---- the replacement ---------------------------------------------------- */

/* The listeners' protocol records, read in the main interpreter (whose
 * list it is) for the worker's thread; NULL with an exception. */
static pxpy_xproto_t **listener_xprotos(pxpy_runtime_t *rt, Py_ssize_t *n)
{
    *n = rt->listeners ? PyList_GET_SIZE(rt->listeners) : 0;
    pxpy_xproto_t **x = PyMem_RawCalloc((size_t)(*n ? *n : 1), sizeof(*x));
    if (x == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < *n; k++)
        x[k] = ((pxpy_transport_t *)PyList_GET_ITEM(rt->listeners, k))->xproto;
    return x;
}

static PyObject *gave_up(pxpy_state *st, waited_t why, int index,
                         double timeout, const char *what)
{
    if (why == LOOP_ENDS)
        PyErr_Format(st->async_error,
                     "worker %d's interpreter was not replaced: the server "
                     "is stopping",
                     index);
    else {
        /* PyErr_Format has no %f. */
        char seconds[32];
        PyOS_snprintf(seconds, sizeof(seconds), "%.1f", timeout);
        PyErr_Format(PyExc_TimeoutError,
                     "worker %d's interpreter was not replaced: %s after %s "
                     "s; it serves on, and the replacement can be asked for "
                     "again",
                     index, what, seconds);
    }
    return NULL;
}

/* Steps 2 to 5 (see the top), with the new interpreter made. NULL with an
 * exception when it gave up, having changed nothing. */
static PyObject *replace(pxpy_state *st, px_loop_t *loop, int index,
                         double timeout, pxpy_worker_interp_t *fresh)
{
    pxpy_runtime_t *rt = st->runtime;
    uint64_t deadline = px_now_ns() + (uint64_t)(timeout * 1e9);
    int rc = px_worker_retire(loop, index, 1);
    if (rc == -EBUSY) {
        PyErr_Format(st->async_error,
                     "worker %d's interpreter cannot be replaced now: the "
                     "other workers retire (one must serve)",
                     index);
        return NULL;
    }
    if (rc < 0)
        return pxpy_raise_engine_error(st, rc, "retiring the worker");
    worker_ref_t ref = {loop, index};
    pxpy_state *old_st = pxpy_interp_state(rt, index);
    waited_t why = wait_until(loop, worker_empty, &ref, deadline);
    if (why == WAITED)
        why = wait_until(loop, nothing_pending, old_st, deadline);
    if (why != WAITED) {
        px_worker_retire(loop, index, 0);
        return gave_up(st, why, index, timeout,
                       px_worker_served_open(loop, index) ||
                               px_worker_connections(loop, index)
                           ? "its connections did not end"
                           : "work it started did not end");
    }
    retire_t r = {.rt = rt, .index = index};
    r.xprotos = listener_xprotos(rt, &r.nxprotos);
    if (r.xprotos == NULL) {
        px_worker_retire(loop, index, 0);
        return NULL;
    }
    /* Once queued, the work item runs (the worker has nothing else to do)
     * or is cancelled by the loop's stop: waited for either way, since it
     * uses r. */
    rc = px_submit_to(loop, index, retire_run, retire_cancel, &r);
    if (rc == 0)
        wait_until(NULL, retired, &r, UINT64_MAX);
    PyMem_RawFree(r.xprotos);
    if (rc < 0 || atomic_load(&r.outcome) < 0) {
        /* Only a stopping loop refuses or cancels work: it ends the
         * interpreters itself. */
        px_worker_retire(loop, index, 0);
        return gave_up(st, LOOP_ENDS, index, timeout, NULL);
    }
    /* What the closing loop's tasks started ends with them; a timer or a
     * work item still running now gets the time left, and past it the
     * old interpreter is ended after all: nothing of it is served any
     * more, and what it still runs is counted (interp.c waits for it). */
    wait_until(loop, nothing_pending, old_st, deadline);
    pxpy_worker_interp_t *old = pxpy_interp_swap(rt, index, fresh);
    atomic_fetch_add(&rt->recycled_interps, 1);
    /* Each engine thread deletes its own thread state in the old one (see
     * interp_internal.h); a visit asks those that would not come by. */
    /* A thread in a long callback may not have run the last visit yet:
     * those that did drop this one's as they next enter the worker's. */
    for (int tries = 0;
         px_loop_visit_threads(loop, pxpy_interp_drop_replaced, rt) == -EBUSY &&
         tries < 500;
         tries++) {
        Py_BEGIN_ALLOW_THREADS usleep(RECYCLE_POLL_US);
        Py_END_ALLOW_THREADS
    }
    const char *kept = pxpy_interp_end_replaced(
        st, old, (uint64_t)((timeout > 1 ? timeout : 1) * 1e9));
    if (kept == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromFormat("the old interpreter is kept until the server "
                                "stops: %s",
                                kept);
}

static PyObject *recycle_worker(PyObject *module, PyObject *const *args,
                                Py_ssize_t nargs)
{
    pxpy_state *st = pxpy_get_state(module);
    pxpy_runtime_t *rt = st->runtime;
    int index;
    double timeout;
    if (nargs < 2 || (index = PyLong_AsInt(args[0])) == -1 ||
        (timeout = PyFloat_AsDouble(args[1])) < 0) {
        if (!PyErr_Occurred() || nargs < 2)
            PyErr_SetString(PyExc_TypeError,
                            "_recycle_worker(worker, timeout, [prepare, "
                            "*args]): a worker index, a timeout in seconds "
                            "(>= 0), and what to run in the new interpreter");
        return NULL;
    }
    if (pxpy_in_worker_interp(st))
        return pxpy_not_in_worker_interp(st, "_recycle_worker()");
    if (pxpy_runtime_is_main(rt))
        return PyErr_Format(st->async_error,
                            "_recycle_worker() waits for the worker's "
                            "connections: call it from a thread of its own, "
                            "not from the main thread, which serves run()");
    PyMutex_Lock(&rt->recycle_lock);
    px_loop_t *loop = atomic_load(&rt->loop);
    PyObject *result = NULL;
    if (loop == NULL || rt->interps == NULL) {
        PyErr_Format(st->async_error,
                     "_recycle_worker(): worker interpreters exist in mode "
                     "'interpreters' while the loop runs; in modes 'threads' "
                     "and 'gil' a worker shares the process's interpreter, "
                     "which a reload (SIGHUP) replaces");
    } else if (index < 0 || index >= rt->interps->count) {
        PyErr_Format(PyExc_ValueError,
                     "_recycle_worker(): worker %d out of range 0..%d", index,
                     rt->interps->count - 1);
    } else {
        struct pxpy_xcall_s *prepare =
            nargs > 2 ? pxpy_xcall_new(st, "_recycle_worker() prepare", args[2],
                                       args + 3, nargs - 3)
                      : NULL;
        pxpy_worker_interp_t *fresh =
            nargs > 2 && prepare == NULL ? NULL : pxpy_interp_create(st, index);
        if (fresh != NULL && prepare != NULL &&
            pxpy_interp_prepare(st, fresh, prepare) < 0) {
            PyObject *exc = PyErr_GetRaisedException();
            pxpy_interp_discard(fresh);
            PyErr_SetRaisedException(exc);
            fresh = NULL;
        }
        pxpy_xcall_free(prepare);
        if (fresh != NULL) {
            result = replace(st, loop, index, timeout, fresh);
            if (result == NULL) {
                PyObject *exc = PyErr_GetRaisedException();
                pxpy_interp_discard(fresh);
                PyErr_SetRaisedException(exc);
            }
        }
    }
    if (result == NULL)
        atomic_fetch_add(&rt->recycle_failures, 1);
    PyMutex_Unlock(&rt->recycle_lock);
    return result;
}

static PyObject *retire_worker(PyObject *module, PyObject *const *args,
                               Py_ssize_t nargs)
{
    pxpy_state *st = pxpy_get_state(module);
    int index, retiring;
    if (nargs != 2 || (index = PyLong_AsInt(args[0])) == -1 ||
        (retiring = PyObject_IsTrue(args[1])) < 0) {
        if (!PyErr_Occurred() || nargs != 2)
            PyErr_SetString(PyExc_TypeError,
                            "_retire_worker(worker, retiring): a worker "
                            "index and a bool");
        return NULL;
    }
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    int rc = px_worker_retire(loop, index, retiring);
    if (rc < 0)
        return pxpy_raise_engine_error(st, rc, "_retire_worker()");
    Py_RETURN_NONE;
}

/* The worker whose interpreter this is, or that the calling thread runs
 * for; -1 off the workers. */
static PyObject *worker_index(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_get_state(module);
    return PyLong_FromLong(pxpy_in_worker_interp(st) ? st->interp_index
                                                     : px_current_worker());
}

/* The workers whose interpreter's state broke since the last call. */
static PyObject *broken_workers(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pxpy_runtime_t *rt = pxpy_get_state(module)->runtime;
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < PX_MAX_WORKERS; i++) {
        if (!atomic_exchange(&rt->broken_worker[i], false))
            continue;
        PyObject *n = PyLong_FromLong(i);
        if (n == NULL || PyList_Append(list, n) < 0)
            Py_CLEAR(list);
        Py_XDECREF(n);
    }
    return list;
}

static PyMethodDef recycle_methods[] = {
    {"_recycle_worker", (PyCFunction)(void (*)(void))recycle_worker,
     METH_FASTCALL,
     "_recycle_worker($module, worker, timeout, /, *prepare)\n--\n\n"
     "Replaces the worker's interpreter with a fresh one (mode "
     "'interpreters'), in which prepare[0](*prepare[1:]) runs first, its "
     "connections finishing on the old one; leaves the worker retired. "
     "TimeoutError when they did not end within timeout."},
    {"_retire_worker", (PyCFunction)(void (*)(void))retire_worker,
     METH_FASTCALL,
     "_retire_worker($module, worker, retiring, /)\n--\n\n"
     "Keeps new connections off the worker, or gives them to it again."},
    {"_worker_index", worker_index, METH_NOARGS,
     "_worker_index($module, /)\n--\n\n"
     "The worker this interpreter serves (mode 'interpreters'), or the "
     "calling thread runs for; -1 off the workers."},
    {"_broken_workers", broken_workers, METH_NOARGS,
     "_broken_workers($module, /)\n--\n\n"
     "The workers whose interpreter's state broke (SystemExit escaped a "
     "callback) since the last call."},
    {NULL, NULL, 0, NULL},
};

int pxpy_recycle_exec(PyObject *module, pxpy_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, recycle_methods);
}
