"""The command line's health route (--health PATH), for a load balancer's
health checks: 200 "ok" while the server serves, 503 "draining" once its
graceful shutdown began (pyparallel.draining()), so that the balancer stops
sending it requests before its listeners are gone. The route is answered
before the application sees the request, whatever the application's
interface (HttpServer, WSGI, ASGI): the subclass the command line serves
gets a _px_handle that looks at the path first. That subclass's exact routes are then looked up in Python
rather than by the C layer (see _app.py), a small cost on every request,
paid only with --health.
"""

from __future__ import annotations

from .. import _core
from ._response import Response

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._request import Request

HEALTHY = Response(b"ok\n").wire()
DRAINING = Response(b"draining\n", status=503).wire()


def _px_handle(self: object, request: Request) -> object:
    if request.path == self._px_health_path:  # type: ignore[attr-defined]
        return DRAINING if _core.draining() else HEALTHY
    # The class registered is the command line's subclass (or its copy in
    # a worker interpreter): its base serves everything else.
    return super(type(self), self)._px_handle(request)  # type: ignore[misc]


def attributes(path: str) -> dict[str, object]:
    """The class attributes that make the served class (the subclass that
    _apps.server_class makes of the application) answer path itself."""
    if not path.startswith("/"):
        raise ValueError(f"--health {path}: a path starts with /")
    return {"_px_health_path": path, "_px_handle": _px_handle}
