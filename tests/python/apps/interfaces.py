"""One app of each kind, for the interface detection of --app and serve_app
(test_wsgi.py): each answers /page with "<its interface> page"."""

from pyparallel.http import HttpServer


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/server":
        return [f"{environ['SERVER_NAME']} {environ['SERVER_PORT']}".encode()]
    return [b"wsgi page"]


class WsgiClass:
    """PEP 3333 allows a class as the app: its instances are the bodies."""

    def __init__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"wsgi page"


class Pages(HttpServer):
    def page(self, request):
        return "pyparallel page"


async def _asgi_page(scope, receive, send):
    if scope["type"] != "http":  # lifespan: not supported, which is allowed
        raise RuntimeError(f"no {scope['type']} here")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"asgi page"})


async def asgi_app(scope, receive, send):
    await _asgi_page(scope, receive, send)


class AsgiCallable:
    async def __call__(self, scope, receive, send):
        await _asgi_page(scope, receive, send)


asgi_instance = AsgiCallable()
not_callable = 42
