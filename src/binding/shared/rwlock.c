/*
 * rwlock.c - RWLock (many readers or one writer) and LockGuard, the context
 * manager that px.read_lock()/px.write_lock() and RWLock.read()/write()
 * return.
 *
 * Rules, as users see them:
 *  - Any number of threads may hold the lock shared, or one thread may hold
 *    it exclusive. A thread waiting to write holds back readers that arrive
 *    after it (writer preference), so a stream of readers cannot starve a
 *    writer; a stream of writers can delay readers.
 *  - Holds are counted per thread and nest: a thread may take the read lock
 *    again while it holds it (even while a writer waits: it does not queue
 *    behind that writer), take the write lock again while it holds it, and
 *    take the read lock while it holds the write lock (that nested hold is
 *    part of its exclusive hold).
 *  - Taking the write lock while holding only the read lock (an upgrade)
 *    raises RuntimeError instead of deadlocking: two readers upgrading would
 *    wait for each other forever.
 *  - Releasing a hold the calling thread does not have raises RuntimeError.
 *  - The lock works from any thread with a thread state (the engine's
 *    workers included). A thread that has to wait detaches its thread state
 *    (releases the GIL on GIL builds) so it stalls neither other threads nor
 *    the GC; it wakes every 100 ms to run signal handlers, so Ctrl-C
 *    interrupts a main thread stuck on a lock.
 *
 * Implementation: the state lives in a core (pxpy_rwcore_t) of raw memory
 * with an atomic reference count, apart from the RWLock object, so that the
 * lock can be shared by objects of several interpreters: mode
 * "interpreters"' shared containers hold one core, and each interpreter's
 * object over a container hands out RWLock objects over that same core.
 * Holds are keyed by the OS thread's identity, which is the same whatever
 * interpreter the thread runs. A pthread mutex guards the fields and is held
 * only for a few instructions, never across Python code; waits use two
 * condition variables on CLOCK_MONOTONIC. The uncontended path takes the
 * mutex with trylock and never detaches.
 */
#include "shared/shared.h"

#include <errno.h>
#include <time.h>

#define WAKE_INTERVAL_NS 100000000L /* how often a waiter checks signals */
#define INLINE_READERS 4

typedef struct {
    unsigned long thread; /* PyThread_get_thread_ident() */
    Py_ssize_t depth;     /* nested read holds of that thread */
} reader_hold_t;

struct pxpy_rwcore_s {
    _Atomic size_t refs;
    pthread_mutex_t mutex;
    pthread_cond_t readers_cv;
    pthread_cond_t writers_cv;
    unsigned long writer;    /* exclusive holder, 0: none */
    Py_ssize_t writer_depth; /* its nested holds, read or write */
    Py_ssize_t writers_waiting;
    reader_hold_t *readers; /* one entry per thread holding it shared */
    Py_ssize_t nreaders;
    Py_ssize_t readers_capacity;
    reader_hold_t inline_readers[INLINE_READERS];
};

typedef struct {
    PyObject_HEAD
    pxpy_rwcore_t *core; /* referenced */
} rwlock_object;

typedef struct {
    PyObject_HEAD
    pxpy_rwcore_t *core; /* referenced; NULL once cleared */
    PyObject *target;    /* what __enter__ returns */
    int exclusive;
} guard_object;

typedef enum {
    TAKEN,
    BLOCKED,
    UPGRADE,
    NO_MEMORY,
} attempt_t;

/* ---- the lock's state machine (called with l->mutex held) -------------- */

static reader_hold_t *find_reader(pxpy_rwcore_t *l, unsigned long me)
{
    for (Py_ssize_t i = 0; i < l->nreaders; i++) {
        if (l->readers[i].thread == me)
            return &l->readers[i];
    }
    return NULL;
}

static int add_reader(pxpy_rwcore_t *l, unsigned long me)
{
    if (l->nreaders == l->readers_capacity) {
        Py_ssize_t capacity = l->readers_capacity * 2;
        reader_hold_t *grown;
        if (l->readers == l->inline_readers) {
            grown = PyMem_RawMalloc(capacity * sizeof(*grown));
            if (grown != NULL)
                memcpy(grown, l->readers, l->nreaders * sizeof(*grown));
        } else {
            grown = PyMem_RawRealloc(l->readers, capacity * sizeof(*grown));
        }
        if (grown == NULL)
            return -1;
        l->readers = grown;
        l->readers_capacity = capacity;
    }
    l->readers[l->nreaders].thread = me;
    l->readers[l->nreaders].depth = 1;
    l->nreaders++;
    return 0;
}

