/*
 * module.c - the pyparallel._core module: definition, per-module state,
 * the exec slot that builds it, modes, and the conversion of engine errors
 * and callback failures into Python's terms.
 *
 * The module uses multi-phase initialisation and keeps everything in its
 * state (pxpy_state), so each interpreter that imports it gets its own
 * copy; it declares support for per-interpreter GILs and for running
 * without the GIL. Each file of the binding adds its types and functions in
 * its own *_exec function, called from module_exec below. The only statics
 * are read-only tables (slots, the definition, the name table).
 */
#include "interp/interp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const interned_names[PXPY_STR_COUNT] = {
#define PXPY_STR_TEXT(name, text) [PXPY_STR_##name] = text,
    PXPY_STR_MAP(PXPY_STR_TEXT)
#undef PXPY_STR_TEXT
};

_Static_assert(PXPY_STR_COUNT <= 32, "grow pxpy_state.str_cache");

pxpy_state *pxpy_get_state(PyObject *module)
{
    return (pxpy_state *)PyModule_GetState(module);
}

pxpy_state *pxpy_state_from_type(PyTypeObject *type)
{
    return (pxpy_state *)PyType_GetModuleState(type);
}

static struct PyModuleDef module_def;

pxpy_state *pxpy_state_from_object(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &module_def);
    return module ? pxpy_get_state(module) : NULL;
}

/* ---- modes ------------------------------------------------------------- */

static const char *const mode_names[] = {
    [PXPY_MODE_THREADS] = "threads",
    [PXPY_MODE_GIL] = "gil",
    [PXPY_MODE_INTERPRETERS] = "interpreters",
};

const char *pxpy_mode_name(pxpy_mode_t mode) { return mode_names[mode]; }

/* Whether the running interpreter has its GIL enabled (a free-threaded build
 * may run with PYTHON_GIL=1). -1 with an exception set. */
static int gil_enabled(void)
{
#ifdef Py_GIL_DISABLED
    PyObject *fn = PySys_GetObject("_is_gil_enabled"); /* borrowed */
    if (fn == NULL)
        return 0;
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r == NULL)
        return -1;
    int enabled = PyObject_IsTrue(r);
    Py_DECREF(r);
    return enabled;
#else
    return 1;
#endif
}

static int check_mode(pxpy_mode_t mode)
{
    int gil = gil_enabled();
    if (gil < 0)
        return -1;
    switch (mode) {
    case PXPY_MODE_THREADS:
#ifndef Py_GIL_DISABLED
        PyErr_SetString(PyExc_ValueError,
                        "mode 'threads' needs a free-threaded CPython "
                        "(python3.13t or later); on this build use mode "
                        "'interpreters' (its default) or 'gil'");
        return -1;
#else
        return 0;
#endif
    case PXPY_MODE_GIL:
        if (!gil) {
            PyErr_SetString(PyExc_ValueError,
                            "mode 'gil' needs the GIL, and this free-threaded "
                            "interpreter runs without it: use mode 'threads' "
                            "(or start Python with PYTHON_GIL=1)");
            return -1;
        }
        return 0;
    case PXPY_MODE_INTERPRETERS:
#ifdef Py_GIL_DISABLED
        PyErr_SetString(PyExc_ValueError,
                        "mode 'interpreters' needs a CPython with the GIL "
                        "(one interpreter with its own GIL per worker); "
                        "this free-threaded build runs Python in parallel "
                        "in mode 'threads'");
        return -1;
#else
        return 0;
#endif
    default:
        break;
    }
    PyErr_SetString(PyExc_ValueError,
                    "unsupported mode; supported modes: threads, "
                    "interpreters, gil");
    return -1;
}

int pxpy_parse_mode(PyObject *name, pxpy_mode_t *mode)
{
    const char *text;
    if (name != NULL && name != Py_None) {
        if (!PyUnicode_Check(name)) {
            PyErr_Format(PyExc_TypeError, "mode must be a str, not %.100s",
                         Py_TYPE(name)->tp_name);
            return -1;
        }
        text = PyUnicode_AsUTF8(name);
        if (text == NULL)
            return -1;
    } else {
        text = getenv("PYPARALLEL_MODE");
        if (text == NULL || text[0] == '\0') {
#ifdef Py_GIL_DISABLED
            int gil = gil_enabled();
            if (gil < 0)
                return -1;
            *mode = gil ? PXPY_MODE_GIL : PXPY_MODE_THREADS;
#else
            *mode = PXPY_MODE_INTERPRETERS;
#endif
            return 0;
        }
    }
    if (strcasecmp(text, "threads") == 0)
        *mode = PXPY_MODE_THREADS;
    else if (strcasecmp(text, "gil") == 0)
        *mode = PXPY_MODE_GIL;
    else if (strcasecmp(text, "interpreters") == 0)
        *mode = PXPY_MODE_INTERPRETERS;
    else {
        PyErr_Format(PyExc_ValueError,
                     "unknown mode '%.100s'%s; supported modes: threads, "
                     "interpreters, gil",
                     text,
                     name && name != Py_None ? "" : " (from PYPARALLEL_MODE)");
        return -1;
    }
    return check_mode(*mode);
}

