"""px.server(host, port, backlog=...): its arguments and their misuse, the
address it binds (a clear OSError when it cannot), host names, and its
listening transport: nothing accepted before register, close() stops
accepting but keeps the open connections.
"""

import socket

import pytest

import pyparallel as px
from conftest import LOCALHOST, Echo, connect, recv_exactly, wait_for


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((None, 0), {}),
        ((b"127.0.0.1", 0), {}),
        ((LOCALHOST, "80"), {}),
        ((LOCALHOST, 1.5), {}),
        ((LOCALHOST, 0, 10), {}),  # backlog is keyword-only
        ((LOCALHOST, 0), {"backlog": "10"}),
        ((LOCALHOST,), {}),
        ((LOCALHOST, 0), {"nonsense": 1}),
    ],
)
def test_server_bad_argument_types(args, kwargs):
    with pytest.raises(TypeError):
        px.server(*args, **kwargs)


@pytest.mark.parametrize("port", [-1, 65536, 1 << 40])
def test_server_port_out_of_range(port):
    with pytest.raises(ValueError):
        px.server(LOCALHOST, port)


def test_port_in_use_names_the_address():
    with socket.socket() as other:
        other.bind((LOCALHOST, 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError) as info:
            px.server(LOCALHOST, port)
    message = str(info.value)
    assert LOCALHOST in message and str(port) in message, message


def test_second_server_on_the_same_port_is_refused():
    """Two px.server calls on one address must not silently share it (as
    SO_REUSEPORT would): a user expects the second to fail like any bind."""
    first = px.server(LOCALHOST, 0)
    try:
        port = first.sockname[1]
        with pytest.raises(OSError) as info:
            px.server(LOCALHOST, port)
        assert str(port) in str(info.value)
    finally:
        first.close()


def test_unresolvable_host_raises_oserror():
    with pytest.raises(OSError):
        px.server("no-such-host.invalid", 0)


def test_server_sockname_reports_the_bound_port():
    server = px.server(LOCALHOST, 0)
    try:
        host, port = server.sockname
        assert host == LOCALHOST
        assert 0 < port < 65536
    finally:
        server.close()


def test_server_on_all_addresses(rt):
    """host "" listens on every IPv4 address, 127.0.0.1 included."""
    port = rt.serve(Echo, host="")

    def driver():
        with connect(port) as sock:
            sock.sendall(b"any")
            return recv_exactly(sock, 3)

    assert rt.run(driver) == b"any"


def test_server_resolves_a_name(rt):
    port = rt.serve(Echo, host="localhost")

    def driver():
        family = socket.AF_INET6 if ":" in rt.servers[0].sockname[0] else socket.AF_INET
        host = rt.servers[0].sockname[0]
        with socket.socket(family) as sock:
            sock.settimeout(10)
            sock.connect((host, port))
            sock.sendall(b"named")
            return recv_exactly(sock, 5)

    assert rt.run(driver) == b"named"


def test_nothing_is_accepted_before_register(rt):
    """A server that is not registered yet leaves connections in the backlog;
    they are served once a protocol is registered."""
    server = px.server(LOCALHOST, 0)
    port = server.sockname[1]
    sock = connect(port)  # completes in the kernel's backlog
    try:
        sock.sendall(b"early")
        px.register(server, Echo)

        def driver():
            return recv_exactly(sock, 5)

        assert rt.run(driver) == b"early"
    finally:
        sock.close()


def test_listener_close_stops_accepting_but_keeps_connections(rt):
    server = px.server(LOCALHOST, 0)
    px.register(server, Echo)
    port = server.sockname[1]

    def driver():
        with connect(port) as kept:
            kept.sendall(b"a")
            assert recv_exactly(kept, 1) == b"a"
            server.close()
            server.close()  # harmless twice
            wait_for(lambda: _connect_is_refused(port), message="the closed listener still accepts")
            kept.sendall(b"still here")
            assert recv_exactly(kept, 10) == b"still here"

    rt.run(driver)


def _connect_is_refused(port):
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # The listener closed while this connection sat in its accept
        # queue: the closing is under way, not finished; ask again.
        return False
