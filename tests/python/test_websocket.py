"""WebSocket routes of HttpServer (RFC 6455, RFC 7692) over real
connections, in the mode the suite runs in.

Two independent clients talk to the server: the websockets library (sync
client) and wsproto driven over a plain socket. Covered: text, binary,
fragmented, empty and large messages with compression on and off,
subprotocol selection, ping/pong both ways, every close path (the client's,
the server's, a protocol error, a silent client dropped by the ping
timeout), refused handshakes, bad input (unmasked frames, reserved bits,
oversized or fragmented control frames, invalid UTF-8 whole and split,
lengths beyond the maximum), sends from another thread, async callbacks,
broadcasting to a group across workers, and a client that never reads while
others are broadcast to. A hypothesis test feeds random fragmentations
split at random points on the wire.
"""

import contextlib
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from conftest import LOCALHOST, SOCKET_TIMEOUT, next_report, reports_until, wait_for
from http_helpers import Client
from ws_apps import ROOM, SLOW_ROOM, AsyncEcho, Broadcast, Echo, Small
from ws_helpers import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawWebSocket, close_payload, frame


def url(port, path="/echo"):
    return f"ws://{LOCALHOST}:{port}{path}"


# ---- the websockets client ------------------------------------------------------------


@pytest.mark.parametrize("compression", ["deflate", None])
def test_messages_round_trip(rt, reports, compression):
    port = rt.serve(Echo)

    def driver():
        with connect(url(port), compression=compression, max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            got = [ext]
            for message in ["héllo", b"\x00\x01\xff", "", b"", "x" * 70000, bytes(range(256)) * 2000]:
                ws.send(message)
                got.append(ws.recv() == message)
            ws.send(["frag", "mented ", "✓"])
            got.append(ws.recv())
            ws.send([b"a", b"b"])
            got.append(ws.recv())
            ws.send("count")
            got.append(ws.recv())
        return got

    got = rt.run(driver)
    if compression:
        assert got[0].startswith("permessage-deflate")
    else:
        assert got[0] is None
    assert got[1:7] == [True] * 6
    assert got[7:] == ["fragmented ✓", b"ab", "9"]
    assert next_report() == ("closed", 1000, "")


def test_subprotocol_is_the_servers_first_choice_the_client_offers(rt):
    port = rt.serve(Echo)

    def driver():
        with connect(url(port), subprotocols=["superchat", "chat"]) as a:
            first = a.subprotocol
        with connect(url(port)) as b:
            none = b.subprotocol
        return first, none

    assert rt.run(driver) == ("chat", None)


def test_ping_is_answered_and_plain_http_still_served(rt):
    port = rt.serve(Echo)

    def driver():
        with connect(url(port)) as ws:
            ok = ws.ping(b"abc").wait(SOCKET_TIMEOUT)
        with Client(port) as client:
            return ok, client.request("GET", "/hello").body

    assert rt.run(driver) == (True, b"plain HTTP still served")


def test_close_paths(rt, reports):
    port = rt.serve(Echo)

    def driver():
        with connect(url(port)) as ws:
            ws.close(4000, "bye now")
        client_close = next_report()
        with connect(url(port)) as ws:
            ws.send("close-me")
            try:
                ws.recv()
            except ConnectionClosed as exc:
                server_close = (exc.rcvd.code, exc.rcvd.reason)
        reported = next_report()
        # A client that disappears without a close frame: 1006.
        raw = RawWebSocket(port)
        raw.close()
        return client_close, server_close, reported, next_report()

    client_close, server_close, reported, vanished = rt.run(driver)
    assert client_close == ("closed", 4000, "bye now")
    assert server_close == (4001, "asked")
    assert reported == ("closed", 4001, "asked")
    assert vanished == ("closed", 1006, "")


def test_send_from_another_thread_and_async_callbacks(rt):
    port = rt.serve(Echo)
    port2 = rt.serve(AsyncEcho)

    def driver():
        with connect(url(port)) as ws:
            ws.send("from-thread")
            threaded = [ws.recv() for _ in range(3)]
        with connect(url(port2)) as ws:
            welcome = ws.recv()
            ws.send("ab")
            doubled = ws.recv()
        return threaded, welcome, doubled

    assert rt.run(driver) == (["t0", "t1", "t2"], "welcome", "abab")


def test_refused_handshakes(rt):
    port = rt.serve(Echo)

    def driver():
        with Client(port) as client:
            plain = client.request("GET", "/echo")
            version = client.request(
                "GET",
                "/echo",
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "8"),
                ],
            )
            key = client.request(
                "GET",
                "/echo",
                headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
            )
        try:
            connect(url(port, "/nowhere"))
        except InvalidStatus as exc:
            missing = exc.response.status_code
        return plain, version, key, missing

    plain, version, key, missing = rt.run(driver)
    assert plain.status == 426 and plain.header("Upgrade") == "websocket"
    assert version.status == 426 and version.header("Sec-WebSocket-Version") == "13"
    assert key.status == 400
    assert missing == 404


