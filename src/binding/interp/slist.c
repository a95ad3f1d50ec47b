/*
 * slist.c - pyparallel.SharedList, px.list in mode "interpreters": one list
 * that the main interpreter and every worker see (scont.c says how such
 * containers live and cross).
 *
 * An array of cross-interpreter data (plain values) behind the container's
 * RWLock: mutations take the write lock, reads the read lock, as px.list
 * does in the other modes. What needs Python's == or < on the items
 * (index, count, in, remove, sort, comparisons) works on a snapshot decoded
 * after the read lock is released; remove() and sort() then apply what they
 * found under the write lock if no mutation came in between (the list's
 * version says so), and start again otherwise, so they act on one state of
 * the list as a locked list's methods do. Iteration and repr take a
 * snapshot too.
 */
#include "interp/interp_internal.h"

typedef struct {
    pxpy_scont_t head;
    pxpy_xi_t **items;
    Py_ssize_t len, cap;
    uint64_t version; /* counts mutations */
} slist_t;

#define SLIST(op) ((slist_t *)((pxpy_scont_object_t *)(op))->c)

static pxpy_state *state_of(PyObject *self)
{
    return pxpy_state_from_type(Py_TYPE(self));
}

static void slist_clear_items(pxpy_scont_t *c)
{
    slist_t *l = (slist_t *)c;
    pxpy_scont_free_all(l->items, l->len);
    l->items = NULL;
    l->len = l->cap = 0;
}

/* Room for n items (write lock held). 0, or -1 with MemoryError. */
static int reserve(slist_t *l, Py_ssize_t n)
{
    if (n <= l->cap)
        return 0;
    Py_ssize_t cap = l->cap < 8 ? 8 : l->cap;
    while (cap < n)
        cap *= 2;
    pxpy_xi_t **grown =
        PyMem_RawRealloc(l->items, (size_t)cap * sizeof(*grown));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    l->items = grown;
    l->cap = cap;
    return 0;
}

/* Encodes every item of iterable (an array the caller frees with
 * pxpy_scont_free_all). 0, or -1 with an exception. */
static int encode_all(pxpy_state *st, PyObject *iterable, pxpy_xi_t ***out,
                      Py_ssize_t *n)
{
    *out = NULL;
    *n = 0;
    PyObject *seq = PySequence_List(iterable);
    if (seq == NULL)
        return -1;
    Py_ssize_t count = PyList_GET_SIZE(seq);
    pxpy_xi_t **xis =
        PyMem_RawCalloc((size_t)(count ? count : 1), sizeof(*xis));
    int rc = xis == NULL ? -1 : 0;
    if (rc < 0)
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; rc == 0 && i < count; i++) {
        xis[i] =
            pxpy_xi_encode_value(st, PyList_GET_ITEM(seq, i), "px.list item");
        if (xis[i] == NULL)
            rc = -1;
    }
    Py_DECREF(seq);
    if (rc < 0) {
        if (xis != NULL)
            pxpy_scont_free_all(xis, count);
        return -1;
    }
    *out = xis;
    *n = count;
    return 0;
}

/* Copies of items [start, start + step * count) by step, taken under the
 * read lock, with the version they belong to. */
static int copy_range(slist_t *l, PyObject *slice, pxpy_xi_t ***out,
                      Py_ssize_t *n, uint64_t *version)
{
    Py_ssize_t start = 0, stop = PY_SSIZE_T_MAX, step = 1;
    if (slice != NULL && PySlice_Unpack(slice, &start, &stop, &step) < 0)
        return -1;
    if (pxpy_scont_lock(&l->head, 0) < 0)
        return -1;
    Py_ssize_t count = PySlice_AdjustIndices(l->len, &start, &stop, step);
    pxpy_xi_t **xis =
        PyMem_RawCalloc((size_t)(count ? count : 1), sizeof(*xis));
    Py_ssize_t got = 0;
    for (Py_ssize_t i = start; xis != NULL && got < count; i += step) {
        xis[got] = pxpy_xi_dup(l->items[i]);
        if (xis[got++] == NULL)
            break;
    }
    if (version != NULL)
        *version = l->version;
    pxpy_scont_unlock(&l->head, 0);
    if (xis == NULL || (got > 0 && xis[got - 1] == NULL)) {
        if (xis != NULL)
            pxpy_scont_free_all(xis, got);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    *out = xis;
    *n = count;
    return 0;
}

/* A plain list of the items now (and the version it shows). */
static PyObject *snapshot(PyObject *self, uint64_t *version)
{
    pxpy_xi_t **xis;
    Py_ssize_t n;
    if (copy_range(SLIST(self), NULL, &xis, &n, version) < 0)
        return NULL;
    return pxpy_scont_decode_all(state_of(self), xis, n);
}

/* A plain list for a SharedList or a list (new reference); NULL without
 * an exception for anything else. */
static PyObject *as_list(pxpy_state *st, PyObject *obj)
{
    if (Py_IS_TYPE(obj, st->slist_type))
        return snapshot(obj, NULL);
    if (PyList_Check(obj))
        return Py_NewRef(obj);
    return NULL;
}

/* A new SharedList of this interpreter holding the items of a list. */
static PyObject *new_from(PyTypeObject *type, PyObject *items);

/* An item's index, with list's errors. */
static int index_of(PyObject *key, Py_ssize_t *i)
{
    *i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (*i != -1 || !PyErr_Occurred())
        return 0;
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "list indices must be integers or slices, not %.200s",
                     Py_TYPE(key)->tp_name);
    }
    return -1;
}

