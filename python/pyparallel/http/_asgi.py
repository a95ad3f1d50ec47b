"""ASGI 3 applications (the asgiref spec: HTTP and lifespan) on pyparallel's
HTTP server.

ASGIServer.for_app(app) makes an HttpServer subclass that serves one ASGI
callable (serve_app and the command line's --app do). For each request,
_px_handle returns the coroutine of one _Cycle, which the C layer runs as a
task of the worker loop of the connection's worker: the app awaits there,
and the worker serves its other connections meanwhile.

A cycle answers through the request's HttpStream (HttpProtocol._px_stream()):
  - http.response.start is kept until the first body event, so that a
    response whose body comes in one event (what most apps send) is given
    whole with one call, stream.respond((status, fields, body)), with its
    Content-Length; the app may go on running after it (Starlette's
    background tasks), the client has its answer;
  - a body sent in pieces (more_body) is streamed: stream.start(), then
    await stream.awrite() for each piece, which waits while the client is
    behind (backpressure), and stream.end();
  - http.response.pathsend (an extension: the app names a file) is sent
    with sendfile through a FileResponse.
receive() gives the request body as it arrives: one http.request event
when it came whole with the head, else one per piece with more_body and an
empty last one (reading pauses while the app does not receive, so an
upload larger than memory streams through); then it waits for the client
to go away (http.disconnect), or returns that at once once the response is
complete. send() on a connection the client closed
raises ClientDisconnected, an OSError (spec 2.4), so a streaming app stops.

An app that breaks the protocol (events out of order, an event after the
response completed, returning without a response, raising) is answered
500 when nothing was sent yet, or has its connection closed when the head
is out (the client then sees a truncated body); either way the traceback
goes to the "pyparallel" logger and the server goes on serving.

Lifespan: start_lifespan() runs the app's lifespan startup before the
server accepts connections, once per process on worker 0 (in mode
threads and gil), or once per worker interpreter, on that worker's loop,
in mode interpreters (objects do not cross interpreters, so each has its
own app and its own state). Its shutdown runs as each loop closes. What
startup stored in scope["state"] is given, a shallow copy per request, in
every request's scope. An app that raises on the lifespan scope before
startup completes does not support lifespan: it is served without; one
whose lifespan fails after its startup has, in mode interpreters, its
worker's interpreter replaced (as for a SystemExit).
"""

from __future__ import annotations

import asyncio
import logging
import os

import pyparallel as px

from .. import _core, _lifecycle
from ._adapter import AppServer, file_answer
from ._apps import AppError, check_in_worker, resolve_spec
from ._request import RequestBodyError, _arriving
from ._response import FRAMING_FIELDS, INTERNAL_ERROR, check_field

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator, MutableMapping, Sequence
    from typing import Any, ClassVar

    from ._request import Request
    from ._response import Wire

    type Message = MutableMapping[str, Any]
    type Receive = Callable[[], Awaitable[Message]]
    type Send = Callable[[Message], Awaitable[None]]

_log = logging.getLogger("pyparallel")

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
LIFESPAN_VERSION = {"version": "3.0", "spec_version": "2.0"}
# The extensions every http scope advertises.
_EXTENSIONS: dict[str, dict[str, object]] = {"http.response.pathsend": {}}
# Statuses HttpStream.start() refuses: they have no body, so the answer is
# always given whole.
_NO_BODY = frozenset({204, 304})

# The states of a cycle's response.
_NEW, _HEAD, _STREAMING, _DONE = range(4)


class _Ready:
    """An awaitable that is complete already: what send() returns for an
    event it has acted on. Its __await__ gives one shared, exhausted
    iterator, so awaiting it costs no allocation."""

    __slots__ = ()

    def __await__(self) -> Generator[Any]:
        return _EXHAUSTED  # type: ignore[return-value]  # (an iterator that yields nothing is what await needs)


_EXHAUSTED = iter(())
_READY = _Ready()