static attempt_t try_take(pxpy_rwcore_t *l, unsigned long me, int exclusive)
{
    if (l->writer == me) {
        l->writer_depth++;
        return TAKEN;
    }
    reader_hold_t *hold = find_reader(l, me);
    if (exclusive) {
        if (hold != NULL)
            return UPGRADE;
        if (l->writer != 0 || l->nreaders > 0)
            return BLOCKED;
        l->writer = me;
        l->writer_depth = 1;
        return TAKEN;
    }
    if (hold != NULL) {
        hold->depth++;
        return TAKEN;
    }
    if (l->writer != 0 || l->writers_waiting > 0)
        return BLOCKED;
    return add_reader(l, me) == 0 ? TAKEN : NO_MEMORY;
}

/* Returns 0, or -1 when the thread holds nothing to release. */
static int give_back(pxpy_rwcore_t *l, unsigned long me, int exclusive)
{
    if (l->writer == me) {
        /* Every hold of the writer, read or write, is in writer_depth:
         * it cannot have held a read lock before (that would be an upgrade). */
        if (--l->writer_depth == 0) {
            l->writer = 0;
            pthread_cond_broadcast(&l->writers_cv);
            pthread_cond_broadcast(&l->readers_cv);
        }
        return 0;
    }
    if (exclusive)
        return -1;
    reader_hold_t *hold = find_reader(l, me);
    if (hold == NULL)
        return -1;
    if (--hold->depth == 0) {
        *hold = l->readers[--l->nreaders];
        if (l->nreaders == 0)
            pthread_cond_broadcast(&l->writers_cv);
    }
    return 0;
}

/* ---- taking and releasing, with the thread state handled -------------- */

static void deadline_after(struct timespec *ts, long ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += ts->tv_nsec / 1000000000L;
        ts->tv_nsec %= 1000000000L;
    }
}

/* Locks l->mutex; the caller is attached. The mutex is only ever held for a
 * few instructions, but a thread that finds it taken still detaches first,
 * so that it never waits with its thread state attached. */
static void lock_mutex(pxpy_rwcore_t *l)
{
    if (pthread_mutex_trylock(&l->mutex) == 0)
        return;
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&l->mutex);
    Py_END_ALLOW_THREADS
}

static int report(attempt_t got)
{
    switch (got) {
    case TAKEN:
        return 0;
    case UPGRADE:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot take a write lock while this thread holds "
                        "the read lock of the same object (an upgrade could "
                        "deadlock); release the read lock first");
        return -1;
    case NO_MEMORY:
        PyErr_NoMemory();
        return -1;
    case BLOCKED:
        break;
    }
    PyErr_SetString(PyExc_SystemError, "lock attempt left unresolved");
    return -1;
}

static int take_slow(pxpy_rwcore_t *l, unsigned long me, int exclusive)
{
    pthread_cond_t *cv = exclusive ? &l->writers_cv : &l->readers_cv;
    int registered = 0; /* counted in writers_waiting */
    attempt_t got;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS struct timespec deadline;
        deadline_after(&deadline, WAKE_INTERVAL_NS);
        pthread_mutex_lock(&l->mutex);
        got = try_take(l, me, exclusive);
        while (got == BLOCKED) {
            if (exclusive && !registered) {
                l->writers_waiting++;
                registered = 1;
            }
            int rc = pthread_cond_timedwait(cv, &l->mutex, &deadline);
            got = try_take(l, me, exclusive);
            if (rc == ETIMEDOUT)
                break;
        }
        if (got != BLOCKED && registered) {
            l->writers_waiting--;
            registered = 0;
        }
        pthread_mutex_unlock(&l->mutex);
        Py_END_ALLOW_THREADS if (got != BLOCKED) return report(got);
        if (PyErr_CheckSignals() < 0)
            break;
    }
    /* Interrupted: stop holding readers back. */
    if (registered) {
        lock_mutex(l);
        l->writers_waiting--;
        pthread_cond_broadcast(&l->readers_cv);
        pthread_cond_broadcast(&l->writers_cv);
        pthread_mutex_unlock(&l->mutex);
    }
    return -1;
}

int pxpy_rwcore_take(pxpy_rwcore_t *l, int exclusive)
{
    unsigned long me = PyThread_get_thread_ident();
    if (pthread_mutex_trylock(&l->mutex) == 0) {
        attempt_t got = try_take(l, me, exclusive);
        pthread_mutex_unlock(&l->mutex);
        if (got != BLOCKED)
            return report(got);
    }
    return take_slow(l, me, exclusive);
}

int pxpy_rwcore_release(pxpy_rwcore_t *l, int exclusive)
{
    unsigned long me = PyThread_get_thread_ident();
    lock_mutex(l);
    int rc = give_back(l, me, exclusive);
    pthread_mutex_unlock(&l->mutex);
    if (rc < 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "release of a %s lock this thread does not hold",
                     exclusive ? "write" : "read");
        return -1;
    }
    return 0;
}

