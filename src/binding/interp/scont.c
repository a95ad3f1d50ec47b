/*
 * scont.c - what the shared containers of mode "interpreters" (px.dict,
 * px.list and px.xlist there: SharedDict in sdict.c, SharedList in
 * slist.c, SharedXList in sxlist.c) have in common, and the choice between
 * them and the one-interpreter kinds (_shared_containers()).
 *
 * In mode "interpreters" a Python object belongs to one interpreter, so a
 * container that every worker and the main interpreter fill must live
 * outside all of them: a container here is raw memory (PyMem_Raw*) whose
 * items are cross-interpreter data restricted to plain values (xi.c's
 * pxpy_xi_encode_value), with an atomic reference count and, for the dict
 * and the list, an RWLock core (shared/rwlock.c) that px.read_lock() and
 * px.write_lock() take as in the other modes. Each interpreter that holds
 * a container has an object of its own over it, made when the container
 * crosses as a handle (xi.c's TAG_SHARED: an argument of submit_work or
 * map, a Channel item, a work item's result). The container goes with its
 * last holder, in whatever interpreter or thread that is; freeing its
 * items releases SharedBuffer regions and needs no interpreter.
 *
 * The lock is held only while C code reads or changes the items, never
 * while Python code runs: values are encoded before the lock is taken and
 * decoded after it is released (from copies taken under it), so a
 * finalizer or a signal handler can never find a container half changed
 * by its own thread.
 */
#include "interp/interp_internal.h"

/* ---- the header --------------------------------------------------------- */

void *pxpy_scont_alloc(size_t size, pxpy_scont_kind_t kind, bool locked,
                       void (*clear)(pxpy_scont_t *c))
{
    pxpy_scont_t *c = PyMem_RawCalloc(1, size);
    if (c == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->kind = kind;
    c->clear = clear;
    if (locked) {
        c->lock = pxpy_rwcore_new();
        if (c->lock == NULL) {
            PyMem_RawFree(c);
            return NULL;
        }
    }
    return c;
}

void pxpy_scont_ref(pxpy_scont_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void pxpy_scont_unref(pxpy_scont_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    c->clear(c);
    if (c->lock != NULL)
        pxpy_rwcore_unref(c->lock);
    PyMem_RawFree(c);
}

int pxpy_scont_lock(pxpy_scont_t *c, int exclusive)
{
    return pxpy_rwcore_take(c->lock, exclusive);
}

void pxpy_scont_unlock(pxpy_scont_t *c, int exclusive)
{
    /* The hold was taken by this thread a few C statements earlier, so
     * releasing it cannot fail; an error being raised stays as it is. */
    PyObject *exc = PyErr_GetRaisedException();
    if (pxpy_rwcore_release(c->lock, exclusive) < 0)
        PyErr_WriteUnraisable(NULL);
    PyErr_SetRaisedException(exc);
}

void pxpy_scont_free_all(pxpy_xi_t **xis, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        pxpy_xi_free(xis[i]);
    PyMem_RawFree(xis);
}

PyObject *pxpy_scont_decode_all(pxpy_state *st, pxpy_xi_t **xis, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *item = pxpy_xi_decode(st, xis[i]);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
    pxpy_scont_free_all(xis, n);
    return list;
}

PyObject *pxpy_scont_apply(PyObject *items, PyObject *(*f)(PyObject *))
{
    if (items == NULL)
        return NULL;
    PyObject *r = f(items);
    Py_DECREF(items);
    return r;
}

PyObject *pxpy_scont_reversed_iter(PyObject *list)
{
    return PyList_Reverse(list) < 0 ? NULL : PyObject_GetIter(list);
}

/* ---- objects ------------------------------------------------------------ */

#define SCONT(op) (((pxpy_scont_object_t *)(op))->c)

PyObject *pxpy_scont_new_object(PyTypeObject *type, pxpy_scont_t *c)
{
    pxpy_scont_object_t *self = PyObject_GC_New(pxpy_scont_object_t, type);
    if (self == NULL) {
        pxpy_scont_unref(c);
        return NULL;
    }
    self->c = c;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyTypeObject *type_of_kind(pxpy_state *st, pxpy_scont_kind_t kind)
{
    switch (kind) {
    case PXPY_SCONT_DICT:
        return st->sdict_type;
    case PXPY_SCONT_LIST:
        return st->slist_type;
    default:
        return st->sxlist_type;
    }
}

pxpy_scont_t *pxpy_scont_of(pxpy_state *st, PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (type == NULL || (type != st->sdict_type && type != st->slist_type &&
                         type != st->sxlist_type))
        return NULL;
    return SCONT(obj);
}

PyObject *pxpy_scont_wrap(pxpy_state *st, pxpy_scont_t *c)
{
    pxpy_scont_ref(c);
    return pxpy_scont_new_object(type_of_kind(st, c->kind), c);
}

/* Only the type (as sharedbuf.c says: a container in a module-level
 * variable of a worker's interpreter must not keep its module alive
 * unseen); the items are no Python objects. */
int pxpy_scont_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    return 0;
}

void pxpy_scont_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF)
        PyObject_ClearWeakRefs(op);
    pxpy_scont_unref(SCONT(op));
    tp->tp_free(op);
    Py_DECREF(tp);
}

PyObject *pxpy_scont_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyErr_Format(PyExc_TypeError,
                 "a %s cannot be pickled: pass it itself (or in a tuple) to "
                 "a worker or through a Channel, which shares it instead of "
                 "copying it; copy() makes a new one",
                 Py_TYPE(op)->tp_name);
    return NULL;
}

