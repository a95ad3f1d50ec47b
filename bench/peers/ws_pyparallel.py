"""pyparallel's contender in bench/ws.py: a WebSocket echo and a broadcast room.

  /echo  sends every message back
  /room  joins one WebSocketGroup; a message is broadcast to every member,
         on whichever worker each is (the group lives in C, shared by every
         worker and interpreter)

Listens on 127.0.0.1:PORT until SIGTERM or SIGINT; PYPARALLEL_MODE and
PYPARALLEL_WORKERS choose the mode and the workers. Pings are left at their
defaults, compression is off (no peer compresses by default for a client
that does not ask).

  python bench/peers/ws_pyparallel.py PORT
"""

import sys

import pyparallel as px
from pyparallel.http import HttpServer, WebSocketGroup, websocket

ROOM = WebSocketGroup("bench-room")


class Bench(HttpServer):
    websocket_compression = False

    @websocket("/echo")
    def echo(self, ws):
        pass

    @websocket("/room")
    def room(self, ws):
        ROOM.join(ws)
        ws.in_room = True

    def message_received(self, ws, message):
        if getattr(ws, "in_room", False):
            ROOM.broadcast(message)
        else:
            ws.send(message)


if __name__ == "__main__":
    server = px.server("127.0.0.1", int(sys.argv[1]))
    px.register(server, Bench)
    px.run()