# The response header pairs (tuples of bytes) seen before, checked and
# decoded: an app sends the same few again and again. _FRAMING: a field the
# server writes itself; _LENGTH: Content-Length, read each time. Cleared
# when full, so that an app that varies its values holds no more.
_FRAMING = ("", "")
_LENGTH = ("content-length", "")
_CHECKED: dict[tuple[bytes, bytes], tuple[str, str]] = {}
_CHECKED_MAX = 4096


def _field(pair: object) -> tuple[str, str]:
    """The (name, value) field of an ASGI header pair, checked as a
    handler's fields are; _FRAMING or _LENGTH for those fields."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"ASGI response headers are pairs of bytes, not {pair!r}")
    name, value = pair
    if not isinstance(name, bytes) or not isinstance(value, bytes):
        raise TypeError(f"ASGI response headers are pairs of bytes, not {pair!r}")
    text = name.decode("latin-1")
    lowered = text.lower()
    if lowered in FRAMING_FIELDS:  # the server frames the body
        return _LENGTH if lowered == "content-length" else _FRAMING
    field = (text, value.decode("latin-1"))
    check_field(*field)
    return field


def connection_scope(
    server: ASGIServer, request: Request, kind: str, extensions: dict[str, dict[str, object]]
) -> dict[str, Any]:
    """The fields an http and a websocket scope share (spec 2.4; an http
    scope's method too), and the lifespan's state when it has one. The
    scheme is the secure one when the server's is, or when a trusted proxy
    said so (request.scheme). The C layer cuts the path, the query and the
    header pairs from the request's head."""
    secure = request.scheme == "https" or server.url_scheme == "https"
    if kind == "http":
        scheme = "https" if secure else "http"
    else:
        scheme = "wss" if secure else "ws"
    scope = request._px_asgi_scope(kind, ASGI_VERSION, scheme, server.root_path, server._px_address, extensions)
    lifespan = _LIFESPANS.get(server._px_app.name)
    if lifespan is not None and lifespan.supported:
        scope["state"] = lifespan.state.copy()
    return scope


class ClientDisconnected(OSError):
    """Raised by send() once the client has closed the connection."""


class _Cycle:
    """One request and its response; see the module's docstring."""

    __slots__ = ("server", "request", "stream", "state", "status", "fields", "length", "body")

    def __init__(self, server: ASGIServer, request: Request, stream: _core.HttpStream) -> None:
        self.server = server
        self.request = request
        self.stream = stream
        self.state = _NEW
        self.status = 0
        self.fields: list[tuple[str, str]] = []
        self.length: int | None = None  # the app's Content-Length
        # The body's chunks as they arrive (after the first receive());
        # None before it, () once it was all given.
        self.body: AsyncIterator[bytes] | tuple[()] | None = None

    def scope(self) -> dict[str, Any]:
        return connection_scope(self.server, self.request, "http", _EXTENSIONS)

    async def run(self) -> _core.HttpStream:
        app = self.server._px_app.app
        try:
            await app(self.scope(), self.receive, self.send)
        except Exception as error:
            self._failed(error)
        else:
            if self.state != _DONE:
                self._failed(RuntimeError("the ASGI app returned without completing its response"))
        # The answer was given (or the connection closed) through the
        # stream: returning it tells the C layer so.
        return self.stream

    def _failed(self, error: BaseException) -> None:
        request = self.request
        state = self.state
        if state == _DONE:
            what = "after its response"
        elif state == _STREAMING:
            what = "while streaming its response (the connection is closed)"
        else:
            what = "(answered 500)"
        _log.error(
            "ASGI app %s failed on %s %s %s",
            self.server._px_app.name,
            request.method,
            request.target,
            what,
            exc_info=error,
        )
        self.state = _DONE
        if state == _STREAMING:
            self.stream.abort()
        elif state != _DONE and not self.stream.ended:  # (ended: the client went away)
            self.stream.respond(INTERNAL_ERROR)

    async def receive(self) -> Message:
        # Once the response is complete the exchange is over, body read or
        # not (as uvicorn does): an app that reads after it (a background
        # step) learns so at once.
        if self.state == _DONE:
            return {"type": "http.disconnect"}
        body = self.body
        if body is None:
            taken = self.request._px_take_body()
            if isinstance(taken, bytes):  # it came whole: one event
                self.body = ()
                return {"type": "http.request", "body": taken, "more_body": False}
            body = self.body = _arriving(taken)
        if body != ():
            try:
                chunk = await anext(body)  # type: ignore[arg-type]
            except StopAsyncIteration:
                self.body = ()
                return {"type": "http.request", "body": b"", "more_body": False}
            except RequestBodyError:
                # The body cannot be read to its end (the client went
                # away, or it broke a limit, which the server answers):
                # for the app, the client is gone.
                self.body = ()
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self.stream.wait_disconnected()
        return {"type": "http.disconnect"}

    def send(self, message: Message) -> Awaitable[None]:
        """ASGI's send. Not a coroutine function: an event is acted on
        before send() returns, which returns an awaitable that is complete
        already (a coroutine would cost a frame per event), or, for body
        data that must wait for the client, the coroutine that waits."""
        kind = message["type"]
        state = self.state
        if state == _DONE:
            if self.stream.disconnected:
                raise ClientDisconnected("the client closed the connection")
            raise RuntimeError(f"the ASGI app sent {kind!r} after its response completed")
        if kind == "http.response.body":
            if state == _NEW:
                raise RuntimeError("the ASGI app sent 'http.response.body' before 'http.response.start'")
            return self._body(message.get("body", b""), message.get("more_body", False))
        if kind == "http.response.start":
            if state != _NEW:
                raise RuntimeError("the ASGI app sent 'http.response.start' a second time")
            self._start(message)
        elif kind == "http.response.pathsend":
            if state != _HEAD:
                raise RuntimeError(
                    "the ASGI app sent 'http.response.pathsend' "
                    + ("before 'http.response.start'" if state == _NEW else "after body data")
                )
            self._pathsend(message.get("path"))
        else:
            raise RuntimeError(f"the ASGI app sent {kind!r}, not an event of an http response")
        return _READY

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"the ASGI app's status must be an int in 200..599, not {status!r}")
        if message.get("trailers"):
            raise ValueError("the ASGI app asked for trailers, which this server does not advertise")
        fields = []
        length = None
        checked = _CHECKED
        for pair in message.get("headers", ()):
            field = checked.get(pair) if type(pair) is tuple else None
            if field is None:
                # Content-Length is not kept (its value changes), but it is
                # what frameworks send most: told by its name first.
                if type(pair) is tuple and len(pair) == 2 and pair[0] == b"content-length" and type(pair[1]) is bytes:
                    field = _LENGTH
                else:
                    field = _field(pair)
                if type(pair) is tuple and field is not _LENGTH:
                    if len(checked) >= _CHECKED_MAX:
                        checked.clear()
                    checked[pair] = field
            if field is _LENGTH:
                value = pair[1]
                if not value.strip().isdigit():
                    raise ValueError(f"invalid Content-Length {value!r} from the ASGI app")
                length = int(value)
            elif field is not _FRAMING:
                fields.append(field)
        self.status, self.fields, self.length = status, fields, length
        self.state = _HEAD

    def _body(self, body: object, more_body: object) -> Awaitable[None]:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"an ASGI body is bytes, not {type(body).__name__}")
        stream = self.stream
        if self.state == _HEAD:
            if not more_body or self.status in _NO_BODY:
                if more_body:  # nothing of it may be sent: kept for the end
                    if body:
                        raise ValueError(f"the ASGI app sent body data with status {self.status}")
                    return _READY
                self._whole(body if type(body) is bytes else bytes(body))
                self.state = _DONE
                return _READY
            self.state = _STREAMING
            stream.start(self.status, self.fields, self.length)
        if body:
            return self._write(body, more_body)
        if not more_body:
            self.state = _DONE
            stream.end()
        return _READY

    async def _write(self, body: bytes | bytearray | memoryview, more_body: object) -> None:
        """A piece of a streamed body: waits while the client is behind."""
        if not await self.stream.awrite(body):
            self.state = _DONE
            raise ClientDisconnected("the client closed the connection")
        if not more_body:
            self.state = _DONE
            self.stream.end()

    def _whole(self, body: bytes) -> None:
        """The response given in one piece, with its Content-Length."""
        length = self.length
        stream = self.stream
        if length is not None and length != len(body):
            if not (stream.head_only and not body):
                raise ValueError(f"the ASGI app's Content-Length is {length}, but it sent {len(body)} bytes")
            # A HEAD answer says the length of the body it does not send.
            stream.start(self.status, self.fields, length)
            stream.end()
            return
        stream.respond((self.status, self.fields, body))

    def _pathsend(self, path: object) -> None:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError(f"'http.response.pathsend' needs an absolute path (str), not {path!r}")
        if self.status == 200:
            self.stream.respond(file_answer(path, self.fields))
        else:
            with open(path, "rb") as file:  # another status: the body as it is
                data = file.read()
            self.length = None
            self._whole(data)
        self.state = _DONE


