"""Hardening of file sends (issue 16): a FIFO or other non-regular file is
refused at once instead of blocking open(2) forever, and a range whose end
does not fit in 64 bits is a ValueError, not undefined behaviour (the
extension runs under UBSan in make test-py-gil-asan).
"""

import os
import time

import pytest

import pyparallel as px
from conftest import connect, next_report, recv_exactly, report
from http_helpers import Client, serve_http
from pyparallel.http import HttpServer, Response, route


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return str(path)


class Sends:
    """Runs a sendfile call on request and reports what it raised:
    "fifo PATH", "range PATH OFFSET NBYTES"."""

    lines_mode = True

    def lines_received(self, transport, line):
        words = line.decode().split()
        started = time.monotonic()
        try:
            if words[0] == "fifo":
                transport.sendfile(b"", words[1], b"")
            else:
                transport.sendfile_ranged(b"", words[1], b"", int(words[2]), int(words[3]))
        except Exception as exc:
            report((exc, time.monotonic() - started))
            return b"error\n"
        return b"sent\n"


def test_sendfile_of_a_fifo_is_refused_promptly(rt, reports, fifo, tmp_path):
    port = rt.serve(Sends)
    regular = tmp_path / "regular"
    regular.write_bytes(b"abc")

    def driver():
        with connect(port) as sock:
            sock.sendall(b"fifo %s\n" % fifo.encode())
            assert recv_exactly(sock, 6) == b"error\n"
            refused = next_report()
            # The connection and the server carry on.
            sock.sendall(b"range %s 0 3\n" % str(regular).encode())
            assert recv_exactly(sock, 8) == b"abcsent\n"
        return refused

    (exc, seconds) = rt.run(driver)
    assert isinstance(exc, ValueError), repr(exc)
    assert fifo in str(exc) and "only regular files" in str(exc)
    assert seconds < 1.0


@pytest.mark.parametrize("offset, nbytes", [(2**63 - 1, 1), (1, 2**63 - 1), (2**62, 2**62)])
def test_sendfile_ranged_end_past_64_bits_is_a_value_error(rt, reports, tmp_path, offset, nbytes):
    path = tmp_path / "small"
    path.write_bytes(b"0123456789")
    port = rt.serve(Sends)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"range %s %d %d\n" % (str(path).encode(), offset, nbytes))
            assert recv_exactly(sock, 6) == b"error\n"
        return next_report()

    (exc, _) = rt.run(driver)
    assert isinstance(exc, ValueError), repr(exc)
    assert "past the end" in str(exc)


class FifoApp(HttpServer):
    fifo_path = None

    @route("/fifo")
    def fifo(self, request):
        return Response.file(self.fifo_path)

    def plaintext(self, request):
        return b"Hello, World!"


def test_response_file_of_a_fifo_is_404(rt, fifo):
    port = serve_http(rt, FifoApp, fifo_path=fifo)

    def driver():
        with Client(port) as client:
            started = time.monotonic()
            response = client.request("GET", "/fifo")
            seconds = time.monotonic() - started
            after = client.request("GET", "/plaintext")
        return response.status, seconds, after.body

    status, seconds, after = rt.run(driver)
    assert status == 404 and seconds < 1.0
    assert after == b"Hello, World!"


def test_shared_buffer_from_a_fifo_is_refused_promptly(fifo):
    started = time.monotonic()
    with pytest.raises(ValueError, match="regular file"):
        px.SharedBuffer.from_file(fifo)
    assert time.monotonic() - started < 1.0
