/*
 * ops.c - the module functions behind pyparallel.http's operations
 * features (docs/operations.md): the access log, the request counters the
 * metrics read, and their histogram's bounds. The state they drive is the
 * process's (px_http_ops.h), so they act the same from any interpreter;
 * the command line calls them from the main one.
 */
#include "binding.h"
#include "http/http_binding.h"
#include "px_http_ops.h"

#include <string.h>

static const char *const log_formats[] = {"common", "combined", "json"};

static PyObject *access_log_open(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *path;
    const char *format;
    if (!PyArg_ParseTuple(args, "Os:_access_log_open", &path, &format))
        return NULL;
    int f = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(format, log_formats[i]) == 0)
            f = i;
    if (f < 0)
        return PyErr_Format(PyExc_ValueError,
                            "access log format must be common, combined or "
                            "json, not %R",
                            PyTuple_GET_ITEM(args, 1));
    PyObject *encoded = NULL;
    if (path != Py_None && !PyUnicode_FSConverter(path, &encoded))
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = px_http_access_log_open(
        encoded ? PyBytes_AS_STRING(encoded) : NULL, (px_http_log_format_t)f);
    Py_END_ALLOW_THREADS Py_XDECREF(encoded);
    if (rc == PX_EBADSTATE) {
        PyErr_SetString(PyExc_RuntimeError, "the access log is open already");
        return NULL;
    }
    if (rc < 0) {
        errno = -rc;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    Py_RETURN_NONE;
}

static PyObject *access_log_reopen(PyObject *module, PyObject *Py_UNUSED(arg))
{
    (void)module;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = px_http_access_log_reopen();
    Py_END_ALLOW_THREADS if (rc == PX_EBADSTATE)
    {
        PyErr_SetString(PyExc_RuntimeError, "the access log is not open");
        return NULL;
    }
    if (rc < 0) {
        errno = -rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *access_log_flush(PyObject *module, PyObject *Py_UNUSED(arg))
{
    (void)module;
    Py_BEGIN_ALLOW_THREADS px_http_access_log_flush();
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *access_log_close(PyObject *module, PyObject *Py_UNUSED(arg))
{
    (void)module;
    Py_BEGIN_ALLOW_THREADS px_http_access_log_close();
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *counters_enable(PyObject *module, PyObject *arg)
{
    (void)module;
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    px_http_counters_enable(on);
    Py_RETURN_NONE;
}

static PyObject *u64_list(const uint64_t *v, int n)
{
    PyObject *list = PyList_New(n);
    for (int i = 0; list != NULL && i < n; i++) {
        PyObject *o = PyLong_FromUnsignedLongLong(v[i]);
        if (o == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, o);
    }
    return list;
}

/* One dict per worker of the n asked for. */
static PyObject *counters(PyObject *module, PyObject *arg)
{
    (void)module;
    int n = PyLong_AsInt(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0 || n > PX_MAX_WORKERS)
        return PyErr_Format(PyExc_ValueError,
                            "workers must be within 0..%d, not %d",
                            PX_MAX_WORKERS, n);
    px_http_worker_counters_t *c = PyMem_Calloc((size_t)n + 1, sizeof(*c));
    if (c == NULL)
        return PyErr_NoMemory();
    px_http_counters_read(c, n);
    PyObject *list = PyList_New(n);
    for (int w = 0; list != NULL && w < n; w++) {
        PyObject *requests = u64_list(c[w].requests, 6);
        PyObject *duration =
            u64_list(c[w].duration, PX_HTTP_DURATION_BUCKETS + 1);
        PyObject *d =
            requests && duration
                ? Py_BuildValue("{sOsOsKsK}", "requests", requests, "duration",
                                duration, "duration_sum_ns",
                                (unsigned long long)c[w].duration_sum_ns,
                                "body_bytes",
                                (unsigned long long)c[w].body_bytes)
                : NULL;
        Py_XDECREF(requests);
        Py_XDECREF(duration);
        if (d == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, w, d);
    }
    PyMem_Free(c);
    return list;
}

static PyObject *duration_bounds(PyObject *module, PyObject *Py_UNUSED(arg))
{
    (void)module;
    PyObject *t = PyTuple_New(PX_HTTP_DURATION_BUCKETS);
    for (int i = 0; t != NULL && i < PX_HTTP_DURATION_BUCKETS; i++) {
        PyObject *o =
            PyFloat_FromDouble((double)px_http_duration_bounds_ns[i] / 1e9);
        if (o == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

static PyMethodDef ops_methods[] = {
    {"_access_log_open", access_log_open, METH_VARARGS,
     "_access_log_open($module, path, format, /)\n--\n\n"
     "Starts the access log: to path (appended to), or to standard error "
     "when path is None; format is common, combined or json."},
    {"_access_log_reopen", access_log_reopen, METH_NOARGS,
     "_access_log_reopen($module, /)\n--\n\n"
     "Opens the access log's path again (after logrotate renamed it)."},
    {"_access_log_flush", access_log_flush, METH_NOARGS,
     "_access_log_flush($module, /)\n--\n\n"
     "Writes out the lines the workers hold."},
    {"_access_log_close", access_log_close, METH_NOARGS,
     "_access_log_close($module, /)\n--\n\n"
     "Flushes and stops the access log."},
    {"_http_counters_enable", counters_enable, METH_O,
     "_http_counters_enable($module, on, /)\n--\n\n"
     "Turns the per-worker request counters on or off."},
    {"_http_counters", counters, METH_O,
     "_http_counters($module, workers, /)\n--\n\n"
     "Per worker: requests by status class ([0] unanswered, [1] 1xx ... "
     "[5] 5xx), duration histogram counts (not cumulative; the last is "
     "+Inf), duration_sum_ns and body_bytes."},
    {"_http_duration_bounds", duration_bounds, METH_NOARGS,
     "_http_duration_bounds($module, /)\n--\n\n"
     "The duration histogram's upper bounds, in seconds."},
    {NULL, NULL, 0, NULL},
};

int pxpy_http_ops_exec(PyObject *module, pxpy_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, ops_methods);
}
