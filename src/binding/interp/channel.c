/*
 * channel.c - pyparallel.Channel: a multi-producer, multi-consumer FIFO of
 * shareable values between the main thread and the workers, in any mode.
 *
 * A channel's queue is plain C memory (pxpy_chan_t) with an atomic
 * reference count: every Channel object over it (one per interpreter that
 * holds the channel; passing it to a worker or through another channel
 * makes a new object over the same queue) holds one reference, and
 * cross-interpreter data in flight holds one. Items are cross-interpreter
 * data (xi.c), so a value put in one interpreter comes out as a new object
 * in the interpreter that gets it; in modes "threads" and "gil" too, which
 * keeps a program's behaviour the same in every mode.
 *
 * Waiting: get() on an empty channel and put() on a full one (maxsize > 0)
 * wait on the queue's condition variables, detached from the interpreter;
 * the main thread wakes now and then for signal handlers (Ctrl-C).
 *
 * Monitoring: every live queue is on its runtime's list (a reference-
 * counted list, so that a channel that outlives the module can still leave
 * it), which stats()["channels"] reports: name, depth, maxsize, and the
 * puts and gets so far with their rate over the channel's life.
 */
#include "interp/interp_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#define SIGNAL_CHECK_NS (100 * 1000 * 1000)
#define CHANNEL_NAME_MAX 64

typedef struct item_s {
    struct item_s *next;
    pxpy_xi_t *xi;
} item_t;

typedef struct pxpy_chanlist_s {
    _Atomic size_t refs;
    pthread_mutex_t lock;
    pxpy_chan_t *head;
    uint64_t next_id;
} chanlist_t;

struct pxpy_chan_s {
    _Atomic size_t refs;
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    item_t *head, *tail;
    size_t depth;
    size_t maxsize; /* 0: unbounded */
    uint64_t puts, gets;
    uint64_t created_ns;
    uint64_t id;
    char name[CHANNEL_NAME_MAX];
    chanlist_t *list;
    pxpy_chan_t *prev, *next; /* on list, under list->lock */
};

typedef struct {
    PyObject_HEAD
    pxpy_chan_t *chan;
} channel_t;

#define CHANNEL(op) ((channel_t *)(op))

/* ---- the list of live channels ------------------------------------------ */

