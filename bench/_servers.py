"""The HTTP servers of bench/http.py and bench/apps.py: how each contender is started, watched and stopped.

A contender is a command line (and environment) that serves the routes of
bench/peers/ on a port of 127.0.0.1, plus the scenarios (or routes) it takes
part in:

  pyparallel 3.13t threads      python -m pyparallel.http.server on the
  pyparallel 3.13 interpreters  free-threaded venv (mode threads), and on the
  pyparallel 3.13 gil           GIL-build venv with PYPARALLEL_MODE set
  pyparallel 3.13 interpreters, (shared only) the table in a file mapped as a
    SharedBuffer                px.SharedBuffer by every interpreter: how
                                that mode shares big read-only data
  nginx                         Debian's nginx, `return 200` for /plaintext
                                and /json, the static root; the C limit
  asyncio 3.13 1 loop           peers/http_asyncio.py, one event loop
  uvloop 3.13 1 loop            the same on uvloop
  asyncio 3.13t N loops         the same on 3.13t, a loop per thread on
                                SO_REUSEPORT sockets (N = workers)
  gunicorn sync / gthread       peers/http_wsgi.py, one worker process per
                                core (gthread: 4 threads each)
  granian wsgi                  the same WSGI app, one worker per core; its
                                static files from its own (Rust) file server

bench/apps.py starts pyparallel, gunicorn and granian wsgi the same way with
its Flask app, and for its Starlette app:

  uvicorn uvloop                uvicorn --workers N (a process per core) on
                                uvloop and httptools
  granian asgi                  granian --interface asgi, one worker per core

Each runs in a process group (and session) of its own, so that stop() can end
it and every process it forked (nginx's and gunicorn's workers), on success,
error or Ctrl-C alike; it is also asked to die with the benchmark
(PR_SET_PDEATHSIG) should the benchmark itself be killed. Its processes are
found again on every reading (a pre-forking server may replace a worker), as
the group's members plus the descendants of its first process, and their CPU
time and memory are summed.
"""

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import _common

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1
PEERS = os.path.join(_common.BENCH_DIR, "peers")

PX_THREADS = "pyparallel 3.13t threads"
PX_INTERPRETERS = "pyparallel 3.13 interpreters"
PX_GIL = "pyparallel 3.13 gil"
PX_SHARED_BUFFER = "pyparallel 3.13 interpreters, SharedBuffer"
PYPARALLEL_MODES = {
    PX_THREADS: "threads",
    PX_INTERPRETERS: "interpreters",
    PX_GIL: "gil",
    PX_SHARED_BUFFER: "interpreters",
}
NGINX = "nginx"
ASYNCIO = "asyncio 3.13 1 loop"
UVLOOP = "uvloop 3.13 1 loop"
GUNICORN_SYNC = "gunicorn sync"
GUNICORN_GTHREAD = "gunicorn gthread"
GRANIAN = "granian wsgi"
GRANIAN_ASGI = "granian asgi"
UVICORN = "uvicorn uvloop"
GTHREAD_THREADS = 4

