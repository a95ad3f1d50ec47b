"""Several instances behind a real load balancer: Debian's HAProxy, run with
examples/deploy/haproxy.cfg, in front of two command-line servers on
loopback ports, health-checking their --health route. A rolling restart
(SIGTERM one instance, start it again on its port, wait until HAProxy sends
it requests, then the other) under a steady load through HAProxy loses no
request: during --drain-delay the instance answers its health route with
503 and HAProxy takes it out before its listener closes.
"""

import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import LOCALHOST, wait_for
from lifecycle_helpers import Load, ServerProcess, failures, write_app

pytestmark = [
    pytest.mark.end_to_end,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian package haproxy)"),
]

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "examples" / "deploy" / "haproxy.cfg"


def free_port():
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


class Instance:
    def __init__(self, cwd):
        self.cwd = cwd
        self.process = self._start(0)
        self.port = self.process.port

    def _start(self, port):
        flags = ("--health", "/healthz", "--drain-delay", "1", "--graceful-timeout", "10")
        return ServerProcess("--app", "lifeapp:App", "--bind", LOCALHOST, "--port", str(port), *flags, cwd=self.cwd)

    def restart(self):
        """SIGTERM, wait for the exit, start again on the same port."""
        self.process.child.send_signal(signal.SIGTERM)
        assert self.process.child.wait(timeout=20) == 0, self.process.stderr()
        self.process = self._start(self.port)
        return self.process.child.pid


def test_rolling_restart_behind_haproxy_loses_nothing(tmp_path):
    write_app(tmp_path, "v1")
    instances = [Instance(tmp_path), Instance(tmp_path)]
    frontend = free_port()
    env = {
        "PX_FRONTEND": f"{LOCALHOST}:{frontend}",
        "PX_SERVER_A": f"{LOCALHOST}:{instances[0].port}",
        "PX_SERVER_B": f"{LOCALHOST}:{instances[1].port}",
    }
    haproxy = subprocess.Popen(
        ["haproxy", "-db", "-f", str(CONFIG)],
        env={**env, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    load = None
    try:
        wait_for(lambda: _answers(frontend), timeout=20, message="HAProxy never answered")
        load = Load(frontend, clients=4, slow_every=4, fast_path="/pid")
        load.wait_count(40)
        for instance in instances:
            # The restarted instance's PID shows once HAProxy sends to it.
            new_pid = str(instance.restart())
            wait_for(lambda pid=new_pid: pid in load.last_bodies(16), timeout=20, message="never sent to again")
        count = load.count()
        load.wait_count(count + 40)
    finally:
        outcomes = load.stop() if load is not None else []
        haproxy.terminate()
        _, haproxy_errors = haproxy.communicate(timeout=10)
        for instance in instances:
            instance.process.kill()
    assert failures(outcomes) == [], haproxy_errors
    assert len(outcomes) > 100
    served_by = {o.body for o in outcomes if o.path == "/pid"}
    assert len(served_by) == 4  # two instances, each before and after its restart


def _answers(port):
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2) as sock:
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        time.sleep(0.05)
        return False
