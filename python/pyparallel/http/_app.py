"""HttpServer: the protocol class that HTTP applications subclass.

The C base class pyparallel._core.HttpProtocol does the HTTP work: parsing,
framing, keep-alive, pipelining, limits and timeouts, HEAD, 100-continue,
error statuses, and sending files. For every request it calls
_px_handle(raw) on the connection's instance (one instance per connection,
made without arguments; one request at a time per connection, different
connections in parallel on the workers). _px_handle routes the request and
turns the handler's return value into what C sends.

The exact routes skip _px_handle: _px_dispatch() hands their table to the C
layer, which looks the decoded path and the method up itself and calls the
handler directly (with to_wire and _px_failed for the rest, as here). The
two ways give the same answers; the C one saves a Python frame per request.

Order of resolution for a request:
  1. an exact route for the decoded path (a dict lookup), else
  2. the pattern routes, in order of definition, else
  3. a static file under `root` when the class has one (GET and HEAD), else
  4. 404.
A path that a route serves, asked for with another method, is answered 405
with Allow. A handler that raises is answered 500 with a generic body; the
traceback goes to the "pyparallel" logger only.

A handler may be async def: _px_handle then returns a coroutine that awaits
it and gives its answer in wire form (or _px_failed's), which the C layer
runs on the worker loop. Iterators (streamed bodies) and the request's
HttpStream pass through to_wire to the C layer as they are.
"""

from __future__ import annotations

import logging

from .. import _core
from . import _static
from ._request import Request, RequestBodyError
from ._response import (
    HTML_FIELDS,
    INTERNAL_ERROR,
    NOT_FOUND,
    Response,
    body_failed,
    method_not_allowed,
    to_wire,
)
from ._routing import RouteTable, collect_routes

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Callable, Coroutine
    from typing import Any, ClassVar

    from ._response import Wire
    from ._routing import Handler

_log = logging.getLogger("pyparallel")

_STATIC_ALLOW = "GET, HEAD"


def _local_location(path: str, query: str) -> str:
    """The Location of a redirect to path on this server. A path that
    starts with two slashes ("//evil.com/", from a request for //evil.com
    where a directory evil.com exists) is a protocol-relative URL that
    browsers follow to another host (CVE-2021-28861 in http.server), and
    browsers read a backslash as a slash: leading slashes are collapsed
    into one and backslashes are sent percent-encoded, which names the
    same file here and leaves the URL no way off this server."""
    location = "/" + path.lstrip("/").replace("\\", "%5C")
    return location + "?" + query if query else location


