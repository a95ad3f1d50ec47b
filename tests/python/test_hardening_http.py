"""Hardening of the HTTP server against hostile clients and careless
applications (issue 16): large responses are delivered whole at the pace the
client reads, a pipelining flood is slowed rather than reset, and OPTIONS *
is answered.

Each test fails on a server without the corresponding fix: a 16 MiB response
used to vanish (the send-buffer bound refused it whole), a flood of pipelined
requests used to reset the connection.
"""

import socket
import time

from conftest import connect, recv_exactly
from http_helpers import Client, build_request, serve_http
from pyparallel.http import HttpServer, Response, route

BIG = 16 << 20


class Big(HttpServer):
    @route("/bytes/{mib}")
    def big_bytes(self, request, mib):
        return b"x" * (int(mib) << 20)

    @route("/tuple/{mib}")
    def big_tuple(self, request, mib):
        return Response(bytearray(b"y" * (int(mib) << 20)), headers={"Content-Type": "application/octet-stream"})

    @route("/str/{mib}")
    def big_str(self, request, mib):
        return "z" * (int(mib) << 20)

    def plaintext(self, request):
        return b"Hello, World!"


def read_big(client, pause=0.0):
    """Reads a 200 response with a large body after pause seconds (a client
    slow to start reading), without the quadratic buffering of
    Client.read_response; (Content-Length, body)."""
    if pause:
        time.sleep(pause)
    head = client._take_head().decode("latin-1")
    assert head.startswith("HTTP/1.1 200 "), head
    length = int(
        next(line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("content-length:"))
    )
    body = bytearray(length)
    view = memoryview(body)
    have = min(len(client.buffer), length)
    view[:have] = client.buffer[:have]
    client.buffer = client.buffer[have:]
    while have < length:
        n = client.sock.recv_into(view[have:])
        assert n, f"EOF after {have} of {length} body bytes"
        have += n
    return length, bytes(body)


def test_responses_of_16_mib_and_more_are_delivered_whole(rt):
    def driver(port):
        results = []
        with Client(port, timeout=30) as client:
            for target, size, fill in (
                ("/bytes/16", BIG, b"x"),
                ("/bytes/40", 40 << 20, b"x"),
                ("/tuple/17", 17 << 20, b"y"),
                ("/str/16", BIG, b"z"),
            ):
                client.send(build_request("GET", target))
                # A client that is slow to start reading still gets it all.
                length, body = read_big(client, pause=0.3)
                results.append((length, body == fill * size))
            results.append(client.request("GET", "/plaintext").body == b"Hello, World!")
        return results

    sizes = [(BIG, True), (40 << 20, True), (17 << 20, True), (BIG, True), True]
    assert rt.run(lambda: driver(serve_http(rt, Big))) == sizes


def test_large_responses_pipelined_arrive_in_order(rt):
    def driver(port):
        with Client(port, timeout=30) as client:
            client.send(
                build_request("GET", "/bytes/16")
                + build_request("GET", "/plaintext")
                + build_request("GET", "/bytes/20")
            )
            first, _ = read_big(client)
            second = client.read_response()
            third, _ = read_big(client)
        return first, second.body, third

    assert rt.run(lambda: driver(serve_http(rt, Big))) == (BIG, b"Hello, World!", 20 << 20)


def test_a_client_that_leaves_mid_response_does_not_hurt_the_server(rt):
    def driver(port):
        for _ in range(3):
            sock = connect(port)
            sock.sendall(build_request("GET", "/bytes/32"))
            recv_exactly(sock, 1000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        with Client(port) as client:
            return client.request("GET", "/plaintext").body

    assert rt.run(lambda: driver(serve_http(rt, Big))) == b"Hello, World!"


FLOOD = 300_000


def test_a_pipelining_flood_is_slowed_not_reset(rt):
    """300k pipelined requests from a client that reads nothing until it has
    sent them all: the server stops reading while the responses are unread,
    and every request is answered once the client reads."""
    import threading

    def driver(port):
        sock = connect(port, timeout=60)
        request = build_request("GET", "/plaintext")
        sent = threading.Event()

        def send_all():
            batch = request * 1000
            for _ in range(FLOOD // 1000):
                sock.sendall(batch)
            sent.set()

        sender = threading.Thread(target=send_all)
        sender.start()
        time.sleep(1.0)  # nothing read meanwhile: the responses pile up
        marker = b"Hello, World!"
        count, tail = 0, b""
        while count < FLOOD:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {count} responses"
            data = tail + chunk
            count += data.count(marker)
            tail = data[-(len(marker) - 1) :]
        sender.join(60)
        sock.close()
        return count, sent.is_set()

    assert rt.run(lambda: driver(serve_http(rt, Big))) == (FLOOD, True)
