"""The zero-downtime reload on SIGHUP, with a real load: the server starts
its command line again as a new process, hands it the listening socket,
and drains once the new one is ready; the load generator sees no failed
request, and its answers change from the old code's to the new code's. A
reload to a broken app (a syntax error) leaves the serving process as it
was, with the error logged, and still no request fails. The new process
has its own PID, in the --pid-file; the old one exits 0.
"""

import os
import signal
import socket
import urllib.request

import pytest

from conftest import LOCALHOST, recv_to_eof, wait_for
from lifecycle_helpers import Load, ServerProcess, failures, process_gone, write_app


@pytest.fixture
def reloadable(tmp_path):
    pid_file = tmp_path / "server.pid"
    write_app(tmp_path, "v1")
    process = ServerProcess(
        "--app", "lifeapp:App", "--bind", LOCALHOST, "--port", "0", "--pid-file", str(pid_file), cwd=tmp_path
    )
    yield process, pid_file
    process.kill()


def serving_pid(pid_file):
    try:
        return int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_reload_under_load(reloadable, tmp_path):
    process, pid_file = reloadable
    wait_for(lambda: serving_pid(pid_file) == process.child.pid, message="no pid file")
    load = Load(process.port, clients=4, slow_every=4)
    try:
        load.wait_count(30)
        assert set(load.last_bodies()) <= {"v1", "v1 slow"}

        # A reload to new code: the answers change, the old process goes.
        write_app(tmp_path, "v2")
        process.child.send_signal(signal.SIGHUP)
        new_pid = wait_for(lambda: serving_pid(pid_file) not in (None, process.child.pid) and serving_pid(pid_file))
        assert process.child.wait(timeout=20) == 0, process.stderr()
        wait_for(lambda: "v2" in load.last_bodies(), timeout=20, message="the new code never answered")
        load.wait_count(load.count() + 10)
        assert set(load.last_bodies()) <= {"v2", "v2 slow"}
        assert len(process.lines) == 2  # each process's startup line

        # A reload to a broken app: logged, and the new process serves on.
        (tmp_path / "lifeapp.py").write_text("def broken(:\n")
        errors = len(process.errors)
        os.kill(new_pid, signal.SIGHUP)
        process.wait_line(lambda line: "reload failed" in line and line, errors=True, after=errors)
        load.wait_count(load.count() + 10)
        assert serving_pid(pid_file) == new_pid
        assert not process_gone(new_pid)
    finally:
        outcomes = load.stop()
    assert failures(outcomes) == [], process.stderr()
    assert {o.body for o in outcomes} >= {"v1", "v2"}
    assert "SyntaxError" in process.stderr()


def test_a_second_reload_while_one_is_under_way_is_ignored(reloadable, tmp_path):
    process, pid_file = reloadable
    wait_for(lambda: serving_pid(pid_file) == process.child.pid, message="no pid file")
    # The new process takes a while to be ready: long enough for a second
    # SIGHUP to arrive while the first reload is under way.
    write_app(tmp_path, "v2", import_delay=1)
    process.child.send_signal(signal.SIGHUP)
    # Signals of one kind do not queue: the second after the first was seen.
    process.wait_line(lambda line: "reload: started" in line, errors=True)
    process.child.send_signal(signal.SIGHUP)
    wait_for(lambda: serving_pid(pid_file) not in (None, process.child.pid), message="no reload")
    assert process.child.wait(timeout=20) == 0
    assert "reload asked while one is under way" in process.stderr()
    assert sum("Serving HTTP" in line for line in process.lines) == 2


def unix_get(path, target):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return recv_to_eof(sock).split(b"\r\n\r\n", 1)[1].decode()


def test_reload_keeps_a_unix_socket(tmp_path):
    """With --uds the socket file stays across the reload, served by the
    new process."""
    write_app(tmp_path, "v1")
    path, pid_file = str(tmp_path / "http.sock"), tmp_path / "server.pid"
    process = ServerProcess("--app", "lifeapp:App", "--uds", path, "--pid-file", str(pid_file), cwd=tmp_path)
    try:
        assert unix_get(path, "/fast") == "v1"
        write_app(tmp_path, "v2")
        process.child.send_signal(signal.SIGHUP)
        wait_for(lambda: serving_pid(pid_file) not in (None, process.child.pid), message="no reload")
        assert process.child.wait(timeout=20) == 0
        assert unix_get(path, "/fast") == "v2"
        assert unix_get(path, "/pid") == str(serving_pid(pid_file))
    finally:
        process.kill()


def test_reload_moves_the_metrics_listener(reloadable_metrics):
    """--metrics binds its own port, which the new process binds again: the
    old process gives it up as the new one starts."""
    process, pid_file, metrics_port = reloadable_metrics
    process.child.send_signal(signal.SIGHUP)
    wait_for(lambda: serving_pid(pid_file) not in (None, process.child.pid), message="no reload")
    assert process.child.wait(timeout=20) == 0
    assert "reload failed" not in process.stderr()
    with urllib.request.urlopen(f"http://{LOCALHOST}:{metrics_port}/metrics", timeout=10) as answer:
        assert answer.status == 200


@pytest.fixture
def reloadable_metrics(tmp_path):
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        metrics_port = probe.getsockname()[1]
    write_app(tmp_path, "v1")
    pid_file = tmp_path / "server.pid"
    process = ServerProcess(
        "--app",
        "lifeapp:App",
        "--bind",
        LOCALHOST,
        "--port",
        "0",
        "--pid-file",
        str(pid_file),
        "--metrics",
        f"{LOCALHOST}:{metrics_port}",
        cwd=tmp_path,
    )
    wait_for(lambda: serving_pid(pid_file) == process.child.pid, message="no pid file")
    yield process, pid_file, metrics_port
    process.kill()
