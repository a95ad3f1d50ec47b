/*
 * sdict.c - pyparallel.SharedDict, px.dict in mode "interpreters": one
 * dict that the main interpreter and every worker see (scont.c says how
 * such containers live and cross).
 *
 * The table is the compact layout CPython's dict uses: entries in insertion
 * order (deleted ones left as holes until the next resize) and an
 * open-addressing index into them. Keys and values are cross-interpreter
 * data; a key is compared and hashed in its matching form (skey.c), so 1,
 * 1.0 and True are one key, as in a dict, and the key that was inserted
 * first is the one iteration gives back.
 *
 * Locking, as px.dict does in the other modes (python/pyparallel/
 * _protected.py): mutations take the write lock; reads take the read lock
 * (single items too: the table is C memory that a writer may be
 * reallocating). Iteration, keys(), values() and items() work on a snapshot
 * taken under the read lock. Several items set in one call (update, |=,
 * the constructor) are encoded first and stored under one write lock:
 * all of them or, when one cannot be stored, none.
 */
#include "interp/interp_internal.h"

#define INDEX_EMPTY (-1)
#define INDEX_DUMMY (-2)
#define MIN_ENTRIES 8

typedef struct {
    uint64_t hash;
    pxpy_xi_t *key;   /* as inserted; NULL: a deleted entry */
    pxpy_xi_t *match; /* the matching form, NULL when the same as key */
    pxpy_xi_t *value;
} entry_t;

typedef struct {
    pxpy_scont_t head;
    entry_t *entries;
    Py_ssize_t used; /* entries taken, deleted ones included */
    Py_ssize_t cap;
    Py_ssize_t len;    /* live entries */
    Py_ssize_t *index; /* mask + 1 slots: an entry, EMPTY or DUMMY */
    size_t mask;
    size_t fill; /* index slots that are not EMPTY (DUMMY ones included) */
} sdict_t;

#define SDICT(op) ((sdict_t *)((pxpy_scont_object_t *)(op))->c)

static const pxpy_xi_t *match_of(const entry_t *e)
{
    return e->match != NULL ? e->match : e->key;
}

static void entry_free(entry_t *e)
{
    pxpy_xi_free(e->key);
    pxpy_xi_free(e->match);
    pxpy_xi_free(e->value);
    e->key = e->match = e->value = NULL;
}

/* Checks the number of positional arguments of a METH_FASTCALL method. */
static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t min,
                       Py_ssize_t max)
{
    if (nargs >= min && nargs <= max)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s expected %s%zd argument%s, got %zd", name,
                 nargs < min ? "at least " : "at most ",
                 nargs < min ? min : max,
                 (nargs < min ? min : max) == 1 ? "" : "s", nargs);
    return -1;
}

static void set_key_error(PyObject *k)
{
    /* A tuple given to KeyError alone would become its arguments. */
    PyObject *args = PyTuple_Pack(1, k);
    if (args != NULL) {
        PyErr_SetObject(PyExc_KeyError, args);
        Py_DECREF(args);
    }
}

/* ---- the table (called with the lock held) ------------------------------ */

/* The entry matching key, or -1; *slot receives its index slot, or the
 * first empty one on the way. */
static Py_ssize_t find(const sdict_t *d, const pxpy_skey_t *key, size_t *slot)
{
    if (d->index == NULL)
        return -1;
    const pxpy_xi_t *match = pxpy_skey_match(key);
    size_t i = key->hash & d->mask;
    for (;;) {
        Py_ssize_t ix = d->index[i];
        if (ix == INDEX_EMPTY) {
            *slot = i;
            return -1;
        }
        if (ix >= 0) {
            const entry_t *e = &d->entries[ix];
            if (e->hash == key->hash && pxpy_xi_equal(match_of(e), match)) {
                *slot = i;
                return ix;
            }
        }
        i = (i + 1) & d->mask;
    }
}