# ---- wsproto, a second independent client ---------------------------------------------


def test_wsproto_client(rt):
    port = rt.serve(Echo)

    def driver():
        conn = WSConnection(ConnectionType.CLIENT)
        sock = socket.create_connection((LOCALHOST, port), timeout=SOCKET_TIMEOUT)
        events = []

        def pump(until):
            while True:
                for event in conn.events():
                    events.append(event)
                    if isinstance(event, Ping):
                        sock.sendall(conn.send(event.response()))
                if until():
                    return
                data = sock.recv(65536)
                conn.receive_data(data or None)
                if not data:
                    return

        sock.sendall(conn.send(Request(host=LOCALHOST, target="/echo", subprotocols=["superchat"])))
        pump(lambda: any(isinstance(e, AcceptConnection) for e in events))
        sock.sendall(conn.send(TextMessage(data="wsproto ✓")))
        sock.sendall(conn.send(BytesMessage(data=b"\x00" * 100000)))
        sock.sendall(conn.send(Ping(payload=b"pp")))
        pump(lambda: sum(isinstance(e, (TextMessage, BytesMessage, Pong)) for e in events) >= 3)
        sock.sendall(conn.send(CloseConnection(code=1000, reason="done")))
        pump(lambda: any(isinstance(e, CloseConnection) for e in events))
        sock.close()
        return events

    events = rt.run(driver)
    accept = next(e for e in events if isinstance(e, AcceptConnection))
    assert accept.subprotocol == "superchat"
    text = [e.data for e in events if isinstance(e, TextMessage)]
    binary = b"".join(e.data for e in events if isinstance(e, BytesMessage))
    assert text == ["wsproto ✓"] and binary == b"\x00" * 100000
    assert [e.payload for e in events if isinstance(e, Pong)] == [b"pp"]
    assert next(e for e in events if isinstance(e, CloseConnection)).code == 1000


# ---- bad input ------------------------------------------------------------------------------