class ASGIServer(AppServer):
    """The HttpServer that serves an ASGI 3 app; make one with for_app().

    Class attributes, besides HttpServer's (root, the limits):
        server_name, server_port  the scope's "server"; None: not known
        url_scheme                the scope's "scheme" ("http")
        root_path                 the scope's "root_path" (""), for an app
                                  mounted under a prefix by a proxy
    """

    _px_interface: ClassVar[str] = "ASGI"
    # The app is called once the head is in; receive() gives the body as
    # it arrives (http.request events with more_body).
    stream_request_body: ClassVar[bool] = True
    # The scope's "server": (host, port) of the listener, when for_app was
    # told it.
    _px_address: ClassVar[tuple[str, int] | None] = None
    _px_attributes: ClassVar[frozenset[str]] = AppServer._px_attributes | {"root_path"}
    root_path: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.server_port is not None:
            cls._px_address = (cls.server_name or "0.0.0.0", int(cls.server_port))

    def _px_handle(self, request: Request) -> Wire:
        if self.root is not None:
            answer = self._px_static_file(request)
            if answer is not None:
                return answer
        if request.method == "GET" and request._px_asks_websocket():
            return websocket_cycle(self, request)  # _asgi_websocket.py
        return _Cycle(self, request, self._px_stream()).run()


