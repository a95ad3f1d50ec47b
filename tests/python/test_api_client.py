"""px.client(host, port): its arguments and their misuse, a round trip with
a pyparallel server, a refused connection (connection_lost with
ConnectionRefusedError, no connection_made), and a server that is not
pyparallel.
"""

import socket

import pytest

import pyparallel as px
from conftest import (
    LOCALHOST,
    Echo,
    FileLogged,
    logged_lines,
    logging_to,
    plain_server,
    report,
    reports_until,
    run_bounded,
)

# Protocol classes and functions given to the runtime are at module level,
# so that the tests run in mode "interpreters" too (a worker's interpreter
# finds them by name). What callbacks see reaches the test through conftest's
# report() while run() runs, or through a file (conftest's log_line) where
# the test looks only once run() has returned.


@pytest.mark.parametrize("port", [-1, 65536])
def test_client_port_out_of_range(port):
    with pytest.raises(ValueError):
        px.client(LOCALHOST, port)


@pytest.mark.parametrize("args", [(None, 80), (LOCALHOST, "80"), (LOCALHOST,)])
def test_client_bad_argument_types(args):
    with pytest.raises(TypeError):
        px.client(*args)


class RoundTripClient:
    initial_bytes_to_send = b"round trip"

    def __init__(self):
        self.received = b""

    def data_received(self, transport, data):
        report(data)
        self.received += data
        if self.received == b"round trip":
            transport.close()

    def connection_lost(self, transport, exc):
        report(("lost", exc))


def test_client_connects_and_exchanges_data(rt, reports):
    port = rt.serve(Echo)
    px.register(px.client(LOCALHOST, port), RoundTripClient)

    def driver():
        return reports_until(lambda item: isinstance(item, tuple))

    received = rt.run(driver)
    assert b"".join(r for r in received if isinstance(r, bytes)) == b"round trip"
    assert received[-1] == ("lost", None)


class RefusedClient(FileLogged):
    def connection_made(self, transport):
        self.log("made")

    def connection_lost(self, transport, exc):
        self.log(f"lost {type(exc).__name__} {isinstance(exc, ConnectionRefusedError)}")


def test_client_connection_refused(tmp_path):
    """A failed connect ends in connection_lost(ConnectionRefusedError);
    connection_made never runs, and run() then ends by itself."""
    log = tmp_path / "events"
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        px.register(px.client(LOCALHOST, port), logging_to(RefusedClient, log))
        run_bounded(10)
    assert logged_lines(log) == ["lost ConnectionRefusedError True"]


class PlainServerClient(FileLogged):
    def connection_made(self, transport):
        self.log(f"made {transport.peername[0]} {transport.peername[1]}")

    def data_received(self, transport, data):
        self.log(f"data {data.hex()}")

    def connection_lost(self, transport, exc):
        self.log(f"lost {exc!r}")


def test_client_of_a_plain_socket_server(tmp_path):
    """px.client against a server that is not pyparallel: greeting, EOF."""
    log = tmp_path / "events"
    with plain_server(lambda conn: conn.sendall(b"hello from a plain server")) as port:
        px.register(px.client(LOCALHOST, port), logging_to(PlainServerClient, log))
        run_bounded(10)
    events = logged_lines(log)
    assert events[0] == f"made {LOCALHOST} {port}"
    data = b"".join(bytes.fromhex(e.split()[1]) for e in events if e.startswith("data "))
    assert data == b"hello from a plain server"
    assert events[-1] == "lost None"
