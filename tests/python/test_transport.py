"""Transport methods: send (from any thread, in call order, as a chat
server's 1:m fan-out), close, sendfile, sendfile_ranged, pause_reading /
resume_reading, peername and sockname, and their misuse.
"""

import hashlib
import os
import pathlib
import random
import threading
import time

import pytest

import pyparallel as px
from conftest import (
    LOCALHOST,
    connect,
    next_report,
    no_more_reports,
    recv_exactly,
    recv_to_eof,
    report,
    run_threads,
    wait_for,
)

# The protocol classes are at module level and report what they see through
# conftest's report(), so that the tests run in mode "interpreters" too. A
# transport reported to the test crosses there as a handle on its connection:
# the test's sends, closes and pauses act on the connection from the main
# interpreter.


class Keep:
    """Hands every connection's transport to the test."""

    def connection_made(self, transport):
        report(transport)


# ---- send ---------------------------------------------------------------------------


def test_send_from_another_thread_keeps_call_order(rt, reports):
    port = rt.serve(Keep)
    count = 3000

    def driver():
        with connect(port) as sock:
            transport = next_report()
            for i in range(count):
                transport.send(b"%06d\n" % i)
            data = recv_exactly(sock, 7 * count)
        return data

    data = rt.run(driver)
    assert data == b"".join(b"%06d\n" % i for i in range(count))


def test_send_from_many_threads_keeps_each_threads_order(rt, reports):
    port = rt.serve(Keep)
    threads, per_thread = 4, 1000

    def driver():
        with connect(port) as sock:
            transport = next_report()

            def sender(tag):
                for i in range(per_thread):
                    transport.send(b"%d:%05d\n" % (tag, i))

            run_threads(*[(sender, tag) for tag in range(threads)])
            return recv_exactly(sock, threads * per_thread * 8)

    lines = rt.run(driver).split(b"\n")[:-1]
    assert len(lines) == threads * per_thread
    for tag in range(threads):
        mine = [line for line in lines if line.startswith(b"%d:" % tag)]
        assert mine == [b"%d:%05d" % (tag, i) for i in range(per_thread)]


def test_send_accepts_every_sendable_kind(rt, reports):
    port = rt.serve(Keep)

    def driver():
        with connect(port) as sock:
            transport = next_report()
            transport.send(b"a")
            transport.send(bytearray(b"b"))
            transport.send(memoryview(b"c"))
            transport.send("\u00e9")
            transport.send((b"d", "e", bytearray(b"f"), memoryview(b"g")))
            return recv_exactly(sock, 9)

    assert rt.run(driver) == b"abc\xc3\xa9defg"


@pytest.mark.parametrize("value", [None, 42, [b"x"], (b"x", 1)], ids=["None", "int", "list", "tuple-int"])
def test_send_rejects_what_cannot_be_sent(rt, reports, value):
    port = rt.serve(Keep)

    def driver():
        with connect(port) as sock:
            transport = next_report()
            with pytest.raises(TypeError):
                transport.send(value)
            transport.send(b"fine")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"fine"


def test_send_after_close_raises_async_error(rt, reports):
    port = rt.serve(Keep)

    def driver():
        with connect(port) as sock:
            transport = next_report()
            transport.close()
            with pytest.raises(px.AsyncError):
                transport.send(b"too late")
            assert recv_to_eof(sock) == b""

    rt.run(driver)


def test_send_on_a_listener_raises(rt):
    server = px.server(LOCALHOST, 0)
    try:
        with pytest.raises((px.AsyncError, OSError, TypeError)):
            server.send(b"a listener has no peer")
    finally:
        server.close()


class Echo:
    def data_received(self, transport, data):
        return data


def test_large_echo_is_byte_exact(rt):
    """8 MiB through an echo server, with the client reading while it writes
    (the server's sends go asynchronous when the socket is full)."""
    port = rt.serve(Echo)
    payload = os.urandom(8 << 20)

    def driver():
        with connect(port) as sock:
            writer = threading.Thread(target=sock.sendall, args=(payload,))
            writer.start()
            got = recv_exactly(sock, len(payload))
            writer.join(10)
            return got

    got = rt.run(driver)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


# ---- chat: 1:m fan-out through transport.send ------------------------------------------


# The chat's members, by peer address; only the main thread touches it, so
# that the connections of every worker (and interpreter) see one membership.
CHAT_MEMBERS = {}


def chat_join(peer, transport):
    CHAT_MEMBERS[peer] = transport


def chat_leave(peer):
    CHAT_MEMBERS.pop(peer, None)


def chat_members():
    return tuple(CHAT_MEMBERS.values())


class Chat:
    lines_mode = True

    def connection_made(self, transport):
        self.peer = transport.peername
        px.call_from_main_thread_and_wait(chat_join, self.peer, transport)

    def lines_received(self, transport, line):
        # The members' transports cross to this worker as handles.
        for member in px.call_from_main_thread_and_wait(chat_members):
            member.send(line + b"\n")

    def connection_lost(self, transport, exc):
        px.call_from_main_thread(chat_leave, self.peer)