/* ---- errors ------------------------------------------------------------ */

PyObject *pxpy_gaierror(int code, PyObject *message)
{
    PyObject *socket = PyImport_ImportModule("socket");
    PyObject *type = socket ? PyObject_GetAttrString(socket, "gaierror") : NULL;
    Py_XDECREF(socket);
    PyObject *exc =
        type ? PyObject_CallFunction(type, "iO", PX_EAI_CODE(code), message)
             : NULL;
    Py_XDECREF(type);
    return exc;
}

PyObject *pxpy_raise_engine_error(pxpy_state *st, int code, const char *context)
{
    if (code == -ENOMEM)
        return PyErr_NoMemory();
    if (PX_IS_EAI(code)) {
        /* A name that did not resolve: socket.gaierror, as
         * socket.getaddrinfo raises it. */
        PyObject *message =
            context ? PyUnicode_FromFormat("%s: %s", context, px_strerror(code))
                    : PyUnicode_FromString(px_strerror(code));
        PyObject *exc = message ? pxpy_gaierror(code, message) : NULL;
        Py_XDECREF(message);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (code < 0 && code > -4096) {
        PyObject *exc = context
                            ? PyObject_CallFunction(PyExc_OSError, "iss", -code,
                                                    px_strerror(code), context)
                            : PyObject_CallFunction(PyExc_OSError, "is", -code,
                                                    px_strerror(code));
        if (exc != NULL) {
            /* OSError() picks the subclass for the errno. */
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    const char *advice = "";
    if (code == PX_ESENDBUF)
        advice = ": wait for send_complete or pause producing until the "
                 "peer has read what is queued";
    else if (code == PX_ESTOPPED)
        advice = " (run() ended or stop() was called)";
    if (context)
        PyErr_Format(st->async_error, "%s: %s%s", context, px_strerror(code),
                     advice);
    else
        PyErr_Format(st->async_error, "%s%s", px_strerror(code), advice);
    return NULL;
}

void pxpy_report_callback_error(pxpy_state *st, const char *where)
{
    if (st->interp_index >= 0 && px_current_worker() >= 0) {
        /* Logged by the main interpreter, where logging is configured
         * (from other threads, the worker's logging forwards it). */
        pxpy_interp_report_error(st, where);
        return;
    }
    PyObject *exc = PyErr_GetRaisedException();
    pxpy_count_error(st);
    if (exc == NULL)
        return;
    PyObject *fmt = PyUnicode_FromString("unhandled exception in %s");
    PyObject *text = PyUnicode_FromString(where);
    PyObject *kwnames = PyTuple_Pack(1, PXPY_STR(st, EXC_INFO));
    PyObject *r = NULL;
    if (fmt && text && kwnames && st->logger) {
        PyObject *args[] = {st->logger, fmt, text, exc};
        r = PyObject_VectorcallMethod(PXPY_STR(st, ERROR), args,
                                      3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                      kwnames);
    }
    if (r == NULL) {
        /* Logging itself failed: the callback's error must not vanish. */
        PyErr_Clear();
        PyErr_SetRaisedException(Py_NewRef(exc));
        PyErr_FormatUnraisable("Exception in pyparallel %s", where);
    }
    Py_XDECREF(r);
    Py_XDECREF(kwnames);
    Py_XDECREF(text);
    Py_XDECREF(fmt);
    Py_DECREF(exc);
}

/* ---- module lifecycle -------------------------------------------------- */

PyObject *pxpy_import_attr(const char *module, const char *attr)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL)
        return NULL;
    PyObject *v = PyObject_GetAttrString(m, attr);
    Py_DECREF(m);
    return v;
}

static int add_exceptions(PyObject *module, pxpy_state *st)
{
    st->async_error = PyErr_NewExceptionWithDoc(
        "pyparallel.AsyncError",
        "Root of pyparallel's own errors (a closed transport, a stopped "
        "loop, a full send buffer, ...).",
        NULL, NULL);
    if (st->async_error == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "AsyncError", st->async_error) < 0)
        return -1;
    st->protection_error = PyErr_NewExceptionWithDoc(
        "pyparallel.ProtectionError",
        "A lock operation on an object that is not protected "
        "(see pyparallel.protect).",
        st->async_error, NULL);
    if (st->protection_error == NULL)
        return -1;
    return PyModule_AddObjectRef(module, "ProtectionError",
                                 st->protection_error);
}

