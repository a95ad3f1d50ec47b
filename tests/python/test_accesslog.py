"""The access log of the command line (--access-log): one line per request,
written once, for HttpServer handlers, static files, streamed answers,
handler failures, the errors the server answers itself (a head it cannot
parse, a body too large), WSGI and ASGI apps; the common, combined and
JSON formats; standard error; and reopening on SIGUSR1 after a real
rename, as logrotate does."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import websockets.sync.client

from conftest import LOCALHOST, wait_for
from ops_helpers import OpsServer

# Apache's combined format: host ident user [time] "request" status bytes "referer" "agent"
COMBINED = re.compile(
    r'^(?P<host>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?$'
)


@pytest.fixture
def servers():
    started = []

    def start(*args, **kwargs):
        server = OpsServer(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def get(port, path, method="GET", headers=None, body=None, source=None):
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10, source_address=source)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def raw(port, data):
    """Sends bytes as they are; the server's answer."""
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the server then closes once it answered
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parsed(path):
    lines = path.read_text().splitlines()
    matches = [COMBINED.match(line) for line in lines]
    assert all(matches), [line for line, m in zip(lines, matches, strict=True) if m is None]
    return [m.groupdict() for m in matches]


def test_every_request_of_an_httpserver_app_is_logged_once(servers, tmp_path):
    log = tmp_path / "access.log"
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.html").write_bytes(b"<p>static</p>" * 10)
    server = servers("--app", "ops_apps:Api", "--root", str(root), "--access-log", str(log), "--max-body-size", "1000")
    port = server.port
    agent = {"User-Agent": 'probe "quoted"', "Referer": "http://example.org/from"}
    assert get(port, "/hello", headers=agent) == (200, b"hello")
    assert get(port, "/page.html")[0] == 200
    assert get(port, "/page.html", method="HEAD")[0] == 200
    assert get(port, "/nowhere")[0] == 404
    assert get(port, "/boom")[0] == 500
    assert get(port, "/stream") == (200, b"x" * 5000)
    assert get(port, "/upload", method="POST", body=b"x" * 10)[0] == 201
    assert get(port, "/upload", method="POST", body=b"x" * 2000)[0] == 413
    assert raw(port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # Pipelined on one connection: each logged on its own.
    answer = raw(
        port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    # A WebSocket upgrade is logged once, as its 101; its messages are not requests.
    with websockets.sync.client.connect(f"ws://{LOCALHOST}:{port}/ws", open_timeout=10) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
    server.stop()

    entries = parsed(log)
    seen = [(e["request"], e["status"], e["bytes"]) for e in entries]
    assert sorted(seen) == sorted(
        [
            ("GET /hello HTTP/1.1", "200", "5"),
            ("GET /page.html HTTP/1.1", "200", "130"),
            ("HEAD /page.html HTTP/1.1", "200", "-"),
            ("GET /nowhere HTTP/1.1", "404", "10"),
            ("GET /boom HTTP/1.1", "500", "22"),
            ("GET /stream HTTP/1.1", "200", "5000"),
            ("POST /upload HTTP/1.1", "201", "-"),
            ("POST /upload HTTP/1.1", "413", "18"),
            ("-", "400", "12"),
            ("GET /hello HTTP/1.1", "200", "5"),
            ("GET /hello HTTP/1.1", "200", "5"),
            ("GET /ws HTTP/1.1", "101", "-"),
        ]
    )
    assert all(e["host"] == LOCALHOST for e in entries)
    first = next(e for e in entries if e["referer"] == "http://example.org/from")
    assert first["agent"] == 'probe \\"quoted\\"'
    assert first["request"] == "GET /hello HTTP/1.1"


def test_a_request_the_server_stopped_under_is_logged_as_closed_without_response(servers, tmp_path):
    """A handler still waiting when the shutdown's grace runs out gets no
    answer, and its connection is closed: logged with nginx's 444."""
    log = tmp_path / "access.log"
    mark = tmp_path / "hang-started"
    server = servers(
        "--app", "ops_apps:Api", "--access-log", str(log), "--graceful-timeout", "1", env={"OPS_HANG_MARK": str(mark)}
    )
    with socket.create_connection((LOCALHOST, server.port), timeout=10) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(mark.exists, message="the handler did not start")
        server.stop()
        assert sock.recv(65536) == b""  # closed, nothing answered
    assert [(e["request"], e["status"], e["bytes"]) for e in parsed(log)] == [("GET /hang HTTP/1.1", "444", "-")]


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_wsgi_and_asgi_requests_are_logged(servers, tmp_path, interface):
    log = tmp_path / "access.log"
    server = servers(
        "--app",
        f"ops_apps:{interface}_app",
        "--interface",
        interface,
        "--access-log",
        str(log),
        "--access-log-format",
        "common",
    )
    assert get(server.port, "/a?q=1")[0] == 200
    assert get(server.port, "/missing")[0] == 404
    server.stop()
    entries = parsed(log)
    assert sorted((e["request"], e["status"]) for e in entries) == [
        ("GET /a?q=1 HTTP/1.1", "200"),
        ("GET /missing HTTP/1.1", "404"),
    ]
    # common: no referer or agent
    assert all(e["referer"] is None for e in entries)


def test_json_lines_carry_the_duration(servers, tmp_path):
    log = tmp_path / "access.log"
    server = servers("--app", "ops_apps:Api", "--access-log", str(log), "--access-log-format", "json")
    assert get(server.port, "/slow", headers={"User-Agent": "caf\u00e9".encode().decode("latin-1")})[0] == 200
    assert get(server.port, '/hello?x="y"')[0] == 200
    server.stop()
    # Each worker writes its own buffer: lines of two connections may come
    # in either order.
    hello, slow = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda e: e["path"])
    assert slow["method"] == "GET" and slow["path"] == "/slow" and slow["status"] == 200
    assert slow["bytes"] == 4 and slow["client"] == LOCALHOST and slow["version"] == "HTTP/1.1"
    assert slow["duration_ms"] >= 45, slow
    assert slow["referer"] is None
    assert slow["user_agent"] == "caf\u00c3\u00a9"  # the bytes as Latin-1 code points: valid JSON whatever comes
    assert hello["path"] == '/hello?x="y"' and hello["duration_ms"] < slow["duration_ms"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$", slow["time"])


def test_to_stderr_and_off_by_default(servers):
    server = servers("--app", "ops_apps:Api", "--access-log")
    assert get(server.port, "/hello")[0] == 200
    _, err = server.stop()
    assert re.search(r'^127\.0\.0\.1 - - \[[^]]+\] "GET /hello HTTP/1\.1" 200 5 "-" "-"$', err, re.M), err

    server = servers("--app", "ops_apps:Api")
    assert get(server.port, "/hello")[0] == 200
    _, err = server.stop()
    assert "GET /hello" not in err


def test_sigusr1_reopens_the_file_after_logrotate_renamed_it(servers, tmp_path):
    log = tmp_path / "access.log"
    server = servers("--app", "ops_apps:Api", "--access-log", str(log))
    for _ in range(3):
        assert get(server.port, "/hello")[0] == 200
    rotated = tmp_path / "access.log.1"
    os.rename(log, rotated)
    server.child.send_signal(signal.SIGUSR1)
    wait_for(log.exists, timeout=10, message="the log was not reopened")
    for _ in range(2):
        assert get(server.port, "/slow")[0] == 200
    # Lines reach the file within a second, without a shutdown.
    wait_for(lambda: log.read_text().count("\n") == 2, timeout=10)
    server.stop()
    assert [e["request"] for e in parsed(rotated)] == ["GET /hello HTTP/1.1"] * 3
    assert [e["request"] for e in parsed(log)] == ["GET /slow HTTP/1.1"] * 2


def test_help_lists_the_operations_flags():
    out = subprocess.run(
        [sys.executable, "-m", "pyparallel.http.server", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for flag in (
        "--access-log [PATH]",
        "--access-log-format {common,combined,json}",
        "--forwarded-allow-ips LIST",
        "--metrics ADDR:PORT",
    ):
        assert flag in out, flag


def test_a_log_that_cannot_be_opened_ends_the_server(tmp_path):
    with pytest.raises(AssertionError, match=r"--access-log: \[Errno 2\] No such file or directory"):
        OpsServer("--app", "ops_apps:Api", "--access-log", str(tmp_path / "missing" / "access.log"))
