"""Transport methods: send (from any thread, in call order, as a chat
server's 1:m fan-out), close, sendfile, sendfile_ranged, pause_reading /
resume_reading, peername and sockname, and their misuse.
"""

import hashlib
import os
import pathlib
import queue
import threading
import time

import pytest

import pyparallel as px
from conftest import LOCALHOST, connect, recv_exactly, recv_to_eof, recv_until, run_threads, wait_for


class Keep:
    """Hands every connection's transport to the test through a queue."""

    transports = None  # a queue.Queue, set per test

    def connection_made(self, transport):
        self.transports.put(transport)


def keeper():
    return type("Keeper", (Keep,), {"transports": queue.Queue()})


# ---- send ---------------------------------------------------------------------------


@pytest.mark.shares_objects
def test_send_from_another_thread_keeps_call_order(rt):
    protocol = keeper()
    port = rt.serve(protocol)
    count = 3000

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)
            for i in range(count):
                transport.send(b"%06d\n" % i)
            data = recv_exactly(sock, 7 * count)
        return data

    data = rt.run(driver)
    assert data == b"".join(b"%06d\n" % i for i in range(count))


@pytest.mark.shares_objects
def test_send_from_many_threads_keeps_each_threads_order(rt):
    protocol = keeper()
    port = rt.serve(protocol)
    threads, per_thread = 4, 1000

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)

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


@pytest.mark.shares_objects
def test_send_accepts_every_sendable_kind(rt):
    protocol = keeper()
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)
            transport.send(b"a")
            transport.send(bytearray(b"b"))
            transport.send(memoryview(b"c"))
            transport.send("\u00e9")
            transport.send((b"d", "e", bytearray(b"f"), memoryview(b"g")))
            return recv_exactly(sock, 9)

    assert rt.run(driver) == b"abc\xc3\xa9defg"


@pytest.mark.shares_objects
@pytest.mark.parametrize("value", [None, 42, [b"x"], (b"x", 1)], ids=["None", "int", "list", "tuple-int"])
def test_send_rejects_what_cannot_be_sent(rt, value):
    protocol = keeper()
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)
            with pytest.raises(TypeError):
                transport.send(value)
            transport.send(b"fine")
            return recv_exactly(sock, 4)

    assert rt.run(driver) == b"fine"


@pytest.mark.shares_objects
def test_send_after_close_raises_async_error(rt):
    protocol = keeper()
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)
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


@pytest.mark.shares_objects
def test_large_echo_is_byte_exact(rt):
    """8 MiB through an echo server, with the client reading while it writes
    (the server's sends go asynchronous when the socket is full)."""

    class Echo:
        def data_received(self, transport, data):
            return data

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


@pytest.mark.shares_objects
def test_chat_fan_out_reaches_everyone_in_order(rt):
    """N clients each say M lines; every line is broadcast to every member
    from the sender's callback. Every client gets all N*M lines, and each
    sender's lines arrive in the order they were said."""
    members = set()
    lock = threading.Lock()
    clients, per_client = 5, 60

    class Chat:
        lines_mode = True

        def connection_made(self, transport):
            with lock:
                members.add(transport)

        def lines_received(self, transport, line):
            with lock:
                everyone = list(members)
            for member in everyone:
                member.send(line + b"\n")

        def connection_lost(self, transport, exc):
            with lock:
                members.discard(transport)

    port = rt.serve(Chat)

    def driver():
        socks = [connect(port) for _ in range(clients)]
        wait_for(lambda: len(members) == clients)
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


@pytest.mark.shares_objects
def test_close_sends_queued_data_first(rt):
    payload = os.urandom(3 << 20)

    class SendAndClose:
        def connection_made(self, transport):
            transport.send(payload)
            transport.close()

    port = rt.serve(SendAndClose)

    def driver():
        with connect(port) as sock:
            return recv_to_eof(sock)

    assert rt.run(driver) == payload


@pytest.mark.shares_objects
def test_close_twice_is_harmless(rt):
    lost = queue.Queue()

    class Twice:
        def data_received(self, transport, data):
            transport.close()
            transport.close()

        def connection_lost(self, transport, exc):
            lost.put(exc)

    port = rt.serve(Twice)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_to_eof(sock) == b""
        got = lost.get(timeout=10)
        with pytest.raises(queue.Empty):
            lost.get(timeout=0.3)
        return got

    assert rt.run(driver) is None


@pytest.mark.shares_objects
def test_close_from_another_thread(rt):
    protocol = keeper()
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)
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


def serve_file_commands(rt, file_path, errors):
    """A server that runs transport.sendfile/sendfile_ranged on request:
    "whole" sends the file framed by markers, "range O N" a range of it."""

    class Files:
        lines_mode = True

        def lines_received(self, transport, line):
            words = line.split()
            try:
                if words[0] == b"whole":
                    return None if transport.sendfile(b"<<", str(file_path), b">>") else b"no send id"
                if words[0] == b"path":
                    transport.sendfile(b"", pathlib.Path(file_path), b"")
                elif words[0] == b"range":
                    transport.sendfile_ranged(b"[", str(file_path), b"]", int(words[1]), int(words[2]))
                elif words[0] == b"missing":
                    transport.sendfile(b"", str(file_path) + ".missing", b"")
                elif words[0] == b"past-end":
                    size = os.path.getsize(file_path)
                    transport.sendfile_ranged(b"", str(file_path), b"", size - 10, 11)
            except Exception as exc:
                errors.put(exc)
                return b"error\n"
            return None

    return rt.serve(Files)


