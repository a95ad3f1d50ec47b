"""The servers of test_websocket.py, in a module of their own: mode
"interpreters" imports them in each worker, and the test module imports
hypothesis and the client libraries, which worker interpreters cannot load."""

import asyncio
import threading

from conftest import report
from pyparallel.http import HttpServer, WebSocketGroup, websocket

ROOM = WebSocketGroup("test-room")


class Echo(HttpServer):
    websocket_max_message_size = 1 << 20

    @websocket("/echo", subprotocols=("chat", "superchat"))
    def echo(self, ws):
        ws.hits = 0

    def message_received(self, ws, message):
        ws.hits += 1
        if message == "close-me":
            ws.close(4001, "asked")
        elif message == "count":
            ws.send(str(ws.hits))
        elif message == "from-thread":
            threading.Thread(target=lambda: [ws.send(f"t{i}") for i in range(3)]).start()
        else:
            ws.send(message)

    def websocket_closed(self, ws, code, reason):
        report(("closed", code, reason))

    @websocket("/room/{name}")
    def room(self, ws, name):
        ROOM.join(ws)
        report(("joined", name))

    def hello(self, request):
        return "plain HTTP still served"


class Small(HttpServer):
    websocket_max_message_size = 1024
    websocket_ping_interval = 0.2
    websocket_ping_timeout = 0.3
    websocket_compression = False

    @websocket("/echo")
    def echo(self, ws):
        pass

    def message_received(self, ws, message):
        ws.send(message)

    def websocket_closed(self, ws, code, reason):
        report(("closed", code, reason))


class AsyncEcho(HttpServer):
    @websocket("/echo")
    async def echo(self, ws):
        ws.send("welcome")

    async def message_received(self, ws, message):
        await asyncio.sleep(0)
        ws.send(message * 2)


class Broadcast(HttpServer):
    websocket_max_send_buffer = 256 << 10
    websocket_compression = False

    @websocket("/b")
    def join(self, ws):
        SLOW_ROOM.join(ws)


SLOW_ROOM = WebSocketGroup("test-slow-room")
