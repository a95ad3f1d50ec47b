"""ASGI WebSocket apps for test_websocket_asgi.py: one written against the
spec alone (`--app apps.ws_asgi:app`) and one on Starlette's WebSocket
routes (`--app apps.ws_asgi:starlette_app`).

app routes by path: /echo accepts (choosing "chat" when offered, with a
header of its own) and echoes until the client closes; /deny answers the
handshake with a 401 of its own (websocket.http.response); /refuse closes
before accepting (403); /close accepts, sends "bye" and closes with 4002;
/fail raises before accepting (500). The disconnect's code is written to
ASGI_TEST_LOG.
"""

import os

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect


def note(line):
    path = os.environ.get("ASGI_TEST_LOG")
    if path:
        with open(path, "a") as log:
            log.write(line + "\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/echo":
        chosen = "chat" if "chat" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-asgi", b"yes")]})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                note(f"disconnect {event['code']}")
                return
            if "text" in event and event["text"] is not None:
                await send({"type": "websocket.send", "text": event["text"]})
            else:
                await send({"type": "websocket.send", "bytes": event["bytes"]})
    elif path == "/deny":
        assert "websocket.http.response" in scope["extensions"]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"x-why", b"token")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
    elif path == "/refuse":
        await send({"type": "websocket.close"})
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "bye"})
        await send({"type": "websocket.close", "code": 4002, "reason": "done"})
    elif path == "/fail":
        raise RuntimeError("fails before accepting")


async def starlette_echo(websocket):
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message["code"])
            if message.get("text") is not None:
                await websocket.send_text("starlette: " + message["text"])
            else:
                await websocket.send_bytes(message["bytes"][::-1])
    except WebSocketDisconnect as exc:
        note(f"starlette disconnect {exc.code}")


async def starlette_json(websocket):
    await websocket.accept()
    data = await websocket.receive_json()
    await websocket.send_json({"got": data, "path": websocket.url.path})
    await websocket.close(code=4003)


starlette_app = Starlette(routes=[WebSocketRoute("/ws", starlette_echo), WebSocketRoute("/json", starlette_json)])
