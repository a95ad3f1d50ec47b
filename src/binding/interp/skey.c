/*
 * skey.c - the keys of a SharedDict (sdict.c): the matching form in which
 * keys that Python finds equal are identical bytes, so that a table of
 * cross-interpreter data finds them as a dict would. True and 1.0 become 1,
 * an integral float becomes an int, -0.0 becomes 0, tuples are matched item
 * by item. NaN cannot be a key: it equals nothing, not even itself, and an
 * object's identity, which is how a dict still finds it, does not cross
 * interpreters. A key keeps the form it was inserted in too, for iteration.
 */
#include "interp/interp_internal.h"

#include <math.h>

void pxpy_skey_free(pxpy_skey_t *k)
{
    pxpy_xi_free(k->key);
    pxpy_xi_free(k->match);
    k->key = k->match = NULL;
}

/* The matching form of k (see the top of the file), a new reference; k
 * itself when nothing changes. NULL with an error for what cannot be a
 * key. */
static PyObject *matching_form(PyObject *k)
{
    if (k == Py_True || k == Py_False)
        return PyLong_FromLong(k == Py_True);
    if (k == Py_None || PyLong_CheckExact(k) || PyUnicode_CheckExact(k) ||
        PyBytes_CheckExact(k))
        return Py_NewRef(k);
    if (PyFloat_CheckExact(k)) {
        double d = PyFloat_AS_DOUBLE(k);
        if (isnan(d)) {
            PyErr_SetString(PyExc_ValueError,
                            "px.dict in mode 'interpreters' cannot use NaN "
                            "as a key: NaN equals nothing, not even itself, "
                            "and the identity by which a dict finds it "
                            "again does not cross interpreters");
            return NULL;
        }
        if (isfinite(d) && floor(d) == d)
            return PyLong_FromDouble(d);
        return Py_NewRef(k);
    }
    if (PyTuple_CheckExact(k)) {
        Py_ssize_t n = PyTuple_GET_SIZE(k);
        PyObject *t = PyTuple_New(n);
        if (t == NULL)
            return NULL;
        if (Py_EnterRecursiveCall(" in a px.dict key")) {
            Py_DECREF(t);
            return NULL;
        }
        bool changed = false;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = matching_form(PyTuple_GET_ITEM(k, i));
            if (item == NULL) {
                Py_LeaveRecursiveCall();
                Py_DECREF(t);
                return NULL;
            }
            changed |= item != PyTuple_GET_ITEM(k, i);
            PyTuple_SET_ITEM(t, i, item);
        }
        Py_LeaveRecursiveCall();
        if (changed)
            return t;
        Py_DECREF(t);
        return Py_NewRef(k);
    }
    /* What a dict refuses, it refuses with its own error. */
    if (PyObject_Hash(k) == -1)
        return NULL;
    PyErr_Format(PyExc_TypeError,
                 "px.dict keys in mode 'interpreters' are None, bool, int, "
                 "float, str, bytes or tuples of these; got %.100s: use one "
                 "of those (a tuple of its fields, its name), or mode "
                 "'threads' or 'gil'",
                 Py_TYPE(k)->tp_name);
    return NULL;
}

int pxpy_skey_make(pxpy_state *st, PyObject *k, bool insert, pxpy_skey_t *out)
{
    out->key = out->match = NULL;
    PyObject *m = matching_form(k);
    if (m == NULL)
        return -1;
    pxpy_xi_t *mx = pxpy_xi_encode_value(st, m, "px.dict key");
    pxpy_xi_t *kx = NULL;
    if (mx != NULL && insert && m != k) {
        kx = pxpy_xi_encode_value(st, k, "px.dict key");
        if (kx == NULL) {
            pxpy_xi_free(mx);
            mx = NULL;
        }
    }
    Py_DECREF(m);
    if (mx == NULL)
        return -1;
    out->hash = pxpy_xi_hash(mx);
    if (kx != NULL) {
        out->key = kx;
        out->match = mx;
    } else if (insert) {
        out->key = mx; /* the same: kept once, as the key */
    } else {
        out->match = mx;
    }
    return 0;
}

const pxpy_xi_t *pxpy_skey_match(const pxpy_skey_t *k)
{
    return k->match != NULL ? k->match : k->key;
}
