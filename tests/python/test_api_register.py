"""px.register(transport, protocol): what it accepts (a protocol class, a
server or client transport, by position or by name) and how it refuses the
rest with TypeError, ValueError or AsyncError.
"""

import pytest

import pyparallel as px
from conftest import LOCALHOST, Echo, Keep, connect, next_report, recv_exactly


def test_register_rejects_an_instance():
    server = px.server(LOCALHOST, 0)
    try:
        with pytest.raises(TypeError):
            px.register(server, Echo())
    finally:
        server.close()


@pytest.mark.parametrize("protocol", [None, "Echo", 42, lambda: Echo, print])
def test_register_rejects_a_non_class(protocol):
    server = px.server(LOCALHOST, 0)
    try:
        with pytest.raises(TypeError):
            px.register(server, protocol)
    finally:
        server.close()


@pytest.mark.parametrize("transport", [None, "127.0.0.1:80", object()])
def test_register_rejects_a_non_transport(transport):
    with pytest.raises(TypeError):
        px.register(transport, Echo)


def test_register_twice_raises_value_error():
    server = px.server(LOCALHOST, 0)
    try:
        px.register(server, Echo)
        with pytest.raises(ValueError):
            px.register(server, Echo)
    finally:
        server.close()


def test_register_a_closed_server_raises_async_error():
    server = px.server(LOCALHOST, 0)
    server.close()
    with pytest.raises(px.AsyncError):
        px.register(server, Echo)


def test_register_an_accepted_connection_raises_value_error(rt, reports):
    """An accepted connection's protocol is its server's."""
    port = rt.serve(Keep)

    def driver():
        with connect(port):
            accepted = next_report()
            with pytest.raises(ValueError):
                px.register(accepted, Echo)

    rt.run(driver)


def test_register_accepts_keyword_arguments(rt):
    """The README's example passes transport= and protocol= by name."""
    server = px.server(LOCALHOST, 0)
    px.register(transport=server, protocol=Echo)
    port = server.sockname[1]

    def driver():
        with connect(port) as sock:
            sock.sendall(b"by name")
            return recv_exactly(sock, 7)

    assert rt.run(driver) == b"by name"
