/*
 * sxlist.c - pyparallel.SharedXList, px.xlist in mode "interpreters": the
 * interlocked list of shared/ilist.c (push from anywhere, pop the newest,
 * flush everything oldest first in one step), one for the main interpreter
 * and every worker (scont.c says how such containers live and cross).
 *
 * Items are cross-interpreter data (plain values), behind a pthread mutex
 * that is held for a few instructions only: push encodes before taking it,
 * pop and flush decode after releasing it. Like px.xlist in the other
 * modes it has no read/write lock: every operation is one atomic step.
 */
#include "interp/interp_internal.h"

#include <pthread.h>

typedef struct {
    pxpy_scont_t head;
    pthread_mutex_t mutex;
    pxpy_xi_t **items; /* oldest first */
    Py_ssize_t len, cap;
} sxlist_t;

#define SXLIST(op) ((sxlist_t *)((pxpy_scont_object_t *)(op))->c)

static void sxlist_clear_items(pxpy_scont_t *c)
{
    sxlist_t *x = (sxlist_t *)c;
    if (x->items != NULL)
        pxpy_scont_free_all(x->items, x->len);
    x->items = NULL;
    x->len = x->cap = 0;
    pthread_mutex_destroy(&x->mutex);
}

/* The mutex is only ever held for a few instructions, and never by a
 * thread that waits for anything else: waiting for it attached is fine. */
static PyObject *sxlist_push(PyObject *self, PyObject *obj)
{
    sxlist_t *x = SXLIST(self);
    pxpy_xi_t *xi = pxpy_xi_encode_value(pxpy_state_from_type(Py_TYPE(self)),
                                         obj, "px.xlist item");
    if (xi == NULL)
        return NULL;
    int no_memory = 0;
    pthread_mutex_lock(&x->mutex);
    if (x->len == x->cap) {
        Py_ssize_t cap = x->cap ? x->cap * 2 : 8;
        pxpy_xi_t **grown =
            PyMem_RawRealloc(x->items, (size_t)cap * sizeof(*grown));
        if (grown != NULL) {
            x->items = grown;
            x->cap = cap;
        } else {
            no_memory = 1;
        }
    }
    if (!no_memory)
        x->items[x->len++] = xi;
    pthread_mutex_unlock(&x->mutex);
    if (no_memory) {
        pxpy_xi_free(xi);
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *sxlist_pop(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    sxlist_t *x = SXLIST(self);
    pxpy_xi_t *xi = NULL;
    pthread_mutex_lock(&x->mutex);
    if (x->len > 0)
        xi = x->items[--x->len];
    pthread_mutex_unlock(&x->mutex);
    if (xi == NULL) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty xlist");
        return NULL;
    }
    PyObject *r = pxpy_xi_decode(pxpy_state_from_type(Py_TYPE(self)), xi);
    pxpy_xi_free(xi);
    return r;
}

static PyObject *sxlist_flush(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    sxlist_t *x = SXLIST(self);
    pthread_mutex_lock(&x->mutex);
    pxpy_xi_t **items = x->items;
    Py_ssize_t len = x->len;
    x->items = NULL;
    x->len = x->cap = 0;
    pthread_mutex_unlock(&x->mutex);
    if (items == NULL)
        return PyList_New(0);
    /* What was taken is decoded and freed, whatever happens: a decoding
     * fails only when memory runs out. */
    return pxpy_scont_decode_all(pxpy_state_from_type(Py_TYPE(self)), items,
                                 len);
}

static Py_ssize_t sxlist_length(PyObject *self)
{
    sxlist_t *x = SXLIST(self);
    pthread_mutex_lock(&x->mutex);
    Py_ssize_t len = x->len;
    pthread_mutex_unlock(&x->mutex);
    return len;
}

static PyObject *sxlist_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<%s len=%zd>", Py_TYPE(self)->tp_name,
                                sxlist_length(self));
}

static PyObject *sxlist_new(PyTypeObject *type, PyObject *args,
                            PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 ||
        (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "xlist() takes no arguments");
        return NULL;
    }
    sxlist_t *x = pxpy_scont_alloc(sizeof(*x), PXPY_SCONT_XLIST, false,
                                   sxlist_clear_items);
    if (x == NULL)
        return NULL;
    pthread_mutex_init(&x->mutex, NULL);
    return pxpy_scont_new_object(type, &x->head);
}

static PyMethodDef sxlist_methods[] = {
    {"push", sxlist_push, METH_O,
     "push(obj)\n--\n\nAdd obj (a value that can cross interpreters); safe "
     "from any thread and interpreter."},
    {"pop", sxlist_pop, METH_NOARGS,
     "pop()\n--\n\nRemove and return the most recently pushed item (LIFO). "
     "IndexError when empty."},
    {"flush", sxlist_flush, METH_NOARGS,
     "flush()\n--\n\nRemove and return everything pushed so far, oldest "
     "first, in one atomic step."},
    {"__reduce__", pxpy_scont_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot sxlist_slots[] = {
    {Py_tp_doc, "SharedXList()\n--\n\n"
                "px.xlist in mode 'interpreters': one interlocked list that "
                "the main interpreter and every worker see: push() from "
                "anywhere, pop() (LIFO), flush() (all, oldest first), len(). "
                "Items are values that can cross interpreters."},
    {Py_tp_new, sxlist_new},
    {Py_tp_dealloc, pxpy_scont_dealloc},
    {Py_tp_traverse, pxpy_scont_traverse},
    {Py_tp_repr, sxlist_repr},
    {Py_tp_methods, sxlist_methods},
    {Py_sq_length, sxlist_length},
    {0, NULL},
};

static PyType_Spec sxlist_spec = {
    .name = "pyparallel.SharedXList",
    .basicsize = sizeof(pxpy_scont_object_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = sxlist_slots,
};

int pxpy_sxlist_exec(PyObject *module, pxpy_state *st)
{
    return pxpy_scont_add_type(module, &sxlist_spec, &st->sxlist_type);
}
