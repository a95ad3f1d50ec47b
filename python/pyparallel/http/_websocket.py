"""WebSocket routes of HttpServer: the @websocket decorator.

    class Chat(HttpServer):
        @websocket("/chat")
        def chat(self, ws):                      # the connection is open
            ROOM.join(ws)

        def message_received(self, ws, message):  # str (text) or bytes (binary)
            ROOM.broadcast(message)

        def websocket_closed(self, ws, code, reason):
            ...

The C layer checks the handshake, answers 101 (or 400/426 to a request
that is not a WebSocket handshake), negotiates permessage-deflate, pings
idle clients, answers pings and runs the closing handshake; Python sees
whole messages. Settings are class attributes (see WEBSOCKET_DEFAULTS).
docs/websocket.md describes it all.
"""

from __future__ import annotations

import functools
import types

from .. import _core
from ._routing import route

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

WebSocket = _core.WebSocket
WebSocketGroup = _core.WebSocketGroup

# Class attributes a server may set, and their defaults.
WEBSOCKET_DEFAULTS: dict[str, object] = {
    "websocket_max_message_size": 1 << 20,  # bytes, after decompression: 1009 beyond
    "websocket_ping_interval": 20.0,  # seconds of silence before a ping; None: never
    "websocket_ping_timeout": 20.0,  # seconds the pong may take; then dropped
    "websocket_close_timeout": 5.0,  # seconds the client has to answer our close
    "websocket_max_send_buffer": 4 << 20,  # unread bytes before a send closes with 1008
    "websocket_compression": True,  # permessage-deflate when the client offers it
}


def accept_settings(cls: type) -> dict[str, Any]:
    """WebSocketAccept's keyword settings from cls's attributes."""
    return {name.removeprefix("websocket_"): getattr(cls, name, value) for name, value in WEBSOCKET_DEFAULTS.items()}


def websocket[F: Callable[..., object]](path: str, *, subprotocols: Sequence[str] = ()) -> Callable[[F], F]:
    """Declares the decorated method the WebSocket endpoint at path.

    A GET on path with a WebSocket handshake is upgraded; the method is then
    called as method(self, ws, **path_parameters) with the open WebSocket
    (ws.request is the upgrade request). The first of subprotocols that the
    client offers is chosen (ws.subprotocol), None when none is. Messages
    arrive in self.message_received(ws, message); the close in
    self.websocket_closed(ws, code, reason). Any of them may be async def.
    """
    if isinstance(subprotocols, str):
        raise TypeError("websocket() subprotocols must be a sequence of names, not a str")
    offered = tuple(subprotocols)

    def decorate(func: F) -> F:
        if not isinstance(func, types.FunctionType):
            raise TypeError(f"@websocket() decorates a function, not {type(func).__name__}")

        @functools.wraps(func)
        def handshake(self: Any, request: Any, **params: str) -> object:
            opened = functools.partial(func, self, **params) if params else functools.partial(func, self)
            return _core.WebSocketAccept(self, opened, request, offered, None, **accept_settings(type(self)))

        return route(path, methods=("GET",))(handshake)  # type: ignore[return-value]

    return decorate