# ---- lifespan ---------------------------------------------------------------

# The lifespans of this interpreter, by app name: one per process in mode
# threads and gil, one per worker interpreter in mode interpreters.
_LIFESPANS: dict[str, _Lifespan] = {}


class _Lifespan:
    """One run of an app's lifespan scope, as a task of the loop it started
    on, which waits in receive() for the shutdown."""

    def __init__(self, app: Callable[..., Awaitable[None]], name: str) -> None:
        self.app = app
        self.name = name
        self.state: dict[str, Any] = {}
        self.supported = True
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self.started: asyncio.Future[str | None] = loop.create_future()
        self.stopped: asyncio.Future[str | None] = loop.create_future()
        self.task: asyncio.Task[None] | None = None
        self.stopping = False  # the shutdown was asked for

    async def startup(self) -> str | None:
        """Runs the startup: None once complete (or when the app does not
        support lifespan), else the app's message of startup.failed."""
        scope = {"type": "lifespan", "asgi": LIFESPAN_VERSION, "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._main(scope))
        self.events.put_nowait({"type": "lifespan.startup"})
        return await self.started

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self.events.get, self._send)
        except BaseException as error:
            if not self.started.done():
                # The spec: an app that raises on the lifespan scope does
                # not support it; it is served without.
                self.supported = False
                _log.info("ASGI app %s does not support lifespan (%r): served without it", self.name, error)
                self.started.set_result(None)
            else:
                _log.error("ASGI app %s failed in its lifespan", self.name, exc_info=error)
                if not self.stopping:
                    _broken_lifespan()
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            for future in (self.started, self.stopped):
                if not future.done():
                    future.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            future = self.started
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            future = self.stopped
        else:
            raise RuntimeError(f"the ASGI app sent {kind!r}, not an event of its lifespan")
        if future.done():
            raise RuntimeError(f"the ASGI app sent {kind!r} out of order")
        failed = kind.endswith(".failed")
        future.set_result(str(message.get("message", "")) or "(no message)" if failed else None)

    async def shutdown(self) -> None:
        self.stopping = True
        if not self.supported or self.task is None or self.task.done():
            return
        self.events.put_nowait({"type": "lifespan.shutdown"})
        failure = await self.stopped
        if failure is not None:
            _log.error("ASGI app %s: lifespan shutdown failed: %s", self.name, failure)
        await asyncio.wait([self.task], timeout=1.0)