/* ---- reading ------------------------------------------------------------ */

static Py_ssize_t slist_length(PyObject *self)
{
    slist_t *l = SLIST(self);
    if (pxpy_scont_lock(&l->head, 0) < 0)
        return -1;
    Py_ssize_t n = l->len;
    pxpy_scont_unlock(&l->head, 0);
    return n;
}

static PyObject *slist_subscript(PyObject *self, PyObject *key)
{
    pxpy_state *st = state_of(self);
    slist_t *l = SLIST(self);
    if (PySlice_Check(key)) {
        pxpy_xi_t **xis;
        Py_ssize_t n;
        if (copy_range(l, key, &xis, &n, NULL) < 0)
            return NULL;
        return pxpy_scont_decode_all(st, xis, n);
    }
    Py_ssize_t i;
    if (index_of(key, &i) < 0)
        return NULL;
    if (pxpy_scont_lock(&l->head, 0) < 0)
        return NULL;
    if (i < 0)
        i += l->len;
    pxpy_xi_t *v = NULL;
    bool in_range = i >= 0 && i < l->len;
    if (in_range)
        v = pxpy_xi_dup(l->items[i]);
    pxpy_scont_unlock(&l->head, 0);
    if (!in_range) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return NULL;
    }
    if (v == NULL)
        return NULL;
    PyObject *r = pxpy_xi_decode(st, v);
    pxpy_xi_free(v);
    return r;
}

static PyObject *slist_iter(PyObject *self)
{
    return pxpy_scont_apply(snapshot(self, NULL), PyObject_GetIter);
}

static PyObject *slist_reversed(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return pxpy_scont_apply(snapshot(self, NULL), pxpy_scont_reversed_iter);
}

static PyObject *slist_repr(PyObject *self)
{
    return pxpy_scont_apply(snapshot(self, NULL), PyObject_Repr);
}

