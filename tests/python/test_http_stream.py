"""Streamed responses and async handlers of pyparallel.http, over real
sockets: async def handlers (method routes, pattern routes) awaiting
asyncio.sleep, 200 of them at once; sync and async generators sent chunked
and decoded byte for byte by http.client; a Content-Length given with a
streamed body; HEAD; a streamed response between two plain ones in a
pipeline; an exception before the first byte (500) and after it (the
connection closes, the error is logged); a client that goes away mid-stream
(the generator's finally runs); the request's HttpStream written from the
handler, from a thread and from a task; and a 1 GiB generator to a client
that reads slowly, with the server's RSS (a subprocess) staying bounded.

The classes are at module level (mode "interpreters" imports them in each
worker); what a handler learns reaches the test through a file
(conftest's FileLogged).
"""

import asyncio
import http.client
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import LOCALHOST, FileLogged, connect, logged_lines, logging_to, memory_not_under_sanitizer, recv_until
from http_helpers import Client, build_request, serve_http
from pyparallel.http import HttpServer, Response, route

BLOCK = b"0123456789abcdef" * 64  # 1 KiB


def pieces(n):
    """The items a test body yields: n pieces of varied sizes."""
    return [BLOCK[: 1 + (i * 37) % len(BLOCK)] * (1 + i % 3) for i in range(n)]


class Streams(HttpServer, FileLogged):
    async def sleep(self, request):
        await asyncio.sleep(0.2)
        return {"loop": type(asyncio.get_running_loop()).__name__}

    @route("/asleep/{seconds}")
    async def asleep(self, request, seconds):
        await asyncio.sleep(float(seconds))
        return Response(f"slept {seconds}", status=202)

    def hello(self, request):
        return "hello"

    def gen(self, request):
        yield from pieces(300)

    def text(self, request):
        yield "h\u00e9"
        yield b""
        yield "llo"

    async def agen(self, request):
        async def body():
            for piece in pieces(300):
                if len(piece) % 5 == 0:
                    await asyncio.sleep(0)
                yield piece

        return body()

    def agen_direct(self, request):
        return self.agen_body()

    async def agen_body(self):
        yield b"direct "
        await asyncio.sleep(0.01)
        yield "async"

    def length(self, request):
        data = b"".join(pieces(50))
        return Response(iter([data[:1000], data[1000:]]), headers={"Content-Length": str(len(data))})

    def csv(self, request):
        return Response((f"{i},{i * i}\n" for i in range(5)), status=201, headers=[("Content-Type", "text/csv")])

    def fails_first(self, request):
        raise ValueError("before the first byte")
        yield b"never"

    def fails_later(self, request):
        yield b"first part "
        raise ValueError("after the head")

    def endless(self, request):
        try:
            while True:
                yield BLOCK * 64
        finally:
            self.log("endless closed")

    async def aendless(self, request):
        async def body():
            try:
                while True:
                    await asyncio.sleep(0.001)
                    yield BLOCK * 64
            finally:
                self.log("aendless closed")

        return body()

    def manual(self, request):
        stream = self._px_stream()
        assert stream is self._px_stream()
        stream.start(201, {"X-Stream": "yes"})
        assert stream.write(b"one,") is True
        stream.write("two")
        stream.end()
        return stream

    def threaded(self, request):
        stream = self._px_stream()

        def produce():
            stream.start(200, [("Content-Type", "text/plain")])
            for _ in range(200):
                stream.write(BLOCK)
            stream.end()

        threading.Thread(target=produce).start()
        return stream

    async def tasked(self, request):
        stream = self._px_stream()
        stream.start(200, None, content_length=6)
        assert await stream.awrite(b"abc")
        await asyncio.sleep(0.01)
        await stream.awrite(b"def")
        stream.end()
        return stream

    async def watch(self, request):
        stream = self._px_stream()
        stream.start(200)
        stream.write(b"waiting")
        await stream.wait_disconnected()
        self.log(f"disconnected {stream.disconnected}")
        stream.end()
        return stream

    def aborted(self, request):
        stream = self._px_stream()
        stream.start(200)
        stream.write(b"partial")
        stream.abort()
        return stream


