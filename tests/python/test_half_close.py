"""A client that half-closes (shutdown(SHUT_WR) after sending) still gets
what the server produces afterwards: eof_received's asyncio semantics
(True keeps the connection open for sending until the protocol closes it;
anything else closes it once what is queued is sent), answers from slow
callbacks and from work items, an HTTP server that answers every request
it received (pipelined and slow ones included) before closing, and a
reset that still ends the connection at once, with the error.
"""

import queue
import socket
import struct
import time

import pytest

import pyparallel as px
from conftest import connect, recv_to_eof, recv_until, wait_for
from http_helpers import Client, build_request
from pyparallel.http import HttpServer, route

LATE_SECONDS = 0.3


def request_then_half_close(port, request):
    sock = connect(port)
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
    return sock


def reset(sock):
    """Closes sock with a reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ---- plain protocols: module-level classes, so every mode can find them ----------


class SlowReply:
    """A slow callback: its answer is ready after the peer half-closed."""

    def data_received(self, transport, data):
        time.sleep(LATE_SECONDS)
        return b"slow: " + data


class ReplyInEof:
    """Answers from eof_received itself, which returns nothing: the
    connection closes after the answer is sent."""

    def data_received(self, transport, data):
        self.request = getattr(self, "request", b"") + data

    def eof_received(self, transport):
        time.sleep(LATE_SECONDS)
        transport.send(b"got %d bytes: " % len(self.request) + self.request)


class ReplyThenKeepOpen:
    """eof_received returns True: the connection stays open after the
    peer's end, for as long as the protocol wants (here: until the loop
    stops)."""

    lines_mode = True

    def lines_received(self, transport, line):
        return line.upper() + b"\n"

    def eof_received(self, transport):
        transport.send(b"eof seen\n")
        return True


class FailingEof:
    def eof_received(self, transport):
        raise RuntimeError("eof_received failed on purpose")


@pytest.mark.parametrize("request_bytes", [b"question", b"x" * 30_000])
def test_slow_callback_answer_reaches_a_half_closed_client(rt, request_bytes):
    port = rt.serve(SlowReply)

    def driver():
        with request_then_half_close(port, request_bytes) as sock:
            return recv_to_eof(sock)

    reply = rt.run(driver)
    # The request may arrive in several pieces: one slow answer per piece.
    assert reply.startswith(b"slow: ")
    assert reply.replace(b"slow: ", b"") == request_bytes


def test_answer_from_eof_received_then_closed(rt):
    port = rt.serve(ReplyInEof)

    def driver():
        with request_then_half_close(port, b"hello") as sock:
            started = time.monotonic()
            reply = recv_to_eof(sock)
            return reply, time.monotonic() - started

    reply, took = rt.run(driver)
    assert reply == b"got 5 bytes: hello"
    assert took >= LATE_SECONDS * 0.9


def test_eof_received_true_keeps_the_connection_open(rt):
    port = rt.serve(ReplyThenKeepOpen)

    def driver():
        with request_then_half_close(port, b"one\ntwo\n") as sock:
            got = recv_until(sock, b"eof seen\n")
            sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # neither bytes nor EOF: still open
            return got

    assert rt.run(driver) == b"ONE\nTWO\neof seen\n"


def test_eof_received_that_raises_is_logged_and_closes(rt, pxlog):
    port = rt.serve(FailingEof)

    def driver():
        with request_then_half_close(port, b"x") as sock:
            return recv_to_eof(sock)

    assert rt.run(driver) == b""
    wait_for(lambda: "eof_received failed on purpose" in pxlog.text)
    assert "FailingEof.eof_received" in pxlog.text


# ---- what the test observes directly: threads and gil modes only -----------------


def answer_later(transport, request):
    time.sleep(LATE_SECONDS)
    transport.send(b"late answer to " + request)
    transport.close()


@pytest.mark.shares_objects(
    reason="the work item gets the connection's transport, which lives in its worker's interpreter"
)
def test_work_item_answers_after_the_peer_half_closed(rt):
    class Deferring:
        def data_received(self, transport, data):
            self.request = getattr(self, "request", b"") + data

        def eof_received(self, transport):
            px.submit_work(answer_later, transport, self.request)
            return True

    port = rt.serve(Deferring)

    def driver():
        with request_then_half_close(port, b"the request") as sock:
            return recv_to_eof(sock)

    assert rt.run(driver) == b"late answer to the request"


@pytest.mark.shares_objects
def test_callbacks_in_order_and_the_transport_usable_after_eof(rt):
    events = queue.Queue()

    class Recorder:
        def connection_made(self, transport):
            events.put(("made", transport))

        def data_received(self, transport, data):
            events.put(("data", data))

        def eof_received(self, transport):
            events.put(("eof", None))
            return 1  # any true value keeps it open

        def connection_lost(self, transport, exc):
            events.put(("lost", exc))

    port = rt.serve(Recorder)

    def driver():
        with request_then_half_close(port, b"abc") as sock:
            kind, transport = events.get(timeout=10)
            assert kind == "made"
            received = b""
            while True:
                kind, value = events.get(timeout=10)
                if kind != "data":
                    break
                received += value
            assert (kind, value) == ("eof", None)
            assert received == b"abc"
            time.sleep(0.2)
            assert events.empty()  # no connection_lost while open
            transport.send(b"after eof")
            transport.close()
            reply = recv_to_eof(sock)
            assert events.get(timeout=10) == ("lost", None)
            return reply

    assert rt.run(driver) == b"after eof"


@pytest.mark.shares_objects
def test_reset_is_reported_at_once_without_eof_received(rt):
    events = queue.Queue()

    class Recorder:
        def data_received(self, transport, data):
            events.put(("data", data))

        def eof_received(self, transport):
            events.put(("eof", None))
            return True

        def connection_lost(self, transport, exc):
            events.put(("lost", exc))

    port = rt.serve(Recorder)

    def driver():
        sock = connect(port)
        sock.sendall(b"bye")
        assert events.get(timeout=10) == ("data", b"bye")
        reset(sock)
        return events.get(timeout=10)

    kind, exc = rt.run(driver)
    assert kind == "lost" and isinstance(exc, ConnectionResetError)


# ---- HTTP ------------------------------------------------------------------------


class HalfCloseApp(HttpServer):
    @route("/hello")
    def hello(self, request):
        return "hello"

    @route("/slow/{seconds}")
    def slow(self, request, seconds):
        time.sleep(float(seconds))
        return "slow " + seconds


def test_http_request_then_half_close_gets_the_response_then_eof(rt):
    port = rt.serve(HalfCloseApp)

    def driver():
        with Client(port) as client:
            client.send(build_request("GET", "/slow/0.3"))
            client.sock.shutdown(socket.SHUT_WR)
            response = client.read_response()
            return response, client.at_eof()

    response, closed = rt.run(driver)
    assert response.status == 200 and response.body == b"slow 0.3"
    assert closed


def test_http_pipelined_requests_then_half_close_are_all_answered(rt):
    port = rt.serve(HalfCloseApp)

    def driver():
        with Client(port) as client:
            client.send(
                build_request("GET", "/slow/0.2") + build_request("GET", "/hello") + build_request("GET", "/slow/0.1")
            )
            client.sock.shutdown(socket.SHUT_WR)
            responses = [client.read_response() for _ in range(3)]
            return responses, client.at_eof()

    responses, closed = rt.run(driver)
    assert [r.body for r in responses] == [b"slow 0.2", b"hello", b"slow 0.1"]
    assert closed


def test_http_half_close_inside_a_request_closes_without_waiting(rt):
    port = rt.serve(HalfCloseApp)

    def driver():
        with Client(port) as client:
            client.send(b"GET /hello HTTP/1.1\r\nHost:")
            client.sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            closed = client.at_eof()
            return closed, time.monotonic() - started

    closed, took = rt.run(driver)
    assert closed and took < 5.0  # not the header timeout (10 s); wide for a loaded or sanitized run
