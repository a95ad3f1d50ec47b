"""Datagram protocol classes of test_endpoints_udp.py. They live in a module
of their own because that test imports hypothesis, which does not load in
the workers' interpreters (mode "interpreters"), where these classes are
found by module and name."""

import pyparallel as px
from conftest import report


class UdpEcho:
    def datagram_received(self, transport, data, addr):
        return data


class UdpLifecycle:
    """Reports every callback with what it saw."""

    def connection_made(self, transport):
        report(("made", px.is_parallel_thread(), transport.sockname[0]))

    def datagram_received(self, transport, data, addr):
        report(("datagram", data, addr[0]))
        if data == b"close":
            transport.close()
        return b"ack:" + data

    def connection_lost(self, transport, exc):
        report(("lost", exc))


class UdpGreeter:
    """A connected endpoint: greets its remote, reports what it hears and
    the errors of a remote port that nothing listens on."""

    def connection_made(self, transport):
        report(("made", transport.peername))
        return b"hello"

    def datagram_received(self, transport, data, addr):
        report(("datagram", data))

    def error_received(self, transport, exc):
        report(("error", type(exc).__name__))

    def connection_lost(self, transport, exc):
        report(("lost", exc))


class UdpFaulty:
    """Raises for b"boom", echoes everything else: the endpoint survives."""

    def datagram_received(self, transport, data, addr):
        if data == b"boom":
            raise ValueError("boom")
        return data
