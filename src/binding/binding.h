/*
 * binding.h - what the folders of the CPython binding (pyparallel._core)
 * share: the module state, and the calls that cross from one folder to
 * another.
 *
 * The binding turns engine callbacks into Python calls. It is organised by
 * concern, one folder each; a file includes another folder's header by its
 * path under src/binding ("interp/interp.h"):
 *   module.c     module definition, per-module state, exec slot, modes,
 *                error conversion and callback-error reporting
 *   core/        the API every mode shares: the loop's life, thread hooks
 *                and stats (runtime.c; runtime.h is its private state),
 *                run/run_once/stop and the main-thread queue (mainthread.c,
 *                mainthread.h), pyparallel.Future (future.c), submit_work
 *                and timers (work.c), each worker's asyncio loop and the
 *                tasks of coroutines (aio.c), the Transport type (transport.c),
 *                sends (send.c), server/client/register (register.c) and
 *                the dispatch of connection events to protocol callbacks
 *                (protocol.c)
 *   shared/      shared-state primitives (shared/shared.h): RWLock,
 *                protect and the read/write locks, the interlocked list
 *                px.xlist, eternalize, a pointer-keyed map, introspection
 *   http/        the HTTP server's Python side (http/http_binding.h):
 *                HttpProtocol and the configuration of a registered class
 *                (config.c), the request callback and the framing of
 *                answers (answer.c), HttpRequest and FileResponse (types.c)
 *   ws/          WebSockets (ws/ws_binding.h): the WebSocketAccept a
 *                handler returns and the upgrade (accept.c), the WebSocket
 *                and WebSocketGroup types (socket.c)
 *   interp/      mode "interpreters", all of it: interp/interp.h is what
 *                the rest of the binding calls, interp_internal.h what its
 *                files share (worker interpreters, cross-interpreter data,
 *                work, calls and protocols across interpreters,
 *                SharedBuffer, Channel)
 * Prefixes: pxpy_ for what crosses files; within that, pxpy_x* names
 * (xi, xcall, xwork, xproto) always mean "cross-interpreter".
 *
 * State: one pxpy_state per module object (per interpreter). The engine loop
 * belongs to the main interpreter's module; it is created on first use and
 * stopped when run() ends or the module is freed.
 *
 * Threads. The engine's threads run Python through the thread hooks of
 * runtime.c: each engine thread owns one PyThreadState, attached for each
 * batch of callbacks and detached while the thread waits for I/O, so a
 * waiting thread holds neither a thread state nor the GIL. Every blocking
 * wait of a Python thread (run(), stop(), waiting for the main thread)
 * detaches too (pxpy_blocking_begin/end), or the GIL (GIL builds) and the
 * garbage collector's stop-the-world (free-threaded builds) would deadlock.
 * Engine callbacks that may arrive outside a batch (cancellations, timer
 * completions) bracket their Python work with pxpy_attach/pxpy_detach.
 */
#ifndef PXPY_BINDING_H
#define PXPY_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdbool.h>

#include "px.h"

typedef enum {
    PXPY_MODE_THREADS = 0, /* free-threaded: workers share the interpreter */
    PXPY_MODE_GIL = 1,     /* GIL build: workers share the main GIL */
    PXPY_MODE_INTERPRETERS = 2, /* one own-GIL subinterpreter per worker */
} pxpy_mode_t;

/* Interned names kept in pxpy_state.str_cache. The protocol callbacks come
 * first, in the order of the protocol cache's callback table. */
#define PXPY_STR_MAP(X)                                                        \
    X(CONNECTION_MADE, "connection_made")                                      \
    X(DATA_RECEIVED, "data_received")                                          \
    X(SEND_COMPLETE, "send_complete")                                          \
    X(LINES_RECEIVED, "lines_received")                                        \
    X(CONNECTION_LOST, "connection_lost")                                      \
    X(EXCEPTION_HANDLER, "exception_handler")                                  \
    X(EOF_RECEIVED, "eof_received")                                            \
    X(INITIAL_BYTES_TO_SEND, "initial_bytes_to_send")                          \
    X(NEXT_BYTES_TO_SEND, "next_bytes_to_send")                                \
    X(LINES_MODE, "lines_mode")                                                \
    X(MAX_LINE_LENGTH, "max_line_length")                                      \
    X(ERROR, "error")                                                          \
    X(EXC_INFO, "exc_info")                                                    \
    X(CALLBACK, "callback")                                                    \
    X(ERRBACK, "errback")                                                      \
    X(DATAGRAM_RECEIVED, "datagram_received")                                  \
    X(ERROR_RECEIVED, "error_received")