def _broken_lifespan() -> None:
    """A lifespan that failed after its startup leaves its interpreter's
    state in doubt: in mode interpreters, the supervisor replaces that
    worker's interpreter (pyparallel._lifecycle), as for a SystemExit."""
    worker = _core._worker_index()
    if _core.stats()["mode"] == "interpreters" and worker >= 0:
        cause = "its ASGI lifespan failed after its startup"
        _core.call_from_main_thread(_lifecycle.request_recycle, worker, cause, True)


async def lifespan_startup(name: str, app: object) -> str | None:
    """Runs app's lifespan startup on this worker's loop (app: the app, or
    its "module:attr" to import in this interpreter), and its shutdown when
    the loop closes: None, or the message of startup.failed."""
    if isinstance(app, str):
        app = resolve_spec(app, "app")
    lifespan = _Lifespan(app, name)  # type: ignore[arg-type]
    failure = await lifespan.startup()
    if failure is None:
        _LIFESPANS[name] = lifespan
        px.worker_loop()._px_add_on_close(lifespan.shutdown)  # type: ignore[attr-defined]
    return failure


def start_lifespan(cls: type[ASGIServer], workers: Sequence[int] | None = None) -> None:
    """Runs the lifespan startup of cls's app before it is registered: once
    per worker interpreter in mode interpreters (in those of workers, when
    given: a worker's new interpreter), else once per process (see the
    module's docstring). AppError with the app's message when it sent
    lifespan.startup.failed."""
    ref = cls._px_app
    if px.stats()["mode"] == "interpreters":
        on = range(_workers()) if workers is None else workers
        # Each worker imports the app by its "module:attr", or finds a
        # function or class by name as it crosses.
        app = ref.spec if ref.spec is not None else ref.app
        if ref.spec is not None:
            # Imported first by a plain work item: the app's module may do
            # synchronous work at import that refuses a running loop
            # (Django's ORM does).
            for future in [_core._submit_to(worker, check_in_worker, ref.spec) for worker in on]:
                future.result(timeout=120)
        futures = [_core._submit_to(worker, lifespan_startup, ref.name, app) for worker in on]
    else:
        futures = [_core._submit_to(0, lifespan_startup, ref.name, ref.app)]
    failures = {future.result(timeout=120) for future in futures} - {None}
    if failures:
        raise AppError(f"{ref.name}: lifespan startup failed: {'; '.join(sorted(str(f) for f in failures))}")


def _workers() -> int:
    return int(px.stats()["workers"])


# The websocket scope's cycle lives in its own module, which imports this one.
from ._asgi_websocket import websocket_cycle  # noqa: E402
