/*
 * eternal.c - eternalize(), immortalize_code() and is_immortal(): immortal
 * objects, so that every core reads shared data without reference-count
 * traffic.
 *
 * Why: on free-threaded CPython every Py_INCREF/Py_DECREF of an object
 * owned by another thread is an atomic add on the object's shared count;
 * two cores reading one dict keep bouncing its cache lines (measured on 2
 * cores: 0.57-0.98x scaling). Immortal objects skip reference counting
 * entirely. The same holds for the constants of functions compiled from
 * source (an import without a .pyc on 3.13t leaves them mortal), which is
 * what pxpy_immortalize_code() fixes for the functions the runtime runs on
 * workers.
 *
 * Contract (also in the docs): an eternalized graph is never freed, for the
 * life of the process (of the interpreter, for a subinterpreter), and must
 * be treated as read-only. Mutating it stays memory-safe (objects stored
 * into it later are ordinary mortal objects, and anything removed from it
 * simply leaks), but it defeats the purpose and leaks. Eternalize a graph
 * from the thread that built it, before other threads use it: marking an
 * object while its owning thread changes its count may leave it mortal
 * (never corrupt: see set_immortal()).
 *
 * There is no public API for this in 3.13/3.14 (3.15's
 * PyUnstable_SetImmortal() accepts only uniquely referenced objects), so
 * set_immortal() writes the reference-count fields the way CPython's own
 * _Py_SetImmortal() does (Objects/object.c), per version and build:
 *   3.13 GIL:        ob_refcnt = _Py_IMMORTAL_REFCNT
 *   3.14+ GIL 64-bit: ob_flags |= _Py_IMMORTAL_FLAGS,
 *                    ob_refcnt = _Py_IMMORTAL_INITIAL_REFCNT
 *   free-threaded:   ob_ref_local = _Py_IMMORTAL_REFCNT_LOCAL (what
 *                    _Py_IsImmortal() tests); 3.13 clears the "deferred"
 *                    GC bit of objects it immortalizes, 3.14+ sets it on
 *                    every immortal object (gh-129984)
 * and, like _Py_SetImmortal(), untracks containers from the GC.
 */
#include "interp/interp.h"
#include "shared/shared.h"

#include <string.h>

/* The "deferred reference counting" bit of ob_gc_bits (pycore_gc.h's
 * _PyGC_BITS_DEFERRED; the same value in 3.13 and 3.14). */
#define GC_BITS_DEFERRED 64

/* ---- marking one object ---------------------------------------------- */

static void store_immortal(PyObject *op)
{
#if defined(Py_GIL_DISABLED)
    /* CPython also zeroes ob_tid and ob_ref_shared, which is safe only for
     * objects no other thread can reach. Setting ob_ref_local alone keeps
     * the counts consistent if a racing owner thread overwrites it with its
     * own non-atomic increment: the object then simply stays mortal. */
    _Py_atomic_store_uint32_relaxed(&op->ob_ref_local,
                                    _Py_IMMORTAL_REFCNT_LOCAL);
#if PY_VERSION_HEX >= 0x030E0000
    _Py_atomic_or_uint8(&op->ob_gc_bits, GC_BITS_DEFERRED);
#else
    _Py_atomic_and_uint8(&op->ob_gc_bits, (uint8_t)~GC_BITS_DEFERRED);
#endif
#elif PY_VERSION_HEX >= 0x030E0000 && SIZEOF_VOID_P > 4
    op->ob_flags |= _Py_IMMORTAL_FLAGS;
    op->ob_refcnt = _Py_IMMORTAL_INITIAL_REFCNT;
#elif PY_VERSION_HEX >= 0x030E0000
    op->ob_refcnt = _Py_IMMORTAL_INITIAL_REFCNT;
#else
    op->ob_refcnt = _Py_IMMORTAL_REFCNT;
#endif
}

static void set_immortal(PyObject *op)
{
    if (_Py_IsImmortal(op))
        return; /* already immortal, possibly statically allocated */
    if (!PyObject_IS_GC(op)) {
        store_immortal(op);
        return;
    }
    /* Under the object's lock, so that the GC-bit updates cannot race with
     * the container's own (a dict marking itself shared, re-tracking). */
    Py_BEGIN_CRITICAL_SECTION(op);
    if (PyObject_GC_IsTracked(op))
        PyObject_GC_UnTrack(op);
    store_immortal(op);
    Py_END_CRITICAL_SECTION();
}

