/*
 * xi.c - cross-interpreter data: values encoded in one interpreter as plain
 * C memory and decoded into new objects in another, and the sub-state
 * that caches the helpers and what was found by name (xi_names.c decides
 * what can be found by name).
 *
 * The encoding is a tagged byte string. None, bool, int, float, str and
 * bytes (exact types) and tuples of encodable values are copied directly;
 * a SharedBuffer, a Channel, a shared container (px.dict, px.list,
 * px.xlist of this mode) or a connection's Transport travels as its handle
 * (a referenced pointer: the other interpreter gets an object over the same
 * memory, queue, container or connection);
 * module-level functions, classes and module functions of extensions
 * travel as (module, qualified name) and are found again by name; any
 * other object is pickled (pyparallel._interp, which also maps the main
 * script's names to its re-import in worker interpreters). An exception
 * travels pickled when it can be, always with its formatted traceback,
 * which becomes the decoded exception's __cause__.
 *
 * Errors name the rule: what may cross, and that modes "threads" and "gil"
 * (one interpreter) need no crossing. An object with a lock of
 * px.protect() or of px.dict/px.list of another mode never crosses: a
 * pickled copy would be a second object that the lock does not guard.
 *
 * The values a shared container holds use the same encoding restricted to
 * plain values (pxpy_xi_encode_value): copies that need no interpreter to
 * live in, and no handle that could make a reference cycle between
 * containers.
 */
#include "interp/interp_internal.h"

#include <stdatomic.h>
#include <string.h>

enum {
    TAG_NONE = 'N',
    TAG_TRUE = 'T',
    TAG_FALSE = 'F',
    TAG_INT = 'i',    /* int64 */
    TAG_BIGINT = 'I', /* length, little-endian two's complement */
    TAG_FLOAT = 'f',
    TAG_STR = 's',       /* kind, length in code points, data */
    TAG_BYTES = 'b',     /* length, data */
    TAG_TUPLE = 't',     /* count, items */
    TAG_PICKLE = 'p',    /* length, pickle */
    TAG_REF = 'r',       /* module (utf-8), qualname (utf-8) */
    TAG_BUFFER = 'B',    /* pxpy_region_t *, referenced */
    TAG_CHANNEL = 'C',   /* pxpy_chan_t *, referenced */
    TAG_TRANSPORT = 'W', /* px_conn_t *, referenced */
    TAG_SHARED = 'S',    /* pxpy_scont_t *, referenced */
    TAG_EXCEPTION = 'X', /* has-pickle byte, [pickle], traceback text */
};

struct pxpy_xi_s {
    size_t len;
    unsigned char data[];
};

struct pxpy_xistate_s {
    PyObject *dumps, *loads, *resolve; /* pyparallel._interp's */
    PyObject *encode_exception, *decode_exception, *class_recipe;
    PyObject *resolved; /* worker interpreters: raw name → object */
    int importing_main; /* the main script's top level runs here now */
};

static const char crossing_rule[] =
    "in mode 'interpreters' values cross to another interpreter only as "
    "None, bool, int, float, str, bytes, tuples of those, SharedBuffer, "
    "Channel, module-level functions and classes, or picklable objects; "
    "use mode 'threads' or 'gil' to share objects";

/* ---- the helper module, imported on first use --------------------------- */

