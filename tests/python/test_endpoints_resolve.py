"""px.client(name, port): names are resolved off the workers, by the
engine's resolver threads. A name from /etc/hosts connects; a name that
cannot resolve ends in connection_lost(socket.gaierror) with the resolver's
message; and a name whose name server answers slowly stalls neither the
caller of register() nor the connections of the only worker.

The slow name needs a name server we control and no network: a small DNS
server on a 127.x.y.z address, made the system's resolver for one child
process by bind-mounting a resolv.conf over /etc/resolv.conf in a mount
namespace of its own (unshare -m, which needs root: skipped otherwise).
"""

import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyparallel as px
from conftest import Echo, FileLogged, logged_lines, logging_to, report, reports_until, run_bounded

# One label longer than DNS allows: glibc refuses the name without asking any
# name server, so this failure needs no network.
UNRESOLVABLE = "a" * 64 + ".invalid"
EAI_NONAME = -2


class NamedClient:
    initial_bytes_to_send = b"by name"

    def connection_made(self, transport):
        report(("made", transport.peername))

    def data_received(self, transport, data):
        report(("data", data))
        transport.close()

    def connection_lost(self, transport, exc):
        report(("lost", repr(exc)))


def test_a_name_from_etc_hosts(rt, reports):
    port = rt.serve(Echo, host="localhost")  # the address the name resolves to
    px.register(px.client("localhost", port), NamedClient)
    events = rt.run(lambda: reports_until(lambda item: item[0] == "lost"))
    made = events[0]
    assert made[0] == "made" and made[1][1] == port and made[1][0] in ("127.0.0.1", "::1")
    assert ("data", b"by name") in events
    assert events[-1] == ("lost", "None")


class Unresolved(FileLogged):
    def connection_made(self, transport):
        self.log("made")

    def connection_lost(self, transport, exc):
        self.log(f"lost {type(exc).__module__}.{type(exc).__qualname__} {exc.errno} {exc.strerror}")


def test_a_name_that_does_not_resolve(tmp_path):
    """As a refused connect: connection_lost with the error (the resolver's
    code and message, and the name), no connection_made, and run() then
    ends by itself. client() and register() themselves do not fail."""
    log = tmp_path / "events"
    transport = px.client(UNRESOLVABLE, 80)
    assert repr(transport) == f"<pyparallel.Transport to {UNRESOLVABLE}:80 open>"
    px.register(transport, logging_to(Unresolved, log))
    run_bounded(10)
    assert logged_lines(log) == [
        f"lost socket.gaierror {EAI_NONAME} Name or service not known (resolving {UNRESOLVABLE!r})"
    ]


def test_host_name_too_long_for_dns():
    with pytest.raises(ValueError, match="host is 300 bytes long"):
        px.client("a" * 300, 80)


# ---- a slow name server --------------------------------------------------------

SLOW_SECONDS = 2.0


def _dns_answer(query, address):
    """The answer to one DNS query: slow.px.test and fast.px.test are
    127.0.0.1 (slow after SLOW_SECONDS), every other name does not exist."""
    (qid,) = struct.unpack("!H", query[:2])
    at, labels = 12, []
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode())
        at += 1 + query[at]
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
    question = query[12 : at + 5]
    name = ".".join(labels).lower()
    if name == "slow.px.test":
        time.sleep(SLOW_SECONDS)
    known = name in ("slow.px.test", "fast.px.test")
    answers = b""
    if known and qtype == 1:  # A
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    flags = 0x8180 | (0 if known else 3)  # a response, recursion; NXDOMAIN for the rest
    header = struct.pack("!HHHHHH", qid, flags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def _serve_dns(sock):
    while True:
        try:
            query, peer = sock.recvfrom(512)
        except OSError:
            return  # closed: the test is over

        def answer(query=query, peer=peer):
            try:
                sock.sendto(_dns_answer(query, peer), peer)
            except OSError:
                pass

        threading.Thread(target=answer, daemon=True).start()


@pytest.fixture
def name_server(tmp_path):
    """A resolv.conf naming a DNS server this test runs on 127.x.y.z:53."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare -m to give a child process its own resolv.conf")
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    threading.Thread(target=_serve_dns, args=(sock,), daemon=True).start()
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {address}\noptions timeout:10 attempts:1\n")
    yield conf
    sock.close()


SLOW_PROGRAM = textwrap.dedent(
    """
    import socket, sys, threading, time
    import pyparallel as px

    class Echo:
        def data_received(self, transport, data):
            transport.send(data)

    class Slow:
        initial_bytes_to_send = b"slow"

        def connection_made(self, transport):
            print("made", time.monotonic(), transport.peername[0], flush=True)

        def data_received(self, transport, data):
            print("data", data.decode(), flush=True)
            transport.close()

    class Missing:
        def connection_lost(self, transport, exc):
            print("missing", type(exc).__name__, exc.errno, flush=True)

    def drive(port):
        # Round trips on the only worker while the slow name resolves.
        worst = 0.0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                started = time.monotonic()
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.01)
        print("worst round trip", worst, flush=True)
        time.sleep(2 * float(sys.argv[1]))
        px.stop()

    if __name__ == "__main__":
        server = px.server("127.0.0.1", 0)
        port = server.sockname[1]
        px.register(server, Echo)
        registered = time.monotonic()
        px.register(px.client("slow.px.test", port), Slow)
        px.register(px.client("missing.px.test", port), Missing)
        print("register", registered, time.monotonic() - registered, flush=True)
        threading.Thread(target=drive, args=(port,)).start()
        px.run()
    """
)


def test_a_slow_name_stalls_no_other_connection(tmp_path, name_server):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_PROGRAM)
    result = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"',
            "sh",
            str(name_server),
            sys.executable,
            str(script),
            str(SLOW_SECONDS),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYPARALLEL_WORKERS": "1"},
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    facts = {line.split()[0]: line.split() for line in lines}
    assert float(facts["register"][2]) < 0.5, lines  # register() did not wait for the name
    assert float(facts["worst"][3]) < 0.5, lines  # nor did the worker's other connection
    assert facts["missing"] == ["missing", "gaierror", str(EAI_NONAME)], lines
    made = facts["made"]
    assert float(made[1]) - float(facts["register"][1]) >= SLOW_SECONDS * 0.9, lines
    assert made[2] == "127.0.0.1", lines
    assert facts["data"] == ["data", "slow"], lines
    # The fast connection's round trips were over before the slow name resolved.
    assert lines.index(next(line for line in lines if line.startswith("worst"))) < lines.index(" ".join(made))
