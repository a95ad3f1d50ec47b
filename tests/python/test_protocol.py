"""Every member of a protocol class, and what the runtime does with their
return values and exceptions.

Callbacks: connection_made, data_received, lines_received (lines_mode),
send_complete, connection_lost, exception_handler; class attributes:
initial_bytes_to_send, next_bytes_to_send, lines_mode. What a callback returns
is sent (bytes, bytearray, memoryview, str, a tuple of those as one vectored
write; None sends nothing); anything else is a TypeError naming the callback,
handled like an exception raised by the callback.
"""

import errno
import queue
import socket
import struct
import time

import pytest

import pyparallel as px
from conftest import connect, recv_exactly, recv_to_eof, recv_until, recv_until_closed, wait_for


class Echo:
    def data_received(self, transport, data):
        return data


def returning(value):
    """A protocol whose data_received returns value (whatever arrives)."""
    return type("Returns", (), {"data_received": lambda self, transport, data: value})


def exchange(rt, protocol, message, nbytes):
    """Serves protocol, sends message on one connection, returns nbytes of reply."""
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            sock.sendall(message)
            return recv_exactly(sock, nbytes)

    return rt.run(driver)


# 200 pieces of 1000 bytes, A to Z over and over.
LETTER_BLOCKS = tuple(bytes([65 + i % 26]) * 1000 for i in range(200))


# ---- return values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"memoryview"), b"memoryview"),
        (memoryview(b"0123456789")[2:6], b"2345"),
        ("str h\u00e9 \u2603", "str h\u00e9 \u2603".encode()),
        ((b"ab", bytearray(b"cd"), memoryview(b"ef"), "gh"), b"abcdefgh"),
        ((b"single",), b"single"),
        (LETTER_BLOCKS, b"".join(LETTER_BLOCKS)),
        (b"x" * (4 << 20), b"x" * (4 << 20)),
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-slice", "str-utf8", "tuple-mixed", "tuple-one",
         "tuple-200", "bytes-4MiB"],
)
@pytest.mark.shares_objects
def test_data_received_return_value_is_sent(rt, value, expected):
    reply = exchange(rt, returning(value), b"?", len(expected))
    assert reply == expected


@pytest.mark.shares_objects
def test_none_and_empty_values_send_nothing(rt):
    """None, b"", "" and () send nothing; the connection stays usable."""
    replies = {b"none": None, b"empty-bytes": b"", b"empty-str": "", b"empty-tuple": (), b"ping": b"pong"}

    class Quiet:
        lines_mode = True

        def lines_received(self, transport, line):
            return replies[line]

    port = rt.serve(Quiet)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"none\nempty-bytes\nempty-str\nempty-tuple\nping\n")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"pong"


@pytest.mark.shares_objects
def test_data_is_bytes(rt):
    kinds = []

    class Kind:
        def data_received(self, transport, data):
            kinds.append(type(data))
            return data

    assert exchange(rt, Kind, b"abc", 3) == b"abc"
    assert kinds and all(kind is bytes for kind in kinds)


NOT_SENDABLE = [42, 1.5, [b"a list"], {b"a": b"dict"}, object(), (b"ok", 3), (b"ok", [b"nested"]), True]


@pytest.mark.shares_objects
@pytest.mark.parametrize("value", NOT_SENDABLE, ids=lambda v: type(v).__name__)
def test_non_sendable_return_is_a_logged_type_error(rt, pxlog, value):
    """The connection is closed, a TypeError naming the callback is logged on
    the "pyparallel" logger, stats()["errors"] grows by one, and the server
    goes on serving the next client."""

    class Bad:
        def data_received(self, transport, data):
            if data.startswith(b"bad"):
                return value
            return data

    port = rt.serve(Bad)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"bad")
            assert recv_to_eof(sock) == b"", "the connection should be closed"
        wait_for(lambda: px.stats()["errors"] > errors_before)
        with connect(port) as sock:
            sock.sendall(b"good")
            assert recv_exactly(sock, 4) == b"good"
        return px.stats()["errors"] - errors_before

    assert rt.run(driver) == 1
    assert "TypeError" in pxlog.text and "data_received" in pxlog.text, pxlog.text
    assert any(r.name == "pyparallel" for r in pxlog.records)


@pytest.mark.shares_objects
@pytest.mark.parametrize("callback", ["connection_made", "send_complete", "lines_received"])
def test_non_sendable_return_names_the_callback(rt, pxlog, callback):
    members = {callback: lambda self, *args: 12345}
    if callback == "send_complete":
        members["initial_bytes_to_send"] = b"hi"
    if callback == "lines_received":
        members["lines_mode"] = True
    port = rt.serve(type("Bad", (), members))

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"line\n")
            recv_until_closed(sock)
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert "TypeError" in pxlog.text and callback in pxlog.text, pxlog.text