static PyObject *slist_richcompare(PyObject *self, PyObject *other, int op)
{
    PyObject *b = as_list(state_of(self), other);
    if (b == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *a = snapshot(self, NULL);
    PyObject *r = a != NULL ? PyObject_RichCompare(a, b, op) : NULL;
    Py_XDECREF(a);
    Py_DECREF(b);
    return r;
}

static int slist_contains(PyObject *self, PyObject *value)
{
    PyObject *items = snapshot(self, NULL);
    if (items == NULL)
        return -1;
    int rc = PySequence_Contains(items, value);
    Py_DECREF(items);
    return rc;
}

/* index() and count(): list's own, on a snapshot. */
static PyObject *on_snapshot(PyObject *self, const char *name,
                             PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *items = snapshot(self, NULL);
    if (items == NULL)
        return NULL;
    PyObject *method = PyObject_GetAttrString(items, name);
    PyObject *r =
        method ? PyObject_Vectorcall(method, args, (size_t)nargs, NULL) : NULL;
    Py_XDECREF(method);
    Py_DECREF(items);
    return r;
}

static PyObject *slist_index(PyObject *self, PyObject *const *args,
                             Py_ssize_t nargs)
{
    return on_snapshot(self, "index", args, nargs);
}

static PyObject *slist_count(PyObject *self, PyObject *value)
{
    return on_snapshot(self, "count", &value, 1);
}

/* ---- writing ------------------------------------------------------------ */

/* Inserts n encoded items at i (clamped as list.insert does), taking
 * them; on error they are freed. */
static int insert_all(slist_t *l, Py_ssize_t i, pxpy_xi_t **xis, Py_ssize_t n,
                      bool at_end)
{
    if (pxpy_scont_lock(&l->head, 1) < 0) {
        pxpy_scont_free_all(xis, n);
        return -1;
    }
    int rc = reserve(l, l->len + n);
    if (rc == 0) {
        if (at_end)
            i = l->len;
        else if (i < 0)
            i = i + l->len < 0 ? 0 : i + l->len;
        else if (i > l->len)
            i = l->len;
        /* An empty list may have no array at all: nothing to move. */
        if (n > 0) {
            memmove(&l->items[i + n], &l->items[i],
                    (size_t)(l->len - i) * sizeof(*l->items));
            memcpy(&l->items[i], xis, (size_t)n * sizeof(*xis));
        }
        l->len += n;
        l->version++;
    }
    pxpy_scont_unlock(&l->head, 1);
    if (rc < 0)
        pxpy_scont_free_all(xis, n);
    else
        PyMem_RawFree(xis);
    return rc;
}

static PyObject *insert_one(PyObject *self, Py_ssize_t i, PyObject *value,
                            bool at_end)
{
    pxpy_xi_t **xis = PyMem_RawMalloc(sizeof(*xis));
    if (xis == NULL)
        return PyErr_NoMemory();
    xis[0] = pxpy_xi_encode_value(state_of(self), value, "px.list item");
    if (xis[0] == NULL) {
        PyMem_RawFree(xis);
        return NULL;
    }
    if (insert_all(SLIST(self), i, xis, 1, at_end) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *slist_append(PyObject *self, PyObject *value)
{
    return insert_one(self, 0, value, true);
}

static PyObject *slist_insert(PyObject *self, PyObject *const *args,
                              Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "insert expected 2 arguments, got %zd",
                     nargs);
        return NULL;
    }
    Py_ssize_t i = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    return insert_one(self, i, args[1], false);
}

static int extend(PyObject *self, PyObject *iterable)
{
    pxpy_xi_t **xis;
    Py_ssize_t n;
    if (encode_all(state_of(self), iterable, &xis, &n) < 0)
        return -1;
    return insert_all(SLIST(self), 0, xis, n, true);
}

static PyObject *slist_extend(PyObject *self, PyObject *iterable)
{
    if (extend(self, iterable) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *slist_iadd(PyObject *self, PyObject *other)
{
    if (extend(self, other) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *slist_pop(PyObject *self, PyObject *const *args,
                           Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "pop expected at most 1 argument, got %zd", nargs);
        return NULL;
    }
    Py_ssize_t i = -1;
    if (nargs == 1) {
        i = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
    }
    slist_t *l = SLIST(self);
    if (pxpy_scont_lock(&l->head, 1) < 0)
        return NULL;
    Py_ssize_t len = l->len;
    if (i < 0)
        i += len;
    pxpy_xi_t *v = NULL;
    if (i >= 0 && i < len) {
        v = l->items[i];
        memmove(&l->items[i], &l->items[i + 1],
                (size_t)(len - i - 1) * sizeof(*l->items));
        l->len--;
        l->version++;
    }
    pxpy_scont_unlock(&l->head, 1);
    if (v == NULL) {
        PyErr_SetString(PyExc_IndexError, len == 0 ? "pop from empty list"
                                                   : "pop index out of range");
        return NULL;
    }
    PyObject *r = pxpy_xi_decode(state_of(self), v);
    pxpy_xi_free(v);
    return r;
}

/* Deletes the items a slice (already unpacked) selects, or item i when
 * step is 0; returns them (the caller frees them) in *removed. */
static int delete_range(slist_t *l, Py_ssize_t start, Py_ssize_t stop,
                        Py_ssize_t step, pxpy_xi_t ***removed, Py_ssize_t *n)
{
    Py_ssize_t count = PySlice_AdjustIndices(l->len, &start, &stop, step);
    if (step < 0 && count > 0) {
        /* The same items, walked upwards. */
        start += (count - 1) * step;
        step = -step;
    }
    pxpy_xi_t **out =
        PyMem_RawMalloc((size_t)(count ? count : 1) * sizeof(*out));
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Keep what the slice does not select, in order. */
    Py_ssize_t kept = 0, taken = 0, next = count ? start : -1;
    for (Py_ssize_t i = 0; i < l->len; i++) {
        if (i == next && taken < count) {
            out[taken++] = l->items[i];
            next = taken < count ? start + taken * step : -1;
            continue;
        }
        l->items[kept++] = l->items[i];
    }
    l->len = kept;
    l->version++;
    *removed = out;
    *n = taken;
    return 0;
}

static int ass_item(PyObject *self, Py_ssize_t i, PyObject *value)
{
    slist_t *l = SLIST(self);
    pxpy_xi_t *v = NULL;
    if (value != NULL) {
        v = pxpy_xi_encode_value(state_of(self), value, "px.list item");
        if (v == NULL)
            return -1;
    }
    if (pxpy_scont_lock(&l->head, 1) < 0) {
        pxpy_xi_free(v);
        return -1;
    }
    if (i < 0)
        i += l->len;
    pxpy_xi_t *old = NULL;
    bool in_range = i >= 0 && i < l->len;
    if (in_range) {
        old = l->items[i];
        if (v != NULL) {
            l->items[i] = v;
        } else {
            memmove(&l->items[i], &l->items[i + 1],
                    (size_t)(l->len - i - 1) * sizeof(*l->items));
            l->len--;
        }
        l->version++;
    }
    pxpy_scont_unlock(&l->head, 1);
    pxpy_xi_free(old);
    if (!in_range) {
        pxpy_xi_free(v);
        PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
        return -1;
    }
    return 0;
}

static int ass_slice(PyObject *self, PyObject *slice, PyObject *value)
{
    slist_t *l = SLIST(self);
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(slice, &start, &stop, &step) < 0)
        return -1;
    pxpy_xi_t **xis = NULL;
    Py_ssize_t n = 0;
    if (value != NULL) {
        if (encode_all(state_of(self), value, &xis, &n) < 0)
            return -1;
    }
    if (pxpy_scont_lock(&l->head, 1) < 0) {
        if (xis != NULL)
            pxpy_scont_free_all(xis, n);
        return -1;
    }
    pxpy_xi_t **removed = NULL;
    Py_ssize_t nremoved = 0;
    int rc = 0;
    if (value == NULL) {
        rc = delete_range(l, start, stop, step, &removed, &nremoved);
    } else {
        Py_ssize_t a = start, b = stop;
        Py_ssize_t count = PySlice_AdjustIndices(l->len, &a, &b, step);
        if (step == 1) {
            if (b < a)
                b = a;
            rc = reserve(l, l->len - (b - a) + n);
            removed =
                rc == 0
                    ? PyMem_RawMalloc((size_t)(b - a + 1) * sizeof(*removed))
                    : NULL;
            if (rc == 0 && removed == NULL) {
                PyErr_NoMemory();
                rc = -1;
            }
            if (rc == 0 && l->items != NULL) {
                /* (No array: the list is empty and stays so.) */
                nremoved = b - a;
                memcpy(removed, &l->items[a],
                       (size_t)nremoved * sizeof(*removed));
                memmove(&l->items[a + n], &l->items[b],
                        (size_t)(l->len - b) * sizeof(*l->items));
                memcpy(&l->items[a], xis, (size_t)n * sizeof(*xis));
                l->len += n - nremoved;
                l->version++;
                PyMem_RawFree(xis);
                xis = NULL;
            }
        } else if (count != n) {
            PyErr_Format(PyExc_ValueError,
                         "attempt to assign sequence of size %zd to extended "
                         "slice of size %zd",
                         n, count);
            rc = -1;
        } else {
            /* Swap in place: the old items end up in xis, to be freed. */
            for (Py_ssize_t k = 0, i = a; k < count; k++, i += step) {
                pxpy_xi_t *old = l->items[i];
                l->items[i] = xis[k];
                xis[k] = old;
            }
            l->version++;
        }
    }
    pxpy_scont_unlock(&l->head, 1);
    if (xis != NULL)
        pxpy_scont_free_all(xis, n);
    if (removed != NULL)
        pxpy_scont_free_all(removed, nremoved);
    return rc;
}

static int slist_ass_subscript(PyObject *self, PyObject *key, PyObject *value)
{
    if (PySlice_Check(key))
        return ass_slice(self, key, value);
    Py_ssize_t i;
    if (index_of(key, &i) < 0)
        return -1;
    return ass_item(self, i, value);
}

static PyObject *slist_clear(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    slist_t *l = SLIST(self);
    if (pxpy_scont_lock(&l->head, 1) < 0)
        return NULL;
    pxpy_xi_t **items = l->items;
    Py_ssize_t n = l->len;
    l->items = NULL;
    l->len = l->cap = 0;
    l->version++;
    pxpy_scont_unlock(&l->head, 1);
    if (items != NULL)
        pxpy_scont_free_all(items, n);
    Py_RETURN_NONE;
}

static PyObject *slist_reverse(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    slist_t *l = SLIST(self);
    if (pxpy_scont_lock(&l->head, 1) < 0)
        return NULL;
    for (Py_ssize_t i = 0, j = l->len - 1; i < j; i++, j--) {
        pxpy_xi_t *t = l->items[i];
        l->items[i] = l->items[j];
        l->items[j] = t;
    }
    l->version++;
    pxpy_scont_unlock(&l->head, 1);
    Py_RETURN_NONE;
}

static PyObject *slist_remove(PyObject *self, PyObject *value)
{
    slist_t *l = SLIST(self);
    for (;;) {
        uint64_t version;
        PyObject *items = snapshot(self, &version);
        if (items == NULL)
            return NULL;
        Py_ssize_t i = PySequence_Index(items, value);
        Py_DECREF(items);
        if (i < 0) {
            if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError,
                                "list.remove(x): x not in list");
            }
            return NULL;
        }
        if (pxpy_scont_lock(&l->head, 1) < 0)
            return NULL;
        pxpy_xi_t *old = NULL;
        if (l->version == version) {
            old = l->items[i];
            memmove(&l->items[i], &l->items[i + 1],
                    (size_t)(l->len - i - 1) * sizeof(*l->items));
            l->len--;
            l->version++;
        }
        pxpy_scont_unlock(&l->head, 1);
        if (old != NULL) {
            pxpy_xi_free(old);
            Py_RETURN_NONE;
        }
        /* The list changed meanwhile: look again. */
    }
}