/* The index slot that points at entry ix. */
static size_t slot_of(const sdict_t *d, Py_ssize_t ix)
{
    size_t i = d->entries[ix].hash & d->mask;
    while (d->index[i] != ix)
        i = (i + 1) & d->mask;
    return i;
}

/* Rebuilds the table with room for at least one entry more, leaving out
 * deleted entries. 0, or -1 with MemoryError (the table unchanged). */
static int resize(sdict_t *d)
{
    Py_ssize_t cap = d->len < MIN_ENTRIES / 2 ? MIN_ENTRIES : d->len * 2;
    size_t slots = MIN_ENTRIES;
    while (slots < (size_t)cap + (size_t)cap / 2 + 1)
        slots <<= 1;
    entry_t *entries = PyMem_RawMalloc((size_t)cap * sizeof(*entries));
    Py_ssize_t *index = PyMem_RawMalloc(slots * sizeof(*index));
    if (entries == NULL || index == NULL) {
        PyMem_RawFree(entries);
        PyMem_RawFree(index);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < slots; i++)
        index[i] = INDEX_EMPTY;
    Py_ssize_t n = 0;
    for (Py_ssize_t ix = 0; ix < d->used; ix++) {
        if (d->entries[ix].key == NULL)
            continue;
        entries[n] = d->entries[ix];
        size_t i = entries[n].hash & (slots - 1);
        while (index[i] != INDEX_EMPTY)
            i = (i + 1) & (slots - 1);
        index[i] = n++;
    }
    PyMem_RawFree(d->entries);
    PyMem_RawFree(d->index);
    d->entries = entries;
    d->index = index;
    d->mask = slots - 1;
    d->cap = cap;
    d->used = n;
    d->fill = (size_t)n;
    return 0;
}

/* Stores key → value: a new entry takes key's data, an existing one keeps
 * its key and takes the value. What is left over (the replaced value, the
 * unused key) goes to *garbage, to be freed once the lock is released.
 * 0, or -1 with MemoryError (nothing stored; key and value in garbage). */
static int store(sdict_t *d, pxpy_skey_t *key, pxpy_xi_t *value,
                 pxpy_xi_t *garbage[3])
{
    size_t slot;
    Py_ssize_t ix = find(d, key, &slot);
    if (ix >= 0) {
        garbage[0] = d->entries[ix].value;
        d->entries[ix].value = value;
        garbage[1] = key->key;
        garbage[2] = key->match;
        key->key = key->match = NULL;
        return 0;
    }
    /* Deleted entries leave DUMMY slots behind (a probe must walk over
     * them), so the index fills up even when the entries do not: probing
     * needs EMPTY slots to end. */
    if (d->used == d->cap || (d->fill + 1) * 3 > (d->mask + 1) * 2) {
        if (resize(d) < 0) {
            garbage[0] = value;
            garbage[1] = key->key;
            garbage[2] = key->match;
            key->key = key->match = NULL;
            return -1;
        }
        find(d, key, &slot);
    }
    ix = d->used++;
    d->entries[ix] = (entry_t){key->hash, key->key, key->match, value};
    key->key = key->match = NULL;
    d->index[slot] = ix;
    d->fill++;
    d->len++;
    return 0;
}

/* Takes entry ix (at index slot) out into *out. */
static void take_out(sdict_t *d, Py_ssize_t ix, size_t slot, entry_t *out)
{
    *out = d->entries[ix];
    d->entries[ix].key = d->entries[ix].match = d->entries[ix].value = NULL;
    d->index[slot] = INDEX_DUMMY;
    d->len--;
    /* Trailing holes go at once, so that popitem() finds the last entry
     * without walking over them again. */
    while (d->used > 0 && d->entries[d->used - 1].key == NULL)
        d->used--;
}

static void garbage_free(pxpy_xi_t *garbage[3])
{
    for (int i = 0; i < 3; i++)
        pxpy_xi_free(garbage[i]);
}