# ---- connection_made and initial_bytes_to_send -------------------------------------------


@pytest.mark.shares_objects
def test_connection_made_return_is_sent_first(rt):
    class Greeter:
        def connection_made(self, transport):
            return b"hello\n"

        def data_received(self, transport, data):
            return data

    port = rt.serve(Greeter)

    def driver():
        with connect(port) as sock:
            assert recv_exactly(sock, 6) == b"hello\n"
            sock.sendall(b"echo")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"echo"


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"banner\r\n", b"banner\r\n"),
        ("banner \u00e9\r\n", "banner \u00e9\r\n".encode()),
        (bytearray(b"bytearray banner"), b"bytearray banner"),
        ((b"vector", "ed"), b"vectored"),
        (staticmethod(lambda: b"from a callable"), b"from a callable"),
        (staticmethod(lambda: "str from a callable"), b"str from a callable"),
    ],
    ids=["bytes", "str", "bytearray", "tuple", "callable-bytes", "callable-str"],
)
@pytest.mark.shares_objects
def test_initial_bytes_to_send(rt, value, expected):
    protocol = type("Banner", (), {"initial_bytes_to_send": value})
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            return recv_exactly(sock, len(expected))

    assert rt.run(driver) == expected


@pytest.mark.shares_objects
def test_initial_bytes_callable_runs_once_per_connection(rt):
    calls = []

    def banner():
        calls.append(1)
        return b"#%d\n" % len(calls)

    port = rt.serve(type("Banner", (), {"initial_bytes_to_send": staticmethod(banner)}))

    def driver():
        seen = set()
        for _ in range(4):
            with connect(port) as sock:
                seen.add(recv_until(sock, b"\n"))
        return seen

    assert rt.run(driver) == {b"#1\n", b"#2\n", b"#3\n", b"#4\n"}
    assert len(calls) == 4


@pytest.mark.shares_objects
def test_initial_bytes_go_before_connection_made_reply(rt):
    class Both:
        initial_bytes_to_send = b"first;"

        def connection_made(self, transport):
            return b"second;"

    port = rt.serve(Both)

    def driver():
        with connect(port) as sock:
            return recv_exactly(sock, 13)

    assert rt.run(driver) == b"first;second;"


# ---- next_bytes_to_send --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"OK\n", b"OK\n"),
        ("\u00fcberall\n", "\u00fcberall\n".encode()),
        (staticmethod(lambda: b"called\n"), b"called\n"),
    ],
    ids=["bytes", "str", "callable"],
)
@pytest.mark.shares_objects
def test_next_bytes_to_send_replies_to_every_receive(rt, value, expected):
    calls = []

    class Fixed:
        next_bytes_to_send = value

        def data_received(self, transport, data):
            calls.append(data)
            return b"data_received must not run\n"

    port = rt.serve(Fixed)

    def driver():
        replies = []
        with connect(port) as sock:
            for i in range(5):
                sock.sendall(b"request %d" % i)
                replies.append(recv_exactly(sock, len(expected)))
        return replies

    assert rt.run(driver) == [expected] * 5
    assert calls == []


# ---- lines_mode ----------------------------------------------------------------------------


class Bracket:
    lines_mode = True

    def lines_received(self, transport, line):
        return b"<" + line + b">\n"


def test_lines_mode_splits_lines_across_packets(rt):
    """Lines end with \\n or \\r\\n (not delivered); a partial line waits for
    the rest of it, even when \\r and \\n arrive in different packets."""
    port = rt.serve(Bracket)
    packets = [b"one\ntwo\r\nthr", b"ee\n", b"\n", b"four\r", b"\nfi", b"ve", b"\r\nsix\n", b"unterminated"]

    def driver():
        with connect(port) as sock:
            for packet in packets:
                sock.sendall(packet)
                time.sleep(0.02)  # separate segments (TCP_NODELAY is on)
            expected = b"<one>\n<two>\n<three>\n<>\n<four>\n<five>\n<six>\n"
            got = recv_exactly(sock, len(expected))
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(100)  # "unterminated" is not a line yet
            sock.settimeout(10)
            sock.sendall(b"\n")
            return got + recv_until(sock, b"\n")

    assert rt.run(driver) == b"<one>\n<two>\n<three>\n<>\n<four>\n<five>\n<six>\n<unterminated>\n"