/* ---- collecting a graph ---------------------------------------------- */

/* Two passes: collect every reachable object (checking each type) into a
 * worklist holding strong references, then mark them all. A graph with an
 * unsupported object is rejected before anything has changed. */

typedef struct {
    PyObject *obj;
    Py_ssize_t parent; /* index of the container it was found in */
} node_t;

typedef struct {
    node_t *nodes;
    Py_ssize_t len;
    Py_ssize_t capacity;
    pxpy_ptrmap_t seen;
    int strict; /* eternalize(): reject unsupported types */
} walk_t;

/* Immutable values the compiler puts into co_consts. */
static int is_constant(PyObject *obj)
{
    return PyUnicode_CheckExact(obj) || PyBytes_CheckExact(obj) ||
           PyLong_CheckExact(obj) || PyFloat_CheckExact(obj) ||
           PyComplex_CheckExact(obj) || PyTuple_CheckExact(obj) ||
           PyFrozenSet_CheckExact(obj) || PySlice_Check(obj) ||
           PyCode_Check(obj);
}

/* functools.partial is told by its type's name: each interpreter's
 * _functools module has its own partial type. 0: not one; 1: a subclass;
 * 2: exactly functools.partial. */
static int partial_kind(PyObject *obj)
{
    PyObject *mro = Py_TYPE(obj)->tp_mro;
    Py_ssize_t n = mro != NULL ? PyTuple_GET_SIZE(mro) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (strcmp(base->tp_name, "functools.partial") == 0)
            return i == 0 ? 2 : 1;
    }
    return 0;
}

PyObject *pxpy_partial_func(PyObject *obj)
{
    if (PyFunction_Check(obj) || partial_kind(obj) == 0)
        return NULL;
    return PyObject_GetAttrString(obj, "func");
}

static int is_supported(PyObject *obj)
{
    return is_constant(obj) || PyList_CheckExact(obj) ||
           PyDict_CheckExact(obj) || PySet_CheckExact(obj) ||
           PyFunction_Check(obj) || partial_kind(obj) == 2;
}

static int walk_add(walk_t *w, PyObject *obj, Py_ssize_t parent)
{
    if (!w->strict) {
        /* immortalize_code(): only constants, and not again: an immortal
         * tuple or frozenset has immortal items (we mark a container's items
         * in the same pass, CPython only interns it when they are). A code
         * object may be immortal (3.13t immortalizes them once threads
         * start) with mortal constants, so it is always looked into. */
        if (!is_constant(obj) || (_Py_IsImmortal(obj) && !PyCode_Check(obj)))
            return 0;
    } else if (_Py_IsImmortal(obj) && !is_supported(obj)) {
        return 0; /* None, True, static types...: nothing to do */
    }
    int added = pxpy_ptrmap_put(&w->seen, obj, obj);
    if (added <= 0)
        return added;
    if (w->len == w->capacity) {
        Py_ssize_t capacity = w->capacity ? w->capacity * 2 : 64;
        node_t *grown = PyMem_RawRealloc(w->nodes, capacity * sizeof(*grown));
        if (grown == NULL)
            return -1;
        w->nodes = grown;
        w->capacity = capacity;
    }
    w->nodes[w->len].obj = Py_NewRef(obj);
    w->nodes[w->len].parent = parent;
    w->len++;
    return 0;
}

static void walk_release(walk_t *w)
{
    for (Py_ssize_t i = 0; i < w->len; i++)
        Py_DECREF(w->nodes[i].obj);
    PyMem_RawFree(w->nodes);
    pxpy_ptrmap_clear(&w->seen);
    *w = (walk_t){0};
}

static int add_items(walk_t *w, PyObject *const *items, Py_ssize_t n,
                     Py_ssize_t parent)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (walk_add(w, items[i], parent) < 0)
            return -1;
    }
    return 0;
}

/* Sets iterate through a snapshot: their table layout is not public. */
static int add_set_items(walk_t *w, PyObject *set, Py_ssize_t parent)
{
    PyObject *items = PySequence_Tuple(set);
    if (items == NULL)
        return -2;
    int rc = add_items(w, ((PyTupleObject *)items)->ob_item,
                       PyTuple_GET_SIZE(items), parent);
    Py_DECREF(items);
    return rc;
}