static void sdict_clear_items(pxpy_scont_t *c)
{
    sdict_t *d = (sdict_t *)c;
    for (Py_ssize_t ix = 0; ix < d->used; ix++)
        entry_free(&d->entries[ix]);
    PyMem_RawFree(d->entries);
    PyMem_RawFree(d->index);
    d->entries = NULL;
    d->index = NULL;
    d->used = d->cap = d->len = 0;
    d->mask = d->fill = 0;
}

static sdict_t *sdict_alloc(void)
{
    return pxpy_scont_alloc(sizeof(sdict_t), PXPY_SCONT_DICT, true,
                            sdict_clear_items);
}

/* ---- reading ------------------------------------------------------------ */

/* The value under k, decoded: a new reference; NULL without an exception
 * when k is absent; NULL with one on error. */
static PyObject *lookup(PyObject *self, PyObject *k)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    sdict_t *d = SDICT(self);
    pxpy_skey_t key;
    if (pxpy_skey_make(st, k, false, &key) < 0)
        return NULL;
    if (pxpy_scont_lock(&d->head, 0) < 0) {
        pxpy_skey_free(&key);
        return NULL;
    }
    size_t slot;
    Py_ssize_t ix = find(d, &key, &slot);
    pxpy_xi_t *value = ix >= 0 ? pxpy_xi_dup(d->entries[ix].value) : NULL;
    pxpy_scont_unlock(&d->head, 0);
    pxpy_skey_free(&key);
    if (value == NULL)
        return NULL;
    PyObject *r = pxpy_xi_decode(st, value);
    pxpy_xi_free(value);
    return r;
}

/* Copies of the keys (and, with values, of the values), in order, taken
 * under the read lock. 0, or -1 with an exception. */
static int snapshot(sdict_t *d, pxpy_xi_t ***keys, pxpy_xi_t ***values,
                    Py_ssize_t *n)
{
    *keys = NULL;
    if (values != NULL)
        *values = NULL;
    *n = 0;
    if (pxpy_scont_lock(&d->head, 0) < 0)
        return -1;
    size_t bytes = (size_t)(d->len ? d->len : 1) * sizeof(pxpy_xi_t *);
    pxpy_xi_t **k = PyMem_RawCalloc(1, bytes);
    pxpy_xi_t **v = values != NULL ? PyMem_RawCalloc(1, bytes) : NULL;
    Py_ssize_t got = 0;
    int rc = k == NULL || (values != NULL && v == NULL) ? -1 : 0;
    for (Py_ssize_t ix = 0; rc == 0 && ix < d->used; ix++) {
        const entry_t *e = &d->entries[ix];
        if (e->key == NULL)
            continue;
        k[got] = pxpy_xi_dup(e->key);
        if (v != NULL)
            v[got] = k[got] ? pxpy_xi_dup(e->value) : NULL;
        got++;
        if (k[got - 1] == NULL || (v != NULL && v[got - 1] == NULL))
            rc = -1;
    }
    pxpy_scont_unlock(&d->head, 0);
    if (rc < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        if (k != NULL)
            pxpy_scont_free_all(k, got);
        if (v != NULL)
            pxpy_scont_free_all(v, got);
        return -1;
    }
    *keys = k;
    if (values != NULL)
        *values = v;
    *n = got;
    return 0;
}

/* A plain dict with the items as they are now. */
static PyObject *to_dict(PyObject *self)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    pxpy_xi_t **keys, **values;
    Py_ssize_t n;
    if (snapshot(SDICT(self), &keys, &values, &n) < 0)
        return NULL;
    PyObject *ks = pxpy_scont_decode_all(st, keys, n);
    PyObject *vs = pxpy_scont_decode_all(st, values, n);
    PyObject *dict = ks != NULL && vs != NULL ? PyDict_New() : NULL;
    for (Py_ssize_t i = 0; dict != NULL && i < n; i++) {
        if (PyDict_SetItem(dict, PyList_GET_ITEM(ks, i),
                           PyList_GET_ITEM(vs, i)) < 0)
            Py_CLEAR(dict);
    }
    Py_XDECREF(ks);
    Py_XDECREF(vs);
    return dict;
}

