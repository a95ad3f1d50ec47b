"""The websockets library's own server in bench/ws.py: echo and a room, on
its asyncio implementation, one process (the library's way to serve).

  /echo  sends every message back
  /room  a message goes to every member with websockets.broadcast(), which
         writes to each connection without waiting

  python bench/peers/ws_websockets.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

ROOM = set()


async def handler(ws):
    if ws.request.path == "/room":
        ROOM.add(ws)
        try:
            async for message in ws:
                broadcast(ROOM, message)
        finally:
            ROOM.discard(ws)
    else:
        async for message in ws:
            await ws.send(message)


async def main(port):
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
