"""What the command line puts in front of the application: the health route
(--health PATH) and the request count of --max-requests.

The health route serves a load balancer's health checks: 200 "ok" while the
server serves, 503 "draining" once its graceful shutdown began
(pyparallel.draining(), which --drain-delay makes true before the listeners
close), so that the balancer stops sending it requests first. It is
answered before the application sees the request, whatever the
application's interface (HttpServer, WSGI, ASGI): the subclass the command
line serves gets a _px_handle that looks at the path first. That subclass's
exact routes are then looked up in Python rather than by the C layer (see
_app.py), a small cost on every request, paid only with --health or
--max-requests.

--max-requests N: each interpreter counts the requests it serves, which in
mode interpreters is one worker's and in modes threads and gil the whole
process's (where the limit is N times the workers). Past the limit (plus a
random part of --max-requests-jitter, drawn once per interpreter, so that
workers do not all reach it together), in mode interpreters it asks the
supervisor (pyparallel._lifecycle) to replace this worker's interpreter
with a fresh one, in place, while the other workers serve; in modes
threads and gil, where the workers share one interpreter, it sends the
process SIGHUP: the reload replaces the process. Neither drops a request.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal

from .. import _core, _lifecycle
from ._response import Response

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._request import Request

HEALTHY = Response(b"ok\n").wire()
DRAINING = Response(b"draining\n", status=503).wire()

_log = logging.getLogger("pyparallel")

# This interpreter's count, and its limit once drawn (0: none).
_served = itertools.count(1)
_limit: int | None = None


def _limit_of(cls: object) -> int:
    global _limit
    if _limit is None:
        per = int(cls._px_max_requests)  # type: ignore[attr-defined]
        if per and _core.stats()["mode"] != "interpreters":
            per *= int(_core._worker_count())
        _limit = per + random.randint(0, int(cls._px_max_requests_jitter)) if per else 0  # type: ignore[attr-defined]
    return _limit


def _count(cls: object) -> None:
    limit = _limit or _limit_of(cls)
    if limit and next(_served) == limit:
        worker = _core._worker_index()
        if _core.stats()["mode"] == "interpreters" and worker >= 0:
            cause = f"{limit} requests served by its interpreter (--max-requests)"
            _core.call_from_main_thread(_lifecycle.request_recycle, worker, cause)
        else:
            _log.warning("%d requests served here (--max-requests): reloading the process", limit)
            os.kill(os.getpid(), signal.SIGHUP)


def _px_handle(self: object, request: Request) -> object:
    cls = type(self)
    if cls._px_max_requests:  # type: ignore[attr-defined]
        _count(cls)
    if request.path == cls._px_health_path:  # type: ignore[attr-defined]
        return DRAINING if _core.draining() else HEALTHY
    # The class registered is the command line's subclass (or its copy in
    # a worker interpreter): its base serves everything else.
    return super(cls, self)._px_handle(request)  # type: ignore[misc]


def attributes(health: str | None, max_requests: int = 0, jitter: int = 0) -> dict[str, object]:
    """The class attributes that make the served class (the subclass that
    _apps.server_class makes of the application) answer the health route
    and count its requests; {} when neither is asked for."""
    if health is None and not max_requests:
        return {}
    if health is not None and not health.startswith("/"):
        raise ValueError(f"--health {health}: a path starts with /")
    return {
        "_px_health_path": health,
        "_px_max_requests": max_requests,
        "_px_max_requests_jitter": jitter,
        "_px_handle": _px_handle,
    }
