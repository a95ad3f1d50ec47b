"""Shutdown is bounded even when a handler never returns.

The HTTP server runs in a subprocess with a handler that blocks forever.
The loop's stop waits for every callback to return, so without a bound a
SIGTERM never ended the process and a second SIGTERM or SIGINT was
ignored: only SIGKILL did. Now:
  - SIGTERM: the process exits once --graceful-timeout has passed (status
    1, a line on stderr saying why);
  - SIGTERM or SIGINT again during the shutdown: it exits at once (status
    128 + the signal's number, a line on stderr);
  - with nothing blocked, SIGTERM still exits 0 at once.
"""

import signal
import time

import pytest

from conftest import wait_for
from http_helpers import Client, build_request
from test_http_cli import CliServer

BLOCKING_APP = """
import os
import threading

from pyparallel.http import HttpServer

class Stuck(HttpServer):
    def block(self, request):
        # Tell the test the handler runs, then never return.
        with open(os.environ["STUCK_MARKER"], "w") as marker:
            marker.write("in the handler")
        threading.Event().wait()

    def ping(self, request):
        return "pong"
"""


@pytest.fixture
def stuck_server(tmp_path):
    (tmp_path / "stuckapp.py").write_text(BLOCKING_APP)
    marker = tmp_path / "marker"
    servers = []
    clients = []

    def start(*args):
        server = CliServer("--app", "stuckapp:Stuck", *args, cwd=tmp_path, env={"STUCK_MARKER": str(marker)})
        servers.append(server)
        with Client(server.port) as client:
            assert client.request("GET", "/ping").body == b"pong"
        blocked = Client(server.port)
        clients.append(blocked)
        blocked.send(build_request("GET", "/block"))
        wait_for(marker.exists, message="the handler never started")
        return server

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.kill()


def exit_of(server, limit):
    """(seconds until the child exited, its status, its stderr)."""
    started = time.monotonic()
    out, err = server.child.communicate(timeout=limit)
    return time.monotonic() - started, server.child.returncode, err


def test_sigterm_exits_after_the_graceful_timeout(stuck_server):
    server = stuck_server("--graceful-timeout", "1.5")
    server.child.send_signal(signal.SIGTERM)
    took, status, err = exit_of(server, 30)
    assert 1.0 < took < 10, f"took {took:.1f} s"
    assert status == 1, err
    assert "did not stop within 1.5 s" in err, err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once(stuck_server, second):
    server = stuck_server("--graceful-timeout", "120")
    server.child.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # well into the shutdown, which waits for the handler
    assert server.child.poll() is None, "the first SIGTERM must not end the process while the loop stops"
    server.child.send_signal(second)
    took, status, err = exit_of(server, 30)
    assert took < 5, f"took {took:.1f} s"
    assert status == 128 + second, err
    assert f"{signal.Signals(second).name} again during shutdown" in err, err


def test_nothing_blocked_still_exits_0_at_once(tmp_path):
    (tmp_path / "stuckapp.py").write_text(BLOCKING_APP)
    server = CliServer("--app", "stuckapp:Stuck", "--graceful-timeout", "60", cwd=tmp_path)
    try:
        server.stop(signal.SIGTERM)
    finally:
        server.kill()