/* sort(*, key=None, reverse=False): the order is found on a snapshot (as
 * a permutation, with list.sort's stability), then applied to the items
 * under the write lock if the list did not change meanwhile. */
static PyObject *slist_sort(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"key", "reverse", NULL};
    PyObject *keyfunc = Py_None;
    int reverse = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$Op:sort", kwlist,
                                     &keyfunc, &reverse))
        return NULL;
    slist_t *l = SLIST(self);
    for (;;) {
        uint64_t version;
        PyObject *items = snapshot(self, &version);
        if (items == NULL)
            return NULL;
        Py_ssize_t n = PyList_GET_SIZE(items);
        PyObject *keys = items;
        if (keyfunc != Py_None) {
            keys = PyList_New(n);
            for (Py_ssize_t i = 0; keys != NULL && i < n; i++) {
                PyObject *k =
                    PyObject_CallOneArg(keyfunc, PyList_GET_ITEM(items, i));
                if (k == NULL)
                    Py_CLEAR(keys);
                else
                    PyList_SET_ITEM(keys, i, k);
            }
            Py_DECREF(items);
            if (keys == NULL)
                return NULL;
        }
        /* perm.sort(key=keys.__getitem__, reverse=reverse) */
        PyObject *perm = PyList_New(n);
        for (Py_ssize_t i = 0; perm != NULL && i < n; i++) {
            PyObject *ix = PyLong_FromSsize_t(i);
            if (ix == NULL)
                Py_CLEAR(perm);
            else
                PyList_SET_ITEM(perm, i, ix);
        }
        PyObject *getitem =
            perm ? PyObject_GetAttrString(keys, "__getitem__") : NULL;
        PyObject *r = NULL;
        if (getitem != NULL) {
            PyObject *sort = PyObject_GetAttrString(perm, "sort");
            PyObject *kw =
                sort ? Py_BuildValue("{s:O,s:O}", "key", getitem, "reverse",
                                     reverse ? Py_True : Py_False)
                     : NULL;
            PyObject *empty = kw ? PyTuple_New(0) : NULL;
            r = empty ? PyObject_Call(sort, empty, kw) : NULL;
            Py_XDECREF(empty);
            Py_XDECREF(kw);
            Py_XDECREF(sort);
            Py_DECREF(getitem);
        }
        Py_DECREF(keys);
        if (r == NULL) {
            Py_XDECREF(perm);
            return NULL;
        }
        Py_DECREF(r);
        pxpy_xi_t **sorted =
            PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(*sorted));
        if (sorted == NULL) {
            Py_DECREF(perm);
            return PyErr_NoMemory();
        }
        if (pxpy_scont_lock(&l->head, 1) < 0) {
            PyMem_RawFree(sorted);
            Py_DECREF(perm);
            return NULL;
        }
        bool applied = l->version == version;
        if (applied && n > 0) {
            for (Py_ssize_t i = 0; i < n; i++)
                sorted[i] =
                    l->items[PyLong_AsSsize_t(PyList_GET_ITEM(perm, i))];
            memcpy(l->items, sorted, (size_t)n * sizeof(*sorted));
        }
        if (applied)
            l->version++;
        pxpy_scont_unlock(&l->head, 1);
        PyMem_RawFree(sorted);
        Py_DECREF(perm);
        if (applied)
            Py_RETURN_NONE;
    }
}

