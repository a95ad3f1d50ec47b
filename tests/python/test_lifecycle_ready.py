"""Readiness and sockets from outside, with real processes: --ready-file and
--pid-file appear once the server serves and go at exit; with NOTIFY_SOCKET
set, systemd's protocol (a Unix datagram socket the test binds) hears
READY=1 with the MAINPID, then STOPPING=1 on SIGTERM; a listening socket
handed over the way systemd's socket activation does (descriptor 3,
LISTEN_FDS, LISTEN_PID) is served instead of --port, and one meant for
another PID is not taken; --reuse-port lets two instances share a port
(without it, a port in use is refused: test_http_cli.py).
"""

import os
import signal
import socket
import sys

from conftest import LOCALHOST, wait_for
from http_helpers import Client
from lifecycle_helpers import ServerProcess, write_app


def serve(tmp_path, *args, **kwargs):
    write_app(tmp_path, "v1")
    return ServerProcess("--app", "lifeapp:App", "--bind", LOCALHOST, *args, cwd=tmp_path, **kwargs)


def test_ready_and_pid_files(tmp_path):
    ready, pid = tmp_path / "ready", tmp_path / "run" / "server.pid"
    pid.parent.mkdir()
    process = serve(tmp_path, "--port", "0", "--ready-file", str(ready), "--pid-file", str(pid))
    try:
        wait_for(ready.exists, message="no ready file")
        assert ready.read_text() == pid.read_text() == f"{process.child.pid}\n"
        with Client(process.port) as client:
            assert client.request("GET", "/fast").body == b"v1"
        process.child.send_signal(signal.SIGTERM)
        assert process.child.wait(timeout=10) == 0
        assert not ready.exists() and not pid.exists()
    finally:
        process.kill()


def receive(sock):
    return sock.recv(4096).decode()


def test_sd_notify_ready_and_stopping(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(20)
        process = serve(tmp_path, "--port", "0", env={"NOTIFY_SOCKET": path})
        try:
            assert receive(listener) == f"READY=1\nMAINPID={process.child.pid}"
            process.child.send_signal(signal.SIGTERM)
            assert receive(listener) == "STOPPING=1"
            assert process.child.wait(timeout=10) == 0
        finally:
            process.kill()


def test_sd_notify_to_an_abstract_socket(tmp_path):
    name = f"pyparallel-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(20)
        process = serve(tmp_path, "--port", "0", env={"NOTIFY_SOCKET": "@" + name})
        try:
            assert receive(listener).startswith("READY=1\n")
        finally:
            process.kill()


# What systemd does between fork and exec for a socket-activated service.
ACTIVATE = """
import os, sys
fd, pid = int(sys.argv[1]), sys.argv[2]
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=pid or str(os.getpid()))
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def activated(tmp_path, sock, pid, *args):
    """The server started the way systemd starts a socket-activated service:
    the socket as descriptor 3, LISTEN_FDS=1 and LISTEN_PID (by default its
    own: exec keeps the PID)."""
    fd = sock.fileno()
    argv = [sys.executable, "-c", ACTIVATE, str(fd), pid, "-m", "pyparallel.http.server", "--app", "lifeapp:App"]
    write_app(tmp_path, "v1")
    return ServerProcess(argv=[*argv, *args], cwd=tmp_path, pass_fds=(fd,))


def test_socket_activation_serves_the_inherited_socket(tmp_path):
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        # --port 0 is what it would listen on without the socket.
        process = activated(tmp_path, sock, "", "--port", "0")
        try:
            assert process.port == port
            sock.close()  # the server holds its own descriptor
            with Client(port) as client:
                assert client.request("GET", "/fast").body == b"v1"
            process.child.send_signal(signal.SIGTERM)
            assert process.child.wait(timeout=10) == 0
        finally:
            process.kill()


def test_sockets_for_another_pid_are_not_taken(tmp_path):
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        sock.listen()
        process = activated(tmp_path, sock, "1", "--bind", LOCALHOST, "--port", "0")
        try:
            assert process.port != sock.getsockname()[1]
        finally:
            process.kill()


def test_reuse_port_shares_a_port_between_instances(tmp_path):
    first = serve(tmp_path, "--port", "0", "--reuse-port")
    second = None
    try:
        second = serve(tmp_path, "--port", str(first.port), "--reuse-port")
        assert second.port == first.port
        pids = {str(p.child.pid) for p in (first, second)}
        seen = set()
        for _ in range(200):
            with Client(first.port) as client:  # a new connection each time
                seen.add(client.request("GET", "/pid").body.decode())
            if seen == pids:
                break
        assert seen == pids
        # One instance goes; the port stays served by the other.
        first.child.send_signal(signal.SIGTERM)
        assert first.child.wait(timeout=10) == 0
        for _ in range(10):
            with Client(second.port) as client:
                assert client.request("GET", "/pid").body.decode() == str(second.child.pid)
    finally:
        first.kill()
        if second is not None:
            second.kill()