def get(port, path, method="GET"):
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
    conn.request(method, path)
    response = conn.getresponse()
    return response, response.read(), conn


def serve(rt, tmp_path):
    log = tmp_path / "log"
    return serve_http(rt, logging_to(Streams, log)), log


def test_async_handlers_answer_like_plain_ones(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        response, body, _ = get(port, "/sleep")
        assert (response.status, body) == (200, b'{"loop":"WorkerEventLoop"}')
        response, body, _ = get(port, "/asleep/0.01")
        assert (response.status, body) == (202, b"slept 0.01")

    rt.run(drive)


def test_200_concurrent_sleeps_take_about_one_sleep(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        clients = [Client(port) for _ in range(200)]
        try:
            started = time.monotonic()
            for client in clients:
                client.send(build_request("GET", "/sleep"))
            for client in clients:
                response = client.read_response()
                assert response.status == 200, response
            return time.monotonic() - started
        finally:
            for client in clients:
                client.close()

    elapsed = rt.run(drive)
    assert elapsed < 1.2, f"200 requests sleeping 0.2 s each took {elapsed:.2f} s"


@pytest.mark.parametrize("path", ["/gen", "/agen"])
def test_generators_are_streamed_chunked(rt, tmp_path, path):
    port, _ = serve(rt, tmp_path)

    def drive():
        response, body, _ = get(port, path)
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Length") is None
        assert response.getheader("Content-Type") == "text/plain"
        assert body == b"".join(pieces(300))
        response, body, _ = get(port, "/text")
        assert body == "h\u00e9llo".encode()
        response, body, _ = get(port, "/agen_direct")
        assert body == b"direct async"

    rt.run(drive)


class Reader:
    """Reads a connection's responses as bytes, in order: heads, then bodies
    by Content-Length, chunked framing (kept as sent) or none (HEAD)."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _until(self, terminator):
        while terminator not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"EOF before {terminator!r}; got {self.buffer[-200:]!r}"
            self.buffer += chunk
        data, _, self.buffer = self.buffer.partition(terminator)
        return data + terminator

    def _exactly(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            assert chunk, f"EOF after {len(self.buffer)} of {n} bytes"
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def response(self, head_only=False):
        """(status, fields, body as sent)."""
        head = self._until(b"\r\n\r\n").decode("latin-1")
        status = int(head.split(" ", 2)[1])
        fields = {}
        for line in head.split("\r\n")[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.lower()] = value.strip()
        if head_only:
            return status, fields, b""
        if fields.get("transfer-encoding") == "chunked":
            return status, fields, self._until(b"0\r\n\r\n")
        return status, fields, self._exactly(int(fields.get("content-length", "0")))


def test_chunked_framing_is_exact(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        sock = connect(port)
        sock.sendall(build_request("GET", "/text"))
        status, fields, body = Reader(sock).response()
        assert fields["transfer-encoding"] == "chunked"
        assert body == b"3\r\nh\xc3\xa9\r\n3\r\nllo\r\n0\r\n\r\n"
        sock.close()

    rt.run(drive)


def test_content_length_and_content_type_given(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        response, body, _ = get(port, "/length")
        data = b"".join(pieces(50))
        assert response.getheader("Content-Length") == str(len(data))
        assert response.getheader("Transfer-Encoding") is None
        assert body == data
        response, body, _ = get(port, "/csv")
        assert (response.status, response.getheader("Content-Type")) == (201, "text/csv")
        assert body == b"0,0\n1,1\n2,4\n3,9\n4,16\n"

    rt.run(drive)


def test_head_of_a_stream_and_pipelining_order(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        sock = connect(port)
        sock.sendall(
            build_request("GET", "/hello")
            + build_request("GET", "/text")
            + build_request("HEAD", "/gen")
            + build_request("GET", "/tasked")
            + build_request("GET", "/hello")
        )
        reader = Reader(sock)
        assert reader.response()[2] == b"hello"
        assert reader.response()[2] == b"3\r\nh\xc3\xa9\r\n3\r\nllo\r\n0\r\n\r\n"
        status, fields, _ = reader.response(head_only=True)
        assert (status, fields["transfer-encoding"]) == (200, "chunked")
        assert reader.response()[2] == b"abcdef"
        assert reader.response()[2] == b"hello"
        sock.close()

    rt.run(drive)


def test_failure_before_the_first_byte_is_a_500(rt, tmp_path, pxlog):
    port, _ = serve(rt, tmp_path)

    def drive():
        response, body, conn = get(port, "/fails_first")
        assert (response.status, body) == (500, b"Internal Server Error\n")
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello"

    rt.run(drive)
    assert "before the first byte" in pxlog.text


def test_failure_mid_stream_closes_the_connection_and_is_logged(rt, tmp_path, pxlog):
    port, _ = serve(rt, tmp_path)

    def drive():
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        conn.request("GET", "/fails_later")
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as failure:
            response.read()
        assert failure.value.partial == b"first part "
        # The server keeps serving.
        assert get(port, "/hello")[1] == b"hello"

    rt.run(drive)
    assert "after the head" in pxlog.text


@pytest.mark.parametrize("path", ["/endless", "/aendless"])
def test_a_client_that_goes_away_closes_the_generator(rt, tmp_path, path):
    port, log = serve(rt, tmp_path)

    def drive():
        sock = connect(port)
        sock.sendall(build_request("GET", path))
        Reader(sock).response(head_only=True)
        sock.close()
        rt.wait_for(lambda: f"{path[1:]} closed" in logged_lines(log), message="the generator was not closed")

    rt.run(drive)


def test_the_stream_object(rt, tmp_path):
    port, log = serve(rt, tmp_path)

    def drive():
        response, body, _ = get(port, "/manual")
        assert (response.status, response.getheader("X-Stream"), body) == (201, "yes", b"one,two")
        response, body, _ = get(port, "/threaded")
        assert body == BLOCK * 200
        response, body, _ = get(port, "/tasked")
        assert (response.getheader("Content-Length"), body) == ("6", b"abcdef")
        sock = connect(port)
        sock.sendall(build_request("GET", "/aborted") + build_request("GET", "/hello"))
        received = rt.recv_until_closed(sock)
        assert b"hello" not in received
        sock = connect(port)
        sock.sendall(build_request("GET", "/watch"))
        recv_until(sock, b"waiting\r\n")
        sock.close()
        rt.wait_for(lambda: "disconnected True" in logged_lines(log))

    rt.run(drive)


BIG_APP = textwrap.dedent(
    """
    from pyparallel.http import HttpServer

    class Big(HttpServer):
        def big(self, request):
            block = b"x" * 65536
            for _ in range(16384):  # 1 GiB
                yield block
    """
)
BIG_TOTAL = 16384 * (len(b"10000\r\n") + 65536 + 2) + len(b"0\r\n\r\n")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@memory_not_under_sanitizer
@pytest.mark.timeout(120)
def test_a_gigabyte_to_a_slow_reader_keeps_memory_bounded(tmp_path):
    (tmp_path / "bigapp.py").write_text(BIG_APP)
    child = subprocess.Popen(
        [sys.executable, "-m", "pyparallel.http.server", "--app", "bigapp:Big", "--bind", LOCALHOST, "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert "Serving HTTP" in line, line + child.stderr.read()
        port = int(line.split(" port ")[1].split()[0])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.settimeout(30)
        sock.connect((LOCALHOST, port))
        sock.sendall(build_request("GET", "/big"))
        peak = rss_kib(child.pid)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head, head
        received = len(rest)
        # Slowly, for three seconds: about 6 MiB/s.
        slow_until = time.monotonic() + 3
        while time.monotonic() < slow_until:
            received += len(sock.recv(65536))
            peak = max(peak, rss_kib(child.pid))
            time.sleep(0.01)
        # Then the rest as fast as it comes.
        last = time.monotonic()
        while received < BIG_TOTAL:
            data = sock.recv(1 << 20)
            assert data, f"EOF after {received} bytes"
            received += len(data)
            if time.monotonic() - last > 0.05:
                peak = max(peak, rss_kib(child.pid))
                last = time.monotonic()
        assert received == BIG_TOTAL
        sock.close()
        assert peak < 100 * 1024, f"the server's RSS reached {peak // 1024} MiB"
    finally:
        child.terminate()
        child.communicate(timeout=30)