static int add_dict_items(walk_t *w, PyObject *dict, Py_ssize_t parent)
{
    int rc = 0;
    Py_BEGIN_CRITICAL_SECTION(dict);
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (rc == 0 && PyDict_Next(dict, &pos, &key, &value)) {
        if (walk_add(w, key, parent) < 0 || walk_add(w, value, parent) < 0)
            rc = -1;
    }
    Py_END_CRITICAL_SECTION();
    return rc;
}

static int add_list_items(walk_t *w, PyObject *list, Py_ssize_t parent)
{
    int rc = 0;
    Py_BEGIN_CRITICAL_SECTION(list);
    rc = add_items(w, ((PyListObject *)list)->ob_item, PyList_GET_SIZE(list),
                   parent);
    Py_END_CRITICAL_SECTION();
    return rc;
}

static int add_function_parts(walk_t *w, PyObject *func, Py_ssize_t parent)
{
    PyObject *defaults = PyFunction_GET_DEFAULTS(func);
    PyObject *kwdefaults = PyFunction_GET_KW_DEFAULTS(func);
    if (walk_add(w, PyFunction_GET_CODE(func), parent) < 0)
        return -1;
    if (defaults != NULL && walk_add(w, defaults, parent) < 0)
        return -1;
    if (kwdefaults == NULL)
        return 0;
    if (w->strict)
        return walk_add(w, kwdefaults, parent);
    /* immortalize_code(): the values, not the (mutable) dict. */
    return add_dict_items(w, kwdefaults, parent);
}

/* eternalize(): a partial's callable, its arguments and its keywords,
 * which every call passes on (and so counts references of). */
