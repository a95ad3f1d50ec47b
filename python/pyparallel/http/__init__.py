"""pyparallel.http: HTTP/1.1 servers whose Python handlers run on every core.

    from pyparallel.http import HttpServer, Response, route

The protocol work (parsing, framing, keep-alive, pipelining, limits and
timeouts, sending files) is done in C by pyparallel._core.HttpProtocol; this
package adds routing, the request object, the conversion of return values,
and static files; WSGIServer, ASGIServer and serve_app serve WSGI
applications (Flask, Django) and ASGI ones (Starlette, FastAPI); @websocket
routes upgrade requests to WebSockets (docs/websocket.md).
`python -m pyparallel.http.server` serves a directory or an app.
docs/http.md and docs/apps.md describe it all.
"""

from ._app import HttpServer
from ._apps import AppError, serve_app
from ._asgi import ASGIServer
from ._request import Headers, Request, RequestBodyError
from ._response import Response
from ._routing import route
from ._websocket import WebSocket, WebSocketGroup, websocket
from ._wsgi import WSGIServer

__all__ = [
    "ASGIServer",
    "AppError",
    "Headers",
    "HttpServer",
    "Request",
    "RequestBodyError",
    "Response",
    "WSGIServer",
    "WebSocket",
    "WebSocketGroup",
    "route",
    "serve_app",
    "websocket",
]
