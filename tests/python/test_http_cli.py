"""The command line, `python -m pyparallel.http.server`, in a subprocess:
its one startup line (address, workers, mode, I/O backend), the directory
and the built-in routes it serves, --app with limit flags, --workers and
--io taking effect, errors for bad arguments, a clean exit on SIGTERM and
SIGINT, and a short wrk load with no errors and no non-2xx answers.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig

import pytest

from conftest import LOCALHOST, expected_mode, interrupt_and_expect_clean_exit, io_uring_unavailable
from http_helpers import Client, build_request, fetch

STARTUP = re.compile(
    r"^Serving HTTP on (?P<host>\S+) port (?P<port>\d+) \(http://\S+/\): app (?P<app>\S+), "
    r"interface (?P<interface>\w+), (?P<root>.+), "
    r"(?P<workers>\d+) workers, mode (?P<mode>\w+), io (?P<io>\w+)$"
)
START_TIMEOUT = 20


class CliServer:
    """python -m pyparallel.http.server with args, on port 0, in cwd."""

    def __init__(self, *args, cwd=None, env=None):
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pyparallel.http.server", "--bind", LOCALHOST, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        line = self.child.stdout.readline()
        match = STARTUP.match(line.rstrip("\n"))
        if match is None:
            self.child.kill()
            out, err = self.child.communicate(timeout=10)
            raise AssertionError(f"no startup line: {line!r}\nstdout: {out}\nstderr: {err}")
        self.line = line
        self.info = match.groupdict()
        self.port = int(self.info["port"])

    def stop(self, signum=signal.SIGTERM):
        """Signals the server with a connection open; it must close it and
        exit 0 quickly. Returns (stdout, stderr)."""
        with Client(self.port) as client:
            assert client.request("GET", "/").status in (200, 404)  # the connection is being served
            return interrupt_and_expect_clean_exit(self.child, client.sock, signum)

    def kill(self):
        if self.child.poll() is None:
            self.child.kill()
            self.child.communicate(timeout=10)


@pytest.fixture
def cli():
    servers = []

    def start(*args, **kwargs):
        server = CliServer(*args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def test_serves_the_current_directory_and_the_builtin_routes(cli, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the directory")
    (tmp_path / "sub").mkdir()
    server = cli("--workers", "2", cwd=tmp_path)
    assert server.info["host"] == LOCALHOST
    assert server.info["workers"] == "2"
    assert server.info["app"] == "pyparallel.http.server:FileServer"
    assert server.info["root"] == f"root {os.path.realpath(tmp_path)}"
    assert server.info["mode"] == expected_mode()
    assert server.info["io"] in ("io_uring", "epoll")
    with Client(server.port) as client:
        plaintext = client.request("GET", "/plaintext")
        json_ = client.request("GET", "/json")
        file = client.request("GET", "/hello.txt")
        listing = client.request("GET", "/")
        redirect = client.request("GET", "/sub")
    assert (plaintext.body, plaintext.header("Content-Type")) == (b"Hello, World!", "text/plain")
    assert (json_.body, json_.header("Content-Type")) == (b'{"message":"Hello, World!"}', "application/json")
    assert file.body == b"hello from the directory"
    assert b'<a href="hello.txt">hello.txt</a>' in listing.body
    assert (redirect.status, redirect.header("Location")) == (301, "/sub/")
    out, err = server.stop(signal.SIGTERM)
    assert out == ""  # the startup line was the only output
    assert "Traceback" not in err


def test_sigint_stops_it_cleanly(cli, tmp_path):
    server = cli(cwd=tmp_path)
    server.stop(signal.SIGINT)


@pytest.mark.parametrize("io, name", [("epoll", "epoll"), ("uring", "io_uring")])
def test_workers_and_io_flags_take_effect(cli, tmp_path, io, name):
    if io == "uring" and io_uring_unavailable():
        pytest.skip(io_uring_unavailable())
    other_io = "uring" if io == "epoll" else "epoll"
    server = cli("--workers", "3", "--io", io, cwd=tmp_path, env={"PYPARALLEL_WORKERS": "1", "PYPARALLEL_IO": other_io})
    assert (server.info["workers"], server.info["io"]) == ("3", name)
    server.stop()


MODES_OF_THIS_BUILD = ("threads",) if sysconfig.get_config_var("Py_GIL_DISABLED") else ("interpreters", "gil")


@pytest.mark.parametrize("mode", MODES_OF_THIS_BUILD)
def test_mode_flag_takes_effect(cli, tmp_path, mode):
    other = next((m for m in ("threads", "interpreters", "gil") if m != mode), mode)
    server = cli("--mode", mode, "--workers", "2", cwd=tmp_path, env={"PYPARALLEL_MODE": other})
    assert server.info["mode"] == mode
    with Client(server.port) as client:
        assert client.request("GET", "/plaintext").body == b"Hello, World!"
    server.stop()


def test_a_mode_this_build_lacks_exits_2_naming_the_modes_it_has(tmp_path):
    missing = "interpreters" if sysconfig.get_config_var("Py_GIL_DISABLED") else "threads"
    result = run_cli("--mode", missing, "--bind", LOCALHOST, "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result
    assert f"mode '{missing}' needs" in result.stderr
    assert "Traceback" not in result.stderr


def test_root_flag(cli, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>site</p>")
    server = cli("--root", str(tmp_path / "site"), cwd="/")
    assert fetch(server.port, "GET", "/").body == b"<p>site</p>"
    assert fetch(server.port, "GET", "/plaintext").body == b"Hello, World!"
    server.stop()


APP_MODULE = """
from pyparallel.http import HttpServer, route

