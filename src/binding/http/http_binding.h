/*
 * http_binding.h - what the HTTP files of the binding share: config.c (the
 * HttpProtocol base class, the configuration of a registered class and the
 * hooks protocol.c calls), answer.c (the request callback and the framing
 * of results) and types.c (the HttpRequest and FileResponse types).
 * binding.h declares what the rest of the binding calls.
 */
#ifndef PXPY_HTTP_BINDING_H
#define PXPY_HTTP_BINDING_H

#include "binding.h"
#include "px_http_server.h"

/* The HTTP part of the module state (pxpy_state.http). */
struct pxpy_http_s {
    PyTypeObject *protocol_type; /* HttpProtocol */
    PyTypeObject *config_type;   /* HttpConfig: a registered class's */
    PyTypeObject *request_type;  /* HttpRequest */
    PyTypeObject *file_type;     /* FileResponse */
    PyObject *str_px_handle;     /* "_px_handle" */
    /* Request attributes shared by every request. */
    PyObject *methods[PX_HTTP_METHOD_PATCH + 1]; /* by px_http_method_t;
                                                    [OTHER] unused */
    PyObject *versions[2];                       /* "HTTP/1.0", "HTTP/1.1" */
};

/* What register() read from an HttpProtocol subclass; the protocol
 * cache's http field. It owns the engine server of the registration. */
typedef struct {
    PyObject_HEAD
    pxpy_state *st;
    PyObject *handle;           /* _px_handle as stored in the class */
    bool handle_is_function;    /* call it as handle(instance, request) */
    PyTypeObject *request_type; /* the class's _px_request_class */
    /* The class's exact routes, served without _px_handle (see
     * read_dispatch in config.c); NULL when _px_handle serves everything. */
    PyObject *exact;    /* {path: {method: index}} */
    PyObject *handlers; /* tuple: index -> handler(instance, request) */
    PyObject *to_wire;  /* to_wire(result) for results C does not frame */
    PyObject *failed;   /* failed(instance, request, exc) -> answer */
    px_http_server_t *server;
} pxpy_http_config_t;

/* An HttpProtocol instance: one per connection. */
typedef struct {
    PyObject_HEAD
    px_http_conn_t *hc; /* while the connection is open */
    pxpy_http_config_t *config;
    PyObject *client;            /* (host, port), at the first request */
    pxpy_transport_t *transport; /* borrowed: it owns the instance */
} pxpy_http_protocol_t;

/* FileResponse(path, content_type, status=200, headers=None). */
typedef struct {
    PyObject_HEAD
    PyObject *path;         /* str, bytes or os.PathLike */
    PyObject *content_type; /* str or None */
    int status;
    PyObject *headers; /* list/tuple of pairs, or None */
} pxpy_file_response_t;

/* A new request of type (HttpRequest or a subclass without slots of its
 * own) for req, which it copies; NULL with an exception. */
PyObject *pxpy_http_request_new(pxpy_state *st, PyTypeObject *type,
                                const px_http_server_request_t *req,
                                PyObject *client);

/* The request's percent-decoded path (a new reference), or NULL with an
 * exception. */
PyObject *pxpy_http_request_path(PyObject *request);

/* The engine's request callback of every HttpProtocol connection
 * (answer.c): calls the handler and answers inside the callback. */
void pxpy_http_on_request(px_http_exchange_t *ex,
                          const px_http_server_request_t *req);

int pxpy_http_types_exec(PyObject *module, pxpy_state *st);
int pxpy_http_types_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_http_types_free(pxpy_state *st);

#endif /* PXPY_HTTP_BINDING_H */