class HttpServer(_core.HttpProtocol):
    """Subclass it, add handlers, and register it:

        class App(HttpServer):
            def hello(self, request):          # GET /hello
                return "Hello, World!"

        px.register(transport=px.server("127.0.0.1", 8080), protocol=App)
        px.run()

    Class attributes (read when the class is registered):
        root               directory to serve static files from (None: none)
        max_header_size    bytes of request line and header fields (431)
        max_uri_size       bytes of request target (414)
        max_body_size      bytes of body (413)
        max_body_memory    bytes all bodies being received may hold, this
                           server's and every other's (503); default: a
                           quarter of the memory, at most 1 GiB
        header_timeout     seconds to receive a head (408)
        body_timeout       seconds between two reads of a body (408)
        min_body_rate      bytes/s a body must average after its first
                           body_timeout (408)
        keepalive_timeout  seconds an idle connection is kept open
        stream_request_body  False: a body is read whole (up to
                           max_body_size) before the handler runs; True:
                           the handler runs once the head is complete and
                           reads the body as it arrives (request.stream(),
                           request.reader())
    """

    root: ClassVar[str | os.PathLike[str] | None] = None
    _px_request_class: ClassVar[type[Request]] = Request

    # Compiled per class by __init_subclass__ (see RouteTable): the tables
    # are copied to class attributes so that a request reaches them in one
    # attribute load. HttpServer itself routes nothing.
    _px_routes: ClassVar[RouteTable] = RouteTable(())
    _px_exact: ClassVar[dict[str, dict[str, int]]] = _px_routes.exact
    _px_allow: ClassVar[dict[str, str]] = _px_routes.allow
    _px_handlers: ClassVar[tuple[Handler, ...]] = _px_routes.handlers
    _px_patterns: ClassVar[tuple[object, ...]] = _px_routes.patterns
    # (root, its real path), for the root the real path was made of.
    _px_static_root: ClassVar[tuple[str | os.PathLike[str] | None, str | None]] = (None, None)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes = cls._px_routes = collect_routes(cls, HttpServer)
        cls._px_exact = routes.exact
        cls._px_allow = routes.allow
        cls._px_handlers = routes.handlers
        cls._px_patterns = routes.patterns
        root = cls.__dict__.get("root")
        if root is not None:
            cls._px_static_root = (root, _static.real_root(root))

    @classmethod
    def _px_dispatch(
        cls,
    ) -> tuple[dict[str, dict[str, int]], tuple[Handler, ...], Callable[[Any], Wire], Callable[..., Wire]] | None:
        """The exact routes for the C layer to serve (read at register()), or
        None when a subclass replaced _px_handle: then it serves everything."""
        if cls._px_handle is not HttpServer._px_handle:
            return None
        return (cls._px_exact, cls._px_handlers, to_wire, cls._px_failed)

    def _px_failed(self, request: Request, error: BaseException) -> Wire:
        """The answer to a request whose handler raised error: a 500 with a
        generic body; the traceback goes to the log. A body that could not
        be read (RequestBodyError) is the client's doing: one line in the
        log, and its status (the server has usually answered it already)."""
        if isinstance(error, RequestBodyError):
            return body_failed(type(self).__qualname__, request, error)
        _log.error(
            "HTTP handler of %s failed on %s %s",
            type(self).__qualname__,
            request.method,
            request.target,
            exc_info=error,
        )
        return INTERNAL_ERROR

    def _px_handle(self, request: Request) -> Wire | bytes | str:
        try:
            methods = self._px_exact.get(request.path)
            if methods is not None:
                index = methods.get(request.method)
                if index is None:
                    return method_not_allowed(self._px_allow[request.path])
                result = self._px_handlers[index](self, request)
                # bytes and str go to C as they are (framed there as
                # to_wire would): no call and no tuple on the hot path.
                kind = type(result)
                if kind is bytes or kind is str:
                    return result  # type: ignore[return-value]  # (mypy does not narrow through kind)
                return self._px_wire(request, result)
            if self._px_patterns:
                handler, found = self._px_routes.match(request.path, request.method)
                if handler is not None:
                    return self._px_wire(request, handler(self, request, **found))
                if found:
                    return method_not_allowed(found)
            if self.root is not None:
                return self._px_static(request)
            return NOT_FOUND
        except Exception as error:
            return self._px_failed(request, error)

    def _px_wire(self, request: Request, result: object) -> Wire | Coroutine[object, None, Wire]:
        """What C sends for a handler's result: to_wire's, or for an
        awaitable a coroutine that gives it once ready."""
        if hasattr(type(result), "__await__"):
            return self._px_await(request, result)  # type: ignore[arg-type]
        return to_wire(result)

    async def _px_await(self, request: Request, awaitable: Awaitable[object]) -> Wire:
        try:
            return to_wire(await awaitable)
        except Exception as error:
            return self._px_failed(request, error)

    def _px_static_real_root(self) -> str:
        cls = type(self)
        # Called for a class with a root only: neither root nor real is None.
        root = self.root
        cached_root, real = cls._px_static_root
        if cached_root is not root:
            real = _static.real_root(root)  # type: ignore[arg-type]
            cls._px_static_root = (root, real)
        return real  # type: ignore[return-value]

    def _px_static(self, request: Request) -> Wire:
        found = _static.resolve(self._px_static_real_root(), request.raw_path)
        if found is None:
            return NOT_FOUND
        if request.method != "GET" and request.method != "HEAD":
            return method_not_allowed(_STATIC_ALLOW)
        kind, where = found
        if kind is _static.FILE:
            return Response.file(where)
        if kind is _static.REDIRECT:
            return (301, [("Location", _local_location(where, request.query_string))], b"")
        page = _static.listing(where, request.path)
        if page is None:
            return NOT_FOUND
        return (200, HTML_FIELDS, page)
