"""Recycling and supervision with real processes: --max-requests N reloads
the process once a worker (mode interpreters) or the process (N times the
workers, modes threads and gil) has served that many requests,
--max-worker-memory once the process's resident memory is over the limit
per worker, and in mode interpreters a SystemExit escaping a handler (its
interpreter's state is broken) reloads it too, trying again after a pause
while the new process fails to start; the reload is the SIGHUP one, so the
load generator sees no failure and the process serving afterwards has a
new PID.
"""

import urllib.error
import urllib.request

import pytest

from conftest import LOCALHOST, interpreters_mode, wait_for
from lifecycle_helpers import Load, ServerProcess, failures, write_app


@pytest.fixture
def recycled(tmp_path):
    started = []
    pid_file = tmp_path / "server.pid"

    def start(*args):
        write_app(tmp_path, "v1")
        process = ServerProcess(
            "--app",
            "lifeapp:App",
            "--bind",
            LOCALHOST,
            "--port",
            "0",
            "--pid-file",
            str(pid_file),
            *args,
            cwd=tmp_path,
        )
        started.append(process)
        return process

    yield start, pid_file
    for process in started:
        process.kill()


def reloaded(process, pid_file):
    try:
        return int(pid_file.read_text()) != process.child.pid
    except (FileNotFoundError, ValueError):
        return False


def test_max_requests_reloads_without_failures(recycled):
    start, pid_file = recycled
    process = start("--max-requests", "40", "--max-requests-jitter", "10")
    load = Load(process.port, clients=3, slow_every=0)
    try:
        wait_for(lambda: reloaded(process, pid_file), timeout=30, message="no reload")
        assert process.child.wait(timeout=20) == 0
        load.wait_count(load.count() + 20)
    finally:
        outcomes = load.stop()
    assert failures(outcomes) == [], process.stderr()
    assert "(--max-requests): reloading the process" in process.stderr()


def test_max_worker_memory_reloads(recycled):
    start, pid_file = recycled
    process = start("--max-worker-memory", "1")
    wait_for(lambda: reloaded(process, pid_file), timeout=30, message="no reload")
    assert process.child.wait(timeout=20) == 0
    assert "(--max-worker-memory): reloading the process" in process.stderr()


def test_jitter_needs_max_requests(recycled, tmp_path):
    start, _ = recycled
    with pytest.raises(AssertionError, match="--max-requests-jitter takes"):
        start("--max-requests-jitter", "5")


@pytest.mark.skipif(not interpreters_mode(), reason="worker interpreters are mode interpreters'")
def test_a_broken_worker_interpreter_reloads_the_process(recycled, tmp_path):
    start, pid_file = recycled
    process = start()
    load = Load(process.port, clients=2, slow_every=0)
    try:
        load.wait_count(20)
        # The first reload will fail: the code on disk is broken by then.
        (tmp_path / "lifeapp.py").write_text("def broken(:\n")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://{LOCALHOST}:{process.port}/exit", timeout=10)
        assert answer.value.code == 500
        process.wait_line(lambda line: "reload failed" in line, errors=True)
        write_app(tmp_path, "v2")
        # Tried again after a pause, and then it takes.
        wait_for(lambda: reloaded(process, pid_file), timeout=30, message="no second reload")
        assert process.child.wait(timeout=20) == 0
        load.wait_count(load.count() + 10)
    finally:
        outcomes = load.stop()
    assert failures(outcomes) == [], process.stderr()
    stderr = process.stderr()
    assert "state is broken (SystemExit escaped a callback; 1 so far): reloading the process" in stderr
    assert stderr.count("state is broken") == 2, stderr
