"""What the lifecycle tests (test_lifecycle_*.py) share: a server process
whose output is read as it comes (a reload's new process writes to the same
pipes, and outlives the process the test started; all stay in one process
group, which the test kills at the end), and a load generator of
keep-alive HTTP clients that records every request's start, end and
outcome, so that a test can count the failures among the requests started
before a signal.
"""

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time

from conftest import LOCALHOST

STARTUP = re.compile(r"^Serving HTTP on (?P<where>\S+?):? (port (?P<port>\d+) )?")
START_TIMEOUT = 30

# An app whose version the tests change, and whose /slow takes a second.
APP = """
import asyncio
import os
import sys
import time

from pyparallel.http import HttpServer

VERSION = {version!r}


class App(HttpServer):
    def fast(self, request):
        return VERSION

    def slow(self, request):
        time.sleep(1)
        return VERSION + " slow"

    async def awaiting(self, request):
        await asyncio.sleep(1)
        return VERSION + " awaited"

    def streamed(self, request):
        def chunks():
            for i in range(5):
                time.sleep(0.2)
                yield f"{{i}}".encode()

        return chunks()

    def pid(self, request):
        return str(os.getpid())

    def interp(self, request):
        import _interpreters

        return str(_interpreters.get_current()[0])

    def exit(self, request):
        sys.exit(3)
"""

# A WSGI app whose response is streamed over a second.
WSGI_APP = """
import time


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(5):
        time.sleep(0.2)
        yield f"{i}".encode()
"""


def write_app(directory, version, import_delay=0):
    """lifeapp.py answering version; its import takes import_delay seconds
    (a process that loads it is that much slower to be ready)."""
    delay = f"\ntime.sleep({import_delay})\n" if import_delay else ""
    (directory / "lifeapp.py").write_text(APP.format(version=version) + delay)


class ServerProcess:
    """python -m pyparallel.http.server with args, in cwd; a thread collects
    its stdout and stderr lines (and those of the processes a reload starts,
    which write to the same pipes)."""

    def __init__(self, *args, cwd=None, env=None, pass_fds=(), argv=None):
        command = argv or [sys.executable, "-m", "pyparallel.http.server", *args]
        self.child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYPARALLEL_WORKERS": "2", **(env or {})},
            pass_fds=pass_fds,
            # A group of its own, which the processes its reloads start
            # stay in: kill() ends them all, orphans included.
            start_new_session=True,
        )
        self.lines = []
        self.errors = []
        self.lock = threading.Lock()
        self.readers = [
            threading.Thread(target=self._read, args=(self.child.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.child.stderr, self.errors), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        match = self.wait_line(STARTUP.match, START_TIMEOUT)
        self.port = int(match.group("port")) if match.group("port") else None  # None: a Unix socket

    def _read(self, stream, into):
        for line in stream:
            with self.lock:
                into.append(line.rstrip("\n"))

    def wait_line(self, match, timeout=START_TIMEOUT, errors=False, after=0):
        """The first match of a stdout line (stderr with errors), from line
        number after on."""
        deadline = time.monotonic() + timeout
        source = self.errors if errors else self.lines
        while True:
            with self.lock:
                for line in source[after:]:
                    found = match(line)
                    if found:
                        return found
            if self.child.poll() is not None and not errors and not source[after:]:
                raise AssertionError(f"the server exited ({self.child.returncode}): {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no such line within {timeout} s; stdout {self.lines}, stderr {self.stderr()}")
            time.sleep(0.01)

    def stderr(self):
        with self.lock:
            return "\n".join(self.errors)

    def kill(self):
        """Ends the server and every process its reloads started."""
        try:
            os.killpg(self.child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.child.wait(timeout=10)


def process_gone(pid):
    """Whether pid has exited (a zombie counts: its parent, or init, reaps
    it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Outcome:
    __slots__ = ("started", "ended", "path", "body", "error")

    def __init__(self, started, ended, path, body, error):
        self.started = started
        self.ended = ended
        self.path = path
        self.body = body
        self.error = error

    def __repr__(self):
        return f"<{self.path} at {self.started:.3f}: {self.error or self.body!r}>"


class Load:
    """clients threads sending requests over keep-alive connections, one
    after another; every slow_every-th is /slow, the others fast_path. A
    connection the server
    ends (Connection: close) is replaced by a new one."""

    def __init__(self, port, clients=4, slow_every=5, host=LOCALHOST, fast_path="/fast"):
        self.port = port
        self.host = host
        self.slow_every = slow_every
        self.fast_path = fast_path
        self.outcomes = []
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self, index):
        conn = None
        count = index
        while self.running:
            count += 1
            path = "/slow" if self.slow_every and count % self.slow_every == 0 else self.fast_path
            started = time.monotonic()
            body = error = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    error = f"status {response.status}"
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)  # refused: do not spin
            with self.lock:
                self.outcomes.append(Outcome(started, time.monotonic(), path, body, error))
        if conn is not None:
            conn.close()

    def stop(self):
        self.running = False
        for thread in self.threads:
            thread.join(40)
        return list(self.outcomes)

    def count(self):
        with self.lock:
            return len(self.outcomes)

    def wait_count(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < deadline, f"the load made {self.count()} requests, not {n}"
            time.sleep(0.01)

    def last_bodies(self, n=8):
        with self.lock:
            return [o.body for o in self.outcomes[-n:]]


def failures(outcomes, before=None):
    """The failed outcomes (among those started before a time)."""
    return [o for o in outcomes if o.error is not None and (before is None or o.started < before)]
