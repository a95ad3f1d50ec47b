"""What the WSGI and ASGI adapters share: the HttpServer subclass made for
one application (AppServer.for_app), and how that application is found
again in another interpreter (_AppRef).

An adapter is an HttpServer whose _px_handle hands every request to the
app; static files under root, when the class has one, are answered first,
as for any HttpServer.
"""

from __future__ import annotations

import os

from .. import _core
from . import _static
from ._app import HttpServer
from ._apps import resolve_spec
from ._response import Response

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Self

    from ._request import Request
    from ._response import Wire

# The class attributes for_app accepts besides server.
ATTRIBUTES = frozenset(
    {
        "root",
        "url_scheme",
        "max_header_size",
        "max_uri_size",
        "max_body_size",
        "header_timeout",
        "body_timeout",
        "keepalive_timeout",
    }
)
# Fields the C layer writes for a file itself (FileResponse), from the file.
_FILE_FIELDS = ("content-type", "etag", "last-modified", "accept-ranges")


def file_answer(path: str, fields: list[tuple[str, str]]) -> _core.FileResponse:
    """The answer that sends the file at path (sendfile) with an app's
    fields (its Content-Type, or one guessed from the name): the C layer
    writes ETag, Last-Modified and Accept-Ranges, and answers ranges and
    304 its own way, for the same file the app chose."""
    content_type = None
    kept = []
    for name, value in fields:
        lowered = name.lower()
        if lowered == "content-type":
            content_type = value
        elif lowered not in _FILE_FIELDS:
            kept.append((name, value))
    if content_type is None:
        content_type = _static.content_type(path)
    return _core.FileResponse(os.path.abspath(path), content_type, status=200, headers=kept or None)


class _AppRef:
    """The app an AppServer subclass serves. In another interpreter it is
    found again by its "module:attr" when it was given one; else it is
    pickled, which finds a module-level function or class by module and
    qualified name, and which a framework's app object usually refuses
    (register() then says so)."""

    __slots__ = ("app", "spec", "given_name")

    def __init__(self, app: Any, spec: str | None = None, name: str | None = None) -> None:
        self.app = app
        self.spec = spec
        self.given_name = name

    @property
    def name(self) -> str:
        """The app's "module:attr", as the main interpreter names it (a
        worker keeps that name: there the main script's module is not
        __main__)."""
        if self.spec is not None:
            return self.spec
        if self.given_name is not None:
            return self.given_name
        app = self.app
        module = getattr(app, "__module__", None) or type(app).__module__
        return f"{module}:{getattr(app, '__qualname__', type(app).__qualname__)}"

    def __reduce__(self) -> tuple[Callable[..., _AppRef], tuple[Any, ...]]:
        if self.spec is not None:
            return (_imported, (self.spec,))
        return (_AppRef, (self.app, None, self.name))


def _imported(spec: str) -> _AppRef:
    """An _AppRef in another interpreter, its app imported now: when the
    worker finds the class (register() has every worker do it at once), so
    that no request waits for the import."""
    return _AppRef(resolve_spec(spec, "app"), spec)


class AppServer(HttpServer):
    """The base of WSGIServer and ASGIServer: an HttpServer serving one app.

    Class attributes, besides HttpServer's (root, the limits):
        server_name, server_port  the listener's host and port (str); None:
                                  from the Host header
        url_scheme                the scheme the app is told ("http")
    """

    _px_app: ClassVar[_AppRef]
    _px_interface: ClassVar[str] = ""
    _px_attributes: ClassVar[frozenset[str]] = ATTRIBUTES
    server_name: ClassVar[str | None] = None
    server_port: ClassVar[str | None] = None
    url_scheme: ClassVar[str] = "http"

    @classmethod
    def for_app(cls, app: object, *, server: tuple[str, int] | str | None = None, **attributes: object) -> type[Self]:
        """A subclass serving app: a callable, or its "module:attr" (which
        mode interpreters needs for an app object, such as Flask's, that
        cannot be found by module and qualified name). server is the
        listener's (host, port), for the app's server name and port (a Unix
        socket's path, a str, names neither: WSGI takes them from the Host
        header, as gunicorn does, and ASGI's scope has no "server", as
        uvicorn's); attributes are root, url_scheme and the limits."""
        unknown = set(attributes) - cls._px_attributes
        if unknown:
            raise TypeError(f"for_app() got unknown attributes: {', '.join(sorted(unknown))}")
        if isinstance(app, str):
            ref = _AppRef(resolve_spec(app, "app"), app)
        else:
            ref = _AppRef(app)
        if not callable(ref.app):
            raise TypeError(f"a {cls._px_interface} app must be callable, not {type(ref.app).__name__}")
        namespace = {"_px_app": ref, "__module__": cls.__module__, **attributes}
        if server is not None and not isinstance(server, str):
            namespace["server_name"] = server[0] or "0.0.0.0"
            namespace["server_port"] = str(server[1])
        return type(cls.__name__, (cls,), namespace)

    def _px_static_file(self, request: Request) -> Wire | None:
        """The file under root that a GET or HEAD names, or None: the app
        answers the rest."""
        if self.root is not None and (request.method == "GET" or request.method == "HEAD"):
            found = _static.resolve(self._px_static_real_root(), request.raw_path)
            if found is not None and found[0] is _static.FILE:
                return Response.file(found[1])
        return None