static int add_partial_parts(walk_t *w, PyObject *partial, Py_ssize_t parent)
{
    static const char *const parts[] = {"func", "args", "keywords"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        PyObject *part = PyObject_GetAttrString(partial, parts[i]);
        if (part == NULL)
            return -2;
        int rc = walk_add(w, part, parent);
        Py_DECREF(part); /* the walk holds its own reference */
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Adds the objects node i refers to. Returns 0, -1 when out of memory, -2
 * with an exception set. */
static int add_children(walk_t *w, Py_ssize_t i)
{
    PyObject *obj = w->nodes[i].obj;
    if (PyTuple_CheckExact(obj))
        return add_items(w, ((PyTupleObject *)obj)->ob_item,
                         PyTuple_GET_SIZE(obj), i);
    if (PyList_CheckExact(obj))
        return add_list_items(w, obj, i);
    if (PyDict_CheckExact(obj))
        return add_dict_items(w, obj, i);
    if (PyFrozenSet_CheckExact(obj) || PySet_CheckExact(obj))
        return add_set_items(w, obj, i);
    if (PySlice_Check(obj)) {
        PySliceObject *s = (PySliceObject *)obj;
        PyObject *parts[3] = {s->start, s->stop, s->step};
        return add_items(w, parts, 3, i);
    }
    if (PyCode_Check(obj))
        return walk_add(w, ((PyCodeObject *)obj)->co_consts, i);
    if (PyFunction_Check(obj))
        return add_function_parts(w, obj, i);
    if (w->strict && partial_kind(obj) == 2)
        return add_partial_parts(w, obj, i);
    return 0;
}

static void raise_unsupported(walk_t *w, Py_ssize_t i)
{
    /* Name the containers from the root down: " (found in dict > list)". */
    PyObject *path = PyUnicode_FromString("");
    for (Py_ssize_t p = w->nodes[i].parent, depth = 0;
         path != NULL && p >= 0 && depth < 8; p = w->nodes[p].parent, depth++) {
        PyObject *longer =
            PyUnicode_FromFormat("%s%s%U", Py_TYPE(w->nodes[p].obj)->tp_name,
                                 PyUnicode_GET_LENGTH(path) ? " > " : "", path);
        Py_SETREF(path, longer);
    }
    if (path == NULL)
        return;
    if (PyUnicode_GET_LENGTH(path) > 0)
        Py_SETREF(path, PyUnicode_FromFormat(" (found in %U)", path));
    if (path == NULL)
        return;
    PyErr_Format(PyExc_TypeError,
                 "eternalize(): cannot make an object of type '%T' "
                 "immortal%U; supported: dict, list, tuple, set, frozenset, "
                 "str, bytes, int, float, complex, slice, functions, "
                 "functools.partial, code objects (exact types, not "
                 "subclasses), and objects that are already immortal such "
                 "as None and True",
                 w->nodes[i].obj, path);
    Py_DECREF(path);
}

/* Collects everything reachable from the nodes already added. Returns 0 or
 * -1 with an exception set. */
static int walk_collect(walk_t *w)
{
    for (Py_ssize_t i = 0; i < w->len; i++) {
        if (w->strict && !is_supported(w->nodes[i].obj)) {
            raise_unsupported(w, i);
            return -1;
        }
        int rc = add_children(w, i);
        if (rc == -1) {
            PyErr_NoMemory();
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static void walk_mark(walk_t *w)
{
    for (Py_ssize_t i = 0; i < w->len; i++) {
        PyObject *obj = w->nodes[i].obj;
        /* immortalize_code() leaves code objects mortal: they are not
         * reference-counted per instruction, and code built at run time
         * (exec) must stay collectable. */
        if (w->strict || !PyCode_Check(obj))
            set_immortal(obj);
    }
}

/* ---- what callables the runtime runs reach ----------------------------- */

static int add_callable(walk_t *w, PyObject *callable);

/* A class: the functions, static and class methods of every class in its
 * MRO that Python code defined. */
static int add_class(walk_t *w, PyTypeObject *type)
{
    PyObject *mro = type->tp_mro;
    if (mro == NULL)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE))
            continue;
        PyObject *dict = PyType_GetDict(base);
        PyObject *values = dict != NULL ? PyDict_Values(dict) : NULL;
        Py_XDECREF(dict);
        if (values == NULL)
            return -2;
        int rc = 0;
        for (Py_ssize_t j = 0; rc == 0 && j < PyList_GET_SIZE(values); j++) {
            PyObject *v = PyList_GET_ITEM(values, j);
            if (PyFunction_Check(v) || Py_IS_TYPE(v, &PyStaticMethod_Type) ||
                Py_IS_TYPE(v, &PyClassMethod_Type))
                rc = add_callable(w, v);
        }
        Py_DECREF(values);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Returns 0, -1 when out of memory, -2 with an exception set. */
static int add_callable(walk_t *w, PyObject *callable)
{
    if (PyFunction_Check(callable))
        return add_function_parts(w, callable, -1);
    if (PyCode_Check(callable))
        return walk_add(w, callable, -1);
    if (PyMethod_Check(callable))
        return add_callable(w, PyMethod_GET_FUNCTION(callable));
    if (PyType_Check(callable))
        return add_class(w, (PyTypeObject *)callable);
    /* A partial runs the callable it wraps. Its arguments are left alone:
     * they are often made per call (submit_work(partial(f, request))), and
     * immortal objects are never freed. eternalize() takes them too. */
    PyObject *wrapped = pxpy_partial_func(callable);
    if (wrapped != NULL) {
        int rc = add_callable(w, wrapped);
        Py_DECREF(wrapped);
        return rc;
    }
    if (PyErr_Occurred())
        return -2;
    if (Py_IS_TYPE(callable, &PyStaticMethod_Type) ||
        Py_IS_TYPE(callable, &PyClassMethod_Type)) {
        PyObject *func = PyObject_GetAttrString(callable, "__func__");
        if (func == NULL)
            return -2;
        int rc = add_callable(w, func);
        Py_DECREF(func);
        return rc;
    }
    /* A callable instance runs its class's __call__. */
    if (Py_TYPE(callable)->tp_flags & Py_TPFLAGS_HEAPTYPE)
        return add_class(w, Py_TYPE(callable));
    return 0;
}

int pxpy_immortalize_code(PyObject *callable)
{
    walk_t w = {0};
    int rc = add_callable(&w, callable);
    if (rc == -1)
        PyErr_NoMemory();
    if (rc == 0)
        rc = walk_collect(&w);
    if (rc == 0)
        walk_mark(&w);
    walk_release(&w);
    return rc < 0 ? -1 : 0;
}

/* ---- module functions ------------------------------------------------ */

/* Whether the top level of a module runs on this thread now (an import,
 * which every interpreter runs for itself): some frame of the calling
 * thread is a module's code. */
static bool importing(void)
{
    PyFrameObject *frame = PyEval_GetFrame();
    Py_XINCREF(frame);
    bool found = false;
    while (frame != NULL && !found) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        found =
            PyUnicode_CompareWithASCIIString(code->co_name, "<module>") == 0;
        Py_DECREF(code);
        Py_SETREF(frame, PyFrame_GetBack(frame));
    }
    Py_XDECREF(frame);
    return found;
}

/* In a worker's interpreter (mode "interpreters"), eternalize() of
 * something a module builds as it is imported is what every interpreter
 * does for its own copy of that module (pyparallel.http's constants, a
 * table the main script builds at its top level): each gets the same
 * read-only data. Called from a work item or a callback, it would make
 * immortal an object that no other interpreter will ever see, while the
 * caller may believe it shared: that raises. */
static PyObject *eternalize_here(PyObject *Py_UNUSED(module), PyObject *obj)
{
    walk_t w = {.strict = 1};
    int rc = walk_add(&w, obj, -1);
    if (rc < 0)
        PyErr_NoMemory();
    else
        rc = walk_collect(&w);
    if (rc == 0)
        walk_mark(&w);
    walk_release(&w);
    return rc < 0 ? NULL : Py_NewRef(obj);
}

static PyObject *eternalize(PyObject *module, PyObject *obj)
{
    pxpy_state *st = pxpy_get_state(module);
    if (pxpy_in_worker_interp(st) && !importing())
        return pxpy_only_this_interp(st, "eternalize", obj);
    return eternalize_here(module, obj);
}

static PyObject *immortalize_code(PyObject *Py_UNUSED(module),
                                  PyObject *callable)
{
    if (pxpy_immortalize_code(callable) < 0)
        return NULL;
    return Py_NewRef(callable);
}

static PyObject *is_immortal(PyObject *Py_UNUSED(module), PyObject *obj)
{
    return PyBool_FromLong(_Py_IsImmortal(obj));
}

PyDoc_STRVAR(
    eternalize_doc,
    "eternalize(obj) -> obj\n\n"
    "Make obj and everything it contains immortal, so that every core reads\n"
    "it without reference-count traffic. Supported (exact types): dict, list,\n"
    "tuple, set, frozenset, str, bytes, int, float, complex, slice, functions\n"
    "(their code constants and defaults), functools.partial (its func, args\n"
    "and keywords) and code objects, plus anything already immortal (None,\n"
    "True, ...); anything else raises TypeError and leaves the graph\n"
    "unchanged.\n\n"
    "An eternalized graph is never freed and must be treated as read-only:\n"
    "mutating it is memory-safe but leaks. Call it from the thread that built\n"
    "the graph, before sharing it. In a worker's interpreter (mode\n"
    "'interpreters') only a module's top level may call it (each\n"
    "interpreter imports its own copy); elsewhere there it raises\n"
    "AsyncError, since no other interpreter would see obj.");
PyDoc_STRVAR(
    immortalize_code_doc,
    "immortalize_code(callable) -> callable\n\n"
    "Make the constants of the code a function, method, code object, class\n"
    "or functools.partial (the callable it wraps) runs immortal (recursively\n"
    "through nested code), so that threads running it in parallel don't\n"
    "contend on their reference counts. The runtime does this for the\n"
    "functions it runs on workers.");
PyDoc_STRVAR(is_immortal_doc,
             "is_immortal(obj) -> bool\n\n"
             "Whether CPython skips reference counting for obj.");

static PyMethodDef eternal_functions[] = {
    {"eternalize", eternalize, METH_O, eternalize_doc},
    {"_eternalize_here", eternalize_here, METH_O,
     "_eternalize_here(obj, /)\n--\n\neternalize() of data that each "
     "interpreter builds for itself (the package's own tables, such as an "
     "HttpServer class's routes, made again in every worker interpreter "
     "that rebuilds the class): never refused in a worker interpreter."},
    {"immortalize_code", immortalize_code, METH_O, immortalize_code_doc},
    {"is_immortal", is_immortal, METH_O, is_immortal_doc},
    {NULL, NULL, 0, NULL},
};

int pxpy_eternal_exec(PyObject *module, pxpy_state *Py_UNUSED(st))
{
    return PyModule_AddFunctions(module, eternal_functions);
}
