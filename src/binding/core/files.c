/*
 * files.c - read_file() and write_file(): whole-file I/O that returns a
 * Future at once, over the engine's px_file_read/px_file_write (engine
 * file.c runs them on its file threads).
 *
 * The result comes back on a worker as a work item, where the Future is
 * settled: on the calling worker when a worker calls (so that a coroutine
 * of its asyncio loop that awaits the Future is woken where it runs), on
 * any worker otherwise. In mode "interpreters" the Future belongs to the
 * caller's interpreter, so the result is settled there: a worker's own, or
 * the main interpreter, which the worker thread enters for it. Each request
 * counts as pending work for run() until it is settled.
 */
#include "interp/interp.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    pxpy_state *st;
    PyObject *future;
    PyObject *path; /* as given (os.fspath), for OSError.filename */
    PyObject *data; /* write_file: the bytes, kept until done */
} file_item_t;

static void file_done(void *arg, int64_t result, char *data, size_t len)
{
    file_item_t *item = arg;
    pxpy_state *st = item->st;
    bool attached = pxpy_attach();
    bool crossing = st->mode == PXPY_MODE_INTERPRETERS;
    pxpy_entered_t e = {0};
    if (crossing)
        e = pxpy_interp_enter(st->runtime, st->interp_index);
    PyObject *value = NULL;
    if (result < 0) {
        int err = (int)-result;
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "isO", err,
                                              strerror(err), item->path);
        if (exc != NULL && pxpy_future_set_exception(item->future, exc) < 0)
            pxpy_report_callback_error(st, "read_file/write_file (the future)");
        Py_XDECREF(exc);
    } else {
        value = item->data ? PyLong_FromLongLong(result)
                           : PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        if (value != NULL && pxpy_future_set_result(item->future, value) < 0)
            pxpy_report_callback_error(st, "read_file/write_file (the future)");
    }
    if (PyErr_Occurred()) {
        /* Out of memory making the result: the Future gets that. */
        PyObject *exc = PyErr_GetRaisedException();
        pxpy_future_set_exception(item->future, exc);
        Py_DECREF(exc);
        PyErr_Clear();
    }
    free(data);
    Py_XDECREF(value);
    Py_DECREF(item->future);
    Py_DECREF(item->path);
    Py_XDECREF(item->data);
    PyMem_RawFree(item);
    if (crossing)
        pxpy_interp_leave(e);
    pxpy_pending_add(st, -1);
    pxpy_detach(attached);
}

/* The path as the engine takes it (bytes, encoded as open() encodes it);
 * *given receives os.fspath(path). */
static PyObject *fs_path(PyObject *path, PyObject **given)
{
    *given = PyOS_FSPath(path);
    if (*given == NULL)
        return NULL;
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(*given, &encoded)) {
        Py_CLEAR(*given);
        return NULL;
    }
    return encoded;
}

/* Starts a request made by start(); returns its Future. */
static PyObject *file_request(PyObject *module, PyObject *path, PyObject *data,
                              uint64_t offset, int64_t length, int flags)
{
    pxpy_state *st = pxpy_get_state(module);
    px_loop_t *loop = pxpy_loop(st);
    if (loop == NULL)
        return NULL;
    PyObject *given = NULL;
    PyObject *encoded = fs_path(path, &given);
    if (encoded == NULL)
        return NULL;
    file_item_t *item = PyMem_RawCalloc(1, sizeof(*item));
    PyObject *future = item ? pxpy_future_new(st) : NULL;
    if (future == NULL) {
        if (item == NULL)
            PyErr_NoMemory();
        PyMem_RawFree(item);
        Py_DECREF(encoded);
        Py_DECREF(given);
        return NULL;
    }
    *item = (file_item_t){st, Py_NewRef(future), given, Py_XNewRef(data)};
    /* A worker settles its own Futures; in mode "interpreters" a worker's
     * interpreter is the worker's. */
    int worker = px_current_worker();
    if (st->mode == PXPY_MODE_INTERPRETERS)
        worker = pxpy_in_worker_interp(st) ? st->interp_index : -1;
    pxpy_pending_add(st, 1);
    int rc = data != NULL
                 ? px_file_write(loop, worker, PyBytes_AS_STRING(encoded),
                                 PyBytes_AS_STRING(data),
                                 (size_t)PyBytes_GET_SIZE(data), flags,
                                 file_done, item)
                 : px_file_read(loop, worker, PyBytes_AS_STRING(encoded),
                                offset, length, file_done, item);
    Py_DECREF(encoded);
    if (rc < 0) {
        pxpy_pending_add(st, -1);
        Py_DECREF(item->future);
        Py_DECREF(item->path);
        Py_XDECREF(item->data);
        PyMem_RawFree(item);
        Py_DECREF(future);
        return pxpy_raise_engine_error(st, rc, NULL);
    }
    return future;
}

static PyObject *read_file(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"path", "offset", "length", NULL};
    PyObject *path, *length_obj = Py_None;
    long long offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$LO:read_file", kwlist,
                                     &path, &offset, &length_obj))
        return NULL;
    long long length = -1;
    if (length_obj != Py_None) {
        length = PyLong_AsLongLong(length_obj);
        if (length == -1 && PyErr_Occurred())
            return NULL;
        if (length < 0) {
            PyErr_SetString(PyExc_ValueError,
                            "read_file() length must be >= 0 or None");
            return NULL;
        }
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "read_file() offset must be >= 0");
        return NULL;
    }
    return file_request(module, path, NULL, (uint64_t)offset, length, 0);
}

static PyObject *write_file(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *const kwlist[] = {"path", "data", "append", "exclusive", NULL};
    PyObject *path, *data;
    int append = 0, exclusive = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|$pp:write_file", kwlist,
                                     &path, &data, &append, &exclusive))
        return NULL;
    /* bytes: immutable, so the file threads may read it without a lock
     * while the caller goes on. */
    PyObject *bytes = pxpy_sendable_to_bytes(data, "write_file() got");
    if (bytes == NULL)
        return NULL;
    PyObject *future = file_request(module, path, bytes, 0, 0,
                                    (append ? PX_FILE_APPEND : 0) |
                                        (exclusive ? PX_FILE_EXCLUSIVE : 0));
    Py_DECREF(bytes);
    return future;
}

static PyMethodDef files_methods[] = {
    {"read_file", (PyCFunction)(void (*)(void))read_file,
     METH_VARARGS | METH_KEYWORDS,
     "read_file($module, /, path, *, offset=0, length=None)\n--\n\n"
     "Read the file (length bytes from offset; None: to the end) off the "
     "workers; returns a Future of the bytes."},
    {"write_file", (PyCFunction)(void (*)(void))write_file,
     METH_VARARGS | METH_KEYWORDS,
     "write_file($module, /, path, data, *, append=False, exclusive=False)\n"
     "--\n\n"
     "Write data to the file (created, truncated unless append; exclusive: "
     "fail when it exists) off the workers; returns a Future of the byte "
     "count."},
    {NULL, NULL, 0, NULL},
};

int pxpy_files_exec(PyObject *module, pxpy_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, files_methods);
}
