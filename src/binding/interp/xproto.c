/*
 * xproto.c - protocols across interpreters: what register() records of a
 * protocol class in mode "interpreters", and how a connection finds its
 * protocol in the interpreter of the worker that serves it.
 *
 * register() records the class's module and qualified name (or a recipe
 * to make it again) in a pxpy_xproto_t; each worker finds the class again
 * in its own interpreter and builds its own protocol cache there, on the
 * first connection it serves (or earlier, when register() prewarms it). A
 * connection's Transport, protocol instance and callbacks then live in the
 * interpreter of the worker that serves it. A client connection's worker
 * Transport stands for the main interpreter's client Transport, whose
 * reference (held by the connection) it carries until connection_lost,
 * when it marks that one closed in the main interpreter.
 */
#include "interp/interp_internal.h"

#include <string.h>

pxpy_xproto_t *pxpy_xproto_new(pxpy_state *st, PyObject *cls, int workers)
{
    pxpy_xi_t *encoded = pxpy_xi_encode(st, cls, "register() protocol");
    if (encoded == NULL)
        return NULL;
    pxpy_xproto_t *x =
        PyMem_RawCalloc(1, sizeof(*x) + (size_t)workers * sizeof(PyObject *));
    if (x == NULL) {
        pxpy_xi_free(encoded);
        PyErr_NoMemory();
        return NULL;
    }
    x->cls = encoded;
    x->count = workers;
    return x;
}

void pxpy_xproto_free(pxpy_xproto_t *x)
{
    if (x == NULL)
        return;
    pxpy_xi_free(x->cls);
    PyMem_RawFree(x);
}

void pxpy_xproto_clear_worker(pxpy_xproto_t *x, int index)
{
    if (index < x->count)
        Py_CLEAR(x->per_worker[index]);
}

/* The class of x found in this worker's interpreter, and its cache there
 * (new reference); NULL with an exception. */
static PyObject *resolve_protocol(pxpy_state *wst, pxpy_xproto_t *x)
{
    PyObject *cls = pxpy_xi_decode(wst, x->cls);
    if (cls == NULL)
        return NULL;
    PyObject *protocol = NULL;
    if (!PyType_Check(cls))
        PyErr_Format(PyExc_TypeError,
                     "the protocol found in worker interpreter %d is not a "
                     "class but %R",
                     wst->interp_index, cls);
    else
        protocol = pxpy_protocol_new(wst, cls);
    Py_DECREF(cls);
    return protocol;
}

/* The listener's protocol cache in worker index's interpreter (borrowed),
 * made on first use; NULL with an exception. A prewarm (its loop given)
 * does not fill the cache once the worker retires: the worker's
 * interpreter may be replaced, and recycle.c clears the caches there
 * first, under the same GIL, so a cache filled after would outlive it. */
static PyObject *worker_protocol(pxpy_state *wst, pxpy_xproto_t *x,
                                 px_loop_t *prewarming)
{
    int index = wst->interp_index;
    if (x->per_worker[index] != NULL)
        return x->per_worker[index];
    PyObject *protocol = resolve_protocol(wst, x);
    if (protocol == NULL)
        return NULL;
    if (prewarming != NULL && px_worker_retiring(prewarming, index)) {
        Py_DECREF(protocol);
        return Py_None;
    }
    /* Resolving may have released the GIL to another thread of this
     * worker that resolved it too. */
    if (x->per_worker[index] == NULL)
        x->per_worker[index] = protocol;
    else
        Py_DECREF(protocol);
    return x->per_worker[index];
}

/* Finding the class in a worker's interpreter imports its module there
 * the first time (the main script's re-import included), which can take
 * most of a second: register() has every worker's interpreter do it at
 * once, so that the first connections do not wait for it. */
typedef struct {
    pxpy_runtime_t *rt;
    px_loop_t *loop;
    pxpy_xproto_t *x; /* the listener's: alive until the loop stops */
    int index;
} prewarm_t;

static void prewarm_run(void *arg)
{
    prewarm_t *p = arg;
    bool attached = pxpy_attach();
    pxpy_entered_t e = pxpy_interp_enter(p->rt, p->index);
    /* An error comes again, and is reported, with the first connection
     * this worker accepts. */
    if (worker_protocol(pxpy_interp_state(p->rt, p->index), p->x, p->loop) ==
        NULL)
        PyErr_Clear();
    pxpy_interp_leave(e);
    pxpy_detach(attached);
    PyMem_RawFree(p);
}

static void prewarm_cancel(void *arg) { PyMem_RawFree(arg); }

void pxpy_xproto_prewarm(pxpy_state *st, pxpy_xproto_t *x, px_loop_t *loop)
{
    for (int index = 0; index < x->count; index++) {
        prewarm_t *p = PyMem_RawMalloc(sizeof(*p));
        if (p == NULL)
            return; /* only an optimisation: connections resolve it too */
        *p = (prewarm_t){st->runtime, loop, x, index};
        if (px_submit(loop, prewarm_run, prewarm_cancel, p) < 0)
            PyMem_RawFree(p);
    }
}

void pxpy_xproto_release_peer(pxpy_transport_t *peer)
{
    pxpy_runtime_t *rt = peer->st->runtime;
    pxpy_entered_t e = pxpy_interp_enter(rt, PXPY_MAIN);
    pxpy_transport_mark_closed(peer);
    Py_DECREF(peer); /* the connection's reference */
    pxpy_interp_leave(e);
}

pxpy_transport_t *pxpy_xproto_client_open(pxpy_transport_t *main_t,
                                          px_conn_t *conn)
{
    pxpy_runtime_t *rt = main_t->st->runtime;
    pxpy_state *wst = pxpy_interp_state(rt, px_current_worker());
    PyObject *protocol = resolve_protocol(wst, main_t->xproto);
    pxpy_transport_t *t =
        protocol ? pxpy_transport_new_connection(wst, conn) : NULL;
    if (t == NULL) {
        Py_XDECREF(protocol);
        pxpy_report_callback_error(wst, "connecting a client");
        px_conn_set_data(conn, NULL);
        pxpy_xproto_release_peer(main_t);
        return NULL;
    }
    t->protocol = protocol;
    t->main_peer = main_t; /* the connection's reference moves here */
    memcpy(t->peer_host, main_t->peer_host, sizeof(t->peer_host));
    t->peer_port = main_t->peer_port;
    PyObject_GC_Track(t);
    px_conn_set_data(conn, t);
    return t;
}

PyObject *pxpy_xproto_accept(pxpy_state **st, pxpy_xproto_t *x)
{
    *st = pxpy_interp_state((*st)->runtime, px_current_worker());
    return worker_protocol(*st, x, NULL);
}