PyObject *pxpy_scont_get_rwlock(PyObject *op, void *Py_UNUSED(closure))
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(op));
    return st == NULL ? NULL : pxpy_rwlock_wrap(st, SCONT(op)->lock);
}

int pxpy_scont_add_type(PyObject *module, PyType_Spec *spec,
                        PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*slot == NULL)
        return -1;
    return PyModule_AddType(module, *slot);
}

/* ---- which kind px.dict() makes ----------------------------------------- */

/* True when px.dict(), px.list() and px.xlist() must make the shared kind:
 * in a worker's interpreter; in the main one when the loop runs (or ran)
 * in mode "interpreters", or when no loop has chosen its mode yet and
 * PYPARALLEL_MODE or the build's default is "interpreters". st->mode is
 * PXPY_MODE_THREADS until a loop starts, and a loop in that mode runs
 * only on a free-threaded build, whose default is never "interpreters". */
static PyObject *shared_containers(PyObject *module,
                                   PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st) || st->mode == PXPY_MODE_INTERPRETERS)
        Py_RETURN_TRUE;
    if (st->mode == PXPY_MODE_GIL)
        Py_RETURN_FALSE;
    pxpy_mode_t mode;
    if (pxpy_parse_mode(NULL, &mode) < 0)
        return NULL;
    return PyBool_FromLong(mode == PXPY_MODE_INTERPRETERS);
}

/* ---- the main script's containers in a worker ------------------------- */

/* The main script's global names, for a worker interpreter that has just
 * imported it: a container its top level made there (hits = px.dict())
 * must be the main interpreter's, not a second one. For each name in
 * names, the main interpreter's __main__ global of that name when it is a
 * shared container, as this interpreter's object over the same container
 * ({name: container}). Reading the main interpreter's objects takes its
 * GIL: the calling engine thread enters it, as logging from a worker does.
 * A thread that is not the engine's cannot, and gets AsyncError. */
static PyObject *main_shared(PyObject *module, PyObject *names)
{
    pxpy_state *st = pxpy_get_state(module);
    if (!PyTuple_Check(names))
        return PyErr_Format(PyExc_TypeError,
                            "_main_shared() takes a tuple of names, not %.100s",
                            Py_TYPE(names)->tp_name);
    if (!pxpy_in_worker_interp(st) || px_current_worker() < 0)
        return PyErr_Format(st->async_error,
                            "the main script's shared containers can only be "
                            "found from an engine thread of a worker "
                            "interpreter");
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    pxpy_scont_t **found = PyMem_RawCalloc((size_t)(n ? n : 1), sizeof(*found));
    if (found == NULL)
        return PyErr_NoMemory();
    /* Names as C strings: this interpreter's str objects must not be
     * touched while the main interpreter is entered. */
    const char **cnames = PyMem_RawCalloc((size_t)(n ? n : 1), sizeof(char *));
    if (cnames == NULL) {
        PyMem_RawFree(found);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        cnames[i] = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (cnames[i] == NULL) {
            PyMem_RawFree(cnames);
            PyMem_RawFree(found);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError,
                                "_main_shared() names must be str");
            return NULL;
        }
    }
    pxpy_runtime_t *rt = st->runtime;
    pxpy_entered_t e = pxpy_interp_enter(rt, PXPY_MAIN);
    pxpy_state *main_st = pxpy_interp_state(rt, PXPY_MAIN);
    PyObject *main_module = PyImport_AddModule("__main__"); /* borrowed */
    PyObject *globals = main_module ? PyModule_GetDict(main_module) : NULL;
    for (Py_ssize_t i = 0; globals != NULL && i < n; i++) {
        PyObject *value;
        if (PyDict_GetItemStringRef(globals, cnames[i], &value) <= 0)
            continue;
        found[i] = pxpy_scont_of(main_st, value);
        if (found[i] != NULL)
            pxpy_scont_ref(found[i]);
        Py_DECREF(value);
    }
    PyErr_Clear(); /* a lookup's error in the main interpreter stays there */
    pxpy_interp_leave(e);
    PyMem_RawFree(cnames);

    PyObject *result = PyDict_New();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (found[i] == NULL)
            continue;
        PyObject *obj = result ? pxpy_scont_wrap(st, found[i]) : NULL;
        if (obj == NULL ||
            PyDict_SetItem(result, PyTuple_GET_ITEM(names, i), obj) < 0)
            Py_CLEAR(result);
        Py_XDECREF(obj);
        pxpy_scont_unref(found[i]);
    }
    PyMem_RawFree(found);
    return result;
}

static PyMethodDef scont_functions[] = {
    {"_main_shared", main_shared, METH_O,
     "_main_shared(names, /)\n--\n\nThe main interpreter's __main__ "
     "globals of these names that are shared containers, as objects of this "
     "worker interpreter."},
    {"_shared_containers", shared_containers, METH_NOARGS,
     "_shared_containers()\n--\n\nWhether px.dict(), px.list() and "
     "px.xlist() make the kinds shared by every interpreter (mode "
     "'interpreters')."},
    {NULL, NULL, 0, NULL},
};

int pxpy_scont_exec(PyObject *module, pxpy_state *st)
{
    if (pxpy_sdict_exec(module, st) < 0 || pxpy_slist_exec(module, st) < 0 ||
        pxpy_sxlist_exec(module, st) < 0)
        return -1;
    return PyModule_AddFunctions(module, scont_functions);
}
