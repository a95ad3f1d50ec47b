"""pyparallel.http: HTTP/1.1 servers whose Python handlers run on every core.

    from pyparallel.http import HttpServer, Response, route

The protocol work (parsing, framing, keep-alive, pipelining, limits and
timeouts, sending files) is done in C by pyparallel._core.HttpProtocol; this
package adds routing, the request object, the conversion of return values,
and static files. `python -m pyparallel.http.server` serves a directory.
docs/http.md describes it all.
"""

from ._app import HttpServer
from ._request import Headers, Request
from ._response import Response
from ._routing import route

__all__ = ["Headers", "HttpServer", "Request", "Response", "route"]
