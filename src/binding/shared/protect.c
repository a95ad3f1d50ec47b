/*
 * protect.c - protect(), unprotect(), protected(), read_lock(), write_lock().
 *
 * PyParallel's protection model: an object shared between threads is
 * "protected" by giving it a many-readers/one-writer lock, and code takes
 * that lock around compound reads and writes. Two kinds of objects count as
 * protected:
 *  - objects passed to protect(): the registry (st->shared->registry, keyed
 *    by identity) keeps a strong reference to the object and to its RWLock
 *    until unprotect() returns them; the object is never freed before that;
 *  - objects whose __px_rwlock__ attribute is an RWLock (px.dict, px.list):
 *    the lock lives and dies with the object; unprotect() refuses them.
 * read_lock()/write_lock() on anything else raise ProtectionError.
 *
 * In a worker's interpreter (mode "interpreters") protect() raises
 * AsyncError: the object lives in that interpreter alone, so a lock on it
 * would guard nothing that another worker or the main interpreter sees,
 * and the program would quietly compute per-interpreter answers. The error
 * points to what is shared there (px.dict, px.list, SharedBuffer, Channel)
 * or to the modes that share objects.
 *
 * unprotect() of an unprotected object does nothing, like protect() of a
 * protected one. unprotect() of an object whose lock is held is allowed: guards
 * already handed out keep their RWLock alive and release it normally; new
 * read_lock()/write_lock() calls raise ProtectionError.
 */
#include "interp/interp.h"
#include "shared/shared.h"

/* The RWLock guarding obj (the registry's, else obj's own __px_rwlock__),
 * as a new reference. NULL without an exception: not protected. */
static PyObject *find_lock(pxpy_state *st, PyObject *obj)
{
    pxpy_shared_t *sh = st->shared;
    PyMutex_Lock(&sh->registry_mutex);
    PyObject *lock = pxpy_ptrmap_get(&sh->registry, obj);
    Py_XINCREF(lock);
    PyMutex_Unlock(&sh->registry_mutex);
    if (lock != NULL)
        return lock;
    if (PyObject_GetOptionalAttr(obj, sh->str_rwlock_attr, &lock) < 0)
        return NULL;
    if (lock != NULL && pxpy_rwlock_check(st, lock))
        return lock;
    Py_XDECREF(lock);
    return NULL;
}

PyObject *pxpy_only_this_interp(pxpy_state *st, const char *function,
                                PyObject *obj)
{
    PyErr_Format(st->async_error,
                 "%s() in a worker interpreter (mode 'interpreters'): this "
                 "%.100s lives only in this worker's interpreter, and neither "
                 "the main interpreter nor the other workers will ever see "
                 "it; share state through px.dict(), px.list(), px.xlist(), a "
                 "SharedBuffer or a Channel, or use mode 'threads' or 'gil'",
                 function, Py_TYPE(obj)->tp_name);
    return NULL;
}

