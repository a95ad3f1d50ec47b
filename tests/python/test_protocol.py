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
import socket
import struct
import time

import pytest

import pyparallel as px
from conftest import (
    connect,
    next_report,
    no_more_reports,
    recv_exactly,
    recv_to_eof,
    recv_until,
    recv_until_closed,
    report,
    reports_until,
    wait_for,
)

# The protocol classes and functions are at module level, and callbacks
# tell the test what they saw through conftest's report(), so that the tests
# run in mode "interpreters" too: there a worker's interpreter imports this
# module to find them, and shares no objects with the test.


class Echo:
    def data_received(self, transport, data):
        return data


# 200 pieces of 1000 bytes, A to Z over and over.
LETTER_BLOCKS = tuple(bytes([65 + i % 26]) * 1000 for i in range(200))

# What Returns.data_received returns, by name; each interpreter that imports
# this module makes its own.
REPLIES = {
    "bytes": b"bytes",
    "bytearray": bytearray(b"bytearray"),
    "memoryview": memoryview(b"memoryview"),
    "memoryview-slice": memoryview(b"0123456789")[2:6],
    "str-utf8": "str h\u00e9 \u2603",
    "tuple-mixed": (b"ab", bytearray(b"cd"), memoryview(b"ef"), "gh"),
    "tuple-one": (b"single",),
    "tuple-200": LETTER_BLOCKS,
    "bytes-4MiB": b"x" * (4 << 20),
    "tuple-5000": tuple(b"%05d" % i for i in range(5000)),
    "non-contiguous-memoryview": memoryview(b"abcdefgh")[::2],
    "lone-surrogate": "\ud800",
}


class Returns:
    """data_received returns REPLIES[reply], whatever arrives."""

    reply = None

    def data_received(self, transport, data):
        return REPLIES[self.reply]


def returning(name):
    """A protocol whose data_received returns REPLIES[name]. The subclass
    made here reaches a worker's interpreter as its recipe: Returns, found
    by name, and the str attribute."""
    return type("Returns", (Returns,), {"reply": name})


def exchange(rt, protocol, message, nbytes):
    """Serves protocol, sends message on one connection, returns nbytes of reply."""
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            sock.sendall(message)
            return recv_exactly(sock, nbytes)

    return rt.run(driver)


# ---- return values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bytes", b"bytes"),
        ("bytearray", b"bytearray"),
        ("memoryview", b"memoryview"),
        ("memoryview-slice", b"2345"),
        ("str-utf8", "str h\u00e9 \u2603".encode()),
        ("tuple-mixed", b"abcdefgh"),
        ("tuple-one", b"single"),
        ("tuple-200", b"".join(LETTER_BLOCKS)),
        ("bytes-4MiB", b"x" * (4 << 20)),
    ],
    ids=[
        "bytes",
        "bytearray",
        "memoryview",
        "memoryview-slice",
        "str-utf8",
        "tuple-mixed",
        "tuple-one",
        "tuple-200",
        "bytes-4MiB",
    ],
)
def test_data_received_return_value_is_sent(rt, name, expected):
    reply = exchange(rt, returning(name), b"?", len(expected))
    assert reply == expected


class Quiet:
    lines_mode = True
    replies = {b"none": None, b"empty-bytes": b"", b"empty-str": "", b"empty-tuple": (), b"ping": b"pong"}

    def lines_received(self, transport, line):
        return self.replies[line]


def test_none_and_empty_values_send_nothing(rt):
    """None, b"", "" and () send nothing; the connection stays usable."""
    port = rt.serve(Quiet)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"none\nempty-bytes\nempty-str\nempty-tuple\nping\n")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"pong"


class Kind:
    def data_received(self, transport, data):
        report((len(data), type(data).__name__))
        return data


def test_data_is_bytes(rt, reports):
    port = rt.serve(Kind)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"abc")
            assert recv_exactly(sock, 3) == b"abc"
        kinds, received = [], 0
        while received < 3:  # one report per data_received
            size, kind = next_report()
            received += size
            kinds.append(kind)
        return kinds

    kinds = rt.run(driver)
    assert kinds and all(kind == "bytes" for kind in kinds), kinds