BAD_INPUT = {
    "unmasked": (frame(TEXT, b"a", mask=False), 1002),
    "rsv1 without the extension": (frame(TEXT, b"a", rsv=4), 1002),
    "rsv3": (frame(BINARY, b"a", rsv=1), 1002),
    "unknown opcode": (frame(3, b"a"), 1002),
    "ping over 125 bytes": (frame(PING, b"p" * 126), 1002),
    "fragmented ping": (frame(PING, b"p", fin=False), 1002),
    "lone continuation": (frame(CONT, b"a"), 1002),
    "invalid utf-8": (frame(TEXT, b"ok \xff"), 1007),
    "invalid utf-8 split across fragments": (frame(TEXT, b"\xe2\x82", fin=False) + frame(CONT, b"("), 1007),
    "invalid utf-8 in a close reason": (frame(CLOSE, close_payload(1000, b"\xff")), 1007),
    "close code 1005": (frame(CLOSE, close_payload(1005)), 1002),
    "message beyond the maximum": (frame(BINARY, b"x" * 1025), 1009),
    "fragments beyond the maximum": (frame(BINARY, b"x" * 1000, fin=False) + frame(CONT, b"x" * 100), 1009),
    "length of 2^63": (frame(BINARY, b"", length=1 << 63)[:10] + b"\x00\x00\x00\x00", 1002),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_fails_the_connection(rt, reports, name):
    data, code = BAD_INPUT[name]
    port = rt.serve(Small)

    def driver():
        with RawWebSocket(port) as raw:
            raw.send(data)
            return raw.expect_close()

    assert rt.run(driver) == code
    assert next_report()[:2] == ("closed", code)


def test_idle_client_is_pinged_and_a_silent_one_dropped(rt, reports):
    port = rt.serve(Small)

    def driver():
        with RawWebSocket(port) as raw:
            start = time.monotonic()
            fin, opcode, payload = raw.read_frame()
            assert opcode == PING
            raw.send(frame(PONG, payload))
            # Answered: still open; now silent, so dropped after the timeout.
            fin, opcode, _ = raw.read_frame()
            assert opcode == PING
            try:
                end = raw.sock.recv(1)
            except ConnectionResetError:
                end = b""
            return end, time.monotonic() - start

    end, took = rt.run(driver)
    assert end == b"" and took < 5
    assert next_report() == ("closed", 1006, "")


# ---- hypothesis: fragmentation and wire splits ---------------------------------------------


@st.composite
def fragmented_messages(draw):
    """[(text?, payload, [fragment sizes]), ...] and the wire's cut points."""
    messages = []
    for _ in range(draw(st.integers(1, 4))):
        text = draw(st.booleans())
        payload = draw(st.text(max_size=300)).encode() if text else draw(st.binary(max_size=300))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        messages.append((text, payload, cuts))
    return messages, draw(st.lists(st.integers(1, 64), min_size=1, max_size=20))


def wire(messages):
    out = b""
    for text, payload, cuts in messages:
        bounds = [0, *cuts, len(payload)]
        pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        for i, piece in enumerate(pieces):
            opcode = (TEXT if text else BINARY) if i == 0 else CONT
            out += frame(opcode, piece, fin=i == len(pieces) - 1)
            if i == 0 and len(pieces) > 1:
                out += frame(PING, b"between")
    return out


def test_random_fragmentation_and_wire_splits(rt):
    port = rt.serve(Small)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(fragmented_messages())
    def check(case):
        messages, sizes = case
        data = wire(messages)
        with RawWebSocket(port) as raw:
            at = 0
            for size in sizes * (len(data) // sum(sizes) + 1):
                if at >= len(data):
                    break
                raw.send(data[at : at + size])
                at += size
            for text, payload, _ in messages:
                while True:
                    fin, opcode, got = raw.read_frame()
                    if opcode != PONG:
                        break
                assert (opcode, got) == (TEXT if text else BINARY, payload)

    rt.run(check)


# ---- groups -----------------------------------------------------------------------------------


def test_broadcast_reaches_every_member_on_every_worker(rt, reports):
    port = rt.serve(Echo)

    def driver():
        stack = contextlib.ExitStack()
        clients = [stack.enter_context(connect(url(port, f"/room/r{i}"))) for i in range(12)]
        reports_until(lambda item: item == ("joined", "r11"), timeout=SOCKET_TIMEOUT)
        wait_for(lambda: len(ROOM) == 12)
        sent = ROOM.broadcast("to all")
        sent_binary = ROOM.broadcast(b"\x01" * 10000, exclude=None)
        got = [(c.recv(), c.recv()) for c in clients]
        stack.close()
        wait_for(lambda: len(ROOM) == 0)
        return sent, sent_binary, got

    sent, sent_binary, got = rt.run(driver)
    assert sent == sent_binary == 12
    assert got == [("to all", b"\x01" * 10000)] * 12


def test_a_client_that_never_reads_is_closed_and_stalls_nobody(rt):
    port = rt.serve(Broadcast)

    def driver():
        slow = RawWebSocket(port, "/b", rcvbuf=4096)
        with connect(url(port, "/b"), max_size=None) as fast:
            wait_for(lambda: len(SLOW_ROOM) == 2)
            # 200 broadcasts of 64 KiB, at the pace the reading client
            # takes them: 12.8 MB that the slow one would have to hold.
            for i in range(200):
                SLOW_ROOM.broadcast(b"%08d" % i + bytes(64 << 10))
                assert int(fast.recv(timeout=SOCKET_TIMEOUT)[:8]) == i
            members = len(SLOW_ROOM)
        # The slow client finds its close frame (1008) behind what it left
        # unread.
        code = slow.expect_close()
        slow.close()
        return members, code

    members, code = rt.run(driver)
    assert members == 1
    assert code == 1008