enum {
#define PXPY_STR_ENUM(name, text) PXPY_STR_##name,
    PXPY_STR_MAP(PXPY_STR_ENUM)
#undef PXPY_STR_ENUM
        PXPY_STR_COUNT
};

/* The protocol callbacks, indexes into the cache's table (same values as
 * their PXPY_STR_* names). */
enum {
    PXPY_CB_CONNECTION_MADE = PXPY_STR_CONNECTION_MADE,
    PXPY_CB_DATA_RECEIVED = PXPY_STR_DATA_RECEIVED,
    PXPY_CB_SEND_COMPLETE = PXPY_STR_SEND_COMPLETE,
    PXPY_CB_LINES_RECEIVED = PXPY_STR_LINES_RECEIVED,
    PXPY_CB_CONNECTION_LOST = PXPY_STR_CONNECTION_LOST,
    PXPY_CB_EXCEPTION_HANDLER = PXPY_STR_EXCEPTION_HANDLER,
    PXPY_CB_EOF_RECEIVED = PXPY_STR_EOF_RECEIVED,
    PXPY_CB_COUNT
};

typedef struct pxpy_runtime_s pxpy_runtime_t; /* core/runtime.h */
typedef struct pxpy_futures_s pxpy_futures_t; /* core/future.c */
typedef struct pxpy_shared_s pxpy_shared_t;   /* shared/shared.h */
typedef struct pxpy_xistate_s pxpy_xistate_t; /* interp/xi.c */
typedef struct pxpy_interps_s pxpy_interps_t; /* interp/interp.c */
typedef struct pxpy_http_s pxpy_http_t;       /* http/http_binding.h */
typedef struct pxpy_ws_s pxpy_ws_t;           /* ws/ws_binding.h */
typedef struct pxpy_aio_s pxpy_aio_t;         /* core/aio.c */

typedef struct {
    /* Heap types. */
    PyTypeObject *transport_type;
    PyTypeObject *timer_type;
    PyTypeObject *ilist_type;
    PyTypeObject *lock_guard_type;
    PyTypeObject *protocol_type;    /* protocol.c's per-class cache */
    PyTypeObject *future_core_type; /* future.c's C layer of Future */
    PyTypeObject *sharedbuf_type;
    PyTypeObject *channel_type;
    PyTypeObject *sdict_type; /* mode "interpreters"' px.dict, px.list, */
    PyTypeObject *slist_type; /* px.xlist (interp/scont.c) */
    PyTypeObject *sxlist_type;
    PyTypeObject *datagram_type; /* core/datagram.c */
    /* Exceptions: AsyncError is the root of the binding's own errors. */
    PyObject *async_error;
    PyObject *protection_error;
    /* Cached objects. */
    PyObject *logger;        /* logging.getLogger("pyparallel") */
    PyObject *future_type;   /* pyparallel.Future (future.c) */
    PyObject *str_cache[32]; /* interned names, PXPY_STR_* */
    /* Sub-states owned by their files. */
    pxpy_runtime_t *runtime;
    pxpy_futures_t *futures;
    pxpy_shared_t *shared;
    pxpy_xistate_t *xi;
    pxpy_http_t *http;
    pxpy_ws_t *ws;
    pxpy_aio_t *aio;
    pxpy_mode_t mode;
    /* -1: the main interpreter's module; otherwise the worker whose
     * interpreter this is (mode "interpreters"; the runtime is then the
     * main state's, shared). */
    int interp_index;
    /* The work, timers and file reads started in this interpreter that
     * have not ended (a part of the runtime's pending count): a worker
     * interpreter is replaced only once it has none (interp/recycle.c). */
    _Atomic Py_ssize_t pending;
} pxpy_state;