static PyObject *slist_imul(PyObject *self, Py_ssize_t count)
{
    slist_t *l = SLIST(self);
    if (pxpy_scont_lock(&l->head, 1) < 0)
        return NULL;
    Py_ssize_t n = l->len;
    pxpy_xi_t **removed = NULL;
    int rc = 0;
    if (count <= 0) {
        removed = l->items;
        l->items = NULL;
        l->len = l->cap = 0;
    } else if (count > 1 && n > 0) {
        if (n > PY_SSIZE_T_MAX / count) {
            PyErr_NoMemory();
            rc = -1;
        } else {
            rc = reserve(l, n * count);
        }
        for (Py_ssize_t i = n; rc == 0 && i < n * count; i++) {
            l->items[i] = pxpy_xi_dup(l->items[i - n]);
            if (l->items[i] == NULL)
                rc = -1;
            else
                l->len = i + 1;
        }
    }
    l->version++;
    pxpy_scont_unlock(&l->head, 1);
    if (removed != NULL)
        pxpy_scont_free_all(removed, n);
    return rc < 0 ? NULL : Py_NewRef(self);
}

/* ---- new lists ---------------------------------------------------------- */

static slist_t *slist_alloc(void)
{
    return pxpy_scont_alloc(sizeof(slist_t), PXPY_SCONT_LIST, true,
                            slist_clear_items);
}

