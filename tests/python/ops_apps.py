"""Applications of the operations tests (test_accesslog.py,
test_proxy_headers.py, test_metrics.py, test_status_page.py), one per
interface, served by the command line from this directory. Each tells
what it sees of the client: its address and the scheme."""

import asyncio
import json
import os
import time

from pyparallel.http import HttpServer, Response, route, websocket


class Api(HttpServer):
    def hello(self, request):
        return "hello"

    def slow(self, request):
        time.sleep(0.05)
        return "slow"

    def stream(self, request):
        return (b"x" * 1000 for _ in range(5))

    def boom(self, request):
        raise RuntimeError("boom, on purpose")

    async def hang(self, request):
        """Never answers in time: creates the file OPS_HANG_MARK names, so
        that a test knows it is under way, and waits."""
        with open(os.environ["OPS_HANG_MARK"], "w"):
            pass
        await asyncio.sleep(60)
        return "too late"

    def who(self, request):
        return {"client": list(request.client) if request.client else None, "scheme": request.scheme}

    @route("/upload", methods=("POST",))
    def upload(self, request):
        return Response(status=201)

    @websocket("/ws")
    def ws(self, ws):
        pass

    def message_received(self, ws, message):
        ws.send(message)


def wsgi_app(environ, start_response):
    if environ["PATH_INFO"] == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such thing"]
    seen = {
        "client": environ["REMOTE_ADDR"],
        "port": environ.get("REMOTE_PORT"),
        "scheme": environ["wsgi.url_scheme"],
        "server_port": environ["SERVER_PORT"],
    }
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    status = 404 if scope["path"] == "/missing" else 200
    seen = {"client": list(scope["client"]) if scope["client"] else None, "scheme": scope["scheme"]}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})
