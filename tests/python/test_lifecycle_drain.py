"""The graceful drain of the command-line server on SIGTERM, with real
clients and signals: under a steady keep-alive load with requests that take
a second, none started before the signal fails, connection attempts after
it are refused, and the process exits within --graceful-timeout. Requests
in flight finish whatever they are (a blocking handler, an async one, a
streamed response, a streamed WSGI response); a request that reaches an
open connection during the drain is answered with "Connection: close", and
an idle keep-alive connection is closed once it has been idle for the
grace (about a second), not at once; a WebSocket gets the closing
handshake (1001, going away).
"""

import http.client
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import LOCALHOST, recv_to_eof, wait_for
from http_helpers import Client
from lifecycle_helpers import WSGI_APP, Load, ServerProcess, failures, write_app
from ws_helpers import CLOSE, TEXT, RawWebSocket, close_payload, frame

GRACEFUL = 8


@pytest.fixture
def server(tmp_path):
    started = []

    def start(*args):
        process = ServerProcess(
            "--bind", LOCALHOST, "--port", "0", "--graceful-timeout", str(GRACEFUL), *args, cwd=tmp_path
        )
        started.append(process)
        return process

    write_app(tmp_path, "v1")
    yield start
    for process in started:
        process.kill()


def refused(port):
    try:
        socket.create_connection((LOCALHOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def fetch_in_background(port, path, into):
    def run():
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=20)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            into.append((response.status, response.read(), response.getheader("Connection")))
        finally:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_under_load_loses_no_request(server):
    process = server("--app", "lifeapp:App")
    load = Load(process.port, clients=4, slow_every=3)
    load.wait_count(40)
    # One request of each kind surely in flight at the signal.
    in_flight = []
    threads = [fetch_in_background(process.port, path, in_flight) for path in ("/slow", "/awaiting", "/streamed")]
    time.sleep(0.3)
    signalled = time.monotonic()
    process.child.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert refused(process.port), "a connection after the signal was accepted"
    status = process.child.wait(timeout=GRACEFUL + 10)
    took = time.monotonic() - signalled
    outcomes = load.stop()
    for thread in threads:
        thread.join(10)

    assert status == 0, process.stderr()
    assert took < GRACEFUL, f"the drain took {took:.1f} s"
    assert "Traceback" not in process.stderr()
    assert failures(outcomes, before=signalled) == []
    assert len([o for o in outcomes if o.started < signalled]) >= 40
    # The slow ones started before the signal ended after it, answered.
    assert any(o.path == "/slow" and o.ended > signalled and o.error is None for o in outcomes)
    assert sorted(in_flight) == [
        (200, b"01234", None),  # chunked: its end is its last chunk
        (200, b"v1 awaited", "close"),
        (200, b"v1 slow", "close"),
    ]


def test_streamed_wsgi_response_finishes(server, tmp_path):
    (tmp_path / "wsgiapp.py").write_text(WSGI_APP)
    process = server("--app", "wsgiapp:app")
    answers = []
    thread = fetch_in_background(process.port, "/", answers)
    time.sleep(0.3)
    process.child.send_signal(signal.SIGTERM)
    thread.join(10)
    assert answers and answers[0][:2] == (200, b"01234")
    assert process.child.wait(timeout=GRACEFUL) == 0


def test_open_connections_get_connection_close_and_idle_ones_a_grace(server):
    process = server("--app", "lifeapp:App")
    idle = Client(process.port)
    busy = Client(process.port)
    try:
        for client in (idle, busy):
            assert client.request("GET", "/fast").header("Connection") is None  # kept alive
            if client is idle:
                idle_since = time.monotonic()
        # Keeps the drain going past the idle connection's grace.
        answers = []
        slow = fetch_in_background(process.port, "/slow", answers)
        time.sleep(0.2)
        signalled = time.monotonic()
        process.child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # A request on an open connection, within the grace: answered, and
        # the connection ends with it.
        response = busy.request("GET", "/fast")
        assert (response.status, response.body, response.header("Connection")) == (200, b"v1", "close")
        assert recv_to_eof(busy.sock) == b""
        # The idle one is closed once idle for the grace (1 s, counted from its
        # last response), not at the signal.
        assert recv_to_eof(idle.sock) == b""
        closed = time.monotonic()
        assert closed - signalled > 0.3, f"closed {closed - signalled:.2f} s after the signal"
        assert 0.8 < closed - idle_since < 3, f"closed after {closed - idle_since:.2f} s idle"
        slow.join(10)
        assert answers == [(200, b"v1 slow", "close")]
        assert process.child.wait(timeout=GRACEFUL) == 0
    finally:
        idle.close()
        busy.close()


def test_health_route_says_503_during_the_drain_delay(server):
    process = server("--app", "lifeapp:App", "--health", "/healthz", "--drain-delay", "1")
    with Client(process.port) as client:
        response = client.request("GET", "/healthz")
        assert (response.status, response.body) == (200, b"ok\n")
    signalled = time.monotonic()
    process.child.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # The listener still accepts; the app still answers; health says 503.
    with Client(process.port) as client:
        response = client.request("GET", "/healthz")
        assert (response.status, response.body) == (503, b"draining\n")
        assert client.request("GET", "/fast").body == b"v1"
    wait_for(lambda: refused(process.port), timeout=5)
    assert time.monotonic() - signalled > 0.9
    assert process.child.wait(timeout=GRACEFUL) == 0


WS_APP = """
from pyparallel.http import HttpServer, websocket


class App(HttpServer):
    @websocket("/echo")
    def echo(self, ws):
        pass

    def message_received(self, ws, message):
        ws.send(message)
"""


def test_websockets_are_closed_going_away(server, tmp_path):
    """A WebSocket is not idle HTTP: the drain closes it with the closing
    handshake (1001), and the process exits once the client answered."""
    (tmp_path / "wsapp.py").write_text(WS_APP)
    process = server("--app", "wsapp:App")
    with RawWebSocket(process.port) as ws:
        ws.send(frame(TEXT, b"hi"))
        assert ws.read_frame() == (True, TEXT, b"hi")
        signalled = time.monotonic()
        process.child.send_signal(signal.SIGTERM)
        fin, opcode, payload = ws.read_frame()
        assert opcode == CLOSE and struct.unpack(">H", payload[:2])[0] == 1001
        ws.send(frame(CLOSE, close_payload(1001)))
        assert ws.sock.recv(1) == b""
    assert process.child.wait(timeout=GRACEFUL) == 0
    assert time.monotonic() - signalled < 3