static PyObject *keys_list(PyObject *self)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    pxpy_xi_t **keys;
    Py_ssize_t n;
    if (snapshot(SDICT(self), &keys, NULL, &n) < 0)
        return NULL;
    return pxpy_scont_decode_all(st, keys, n);
}

static Py_ssize_t sdict_length(PyObject *self)
{
    sdict_t *d = SDICT(self);
    if (pxpy_scont_lock(&d->head, 0) < 0)
        return -1;
    Py_ssize_t n = d->len;
    pxpy_scont_unlock(&d->head, 0);
    return n;
}

static PyObject *sdict_subscript(PyObject *self, PyObject *k)
{
    PyObject *v = lookup(self, k);
    if (v == NULL && !PyErr_Occurred())
        set_key_error(k);
    return v;
}

static int sdict_contains(PyObject *self, PyObject *k)
{
    PyObject *v = lookup(self, k);
    if (v == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_DECREF(v);
    return 1;
}

static PyObject *sdict_get(PyObject *self, PyObject *const *args,
                           Py_ssize_t nargs)
{
    if (check_nargs("get", nargs, 1, 2) < 0)
        return NULL;
    PyObject *v = lookup(self, args[0]);
    if (v == NULL && !PyErr_Occurred())
        v = Py_NewRef(nargs > 1 ? args[1] : Py_None);
    return v;
}

static PyObject *sdict_iter(PyObject *self)
{
    return pxpy_scont_apply(keys_list(self), PyObject_GetIter);
}

static PyObject *sdict_reversed(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return pxpy_scont_apply(keys_list(self), pxpy_scont_reversed_iter);
}

/* keys(), values(), items(): the views of a plain dict holding a snapshot,
 * so that they compare, combine and print as a dict's views do. */
static PyObject *view(PyObject *self, const char *name)
{
    PyObject *dict = to_dict(self);
    if (dict == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethod(dict, name, NULL);
    Py_DECREF(dict);
    return r;
}

static PyObject *sdict_keys(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return view(self, "keys");
}

static PyObject *sdict_values(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return view(self, "values");
}

static PyObject *sdict_items(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return view(self, "items");
}

static PyObject *sdict_repr(PyObject *self)
{
    return pxpy_scont_apply(to_dict(self), PyObject_Repr);
}

/* A plain dict for a SharedDict or a dict (a new reference); NULL without
 * an exception for anything else. */
static PyObject *as_dict(pxpy_state *st, PyObject *obj)
{
    if (Py_IS_TYPE(obj, st->sdict_type))
        return to_dict(obj);
    if (PyDict_Check(obj))
        return Py_NewRef(obj);
    return NULL;
}

static PyObject *sdict_richcompare(PyObject *self, PyObject *other, int op)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *b = as_dict(st, other);
    if (b == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *a = to_dict(self);
    PyObject *r = a != NULL ? PyObject_RichCompare(a, b, op) : NULL;
    Py_XDECREF(a);
    Py_DECREF(b);
    return r;
}

/* ---- writing ------------------------------------------------------------ */

static int sdict_ass_subscript(PyObject *self, PyObject *k, PyObject *v)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    sdict_t *d = SDICT(self);
    pxpy_skey_t key;
    if (pxpy_skey_make(st, k, v != NULL, &key) < 0)
        return -1;
    pxpy_xi_t *value = NULL;
    if (v != NULL) {
        value = pxpy_xi_encode_value(st, v, "px.dict value");
        if (value == NULL) {
            pxpy_skey_free(&key);
            return -1;
        }
    }
    if (pxpy_scont_lock(&d->head, 1) < 0) {
        pxpy_skey_free(&key);
        pxpy_xi_free(value);
        return -1;
    }
    pxpy_xi_t *garbage[3] = {NULL, NULL, NULL};
    int rc = 0;
    if (v != NULL) {
        rc = store(d, &key, value, garbage);
    } else {
        size_t slot;
        Py_ssize_t ix = find(d, &key, &slot);
        if (ix >= 0) {
            entry_t out;
            take_out(d, ix, slot, &out);
            garbage[0] = out.key;
            garbage[1] = out.match;
            garbage[2] = out.value;
        } else {
            rc = -1;
        }
    }
    pxpy_scont_unlock(&d->head, 1);
    garbage_free(garbage);
    pxpy_skey_free(&key);
    if (rc < 0 && v == NULL)
        set_key_error(k);
    return rc;
}

/* pop(k[, default]) */
static PyObject *sdict_pop(PyObject *self, PyObject *const *args,
                           Py_ssize_t nargs)
{
    if (check_nargs("pop", nargs, 1, 2) < 0)
        return NULL;
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    sdict_t *d = SDICT(self);
    pxpy_skey_t key;
    if (pxpy_skey_make(st, args[0], false, &key) < 0)
        return NULL;
    if (pxpy_scont_lock(&d->head, 1) < 0) {
        pxpy_skey_free(&key);
        return NULL;
    }
    size_t slot;
    Py_ssize_t ix = find(d, &key, &slot);
    entry_t out = {0, NULL, NULL, NULL};
    if (ix >= 0)
        take_out(d, ix, slot, &out);
    pxpy_scont_unlock(&d->head, 1);
    pxpy_skey_free(&key);
    if (ix < 0) {
        if (nargs > 1)
            return Py_NewRef(args[1]);
        set_key_error(args[0]);
        return NULL;
    }
    PyObject *r = pxpy_xi_decode(st, out.value);
    entry_free(&out);
    return r;
}

static PyObject *sdict_popitem(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    sdict_t *d = SDICT(self);
    if (pxpy_scont_lock(&d->head, 1) < 0)
        return NULL;
    entry_t out = {0, NULL, NULL, NULL};
    if (d->used > 0) {
        Py_ssize_t ix = d->used - 1; /* take_out keeps no trailing hole */
        take_out(d, ix, slot_of(d, ix), &out);
    }
    pxpy_scont_unlock(&d->head, 1);
    if (out.key == NULL) {
        PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
        return NULL;
    }
    PyObject *k = pxpy_xi_decode(st, out.key);
    PyObject *v = k != NULL ? pxpy_xi_decode(st, out.value) : NULL;
    entry_free(&out);
    PyObject *r = v != NULL ? PyTuple_Pack(2, k, v) : NULL;
    Py_XDECREF(k);
    Py_XDECREF(v);
    return r;
}

/* setdefault(k, default=None) */
static PyObject *sdict_setdefault(PyObject *self, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    if (check_nargs("setdefault", nargs, 1, 2) < 0)
        return NULL;
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    sdict_t *d = SDICT(self);
    PyObject *dflt = nargs > 1 ? args[1] : Py_None;
    pxpy_skey_t key;
    if (pxpy_skey_make(st, args[0], true, &key) < 0)
        return NULL;
    pxpy_xi_t *value = pxpy_xi_encode_value(st, dflt, "px.dict value");
    if (value == NULL || pxpy_scont_lock(&d->head, 1) < 0) {
        pxpy_skey_free(&key);
        pxpy_xi_free(value);
        return NULL;
    }
    pxpy_xi_t *garbage[3] = {NULL, NULL, NULL};
    pxpy_xi_t *found = NULL;
    size_t slot;
    Py_ssize_t ix = find(d, &key, &slot);
    int rc = 0;
    if (ix >= 0) {
        found = pxpy_xi_dup(d->entries[ix].value);
        garbage[0] = value;
        rc = found == NULL ? -1 : 0;
    } else {
        rc = store(d, &key, value, garbage);
    }
    pxpy_scont_unlock(&d->head, 1);
    garbage_free(garbage);
    pxpy_skey_free(&key);
    if (rc < 0)
        return NULL;
    if (found == NULL)
        return Py_NewRef(dflt);
    PyObject *r = pxpy_xi_decode(st, found);
    pxpy_xi_free(found);
    return r;
}

static PyObject *sdict_clear(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    sdict_t *d = SDICT(self);
    if (pxpy_scont_lock(&d->head, 1) < 0)
        return NULL;
    entry_t *entries = d->entries;
    Py_ssize_t used = d->used;
    PyMem_RawFree(d->index);
    d->entries = NULL;
    d->index = NULL;
    d->used = d->cap = d->len = 0;
    d->mask = d->fill = 0;
    pxpy_scont_unlock(&d->head, 1);
    /* Freed outside the lock: releasing SharedBuffers unmaps memory. */
    for (Py_ssize_t ix = 0; ix < used; ix++)
        entry_free(&entries[ix]);
    PyMem_RawFree(entries);
    Py_RETURN_NONE;
}

/* Stores every item of a plain dict under one write lock, after encoding
 * them all: all of them or none. */
static int merge(PyObject *self, PyObject *items)
{
    pxpy_state *st = pxpy_state_from_type(Py_TYPE(self));
    sdict_t *d = SDICT(self);
    Py_ssize_t n = PyDict_GET_SIZE(items);
    if (n == 0)
        return 0;
    pxpy_skey_t *keys = PyMem_RawCalloc((size_t)n, sizeof(*keys));
    pxpy_xi_t **values = PyMem_RawCalloc((size_t)n, sizeof(*values));
    /* Three leftovers at most per item. */
    pxpy_xi_t **garbage = PyMem_RawCalloc((size_t)n * 3, sizeof(*garbage));
    int rc = keys && values && garbage ? 0 : -1;
    if (rc < 0)
        PyErr_NoMemory();
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (rc == 0 && PyDict_Next(items, &pos, &k, &v)) {
        if (pxpy_skey_make(st, k, true, &keys[i]) < 0)
            rc = -1;
        else if ((values[i] = pxpy_xi_encode_value(st, v, "px.dict value")) ==
                 NULL)
            rc = -1;
        i++;
    }
    if (rc == 0 && pxpy_scont_lock(&d->head, 1) < 0)
        rc = -1;
    if (rc == 0) {
        for (Py_ssize_t j = 0; j < n; j++) {
            if (rc == 0) {
                rc = store(d, &keys[j], values[j], &garbage[3 * j]);
                values[j] = NULL;
            }
        }
        pxpy_scont_unlock(&d->head, 1);
    }
    for (Py_ssize_t j = 0; j < i; j++) {
        pxpy_skey_free(&keys[j]);
        pxpy_xi_free(values != NULL ? values[j] : NULL);
    }
    if (garbage != NULL)
        pxpy_scont_free_all(garbage, n * 3);
    PyMem_RawFree(keys);
    PyMem_RawFree(values);
    return rc;
}

/* update(*args, **kwargs): what dict(*args, **kwargs) would hold. */
static int update(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) == 0 &&
        (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0))
        return 0;
    PyObject *items = PyObject_Call((PyObject *)&PyDict_Type, args, kwargs);
    if (items == NULL)
        return -1;
    int rc = merge(self, items);
    Py_DECREF(items);
    return rc;
}