NOT_SENDABLE = [42, 1.5, [b"a list"], {b"a": b"dict"}, object(), (b"ok", 3), (b"ok", [b"nested"]), True]


class BadOnRequest:
    """Returns NOT_SENDABLE[index] to data that starts with "bad", echoes
    the rest."""

    index = None

    def data_received(self, transport, data):
        if data.startswith(b"bad"):
            return NOT_SENDABLE[self.index]
        return data


@pytest.mark.parametrize("index", range(len(NOT_SENDABLE)), ids=[type(v).__name__ for v in NOT_SENDABLE])
def test_non_sendable_return_is_a_logged_type_error(rt, pxlog, index):
    """The connection is closed, a TypeError naming the callback is logged on
    the "pyparallel" logger, stats()["errors"] grows by one, and the server
    goes on serving the next client."""
    port = rt.serve(type("Bad", (BadOnRequest,), {"index": index}))

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


class BadConnectionMade:
    def connection_made(self, transport):
        return 12345


class BadSendComplete:
    initial_bytes_to_send = b"hi"

    def send_complete(self, transport, send_id):
        return 12345


class BadLinesReceived:
    lines_mode = True

    def lines_received(self, transport, line):
        return 12345


@pytest.mark.parametrize(
    "callback, protocol",
    [("connection_made", BadConnectionMade), ("send_complete", BadSendComplete), ("lines_received", BadLinesReceived)],
    ids=["connection_made", "send_complete", "lines_received"],
)
def test_non_sendable_return_names_the_callback(rt, pxlog, callback, protocol):
    port = rt.serve(protocol)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"line\n")
            recv_until_closed(sock)
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert "TypeError" in pxlog.text and callback in pxlog.text, pxlog.text


# ---- connection_made and initial_bytes_to_send -------------------------------------------


class Greeter:
    def connection_made(self, transport):
        return b"hello\n"

    def data_received(self, transport, data):
        return data


def test_connection_made_return_is_sent_first(rt):
    port = rt.serve(Greeter)

    def driver():
        with connect(port) as sock:
            assert recv_exactly(sock, 6) == b"hello\n"
            sock.sendall(b"echo")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"echo"


def bytes_banner():
    return b"from a callable"


def str_banner():
    return "str from a callable"


class BytesBanner:
    initial_bytes_to_send = b"banner\r\n"


class StrBanner:
    initial_bytes_to_send = "banner \u00e9\r\n"


class BytearrayBanner:
    initial_bytes_to_send = bytearray(b"bytearray banner")


class TupleBanner:
    initial_bytes_to_send = (b"vector", "ed")


class CallableBytesBanner:
    initial_bytes_to_send = staticmethod(bytes_banner)


class CallableStrBanner:
    initial_bytes_to_send = staticmethod(str_banner)


@pytest.mark.parametrize(
    "protocol, expected",
    [
        (BytesBanner, b"banner\r\n"),
        (StrBanner, "banner \u00e9\r\n".encode()),
        (BytearrayBanner, b"bytearray banner"),
        (TupleBanner, b"vectored"),
        (CallableBytesBanner, b"from a callable"),
        (CallableStrBanner, b"str from a callable"),
    ],
    ids=["bytes", "str", "bytearray", "tuple", "callable-bytes", "callable-str"],
)
def test_initial_bytes_to_send(rt, protocol, expected):
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            return recv_exactly(sock, len(expected))

    assert rt.run(driver) == expected


# Calls counted in the main interpreter (see count_call).
CALLS = []


def count_call():
    """Runs on the main thread: one more call; returns how many so far."""
    CALLS.append(1)
    return len(CALLS)


def numbered_banner():
    # Counted on the main thread, so that the numbers form one sequence in
    # every mode (each worker's interpreter has its own module globals).
    return b"#%d\n" % px.call_from_main_thread_and_wait(count_call)


