"""Unix domain sockets: px.server(path=...) and px.client(path=...) with the
same protocol classes as TCP (echo, the addresses, sendfile), the socket
file's life (a stale one replaced, a live one refused, a file that is not a
socket kept, removed at close, umask), abstract names, relative paths, bad
arguments, and the HTTP server's --uds with a WSGI and an ASGI app.

The suite runs in every mode and on both I/O backends (PYPARALLEL_MODE,
PYPARALLEL_IO), so these cases do too.
"""

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

import pyparallel as px
from conftest import Echo, expected_mode, interrupt_and_expect_clean_exit, report, reports_until, run_bounded
from http_helpers import Client

SOCKET_TIMEOUT = 10.0
# sun_path less its NUL.
UNIX_PATH_MAX = 107


def unix_connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(SOCKET_TIMEOUT)
    sock.connect(path)
    return sock


def round_trip(path, data=b"ping"):
    with unix_connect(path) as sock:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            got += chunk
        return got


def leave_stale_socket(path):
    """A socket file bound and abandoned, as a crashed server leaves it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


# Protocol classes live at module level: mode interpreters' workers find
# them by name.


class NamingEcho:
    def connection_made(self, transport):
        report(("server", transport.sockname, transport.peername))

    def data_received(self, transport, data):
        transport.send(data)


class UnixClient:
    initial_bytes_to_send = b"over a unix socket"

    def __init__(self):
        self.received = b""

    def connection_made(self, transport):
        report(("client", transport.sockname, transport.peername))

    def data_received(self, transport, data):
        self.received += data
        if self.received == self.initial_bytes_to_send:
            report(("echoed", self.received))
            transport.close()

    def connection_lost(self, transport, exc):
        report(("lost", repr(exc)))


def test_echo_and_addresses(rt, tmp_path, reports):
    path = str(tmp_path / "echo.sock")
    server = px.server(path=path)
    assert server.sockname == path
    assert server.peername is None
    assert repr(server).startswith(f"<pyparallel.Transport listening on unix:{path!r}")
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    px.register(server, NamingEcho)
    px.register(px.client(path=path), UnixClient)

    def driver():
        events = reports_until(lambda item: item[0] == "lost")
        # A plain client as well, while the server runs.
        assert round_trip(path) == b"ping"
        events.append(reports_until(lambda item: item[0] == "server")[-1])
        return events

    events = rt.run(driver)
    assert ("server", path, "") in events  # the connecting socket has no name
    assert ("client", "", path) in events
    assert ("echoed", b"over a unix socket") in events
    assert events[events.index(("echoed", b"over a unix socket")) + 1] == ("lost", "None")
    # run() ended, the loop stopped, the listener closed: its file is gone.
    assert not os.path.exists(path)


class SendsAFile:
    path = None

    def connection_made(self, transport):
        transport.sendfile_ranged(b"<", self.path, b">", 2, 6)
        transport.close()


def test_sendfile_over_a_unix_socket(rt, tmp_path):
    data = tmp_path / "data"
    data.write_bytes(b"0123456789")
    path = str(tmp_path / "s")
    px.register(px.server(path=path), type("SendsAFile", (SendsAFile,), {"path": str(data)}))

    def driver():
        with unix_connect(path) as sock:
            return rt.recv_to_eof(sock)

    assert rt.run(driver) == b"<234567>"


def test_stale_socket_file_is_replaced(rt, tmp_path):
    path = str(tmp_path / "stale.sock")
    leave_stale_socket(path)
    px.register(px.server(path=path), Echo)
    assert rt.run(lambda: round_trip(path)) == b"ping"


def test_live_socket_is_refused_and_keeps_serving(rt, tmp_path):
    path = str(tmp_path / "live.sock")
    first = px.server(path=path)
    px.register(first, Echo)
    with pytest.raises(OSError) as info:
        px.server(path=path)
    assert info.value.errno == 98  # EADDRINUSE
    assert "a server accepts connections on this socket" in str(info.value)
    assert path in str(info.value)
    assert rt.run(lambda: round_trip(path)) == b"ping"


def test_a_file_that_is_not_a_socket_is_kept(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(FileExistsError) as info:
        px.server(path=str(path))
    assert "is not a socket" in str(info.value)
    assert path.read_text() == "keep me"


def test_close_removes_the_file_and_umask_applies(tmp_path):
    path = str(tmp_path / "mode.sock")
    old = os.umask(0o077)
    try:
        server = px.server(path=path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    px.register(server, Echo)
    server.close()
    run_bounded(10)  # nothing is registered any more: run() returns
    assert not os.path.exists(path)


def test_relative_path_and_pathlike(rt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = px.server(path="rel.sock")
    assert server.sockname == "rel.sock"
    px.register(server, Echo)
    assert rt.run(lambda: round_trip(str(tmp_path / "rel.sock"))) == b"ping"
    assert not (tmp_path / "rel.sock").exists()


def test_pathlike_client(rt, tmp_path, reports):
    path = tmp_path / "p.sock"
    px.register(px.server(path=path), NamingEcho)
    px.register(px.client(path=path), UnixClient)
    events = rt.run(lambda: reports_until(lambda item: item[0] == "lost"))
    assert ("echoed", b"over a unix socket") in events


def test_abstract_name(rt, reports):
    name = f"\0pyparallel-test-{os.getpid()}"
    server = px.server(path=name)
    assert server.sockname == name
    px.register(server, NamingEcho)

    def driver():
        got = round_trip(name)
        return got, reports_until(lambda item: item[0] == "server")[-1]

    got, seen = rt.run(driver)
    assert got == b"ping"
    assert seen == ("server", name, "")


class Lost:
    def connection_made(self, transport):
        report("made")

    def connection_lost(self, transport, exc):
        report(("lost", type(exc).__name__, getattr(exc, "errno", None)))


def test_client_of_a_missing_socket_loses_the_connection(tmp_path, reports):
    """As a refused TCP connect: connection_lost with the error, no
    connection_made, and run() then ends by itself."""
    px.register(px.client(path=str(tmp_path / "nobody")), Lost)
    run_bounded(10)
    assert reports.get_nowait() == ("lost", "FileNotFoundError", 2)


@pytest.mark.parametrize(
    "call, kwargs, error, words",
    [
        (px.server, {"host": "127.0.0.1", "port": 0, "path": "x.sock"}, ValueError, "not both"),
        (px.client, {"host": "127.0.0.1", "port": 80, "path": "x.sock"}, ValueError, "not both"),
        (px.server, {"port": 0, "path": "x.sock"}, ValueError, "not both"),
        (px.server, {"path": "/" + "x" * UNIX_PATH_MAX}, ValueError, f"at most {UNIX_PATH_MAX} bytes"),
        (px.client, {"path": "/" + "x" * UNIX_PATH_MAX}, ValueError, f"at most {UNIX_PATH_MAX} bytes"),
        (px.server, {"path": "\0" + "x" * (UNIX_PATH_MAX + 1)}, ValueError, f"at most {UNIX_PATH_MAX + 1} bytes"),
        (px.server, {"path": ""}, ValueError, "empty"),
        (px.server, {"path": "a\0b"}, ValueError, "NUL"),
        (px.server, {"path": 3}, TypeError, ""),
        (px.server, {}, TypeError, "path="),
        (px.client, {"host": "127.0.0.1"}, TypeError, "path="),
    ],
)
def test_bad_arguments(call, kwargs, error, words):
    with pytest.raises(error) as info:
        call(**kwargs)
    assert words in str(info.value)


def test_longest_path_fits(rt, tmp_path):
    # A path of exactly UNIX_PATH_MAX bytes, under tmp_path when it is short
    # enough (it usually is).
    base = str(tmp_path) + "/"
    if len(base) >= UNIX_PATH_MAX - 1:
        pytest.skip(f"the temporary directory's path is too long: {base}")
    path = base + "s" * (UNIX_PATH_MAX - len(base))
    assert len(os.fsencode(path)) == UNIX_PATH_MAX
    px.register(px.server(path=path), Echo)
    assert rt.run(lambda: round_trip(path)) == b"ping"


# ---- the HTTP server's --uds -------------------------------------------------

APPS = textwrap.dedent("""
    def wsgi(environ, start_response):
        body = "|".join(
            f"{key}={environ.get(key, '-')}" for key in ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT")
        ).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"client={scope['client']}|server={scope['server']}".encode()
        length = str(len(body)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
        await send({"type": "http.response.body", "body": body})
""")


class UnixHttpClient(Client):
    def __init__(self, path):
        self.sock = unix_connect(path)
        self.buffer = b""


@contextlib.contextmanager
def serve_uds(tmp_path, *args):
    """python -m pyparallel.http.server --uds with args: (child, path, line),
    the child killed on the way out if it still runs."""
    path = str(tmp_path / "http.sock")
    child = subprocess.Popen(
        [sys.executable, "-m", "pyparallel.http.server", "--uds", path, "--workers", "2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    line = child.stdout.readline().rstrip("\n")
    if not line.startswith(f"Serving HTTP on unix:{path}: "):
        child.kill()
        out, err = child.communicate(timeout=10)
        raise AssertionError(f"no startup line: {line!r}\nstdout: {out}\nstderr: {err}")
    try:
        yield child, path, line
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)


def stop(child, path):
    with UnixHttpClient(path) as client:
        assert client.request("GET", "/").status in (200, 404)
        interrupt_and_expect_clean_exit(child, client.sock, signal.SIGTERM)
    assert not os.path.exists(path)


def test_cli_serves_files_over_a_unix_socket(tmp_path):
    (tmp_path / "hello.txt").write_text("hello over uds")
    leave_stale_socket(tmp_path / "http.sock")
    with serve_uds(tmp_path) as (child, path, line):
        assert f", mode {expected_mode()}, io " in line
        with UnixHttpClient(path) as client:
            plaintext = client.request("GET", "/plaintext")
            file = client.request("GET", "/hello.txt")
        assert plaintext.body == b"Hello, World!"
        assert file.body == b"hello over uds"  # sendfile, over the Unix socket
        stop(child, path)


def test_cli_wsgi_and_asgi_addresses(tmp_path):
    """What gunicorn and uvicorn give over a Unix socket: REMOTE_ADDR "" and
    no REMOTE_PORT, SERVER_NAME and SERVER_PORT from the Host header; the
    ASGI scope's client and server None."""
    (tmp_path / "uds_apps.py").write_text(APPS)
    for app, expected in (
        ("uds_apps:wsgi", b"REMOTE_ADDR=|REMOTE_PORT=-|SERVER_NAME=example.test|SERVER_PORT=8000"),
        ("uds_apps:asgi", b"client=None|server=None"),
    ):
        with serve_uds(tmp_path, "--app", app) as (child, path, _):
            with UnixHttpClient(path) as client:
                response = client.request("GET", "/", headers=[("Host", "example.test:8000")], host=False)
            assert response.body == expected
            stop(child, path)


def test_cli_refuses_uds_with_bind_or_port(tmp_path):
    for extra in (["--port", "0"], ["--bind", "127.0.0.1"]):
        result = subprocess.run(
            [sys.executable, "-m", "pyparallel.http.server", "--uds", str(tmp_path / "x.sock"), *extra],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert "--uds listens on a Unix domain socket instead of --bind and --port" in result.stderr


def test_cli_live_socket_is_an_error(tmp_path):
    path = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(str(path))
        busy.listen()
        result = subprocess.run(
            [sys.executable, "-m", "pyparallel.http.server", "--uds", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on unix:{path}" in result.stderr
    assert "a server accepts connections on this socket" in result.stderr