static chanlist_t *list_new(void)
{
    chanlist_t *l = PyMem_RawCalloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    atomic_init(&l->refs, 1);
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

static void list_unref(chanlist_t *l)
{
    if (atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&l->lock);
    PyMem_RawFree(l);
}

/* ---- queues ------------------------------------------------------------- */

void pxpy_chan_ref(pxpy_chan_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void pxpy_chan_unref(pxpy_chan_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    chanlist_t *l = c->list;
    pthread_mutex_lock(&l->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&l->lock);
    list_unref(l);
    item_t *it = c->head;
    while (it != NULL) {
        item_t *next = it->next;
        pxpy_xi_free(it->xi); /* may release other channels: not locked */
        PyMem_RawFree(it);
        it = next;
    }
    pthread_cond_destroy(&c->not_full);
    pthread_cond_destroy(&c->not_empty);
    pthread_mutex_destroy(&c->lock);
    PyMem_RawFree(c);
}

static pxpy_chan_t *chan_new(chanlist_t *l, size_t maxsize, const char *name)
{
    pxpy_chan_t *c = PyMem_RawCalloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->not_empty, &ca);
    pthread_cond_init(&c->not_full, &ca);
    pthread_condattr_destroy(&ca);
    c->maxsize = maxsize;
    c->created_ns = px_now_ns();
    atomic_fetch_add(&l->refs, 1);
    c->list = l;
    pthread_mutex_lock(&l->lock);
    c->id = ++l->next_id;
    if (name != NULL)
        PyOS_snprintf(c->name, sizeof(c->name), "%s", name);
    else
        PyOS_snprintf(c->name, sizeof(c->name), "channel-%llu",
                      (unsigned long long)c->id);
    c->next = l->head;
    if (l->head)
        l->head->prev = c;
    l->head = c;
    pthread_mutex_unlock(&l->lock);
    return c;
}

/* ---- waiting ------------------------------------------------------------ */

/* Parses timeout (None or seconds >= 0) into an absolute deadline (0: none). */
static int parse_deadline(PyObject *timeout, const char *fname, bool *block,
                          uint64_t *deadline)
{
    *deadline = 0;
    if (timeout == Py_None)
        return 0;
    double s = PyFloat_AsDouble(timeout);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (!(s >= 0.0)) {
        PyErr_Format(PyExc_ValueError,
                     "%s timeout must be None or a number of seconds >= 0",
                     fname);
        return -1;
    }
    if (s == 0.0) {
        *block = false;
        return 0;
    }
    *deadline = px_now_ns() + (uint64_t)(s > 1e9 ? 1e18 : s * 1e9);
    return 0;
}

typedef enum { WAIT_READY, WAIT_TIMEOUT, WAIT_SIGNAL } wait_t;

/* Waits on cond (c->lock held, the thread detached) until ready(c) or the
 * deadline; the main thread returns every SIGNAL_CHECK_NS so that the
 * caller can look at signals. */
static wait_t wait_until(pxpy_chan_t *c, pthread_cond_t *cond,
                         bool (*ready)(const pxpy_chan_t *), uint64_t deadline,
                         bool main)
{
    for (;;) {
        if (ready(c))
            return WAIT_READY;
        uint64_t until = deadline;
        if (main) {
            uint64_t slice = px_now_ns() + SIGNAL_CHECK_NS;
            if (until == 0 || slice < until)
                until = slice;
        }
        if (until == 0) {
            pthread_cond_wait(cond, &c->lock);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                              .tv_nsec = (long)(until % 1000000000u)};
        if (pthread_cond_timedwait(cond, &c->lock, &ts) == ETIMEDOUT &&
            !ready(c)) {
            if (deadline && px_now_ns() >= deadline)
                return WAIT_TIMEOUT;
            if (main)
                return WAIT_SIGNAL;
        }
    }
}

static bool has_items(const pxpy_chan_t *c) { return c->head != NULL; }

static bool has_room(const pxpy_chan_t *c)
{
    return c->maxsize == 0 || c->depth < c->maxsize;
}

/* Locks c's mutex; when ready(c) is false and block, waits (detached),
 * looking at signals on the main thread. Returns with the lock held and
 * WAIT_READY, or without it: WAIT_TIMEOUT (no exception) or WAIT_SIGNAL
 * (a handler raised). The lock is never held while attaching: a thread
 * that holds the GIL may be waiting for it. */
static wait_t lock_when(pxpy_state *st, pxpy_chan_t *c, pthread_cond_t *cond,
                        bool (*ready)(const pxpy_chan_t *), bool block,
                        uint64_t deadline)
{
    pthread_mutex_lock(&c->lock);
    if (ready(c))
        return WAIT_READY;
    pthread_mutex_unlock(&c->lock);
    if (!block)
        return WAIT_TIMEOUT;
    bool main = pxpy_is_main_thread(st);
    for (;;) {
        pxpy_blocking_t b = pxpy_blocking_begin();
        pthread_mutex_lock(&c->lock);
        wait_t w = wait_until(c, cond, ready, deadline, main);
        pthread_mutex_unlock(&c->lock);
        pxpy_blocking_end(b);
        if (w == WAIT_TIMEOUT)
            return w;
        if (w == WAIT_SIGNAL && PyErr_CheckSignals() < 0)
            return WAIT_SIGNAL;
        pthread_mutex_lock(&c->lock);
        if (ready(c))
            return WAIT_READY;
        /* Another thread took it first: wait again. */
        pthread_mutex_unlock(&c->lock);
    }
}

static PyObject *queue_error(const char *name)
{
    PyObject *cls = pxpy_import_attr("queue", name);
    if (cls != NULL) {
        PyErr_SetNone(cls);
        Py_DECREF(cls);
    }
    return NULL;
}

/* ---- the type ----------------------------------------------------------- */

pxpy_chan_t *pxpy_channel_queue(pxpy_state *st, PyObject *obj)
{
    if (Py_TYPE(obj) != st->channel_type)
        return NULL;
    return CHANNEL(obj)->chan;
}

/* Steals the caller's reference to chan. */
static PyObject *wrap_new(PyTypeObject *type, pxpy_chan_t *chan)
{
    channel_t *self = PyObject_GC_New(channel_t, type);
    if (self == NULL) {
        pxpy_chan_unref(chan);
        return NULL;
    }
    self->chan = chan;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

PyObject *pxpy_channel_wrap(pxpy_state *st, pxpy_chan_t *chan)
{
    pxpy_chan_ref(chan);
    return wrap_new(st->channel_type, chan);
}

static PyObject *channel_new(PyTypeObject *type, PyObject *args,
                             PyObject *kwargs)
{
    static char *const kwlist[] = {"maxsize", "name", NULL};
    Py_ssize_t maxsize = 0;
    const char *name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n$z:Channel", kwlist,
                                     &maxsize, &name))
        return NULL;
    if (maxsize < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "Channel() maxsize must be >= 0 (0: unbounded)");
        return NULL;
    }
    pxpy_state *st = pxpy_state_from_type(type);
    chanlist_t *l = *pxpy_runtime_channels(st->runtime);
    pxpy_chan_t *c = chan_new(l, (size_t)maxsize, name);
    if (c == NULL)
        return PyErr_NoMemory();
    return wrap_new(type, c);
}