class NumberedBanner:
    initial_bytes_to_send = staticmethod(numbered_banner)


def test_initial_bytes_callable_runs_once_per_connection(rt):
    CALLS.clear()
    port = rt.serve(NumberedBanner)

    def driver():
        seen = set()
        for _ in range(4):
            with connect(port) as sock:
                seen.add(recv_until(sock, b"\n"))
        return seen

    assert rt.run(driver) == {b"#1\n", b"#2\n", b"#3\n", b"#4\n"}
    assert len(CALLS) == 4


class Both:
    initial_bytes_to_send = b"first;"

    def connection_made(self, transport):
        return b"second;"


def test_initial_bytes_go_before_connection_made_reply(rt):
    port = rt.serve(Both)

    def driver():
        with connect(port) as sock:
            return recv_exactly(sock, 13)

    assert rt.run(driver) == b"first;second;"


# ---- next_bytes_to_send --------------------------------------------------------------------


class NotDataReceived:
    def data_received(self, transport, data):
        report(data)
        return b"data_received must not run\n"


class FixedBytes(NotDataReceived):
    next_bytes_to_send = b"OK\n"


class FixedStr(NotDataReceived):
    next_bytes_to_send = "\u00fcberall\n"


def called_reply():
    return b"called\n"


class FixedCallable(NotDataReceived):
    next_bytes_to_send = staticmethod(called_reply)


@pytest.mark.parametrize(
    "protocol, expected",
    [
        (FixedBytes, b"OK\n"),
        (FixedStr, "\u00fcberall\n".encode()),
        (FixedCallable, b"called\n"),
    ],
    ids=["bytes", "str", "callable"],
)
def test_next_bytes_to_send_replies_to_every_receive(rt, reports, protocol, expected):
    port = rt.serve(protocol)

    def driver():
        replies = []
        with connect(port) as sock:
            for i in range(5):
                sock.sendall(b"request %d" % i)
                replies.append(recv_exactly(sock, len(expected)))
        no_more_reports()  # data_received never ran
        return replies

    assert rt.run(driver) == [expected] * 5


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


class Collect:
    lines_mode = True

    def lines_received(self, transport, line):
        report((line, type(line).__name__))
        return b"."


def test_lines_mode_line_is_bytes_and_keeps_inner_carriage_returns(rt, reports):
    port = rt.serve(Collect)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"a\rb\n\r\n\xff\x00\n  spaced  \r\n")
            assert recv_exactly(sock, 4) == b"...."
            return [next_report() for _ in range(4)]

    reported = rt.run(driver)
    assert [line for line, _ in reported] == [b"a\rb", b"", b"\xff\x00", b"  spaced  "]
    assert all(kind == "bytes" for _, kind in reported), reported


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


class Numbered:
    initial_bytes_to_send = b"I"

    def data_received(self, transport, data):
        report(("returned", transport.send(b"S")))
        return b"R"

    def send_complete(self, transport, send_id):
        report(("completed", send_id))


def test_send_ids_count_from_one_in_call_order(rt, reports):
    """initial bytes, returned data and transport.send are all sends,
    numbered per connection from 1; transport.send returns its id."""
    port = rt.serve(Numbered)

    def driver():
        with connect(port) as sock:
            assert recv_exactly(sock, 1) == b"I"
            sock.sendall(b"x")
            assert recv_exactly(sock, 2) == b"SR"
            sock.sendall(b"y")
            assert recv_exactly(sock, 2) == b"SR"
            reported = [next_report() for _ in range(7)]
            no_more_reports()
            return reported

    reported = rt.run(driver)
    assert [send_id for kind, send_id in reported if kind == "completed"] == [1, 2, 3, 4, 5]
    assert [send_id for kind, send_id in reported if kind == "returned"] == [2, 4]


class Count:
    initial_bytes_to_send = b"0\n"

    def send_complete(self, transport, send_id):
        if send_id < 6:
            return b"%d\n" % send_id
        transport.close()


