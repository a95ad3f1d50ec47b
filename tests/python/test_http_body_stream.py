"""Request bodies read as they arrive (stream_request_body), over real
sockets: an async handler streaming a large Content-Length and chunked
upload (with the server's memory staying far below the body), the sync
reader (read in pieces, lines), a sync generator echoing the body while it
arrives, request.body reading a streamed body whole, stream() and reader()
once per request, both on a buffered class too, "100 Continue" sent when
the handler first reads, the limits (413 before the handler for a
Content-Length, mid-stream for a chunked body; 408 for a stalled body), a
client that goes away mid-body, answers given without reading (kept alive
or closed), pipelining after a streamed body, WSGI's wsgi.input read
incrementally, and a property test: a body cut at random points, chunked
or not, reads back the same on both kinds of class.

The apps are in http_body_stream_apps.py (mode "interpreters" imports them
in each worker, which cannot import hypothesis); what a handler learns
reaches the test through a file (conftest's FileLogged), or the WSGI app's
through the file its query names.
"""

import hashlib
import json
import os
import threading
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import connect, logged_lines, logging_to, memory_not_under_sanitizer, wait_for
from http_body_stream_apps import BLOCK, Buffered, IncrementalWSGI, Limited, Streamed, digest
from http_helpers import Client, build_request, chunked, serve_http

MIB = 1 << 20


def serve(rt, tmp_path, cls=Streamed):
    log = tmp_path / "log"
    return serve_http(rt, logging_to(cls, log)), log