static PyObject *channel_put(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"item", "timeout", NULL};
    PyObject *item, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:put", kwlist, &item,
                                     &timeout))
        return NULL;
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(op));
    pxpy_chan_t *c = CHANNEL(op)->chan;
    bool block = true;
    uint64_t deadline;
    if (parse_deadline(timeout, "put()", &block, &deadline) < 0)
        return NULL;
    item_t *it = PyMem_RawMalloc(sizeof(*it));
    if (it == NULL)
        return PyErr_NoMemory();
    it->next = NULL;
    it->xi = pxpy_xi_encode(st, item, "Channel.put() item");
    if (it->xi == NULL) {
        PyMem_RawFree(it);
        return NULL;
    }
    wait_t w = lock_when(st, c, &c->not_full, has_room, block, deadline);
    if (w != WAIT_READY) {
        pxpy_xi_free(it->xi);
        PyMem_RawFree(it);
        return w == WAIT_TIMEOUT ? queue_error("Full") : NULL;
    }
    if (c->tail)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    c->depth++;
    c->puts++;
    pthread_cond_signal(&c->not_empty);
    pthread_mutex_unlock(&c->lock);
    Py_RETURN_NONE;
}

static PyObject *channel_get(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:get", kwlist, &timeout))
        return NULL;
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(op));
    pxpy_chan_t *c = CHANNEL(op)->chan;
    bool block = true;
    uint64_t deadline;
    if (parse_deadline(timeout, "get()", &block, &deadline) < 0)
        return NULL;
    wait_t w = lock_when(st, c, &c->not_empty, has_items, block, deadline);
    if (w != WAIT_READY)
        return w == WAIT_TIMEOUT ? queue_error("Empty") : NULL;
    item_t *it = c->head;
    c->head = it->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->depth--;
    c->gets++;
    pthread_cond_signal(&c->not_full);
    pthread_mutex_unlock(&c->lock);
    PyObject *value = pxpy_xi_decode(st, it->xi);
    pxpy_xi_free(it->xi);
    PyMem_RawFree(it);
    return value;
}

static Py_ssize_t channel_length(PyObject *op)
{
    pxpy_chan_t *c = CHANNEL(op)->chan;
    pthread_mutex_lock(&c->lock);
    size_t n = c->depth;
    pthread_mutex_unlock(&c->lock);
    return (Py_ssize_t)n;
}

static PyObject *channel_get_name(PyObject *op, void *Py_UNUSED(c))
{
    return PyUnicode_FromString(CHANNEL(op)->chan->name);
}

static PyObject *channel_get_maxsize(PyObject *op, void *Py_UNUSED(c))
{
    return PyLong_FromSize_t(CHANNEL(op)->chan->maxsize);
}

static PyObject *channel_repr(PyObject *op)
{
    return PyUnicode_FromFormat("<pyparallel.Channel %s depth=%zd>",
                                CHANNEL(op)->chan->name, channel_length(op));
}

static PyObject *channel_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    (void)op;
    PyErr_SetString(PyExc_TypeError,
                    "a Channel cannot be pickled: pass it itself (or in a "
                    "tuple) to a worker or through another Channel");
    return NULL;
}

/* Only the type (see sharedbuf.c: a Channel in a module-level variable of
 * a worker's interpreter must not keep that interpreter's module alive). */
