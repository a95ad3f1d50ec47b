"""px.datagram_endpoint: UDP endpoints on real sockets on the loopback,
in the mode and on the I/O backend under test. Datagrams of every size up to
the largest UDP payload come back whole; connection_made runs first on a
worker and connection_lost last; a connected endpoint greets its remote and
hears a closed port's ICMP error; misuse raises clear errors; a callback
that raises is logged and the endpoint goes on.
"""

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyparallel as px
from conftest import LOCALHOST, run_bounded
from udp_protocols import UdpEcho, UdpFaulty, UdpGreeter, UdpLifecycle

MAX_IPV4_PAYLOAD = 65507


def udp_socket(family=socket.AF_INET, host=LOCALHOST):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((host, 0))
    return sock


def pump(reports, count, timeout=10.0):
    """The next count items reported, running the main thread's queue."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {got} reported"
        px.run_once(timeout=0.05)
        while not reports.empty() and len(got) < count:
            got.append(reports.get_nowait())
    return got


def finish(*endpoints):
    for endpoint in endpoints:
        endpoint.close()
    run_bounded(15)


def test_datagrams_of_any_size_come_back_whole():
    endpoint = px.datagram_endpoint(UdpEcho, local_addr=(LOCALHOST, 0))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(size=st.one_of(st.integers(0, 2048), st.integers(MAX_IPV4_PAYLOAD - 2048, MAX_IPV4_PAYLOAD)))
    def echoed_whole(size):
        with udp_socket() as sock:
            payload = bytes(i % 251 for i in range(size))
            sock.sendto(payload, endpoint.sockname)
            data, addr = sock.recvfrom(1 << 17)
            assert data == payload
            assert addr == endpoint.sockname

    try:
        echoed_whole()
    finally:
        finish(endpoint)


def test_lifecycle_runs_on_a_worker_in_order(reports):
    endpoint = px.datagram_endpoint(UdpLifecycle, local_addr=(LOCALHOST, 0))
    host, port = endpoint.sockname
    assert host == LOCALHOST and port > 0 and endpoint.peername is None
    assert repr(endpoint) == f"<pyparallel.DatagramTransport {host}:{port}>"
    with udp_socket() as sock:
        sock.sendto(b"one", endpoint.sockname)
        assert sock.recv(100) == b"ack:one"
        endpoint.sendto(b"direct", sock.getsockname())
        assert sock.recv(100) == b"direct"
        sock.sendto(b"close", endpoint.sockname)  # its answer is dropped: closed
    assert pump(reports, 4) == [
        ("made", True, LOCALHOST),
        ("datagram", b"one", LOCALHOST),
        ("datagram", b"close", LOCALHOST),
        ("lost", None),
    ]
    with pytest.raises(px.AsyncError):
        endpoint.sendto(b"late", (LOCALHOST, port))
    run_bounded(15)


def test_connected_endpoint_greets_and_hears_its_remote(reports):
    with udp_socket() as peer:
        endpoint = px.datagram_endpoint(UdpGreeter, remote_addr=peer.getsockname())
        assert peer.recv(100) == b"hello"
        assert endpoint.peername == peer.getsockname()
        endpoint.sendto(b"no address needed")
        assert peer.recv(100) == b"no address needed"
        peer.sendto(b"reply", endpoint.sockname)
        assert pump(reports, 2) == [("made", peer.getsockname()), ("datagram", b"reply")]
        finish(endpoint)
        assert pump(reports, 1) == [("lost", None)]


def test_a_closed_remote_port_is_reported(reports):
    with udp_socket() as gone:
        closed = gone.getsockname()
    endpoint = px.datagram_endpoint(UdpGreeter, remote_addr=closed)
    assert pump(reports, 1) == [("made", closed)]
    # The greeting's ICMP answer reaches error_received, or a later send.
    try:
        for _ in range(3):
            endpoint.sendto(b"anyone?")
    except ConnectionRefusedError:
        pass
    else:
        assert pump(reports, 1) == [("error", "ConnectionRefusedError")]
    finish(endpoint)


def test_ipv6_loopback(reports):
    try:
        probe = udp_socket(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with probe:
        endpoint = px.datagram_endpoint(UdpEcho, local_addr=("::1", 0))
        assert endpoint.sockname[0] == "::1"
        probe.sendto(b"six", endpoint.sockname)
        assert probe.recv(100) == b"six"
        endpoint.sendto(b"direct", probe.getsockname()[:2])
        assert probe.recv(100) == b"direct"
        finish(endpoint)


def test_a_raising_callback_is_logged_and_the_endpoint_goes_on(pxlog):
    before = px.stats()["errors"]
    endpoint = px.datagram_endpoint(UdpFaulty, local_addr=(LOCALHOST, 0))
    with udp_socket() as sock:
        sock.sendto(b"boom", endpoint.sockname)
        sock.sendto(b"fine", endpoint.sockname)
        assert sock.recv(100) == b"fine"
    assert px.stats()["errors"] == before + 1
    finish(endpoint)
    assert "UdpFaulty.datagram_received" in pxlog.text


def test_an_endpoint_keeps_run_going_until_stop(reports):
    endpoint = px.datagram_endpoint(UdpLifecycle, local_addr=(LOCALHOST, 0))
    px.timer(0.2, px.stop)
    assert run_bounded(15) >= 0.15
    assert [item for item in pump(reports, 2)] == [("made", True, LOCALHOST), ("lost", None)]
    with pytest.raises(px.AsyncError):
        endpoint.sendto(b"x", (LOCALHOST, 9))
    assert isinstance(px.stats()["datagrams_dropped"], int)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({}, ValueError),
        ({"local_addr": LOCALHOST}, TypeError),
        ({"local_addr": (LOCALHOST, "0")}, TypeError),
        ({"local_addr": (LOCALHOST, 70000)}, ValueError),
        ({"local_addr": ("no-such-host.invalid", 0)}, socket.gaierror),
    ],
)
def test_bad_endpoint_arguments(kwargs, error):
    with pytest.raises(error):
        px.datagram_endpoint(UdpEcho, **kwargs)


def test_misuse_of_an_endpoint():
    with pytest.raises(TypeError, match="must be a class"):
        px.datagram_endpoint(UdpEcho(), local_addr=(LOCALHOST, 0))
    endpoint = px.datagram_endpoint(UdpEcho, local_addr=(LOCALHOST, 0))
    with pytest.raises(OSError):
        px.datagram_endpoint(UdpEcho, local_addr=endpoint.sockname)  # in use
    with pytest.raises(ValueError, match="numeric"):
        endpoint.sendto(b"x", ("localhost", 9))
    with pytest.raises(OSError):
        endpoint.sendto(b"x")  # not connected: no address
    with pytest.raises(TypeError):
        endpoint.sendto(42, (LOCALHOST, 9))
    with pytest.raises(OSError):
        endpoint.sendto(b"x" * 70000, (LOCALHOST, 9))
    with pytest.raises(TypeError):
        type(endpoint)()
    finish(endpoint)