@pytest.mark.shares_objects
def test_lines_mode_line_is_bytes_and_keeps_inner_carriage_returns(rt):
    lines = []

    class Collect:
        lines_mode = True

        def lines_received(self, transport, line):
            lines.append(line)
            return b"."

    port = rt.serve(Collect)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"a\rb\n\r\n\xff\x00\n  spaced  \r\n")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"...."
    assert lines == [b"a\rb", b"", b"\xff\x00", b"  spaced  "]
    assert all(type(line) is bytes for line in lines)


def test_lines_mode_many_lines_in_one_packet_keep_order(rt):
    port = rt.serve(Bracket)
    body = b"".join(b"line %d\r\n" % i for i in range(2000))
    expected = b"".join(b"<line %d>\n" % i for i in range(2000))

    def driver():
        with connect(port) as sock:
            sock.sendall(body)
            return recv_exactly(sock, len(expected))

    assert rt.run(driver) == expected


# ---- send_complete ---------------------------------------------------------------------------


@pytest.mark.shares_objects
def test_send_ids_count_from_one_in_call_order(rt):
    """initial bytes, returned data and transport.send are all sends,
    numbered per connection from 1; transport.send returns its id."""
    completed = queue.Queue()
    returned_ids = []

    class Numbered:
        initial_bytes_to_send = b"I"

        def data_received(self, transport, data):
            returned_ids.append(transport.send(b"S"))
            return b"R"

        def send_complete(self, transport, send_id):
            completed.put(send_id)

    port = rt.serve(Numbered)

    def driver():
        with connect(port) as sock:
            assert recv_exactly(sock, 1) == b"I"
            sock.sendall(b"x")
            assert recv_exactly(sock, 2) == b"SR"
            sock.sendall(b"y")
            assert recv_exactly(sock, 2) == b"SR"
            return [completed.get(timeout=10) for _ in range(5)]

    assert rt.run(driver) == [1, 2, 3, 4, 5]
    assert returned_ids == [2, 4]


@pytest.mark.shares_objects
def test_send_complete_return_value_is_sent(rt):
    class Count:
        initial_bytes_to_send = b"0\n"

        def send_complete(self, transport, send_id):
            if send_id < 6:
                return b"%d\n" % send_id
            transport.close()

    port = rt.serve(Count)

    def driver():
        with connect(port) as sock:
            return recv_to_eof(sock)

    assert rt.run(driver) == b"0\n1\n2\n3\n4\n5\n"


@pytest.mark.shares_objects
def test_send_complete_is_per_connection(rt):
    ids = {}

    class Numbered:
        def data_received(self, transport, data):
            return data

        def send_complete(self, transport, send_id):
            ids.setdefault(id(self), []).append(send_id)

    port = rt.serve(Numbered)

    def driver():
        socks = [connect(port) for _ in range(3)]
        for round_ in range(3):
            for sock in socks:
                sock.sendall(b"r%d" % round_)
                recv_exactly(sock, 2)
        wait_for(lambda: sum(len(v) for v in ids.values()) == 9)
        for sock in socks:
            sock.close()

    rt.run(driver)
    assert sorted(ids.values()) == [[1, 2, 3]] * 3


# ---- connection_lost ---------------------------------------------------------------------------


def lost_recorder(events, **members):
    class Recorder:
        def connection_made(self, transport):
            events.put("made")

        def data_received(self, transport, data):
            events.put(data)
            if data == b"close":
                transport.close()
            return None

        def connection_lost(self, transport, exc):
            events.put(("lost", exc))

    for name, value in members.items():
        setattr(Recorder, name, value)
    return Recorder


def _drain(events, until):
    got = []
    while True:
        item = events.get(timeout=10)
        got.append(item)
        if until(item):
            return got


@pytest.mark.shares_objects
def test_connection_lost_none_when_peer_closes(rt):
    events = queue.Queue()
    port = rt.serve(lost_recorder(events))

    def driver():
        with connect(port) as sock:
            sock.sendall(b"hi")
            assert events.get(timeout=10) == "made"
            assert events.get(timeout=10) == b"hi"
        return _drain(events, lambda item: isinstance(item, tuple))

    assert rt.run(driver) == [("lost", None)]


@pytest.mark.shares_objects
def test_connection_lost_none_after_local_close(rt):
    events = queue.Queue()
    port = rt.serve(lost_recorder(events))

    def driver():
        with connect(port) as sock:
            sock.sendall(b"close")
            assert recv_to_eof(sock) == b""
            return _drain(events, lambda item: isinstance(item, tuple))

    assert rt.run(driver) == ["made", b"close", ("lost", None)]


