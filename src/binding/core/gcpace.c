/*
 * gcpace.c - the cycle collector paced by the workers on free-threaded
 * interpreters whose own pacing drifts.
 *
 * Why. The free-threaded collector of CPython 3.13.5 (and of every 3.13 and
 * 3.14 before the fix of gh-142048) counts the objects it frees against the
 * allocations that trigger its next run: after a collection that freed N
 * objects the young count stands at -N, so the next one waits for the
 * threshold plus N allocations, and each waits longer than the one before.
 * Biased reference counting adds to it: garbage owned by another thread is
 * freed later, by that thread, and counted against allocations again. A
 * server whose requests leave reference cycles (Werkzeug's URL matcher
 * leaves eight objects per request) holds ever more garbage between ever
 * rarer collections: a Flask app in mode threads grew by 3 MiB/s at 15,000
 * requests/s. Its young count sits tens of thousands below zero.
 *
 * What. When a loop starts in mode threads or gil on a free-threaded build,
 * a probe tells whether this interpreter drifts (a collection that frees
 * garbage leaves the young count below zero); worker interpreters, GIL
 * builds and interpreters that count right are left to CPython. If it
 * does, the allocated blocks (sys.getallocatedblocks(), which deferred
 * frees do not confuse) take the young count's place: a callback in
 * gc.callbacks notes them after every collection (the baseline, lowered
 * as the deferred frees come in), and a timer on a worker collects there
 * once the heap grew by a quarter of the baseline, or by the threshold if
 * that is more: CPython's own rule, which bounds a big heap's scans to a
 * few per allocated object. gc.disable() and gc.set_threshold(0) are
 * honoured. The timer does not keep run() from ending and stops with the
 * loop. What pacing leaves (0.6 MiB/s with two workers, none with one):
 * the allocator's pages that frees on other threads keep (docs/apps.md).
 */
#include "core/gcpace.h"

#include <stdatomic.h>

#ifdef Py_GIL_DISABLED

/* How often the heap is looked at: a timer, since a busy worker can stay in
 * one batch of callbacks for seconds. About 3 us with a Flask app's heap. */
#define PACE_PERIOD_NS (50 * 1000 * 1000)
/* Garbage the probe makes: more than the 512 allocations a thread buffers
 * before its count reaches the interpreter's. */
#define PROBE_CYCLES 4096
/* A collection is due once the heap grew by 1/HEAP_GROWTH of what it held
 * after the last one (and by the threshold at least). */
#define HEAP_GROWTH 4

struct pxpy_gcpace_s {
    PyObject *collect;       /* gc.collect */
    PyObject *get_count;     /* gc.get_count */
    PyObject *get_threshold; /* gc.get_threshold */
    PyObject *blocks;        /* sys.getallocatedblocks */
    PyObject *callbacks;     /* gc.callbacks */
    PyObject *on_collected;  /* ours, in gc.callbacks */
    PyObject *capsule;       /* on_collected's self: its context is set
                                once p is freed */
    _Atomic int64_t baseline;
    _Atomic int64_t threshold; /* gc.get_threshold()[0] */
    _Atomic uint64_t collections;
};

/* The first item of fn()'s tuple, or -1 with an exception. */
static int64_t first_of(PyObject *fn)
{
    PyObject *t = PyObject_CallNoArgs(fn);
    if (t == NULL)
        return -1;
    int64_t v = -1;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 1)
        PyErr_SetString(PyExc_TypeError, "gc gave no counts");
    else
        v = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 0));
    Py_DECREF(t);
    return v;
}

static int64_t allocated_blocks(pxpy_gcpace_t *p)
{
    PyObject *b = PyObject_CallNoArgs(p->blocks);
    int64_t blocks = b ? PyLong_AsLongLong(b) : -1;
    Py_XDECREF(b);
    return blocks;
}

static int note_collection(pxpy_gcpace_t *p)
{
    int64_t threshold = first_of(p->get_threshold);
    int64_t blocks =
        threshold == -1 && PyErr_Occurred() ? -1 : allocated_blocks(p);
    if (blocks == -1 && PyErr_Occurred())
        return -1;
    atomic_store(&p->baseline, blocks);
    atomic_store(&p->threshold, threshold);
    return 0;
}