/* State lookups: from the module, from a type defined by the module, and
 * from the current interpreter's imported module. */
pxpy_state *pxpy_get_state(PyObject *module);
pxpy_state *pxpy_state_from_type(PyTypeObject *type);
/* From an instance of a type defined by the module or of a subclass. */
pxpy_state *pxpy_state_from_object(PyObject *obj);

#define PXPY_STR(st, name) ((st)->str_cache[PXPY_STR_##name])

/* Each file's part of the exec slot, traverse and clear. */
int pxpy_runtime_exec(PyObject *module, pxpy_state *st);
int pxpy_runtime_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_runtime_free(pxpy_state *st);
int pxpy_work_exec(PyObject *module, pxpy_state *st);
int pxpy_future_exec(PyObject *module, pxpy_state *st);
int pxpy_future_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_future_free(pxpy_state *st);
int pxpy_transport_exec(PyObject *module, pxpy_state *st);
int pxpy_register_exec(PyObject *module, pxpy_state *st);
int pxpy_datagram_exec(PyObject *module, pxpy_state *st);
int pxpy_files_exec(PyObject *module, pxpy_state *st);
int pxpy_protocol_exec(PyObject *module, pxpy_state *st);
int pxpy_shared_exec(PyObject *module, pxpy_state *st);
int pxpy_shared_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_shared_free(pxpy_state *st);
int pxpy_aio_exec(PyObject *module, pxpy_state *st);
void pxpy_aio_free(pxpy_state *st);
int pxpy_interp_exec(PyObject *module, pxpy_state *st);
int pxpy_interp_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_interp_free(pxpy_state *st);

/* ---- modes (module.c) ------------------------------------------------- */

/* Parses a mode name (a str, or NULL for PYPARALLEL_MODE or the build's
 * default) and checks the build supports it; ValueError otherwise. */
int pxpy_parse_mode(PyObject *name, pxpy_mode_t *mode);
const char *pxpy_mode_name(pxpy_mode_t mode);

/* ---- the loop and its bookkeeping (core/runtime.c) -------------------- */

/* The engine loop, started on first use; NULL with an exception set. */
px_loop_t *pxpy_loop(pxpy_state *st);
/* px_submit, or px_submit_to the given worker when it is not negative. */
static inline int pxpy_submit_on(px_loop_t *loop, int worker, px_work_fn fn,
                                 px_work_fn cancel, void *arg)
{
    return worker < 0 ? px_submit(loop, fn, cancel, arg)
                      : px_submit_to(loop, worker, fn, cancel, arg);
}
/* Registration bookkeeping: run() ends when nothing is registered and no
 * work is pending. */
void pxpy_registered_add(pxpy_state *st, Py_ssize_t delta);
void pxpy_pending_add(pxpy_state *st, Py_ssize_t delta);
/* Whether the calling thread is the interpreter's main thread. */
bool pxpy_is_main_thread(pxpy_state *st);
/* Where the runtime keeps interp/channel.c's list of live channels: one
 * list for every interpreter's module, since channels cross them. */
struct pxpy_chanlist_s **pxpy_runtime_channels(pxpy_runtime_t *rt);
/* Keeps a listening transport alive until the loop stops: accepted
 * connections refer to it as their initial user data. */
int pxpy_keep_listener(pxpy_state *st, PyObject *transport);

/* Registration handshake between register() and the engine threads that
 * receive a connection before its protocol is known. publish stores the
 * protocol cache in t->protocol (taking a reference), and xproto (mode
 * "interpreters", else NULL) in t->xproto, and wakes the waiters; it
 * returns false, setting nothing, when t already has one. await waits,
 * detached, until t has a protocol, t is closing or the loop stops, and
 * returns the protocol borrowed (or NULL). wake wakes the waiters after t
 * was closed. */
struct pxpy_transport_s;
struct pxpy_xproto_s;
bool pxpy_publish_protocol(pxpy_state *st, struct pxpy_transport_s *t,
                           PyObject *protocol, struct pxpy_xproto_s *xproto);