@pytest.mark.shares_objects
def test_sendfile_is_byte_exact(rt, big_file):
    errors = queue.Queue()
    port = serve_file_commands(rt, big_file, errors)
    content = big_file.read_bytes()

    def driver():
        with connect(port) as sock:
            sock.sendall(b"whole\n")
            whole = recv_exactly(sock, len(content) + 4)
            sock.sendall(b"path\n")
            by_path = recv_exactly(sock, len(content))
        return whole, by_path

    whole, by_path = rt.run(driver)
    assert errors.empty(), errors.get()
    assert whole[:2] == b"<<" and whole[-2:] == b">>"
    assert hashlib.sha256(whole[2:-2]).digest() == hashlib.sha256(content).digest()
    assert by_path == content


@pytest.mark.parametrize(
    "offset, nbytes",
    [(0, 1), (0, 100_000), (4095, 4097), (1 << 20, 3 << 20), ((5 << 20) + 12345 - 7, 7), (17, 0)],
)
@pytest.mark.shares_objects
def test_sendfile_ranged_is_byte_exact(rt, big_file, offset, nbytes):
    errors = queue.Queue()
    port = serve_file_commands(rt, big_file, errors)
    content = big_file.read_bytes()

    def driver():
        with connect(port) as sock:
            sock.sendall(b"range %d %d\n" % (offset, nbytes))
            return recv_exactly(sock, nbytes + 2)

    got = rt.run(driver)
    assert errors.empty(), errors.get()
    assert got == b"[" + content[offset : offset + nbytes] + b"]"


@pytest.mark.shares_objects
def test_sendfile_errors(rt, big_file):
    """A missing file is FileNotFoundError, a range past the end ValueError,
    both raised by the call before anything is sent."""
    errors = queue.Queue()
    port = serve_file_commands(rt, big_file, errors)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"missing\n")
            assert recv_exactly(sock, 6) == b"error\n"
            sock.sendall(b"past-end\n")
            assert recv_exactly(sock, 6) == b"error\n"
        return errors.get(timeout=5), errors.get(timeout=5)

    missing, past_end = rt.run(driver)
    assert isinstance(missing, FileNotFoundError), repr(missing)
    assert isinstance(past_end, ValueError), repr(past_end)


@pytest.mark.shares_objects
def test_sendfile_interleaves_in_call_order_with_sends(rt, tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(b"FILE")
    protocol = keeper()
    port = rt.serve(protocol)

    def driver():
        with connect(port) as sock:
            transport = protocol.transports.get(timeout=10)
            transport.send(b"1")
            transport.sendfile(b"2", str(path), b"3")
            transport.send(b"4")
            transport.sendfile_ranged(b"5", str(path), b"6", 1, 2)
            transport.send(b"7")
            return recv_exactly(sock, 13)

    assert rt.run(driver) == b"12FILE345IL67"


# ---- pause_reading / resume_reading ------------------------------------------------------------


@pytest.mark.shares_objects
def test_pause_and_resume_reading(rt):
    delivered = queue.Queue()
    protocol_transports = queue.Queue()

    class Pausing:
        def connection_made(self, transport):
            transport.pause_reading()
            protocol_transports.put(transport)

        def data_received(self, transport, data):
            delivered.put(data)
            return data

    port = rt.serve(Pausing)

    def driver():
        with connect(port) as sock:
            transport = protocol_transports.get(timeout=10)
            sock.sendall(b"held back")
            with pytest.raises(queue.Empty):
                delivered.get(timeout=0.4)
            transport.resume_reading()
            assert recv_exactly(sock, 9) == b"held back"
            # Pause again from outside the connection's callbacks.
            transport.pause_reading()
            time.sleep(0.1)
            while not delivered.empty():
                delivered.get()
            sock.sendall(b"again")
            with pytest.raises(queue.Empty):
                delivered.get(timeout=0.4)
            transport.resume_reading()
            return recv_exactly(sock, 5)

    assert rt.run(driver) == b"again"


@pytest.mark.shares_objects
def test_paused_connection_applies_backpressure(rt):
    """While paused, a fast sender is eventually held back by the kernel's
    window; nothing is lost, and everything arrives after resume."""
    protocol_transports = queue.Queue()
    received = []

    class Sink:
        def connection_made(self, transport):
            transport.pause_reading()
            protocol_transports.put(transport)

        def data_received(self, transport, data):
            received.append(len(data))

    port = rt.serve(Sink)
    total = 128 << 20

    def driver():
        with connect(port) as sock:
            transport = protocol_transports.get(timeout=10)
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
            wait_for(lambda: sum(received) == sent, message=f"{sum(received)} of {sent} bytes delivered")

    rt.run(driver)


# ---- addresses -------------------------------------------------------------------------------------


@pytest.mark.shares_objects
def test_peername_and_sockname(rt):
    names = queue.Queue()

    class Names:
        def connection_made(self, transport):
            names.put((transport.peername, transport.sockname))

    port = rt.serve(Names)

    def driver():
        with connect(port) as sock:
            return names.get(timeout=10), sock.getsockname(), sock.getpeername()

    (peer, local), client_local, client_peer = rt.run(driver)
    assert peer == client_local
    assert local == client_peer == (LOCALHOST, port)
    assert isinstance(peer[0], str) and isinstance(peer[1], int)


@pytest.mark.shares_objects
def test_addresses_of_a_client_transport(rt):
    names = queue.Queue()
    port = rt.serve(type("Quiet", (), {}))

    class Client:
        def connection_made(self, transport):
            names.put((transport.peername, transport.sockname))
            transport.close()

    px.register(px.client(LOCALHOST, port), Client)

    def driver():
        return names.get(timeout=10)

    peer, local = rt.run(driver)
    assert peer == (LOCALHOST, port)
    assert local[0] == LOCALHOST and local[1] > 0 and local[1] != port
