/*
 * xi_names.c - functions and classes that cross interpreters by name: which
 * objects travel as (module, qualified name) rather than pickled, and the
 * check that such a name, looked up again, leads back to the object itself
 * (so that another interpreter finds the same function or class there).
 *
 * What cannot be found by name gets an error naming the rule: lambdas,
 * nested functions and classes, methods bound to an instance, objects
 * replaced at run time, and the functions of a program run with python -c
 * or typed interactively (worker interpreters cannot import that
 * __main__). Modes "threads" and "gil" need none of this: they run in one
 * interpreter.
 */
#include "interp/interp_internal.h"

static PyObject *attr_str(PyObject *obj, const char *name)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v != NULL && !PyUnicode_Check(v))
        Py_CLEAR(v);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

int pxpy_xi_name_error(const char *who, PyObject *obj, const char *what)
{
    PyErr_Format(PyExc_TypeError,
                 "%s %R %s; in mode 'interpreters' it runs in another "
                 "interpreter, where functions and classes are found by "
                 "module and qualified name, so they must be defined at "
                 "module level (lambdas, nested functions and classes, and "
                 "methods bound to an instance cannot be found); or use mode "
                 "'threads' or 'gil'",
                 who, obj, what);
    return -1;
}

static bool is_lambda(PyObject *qualname)
{
    PyObject *suffix = PyUnicode_FromString("<lambda>");
    Py_ssize_t match =
        suffix ? PyUnicode_Tailmatch(qualname, suffix, 0, PY_SSIZE_T_MAX, 1)
               : -1;
    Py_XDECREF(suffix);
    if (match < 0)
        PyErr_Clear();
    return match > 0;
}

/* Whether workers can import the main interpreter's __main__: a script
 * (__file__) or a module run with -m (__spec__), not python -c or an
 * interactive session. */
static bool main_importable(void)
{
    PyObject *name = PyUnicode_FromString("__main__");
    PyObject *main = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    bool importable = false;
    if (main != NULL) {
        PyObject *file = attr_str(main, "__file__");
        PyObject *spec = PyObject_GetAttrString(main, "__spec__");
        importable = file != NULL || (spec != NULL && spec != Py_None);
        Py_XDECREF(file);
        Py_XDECREF(spec);
        Py_DECREF(main);
    }
    PyErr_Clear();
    return importable;
}

int pxpy_xi_name_of(pxpy_state *st, PyObject *obj, const char *who,
                    PyObject **module, PyObject **qualname)
{
    *module = attr_str(obj, "__module__");
    *qualname = attr_str(obj, "__qualname__");
    if (*qualname == NULL)
        *qualname = attr_str(obj, "__name__");
    const char *rule = NULL;
    if (*module == NULL || *qualname == NULL)
        rule = "has no module and qualified name";
    else if (!pxpy_in_worker_interp(st) &&
             PyUnicode_CompareWithASCIIString(*module, "__main__") == 0 &&
             !main_importable())
        rule = "belongs to a program run with python -c or typed "
               "interactively, which worker interpreters cannot import (save "
               "it as a script)";
    else if (PyUnicode_FindChar(*qualname, '<', 0, PY_SSIZE_T_MAX, 1) >= 0)
        rule = is_lambda(*qualname) ? "is a lambda"
                                    : "is defined inside a function";
    PyObject *found = NULL;
    if (rule == NULL) {
        /* Found by the name in this interpreter, it must be obj itself. */
        PyObject *m = PyImport_GetModule(*module);
        if (m == NULL && !PyErr_Occurred())
            rule = "belongs to a module that is not imported";
        found = m;
        Py_ssize_t n = PyUnicode_GetLength(*qualname), start = 0;
        while (found != NULL && start <= n) {
            Py_ssize_t dot = PyUnicode_FindChar(*qualname, '.', start, n, 1);
            if (dot == -2)
                break;
            Py_ssize_t stop = dot < 0 ? n : dot;
            PyObject *part = PyUnicode_Substring(*qualname, start, stop);
            PyObject *next = part ? PyObject_GetAttr(found, part) : NULL;
            Py_XDECREF(part);
            Py_SETREF(found, next);
            start = stop + 1;
        }
        if (PyErr_Occurred())
            PyErr_Clear();
        if (rule == NULL && found != obj)
            rule = "is not what its module and qualified name lead to (it "
                   "was replaced, or created at run time)";
        Py_XDECREF(found);
    }
    if (rule == NULL)
        return 0;
    Py_CLEAR(*module);
    Py_CLEAR(*qualname);
    return pxpy_xi_name_error(who, obj, rule);
}

/* Whether obj is found by name rather than pickled: functions, classes,
 * and functions of modules (builtins). */
bool pxpy_xi_by_name(PyObject *obj)
{
    if (PyFunction_Check(obj) || PyType_Check(obj))
        return true;
    if (PyCFunction_Check(obj)) {
        PyObject *self = PyCFunction_GET_SELF(obj);
        return self == NULL || PyModule_Check(self);
    }
    return false;
}