static int load_helper(pxpy_state *st)
{
    pxpy_xistate_t *x = st->xi;
    if (x->dumps != NULL)
        return 0;
    PyObject *m = PyImport_ImportModule("pyparallel._interp");
    if (m == NULL)
        return -1;
    x->loads = PyObject_GetAttrString(m, "loads");
    x->resolve = PyObject_GetAttrString(m, "resolve");
    x->encode_exception = PyObject_GetAttrString(m, "encode_exception");
    x->decode_exception = PyObject_GetAttrString(m, "decode_exception");
    x->class_recipe = PyObject_GetAttrString(m, "class_recipe");
    PyObject *dumps = PyObject_GetAttrString(m, "dumps");
    Py_DECREF(m);
    if (x->loads == NULL || x->resolve == NULL || x->encode_exception == NULL ||
        x->decode_exception == NULL || x->class_recipe == NULL ||
        dumps == NULL) {
        Py_XDECREF(dumps);
        return -1;
    }
    x->dumps = dumps; /* last: it marks the helper as loaded */
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

typedef struct {
    pxpy_xi_t *xi;
    size_t cap;
    /* Plain values only (what a shared container holds); names the
     * container in errors. */
    const char *values_only;
} writer_t;

static int grow(writer_t *w, size_t more)
{
    size_t need = w->xi->len + more;
    if (need <= w->cap)
        return 0;
    size_t cap = w->cap * 2;
    while (cap < need)
        cap *= 2;
    pxpy_xi_t *bigger = PyMem_RawRealloc(w->xi, sizeof(pxpy_xi_t) + cap);
    if (bigger == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->xi = bigger;
    w->cap = cap;
    return 0;
}

/* Every value is written whole or not at all (grow first, then copy), so
 * that a failed encoding can be walked to release its handles. */
static void copy(writer_t *w, const void *p, size_t n)
{
    memcpy(w->xi->data + w->xi->len, p, n);
    w->xi->len += n;
}

static int put_tag(writer_t *w, unsigned char tag)
{
    if (grow(w, 1) < 0)
        return -1;
    copy(w, &tag, 1);
    return 0;
}

/* tag, then a fixed-size field (an int64, a double, a pointer). */
static int put_fixed(writer_t *w, unsigned char tag, const void *p, size_t n)
{
    if (grow(w, 1 + n) < 0)
        return -1;
    copy(w, &tag, 1);
    copy(w, p, n);
    return 0;
}

/* tag, the size, then n bytes. */
static int put_chunk(writer_t *w, unsigned char tag, const void *p, size_t n)
{
    if (grow(w, 1 + sizeof(n) + n) < 0)
        return -1;
    copy(w, &tag, 1);
    copy(w, &n, sizeof(n));
    copy(w, p, n);
    return 0;
}

static int put_ptr(writer_t *w, unsigned char tag, void *p)
{
    return put_fixed(w, tag, &p, sizeof(p));
}

static int writer_init(writer_t *w)
{
    w->cap = 64;
    w->values_only = NULL;
    w->xi = PyMem_RawMalloc(sizeof(pxpy_xi_t) + w->cap);
    if (w->xi == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->xi->len = 0;
    return 0;
}

/* ---- reading (data written by this file, so trusted) -------------------- */

typedef struct {
    const unsigned char *p, *end;
} reader_t;

static unsigned char get_tag(reader_t *r) { return *r->p++; }

static size_t get_size(reader_t *r)
{
    size_t n;
    memcpy(&n, r->p, sizeof(n));
    r->p += sizeof(n);
    return n;
}

static void *get_ptr(reader_t *r)
{
    void *p;
    memcpy(&p, r->p, sizeof(p));
    r->p += sizeof(p);
    return p;
}

static const char *get_bytes(reader_t *r, size_t *n)
{
    *n = get_size(r);
    const char *p = (const char *)r->p;
    r->p += *n;
    return p;
}

/* What walk_value does to the handles it steps over. */
typedef enum {
    HANDLES_RELEASE, /* freeing the data */
    HANDLES_KEEP,    /* a decoding that failed: the data still owns them */
    HANDLES_TAKE,    /* a copy of the data owns references of its own */
} handles_t;

static void handle_ref(unsigned char tag, void *p, handles_t op)
{
    if (op == HANDLES_KEEP)
        return;
    bool take = op == HANDLES_TAKE;
    switch (tag) {
    case TAG_BUFFER:
        take ? pxpy_region_ref(p) : pxpy_region_unref(p);
        break;
    case TAG_CHANNEL:
        take ? pxpy_chan_ref(p) : pxpy_chan_unref(p);
        break;
    case TAG_TRANSPORT:
        take ? px_conn_ref(p) : px_conn_unref(p);
        break;
    default: /* TAG_SHARED */
        take ? pxpy_scont_ref(p) : pxpy_scont_unref(p);
        break;
    }
}

/* Steps over one value, doing op to the handles in it. */
static void walk_value(reader_t *r, handles_t op)
{
    size_t n;
    unsigned char tag = get_tag(r);
    switch (tag) {
    case TAG_INT:
    case TAG_FLOAT:
        r->p += 8;
        break;
    case TAG_STR: {
        size_t kind = *r->p++;
        n = get_size(r);
        r->p += n * kind;
        break;
    }
    case TAG_BIGINT:
    case TAG_BYTES:
    case TAG_PICKLE:
        get_bytes(r, &n);
        break;
    case TAG_REF:
        get_bytes(r, &n);
        get_bytes(r, &n);
        break;
    case TAG_TUPLE:
        /* A failed encoding may have written fewer items. */
        n = get_size(r);
        for (size_t i = 0; i < n && r->p < r->end; i++)
            walk_value(r, op);
        break;
    case TAG_BUFFER:
    case TAG_CHANNEL:
    case TAG_TRANSPORT:
    case TAG_SHARED:
        handle_ref(tag, get_ptr(r), op);
        break;
    case TAG_EXCEPTION:
        if (get_tag(r))
            get_bytes(r, &n);
        get_bytes(r, &n);
        break;
    default: /* None, True, False */
        break;
    }
}

void pxpy_xi_free(pxpy_xi_t *xi)
{
    if (xi == NULL)
        return;
    reader_t r = {xi->data, xi->data + xi->len};
    while (r.p < r.end)
        walk_value(&r, HANDLES_RELEASE);
    PyMem_RawFree(xi);
}

pxpy_xi_t *pxpy_xi_dup(const pxpy_xi_t *xi)
{
    pxpy_xi_t *copy = PyMem_RawMalloc(sizeof(*xi) + xi->len);
    if (copy == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(copy, xi, sizeof(*xi) + xi->len);
    reader_t r = {copy->data, copy->data + copy->len};
    while (r.p < r.end)
        walk_value(&r, HANDLES_TAKE);
    return copy;
}

bool pxpy_xi_equal(const pxpy_xi_t *a, const pxpy_xi_t *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

uint64_t pxpy_xi_hash(const pxpy_xi_t *xi)
{
    /* FNV-1a: the data of a key's matching form is short. */
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < xi->len; i++) {
        h ^= xi->data[i];
        h *= 0x100000001b3u;
    }
    return h;
}

size_t pxpy_xi_size(const pxpy_xi_t *xi) { return sizeof(*xi) + xi->len; }

bool pxpy_xi_is_exception(const pxpy_xi_t *xi)
{
    return xi->len > 0 && xi->data[0] == TAG_EXCEPTION;
}

static int put_ref(writer_t *w, PyObject *module, PyObject *qualname)
{
    Py_ssize_t mlen, qlen;
    const char *m = PyUnicode_AsUTF8AndSize(module, &mlen);
    const char *q = m ? PyUnicode_AsUTF8AndSize(qualname, &qlen) : NULL;
    if (q == NULL)
        return -1;
    size_t ml = (size_t)mlen, ql = (size_t)qlen;
    if (grow(w, 1 + 2 * sizeof(size_t) + ml + ql) < 0)
        return -1;
    unsigned char tag = TAG_REF;
    copy(w, &tag, 1);
    copy(w, &ml, sizeof(ml));
    copy(w, m, ml);
    copy(w, &ql, sizeof(ql));
    copy(w, q, ql);
    return 0;
}

/* ---- encoding ----------------------------------------------------------- */

/* The TypeError for a value a shared container (named by who) cannot
 * hold, with what to store instead. */
static int value_error(pxpy_state *st, const char *who, PyObject *o)
{
    const char *instead;
    if (PyList_Check(o) || PyAnySet_Check(o))
        instead = "store a tuple of its items";
    else if (PyDict_Check(o))
        instead = "store a tuple of its (key, value) pairs";
    else if (PyCallable_Check(o))
        instead = "store the name of the function (or class) and look it "
                  "up where it is used";
    else if (pxpy_scont_of(st, o) != NULL)
        instead = "a shared container holds no other (that could make a "
                  "cycle that is never freed): pass both to the workers";
    else
        instead = "store a tuple of its fields, or its pickle as bytes";
    PyErr_Format(PyExc_TypeError,
                 "%s in mode 'interpreters' holds values that can cross "
                 "interpreters (None, bool, int, float, str, bytes, tuples "
                 "of these, SharedBuffer); got %.100s: %s, or use mode "
                 "'threads' or 'gil'",
                 who, Py_TYPE(o)->tp_name, instead);
    return -1;
}

static int encode_value(pxpy_state *st, writer_t *w, PyObject *o,
                        const char *who);

static int encode_pickled(pxpy_state *st, writer_t *w, PyObject *o,
                          const char *who)
{
    if (load_helper(st) < 0)
        return -1;
    PyObject *data = PyObject_CallOneArg(st->xi->dumps, o);
    if (data == NULL) {
        PyObject *cause = PyErr_GetRaisedException();
        PyErr_Format(PyExc_TypeError,
                     "%s of type %.100s cannot cross to another interpreter "
                     "(pickling failed: %S): %s",
                     who, Py_TYPE(o)->tp_name, cause, crossing_rule);
        PyObject *exc = PyErr_GetRaisedException();
        PyException_SetCause(exc, cause);
        PyErr_SetRaisedException(exc);
        return -1;
    }
    int rc = put_chunk(w, TAG_PICKLE, PyBytes_AS_STRING(data),
                       (size_t)PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return rc;
}

/* A class that cannot be found by name (the error is set) may still cross
 * as the recipe that makes it again (pyparallel._interp.class_recipe);
 * otherwise the error stands. */
static int encode_class_recipe(pxpy_state *st, writer_t *w, PyObject *cls)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *recipe = load_helper(st) == 0
                           ? PyObject_CallOneArg(st->xi->class_recipe, cls)
                           : NULL;
    if (recipe == NULL || !PyBytes_Check(recipe)) {
        Py_XDECREF(recipe);
        PyErr_SetRaisedException(exc);
        return -1;
    }
    Py_DECREF(exc);
    int rc = put_chunk(w, TAG_PICKLE, PyBytes_AS_STRING(recipe),
                       (size_t)PyBytes_GET_SIZE(recipe));
    Py_DECREF(recipe);
    return rc;
}

/* A connection's Transport crosses as a handle on the same connection. */
static int encode_transport(pxpy_state *st, writer_t *w, pxpy_transport_t *t,
                            const char *who)
{
    px_conn_t *conn =
        t->kind == PXPY_TRANSPORT_CONNECTION ? atomic_load(&t->conn) : NULL;
    if (conn == NULL) {
        PyErr_Format(st->async_error,
                     "%s: only a connection's transport crosses to another "
                     "interpreter (not a listener's, nor a client's before "
                     "it connects)",
                     who);
        return -1;
    }
    px_conn_ref(conn);
    if (put_ptr(w, TAG_TRANSPORT, conn) < 0) {
        px_conn_unref(conn);
        return -1;
    }
    return 0;
}

static int encode_str(writer_t *w, PyObject *o)
{
    unsigned char kind = (unsigned char)PyUnicode_KIND(o);
    Py_ssize_t n = PyUnicode_GET_LENGTH(o);
    size_t len = (size_t)n;
    if (grow(w, 2 + sizeof(len) + len * kind) < 0)
        return -1;
    unsigned char tag = TAG_STR;
    copy(w, &tag, 1);
    copy(w, &kind, 1);
    copy(w, &len, sizeof(len));
    copy(w, PyUnicode_DATA(o), len * kind);
    return 0;
}

static int encode_int(writer_t *w, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        int64_t v64 = v;
        return put_fixed(w, TAG_INT, &v64, sizeof(v64));
    }
    Py_ssize_t n =
        PyLong_AsNativeBytes(o, NULL, 0, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
    if (n < 0)
        return -1;
    size_t len = (size_t)n;
    if (grow(w, 1 + sizeof(len) + len) < 0)
        return -1;
    unsigned char *at = w->xi->data + w->xi->len + 1 + sizeof(len);
    if (PyLong_AsNativeBytes(o, at, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN) < 0)
        return -1;
    unsigned char tag = TAG_BIGINT;
    copy(w, &tag, 1);
    copy(w, &len, sizeof(len));
    w->xi->len += len;
    return 0;
}

static int encode_value(pxpy_state *st, writer_t *w, PyObject *o,
                        const char *who)
{
    if (o == Py_None)
        return put_tag(w, TAG_NONE);
    if (o == Py_True)
        return put_tag(w, TAG_TRUE);
    if (o == Py_False)
        return put_tag(w, TAG_FALSE);
    if (PyLong_CheckExact(o))
        return encode_int(w, o);
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        return put_fixed(w, TAG_FLOAT, &d, sizeof(d));
    }
    if (PyUnicode_CheckExact(o))
        return encode_str(w, o);
    if (PyBytes_CheckExact(o))
        return put_chunk(w, TAG_BYTES, PyBytes_AS_STRING(o),
                         (size_t)PyBytes_GET_SIZE(o));
    if (PyTuple_CheckExact(o)) {
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        size_t count = (size_t)n;
        if (put_fixed(w, TAG_TUPLE, &count, sizeof(count)) < 0)
            return -1;
        if (Py_EnterRecursiveCall(" while encoding a tuple for another "
                                  "interpreter"))
            return -1;
        int rc = 0;
        for (Py_ssize_t i = 0; i < n && rc == 0; i++)
            rc = encode_value(st, w, PyTuple_GET_ITEM(o, i), who);
        Py_LeaveRecursiveCall();
        return rc;
    }
    pxpy_region_t *region = pxpy_sharedbuf_region(st, o);
    if (region != NULL) {
        pxpy_region_ref(region);
        if (put_ptr(w, TAG_BUFFER, region) < 0) {
            pxpy_region_unref(region);
            return -1;
        }
        return 0;
    }
    if (w->values_only != NULL)
        return value_error(st, w->values_only, o);
    pxpy_scont_t *shared = pxpy_scont_of(st, o);
    if (shared != NULL) {
        pxpy_scont_ref(shared);
        if (put_ptr(w, TAG_SHARED, shared) < 0) {
            pxpy_scont_unref(shared);
            return -1;
        }
        return 0;
    }
    pxpy_chan_t *chan = pxpy_channel_queue(st, o);
    if (chan != NULL) {
        pxpy_chan_ref(chan);
        if (put_ptr(w, TAG_CHANNEL, chan) < 0) {
            pxpy_chan_unref(chan);
            return -1;
        }
        return 0;
    }
    if (PyObject_TypeCheck(o, st->transport_type))
        return encode_transport(st, w, (pxpy_transport_t *)o, who);
    if (pxpy_xi_by_name(o)) {
        PyObject *module, *qualname;
        if (pxpy_xi_name_of(st, o, who, &module, &qualname) < 0)
            return PyType_Check(o) ? encode_class_recipe(st, w, o) : -1;
        int rc = put_ref(w, module, qualname);
        Py_DECREF(module);
        Py_DECREF(qualname);
        return rc;
    }
    int locked = pxpy_has_lock(st, o);
    if (locked != 0) {
        if (locked > 0)
            PyErr_Format(
                PyExc_TypeError,
                "%s of type %.100s is protected (px.protect, or a px.dict or "
                "px.list made for another mode) and cannot cross to another "
                "interpreter: a copy would not be guarded by its lock. In mode "
                "'interpreters' share state through px.dict(), px.list() or "
                "px.xlist() made in this mode, a SharedBuffer or a Channel; "
                "or use mode 'threads' or 'gil'",
                who, Py_TYPE(o)->tp_name);
        return -1;
    }
    return encode_pickled(st, w, o, who);
}

/* A failed encoding still owns the handles written so far. */
static pxpy_xi_t *finish(writer_t *w, int rc)
{
    if (rc < 0) {
        pxpy_xi_free(w->xi);
        return NULL;
    }
    return w->xi;
}

pxpy_xi_t *pxpy_xi_encode(pxpy_state *st, PyObject *obj, const char *who)
{
    writer_t w;
    if (writer_init(&w) < 0)
        return NULL;
    return finish(&w, encode_value(st, &w, obj, who));
}

pxpy_xi_t *pxpy_xi_encode_value(pxpy_state *st, PyObject *obj, const char *who)
{
    writer_t w;
    if (writer_init(&w) < 0)
        return NULL;
    w.values_only = who;
    return finish(&w, encode_value(st, &w, obj, who));
}

pxpy_xi_t *pxpy_xi_encode_callable(pxpy_state *st, PyObject *func,
                                   const char *who)
{
    writer_t w;
    if (writer_init(&w) < 0)
        return NULL;
    int rc;
    if (pxpy_xi_by_name(func)) {
        rc = encode_value(st, &w, func, who);
    } else if (PyMethod_Check(func) && !PyType_Check(PyMethod_GET_SELF(func))) {
        /* Pickling takes the instance along: say so when it cannot. */
        rc = encode_pickled(st, &w, func, who);
        if (rc < 0 && PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyObject *cause = PyErr_GetRaisedException();
            char what[160];
            PyOS_snprintf(what, sizeof(what),
                          "is a method bound to a %.100s instance that cannot "
                          "be pickled",
                          Py_TYPE(PyMethod_GET_SELF(func))->tp_name);
            pxpy_xi_name_error(who, func, what);
            PyObject *exc = PyErr_GetRaisedException();
            PyException_SetCause(exc, cause);
            PyErr_SetRaisedException(exc);
        }
    } else {
        rc = encode_value(st, &w, func, who);
    }
    return finish(&w, rc);
}

pxpy_xi_t *pxpy_xi_encode_exception(pxpy_state *st)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *pair = NULL;
    if (load_helper(st) == 0)
        pair = PyObject_CallOneArg(st->xi->encode_exception, exc);
    PyObject *payload = NULL, *text = NULL;
    if (pair != NULL && PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
        payload = PyTuple_GET_ITEM(pair, 0);
        text = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_Check(payload))
            payload = NULL;
        Py_INCREF(text);
    } else {
        /* The helper failed (out of memory?): send what we can. */
        PyErr_Clear();
        text = PyUnicode_FromFormat("%s: %S\n", Py_TYPE(exc)->tp_name, exc);
        if (text == NULL) {
            PyErr_Clear();
            text = PyUnicode_FromString("an exception\n");
        }
    }
    size_t plen = payload ? (size_t)PyBytes_GET_SIZE(payload) : 0;
    Py_ssize_t tlen = 0;
    const char *t = text ? PyUnicode_AsUTF8AndSize(text, &tlen) : NULL;
    writer_t w = {NULL, 0, NULL};
    int rc = t == NULL ? -1 : writer_init(&w);
    if (rc == 0)
        rc = grow(&w, 2 + 2 * sizeof(size_t) + plen + (size_t)tlen);
    if (rc == 0) {
        unsigned char tag = TAG_EXCEPTION, has_payload = payload != NULL;
        size_t tl = (size_t)tlen;
        copy(&w, &tag, 1);
        copy(&w, &has_payload, 1);
        if (has_payload) {
            copy(&w, &plen, sizeof(plen));
            copy(&w, PyBytes_AS_STRING(payload), plen);
        }
        copy(&w, &tl, sizeof(tl));
        copy(&w, t, tl);
    }
    Py_XDECREF(text);
    Py_XDECREF(pair);
    Py_DECREF(exc);
    if (rc < 0 && w.xi != NULL) {
        PyMem_RawFree(w.xi);
        return NULL;
    }
    return rc < 0 ? NULL : w.xi;
}

/* ---- decoding ----------------------------------------------------------- */

/* A reference, through the worker interpreter's cache. */
static PyObject *decode_ref(pxpy_state *st, const char *raw, size_t rawlen,
                            const char *m, size_t mlen, const char *q,
                            size_t qlen)
{
    pxpy_xistate_t *x = st->xi;
    PyObject *key = NULL;
    if (pxpy_in_worker_interp(st)) {
        key = PyBytes_FromStringAndSize(raw, (Py_ssize_t)rawlen);
        if (key == NULL)
            return NULL;
        PyObject *found;
        if (PyDict_GetItemRef(x->resolved, key, &found) != 0) {
            Py_DECREF(key);
            return found; /* or NULL with an error */
        }
    }
    PyObject *module = PyUnicode_DecodeUTF8(m, (Py_ssize_t)mlen, NULL);
    PyObject *qualname =
        module ? PyUnicode_DecodeUTF8(q, (Py_ssize_t)qlen, NULL) : NULL;
    PyObject *obj = NULL;
    if (qualname != NULL && load_helper(st) == 0)
        obj = PyObject_CallFunctionObjArgs(x->resolve, module, qualname, NULL);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    if (obj != NULL && key != NULL && PyDict_SetItem(x->resolved, key, obj) < 0)
        Py_CLEAR(obj);
    Py_XDECREF(key);
    return obj;
}

static PyObject *decode_value(pxpy_state *st, reader_t *r)
{
    const unsigned char *start = r->p;
    unsigned char tag = get_tag(r);
    size_t n;
    switch (tag) {
    case TAG_NONE:
        Py_RETURN_NONE;
    case TAG_TRUE:
        Py_RETURN_TRUE;
    case TAG_FALSE:
        Py_RETURN_FALSE;
    case TAG_INT: {
        int64_t v;
        memcpy(&v, r->p, sizeof(v));
        r->p += sizeof(v);
        return PyLong_FromLongLong(v);
    }
    case TAG_BIGINT: {
        const char *p = get_bytes(r, &n);
        return PyLong_FromNativeBytes(p, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
    }
    case TAG_FLOAT: {
        double d;
        memcpy(&d, r->p, sizeof(d));
        r->p += sizeof(d);
        return PyFloat_FromDouble(d);
    }
    case TAG_STR: {
        int kind = *r->p++;
        n = get_size(r);
        const void *p = r->p;
        r->p += n * (size_t)kind;
        return PyUnicode_FromKindAndData(kind, p, (Py_ssize_t)n);
    }
    case TAG_BYTES: {
        const char *p = get_bytes(r, &n);
        return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    }
    case TAG_TUPLE: {
        n = get_size(r);
        PyObject *t = PyTuple_New((Py_ssize_t)n);
        for (size_t i = 0; i < n; i++) {
            if (t == NULL) {
                walk_value(r, HANDLES_KEEP);
                continue;
            }
            PyObject *item = decode_value(st, r);
            if (item == NULL)
                Py_CLEAR(t);
            else
                PyTuple_SET_ITEM(t, (Py_ssize_t)i, item);
        }
        return t;
    }
    case TAG_PICKLE: {
        const char *p = get_bytes(r, &n);
        if (load_helper(st) < 0)
            return NULL;
        PyObject *view =
            PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
        PyObject *o = view ? PyObject_CallOneArg(st->xi->loads, view) : NULL;
        Py_XDECREF(view);
        return o;
    }
    case TAG_REF: {
        size_t mlen, qlen;
        const char *m = get_bytes(r, &mlen);
        const char *q = get_bytes(r, &qlen);
        return decode_ref(st, (const char *)start, (size_t)(r->p - start), m,
                          mlen, q, qlen);
    }
    case TAG_BUFFER:
        return pxpy_sharedbuf_wrap(st, get_ptr(r));
    case TAG_CHANNEL:
        return pxpy_channel_wrap(st, get_ptr(r));
    case TAG_TRANSPORT:
        return pxpy_transport_handle(st, get_ptr(r));
    case TAG_SHARED:
        return pxpy_scont_wrap(st, get_ptr(r));
    case TAG_EXCEPTION: {
        PyObject *payload = Py_NewRef(Py_None);
        if (get_tag(r)) {
            const char *p = get_bytes(r, &n);
            Py_SETREF(payload, PyBytes_FromStringAndSize(p, (Py_ssize_t)n));
        }
        const char *t = get_bytes(r, &n);
        PyObject *text = PyUnicode_DecodeUTF8(t, (Py_ssize_t)n, "replace");
        PyObject *exc = NULL;
        if (payload != NULL && text != NULL && load_helper(st) == 0)
            exc = PyObject_CallFunctionObjArgs(
                st->xi->decode_exception, payload, text, st->async_error, NULL);
        Py_XDECREF(payload);
        Py_XDECREF(text);
        return exc;
    }
    default:
        PyErr_Format(PyExc_SystemError,
                     "pyparallel: corrupt cross-interpreter data (tag %d)",
                     (int)tag);
        return NULL;
    }
}

PyObject *pxpy_xi_decode(pxpy_state *st, const pxpy_xi_t *xi)
{
    reader_t r = {xi->data, xi->data + xi->len};
    return decode_value(st, &r);
}

/* ---- the sub-state ------------------------------------------------------ */

int pxpy_xi_check_bootstrapped(pxpy_state *st, const char *fname)
{
    if (st->xi == NULL || st->xi->importing_main == 0)
        return 0;
    PyErr_Format(PyExc_RuntimeError,
                 "%s was called while a worker interpreter imported the main "
                 "script: in mode 'interpreters' each worker imports the "
                 "main script to find its functions and classes (as "
                 "multiprocessing's spawn does), so the code that starts the "
                 "program must be under `if __name__ == \"__main__\":`",
                 fname);
    return -1;
}

static PyObject *importing_main(PyObject *module, PyObject *flag)
{
    pxpy_state *st = pxpy_get_state(module);
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    st->xi->importing_main += on ? 1 : -1;
    Py_RETURN_NONE;
}

static PyMethodDef xi_methods[] = {
    {"_importing_main", importing_main, METH_O,
     "_importing_main(flag, /)\n--\n\nMark the start (True) or end (False) "
     "of the main script's import in this interpreter."},
    {NULL, NULL, 0, NULL},
};

int pxpy_xi_exec(PyObject *module, pxpy_state *st)
{
    st->xi = PyMem_RawCalloc(1, sizeof(*st->xi));
    if (st->xi == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->xi->resolved = PyDict_New();
    if (st->xi->resolved == NULL)
        return -1;
    return PyModule_AddFunctions(module, xi_methods);
}

int pxpy_xi_traverse(pxpy_state *st, visitproc visit, void *arg)
{
    pxpy_xistate_t *x = st->xi;
    if (x == NULL)
        return 0;
    Py_VISIT(x->dumps);
    Py_VISIT(x->loads);
    Py_VISIT(x->resolve);
    Py_VISIT(x->encode_exception);
    Py_VISIT(x->decode_exception);
    Py_VISIT(x->class_recipe);
    Py_VISIT(x->resolved);
    return 0;
}

void pxpy_xi_free_state(pxpy_state *st)
{
    pxpy_xistate_t *x = st->xi;
    if (x == NULL)
        return;
    Py_CLEAR(x->dumps);
    Py_CLEAR(x->loads);
    Py_CLEAR(x->resolve);
    Py_CLEAR(x->encode_exception);
    Py_CLEAR(x->decode_exception);
    Py_CLEAR(x->class_recipe);
    Py_CLEAR(x->resolved);
    st->xi = NULL;
    PyMem_RawFree(x);
}
