"""The Python examples are documentation that runs: each one is started in a
subprocess in its --selftest mode (it serves on a free port on 127.0.0.1,
drives itself with a client, checks the result, and exits), and must exit 0
with its "ok" line, within a time limit.

One example also runs as a real server with --port, answering a client here.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from conftest import LOCALHOST, expected_mode, interrupt_and_expect_clean_exit, recv_exactly

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SELFTEST_TIMEOUT = 60


def example_scripts():
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


# Examples whose connections share Python objects: workers in mode
# "interpreters" cannot (docs/interpreters.md), so these run in mode "gil" on
# a GIL build unless told otherwise, and refuse mode "interpreters" saying
# why (examples/_selftest.py).
SHARES_OBJECTS = {
    "chat.py": "one table of members",
    "shared_data.py": "one eternalized table",
    "http_notes.py": "one dict of notes",
}


def test_every_example_has_a_selftest():
    """The runtime's examples are all there, and every example (other
    issues add theirs) offers the --selftest mode that the test below runs."""
    scripts = example_scripts()
    assert {"chargen.py", "chat.py", "echo.py", "parallel_map.py", "shared_data.py"} <= set(scripts)
    for name in scripts:
        assert "--selftest" in (EXAMPLES / name).read_text(), f"{name} has no --selftest mode"


def run_example(name, *args, timeout=SELFTEST_TIMEOUT, env=None):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=EXAMPLES.parent,
        env=env if env is not None else dict(os.environ),
    )


@pytest.mark.timeout(SELFTEST_TIMEOUT + 10)
@pytest.mark.parametrize("name", example_scripts())
def test_example_selftest(name):
    result = run_example(name, "--selftest")
    stem = name[:-3]
    if name in SHARES_OBJECTS and expected_mode() == "interpreters":
        assert result.returncode != 0, result.stdout
        assert f"{stem}: its connections share {SHARES_OBJECTS[name]}" in result.stderr, result.stderr
        assert "run it in mode 'threads'" in result.stderr and "Traceback" not in result.stderr, result.stderr
        return
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert f"{stem} selftest: ok" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr


def free_port():
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(30)
def test_echo_example_serves_on_the_given_port_until_sigint():
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "echo.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert f"127.0.0.1:{port}" in line, (line, child.stderr.read() if child.poll() is not None else "")
        with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
            banner = b"echo server ready\r\n"
            assert recv_exactly(sock, len(banner)) == banner
            sock.sendall(b"hello example")
            assert recv_exactly(sock, 13) == b"hello example"
            interrupt_and_expect_clean_exit(child, sock, signal.SIGINT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.timeout(SELFTEST_TIMEOUT + 10)
def test_parallel_map_example_prints_its_answer():
    result = run_example("parallel_map.py", "--limit", "10000", "--chunks", "8")
    assert result.returncode == 0, result.stderr
    # 6171 has the longest Collatz chain below 10000: 262 numbers.
    assert "6171 has the longest Collatz chain (262 numbers)" in result.stdout, result.stdout


@pytest.mark.timeout(SELFTEST_TIMEOUT + 10)
@pytest.mark.skipif(not sys._is_gil_enabled(), reason="a free-threaded build runs these in mode 'threads' anyway")
def test_examples_that_share_objects_pick_mode_gil_on_a_gil_build():
    """Without PYPARALLEL_MODE, where the build's default is 'interpreters'."""
    env = {k: v for k, v in os.environ.items() if k != "PYPARALLEL_MODE"}
    result = run_example("http_notes.py", "--selftest", env=env)
    assert result.returncode == 0, result.stderr
    assert "http_notes selftest: ok" in result.stdout