static int module_exec(PyObject *module)
{
    pxpy_state *st = pxpy_get_state(module);
    st->interp_index = PXPY_MAIN;
    for (int i = 0; i < PXPY_STR_COUNT; i++) {
        st->str_cache[i] = PyUnicode_InternFromString(interned_names[i]);
        if (st->str_cache[i] == NULL)
            return -1;
    }
    if (add_exceptions(module, st) < 0)
        return -1;
    PyObject *get_logger = pxpy_import_attr("logging", "getLogger");
    if (get_logger == NULL)
        return -1;
    st->logger = PyObject_CallFunction(get_logger, "s", "pyparallel");
    Py_DECREF(get_logger);
    if (st->logger == NULL)
        return -1;
    if (pxpy_runtime_exec(module, st) < 0 || pxpy_future_exec(module, st) < 0 ||
        pxpy_work_exec(module, st) < 0 || pxpy_protocol_exec(module, st) < 0 ||
        pxpy_transport_exec(module, st) < 0 ||
        pxpy_register_exec(module, st) < 0 ||
        pxpy_datagram_exec(module, st) < 0 || pxpy_files_exec(module, st) < 0 ||
        pxpy_shared_exec(module, st) < 0 || pxpy_http_exec(module, st) < 0 ||
        pxpy_aio_exec(module, st) < 0 || pxpy_interp_exec(module, st) < 0 ||
        pxpy_scont_exec(module, st) < 0)
        return -1;
    if (pxpy_ws_exec(module, st) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    pxpy_state *st = pxpy_get_state(module);
    if (st == NULL)
        return 0;
    Py_VISIT(st->transport_type);
    Py_VISIT(st->datagram_type);
    Py_VISIT(st->timer_type);
    Py_VISIT(st->ilist_type);
    Py_VISIT(st->lock_guard_type);
    Py_VISIT(st->protocol_type);
    Py_VISIT(st->async_error);
    Py_VISIT(st->protection_error);
    Py_VISIT(st->logger);
    Py_VISIT(st->future_type);
    Py_VISIT(st->sdict_type);
    Py_VISIT(st->slist_type);
    Py_VISIT(st->sxlist_type);
    for (int i = 0; i < PXPY_STR_COUNT; i++)
        Py_VISIT(st->str_cache[i]);
    int rc = pxpy_runtime_traverse(st, visit, arg);
    if (rc == 0)
        rc = pxpy_future_traverse(st, visit, arg);
    if (rc == 0)
        rc = pxpy_http_traverse(st, visit, arg);
    if (rc == 0)
        rc = pxpy_ws_traverse(st, visit, arg);
    if (rc == 0)
        rc = pxpy_interp_traverse(st, visit, arg);
    if (rc)
        return rc;
    return pxpy_shared_traverse(st, visit, arg);
}

static int module_clear(PyObject *module)
{
    pxpy_state *st = pxpy_get_state(module);
    if (st == NULL)
        return 0;
    /* The loop's threads use the state: stop them before anything goes.
     * Normally the atexit hook of the package has done so already. */
    pxpy_runtime_free(st);
    pxpy_future_free(st);
    pxpy_shared_free(st);
    pxpy_http_free(st);
    pxpy_ws_free(st);
    pxpy_aio_free(st);
    pxpy_interp_free(st);
    Py_CLEAR(st->transport_type);
    Py_CLEAR(st->datagram_type);
    Py_CLEAR(st->timer_type);
    Py_CLEAR(st->ilist_type);
    Py_CLEAR(st->lock_guard_type);
    Py_CLEAR(st->protocol_type);
    Py_CLEAR(st->async_error);
    Py_CLEAR(st->protection_error);
    Py_CLEAR(st->logger);
    Py_CLEAR(st->future_type);
    Py_CLEAR(st->sdict_type);
    Py_CLEAR(st->slist_type);
    Py_CLEAR(st->sxlist_type);
    for (int i = 0; i < PXPY_STR_COUNT; i++)
        Py_CLEAR(st->str_cache[i]);
    return 0;
}

static void module_free(void *module) { module_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyparallel._core",
    .m_doc = "The C core of pyparallel: the engine loop, transports, work "
             "and shared state.",
    .m_size = sizeof(pxpy_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&module_def); }