def test_send_complete_return_value_is_sent(rt):
    port = rt.serve(Count)

    def driver():
        with connect(port) as sock:
            return recv_to_eof(sock)

    assert rt.run(driver) == b"0\n1\n2\n3\n4\n5\n"


class EchoNumbered:
    def data_received(self, transport, data):
        return data

    def send_complete(self, transport, send_id):
        # The peer's address tells the connections apart.
        report((transport.peername, send_id))


def test_send_complete_is_per_connection(rt, reports):
    port = rt.serve(EchoNumbered)

    def driver():
        socks = [connect(port) for _ in range(3)]
        for round_ in range(3):
            for sock in socks:
                sock.sendall(b"r%d" % round_)
                recv_exactly(sock, 2)
        reported = [next_report() for _ in range(9)]
        for sock in socks:
            sock.close()
        return reported

    ids = {}
    for peer, send_id in rt.run(driver):
        ids.setdefault(peer, []).append(send_id)
    assert sorted(ids.values()) == [[1, 2, 3]] * 3


# ---- connection_lost ---------------------------------------------------------------------------


class Recorder:
    def connection_made(self, transport):
        report("made")

    def data_received(self, transport, data):
        report(data)
        if data == b"close":
            transport.close()
        return None

    def connection_lost(self, transport, exc):
        report(("lost", exc))


class RecorderOfSends(Recorder):
    def send_complete(self, transport, send_id):
        report(("sent", send_id))


def test_connection_lost_none_when_peer_closes(rt, reports):
    port = rt.serve(Recorder)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"hi")
            assert next_report() == "made"
            assert next_report() == b"hi"
        return reports_until(lambda item: isinstance(item, tuple))

    assert rt.run(driver) == [("lost", None)]


def test_connection_lost_none_after_local_close(rt, reports):
    port = rt.serve(Recorder)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"close")
            assert recv_to_eof(sock) == b""
            return reports_until(lambda item: isinstance(item, tuple))

    assert rt.run(driver) == ["made", b"close", ("lost", None)]


def test_connection_lost_reports_a_reset(rt, reports):
    """A peer that resets the connection (SO_LINGER 0) is a failure:
    connection_lost gets an OSError with errno ECONNRESET."""
    port = rt.serve(Recorder)

    def driver():
        sock = connect(port)
        sock.sendall(b"hi")
        assert reports_until(lambda item: item == b"hi") == ["made", b"hi"]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return next_report()

    kind, exc = rt.run(driver)
    assert kind == "lost"
    assert isinstance(exc, OSError) and exc.errno == errno.ECONNRESET, repr(exc)


def test_connection_lost_runs_once_and_last(rt, reports):
    port = rt.serve(RecorderOfSends)

    def driver():
        for _ in range(5):
            with connect(port) as sock:
                sock.sendall(b"close")
                recv_to_eof(sock)
            got = reports_until(lambda item: isinstance(item, tuple) and item[0] == "lost")
            assert got[0] == "made" and got[-1] == ("lost", None), got
        no_more_reports()  # nothing after the last connection_lost

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


class BadStart:
    def connection_made(self, transport):
        raise KeyError("no session")


def test_exception_in_connection_made_closes_the_connection(rt, pxlog):
    port = rt.serve(BadStart)

    def driver():
        with connect(port) as sock:
            assert recv_until_closed(sock) == b""

    rt.run(driver)
    assert "KeyError" in pxlog.text and "no session" in pxlog.text


class Handled(Fragile):
    def exception_handler(self, transport, exc):
        report(exc)
        transport.send(b"handled:%s\n" % type(exc).__name__.encode())


def test_exception_handler_takes_the_exception(rt, pxlog, reports):
    """With an exception_handler the exception is handled: the handler gets
    the exception object, nothing is logged or counted, and the connection
    stays open (docs/api.md)."""
    port = rt.serve(Handled)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"boom")
            assert recv_until(sock, b"\n") == b"handled:ZeroDivisionError\n"
            sock.sendall(b"still open")
            assert recv_exactly(sock, 10) == b"still open"
        assert px.stats()["errors"] == errors_before
        return next_report()

    exc = rt.run(driver)
    assert isinstance(exc, ZeroDivisionError) and str(exc) == "boom in data_received"
    assert "boom in data_received" not in pxlog.text