static int channel_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static void channel_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    pxpy_chan_unref(CHANNEL(op)->chan);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef channel_methods[] = {
    {"put", (PyCFunction)(void (*)(void))channel_put,
     METH_VARARGS | METH_KEYWORDS,
     "put($self, item, timeout=None)\n--\n\nAppend item (a shareable value); "
     "when "
     "the channel is full, wait up to timeout seconds (None: as long as it "
     "takes), then raise queue.Full."},
    {"get", (PyCFunction)(void (*)(void))channel_get,
     METH_VARARGS | METH_KEYWORDS,
     "get($self, timeout=None)\n--\n\nRemove and return the oldest item, "
     "waiting up "
     "to timeout seconds (None: as long as it takes) for one, then raise "
     "queue.Empty."},
    {"__reduce__", channel_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"name", channel_get_name, NULL, "The name stats() reports.", NULL},
    {"maxsize", channel_get_maxsize, NULL,
     "The most items it holds (0: no limit).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot channel_slots[] = {
    {Py_tp_doc, "Channel(maxsize=0, *, name=None)\n--\n\n"
                "A first-in first-out queue of shareable values between the "
                "main thread and the workers, in every mode."},
    {Py_tp_new, channel_new},
    {Py_tp_methods, channel_methods},
    {Py_tp_getset, channel_getset},
    {Py_tp_repr, channel_repr},
    {Py_tp_dealloc, channel_dealloc},
    {Py_tp_traverse, channel_traverse},
    {Py_sq_length, channel_length},
    {0, NULL},
};

static PyType_Spec channel_spec = {
    .name = "pyparallel.Channel",
    .basicsize = sizeof(channel_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = channel_slots,
};

/* ---- stats and module part ---------------------------------------------- */

typedef struct {
    char name[CHANNEL_NAME_MAX];
    size_t depth, maxsize;
    uint64_t puts, gets, age_ns;
} snapshot_t;

PyObject *pxpy_channel_stats(pxpy_state *st)
{
    chanlist_t *l = *pxpy_runtime_channels(st->runtime);
    /* Copied under the locks, turned into objects after: building objects
     * may free a Channel, which takes the list's lock. */
    size_t n = 0, cap = 16;
    snapshot_t *snap = NULL;
    for (;;) {
        snap = PyMem_RawMalloc(cap * sizeof(*snap));
        if (snap == NULL)
            return PyErr_NoMemory();
        uint64_t now = px_now_ns();
        n = 0;
        pthread_mutex_lock(&l->lock);
        for (pxpy_chan_t *c = l->head; c != NULL; c = c->next, n++) {
            if (n == cap)
                continue; /* count them, then retry bigger */
            snapshot_t *s = &snap[n];
            pthread_mutex_lock(&c->lock);
            memcpy(s->name, c->name, sizeof(s->name));
            s->depth = c->depth;
            s->maxsize = c->maxsize;
            s->puts = c->puts;
            s->gets = c->gets;
            s->age_ns = now - c->created_ns;
            pthread_mutex_unlock(&c->lock);
        }
        pthread_mutex_unlock(&l->lock);
        if (n <= cap)
            break;
        PyMem_RawFree(snap);
        cap = n * 2;
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        snapshot_t *s = &snap[i];
        double age = (double)s->age_ns / 1e9;
        PyObject *d = Py_BuildValue(
            "{s:s,s:n,s:n,s:K,s:K,s:d,s:d}", "name", s->name, "depth",
            (Py_ssize_t)s->depth, "maxsize", (Py_ssize_t)s->maxsize, "puts",
            (unsigned long long)s->puts, "gets", (unsigned long long)s->gets,
            "puts_per_second", age > 0 ? (double)s->puts / age : 0.0,
            "gets_per_second", age > 0 ? (double)s->gets / age : 0.0);
        if (d == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    PyMem_RawFree(snap);
    return list;
}

int pxpy_channel_exec(PyObject *module, pxpy_state *st)
{
    chanlist_t **slot = pxpy_runtime_channels(st->runtime);
    *slot = list_new();
    if (*slot == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->channel_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &channel_spec, NULL);
    if (st->channel_type == NULL)
        return -1;
    return PyModule_AddType(module, st->channel_type);
}

void pxpy_channel_free_list(pxpy_runtime_t *rt)
{
    chanlist_t **slot = pxpy_runtime_channels(rt);
    if (*slot != NULL)
        list_unref(*slot);
    *slot = NULL;
}
