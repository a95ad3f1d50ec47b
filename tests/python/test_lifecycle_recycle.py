"""Recycling and supervision with real processes, by reloading: in modes
threads and gil --max-requests N reloads the process once it has served N
times the workers requests, and in every mode --max-worker-memory once the
process's resident memory is over the limit per worker; the reload is the
SIGHUP one, so the load generator sees no failure and the process serving
afterwards has a new PID. (Mode interpreters replaces a worker's
interpreter in place instead: test_lifecycle_inplace.py.)
"""

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


@pytest.mark.skipif(interpreters_mode(), reason="mode interpreters replaces interpreters in place")
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