PyObject *pxpy_await_protocol(pxpy_state *st, struct pxpy_transport_s *t);
void pxpy_wake_protocol_waiters(pxpy_state *st);

/* Attaches the calling thread's thread state when it is detached (an
 * engine thread outside a batch, or a thread inside pxpy_blocking_begin).
 * Returns whether it attached; pass that to pxpy_detach. */
bool pxpy_attach(void);
void pxpy_detach(bool attached);

/* Detaches the calling Python thread for a blocking wait; engine callbacks
 * that run on this thread meanwhile can re-attach it with pxpy_attach. */
typedef struct {
    PyThreadState *tstate;
    PyThreadState *previous;
} pxpy_blocking_t;
pxpy_blocking_t pxpy_blocking_begin(void);
void pxpy_blocking_end(pxpy_blocking_t saved);

/* module.attr, imported. */
PyObject *pxpy_import_attr(const char *module, const char *attr);

/* ---- errors (module.c) ------------------------------------------------ */

/* Reports an exception raised by a callback that nobody handled: logs it
 * with its traceback on the "pyparallel" logger and counts it in
 * stats()["errors"]. Called with the exception set; clears it. */
void pxpy_report_callback_error(pxpy_state *st, const char *where);
/* Counts an error in stats()["errors"] (runtime.c). */
void pxpy_count_error(pxpy_state *st);

/* Converts an engine error code to a Python exception (OSError for errno
 * values, with context as its filename; AsyncError otherwise, prefixed by
 * context) and returns NULL. context may be NULL. */
PyObject *pxpy_raise_engine_error(pxpy_state *st, int code,
                                  const char *context);
/* socket.gaierror(EAI code of PX_EAI code, message): a new exception, or
 * NULL with one set. */
PyObject *pxpy_gaierror(int code, PyObject *message);

/* ---- work (core/work.c) ----------------------------------------------- */

/* Makes the constants of a function (or bound method, or the function a
 * functools.partial wraps) that will run on the workers immortal, once: a
 * function compiled from source keeps mortal constants, and threads
 * running it on several cores would contend on their reference counts. Cheap
 * when already done (one immortality test); other callables are left alone. 0,
 * or -1 with an exception. */
int pxpy_immortalize_func(PyObject *func);
/* submit_work's callback(result) or errback(exc): what it raises is
 * reported as an unhandled callback error named where. */
void pxpy_call_hook(pxpy_state *st, PyObject *hook, PyObject *arg,
                    const char *where);

/* ---- the worker loops (core/aio.c) -------------------------------------- */

/* Whether obj can be awaited (its type has am_await): what a callback or a
 * work item returns that the worker's loop runs rather than a value. */
bool pxpy_is_awaitable(PyObject *obj);
/* Receives a task's outcome: its result, or NULL with its exception set
 * (asyncio.CancelledError when it was cancelled, as at loop stop), which it
 * must clear. Runs on the task's worker, attached. */
/* Whether the exception set (which stays set) is asyncio.CancelledError:
 * a task that the stopping loop cancelled, not a failure to report. */
bool pxpy_aio_cancelled(void);
/* Closes the calling worker's loop in st's interpreter, at once (its
 * on_close coroutines, such as an ASGI app's lifespan shutdown, run
 * first), before that interpreter is replaced; on the worker, attached. */
void pxpy_aio_close_worker(pxpy_state *st);
typedef void (*pxpy_aio_done_fn)(void *arg, PyObject *result);
/* Runs awaitable as a task of the calling worker's asyncio loop (created on
 * first use); done(arg, outcome) runs exactly once when it ends. 0, or -1
 * with an exception (done will not run). */
int pxpy_aio_spawn(pxpy_state *st, PyObject *awaitable, pxpy_aio_done_fn done,
                   void *arg);
/* The same, with the task's first step run now on the calling thread when
 * no other thread runs the loop (as asyncio's eager tasks): an awaitable
 * that completes without waiting (most async handlers' requests) is done,
 * and done has run, before this returns, without an iteration of the
 * loop. */