/* gc.callbacks calls it with (phase, info) around every collection. */
static PyObject *on_collected(PyObject *capsule, PyObject *const *args,
                              Py_ssize_t nargs)
{
    if (PyCapsule_GetContext(capsule) != NULL)
        Py_RETURN_NONE; /* a copy of gc.callbacks outlived the pacing */
    pxpy_gcpace_t *p = PyCapsule_GetPointer(capsule, NULL);
    if (p == NULL)
        return NULL;
    if (nargs >= 1 && PyUnicode_Check(args[0]) &&
        PyUnicode_CompareWithASCIIString(args[0], "stop") == 0 &&
        note_collection(p) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef on_collected_def = {
    "_px_gc_paced", (PyCFunction)(void (*)(void))on_collected, METH_FASTCALL,
    "Notes the heap after a collection (pyparallel's GC pacing)."};

/* True when a collection that frees garbage leaves the young count below
 * zero on this interpreter: its collections drift apart (see the top). */
static int counts_frees_against_allocations(pxpy_gcpace_t *p)
{
    /* Disabled meanwhile, so that no automatic collection takes part of
     * the probe's garbage; gc.collect() collects all the same. One
     * collection is enough: it sets the count to 0 before it frees. */
    int enabled = PyGC_Disable();
    int64_t young = -1;
    bool ok = true;
    for (int i = 0; ok && i < PROBE_CYCLES; i++) {
        PyObject *cycle = PyList_New(0);
        ok = cycle != NULL && PyList_Append(cycle, cycle) == 0;
        Py_XDECREF(cycle);
    }
    PyObject *r = ok ? PyObject_CallNoArgs(p->collect) : NULL;
    if (r != NULL) {
        Py_DECREF(r);
        young = first_of(p->get_count);
    }
    if (enabled)
        PyGC_Enable();
    if (young == -1 && PyErr_Occurred())
        return -1;
    return young < -PROBE_CYCLES / 2;
}

static void gcpace_clear(pxpy_gcpace_t *p)
{
    Py_CLEAR(p->collect);
    Py_CLEAR(p->get_count);
    Py_CLEAR(p->get_threshold);
    Py_CLEAR(p->blocks);
    Py_CLEAR(p->callbacks);
    Py_CLEAR(p->on_collected);
    if (p->capsule != NULL) {
        PyCapsule_SetContext(p->capsule, p);
        Py_CLEAR(p->capsule);
    }
    PyMem_RawFree(p);
}

int pxpy_gcpace_new(pxpy_gcpace_t **out)
{
    *out = NULL;
    pxpy_gcpace_t *p = PyMem_RawCalloc(1, sizeof(*p));
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->collect = pxpy_import_attr("gc", "collect");
    p->get_count = p->collect ? pxpy_import_attr("gc", "get_count") : NULL;
    p->get_threshold =
        p->get_count ? pxpy_import_attr("gc", "get_threshold") : NULL;
    p->blocks =
        p->get_threshold ? pxpy_import_attr("sys", "getallocatedblocks") : NULL;
    p->callbacks = p->blocks ? pxpy_import_attr("gc", "callbacks") : NULL;
    int affected = p->callbacks ? counts_frees_against_allocations(p) : -1;
    if (affected <= 0) {
        gcpace_clear(p);
        return affected;
    }
    p->capsule = PyCapsule_New(p, NULL, NULL);
    p->on_collected =
        p->capsule ? PyCFunction_New(&on_collected_def, p->capsule) : NULL;
    if (p->on_collected == NULL || note_collection(p) < 0 ||
        PyList_Append(p->callbacks, p->on_collected) < 0) {
        gcpace_clear(p);
        return -1;
    }
    *out = p;
    return 0;
}

static void tick(void *arg)
{
    pxpy_gcpace_t *p = arg;
    bool attached = pxpy_attach();
    if (!PyGC_IsEnabled()) {
        pxpy_detach(attached);
        return;
    }
    PyObject *exc = PyErr_GetRaisedException();
    int64_t blocks = allocated_blocks(p);
    int64_t baseline = atomic_load(&p->baseline);
    int64_t threshold = atomic_load(&p->threshold);
    int64_t allowance = baseline / HEAP_GROWTH;
    if (blocks == -1 && PyErr_Occurred()) {
        PyErr_WriteUnraisable(p->on_collected);
    } else if (blocks < baseline) {
        /* The heap shrank since: frees of the collection's garbage that
         * other threads own, which they do later (biased reference
         * counting), or of older objects. Growth counts from the least. */
        atomic_compare_exchange_strong(&p->baseline, &baseline, blocks);
    } else if (threshold > 0 &&
               blocks - baseline >
                   (allowance > threshold ? allowance : threshold)) {
        PyGC_Collect(); /* on_collected notes the new baseline */
        atomic_fetch_add_explicit(&p->collections, 1, memory_order_relaxed);
    }
    PyErr_SetRaisedException(exc);
    pxpy_detach(attached);
}

int pxpy_gcpace_start(pxpy_gcpace_t *p, px_loop_t *loop)
{
    if (p == NULL)
        return 0;
    return px_timer_start(loop, PACE_PERIOD_NS, PACE_PERIOD_NS, tick, NULL, p,
                          NULL);
}

uint64_t pxpy_gcpace_collections(pxpy_gcpace_t *p)
{
    return p == NULL ? 0 : atomic_load(&p->collections);
}

void pxpy_gcpace_free(pxpy_gcpace_t *p)
{
    if (p == NULL)
        return;
    PyObject *exc = PyErr_GetRaisedException();
    /* The list may be gone already at the interpreter's end. */
    Py_ssize_t at = PySequence_Index(p->callbacks, p->on_collected);
    if (at >= 0)
        PySequence_DelItem(p->callbacks, at);
    PyErr_Clear();
    PyErr_SetRaisedException(exc);
    gcpace_clear(p);
}

#else /* a GIL build: CPython's generational collector paces itself */

int pxpy_gcpace_new(pxpy_gcpace_t **out)
{
    *out = NULL;
    return 0;
}

int pxpy_gcpace_start(pxpy_gcpace_t *p, px_loop_t *loop)
{
    (void)p;
    (void)loop;
    return 0;
}

uint64_t pxpy_gcpace_collections(pxpy_gcpace_t *p)
{
    (void)p;
    return 0;
}

void pxpy_gcpace_free(pxpy_gcpace_t *p) { (void)p; }

#endif