NGINX_CONF = """\
worker_processes {workers};
worker_rlimit_nofile {nofile};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout {keepalive}s;
    # wrk's connections stay open for the whole run, as they do with the
    # other servers (nginx closes one after 1000 requests by default).
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location = /plaintext {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
        location = /json {{
            default_type application/json;
            return 200 '{{"message":"Hello, World!"}}';
        }}
    }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_open_files_limit():
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the
    servers it starts (the idle scenario holds thousands of connections)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _die_with_parent():
    """Runs in the child before exec: SIGKILL when the benchmark dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _proc_table():
    """pid -> (ppid, pgid) of every live process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name: state, ppid, pgrp, ...
        fields = stat[stat.rindex(b")") + 2 :].split()
        table[int(name)] = (int(fields[1]), int(fields[2]))
    return table


def process_tree(root):
    """root, its descendants, and the other members of its process group."""
    table = _proc_table()
    found = {pid for pid, (_, pgid) in table.items() if pgid == root}
    if root in table:
        found.add(root)
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


def memory_kib(pid):
    """(Rss, Pss) of a process in KiB, from smaps_rollup; (0, 0) once gone.

    Rss counts every page a process maps, so pages that forked workers still
    share with their parent count once per process; Pss divides each shared
    page among its sharers, so a process tree's Pss sum is what it costs.
    """
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class Server:
    """A server subprocess in its own process group, serving on self.port."""

    def __init__(self, name, command, port, scenarios, cwd=PEERS, env=None, processes=1, paths=None):
        self.name = name
        self.command = command
        self.port = port
        self.scenarios = scenarios
        self.cwd = cwd
        self.env = env
        self.processes = processes  # how many there are once it is ready
        self.paths = paths or {}  # scenario -> path, where it differs
        self.process = None
        self.launched = None
        self.output = tempfile.TemporaryFile()
        self.stop_note = None
        self.ready_s = None  # set by serving()

    def launch(self):
        """Starts the process; wait_ready() then waits for it to serve."""
        self.launched = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait_ready(self):
        deadline = self.launched + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name}: exited with status {self.process.returncode}{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"{self.name}: not listening on port {self.port} after {START_TIMEOUT:g} s{self.tail()}"
                    ) from None
                time.sleep(0.05)
        # Pre-forking servers listen before their workers are up.
        while len(self.pids()) < self.processes:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{self.name}: {len(self.pids())} processes after "
                    f"{START_TIMEOUT:g} s, expected {self.processes}"
                    f"{self.tail()}"
                )
            time.sleep(0.05)

    def pids(self):
        return process_tree(self.process.pid) if self.process else []

    def cpu_seconds(self):
        total = 0.0
        for pid in self.pids():
            try:
                total += _common.proc_cpu_seconds(pid)
            except OSError:
                pass  # a process that just exited
        return total

    def memory_mib(self):
        """(Rss, Pss) summed over the server's processes, in MiB."""
        rss = pss = 0
        for pid in self.pids():
            r, p = memory_kib(pid)
            rss += r
            pss += p
        return rss / 1024, pss / 1024

    def path(self, scenario, default):
        """The path of scenario's route here ({name}: default's last part)."""
        return self.paths.get(scenario, default).format(name=default.rsplit("/", 1)[-1])

    def output_text(self):
        self.output.seek(0)
        return self.output.read().decode(errors="replace")

    def startup_line(self):
        lines = self.output_text().splitlines()
        return lines[0] if lines else ""

    def tail(self):
        text = self.output_text().strip()
        return f"; its output:\n{text[-2000:]}" if text else ""

    def stop(self):
        """SIGTERM to the group, then SIGKILL; records how the server ended."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                status = self.process.wait(STOP_TIMEOUT)
                if status not in (0, -signal.SIGTERM):
                    self.stop_note = f"exited with status {status} on SIGTERM"
            except subprocess.TimeoutExpired:
                self.stop_note = f"did not exit within {STOP_TIMEOUT:g} s of SIGTERM: killed"
        else:
            self.stop_note = f"had exited with status {self.process.returncode}"
        # Whatever is left of the group (workers) goes too.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@contextlib.contextmanager
def serving(servers, check):
    """Launches servers all at once (importing an application or loading a
    table takes a while per process), waits until each serves and passes
    check(server), and stops every one launched when the block ends, on
    error and Ctrl-C too. Sets each server's ready_s: the seconds from its
    launch until it passed check (pre-forking servers listen before their
    workers have imported the application; they all start together on the
    same cores, so this is only kept in the JSON)."""
    launched = []
    try:
        for server in servers:
            launched.append(server)
            server.launch()
        for server in servers:
            server.wait_ready()
            check(server)
            server.ready_s = time.monotonic() - server.launched
        yield servers
    finally:
        for server in launched:
            server.stop()


def http_get(port, path):
    """(status, head, body) of one GET, read as far as its Content-Length."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise SystemExit(f"port {port}: connection closed before a response to {path}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None and re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
            while not body.endswith(b"0\r\n\r\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                body += chunk
            return int(head.split(None, 2)[1]), head, dechunk(body)
        if length is None:
            raise SystemExit(f"port {port}: GET {path}: no Content-Length in {head!r}")
        while len(body) < int(length.group(1)):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            body += chunk
    return int(head.split(None, 2)[1]), head, body


def dechunk(data):
    """The body of a chunked transfer coding (no trailers)."""
    body, at = b"", 0
    while True:
        line_end = data.index(b"\r\n", at)
        size = int(data[at:line_end].split(b";")[0], 16)
        if size == 0:
            return body
        body += data[line_end + 2 : line_end + 2 + size]
        at = line_end + 2 + size + 2


# ---- the contenders ------------------------------------------------------------


def server_env(**extra):
    """The environment of every server: pyparallel from the source tree when
    no venv has it installed, the peers' modules from bench/peers, no
    PYPARALLEL_MODE of the caller's; extra on top."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(os.path.dirname(_common.BENCH_DIR), "python"), PEERS, env.get("PYTHONPATH")) if p
    )
    env.pop("PYPARALLEL_MODE", None)
    env.update(extra)
    return env


def pyparallel_command(python, workers, keepalive, app, port="{port}", root=None):
    """python -m pyparallel.http.server serving app on 127.0.0.1."""
    command = [
        python,
        "-m",
        "pyparallel.http.server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--keepalive-timeout",
        str(keepalive),
        "--app",
        app,
    ]
    return command + (["--root", root] if root else [])


def gunicorn_command(bench_python, workers, keepalive, worker_class, app):
    """gunicorn from bench_python's venv: one process per worker (gthread:
    GTHREAD_THREADS threads each) serving the WSGI app."""
    command = [
        os.path.join(os.path.dirname(bench_python), "gunicorn"),
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--backlog",
        "4096",
        "--keep-alive",
        str(int(keepalive)),
        "--log-level",
        "warning",
        "--worker-class",
        worker_class,
    ]
    if worker_class == "gthread":
        command += ["--threads", str(GTHREAD_THREADS), "--worker-connections", "20000"]
    return command + [app]


def _python_server(bench_python, tool, workers, *options):
    """tool from bench_python's venv, listening on 127.0.0.1 with a process
    per worker and a listen backlog of 4096 (as every server here)."""
    return [
        os.path.join(os.path.dirname(bench_python), tool),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--backlog",
        "4096",
        "--log-level",
        "warning",
        *options,
    ]


def granian_command(bench_python, interface, workers, app, extra=()):
    """granian (HTTP/1 only): one process per worker serving app through
    interface ("wsgi" or "asgi")."""
    # Its default backpressure, backlog / workers, caps the connections a
    # worker serves at once (the idle scenario holds 10k).
    options = ["--interface", interface, "--http", "1", "--http1-header-read-timeout", "60000"]
    return _python_server(bench_python, "granian", workers, *options, "--backpressure", "16384", *extra, app)


def uvicorn_command(bench_python, workers, keepalive, app):
    """uvicorn as deployed for speed: a process per worker, uvloop, httptools."""
    options = ["--loop", "uvloop", "--http", "httptools", "--timeout-keep-alive", str(int(keepalive))]
    return _python_server(bench_python, "uvicorn", workers, *options, "--no-access-log", app)


def contenders(config, tmp, www, shared_entries):
    """Every server of the run (not started), with its scenarios.

    config holds: workers, ft_python, gil_python, bench_python (the venv of
    the Python peers), nginx (path or None), keepalive (seconds every
    server keeps an idle connection), peers_only. shared_entries > 0 loads
    the shared table (BENCH_SHARED_ENTRIES) in every Python server.
    """
    workers = config.workers
    env = server_env(BENCH_SHARED_ENTRIES=str(shared_entries), BENCH_STATIC_ROOT=www)
    keepalive = config.keepalive
    every = {"work", "plaintext", "json", "shared", "static", "latency", "idle"}
    servers = []

    def add(name, command, scenarios, **kw):
        port = free_port()
        servers.append(Server(name, [part.format(port=port) for part in command], port, scenarios, **kw))

    if not config.peers_only:
        for name, python in (
            (PX_THREADS, config.ft_python),
            (PX_INTERPRETERS, config.gil_python),
            (PX_GIL, config.gil_python),
        ):
            px_env = dict(env, PYPARALLEL_MODE=PYPARALLEL_MODES[name])
            add(
                name,
                pyparallel_command(python, workers, keepalive, "http_pyparallel:Bench", root=www),
                every,
                env=px_env,
            )
        if shared_entries:
            port = free_port()
            px_env = dict(
                env,
                PYPARALLEL_MODE="interpreters",
                BENCH_SHARED_ENTRIES="0",
                BENCH_SHARED_FILE=os.path.join(tmp, f"shared-table-{port}.bin"),
                BENCH_SHARED_FILE_ENTRIES=str(shared_entries),
            )
            command = pyparallel_command(
                config.gil_python, workers, keepalive, "http_pyparallel:BenchSharedBuffer", port=port, root=www
            )
            servers.append(Server(PX_SHARED_BUFFER, command, port, {"shared"}, env=px_env))
    if config.nginx:
        port = free_port()
        conf = os.path.join(tmp, f"nginx-{port}.conf")
        nofile = raise_open_files_limit()
        with open(conf, "w") as f:
            f.write(
                NGINX_CONF.format(
                    workers=workers,
                    tmp=tmp,
                    port=port,
                    www=www,
                    nofile=nofile,
                    connections=nofile // 2,
                    keepalive=int(keepalive),
                )
            )
        servers.append(
            Server(
                NGINX,
                [config.nginx, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, "error.log")],
                port,
                {"plaintext", "json", "static", "latency", "idle"},
                processes=1 + workers,
            )
        )
    no_static = every - {"static"}
    asyncio_app = os.path.join(PEERS, "http_asyncio.py")
    add(ASYNCIO, [config.gil_python, asyncio_app, "--port", "{port}"], no_static, env=env)
    if config.bench_python:
        add(UVLOOP, [config.bench_python, asyncio_app, "--port", "{port}", "--uvloop"], no_static, env=env)
    add(
        f"asyncio 3.13t {workers} loops",
        [config.ft_python, asyncio_app, "--port", "{port}", "--loops", str(workers)],
        no_static,
        env=env,
    )
    if config.bench_python:
        for name, worker_class in ((GUNICORN_SYNC, "sync"), (GUNICORN_GTHREAD, "gthread")):
            command = gunicorn_command(config.bench_python, workers, keepalive, worker_class, "http_wsgi:app")
            add(name, command, every, env=env, processes=1 + workers)
        # Static files as granian serves them best: from Rust.
        static = ("--static-path-route", "/static", "--static-path-mount", www)
        add(
            GRANIAN,
            granian_command(config.bench_python, "wsgi", workers, "http_wsgi:app", static),
            every,
            env=env,
            processes=1 + workers,
            paths={"static": "/static/{name}"},
        )
    return servers