int pxpy_aio_spawn_eager(pxpy_state *st, PyObject *awaitable,
                         pxpy_aio_done_fn done, void *arg);

/* ---- futures (core/future.c) ------------------------------------------- */

/* A new pending pyparallel.Future. */
PyObject *pxpy_future_new(pxpy_state *st);
/* set_running_or_notify_cancel(): 1 running, 0 cancelled, -1 error. */
int pxpy_future_set_running(PyObject *future);
/* set_result()/set_exception(): 0, or -1 with InvalidStateError. */
int pxpy_future_set_result(PyObject *future, PyObject *result);
int pxpy_future_set_exception(PyObject *future, PyObject *exc);
/* cancel(): 1 when the future is (now) cancelled. */
int pxpy_future_cancel(PyObject *future);

/* ---- transports (core/transport.c, send.c, register.c) ----------------- */

/* A Transport: a listening server, or one connection (accepted or
 * outgoing). A connection's Transport is the engine connection's user data;
 * the engine's reference to it is dropped after connection_lost. Fields
 * marked "callbacks" are touched only by the connection's callbacks, which
 * never run concurrently (though not always on the same OS thread). */
typedef enum {
    PXPY_TRANSPORT_LISTENER = 0,
    PXPY_TRANSPORT_CONNECTION = 1,
} pxpy_transport_kind_t;

enum {
    PXPY_T_CLOSING = 1u << 0,  /* close() was called */
    PXPY_T_CLOSED = 1u << 1,   /* connection_lost ran, or the loop stopped */
    PXPY_T_FAILED = 1u << 2,   /* a callback failed: deliver no more data */
    PXPY_T_COUNTED = 1u << 3,  /* counts as registered for run() */
    PXPY_T_STARTED = 1u << 4,  /* on_open ran (the instance may exist) */
    PXPY_T_ACCEPTED = 1u << 5, /* a server's connection */
    PXPY_T_AWAITING = 1u << 6, /* a coroutine callback runs: events wait */
};

/* An address field of a Transport: a numeric address, a client's host
 * name before it connects (at most 253 bytes in DNS), or a Unix socket's
 * path as the engine reports it (PX_ADDRSTRLEN). */
#define PXPY_HOST_MAX 256
_Static_assert(PXPY_HOST_MAX >= PX_ADDRSTRLEN, "room for a Unix path");

typedef struct pxpy_transport_s {
    PyObject_HEAD
    pxpy_state *st;
    pxpy_transport_kind_t kind;
    px_conn_t *_Atomic conn;         /* connection: our reference, or NULL
                                        until a client connects */
    px_listener_t *_Atomic listener; /* listener: until the loop stops */
    PyObject *protocol;              /* protocol cache; set once, see publish */
    PyObject *instance;              /* protocol instance (callbacks) */
    _Atomic unsigned flags;          /* PXPY_T_* */
    char *line_buf; /* partial line in lines mode (callbacks) */
    size_t line_len, line_cap;
    /* Addresses, captured when the connection opens so that they remain
     * known in connection_lost (listener: sockname only; a client that is
     * not connected yet: the peer to connect to). A port of -1 marks a
     * Unix domain socket, whose host field is its path as px.h describes
     * (pxpy_address turns it into the Python value). */
    _Atomic bool have_addrs;
    int peer_port, sock_port;
    char peer_host[PXPY_HOST_MAX], sock_host[PXPY_HOST_MAX];
    /* Mode "interpreters": on the main interpreter's listener or client,
     * register()'s record of the protocol class (interp/xproto.c); on a worker
     * interpreter's Transport for a client connection, the main
     * interpreter's client Transport it stands for (a reference that
     * interp/xproto.c drops in the main interpreter after connection_lost). */
    struct pxpy_xproto_s *xproto;
    struct pxpy_transport_s *main_peer;
} pxpy_transport_t;

/* An address as Transport.peername and sockname give it: (host, port), or
 * a Unix socket's path as a str when port is -1 (an abstract name starts
 * with "\0"; "" for a socket without a name). */
PyObject *pxpy_address(const char *host, int port);

