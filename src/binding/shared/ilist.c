/*
 * ilist.c - the interlocked list, px.xlist (PyParallel's name, kept for the
 * Python API; in C its prefix is ilist_, since x- names mean
 * "cross-interpreter" in this binding), PyParallel's hand-off between
 * parallel callbacks and the main thread.
 *
 *   push(obj)  from any thread;
 *   pop()      the most recently pushed object (LIFO, like the Windows
 *              interlocked SList PyParallel built it on); IndexError when
 *              empty;
 *   flush()    everything pushed so far, oldest first, as a list; the xlist
 *              is emptied in the same step, so every pushed object comes out
 *              of exactly one pop() or flush();
 *   len(x)     how many objects are in it right now.
 *
 * A growable array of strong references behind a PyMutex: an uncontended
 * push is a compare-and-swap, a store and a release, and a thread that has
 * to wait parks with its thread state detached. The mutex is never held
 * across anything that can run Python code or the GC: flush() takes the
 * whole array out under the mutex and builds the list afterwards.
 */
#include "shared/shared.h"

#define MIN_CAPACITY 8

typedef struct {
    PyObject_HEAD
    PyMutex mutex;
    PyObject **items; /* strong references, oldest first */
    Py_ssize_t len;
    Py_ssize_t capacity;
} ilist_object;

static PyObject *ilist_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 ||
        (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "xlist() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

/* Takes the array out, leaving the xlist empty. */
static PyObject **take_all(ilist_object *x, Py_ssize_t *len)
{
    PyMutex_Lock(&x->mutex);
    PyObject **items = x->items;
    *len = x->len;
    x->items = NULL;
    x->len = 0;
    x->capacity = 0;
    PyMutex_Unlock(&x->mutex);
    return items;
}

static void release_all(PyObject **items, Py_ssize_t len)
{
    for (Py_ssize_t i = 0; i < len; i++)
        Py_DECREF(items[i]);
    PyMem_Free(items);
}

static int ilist_traverse(PyObject *self, visitproc visit, void *arg)
{
    /* No mutex: see protect.c's traverse; push and pop never stop at a
     * point where the GC can run while they hold it. */
    ilist_object *x = (ilist_object *)self;
    Py_VISIT(Py_TYPE(self));
    for (Py_ssize_t i = 0; i < x->len; i++)
        Py_VISIT(x->items[i]);
    return 0;
}

static int ilist_clear(PyObject *self)
{
    Py_ssize_t len;
    PyObject **items = take_all((ilist_object *)self, &len);
    release_all(items, len);
    return 0;
}

static void ilist_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ilist_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *ilist_push(PyObject *self, PyObject *obj)
{
    ilist_object *x = (ilist_object *)self;
    int no_memory = 0;
    Py_INCREF(obj);
    PyMutex_Lock(&x->mutex);
    if (x->len == x->capacity) {
        Py_ssize_t capacity = x->capacity ? x->capacity * 2 : MIN_CAPACITY;
        PyObject **grown = PyMem_Realloc(x->items, capacity * sizeof(*grown));
        if (grown != NULL) {
            x->items = grown;
            x->capacity = capacity;
        } else {
            no_memory = 1;
        }
    }
    if (!no_memory)
        x->items[x->len++] = obj;
    PyMutex_Unlock(&x->mutex);
    if (no_memory) {
        Py_DECREF(obj);
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *ilist_pop(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ilist_object *x = (ilist_object *)self;
    PyObject *obj = NULL;
    PyMutex_Lock(&x->mutex);
    if (x->len > 0)
        obj = x->items[--x->len];
    PyMutex_Unlock(&x->mutex);
    if (obj == NULL)
        PyErr_SetString(PyExc_IndexError, "pop from an empty xlist");
    return obj;
}

/* Puts items (taken by flush) back in front of whatever was pushed since,
 * when building the result list failed. Returns -1 if that is impossible
 * too (out of memory), in which case the items are released. */
static int put_back(ilist_object *x, PyObject **items, Py_ssize_t len)
{
    PyObject **newer;
    Py_ssize_t newer_len;
    PyMutex_Lock(&x->mutex);
    newer = x->items;
    newer_len = x->len;
    PyObject **merged =
        PyMem_Realloc(items, (len + newer_len) * sizeof(*items));
    if (merged != NULL) {
        if (newer_len > 0)
            memcpy(merged + len, newer, newer_len * sizeof(*merged));
        x->items = merged;
        x->len = len + newer_len;
        x->capacity = len + newer_len;
    }
    PyMutex_Unlock(&x->mutex);
    if (merged == NULL) {
        release_all(items, len);
        return -1;
    }
    PyMem_Free(newer);
    return 0;
}

static PyObject *ilist_flush(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ilist_object *x = (ilist_object *)self;
    Py_ssize_t len;
    PyObject **items = take_all(x, &len);
    PyObject *list = PyList_New(len);
    if (list == NULL) {
        put_back(x, items, len);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < len; i++)
        PyList_SET_ITEM(list, i, items[i]); /* steals the reference */
    PyMem_Free(items);
    return list;
}

static Py_ssize_t ilist_length(PyObject *self)
{
    ilist_object *x = (ilist_object *)self;
    PyMutex_Lock(&x->mutex);
    Py_ssize_t len = x->len;
    PyMutex_Unlock(&x->mutex);
    return len;
}

static PyObject *ilist_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<%s len=%zd>", Py_TYPE(self)->tp_name,
                                ilist_length(self));
}

PyDoc_STRVAR(push_doc, "push(obj)\n\nAdd obj; safe from any thread.");
PyDoc_STRVAR(
    pop_doc,
    "pop() -> obj\n\n"
    "Remove and return the most recently pushed object (LIFO). IndexError\n"
    "when empty.");
PyDoc_STRVAR(
    flush_doc,
    "flush() -> list\n\n"
    "Remove and return everything pushed so far, oldest first, in one atomic\n"
    "step.");
PyDoc_STRVAR(
    ilist_doc,
    "xlist()\n--\n\n"
    "Interlocked list: push() from any thread, pop() (LIFO), flush() (all,\n"
    "oldest first, atomically emptied), len().");

static PyMethodDef ilist_methods[] = {
    {"push", ilist_push, METH_O, push_doc},
    {"pop", ilist_pop, METH_NOARGS, pop_doc},
    {"flush", ilist_flush, METH_NOARGS, flush_doc},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ilist_slots[] = {
    {Py_tp_new, ilist_new},
    {Py_tp_dealloc, ilist_dealloc},
    {Py_tp_traverse, ilist_traverse},
    {Py_tp_clear, ilist_clear},
    {Py_tp_repr, ilist_repr},
    {Py_tp_methods, ilist_methods},
    {Py_sq_length, ilist_length},
    {Py_tp_doc, (void *)ilist_doc},
    {0, NULL},
};

static PyType_Spec ilist_spec = {
    .name = "pyparallel._core.xlist",
    .basicsize = sizeof(ilist_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = ilist_slots,
};

int pxpy_ilist_exec(PyObject *module, pxpy_state *st)
{
    st->ilist_type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &ilist_spec, NULL);
    if (st->ilist_type == NULL)
        return -1;
    return PyModule_AddType(module, st->ilist_type);
}
