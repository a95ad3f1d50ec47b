/*
 * http_binding.h - what the HTTP files of the binding share: config.c (the
 * HttpProtocol base class, the configuration of a registered class and the
 * hooks protocol.c calls), answer.c (the request callback and the framing
 * of results), stream.c (streamed bodies and the HttpStream type), await.c
 * (answers that come from a task of the worker loop), body.c (request bodies
 * read as they arrive: the HttpBody type), types.c (the HttpRequest and
 * FileResponse types), asgi.c (ASGI scopes made from a request's head) and
 * ops.c (the access log's and the request counters' module functions).
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
    PyTypeObject *stream_type;   /* HttpStream */
    PyTypeObject *body_type;     /* HttpBody */
    PyObject *str_px_handle;     /* "_px_handle" */
    /* Request attributes shared by every request. */
    PyObject *methods[PX_HTTP_METHOD_PATCH + 1]; /* by px_http_method_t;
                                                    [OTHER] unused */
    PyObject *versions[2];                       /* "HTTP/1.0", "HTTP/1.1" */
    PyObject *schemes[2];                        /* "http", "https" */
    /* ASGI scopes' keys, and their "http_version"s (asgi.c). */
#define PXPY_HTTP_ASGI_KEYS 13
    PyObject *asgi_keys[PXPY_HTTP_ASGI_KEYS];
    PyObject *asgi_versions[2]; /* "1.0", "1.1" */
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
    /* The request being handled: its exchange until it is answered, the
     * thread that runs its request callback while it runs, and its
     * HttpStream once _px_stream() made one (see stream.c). */
    px_http_exchange_t *ex;
    uint64_t request_seq; /* counts requests: tells a late answer whether
                             its request is still the one being handled */
    unsigned long callback_thread;
    PyObject *stream;
    PyObject *body;   /* its HttpBody, when its body is streamed (body.c) */
    bool input_ended; /* the client ended its side of the connection */
} pxpy_http_protocol_t;

/* Header fields converted from Python, and what keeps their bytes alive
 * (answer.c). */
#define PXPY_HTTP_STACK_FIELDS 16
typedef struct {
    px_http_header_t stack[PXPY_HTTP_STACK_FIELDS];
    px_http_header_t *fields;
    size_t count, cap;
    PyObject *owners; /* a list of encoded values, or NULL */
} pxpy_http_fields_t;

void pxpy_http_fields_init(pxpy_http_fields_t *f);
void pxpy_http_fields_free(pxpy_http_fields_t *f);
/* Appends the fields of a list or tuple of (name, value) str pairs (or
 * None): 0, or -1 with an exception. */
int pxpy_http_fields_add(pxpy_http_fields_t *f, PyObject *seq);

/* What answering a request needs, inside its callback or later. */
typedef struct {
    pxpy_http_protocol_t *self;
    px_http_exchange_t *ex;
    /* Inside the callback: the request as parsed (file answers plan from
     * its fields); later NULL, and raw_head (bytes) holds its head. */
    const px_http_server_request_t *req;
    PyObject *raw_head;
    PyObject *request; /* the Request, for _px_failed */
} pxpy_http_answer_t;

/* A request answered after its callback (by a task, a work item): what
 * the answer needs, held until then. */
typedef struct {
    pxpy_http_protocol_t *self;
    px_http_exchange_t *ex;
    uint64_t seq; /* self->request_seq at the time */
    PyObject *request;
    PyObject *raw_head; /* the head, which file answers plan from */
} pxpy_http_later_t;

/* Holds what answering a's request later needs: 0, or -1 with an
 * exception (nothing held). */
int pxpy_http_later_hold(pxpy_http_later_t *l, const pxpy_http_answer_t *a);
void pxpy_http_later_release(pxpy_http_later_t *l);
/* Whether l's request still awaits this answer: no other path answered
 * it, and the connection has not moved on. */
bool pxpy_http_later_current(const pxpy_http_later_t *l);
/* What answering l's request needs, now that its callback returned. */
pxpy_http_answer_t pxpy_http_later_answer(const pxpy_http_later_t *l);

/* Answers with what a handler (or _px_handle) gave, already in wire form:
 * 0 when the exchange is answered or will be (a task, a stream), -1 with
 * an exception when it is still open. */
int pxpy_http_answer(pxpy_http_answer_t *a, PyObject *result);
/* Answers a still open exchange after a failure (the exception set):
 * through _px_failed when the class has one (Exceptions only), else 500;
 * logged either way. */
void pxpy_http_answer_failed(pxpy_http_answer_t *a, const char *what);
/* Raises the Python error for a px_http_respond* (or stream) code that
 * left the exchange open (ValueError, MemoryError); returns -1. */
