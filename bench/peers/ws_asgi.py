"""The raw ASGI WebSocket app of bench/ws.py, served unchanged by uvicorn
(its websockets implementation) and granian.

  /echo  sends every message back
  /room  a member of one room per process; a message is sent to every
         member of this process's room, all sends at once (asyncio.gather)

A room spans one process: the peers serve it with one worker (a room over
several processes needs a broker, which none of them has).

  uvicorn --ws websockets --workers N ws_asgi:app
  granian --interface asgi --workers N ws_asgi:app
"""

import asyncio

ROOM = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    room = scope["path"] == "/room"
    if room:
        ROOM.add(send)
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            out = {"type": "websocket.send", "bytes": event.get("bytes"), "text": event.get("text")}
            if room:
                await asyncio.gather(*(member(out) for member in list(ROOM)), return_exceptions=True)
            else:
                await send(out)
    finally:
        ROOM.discard(send)