def test_chat_fan_out_reaches_everyone_in_order(rt):
    """N clients each say M lines; every line is broadcast to every member
    from the sender's callback. Every client gets all N*M lines, and each
    sender's lines arrive in the order they were said."""
    CHAT_MEMBERS.clear()
    clients, per_client = 5, 60
    port = rt.serve(Chat)

    def driver():
        socks = [connect(port) for _ in range(clients)]
        wait_for(lambda: len(CHAT_MEMBERS) == clients)
        received = [None] * clients
        expected_bytes = sum(len(b"c%d:%03d\n" % (c, i)) for c in range(clients) for i in range(per_client))

        def reader(index):
            received[index] = recv_exactly(socks[index], expected_bytes)

        def talker(index):
            for i in range(per_client):
                socks[index].sendall(b"c%d:%03d\n" % (index, i))
                if i % 10 == 0:
                    time.sleep(0.001)

        run_threads(*[(reader, i) for i in range(clients)], *[(talker, i) for i in range(clients)])
        for sock in socks:
            sock.close()
        return received

    received = rt.run(driver)
    for index, data in enumerate(received):
        assert data is not None, f"client {index} did not receive everything"
        lines = data.split(b"\n")[:-1]
        for sender in range(clients):
            said = [line for line in lines if line.startswith(b"c%d:" % sender)]
            assert said == [b"c%d:%03d" % (sender, i) for i in range(per_client)], (index, sender)


# ---- close ---------------------------------------------------------------------------------


# Random bytes, the same in every interpreter that imports this module.
CLOSE_PAYLOAD = random.Random(3).randbytes(3 << 20)


class SendAndClose:
    def connection_made(self, transport):
        transport.send(CLOSE_PAYLOAD)
        transport.close()


def test_close_sends_queued_data_first(rt):
    port = rt.serve(SendAndClose)

    def driver():
        with connect(port) as sock:
            return recv_to_eof(sock)

    assert rt.run(driver) == CLOSE_PAYLOAD


class Twice:
    def data_received(self, transport, data):
        transport.close()
        transport.close()

    def connection_lost(self, transport, exc):
        report(("lost", exc))


def test_close_twice_is_harmless(rt, reports):
    port = rt.serve(Twice)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_to_eof(sock) == b""
        kind, got = next_report()
        assert kind == "lost"
        no_more_reports()  # connection_lost ran once
        return got

    assert rt.run(driver) is None


def test_close_from_another_thread(rt, reports):
    port = rt.serve(Keep)

    def driver():
        with connect(port) as sock:
            transport = next_report()
            transport.send(b"last words")
            transport.close()
            return recv_to_eof(sock)

    assert rt.run(driver) == b"last words"


# ---- sendfile ---------------------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom((5 << 20) + 12345))
    return path


class FileCommands:
    """Runs transport.sendfile/sendfile_ranged on file_path on request:
    "whole" sends the file framed by markers, "range O N" a range of it. An
    exception is reported to the test, and answered with "error"."""

    lines_mode = True
    file_path = None  # a str, set by serve_file_commands

    def lines_received(self, transport, line):
        words = line.split()
        file_path = self.file_path
        try:
            if words[0] == b"whole":
                return None if transport.sendfile(b"<<", file_path, b">>") else b"no send id"
            if words[0] == b"path":
                transport.sendfile(b"", pathlib.Path(file_path), b"")
            elif words[0] == b"range":
                transport.sendfile_ranged(b"[", file_path, b"]", int(words[1]), int(words[2]))
            elif words[0] == b"missing":
                transport.sendfile(b"", file_path + ".missing", b"")
            elif words[0] == b"past-end":
                size = os.path.getsize(file_path)
                transport.sendfile_ranged(b"", file_path, b"", size - 10, 11)
        except Exception as exc:
            report(exc)
            return b"error\n"
        return None


def serve_file_commands(rt, file_path):
    """Serves FileCommands on file_path (the subclass crosses to a worker's
    interpreter as its recipe: FileCommands and the str)."""
    return rt.serve(type("Files", (FileCommands,), {"file_path": str(file_path)}))


def test_sendfile_is_byte_exact(rt, reports, big_file):
    port = serve_file_commands(rt, big_file)
    content = big_file.read_bytes()

    def driver():
        with connect(port) as sock:
            sock.sendall(b"whole\n")
            whole = recv_exactly(sock, len(content) + 4)
            sock.sendall(b"path\n")
            by_path = recv_exactly(sock, len(content))
        no_more_reports(0.1)  # no error
        return whole, by_path

    whole, by_path = rt.run(driver)
    assert whole[:2] == b"<<" and whole[-2:] == b">>"
    assert hashlib.sha256(whole[2:-2]).digest() == hashlib.sha256(content).digest()
    assert by_path == content


