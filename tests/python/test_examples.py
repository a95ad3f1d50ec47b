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

from conftest import LOCALHOST, interrupt_and_expect_clean_exit, recv_exactly

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SELFTEST_TIMEOUT = 60


def example_scripts():
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


# Examples that show how connections share objects, which workers in mode
# "interpreters" cannot (docs/interpreters.md).
SHARES_OBJECTS = {
    "chat.py": "its connections send to each other through one list of transports they all share",
    "shared_data.py": "its workers read one eternalized dict of the main interpreter (mode 'interpreters' shares "
    "data through px.SharedBuffer instead)",
    "http_notes.py": "its requests keep the notes in one dict that every connection shares",
}


def selftest_params():
    return [
        pytest.param(name, marks=pytest.mark.shares_objects(SHARES_OBJECTS[name])) if name in SHARES_OBJECTS else name
        for name in example_scripts()
    ]


def test_every_example_has_a_selftest():
    """The runtime's examples are all there, and every example (other
    issues add theirs) offers the --selftest mode that the test below runs."""
    scripts = example_scripts()
    assert {"chargen.py", "chat.py", "echo.py", "parallel_map.py", "shared_data.py"} <= set(scripts)
    for name in scripts:
        assert "--selftest" in (EXAMPLES / name).read_text(), f"{name} has no --selftest mode"


def run_example(name, *args, timeout=SELFTEST_TIMEOUT):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=EXAMPLES.parent,
        env=dict(os.environ),
    )


@pytest.mark.timeout(SELFTEST_TIMEOUT + 10)
@pytest.mark.parametrize("name", selftest_params())
def test_example_selftest(name):
    result = run_example(name, "--selftest")
    stem = name[:-3]
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