@pytest.mark.shares_objects
def test_connection_lost_reports_a_reset(rt):
    """A peer that resets the connection (SO_LINGER 0) is a failure:
    connection_lost gets an OSError with errno ECONNRESET."""
    events = queue.Queue()
    port = rt.serve(lost_recorder(events))

    def driver():
        sock = connect(port)
        sock.sendall(b"hi")
        assert _drain(events, lambda item: item == b"hi") == ["made", b"hi"]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return events.get(timeout=10)

    kind, exc = rt.run(driver)
    assert kind == "lost"
    assert isinstance(exc, OSError) and exc.errno == errno.ECONNRESET, repr(exc)


@pytest.mark.shares_objects
def test_connection_lost_runs_once_and_last(rt):
    events = queue.Queue()
    port = rt.serve(lost_recorder(events, send_complete=lambda self, t, i: events.put(("sent", i))))

    def driver():
        for _ in range(5):
            with connect(port) as sock:
                sock.sendall(b"close")
                recv_to_eof(sock)
            got = _drain(events, lambda item: isinstance(item, tuple) and item[0] == "lost")
            assert got[0] == "made" and got[-1] == ("lost", None), got
        # Nothing after the last connection_lost.
        with pytest.raises(queue.Empty):
            events.get(timeout=0.3)

    rt.run(driver)


# ---- exceptions and exception_handler -------------------------------------------------------------


class Fragile:
    def data_received(self, transport, data):
        if data.startswith(b"boom"):
            raise ZeroDivisionError("boom in data_received")
        return data


def test_unhandled_exception_is_logged_closes_and_counts(rt, pxlog):
    port = rt.serve(Fragile)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"ok")
            assert recv_exactly(sock, 2) == b"ok"
            sock.sendall(b"boom")
            assert recv_to_eof(sock) == b""
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)
        with connect(port) as sock:
            sock.sendall(b"next client")
            assert recv_exactly(sock, 11) == b"next client"

    rt.run(driver)
    assert "ZeroDivisionError" in pxlog.text and "boom in data_received" in pxlog.text
    assert "Traceback" in pxlog.text, "the traceback is logged"
    assert "data_received" in pxlog.text


@pytest.mark.shares_objects
def test_exception_in_connection_made_closes_the_connection(rt, pxlog):
    class BadStart:
        def connection_made(self, transport):
            raise KeyError("no session")

    port = rt.serve(BadStart)

    def driver():
        with connect(port) as sock:
            assert recv_until_closed(sock) == b""

    rt.run(driver)
    assert "KeyError" in pxlog.text and "no session" in pxlog.text


@pytest.mark.shares_objects
def test_exception_handler_takes_the_exception(rt, pxlog):
    """With an exception_handler the exception is handled: the handler gets
    the exception object, nothing is logged or counted, and the connection
    stays open (docs/api.md)."""
    handled = queue.Queue()

    class Handled(Fragile):
        def exception_handler(self, transport, exc):
            handled.put(exc)
            transport.send(b"handled:%s\n" % type(exc).__name__.encode())

    port = rt.serve(Handled)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"boom")
            assert recv_until(sock, b"\n") == b"handled:ZeroDivisionError\n"
            sock.sendall(b"still open")
            assert recv_exactly(sock, 10) == b"still open"
        assert px.stats()["errors"] == errors_before
        return handled.get(timeout=10)

    exc = rt.run(driver)
    assert isinstance(exc, ZeroDivisionError) and str(exc) == "boom in data_received"
    assert "boom in data_received" not in pxlog.text


@pytest.mark.shares_objects
def test_exception_handler_gets_the_non_sendable_type_error(rt):
    handled = queue.Queue()

    class Handled:
        def data_received(self, transport, data):
            return 3.14

        def exception_handler(self, transport, exc):
            handled.put(exc)
            transport.close()

    port = rt.serve(Handled)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_to_eof(sock) == b""
        return handled.get(timeout=10)

    exc = rt.run(driver)
    assert isinstance(exc, TypeError) and "data_received" in str(exc)


@pytest.mark.shares_objects
def test_exception_in_exception_handler_is_logged_and_closes(rt, pxlog):
    class Doubly(Fragile):
        def exception_handler(self, transport, exc):
            raise RuntimeError("handler failed too")

    port = rt.serve(Doubly)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"boom")
            assert recv_to_eof(sock) == b""
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert "handler failed too" in pxlog.text


@pytest.mark.shares_objects
def test_exception_in_connection_lost_is_logged(rt, pxlog):
    class BadEnd:
        def connection_lost(self, transport, exc):
            raise ValueError("in connection_lost")

    port = rt.serve(BadEnd)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port):
            pass
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert "in connection_lost" in pxlog.text


# ---- the protocol object ---------------------------------------------------------------------------