static PyObject *new_from(PyTypeObject *type, PyObject *items)
{
    slist_t *l = slist_alloc();
    if (l == NULL)
        return NULL;
    PyObject *self = pxpy_scont_new_object(type, &l->head);
    if (self != NULL && items != NULL && extend(self, items) < 0)
        Py_CLEAR(self);
    return self;
}

static PyObject *slist_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *iterable = NULL;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) ||
        !PyArg_UnpackTuple(args, "SharedList", 0, 1, &iterable)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError,
                            "SharedList() takes no keyword arguments");
        return NULL;
    }
    return new_from(type, iterable);
}

static PyObject *slist_copy(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    slist_t *l = SLIST(self);
    pxpy_xi_t **xis;
    Py_ssize_t n;
    if (copy_range(l, NULL, &xis, &n, NULL) < 0)
        return NULL;
    PyObject *copy = new_from(Py_TYPE(self), NULL);
    if (copy == NULL) {
        pxpy_scont_free_all(xis, n);
        return NULL;
    }
    if (insert_all(SLIST(copy), 0, xis, n, true) < 0)
        Py_CLEAR(copy);
    return copy;
}

static PyObject *slist_deepcopy(PyObject *self, PyObject *Py_UNUSED(memo))
{
    /* Its items are immutable (SharedBuffers are shared, never copied). */
    return slist_copy(self, NULL);
}

static PyObject *slist_add(PyObject *a, PyObject *b)
{
    /* a is a SharedList: sq_concat is only called for the left operand. */
    pxpy_state *st = state_of(a);
    PyObject *other = as_list(st, b);
    if (other == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError,
                         "can only concatenate list (not \"%.200s\") to list",
                         Py_TYPE(b)->tp_name);
        return NULL;
    }
    PyObject *mine = snapshot(a, NULL);
    PyObject *both = mine ? PySequence_Concat(mine, other) : NULL;
    PyObject *r = both ? new_from(Py_TYPE(a), both) : NULL;
    Py_XDECREF(both);
    Py_XDECREF(mine);
    Py_DECREF(other);
    return r;
}