int pxpy_has_lock(pxpy_state *st, PyObject *obj)
{
    PyObject *lock = find_lock(st, obj);
    if (lock == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_DECREF(lock);
    return 1;
}

static PyObject *raise_not_protected(pxpy_state *st, const char *function,
                                     PyObject *obj)
{
    PyErr_Format(st->protection_error,
                 "%s(): object of type '%T' is not protected; "
                 "call px.protect(obj) first",
                 function, obj);
    return NULL;
}

static PyObject *protect(PyObject *module, PyObject *obj)
{
    pxpy_state *st = pxpy_shared_state(module);
    if (st == NULL)
        return NULL;
    if (pxpy_in_worker_interp(st))
        return pxpy_only_this_interp(st, "protect", obj);
    pxpy_shared_t *sh = st->shared;
    PyObject *lock = find_lock(st, obj);
    if (lock != NULL) {
        Py_DECREF(lock);
        return Py_NewRef(obj);
    }
    if (PyErr_Occurred())
        return NULL;
    /* Allocated before taking the registry mutex: an allocation may run the
     * GC and finalizers, which may call protect() themselves. */
    lock = pxpy_rwlock_new(st);
    if (lock == NULL)
        return NULL;
    PyMutex_Lock(&sh->registry_mutex);
    int inserted = pxpy_ptrmap_put(&sh->registry, obj, lock);
    if (inserted == 1)
        Py_INCREF(obj);
    PyMutex_Unlock(&sh->registry_mutex);
    if (inserted != 1) {
        /* 0: another thread protected obj meanwhile. */
        Py_DECREF(lock);
        if (inserted < 0)
            return PyErr_NoMemory();
    }
    return Py_NewRef(obj);
}

static PyObject *unprotect(PyObject *module, PyObject *obj)
{
    pxpy_state *st = pxpy_shared_state(module);
    if (st == NULL)
        return NULL;
    pxpy_shared_t *sh = st->shared;
    PyMutex_Lock(&sh->registry_mutex);
    PyObject *lock = pxpy_ptrmap_remove(&sh->registry, obj);
    PyMutex_Unlock(&sh->registry_mutex);
    if (lock != NULL) {
        /* The registry's reference to obj becomes the return value. */
        Py_DECREF(lock);
        return obj;
    }
    lock = find_lock(st, obj);
    if (lock == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(obj); /* harmless */
    /* Not in the registry but locked: its own __px_rwlock__. */
    Py_DECREF(lock);
    PyErr_Format(st->protection_error,
                 "unprotect(): objects of type '%T' carry their own lock "
                 "(__px_rwlock__) and stay protected",
                 obj);
    return NULL;
}

static PyObject *protected(PyObject *module, PyObject *obj)
{
    pxpy_state *st = pxpy_shared_state(module);
    if (st == NULL)
        return NULL;
    PyObject *lock = find_lock(st, obj);
    if (lock == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    Py_DECREF(lock);
    Py_RETURN_TRUE;
}

static PyObject *lock_guard(PyObject *module, PyObject *obj, int exclusive)
{
    pxpy_state *st = pxpy_shared_state(module);
    if (st == NULL)
        return NULL;
    PyObject *lock = find_lock(st, obj);
    if (lock == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return raise_not_protected(st, exclusive ? "write_lock" : "read_lock",
                                   obj);
    }
    PyObject *guard =
        pxpy_lock_guard_new(st, pxpy_rwlock_core(lock), obj, exclusive);
    Py_DECREF(lock);
    return guard;
}

static PyObject *read_lock(PyObject *module, PyObject *obj)
{
    return lock_guard(module, obj, 0);
}

static PyObject *write_lock(PyObject *module, PyObject *obj)
{
    return lock_guard(module, obj, 1);
}

PyDoc_STRVAR(
    protect_doc,
    "protect(obj) -> obj\n\n"
    "Give obj a read/write lock so read_lock(obj)/write_lock(obj) work on it.\n"
    "The registry keeps obj alive until unprotect(obj). Protecting an already\n"
    "protected object does nothing. Raises AsyncError in a worker's\n"
    "interpreter (mode 'interpreters'), where no other interpreter would see\n"
    "obj: use px.dict()/px.list() there.");
PyDoc_STRVAR(
    unprotect_doc,
    "unprotect(obj) -> obj\n\n"
    "Drop the lock protect(obj) gave; nothing happens if obj is not\n"
    "protected. Raises ProtectionError if obj carries its own lock (px.dict,\n"
    "px.list). Guards already taken stay valid until released.");
PyDoc_STRVAR(protected_doc,
             "protected(obj) -> bool\n\n"
             "Whether read_lock(obj)/write_lock(obj) would find a lock.");
PyDoc_STRVAR(
    read_lock_doc,
    "read_lock(obj) -> context manager\n\n"
    "with px.read_lock(obj): ... holds obj's lock shared (many readers).\n"
    "Raises ProtectionError if obj is not protected. See RWLock for nesting.");
PyDoc_STRVAR(
    write_lock_doc,
    "write_lock(obj) -> context manager\n\n"
    "with px.write_lock(obj): ... holds obj's lock exclusively (one writer).\n"
    "Raises ProtectionError if obj is not protected; RuntimeError if this\n"
    "thread holds only the read lock (no upgrades).");

static PyMethodDef protect_functions[] = {
    {"protect", protect, METH_O, protect_doc},
    {"unprotect", unprotect, METH_O, unprotect_doc},
    {"protected", protected, METH_O, protected_doc},
    {"read_lock", read_lock, METH_O, read_lock_doc},
    {"write_lock", write_lock, METH_O, write_lock_doc},
    {NULL, NULL, 0, NULL},
};

int pxpy_protect_exec(PyObject *module, pxpy_state *st)
{
    st->shared->str_rwlock_attr = PyUnicode_InternFromString("__px_rwlock__");
    if (st->shared->str_rwlock_attr == NULL)
        return -1;
    return PyModule_AddFunctions(module, protect_functions);
}

int pxpy_protect_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    /* No mutex: the GC runs with the world stopped (or under the GIL), and
     * the registry mutex is never held across a point where that happens. */
    size_t pos = 0;
    void *key, *value;
    while (pxpy_ptrmap_next(&st->shared->registry, &pos, &key, &value)) {
        Py_VISIT((PyObject *)key);
        Py_VISIT((PyObject *)value);
    }
    return 0;
}

void pxpy_protect_free(pxpy_state *st)
{
    pxpy_shared_t *sh = st->shared;
    for (;;) {
        PyMutex_Lock(&sh->registry_mutex);
        pxpy_ptrmap_t taken = sh->registry;
        sh->registry = (pxpy_ptrmap_t){0};
        PyMutex_Unlock(&sh->registry_mutex);
        if (taken.live == 0) {
            pxpy_ptrmap_clear(&taken);
            break;
        }
        /* Released outside the mutex: deallocations run arbitrary code,
         * which may even protect() something again (hence the loop). */
        size_t pos = 0;
        void *key, *value;
        while (pxpy_ptrmap_next(&taken, &pos, &key, &value)) {
            Py_DECREF((PyObject *)value);
            Py_DECREF((PyObject *)key);
        }
        pxpy_ptrmap_clear(&taken);
    }
    Py_CLEAR(sh->str_rwlock_attr);
}
