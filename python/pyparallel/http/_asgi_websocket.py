"""The ASGI websocket scope (asgiref spec 2.4) on pyparallel's WebSockets.

ASGIServer._px_handle hands a request that asks for a WebSocket upgrade to
a _WebSocketCycle, whose run() the C layer runs as a task of the worker
loop of the connection's worker, as it does an http cycle:

  - receive() first gives websocket.connect; then the client's messages
    (websocket.receive, text or bytes), and websocket.disconnect with the
    close code and reason once the connection closed;
  - websocket.accept answers the handshake through the request's
    HttpStream with a WebSocketAccept (its subprotocol and headers; the
    server class's websocket_* attributes as settings): from then on the C
    layer runs the protocol (pings, the closing handshake, compression) and
    calls message_received and websocket_closed here, which queue events
    for receive() on the cycle's loop;
  - websocket.send sends text or bytes (ClientDisconnected, an OSError,
    once the connection closed); websocket.close starts the closing
    handshake, or, before the accept, refuses the handshake with 403;
  - websocket.http.response.start and .body (the denial extension, which
    every websocket scope advertises) answer the handshake with an HTTP
    response of the app's instead.

An app that raises before accepting is answered 500; after, its connection
is closed with 1011; either way the traceback goes to the "pyparallel"
logger. An app that returns without closing has its connection closed with
1000, one that returns without accepting gets 403.
"""

from __future__ import annotations

import asyncio
import logging

from .. import _core
from ._asgi import ClientDisconnected, _field, connection_scope
from ._response import INTERNAL_ERROR
from ._websocket import accept_settings

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import Any

    from ._asgi import ASGIServer, Message
    from ._request import Request

_log = logging.getLogger("pyparallel")

_EXTENSIONS: dict[str, dict[str, object]] = {"websocket.http.response": {}}
_FORBIDDEN = (403, [("Content-Type", "text/plain; charset=utf-8")], b"Forbidden\n")

# The states of a cycle.
_CONNECTING, _DENYING, _CONNECTED, _CLOSED = range(4)


class _WebSocketCycle:
    """One WebSocket connection's ASGI call; see the module's docstring."""

    def __init__(self, server: ASGIServer, request: Request, stream: _core.HttpStream) -> None:
        self.server = server
        self.request = request
        self.stream = stream
        self.state = _CONNECTING
        self.connect_given = False
        self.ws: _core.WebSocket | None = None
        self.denial: tuple[int, list[tuple[str, str]], list[bytes]] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events: asyncio.Queue[Message] = asyncio.Queue()

    def scope(self) -> dict[str, Any]:
        request = self.request
        server = self.server
        protocols = [
            token.strip()
            for value in request.headers.get_all("sec-websocket-protocol")
            for token in value.split(",")
            if token.strip()
        ]
        scope = connection_scope(server, request, "websocket", _EXTENSIONS)
        scope["subprotocols"] = protocols
        return scope

    async def run(self) -> _core.HttpStream:
        self.loop = asyncio.get_running_loop()
        app = self.server._px_app.app
        try:
            await app(self.scope(), self.receive, self.send)
        except Exception as error:
            _log.error(
                "ASGI app %s failed on its WebSocket %s",
                self.server._px_app.name,
                self.request.target,
                exc_info=error,
            )
            if self.state in (_CONNECTING, _DENYING):
                self._answer(INTERNAL_ERROR)
            elif self.ws is not None:
                self.ws.close(1011)
        else:
            if self.state == _CONNECTING:
                self._answer(_FORBIDDEN)
            elif self.state == _DENYING:
                _log.error("ASGI app %s returned without completing its denial response", self.server._px_app.name)
                self._answer(INTERNAL_ERROR)
            elif self.ws is not None:
                self.ws.close(1000)
        return self.stream

    def _answer(self, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
        self.state = _CLOSED
        if not self.stream.ended:
            self.stream.respond(answer)

    # ---- receive ----------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.connect_given:
            self.connect_given = True
            return {"type": "websocket.connect"}
        if self.state in (_CONNECTING, _DENYING):
            raise RuntimeError("the ASGI app called receive() again before accepting the WebSocket")
        return await self.events.get()

    # Called by the C layer on the connection's worker (not in the loop).

    def message_received(self, ws: _core.WebSocket, message: str | bytes) -> None:
        key = "text" if isinstance(message, str) else "bytes"
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.events.put_nowait, {"type": "websocket.receive", key: message})

    def websocket_closed(self, ws: _core.WebSocket, code: int, reason: str) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._closed, code, reason)

    def _closed(self, code: int, reason: str) -> None:
        self.state = _CLOSED
        self.events.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _opened(self, ws: _core.WebSocket) -> None:
        self.ws = ws

    # ---- send -------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        state = self.state
        if kind == "websocket.send":
            if state != _CONNECTED or self.ws is None:
                if state == _CLOSED:
                    raise ClientDisconnected("the WebSocket is closed")
                raise RuntimeError("the ASGI app sent 'websocket.send' before 'websocket.accept'")
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if not isinstance(data, (str, bytes, bytearray, memoryview)):
                raise TypeError("'websocket.send' needs 'text' (str) or 'bytes' (bytes)")
            if not self.ws.send(data):
                raise ClientDisconnected("the WebSocket is closed")
        elif kind == "websocket.accept":
            if state != _CONNECTING:
                raise RuntimeError("the ASGI app sent 'websocket.accept' out of turn")
            self._accept(message)
        elif kind == "websocket.close":
            if state == _CONNECTING:
                self._answer(_FORBIDDEN)
            elif state == _CONNECTED and self.ws is not None:
                self.ws.close(message.get("code", 1000), message.get("reason") or "")
            elif state == _DENYING:
                raise RuntimeError("the ASGI app sent 'websocket.close' during its denial response")
        elif kind == "websocket.http.response.start":
            if state != _CONNECTING:
                raise RuntimeError("the ASGI app sent 'websocket.http.response.start' out of turn")
            status = message.get("status")
            if type(status) is not int or not 200 <= status <= 599:
                raise ValueError(f"the ASGI app's status must be an int in 200..599, not {status!r}")
            fields = [field for field in map(_field, message.get("headers", ())) if field[0]]
            self.denial = (status, fields, [])
            self.state = _DENYING
        elif kind == "websocket.http.response.body":
            if state != _DENYING or self.denial is None:
                raise RuntimeError("the ASGI app sent 'websocket.http.response.body' out of turn")
            status, fields, parts = self.denial
            parts.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._answer((status, fields, b"".join(parts)))
        else:
            raise RuntimeError(f"the ASGI app sent {kind!r}, not an event of a websocket")

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in message.get("headers", ())
            if name.lower() not in (b"sec-websocket-protocol", b"sec-websocket-extensions")
        ]
        accept = _core.WebSocketAccept(
            self,
            self._opened,
            self.request,
            (subprotocol,) if subprotocol else (),
            headers or None,
            **accept_settings(type(self.server)),
        )
        self.stream.respond(accept)
        if self.ws is None:  # the client went away first, or the handshake was refused
            self.state = _CLOSED
            self.events.put_nowait({"type": "websocket.disconnect", "code": 1006, "reason": ""})
        else:
            self.state = _CONNECTED


def websocket_cycle(server: ASGIServer, request: Request) -> Awaitable[_core.HttpStream]:
    """The coroutine that serves request's WebSocket."""
    return _WebSocketCycle(server, request, server._px_stream()).run()