static PyObject *slist_repeat(PyObject *self, Py_ssize_t count)
{
    PyObject *mine = snapshot(self, NULL);
    PyObject *all = mine ? PySequence_Repeat(mine, count) : NULL;
    PyObject *r = all ? new_from(Py_TYPE(self), all) : NULL;
    Py_XDECREF(all);
    Py_XDECREF(mine);
    return r;
}

/* ---- the type ----------------------------------------------------------- */

static PyMethodDef slist_methods[] = {
    {"append", slist_append, METH_O,
     "append(object, /)\n--\n\nAdd object at the end."},
    {"insert", (PyCFunction)(void (*)(void))slist_insert, METH_FASTCALL,
     "insert(index, object, /)\n--\n\nInsert object before index."},
    {"extend", slist_extend, METH_O,
     "extend(iterable, /)\n--\n\nAdd every item of iterable at the end, in "
     "one write lock."},
    {"pop", (PyCFunction)(void (*)(void))slist_pop, METH_FASTCALL,
     "pop(index=-1, /)\n--\n\nRemove and return the item at index."},
    {"remove", slist_remove, METH_O,
     "remove(value, /)\n--\n\nRemove the first item equal to value."},
    {"index", (PyCFunction)(void (*)(void))slist_index, METH_FASTCALL,
     "index(value, start=0, stop=sys.maxsize, /)\n--\n\nThe index of the "
     "first item equal to value."},
    {"count", slist_count, METH_O,
     "count(value, /)\n--\n\nHow many items equal value."},
    {"clear", slist_clear, METH_NOARGS, "clear()\n--\n\nRemove every item."},
    {"reverse", slist_reverse, METH_NOARGS,
     "reverse()\n--\n\nReverse the items in place."},
    {"sort", (PyCFunction)(void (*)(void))slist_sort,
     METH_VARARGS | METH_KEYWORDS,
     "sort(*, key=None, reverse=False)\n--\n\nSort the items in place "
     "(stable)."},
    {"copy", slist_copy, METH_NOARGS,
     "copy()\n--\n\nA new shared list with the same items."},
    {"__copy__", slist_copy, METH_NOARGS, NULL},
    {"__deepcopy__", slist_deepcopy, METH_O, NULL},
    {"__reversed__", slist_reversed, METH_NOARGS, NULL},
    {"__reduce__", pxpy_scont_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef slist_getset[] = {
    {"__px_rwlock__", pxpy_scont_get_rwlock, NULL,
     "The lock px.read_lock()/px.write_lock() take, shared by every "
     "interpreter.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot slist_slots[] = {
    {Py_tp_doc, "SharedList(iterable=(), /)\n--\n\n"
                "px.list in mode 'interpreters': one list that the main "
                "interpreter and every worker see, holding values that can "
                "cross interpreters (None, bool, int, float, str, bytes, "
                "tuples of these, SharedBuffer). Reads give copies; "
                "px.read_lock()/px.write_lock() work on it."},
    {Py_tp_new, slist_new},
    {Py_tp_dealloc, pxpy_scont_dealloc},
    {Py_tp_traverse, pxpy_scont_traverse},
    {Py_tp_repr, slist_repr},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_richcompare, slist_richcompare},
    {Py_tp_iter, slist_iter},
    {Py_tp_methods, slist_methods},
    {Py_tp_getset, slist_getset},
    {Py_mp_length, slist_length},
    {Py_mp_subscript, slist_subscript},
    {Py_mp_ass_subscript, slist_ass_subscript},
    {Py_sq_length, slist_length},
    {Py_sq_contains, slist_contains},
    {Py_sq_concat, slist_add},
    {Py_sq_repeat, slist_repeat},
    {Py_sq_inplace_concat, slist_iadd},
    {Py_sq_inplace_repeat, slist_imul},
    {0, NULL},
};

static PyType_Spec slist_spec = {
    .name = "pyparallel.SharedList",
    .basicsize = sizeof(pxpy_scont_object_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_SEQUENCE |
             Py_TPFLAGS_MANAGED_WEAKREF,
    .slots = slist_slots,
};

int pxpy_slist_exec(PyObject *module, pxpy_state *st)
{
    return pxpy_scont_add_type(module, &slist_spec, &st->slist_type);
}
