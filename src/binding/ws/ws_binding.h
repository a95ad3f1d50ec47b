/*
 * ws_binding.h - what the WebSocket files of the binding share: accept.c
 * (the WebSocketAccept a handler returns, the upgrade it asks for and the
 * engine's callbacks into Python) and socket.c (the WebSocket and
 * WebSocketGroup types). binding.h declares what the rest of the binding
 * calls.
 *
 * A WebSocket's life: made by the upgrade (accept.c), it holds a reference
 * to its engine connection (px_ws_conn_t), and the connection holds one to
 * it (the connection's data) until on_closed, which reports the close to
 * the handler and lets go; the Python object may outlive the connection
 * (its methods then report it closed).
 */
#ifndef PXPY_WS_BINDING_H
#define PXPY_WS_BINDING_H

#include "binding.h"
#include "http/http_binding.h"
#include "px_ws.h"

#include <stdatomic.h>

/* The WebSocket part of the module state (pxpy_state.ws). */
struct pxpy_ws_s {
    PyTypeObject *accept_type; /* WebSocketAccept */
    PyTypeObject *socket_type; /* WebSocket */
    PyTypeObject *group_type;  /* WebSocketGroup */
    /* The engine's settings holders, one per loop and settings:
     * {(loop, settings...): capsule of px_ws_server_t}. */
    PyObject *servers;
    PyObject *str_message_received;
    PyObject *str_websocket_closed;
};

/* WebSocketAccept(target, opened, request, subprotocols, headers,
 * max_message_size, ping_interval, ping_timeout, close_timeout,
 * max_send_buffer, compression). */
typedef struct {
    PyObject_HEAD
    PyObject *target;       /* its message_received, websocket_closed */
    PyObject *opened;       /* called with the WebSocket, or None */
    PyObject *request;      /* kept as WebSocket.request */
    PyObject *subprotocols; /* tuple of str, the server's preference */
    PyObject *headers;      /* extra fields, or None */
    uint64_t max_message_size;
    uint64_t ping_interval_ns, ping_timeout_ns, close_timeout_ns;
    size_t max_send_buffer;
    bool compression;
} pxpy_ws_accept_t;

/* WebSocket states. */
enum { PXPY_WS_OPEN = 0, PXPY_WS_CLOSED = 1 };

typedef struct {
    PyObject_HEAD
    px_ws_conn_t *wc; /* referenced; NULL before the upgrade */
    PyObject *request;
    PyObject *subprotocol; /* str or None */
    PyObject *on_message;  /* the target's bound members, until closed */
    PyObject *on_closed;
    atomic_int state;
    int close_code; /* once CLOSED */
    PyObject *close_reason;
} pxpy_ws_socket_t;

/* A new, not yet upgraded WebSocket for acc (socket.c). */
pxpy_ws_socket_t *pxpy_ws_socket_new(pxpy_state *st, pxpy_ws_accept_t *acc,
                                     PyObject *subprotocol);
int pxpy_ws_socket_exec(PyObject *module, pxpy_state *st);

#endif /* PXPY_WS_BINDING_H */