static PyObject *sdict_update(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (update(self, args, kwargs) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- new containers ----------------------------------------------------- */

static PyObject *sdict_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    sdict_t *d = sdict_alloc();
    if (d == NULL)
        return NULL;
    PyObject *self = pxpy_scont_new_object(type, &d->head);
    if (self != NULL && update(self, args, kwargs) < 0)
        Py_CLEAR(self);
    return self;
}

/* A new container with the same items, copied under the read lock. */
static PyObject *sdict_copy(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    sdict_t *d = SDICT(self);
    sdict_t *n = sdict_alloc();
    if (n == NULL)
        return NULL;
    PyObject *copy = pxpy_scont_new_object(Py_TYPE(self), &n->head);
    if (copy == NULL || pxpy_scont_lock(&d->head, 0) < 0) {
        Py_XDECREF(copy);
        return NULL;
    }
    int rc = 0;
    for (Py_ssize_t ix = 0; rc == 0 && ix < d->used; ix++) {
        const entry_t *e = &d->entries[ix];
        if (e->key == NULL)
            continue;
        pxpy_skey_t key = {pxpy_xi_dup(e->key),
                           e->match ? pxpy_xi_dup(e->match) : NULL, e->hash};
        pxpy_xi_t *value = pxpy_xi_dup(e->value);
        pxpy_xi_t *garbage[3] = {NULL, NULL, NULL};
        if (key.key == NULL || (e->match && key.match == NULL) ||
            value == NULL) {
            pxpy_skey_free(&key);
            pxpy_xi_free(value);
            rc = -1;
        } else {
            /* The copy is not shared yet: its table needs no lock. */
            rc = store(n, &key, value, garbage);
            garbage_free(garbage);
        }
    }
    pxpy_scont_unlock(&d->head, 0);
    if (rc < 0)
        Py_CLEAR(copy);
    return copy;
}

static PyObject *sdict_fromkeys(PyObject *cls, PyObject *const *args,
                                Py_ssize_t nargs)
{
    if (check_nargs("fromkeys", nargs, 1, 2) < 0)
        return NULL;
    PyObject *value = nargs > 1 ? args[1] : Py_None;
    PyObject *items = PyDict_New();
    PyObject *it = items ? PyObject_GetIter(args[0]) : NULL;
    PyObject *k;
    while (it != NULL && (k = PyIter_Next(it)) != NULL) {
        int rc = PyDict_SetItem(items, k, value);
        Py_DECREF(k);
        if (rc < 0)
            break;
    }
    PyObject *self = NULL;
    if (it != NULL && !PyErr_Occurred())
        self = PyObject_CallNoArgs(cls);
    if (self != NULL && merge(self, items) < 0)
        Py_CLEAR(self);
    Py_XDECREF(it);
    Py_XDECREF(items);
    return self;
}

static PyObject *sdict_or(PyObject *a, PyObject *b)
{
    /* One of a and b is a SharedDict (the type has no subclasses). */
    PyTypeObject *mine =
        Py_TYPE(a)->tp_iter == sdict_iter ? Py_TYPE(a) : Py_TYPE(b);
    pxpy_state *st = pxpy_state_from_type(mine);
    if (st == NULL)
        return NULL;
    PyObject *r = NULL;
    if (Py_IS_TYPE(a, st->sdict_type)) {
        PyObject *other = as_dict(st, b);
        if (other == NULL)
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_NotImplemented);
        r = sdict_copy(a, NULL);
        if (r != NULL && merge(r, other) < 0)
            Py_CLEAR(r);
        Py_DECREF(other);
        return r;
    }
    /* dict | SharedDict: a dict, as dict | a dict subclass gives. */
    if (!PyDict_Check(a))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *other = to_dict(b);
    if (other == NULL)
        return NULL;
    r = PyDict_Copy(a);
    if (r != NULL && PyDict_Update(r, other) < 0)
        Py_CLEAR(r);
    Py_DECREF(other);
    return r;
}