class Api(HttpServer):
    def ping(self, request):
        return "pong"

    @route("/upload", methods=("POST",))
    def upload(self, request):
        return {"size": len(request.body)}

class NotAnApp:
    pass
"""


def test_app_flag_with_limit_flags(cli, tmp_path):
    (tmp_path / "myapp.py").write_text(APP_MODULE)
    (tmp_path / "file.txt").write_text("static")
    server = cli("--app", "myapp:Api", "--max-body-size", "100", "--keepalive-timeout", "0.5", cwd=tmp_path)
    assert server.info["app"] == "myapp:Api"
    assert server.info["root"] == "no static files"
    with Client(server.port) as client:
        assert client.request("GET", "/ping").body == b"pong"
        assert client.request("POST", "/upload", body=b"x" * 100).body == b'{"size":100}'
        client.send(build_request("POST", "/upload", headers=[("Content-Length", "101")]))
        assert client.read_response().status == 413
    assert fetch(server.port, "GET", "/file.txt").status == 404  # an --app serves no files without --root
    assert fetch(server.port, "GET", "/plaintext").status == 404  # nor the built-in routes
    with Client(server.port) as idle:
        assert idle.request("GET", "/ping").status == 200
        assert idle.at_eof(timeout=5)  # the keep-alive timeout of 0.5 s took effect
    server.stop()


def test_app_flag_with_root(cli, tmp_path):
    (tmp_path / "myapp.py").write_text(APP_MODULE)
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "file.txt").write_text("static")
    server = cli("--app", "myapp:Api", "--root", "static", cwd=tmp_path)
    assert fetch(server.port, "GET", "/file.txt").body == b"static"
    assert fetch(server.port, "GET", "/ping").body == b"pong"
    server.stop()


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pyparallel.http.server", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--app", "nosuchmodule:App"], "cannot import nosuchmodule"),
        (["--app", "myapp:Missing"], "myapp has no Missing"),
        (["--app", "myapp:NotAnApp"], "not an HttpServer subclass"),
        (["--app", "myapp"], "MODULE:ATTR"),
        (["--root", "/nonexistent/dir"], "not a directory"),
        (["--port", "70000"], "within 0..65535"),
        (["--workers", "0"], "greater than 0"),
        (["--io", "kqueue"], "invalid choice"),
        (["--mode", "processes"], "invalid choice"),
        (["--max-body-size", "-1"], "greater than 0"),
        (["--header-timeout", "soon"], "not a number"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, args, message):
    (tmp_path / "myapp.py").write_text(APP_MODULE)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_exits_1_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--bind", LOCALHOST, "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1, result
    assert f"cannot listen on {LOCALHOST} port {port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (Debian package wrk)")
@pytest.mark.timeout(60)
def test_wrk_load_has_no_errors(cli, tmp_path):
    (tmp_path / "file.txt").write_bytes(b"f" * 4096)
    server = cli("--workers", "2", cwd=tmp_path)
    for path in ("/plaintext", "/json", "/file.txt"):
        result = subprocess.run(
            ["wrk", "-t1", "-c16", "-d2s", f"http://{LOCALHOST}:{server.port}{path}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result
        assert "Socket errors" not in result.stdout, result.stdout
        assert "Non-2xx or 3xx responses" not in result.stdout, result.stdout
        requests = int(re.search(r"(\d+) requests in", result.stdout).group(1))
        assert requests > 100, result.stdout
    server.stop()