class HandledTypeError:
    def data_received(self, transport, data):
        return 3.14

    def exception_handler(self, transport, exc):
        report(exc)
        transport.close()


def test_exception_handler_gets_the_non_sendable_type_error(rt, reports):
    port = rt.serve(HandledTypeError)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_to_eof(sock) == b""
        return next_report()

    exc = rt.run(driver)
    assert isinstance(exc, TypeError) and "data_received" in str(exc)


class Doubly(Fragile):
    def exception_handler(self, transport, exc):
        raise RuntimeError("handler failed too")


def test_exception_in_exception_handler_is_logged_and_closes(rt, pxlog):
    port = rt.serve(Doubly)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"boom")
            assert recv_to_eof(sock) == b""
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert "handler failed too" in pxlog.text


class BadEnd:
    def connection_lost(self, transport, exc):
        raise ValueError("in connection_lost")


def test_exception_in_connection_lost_is_logged(rt, pxlog):
    port = rt.serve(BadEnd)

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port):
            pass
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert "in connection_lost" in pxlog.text


# ---- the protocol object ---------------------------------------------------------------------------


class PerConnection:
    def __init__(self):
        self.count = 0
        report(id(self))

    def data_received(self, transport, data):
        self.count += 1
        return b"%d" % self.count


def test_one_instance_per_connection(rt, reports):
    port = rt.serve(PerConnection)

    def driver():
        a, b = connect(port), connect(port)
        with a, b:
            for expected in (b"1", b"2", b"3"):
                a.sendall(b"x")
                assert recv_exactly(a, 1) == expected
            b.sendall(b"x")
            assert recv_exactly(b, 1) == b"1"
            # Both instances are alive now, so their ids differ.
            ids = {next_report() for _ in range(2)}
        no_more_reports()
        return ids

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


class Picky:
    def __init__(self):
        # Counted on the main thread, where every mode sees the same count.
        if px.call_from_main_thread_and_wait(count_call) == 1:
            raise RuntimeError("first constructor fails")

    def data_received(self, transport, data):
        return data


def test_protocol_constructor_failure_is_handled(rt, pxlog):
    """A class whose __init__ raises: that connection is closed and logged,
    the server keeps serving."""
    CALLS.clear()
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


def test_vectored_reply_longer_than_iov_max(rt):
    """A tuple of 5000 pieces (more than the kernel's IOV_MAX of 1024) still
    goes out whole and in order."""
    pieces = REPLIES["tuple-5000"]
    assert len(pieces) == 5000
    assert exchange(rt, returning("tuple-5000"), b"?", 25_000) == b"".join(pieces)


@pytest.mark.parametrize(
    "name, error",
    [("non-contiguous-memoryview", "BufferError"), ("lone-surrogate", "UnicodeEncodeError")],
    ids=["non-contiguous-memoryview", "lone-surrogate"],
)
def test_unsendable_buffer_contents_are_callback_errors(rt, pxlog, name, error):
    """A buffer that cannot be sent as it is, or a str that is not valid
    UTF-8 text, fails like a callback exception: logged, counted, closed."""
    port = rt.serve(returning(name))

    def driver():
        errors_before = px.stats()["errors"]
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_until_closed(sock) == b""
        wait_for(lambda: px.stats()["errors"] == errors_before + 1)

    rt.run(driver)
    assert error in pxlog.text, pxlog.text


class EchoTracked(Echo):
    def connection_lost(self, transport, exc):
        report(("lost", exc))


def test_reply_goes_out_before_the_close_that_follows_a_half_close(rt, reports):
    """A client that sends and then shuts down its side (SHUT_WR) still gets
    the reply to what it sent, then EOF."""
    port = rt.serve(EchoTracked)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"last request")
            sock.shutdown(socket.SHUT_WR)
            return recv_to_eof(sock), next_report()[1]

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