static PyObject *sdict_ior(PyObject *self, PyObject *other)
{
    PyObject *args = PyTuple_Pack(1, other);
    if (args == NULL)
        return NULL;
    int rc = update(self, args, NULL);
    Py_DECREF(args);
    return rc < 0 ? NULL : Py_NewRef(self);
}

static PyObject *sdict_deepcopy(PyObject *self, PyObject *Py_UNUSED(memo))
{
    /* Its values are immutable (SharedBuffers are shared, never copied). */
    return sdict_copy(self, NULL);
}

/* ---- the type ----------------------------------------------------------- */

static PyMethodDef sdict_methods[] = {
    {"get", (PyCFunction)(void (*)(void))sdict_get, METH_FASTCALL,
     "get(key, default=None, /)\n--\n\nThe value for key, else default."},
    {"setdefault", (PyCFunction)(void (*)(void))sdict_setdefault, METH_FASTCALL,
     "setdefault(key, default=None, /)\n--\n\nThe value for key; when key is "
     "absent, store default under it first (one write lock)."},
    {"pop", (PyCFunction)(void (*)(void))sdict_pop, METH_FASTCALL,
     "pop(key[, default], /)\n--\n\nRemove key and return its value."},
    {"popitem", sdict_popitem, METH_NOARGS,
     "popitem()\n--\n\nRemove and return the last inserted (key, value)."},
    {"clear", sdict_clear, METH_NOARGS, "clear()\n--\n\nRemove every item."},
    {"update", (PyCFunction)(void (*)(void))sdict_update,
     METH_VARARGS | METH_KEYWORDS,
     "update(other=(), /, **kwargs)\n--\n\nStore what dict(other, **kwargs) "
     "holds, all in one write lock (none of it when an item cannot be "
     "stored)."},
    {"copy", sdict_copy, METH_NOARGS,
     "copy()\n--\n\nA new shared dict with the same items."},
    {"__copy__", sdict_copy, METH_NOARGS, NULL},
    {"__deepcopy__", sdict_deepcopy, METH_O, NULL},
    {"fromkeys", (PyCFunction)(void (*)(void))sdict_fromkeys,
     METH_FASTCALL | METH_CLASS,
     "fromkeys(iterable, value=None, /)\n--\n\nA new shared dict with the "
     "keys of iterable, each holding value."},
    {"keys", sdict_keys, METH_NOARGS,
     "keys()\n--\n\nThe keys, as a dict's view of a snapshot."},
    {"values", sdict_values, METH_NOARGS,
     "values()\n--\n\nThe values, as a dict's view of a snapshot."},
    {"items", sdict_items, METH_NOARGS,
     "items()\n--\n\nThe (key, value) pairs, as a dict's view of a "
     "snapshot."},
    {"__reversed__", sdict_reversed, METH_NOARGS, NULL},
    {"__reduce__", pxpy_scont_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sdict_getset[] = {
    {"__px_rwlock__", pxpy_scont_get_rwlock, NULL,
     "The lock px.read_lock()/px.write_lock() take, shared by every "
     "interpreter.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot sdict_slots[] = {
    {Py_tp_doc, "SharedDict(other=(), /, **kwargs)\n--\n\n"
                "px.dict in mode 'interpreters': one dict that the main "
                "interpreter and every worker see, holding values that can "
                "cross interpreters (None, bool, int, float, str, bytes, "
                "tuples of these, SharedBuffer). Reads give copies; "
                "px.read_lock()/px.write_lock() work on it."},
    {Py_tp_new, sdict_new},
    {Py_tp_dealloc, pxpy_scont_dealloc},
    {Py_tp_traverse, pxpy_scont_traverse},
    {Py_tp_repr, sdict_repr},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_richcompare, sdict_richcompare},
    {Py_tp_iter, sdict_iter},
    {Py_tp_methods, sdict_methods},
    {Py_tp_getset, sdict_getset},
    {Py_mp_length, sdict_length},
    {Py_mp_subscript, sdict_subscript},
    {Py_mp_ass_subscript, sdict_ass_subscript},
    {Py_sq_contains, sdict_contains},
    {Py_nb_or, sdict_or},
    {Py_nb_inplace_or, sdict_ior},
    {0, NULL},
};

static PyType_Spec sdict_spec = {
    .name = "pyparallel.SharedDict",
    .basicsize = sizeof(pxpy_scont_object_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_MAPPING |
             Py_TPFLAGS_MANAGED_WEAKREF,
    .slots = sdict_slots,
};

int pxpy_sdict_exec(PyObject *module, pxpy_state *st)
{
    return pxpy_scont_add_type(module, &sdict_spec, &st->sdict_type);
}
