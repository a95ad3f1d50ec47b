"""HTTP/1.1 conformance of an HttpServer, over raw sockets: keep-alive,
pipelining (responses in request order, even when an early one is slow),
chunked request bodies, HEAD, Expect: 100-continue, HTTP/1.0, and the limits
and timeouts an application sets as class attributes (413, 414, 431, 408,
the keep-alive timeout).

The C layer's own tests (tests/c/test_http_server.c) go through the parser's
error matrix; these check that the Python-facing class gets the same
protocol behaviour, and that its attributes reach the C layer.
"""

import time

import pytest

from http_helpers import Client, build_request, chunked, fetch, serve_http
from pyparallel.http import HttpServer, Response, route


class Echo(HttpServer):
    @route("/echo", methods=("GET", "POST", "PUT"))
    def echo(self, request):
        return Response(request.body, headers={"X-Method": request.method, "Content-Type": "application/octet-stream"})

    @route("/slow/{seconds}")
    def slow(self, request, seconds):
        time.sleep(float(seconds))
        return "slow " + seconds

    @route("/n/{i}")
    def numbered(self, request, i):
        return "n=" + i

    def plaintext(self, request):
        return b"Hello, World!"

    def bye(self, request):
        return Response("bye", headers={"Connection": "close"})


def run_echo(rt, driver, **attributes):
    port = serve_http(rt, Echo, **attributes)
    return rt.run(lambda: driver(port))


def test_keep_alive_serves_many_requests_on_one_connection(rt):
    def driver(port):
        with Client(port) as client:
            responses = [client.request("GET", f"/n/{i}") for i in range(20)]
            still_open = not client.at_eof(timeout=0.2)
        return responses, still_open

    responses, still_open = run_echo(rt, driver)
    assert [r.body for r in responses] == [b"n=%d" % i for i in range(20)]
    assert all(r.header("Connection") in (None, "keep-alive") for r in responses)
    assert still_open


def test_pipelined_responses_come_in_request_order(rt):
    """Twelve requests in one send; the first handler is slow, the others
    fast. Responses must still come back in request order."""

    def driver(port):
        requests = [build_request("GET", "/slow/0.2")]
        requests += [build_request("GET", f"/n/{i}") for i in range(1, 10)]
        requests.append(build_request("POST", "/echo", body=b"pipelined body"))
        requests.append(build_request("HEAD", "/plaintext"))
        with Client(port) as client:
            client.send(b"".join(requests))
            responses = [client.read_response() for _ in range(11)]
            responses.append(client.read_response(head=True))
            after = client.request("GET", "/plaintext")
        return responses, after

    responses, after = run_echo(rt, driver)
    assert responses[0].body == b"slow 0.2"
    assert [r.body for r in responses[1:10]] == [b"n=%d" % i for i in range(1, 10)]
    assert responses[10].body == b"pipelined body"
    assert responses[11].status == 200 and responses[11].header("Content-Length") == "13"
    assert after.body == b"Hello, World!"


@pytest.mark.parametrize(
    "sizes",
    [[], [1], [3, 5, 7], [1] * 40, [1000]],
    ids=["one-chunk", "first-byte", "uneven", "byte-chunks", "exact"],
)
def test_chunked_request_bodies_arrive_decoded(rt, sizes):
    body = bytes(range(256)) * 4

    def driver(port):
        with Client(port) as client:
            head = build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
            client.send(head + chunked(body, sizes))
            first = client.read_response()
            # Extensions and trailers are accepted and dropped.
            client.send(
                build_request("PUT", "/echo", headers=[("Transfer-Encoding", "chunked")])
                + b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
            )
            second = client.read_response()
        return first, second

    first, second = run_echo(rt, driver)
    assert (first.status, first.header("X-Method"), first.body) == (200, "POST", body)
    assert (second.header("X-Method"), second.body) == ("PUT", b"hello")


def test_chunked_body_sent_in_pieces(rt):
    body = b"piece by piece " * 50
    wire = build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + chunked(body, [7, 13, 100])

    def driver(port):
        with Client(port) as client:
            for i in range(0, len(wire), 37):
                client.send(wire[i : i + 37])
                time.sleep(0.001)
            return client.read_response()

    assert run_echo(rt, driver).body == body


def test_head_responses_have_no_body(rt):
    def driver(port):
        with Client(port) as client:
            client.send(build_request("HEAD", "/plaintext") + build_request("GET", "/n/1"))
            head = client.read_response(head=True)
            # The next response follows the head directly: no body bytes between.
            get = client.read_response()
        return head, get

    head, get = run_echo(rt, driver)
    assert head.status == 200 and head.header("Content-Length") == "13"
    assert get.body == b"n=1"


def test_expect_100_continue(rt):
    body = b"x" * 5000

    def driver(port):
        with Client(port) as client:
            client.send(
                build_request(
                    "POST",
                    "/echo",
                    headers=[("Content-Length", str(len(body))), ("Expect", "100-continue")],
                )
            )
            interim = client.read_response()
            client.send(body)
            final = client.read_response()
        return interim, final

    interim, final = run_echo(rt, driver)
    assert interim.status == 100 and interim.head.startswith(b"HTTP/1.1 100 Continue")
    assert final.status == 200 and final.body == body