/* A new Transport of that kind, not yet tracked by the GC; NULL with an
 * exception set. */
pxpy_transport_t *pxpy_transport_alloc(pxpy_state *st,
                                       pxpy_transport_kind_t kind);
/* A new connection Transport (not yet tracked by the GC); conn is
 * referenced. NULL with an exception set. */
pxpy_transport_t *pxpy_transport_new_connection(pxpy_state *st,
                                                px_conn_t *conn);
/* A Transport of this interpreter for a connection served by another
 * (mode "interpreters"): sends, close, sendfile, pause/resume and the
 * addresses work on it; its protocol's callbacks stay where they are. */
PyObject *pxpy_transport_handle(pxpy_state *st, px_conn_t *conn);
/* Records the connection's addresses (callbacks, at open). */
void pxpy_transport_capture_addrs(pxpy_transport_t *t);
/* Drops t's registration count (PXPY_T_COUNTED), once. */
void pxpy_transport_uncount(pxpy_transport_t *t);
/* Marks a transport closed when its connection or the loop ends. */
void pxpy_transport_mark_closed(pxpy_transport_t *t);

/* The protocol cache (protocol.c): what register() learns about a protocol
 * class, looked up once. NULL with TypeError/ValueError for a bad class. */
PyObject *pxpy_protocol_new(pxpy_state *st, PyObject *cls);
/* Whether the class asked for send_complete notifications. */
bool pxpy_protocol_wants_sends(PyObject *protocol);

/* Gathers data (bytes-like, str as UTF-8, or a tuple of those) and sends it
 * as one px_conn_send; returns the send id, or -1 with an exception set.
 * who names the sender in a TypeError ("send() got"). from_callback is for
 * what a callback returned (who is then the callback's name): empty data
 * sends nothing, and a connection that is closed or failed (its
 * connection_lost tells why) drops the data quietly; both return 0. */
int64_t pxpy_transport_send(pxpy_transport_t *t, PyObject *data,
                            const char *who, bool from_callback);
/* Sends before, the file at path (whole, or nbytes from offset) and after
 * as one send; the send id as an int, or NULL with an exception. */
PyObject *pxpy_transport_sendfile(pxpy_transport_t *t, PyObject *before,
                                  PyObject *path, PyObject *after,
                                  long long offset, long long nbytes,
                                  bool whole);
/* The bytes of sendable data (joined when a tuple); TypeError naming who
 * otherwise. */
PyObject *pxpy_sendable_to_bytes(PyObject *data, const char *who);
/* The engine connection callbacks of protocol.c. */
extern const px_conn_callbacks_t pxpy_conn_callbacks;

/* ---- HTTP (http/) ------------------------------------------------------ */

int pxpy_http_exec(PyObject *module, pxpy_state *st);
int pxpy_http_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_http_free(pxpy_state *st);
/* WebSocket (ws/): the types, and the answer of an HTTP request whose
 * handler returned a WebSocketAccept (answer.c asks pxpy_ws_is_accept). */
int pxpy_ws_exec(PyObject *module, pxpy_state *st);
int pxpy_ws_traverse(pxpy_state *st, visitproc visit, void *arg);
void pxpy_ws_free(pxpy_state *st);
/* For the protocol cache: when cls subclasses HttpProtocol, *config
 * receives what its connections are served with (its limits, _px_handle,
 * an engine HTTP server); otherwise NULL. 0, or -1 with an exception. */
int pxpy_http_config_new(pxpy_state *st, PyObject *cls, PyObject **config);
/* protocol.c's hand-over of an HTTP protocol's connection: open once its
 * instance exists (-1 with an exception), then every on_data, then closed
 * before connection_lost. */
int pxpy_http_open(pxpy_transport_t *t, px_conn_t *conn, PyObject *config);
void pxpy_http_data(pxpy_transport_t *t, const char *data, size_t len);
/* The client half-closed: the connection closes once its requests are
 * answered. */
void pxpy_http_eof(pxpy_transport_t *t);
void pxpy_http_closed(pxpy_transport_t *t);

#endif /* PXPY_BINDING_H */