@pytest.mark.shares_objects
def test_one_instance_per_connection(rt):
    instances = queue.Queue()

    class PerConnection:
        def __init__(self):
            self.count = 0
            instances.put(self)

        def data_received(self, transport, data):
            self.count += 1
            return b"%d" % self.count

    port = rt.serve(PerConnection)

    def driver():
        a, b = connect(port), connect(port)
        with a, b:
            for expected in (b"1", b"2", b"3"):
                a.sendall(b"x")
                assert recv_exactly(a, 1) == expected
            b.sendall(b"x")
            assert recv_exactly(b, 1) == b"1"
        return {id(instances.get(timeout=5)) for _ in range(2)}

    assert len(rt.run(driver)) == 2


def test_class_without_members_accepts_and_discards(rt):
    port = rt.serve(type("Empty", (), {}))

    def driver():
        with connect(port) as sock:
            sock.sendall(b"ignored" * 1000)
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(10)

    rt.run(driver)


@pytest.mark.shares_objects
def test_protocol_constructor_failure_is_handled(rt, pxlog):
    """A class whose __init__ raises: that connection is closed and logged,
    the server keeps serving."""
    attempts = []

    class Picky:
        def __init__(self):
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("first constructor fails")

        def data_received(self, transport, data):
            return data

    port = rt.serve(Picky)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_until_closed(sock) == b""
        with connect(port) as sock:
            sock.sendall(b"y")
            return recv_exactly(sock, 1)

    assert rt.run(driver) == b"y"
    assert "first constructor fails" in pxlog.text


# ---- edge cases of return values and streams ----------------------------------------------


@pytest.mark.shares_objects
def test_vectored_reply_longer_than_iov_max(rt):
    """A tuple of 5000 pieces (more than the kernel's IOV_MAX of 1024) still
    goes out whole and in order."""
    pieces = tuple(b"%05d" % i for i in range(5000))
    assert exchange(rt, returning(pieces), b"?", 25_000) == b"".join(pieces)


@pytest.mark.parametrize(
    "value, error",
    [(memoryview(b"abcdefgh")[::2], "BufferError"), ("\ud800", "UnicodeEncodeError")],
    ids=["non-contiguous-memoryview", "lone-surrogate"],
)
@pytest.mark.shares_objects
def test_unsendable_buffer_contents_are_callback_errors(rt, pxlog, value, error):
    """A buffer that cannot be sent as it is, or a str that is not valid
    UTF-8 text, fails like a callback exception: logged, counted, closed."""
    port = rt.serve(returning(value))

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_until_closed(sock) == b""
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert error in pxlog.text, pxlog.text


@pytest.mark.shares_objects
def test_reply_goes_out_before_the_close_that_follows_a_half_close(rt):
    """A client that sends and then shuts down its side (SHUT_WR) still gets
    the reply to what it sent, then EOF."""
    lost = queue.Queue()

    class EchoTracked(Echo):
        def connection_lost(self, transport, exc):
            lost.put(exc)

    port = rt.serve(EchoTracked)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"last request")
            sock.shutdown(socket.SHUT_WR)
            return recv_to_eof(sock), lost.get(timeout=10)

    assert rt.run(driver) == (b"last request", None)


def test_lines_longer_than_max_line_length_close_the_connection(rt, pxlog):
    """lines_mode buffers at most max_line_length bytes of one line (64 KiB
    by default): a longer line is a ValueError (logged, connection closed),
    so a client cannot make the server buffer without bound."""
    port = rt.serve(Bracket)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"short\n")
            assert recv_exactly(sock, 8) == b"<short>\n"
            try:
                sock.sendall(b"y" * (1 << 20))
            except (ConnectionResetError, BrokenPipeError):
                pass
            assert recv_until_closed(sock) == b""

    rt.run(driver)
    assert "max_line_length" in pxlog.text, pxlog.text


def test_max_line_length_can_be_raised(rt):
    class LongLines(Bracket):
        max_line_length = 1 << 20

    port = rt.serve(LongLines)
    line = b"z" * 500_000

    def driver():
        with connect(port) as sock:
            sock.sendall(line + b"\n")
            return recv_exactly(sock, len(line) + 3)

    assert rt.run(driver) == b"<" + line + b">\n"


@pytest.mark.parametrize("value, error", [("big", TypeError), (0, ValueError), (-5, ValueError)])
def test_bad_max_line_length_is_refused_at_register(value, error):
    protocol = type("BadLimit", (Bracket,), {"max_line_length": value})
    server = px.server("127.0.0.1", 0)
    try:
        with pytest.raises(error):
            px.register(server, protocol)
    finally:
        server.close()
