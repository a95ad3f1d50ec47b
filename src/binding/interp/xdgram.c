/*
 * xdgram.c - datagram endpoints across interpreters: in mode
 * "interpreters" an endpoint's protocol instance lives in the interpreter
 * of the worker that serves it (core/datagram.c). The main interpreter
 * records the protocol class by module and qualified name; the worker finds
 * it again in its own interpreter when the endpoint opens, and the main
 * interpreter's DatagramTransport is released there once the endpoint is
 * closed.
 */
#include "interp/interp_internal.h"

struct pxpy_xi_s *pxpy_xdgram_encode_class(pxpy_state *st, PyObject *cls)
{
    return pxpy_xi_encode(st, cls, "datagram_endpoint() protocol");
}

void pxpy_xdgram_free_class(struct pxpy_xi_s *cls) { pxpy_xi_free(cls); }

PyObject *pxpy_xdgram_worker_class(pxpy_state **st, const struct pxpy_xi_s *cls)
{
    *st = pxpy_interp_state((*st)->runtime, px_current_worker());
    PyObject *found = pxpy_xi_decode(*st, cls);
    if (found != NULL && !PyType_Check(found)) {
        PyErr_Format(PyExc_TypeError,
                     "the protocol found in worker interpreter %d is not a "
                     "class but %R",
                     (*st)->interp_index, found);
        Py_CLEAR(found);
    }
    return found;
}

void pxpy_xdgram_release_main(pxpy_state *st, PyObject *obj)
{
    pxpy_entered_t e = pxpy_interp_enter(st->runtime, PXPY_MAIN);
    Py_DECREF(obj);
    pxpy_interp_leave(e);
}