/* ---- the core's life -------------------------------------------------- */

pxpy_rwcore_t *pxpy_rwcore_new(void)
{
    pxpy_rwcore_t *l = PyMem_RawCalloc(1, sizeof(*l));
    if (l == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        PyMem_RawFree(l);
        PyErr_NoMemory();
        return NULL;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    atomic_init(&l->refs, 1);
    pthread_mutex_init(&l->mutex, NULL);
    pthread_cond_init(&l->readers_cv, &attr);
    pthread_cond_init(&l->writers_cv, &attr);
    pthread_condattr_destroy(&attr);
    l->readers = l->inline_readers;
    l->readers_capacity = INLINE_READERS;
    return l;
}

void pxpy_rwcore_ref(pxpy_rwcore_t *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

void pxpy_rwcore_unref(pxpy_rwcore_t *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (l->readers != l->inline_readers)
        PyMem_RawFree(l->readers);
    pthread_cond_destroy(&l->readers_cv);
    pthread_cond_destroy(&l->writers_cv);
    pthread_mutex_destroy(&l->mutex);
    PyMem_RawFree(l);
}

/* ---- RWLock type ------------------------------------------------------ */

/* Steals the caller's reference to core. */
static PyObject *rwlock_wrap(PyTypeObject *type, pxpy_rwcore_t *core)
{
    if (core == NULL)
        return NULL;
    rwlock_object *self = (rwlock_object *)type->tp_alloc(type, 0);
    if (self == NULL) {
        pxpy_rwcore_unref(core);
        return NULL;
    }
    self->core = core;
    return (PyObject *)self;
}

static PyObject *rwlock_tp_new(PyTypeObject *type, PyObject *args,
                               PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 ||
        (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RWLock() takes no arguments");
        return NULL;
    }
    return rwlock_wrap(type, pxpy_rwcore_new());
}

static void rwlock_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    pxpy_rwcore_unref(((rwlock_object *)self)->core);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *rwlock_guard(PyObject *self, int exclusive)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    if (st == NULL)
        return NULL;
    if (st->lock_guard_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pyparallel._core has been torn down");
        return NULL;
    }
    return pxpy_lock_guard_new(st, ((rwlock_object *)self)->core, Py_None,
                               exclusive);
}

static PyObject *rwlock_read(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return rwlock_guard(self, 0);
}

static PyObject *rwlock_write(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return rwlock_guard(self, 1);
}

static PyObject *rwlock_repr(PyObject *self)
{
    pxpy_rwcore_t *l = ((rwlock_object *)self)->core;
    lock_mutex(l);
    Py_ssize_t readers = l->nreaders;
    int writer = l->writer != 0;
    Py_ssize_t waiting = l->writers_waiting;
    pthread_mutex_unlock(&l->mutex);
    return PyUnicode_FromFormat(
        "<%s readers=%zd writer=%s writers_waiting=%zd>",
        Py_TYPE(self)->tp_name, readers, writer ? "True" : "False", waiting);
}

/* Two RWLock objects are equal when they stand for the same lock (a shared
 * container hands out a new object over its one lock each time). */
static PyObject *rwlock_richcompare(PyObject *self, PyObject *other, int op)
{
    if (!Py_IS_TYPE(other, Py_TYPE(self)) || (op != Py_EQ && op != Py_NE))
        Py_RETURN_NOTIMPLEMENTED;
    int same = ((rwlock_object *)self)->core == ((rwlock_object *)other)->core;
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t rwlock_hash(PyObject *self)
{
    return Py_HashPointer(((rwlock_object *)self)->core);
}

PyDoc_STRVAR(rwlock_read_doc,
             "read() -> LockGuard\n\n"
             "A context manager holding the lock shared for the with-block.");
PyDoc_STRVAR(
    rwlock_write_doc,
    "write() -> LockGuard\n\n"
    "A context manager holding the lock exclusively for the with-block.");
PyDoc_STRVAR(
    rwlock_doc,
    "RWLock()\n--\n\n"
    "A lock for many readers or one writer, usable from any thread.\n\n"
    "Holds nest per thread: read inside read, write inside write and read\n"
    "inside write are allowed; write inside read (an upgrade) raises\n"
    "RuntimeError. A waiting writer holds back new readers. Objects whose\n"
    "__px_rwlock__ attribute is an RWLock (px.dict, px.list) count as\n"
    "protected: px.read_lock()/px.write_lock() use that lock.");

static PyMethodDef rwlock_methods[] = {
    {"read", rwlock_read, METH_NOARGS, rwlock_read_doc},
    {"write", rwlock_write, METH_NOARGS, rwlock_write_doc},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot rwlock_slots[] = {
    {Py_tp_new, rwlock_tp_new},      {Py_tp_dealloc, rwlock_dealloc},
    {Py_tp_repr, rwlock_repr},       {Py_tp_richcompare, rwlock_richcompare},
    {Py_tp_hash, rwlock_hash},       {Py_tp_methods, rwlock_methods},
    {Py_tp_doc, (void *)rwlock_doc}, {0, NULL},
};

static PyType_Spec rwlock_spec = {
    .name = "pyparallel._core.RWLock",
    .basicsize = sizeof(rwlock_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = rwlock_slots,
};

int pxpy_rwlock_check(pxpy_state *st, PyObject *obj)
{
    return Py_IS_TYPE(obj, st->shared->rwlock_type);
}

PyObject *pxpy_rwlock_new(pxpy_state *st)
{
    return rwlock_wrap(st->shared->rwlock_type, pxpy_rwcore_new());
}

PyObject *pxpy_rwlock_wrap(pxpy_state *st, pxpy_rwcore_t *core)
{
    pxpy_rwcore_ref(core);
    return rwlock_wrap(st->shared->rwlock_type, core);
}

pxpy_rwcore_t *pxpy_rwlock_core(PyObject *lock)
{
    return ((rwlock_object *)lock)->core;
}

/* ---- LockGuard type --------------------------------------------------- */

PyObject *pxpy_lock_guard_new(pxpy_state *st, pxpy_rwcore_t *core,
                              PyObject *target, int exclusive)
{
    guard_object *g = PyObject_GC_New(guard_object, st->lock_guard_type);
    if (g == NULL)
        return NULL;
    pxpy_rwcore_ref(core);
    g->core = core;
    g->target = Py_NewRef(target);
    g->exclusive = exclusive;
    PyObject_GC_Track(g);
    return (PyObject *)g;
}

static int guard_traverse(PyObject *self, visitproc visit, void *arg)
{
    guard_object *g = (guard_object *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(g->target);
    return 0;
}

static int guard_clear(PyObject *self)
{
    guard_object *g = (guard_object *)self;
    Py_CLEAR(g->target);
    return 0;
}

static void guard_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    guard_object *g = (guard_object *)self;
    PyObject_GC_UnTrack(self);
    guard_clear(self);
    pxpy_rwcore_unref(g->core);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *guard_enter(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    guard_object *g = (guard_object *)self;
    if (g->target == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lock guard was cleared");
        return NULL;
    }
    if (pxpy_rwcore_take(g->core, g->exclusive) < 0)
        return NULL;
    return Py_NewRef(g->target);
}

static PyObject *guard_exit(PyObject *self, PyObject *const *Py_UNUSED(args),
                            Py_ssize_t Py_UNUSED(nargs))
{
    guard_object *g = (guard_object *)self;
    if (pxpy_rwcore_release(g->core, g->exclusive) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *guard_get_exclusive(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((guard_object *)self)->exclusive);
}

static PyMethodDef guard_methods[] = {
    {"__enter__", guard_enter, METH_NOARGS,
     PyDoc_STR("Take the lock (waiting if needed); return the locked object.")},
    {"__exit__", (PyCFunction)(void (*)(void))guard_exit, METH_FASTCALL,
     PyDoc_STR("Release the hold taken by __enter__ on this thread.")},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef guard_getset[] = {
    {"exclusive", guard_get_exclusive, NULL,
     PyDoc_STR("True for a write lock, False for a read lock."), NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(
    guard_doc,
    "A context manager returned by read_lock()/write_lock(): __enter__ takes\n"
    "the lock for the calling thread, __exit__ releases that thread's hold.\n"
    "Holds are tracked per thread, so one guard may be entered by several\n"
    "threads and nested.");

static PyType_Slot guard_slots[] = {
    {Py_tp_dealloc, guard_dealloc},
    {Py_tp_traverse, guard_traverse},
    {Py_tp_clear, guard_clear},
    {Py_tp_methods, guard_methods},
    {Py_tp_getset, guard_getset},
    {Py_tp_doc, (void *)guard_doc},
    {0, NULL},
};

static PyType_Spec guard_spec = {
    .name = "pyparallel._core.LockGuard",
    .basicsize = sizeof(guard_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = guard_slots,
};

int pxpy_rwlock_exec(PyObject *module, pxpy_state *st)
{
    st->shared->rwlock_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &rwlock_spec, NULL);
    if (st->shared->rwlock_type == NULL)
        return -1;
    if (PyModule_AddType(module, st->shared->rwlock_type) < 0)
        return -1;
    st->lock_guard_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &guard_spec, NULL);
    if (st->lock_guard_type == NULL)
        return -1;
    return PyModule_AddType(module, st->lock_guard_type);
}
