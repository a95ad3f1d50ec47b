"""The command-line server of the operations tests, in a subprocess: it
serves an app of ops_apps.py (or the files of a directory), and is told
to stop with SIGTERM, after which its log is complete."""

import os
import re
import signal
import subprocess
import sys

from conftest import LOCALHOST

HERE = os.path.dirname(os.path.abspath(__file__))
SERVING = re.compile(r"^Serving HTTP on \S+ port (\d+) ")
METRICS = re.compile(r"^Metrics on http://(\S+):(\d+)/metrics")


class OpsServer:
    """python -m pyparallel.http.server --bind 127.0.0.1 --port 0 with
    args, two workers, from this directory (or cwd)."""

    def __init__(self, *args, cwd=HERE, env=None, workers=2):
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pyparallel.http.server", "--bind", LOCALHOST, "--port", "0"]
            + ["--workers", str(workers), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, (HERE, os.environ.get("PYTHONPATH")))),
                **(env or {}),
            },
        )
        self.metrics_port = None
        self.lines = []
        while True:
            line = self.child.stdout.readline()
            if not line:
                out, err = self.child.communicate(timeout=10)
                raise AssertionError(f"no startup line: {self.lines}\nstdout: {out}\nstderr: {err}")
            self.lines.append(line)
            match = METRICS.match(line)
            if match:
                self.metrics_port = int(match.group(2))
            match = SERVING.match(line)
            if match:
                self.port = int(match.group(1))
                break

    def stop(self):
        """SIGTERM; it must exit 0. Returns (stdout, stderr)."""
        self.child.send_signal(signal.SIGTERM)
        out, err = self.child.communicate(timeout=30)
        assert self.child.returncode == 0, (self.child.returncode, out, err)
        return out, err

    def kill(self):
        if self.child.poll() is None:
            self.child.kill()
            self.child.communicate(timeout=10)