@pytest.mark.parametrize(
    "offset, nbytes",
    [(0, 1), (0, 100_000), (4095, 4097), (1 << 20, 3 << 20), ((5 << 20) + 12345 - 7, 7), (17, 0)],
)
def test_sendfile_ranged_is_byte_exact(rt, reports, big_file, offset, nbytes):
    port = serve_file_commands(rt, big_file)
    content = big_file.read_bytes()

    def driver():
        with connect(port) as sock:
            sock.sendall(b"range %d %d\n" % (offset, nbytes))
            got = recv_exactly(sock, nbytes + 2)
        no_more_reports(0.1)  # no error
        return got

    got = rt.run(driver)
    assert got == b"[" + content[offset : offset + nbytes] + b"]"


def test_sendfile_errors(rt, reports, big_file):
    """A missing file is FileNotFoundError, a range past the end ValueError,
    both raised by the call before anything is sent."""
    port = serve_file_commands(rt, big_file)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"missing\n")
            assert recv_exactly(sock, 6) == b"error\n"
            sock.sendall(b"past-end\n")
            assert recv_exactly(sock, 6) == b"error\n"
        return next_report(), next_report()

    missing, past_end = rt.run(driver)
    assert isinstance(missing, FileNotFoundError), repr(missing)
    assert isinstance(past_end, ValueError), repr(past_end)


def test_sendfile_interleaves_in_call_order_with_sends(rt, reports, tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(b"FILE")
    port = rt.serve(Keep)

    def driver():
        with connect(port) as sock:
            transport = next_report()
            transport.send(b"1")
            transport.sendfile(b"2", str(path), b"3")
            transport.send(b"4")
            transport.sendfile_ranged(b"5", str(path), b"6", 1, 2)
            transport.send(b"7")
            return recv_exactly(sock, 13)

    assert rt.run(driver) == b"12FILE345IL67"


# ---- pause_reading / resume_reading ------------------------------------------------------------


class Pausing:
    """Starts paused; reports its transport, then every data it receives."""

    def connection_made(self, transport):
        transport.pause_reading()
        report(transport)

    def data_received(self, transport, data):
        report(data)
        return data


def test_pause_and_resume_reading(rt, reports):
    port = rt.serve(Pausing)

    def driver():
        with connect(port) as sock:
            transport = next_report()
            sock.sendall(b"held back")
            no_more_reports(0.4)  # nothing delivered while paused
            transport.resume_reading()
            assert recv_exactly(sock, 9) == b"held back"
            delivered = b""
            while len(delivered) < 9:
                delivered += next_report()
            assert delivered == b"held back"
            # Pause again from outside the connection's callbacks.
            transport.pause_reading()
            time.sleep(0.1)
            sock.sendall(b"again")
            no_more_reports(0.4)
            transport.resume_reading()
            return recv_exactly(sock, 5)

    assert rt.run(driver) == b"again"


class Sink:
    """Starts paused; reports its transport, then the size of every data it
    receives."""

    def connection_made(self, transport):
        transport.pause_reading()
        report(transport)

    def data_received(self, transport, data):
        report(len(data))


def test_paused_connection_applies_backpressure(rt, reports):
    """While paused, a fast sender is eventually held back by the kernel's
    window; nothing is lost, and everything arrives after resume."""
    port = rt.serve(Sink)
    total = 128 << 20

    def driver():
        with connect(port) as sock:
            transport = next_report()
            sock.settimeout(1.0)
            chunk = b"z" * (1 << 20)
            sent = 0
            try:
                while sent < total:
                    sent += sock.send(chunk)
            except TimeoutError:
                pass
            assert sent < total, "the paused server never pushed back"
            transport.resume_reading()
            sock.settimeout(10)
            delivered = 0
            while delivered < sent:
                delivered += next_report()
            assert delivered == sent

    rt.run(driver)


# ---- addresses -------------------------------------------------------------------------------------


class Names:
    def connection_made(self, transport):
        report((transport.peername, transport.sockname))


def test_peername_and_sockname(rt, reports):
    port = rt.serve(Names)

    def driver():
        with connect(port) as sock:
            return next_report(), sock.getsockname(), sock.getpeername()

    (peer, local), client_local, client_peer = rt.run(driver)
    assert peer == client_local
    assert local == client_peer == (LOCALHOST, port)
    assert isinstance(peer[0], str) and isinstance(peer[1], int)


class NamesThenClose:
    def connection_made(self, transport):
        report((transport.peername, transport.sockname))
        transport.close()


def test_addresses_of_a_client_transport(rt, reports):
    port = rt.serve(type("Quiet", (), {}))
    px.register(px.client(LOCALHOST, port), NamesThenClose)

    def driver():
        return next_report()

    peer, local = rt.run(driver)
    assert peer == (LOCALHOST, port)
    assert local[0] == LOCALHOST and local[1] > 0 and local[1] != port