int pxpy_http_response_error(int rc);
/* The Content-Type of a handler's bytes (text/plain). */
extern const px_http_header_t pxpy_http_text_plain_bytes;

/* ---- ws/accept.c ---- */

/* Whether result is a WebSocketAccept, which pxpy_ws_answer answers: the
 * upgrade to a WebSocket, or the handshake's refusal (400, 426). Returns as
 * pxpy_http_answer. */
bool pxpy_ws_is_accept(pxpy_state *st, PyObject *result);
int pxpy_ws_answer(pxpy_http_answer_t *a, PyObject *result);

/* ---- stream.c ---- */

/* Whether result is a body to stream: a sync or an async iterator. */
bool pxpy_http_is_stream_body(PyObject *result);
/* Answers with status, fields and a body iterator (length: its
 * Content-Length, or PX_HTTP_STREAM_CHUNKED): iterated on the connection's
 * worker with backpressure (sync), or by a task of the worker loop (async).
 * Returns as pxpy_http_answer. */
int pxpy_http_stream_body(pxpy_http_answer_t *a, int status, PyObject *fields,
                          PyObject *body, uint64_t length);
/* A handler returned the request's HttpStream: checks that it is this
 * exchange's. */
int pxpy_http_stream_returned(pxpy_http_answer_t *a, PyObject *stream);
/* ---- await.c ---- */

/* A handler returned an awaitable: runs it as a task of the worker loop
 * and answers with its outcome; raw: it is the handler's own coroutine,
 * whose result still goes through to_wire (and a failure through
 * _px_failed). Returns as pxpy_http_answer. */
int pxpy_http_await(pxpy_http_answer_t *a, PyObject *awaitable, bool raw);
/* The request was answered (or is about to be, by the caller): forgets
 * its exchange, and lets go of its stream, which can no longer act on it
 * unless it is the one answering. Call before giving the answer. */
void pxpy_http_request_done(pxpy_http_protocol_t *self);
/* The client ended its side of the connection: tells the request's
 * stream, if any (its disconnect waiters). */
void pxpy_http_stream_conn_ended(pxpy_http_protocol_t *self);
/* The connection closed: tells the request's stream, if any. */
void pxpy_http_stream_conn_closed(pxpy_http_protocol_t *self);
/* HttpProtocol._px_stream(). */
PyObject *pxpy_http_protocol_stream(PyObject *self, PyObject *unused);
int pxpy_http_stream_exec(PyObject *module, pxpy_state *st);

/* ---- body.c ---- */

/* The HttpBody of the request being handled, whose body the C layer
 * streams (req->body_streamed): made for ex, kept in self->body until the
 * request is done. NULL with an exception. */
PyObject *pxpy_http_body_new(pxpy_http_protocol_t *self,
                             px_http_exchange_t *ex);
/* The request is done (pxpy_http_request_done): its HttpBody stops
 * reading, and its waiters are told. */
void pxpy_http_body_done(pxpy_http_protocol_t *self);
/* The rest of the body, read whole (waiting for it, detached): bytes, or
 * NULL with an exception. */
PyObject *pxpy_http_body_read_all(PyObject *body);
int pxpy_http_body_exec(PyObject *module, pxpy_state *st);

/* ---- ops.c ---- */

/* Adds the access log's and the counters' module functions. */
int pxpy_http_ops_exec(PyObject *module, pxpy_state *st);

/* FileResponse(path, content_type, status=200, headers=None). */
typedef struct {
    PyObject_HEAD
    PyObject *path;         /* str, bytes or os.PathLike */
    PyObject *content_type; /* str or None */
    int status;
    PyObject *headers; /* list/tuple of pairs, or None */
} pxpy_file_response_t;

/* A new request of type (HttpRequest or a subclass without slots of its
 * own) for req, which it copies; its body is body_source's (an HttpBody)
 * when req->body_streamed; its scheme "https" when https, else "http".
 * NULL with an exception. */
PyObject *pxpy_http_request_new(pxpy_state *st, PyTypeObject *type,
                                const px_http_server_request_t *req,
                                PyObject *client, PyObject *body_source,
                                bool https);

/* The request's method (borrowed). */
PyObject *pxpy_http_request_method(PyObject *request);

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

/* asgi.c: HttpRequest's _px_asgi_scope and _px_asks_websocket methods,
 * and the interned objects they use (made and freed with the types). */
PyObject *pxpy_http_request_asgi_scope(PyObject *self, PyObject *const *args,
                                       Py_ssize_t nargs);
PyObject *pxpy_http_request_asks_websocket(PyObject *self, PyObject *unused);
int pxpy_http_asgi_init(pxpy_http_t *h);
void pxpy_http_asgi_free(pxpy_http_t *h);

#endif /* PXPY_HTTP_BINDING_H */
