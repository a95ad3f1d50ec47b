"""A browser chat over WebSockets: one room that every open page sees.

    python examples/ws_chat/chat.py [--host 127.0.0.1] [--port 8024]
    python examples/ws_chat/chat.py --selftest

Open http://127.0.0.1:8024/ in a few browser tabs and type. The page (and
its script: no external assets) is served by the same HttpServer class as
the WebSocket at /chat.

It shows fan-out across workers: each connection joins one WebSocketGroup,
and a message received on any worker is broadcast from there to every
member, whichever worker holds it. The group lives in C and is the same
for every worker and interpreter of the process, so the room works in every
mode, mode "interpreters" included, with no Python object shared. A member
hears each other member's messages in the order they were said: a
connection's messages are handled one at a time, and each broadcast is
queued to every member before the next.

Messages are JSON: the page sends {"text": ...}; the room gets
{"from": name, "text": ...}, where name is "guest" and the client's port,
given by the server (which tells each page its own first: {"you": name}).

--selftest connects five members (with the websockets client library), has
each say ten lines at once, and checks that every member heard all fifty,
each speaker's in order.
"""

import argparse
import contextlib
import json
import os
import sys
import time

import pyparallel as px
from pyparallel.http import HttpServer, Response, WebSocketGroup, route, websocket

ROOM = WebSocketGroup("ws_chat")

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>pyparallel chat</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 40em; }
  #log { list-style: none; padding: 0; height: 60vh; overflow-y: auto; border: 1px solid #ccc; }
  #log li { padding: .2em .5em; }
  #log .from { font-weight: bold; margin-right: .5em; }
  form { display: flex; gap: .5em; margin-top: .5em; }
  #text { flex: 1; }
</style>
<h1>pyparallel chat</h1>
<p id="status">connecting…</p>
<ul id="log"></ul>
<form id="say"><input id="text" autocomplete="off" autofocus><button>Send</button></form>
<script>
"use strict";
const log = document.getElementById("log");
const status = document.getElementById("status");
const socket = new WebSocket(`ws://${location.host}/chat`);
socket.onopen = () => { status.textContent = "connected"; };
socket.onclose = (event) => { status.textContent = `disconnected (${event.code})`; };
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.you) { status.textContent = `connected as ${message.you}`; return; }
  const item = document.createElement("li");
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = message.from + ":";
  item.append(from, " ", message.text);
  log.append(item);
  log.scrollTop = log.scrollHeight;
};
document.getElementById("say").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (input.value && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({text: input.value}));
    input.value = "";
  }
};
</script>
</html>
"""


class Chat(HttpServer):
    websocket_max_message_size = 64 << 10

    @route("/")
    def page(self, request):
        return Response(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})

    @websocket("/chat")
    def chat(self, ws):
        # The client's port names it: unique in the process, whichever
        # worker (or worker interpreter) serves it.
        ws.name = f"guest{ws.request.client[1]}"
        ws.send(json.dumps({"you": ws.name}))
        ROOM.join(ws)

    def message_received(self, ws, message):
        try:
            text = str(json.loads(message)["text"])
        except (ValueError, KeyError, TypeError):
            ws.close(1003, 'expected {"text": ...}')
            return
        ROOM.broadcast(json.dumps({"from": ws.name, "text": text}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8024)
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    if args.selftest:
        sys.exit(selftest())
    server = px.server(args.host, args.port)
    px.register(server, Chat)
    print(f"chat on http://{args.host}:{server.sockname[1]}/")
    px.run()


def selftest():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from websockets.sync.client import connect

    from _selftest import run_selftest

    server = px.server("127.0.0.1", 0)
    px.register(server, Chat)
    port = server.sockname[1]

    def drive():
        with contextlib.ExitStack() as stack:
            return talk([stack.enter_context(connect(f"ws://127.0.0.1:{port}/chat")) for _ in range(5)])

    def talk(members):
        names = [json.loads(m.recv())["you"] for m in members]
        while len(ROOM) < 5:  # the last join may lag its greeting
            time.sleep(0.01)
        for i in range(10):
            for m in members:
                m.send(json.dumps({"text": str(i)}))
        for m in members:
            heard = {}
            for _ in range(50):
                message = json.loads(m.recv(timeout=10))
                heard.setdefault(message["from"], []).append(int(message["text"]))
            assert heard == {name: list(range(10)) for name in names}, heard
        return "5 members heard 50 lines each, every speaker's in order"

    return run_selftest("ws_chat", drive)


if __name__ == "__main__":
    main()