def test_expect_100_continue_over_the_body_limit_gets_413_without_sending_the_body(rt):
    def driver(port):
        with Client(port) as client:
            client.send(
                build_request("POST", "/echo", headers=[("Content-Length", "5000"), ("Expect", "100-continue")])
            )
            response = client.read_response()
            closed = client.at_eof()
        return response, closed

    response, closed = run_echo(rt, driver, max_body_size=1000)
    assert response.status == 413
    assert closed


def test_http_1_0_closes_unless_keep_alive_is_asked(rt):
    def driver(port):
        with Client(port) as plain:
            first = plain.request("GET", "/n/1", version="HTTP/1.0")
            plain_closed = plain.at_eof()
        with Client(port) as kept:
            kept_first = kept.request("GET", "/n/2", headers=[("Connection", "keep-alive")], version="HTTP/1.0")
            kept_second = kept.request("GET", "/n/3", headers=[("Connection", "keep-alive")], version="HTTP/1.0")
        return first, plain_closed, kept_first, kept_second

    first, plain_closed, kept_first, kept_second = run_echo(rt, driver)
    assert first.body == b"n=1" and plain_closed
    assert first.header("Connection") in (None, "close")
    assert kept_first.header("Connection").lower() == "keep-alive"
    assert (kept_first.body, kept_second.body) == (b"n=2", b"n=3")


def test_connection_close_from_the_client(rt):
    def driver(port):
        with Client(port) as client:
            response = client.request("GET", "/n/9", headers=[("Connection", "close")])
            return response, client.at_eof()

    response, closed = run_echo(rt, driver)
    assert response.body == b"n=9" and response.header("Connection") == "close"
    assert closed


def test_a_handler_closes_the_connection_with_connection_close(rt):
    def driver(port):
        with Client(port) as client:
            client.send(build_request("GET", "/bye") + build_request("GET", "/n/1"))
            response = client.read_response()
            return response, client.at_eof()

    response, closed = run_echo(rt, driver)
    assert response.body == b"bye" and response.header("Connection") == "close"
    assert closed  # the pipelined second request is not answered


# ---- limits and timeouts from class attributes ----------------------------------------------------


def test_default_limits_are_the_documented_ones():
    assert (Echo.max_header_size, Echo.max_uri_size, Echo.max_body_size) == (16384, 8192, 1048576)
    assert (Echo.header_timeout, Echo.body_timeout, Echo.keepalive_timeout) == (10.0, 30.0, 5.0)


def test_max_body_size(rt):
    def driver(port):
        with Client(port) as client:
            fits = client.request("POST", "/echo", body=b"y" * 100)
            client.send(build_request("POST", "/echo", headers=[("Content-Length", "101")]))
            too_big = client.read_response()
        with Client(port) as client:
            client.send(build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
            client.send(chunked(b"z" * 150, [60, 60]))
            chunked_too_big = client.read_response()
        return fits, too_big, chunked_too_big

    fits, too_big, chunked_too_big = run_echo(rt, driver, max_body_size=100)
    assert fits.status == 200 and fits.body == b"y" * 100
    assert too_big.status == 413  # answered from the head, before any body byte
    assert chunked_too_big.status == 413


@pytest.mark.parametrize(
    "attribute, fits, too_big, status",
    [
        ("max_uri_size", ("/n/" + "1" * 50, []), ("/n/" + "1" * 100, []), 414),
        ("max_header_size", ("/n/1", [("X-Fill", "f" * 200)]), ("/n/1", [("X-Fill", "f" * 2000)]), 431),
    ],
)
def test_head_limits(rt, attribute, fits, too_big, status):
    limit = {"max_uri_size": 64, "max_header_size": 1024}[attribute]

    def driver(port):
        ok = fetch(port, "GET", fits[0], headers=fits[1])
        with Client(port) as client:
            client.send(build_request("GET", too_big[0], headers=too_big[1]))
            return ok, client.read_response(), client.at_eof()

    ok, refused, closed = run_echo(rt, driver, **{attribute: limit})
    assert ok.status == 200
    assert refused.status == status and refused.header("Connection") == "close"
    assert closed


def test_header_timeout_answers_a_slow_client_408(rt):
    def driver(port):
        with Client(port) as client:
            started = time.monotonic()
            client.send(b"GET /n/1 HTTP/1.1\r\nHost: test\r\n")
            try:
                for _ in range(30):  # trickle: one field line every 50 ms
                    client.send(b"X-Slow: 1\r\n")
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass
            response = client.read_response()
            return response, time.monotonic() - started, client.at_eof()

    response, elapsed, closed = run_echo(rt, driver, header_timeout=0.4)
    assert response.status == 408
    assert 0.3 < elapsed < 3.0, elapsed
    assert closed


def test_keepalive_timeout_closes_an_idle_connection(rt):
    def driver(port):
        with Client(port) as client:
            assert client.request("GET", "/n/1").status == 200
            started = time.monotonic()
            closed = client.at_eof(timeout=5)
            return closed, time.monotonic() - started

    closed, idle = run_echo(rt, driver, keepalive_timeout=0.3)
    assert closed
    assert 0.2 < idle < 3.0, idle