def rss():
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The highest RSS seen by its calls, from its making on."""

    def __init__(self):
        self.before = self.peak = rss()

    def __call__(self):
        self.peak = max(self.peak, rss())

    @property
    def growth(self):
        return self.peak - self.before


def upload(client, target, total, framing, watch=None):
    """Sends total bytes of BLOCKs to target, chunked or with a
    Content-Length, calling watch() after each block; the response."""
    if framing == "chunked":
        client.send(build_request("POST", target, [("Transfer-Encoding", "chunked")]))
        frame = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK)
    else:
        client.send(build_request("POST", target, [("Content-Length", str(total))]))
        frame = BLOCK
    for _ in range(total // len(BLOCK)):
        client.send(frame)
        if watch is not None:
            watch()
    if framing == "chunked":
        client.send(b"0\r\n\r\n")
    return client.read_response()


def expected_digest(total):
    sha = hashlib.sha256()
    for _ in range(total // len(BLOCK)):
        sha.update(BLOCK)
    return sha.hexdigest()


def still_serves(port):
    with Client(port) as client:
        assert client.request("GET", "/hello").body == b"hello"


# ---- streaming large bodies ---------------------------------------------------


def test_an_async_handler_streams_uploads(rt, tmp_path):
    port, _ = serve(rt, tmp_path)
    total = 8 * MIB

    def drive():
        with Client(port) as client:
            # The connection is served first: a body sent while the worker
            # still sets the connection up may arrive whole.
            assert client.request("GET", "/hello").body == b"hello"
            for framing in ("length", "chunked"):
                response = upload(client, "/astream", total, framing)
                answer = json.loads(response.body)
                assert (answer["length"], answer["sha256"]) == (total, expected_digest(total)), framing
                # Chunks as they came, not one whole body.
                assert answer["chunks"] > 1, answer
            assert client.request("GET", "/hello").body == b"hello"

    rt.run(drive, timeout=120)


@memory_not_under_sanitizer
def test_a_64_mib_upload_holds_far_less_memory(rt, tmp_path):
    port, _ = serve(rt, tmp_path)
    total = 64 * MIB

    def drive():
        peaks = {}
        with Client(port) as client:
            # Once small, so that what serving costs once is paid.
            upload(client, "/astream", MIB, "length")
            for framing in ("length", "chunked"):
                peak = PeakRss()
                response = upload(client, "/astream", total, framing, peak)
                assert json.loads(response.body)["sha256"] == expected_digest(total)
                peaks[framing] = peak.growth
        return peaks

    peaks = rt.run(drive, timeout=180)
    for framing, growth in peaks.items():
        assert growth < 16 * MIB, f"{framing}: the RSS grew by {growth / MIB:.1f} MiB for a 64 MiB body"


def test_the_sync_reader_reads_in_pieces_and_lines(rt, tmp_path):
    port, _ = serve(rt, tmp_path)
    data = BLOCK * 20

    def drive():
        with Client(port) as client:
            client.send(build_request("POST", "/reader", [("Content-Length", str(len(data)))]))
            for start in range(0, len(data), 100_000):
                client.send(data[start : start + 100_000])
                time.sleep(0.002)
            answer = json.loads(client.read_response().body)
            assert answer == {"sha256": digest(data), "largest": 10_000}
            text = b"one\ntwo\nthree\nfour"
            client.send(build_request("POST", "/lines", [("Transfer-Encoding", "chunked")]))
            client.send(chunked(text, [2, 5, 1]))
            assert json.loads(client.read_response().body) == {
                "first": "one\n",
                "second": "two",
                "rest": ["\n", "three\n", "four"],
            }
            response = client.request("POST", "/iterate", body=text)
            assert json.loads(response.body) == {"lines": ["one\n", "two\n", "three\n", "four"]}

    rt.run(drive)


def test_body_reads_a_streamed_body_whole_and_each_way_is_taken_once(rt, tmp_path):
    port, _ = serve(rt, tmp_path)
    data = BLOCK * 4

    def drive():
        with Client(port) as client:
            client.send(build_request("POST", "/body", [("Content-Length", str(len(data)))]))
            time.sleep(0.05)
            client.send(data)
            assert json.loads(client.read_response().body) == {
                "length": len(data),
                "sha256": digest(data),
                "again": True,
            }
            client.send(build_request("POST", "/twice", [("Content-Length", "5")]))
            time.sleep(0.05)
            client.send(b"hello")
            answer = json.loads(client.read_response().body)
        assert answer["data"] == "hello"
        assert len(answer["errors"]) == 3
        assert all("stream() and reader() may be called once" in e for e in answer["errors"][:2]), answer
        assert "request.body" in answer["errors"][2], answer

    rt.run(drive)


def test_a_buffered_class_gives_stream_and_reader_too(rt):
    port = serve_http(rt, Buffered)

    def drive():
        with Client(port) as client:
            answer = json.loads(client.request("POST", "/astream", body=b"whole").body)
            assert answer == {"length": 5, "sha256": digest(b"whole"), "chunks": 1}
            assert json.loads(client.request("POST", "/astream").body)["chunks"] == 0
            answer = json.loads(client.request("POST", "/reader", body=b"file").body)
        assert answer["data"] == "file" and answer["body"] == "file"
        assert "may be called once" in answer["again"]

    rt.run(drive)


def test_a_sync_generator_echoes_the_body_while_it_arrives(rt, tmp_path):
    port, _ = serve(rt, tmp_path)
    blocks = 32 * MIB // len(BLOCK)

    def drive():
        with Client(port, timeout=60) as client:
            client.send(build_request("POST", "/echo", [("Content-Length", str(blocks * len(BLOCK)))]))
            # The client sends without reading until both directions are
            # full: the response stopped at its bound (the generator parked)
            # and the body at its window. Reading then lets the generator go
            # on, which reads the body as it arrives: it must not wait for
            # it where the connection's input cannot come.
            sender = threading.Thread(target=lambda: [client.send(BLOCK) for _ in range(blocks)])
            sender.start()
            time.sleep(0.5)
            response = client.read_response()
            sender.join()
        assert (response.status, response.header("Transfer-Encoding")) == (200, "chunked")
        assert response.body == BLOCK * blocks

    rt.run(drive, timeout=120)


# ---- the protocol around a streamed body ---------------------------------------


def test_100_continue_is_sent_when_the_handler_reads(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        with Client(port) as client:
            client.send(build_request("POST", "/late", [("Expect", "100-continue"), ("Content-Length", "5")]))
            client.sock.settimeout(0.15)
            try:
                early = client.sock.recv(100)
            except TimeoutError:
                early = b""
            client.sock.settimeout(10)
            assert early == b"", early
            interim = client.read_response()
            assert interim.status == 100
            client.send(b"hello")
            response = client.read_response()
            assert (response.status, response.body) == (200, b"hello")

    rt.run(drive)


def test_limits_apply_to_streamed_bodies(rt, tmp_path):
    port, log = serve(rt, tmp_path, Limited)

    def drive():
        # A Content-Length over max_body_size: 413 before the handler runs.
        with Client(port) as client:
            client.send(build_request("POST", "/failing", [("Content-Length", "200000")]))
            response = client.read_response()
            assert response.status == 413
        # A chunked body passing it once the handler reads: the reader
        # raises, the server answers.
        with Client(port) as client:
            client.send(build_request("POST", "/failing", [("Transfer-Encoding", "chunked")]))
            frame = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK)
            client.send(frame)
            wait_for(lambda: "reading" in logged_lines(log))
            client.send(frame)
            response = client.read_response()
            assert (response.status, response.header("Connection")) == (413, "close")
        wait_for(lambda: "error 413" in logged_lines(log))
        # A body that stalls: 408, the async reader raises too.
        with Client(port) as client:
            client.send(build_request("POST", "/afailing", [("Content-Length", "1000")]) + b"x" * 10)
            response = client.read_response()
            assert response.status == 408
        wait_for(lambda: "error 408" in logged_lines(log))
        still_serves(port)

    rt.run(drive)


def test_a_client_gone_mid_body_fails_the_reader(rt, tmp_path):
    port, log = serve(rt, tmp_path)

    def drive():
        for target in ("/failing", "/afailing"):
            sock = connect(port)
            sock.sendall(build_request("POST", target, [("Content-Length", str(MIB))]) + BLOCK)
            time.sleep(0.05)
            sock.close()
        wait_for(lambda: logged_lines(log).count("error 400") == 2)
        still_serves(port)

    rt.run(drive)


def test_an_answer_before_the_body_keeps_the_connection_or_closes_it(rt, tmp_path):
    port, _ = serve(rt, tmp_path)

    def drive():
        with Client(port) as client:
            # A short rest is read and dropped: the connection serves on.
            client.send(build_request("POST", "/early", [("Content-Length", "100")]))
            response = client.read_response()
            assert (response.body, response.header("Connection")) == (b"early", None)
            client.send(b"x" * 100)
            assert client.request("GET", "/hello").body == b"hello"
            # A long one is not read: the answer closes the connection.
            client.send(build_request("POST", "/early", [("Content-Length", str(64 * MIB))]) + BLOCK)
            response = client.read_response()
            assert (response.body, response.header("Connection")) == (b"early", "close")
            assert client.sock.recv(10) == b""

    rt.run(drive)


def test_pipelined_requests_after_a_streamed_body(rt, tmp_path):
    port, _ = serve(rt, tmp_path)
    data = BLOCK * 3

    def drive():
        with Client(port) as client:
            client.send(build_request("POST", "/astream", [("Transfer-Encoding", "chunked")]))
            time.sleep(0.02)
            client.send(chunked(data, [1000, 70_000]) + build_request("GET", "/hello") + build_request("GET", "/hello"))
            answer = json.loads(client.read_response().body)
            assert answer["sha256"] == digest(data)
            assert client.read_response().body == b"hello"
            assert client.read_response().body == b"hello"

    rt.run(drive)


# ---- WSGI ------------------------------------------------------------------------


def test_wsgi_input_is_read_as_the_body_arrives(rt, tmp_path):
    assert IncrementalWSGI.stream_request_body is True
    port = serve_http(rt, IncrementalWSGI)
    log = tmp_path / "wsgi.log"
    log.write_text("")
    data = BLOCK * 2

    def drive():
        with Client(port) as client:
            client.send(build_request("POST", f"/?{log}", [("Content-Length", str(len(data)))]) + data[:1024])
            # The app sees its first piece while the rest is not sent.
            wait_for(lambda: log.read_text() == "first 1024\n", message="the app did not see the first piece")
            client.send(data[1024:])
            answer = json.loads(client.read_response().body)
            assert answer == {
                "length": len(data),
                "sha256": digest(data),
                "content_length": str(len(data)),
                "terminated": True,
            }
            client.send(build_request("POST", f"/?{log}", [("Transfer-Encoding", "chunked")]))
            client.send(chunked(data, [100, 5000]))
            answer = json.loads(client.read_response().body)
        assert answer["sha256"] == digest(data)
        assert answer["content_length"] is None and answer["terminated"] is True

    rt.run(drive)


# ---- chunk boundaries ------------------------------------------------------------

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def split_at(data, cuts):
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def test_bodies_cut_anywhere_read_back_the_same(rt, tmp_path):
    streamed, _ = serve(rt, tmp_path)
    buffered = serve_http(rt, Buffered)

    @SETTINGS
    @given(
        body=st.binary(max_size=20_000),
        framing=st.sampled_from(("length", "chunked")),
        sizes=st.lists(st.integers(1, 5000), max_size=6),
        cuts=st.lists(st.integers(0, 25_000), max_size=10),
        streaming=st.booleans(),
    )
    def check(body, framing, sizes, cuts, streaming):
        if framing == "chunked":
            wire = build_request("POST", "/astream", [("Transfer-Encoding", "chunked")]) + chunked(body, sizes)
        else:
            wire = build_request("POST", "/astream", [("Content-Length", str(len(body)))]) + body
        with Client(streamed if streaming else buffered) as client:
            for piece in split_at(wire + build_request("GET", "/hello"), cuts):
                client.send(piece)
                time.sleep(0.0005)
            answer = json.loads(client.read_response().body)
            assert (answer["length"], answer["sha256"]) == (len(body), digest(body))
            if not streaming:
                assert answer["chunks"] == (1 if body else 0)
            assert client.read_response().body == b"hello"

    rt.run(check, timeout=300)
