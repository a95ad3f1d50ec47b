"""Benchmark: pyparallel's HTTP server against asyncio and nginx, with wrk.

The HTTP issue's scenarios, every server loaded the same way by wrk (-t1
-c64, 127.0.0.1 only) in one run, back to back:

  work       GET /work, a pure-Python loop of about 90 us per request
             (bench/peers/http_pyparallel.py, bench/peers/http_asyncio.py):
             req/s; target: pyparallel (threads mode on 3.13t) at least
             1.2x asyncio with one loop per thread on 3.13t.
  plaintext  GET /plaintext ("Hello, World!") and GET /json: req/s and the
  json       server's CPU per request (user + system time of every process
             of the server, from /proc, over the wrk run / requests);
             targets: CPU per request at most 0.8x asyncio's (one loop on
             3.13), req/s at least nginx's (plaintext; nginx has no json).
  static     a 1 MiB file, pyparallel (--root) against nginx: req/s.

Contenders, each a subprocess in a process group of its own, started once
before the first round, waited for by polling its port, checked with one
request per route (same status and body everywhere), and always stopped at the
end (SIGTERM to the group, SIGKILL after 10 s):

  pyparallel             python -m pyparallel.http.server on --ft-python
                         (3.13t: threads mode), 2 workers
  pyparallel 3.13 gil    the same on --gil-python (its default mode)
  asyncio 3.13 1 loop    bench/peers/http_asyncio.py on --gil-python
  asyncio 3.13t N loops  the same on --ft-python, one loop per worker thread
                         on SO_REUSEPORT sockets
  nginx                  Debian's nginx with a config in a temporary
                         directory: --workers worker processes, access_log
                         off, `return 200` for /plaintext, the static root

Every (scenario, server) pair is warmed up once (1 s of wrk), then measured in
--repeat rounds whose order is rotated; the median counts. wrk's own CPU (it
shares the two cores with the server) is given in the notes.

  python bench/http.py [--quick] [--duration S] [--json PATH]
                       [--ft-python PY] [--gil-python PY] [--nginx PATH]
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import _common

ROOT_DIR = os.path.dirname(_common.BENCH_DIR)
PEERS = os.path.join(_common.BENCH_DIR, "peers")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CONNECTIONS = 64
STATIC_NAME = "file-1MiB.bin"
STATIC_SIZE = 1 << 20
WORK_BODY = str(sum(i * i for i in range(3000))).encode()
# What every server must answer, checked once before measuring.
EXPECTED_BODY = {
    "/plaintext": b"Hello, World!",
    "/json": b'{"message":"Hello, World!"}',
    "/work": WORK_BODY,
}

PX_GIL = "pyparallel 3.13 gil"
ASYNCIO_GIL = "asyncio 3.13 1 loop"
NGINX = "nginx"

NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    # wrk's connections stay open for the whole run, as they do with the
    # other servers (nginx closes one after 1000 requests by default).
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location = /plaintext {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
"""


# ---- servers -----------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_group_pids(pgid):
    """Every live process of process group pgid (nginx's master and workers)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name: state, ppid, pgrp, ...
        if int(stat[stat.rindex(b")") + 2:].split()[2]) == pgid:
            pids.append(int(name))
    return pids


class Server:
    """A server subprocess in its own process group, serving on self.port."""

    def __init__(self, name, command, port, cwd=None, env=None):
        self.name = name
        self.command = command
        self.port = port
        self.cwd = cwd
        self.env = env
        self.process = None
        self.pids = []
        self.output = tempfile.TemporaryFile()
        self.stop_note = None

    def start(self):
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=self.output,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name}: exited with status "
                                 f"{self.process.returncode}{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.name}: not listening on port {self.port} "
                                     f"after {START_TIMEOUT:g} s{self.tail()}") from None
                time.sleep(0.05)
        # nginx forks its workers after it listens: give them time to appear.
        time.sleep(0.3)
        self.pids = process_group_pids(self.process.pid)

    def cpu_seconds(self):
        return sum(_common.proc_cpu_seconds(pid) for pid in self.pids)

    def startup_line(self):
        self.output.seek(0)
        lines = self.output.read().decode(errors="replace").splitlines()
        return lines[0] if lines else ""

    def tail(self):
        self.output.seek(0)
        text = self.output.read().decode(errors="replace").strip()
        return f"; its output:\n{text[-2000:]}" if text else ""

    def stop(self):
        """SIGTERM to the group, then SIGKILL; records how the server ended."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                status = self.process.wait(STOP_TIMEOUT)
                if status != 0:
                    self.stop_note = f"exited with status {status} on SIGTERM"
            except subprocess.TimeoutExpired:
                self.stop_note = f"did not exit within {STOP_TIMEOUT:g} s of SIGTERM: killed"
        else:
            self.stop_note = f"had exited with status {self.process.returncode}"
        # Whatever is left of the group (nginx's workers) goes too.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def http_get(port, path):
    """(status, body) of one GET, read as far as its Content-Length."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise SystemExit(f"port {port}: connection closed before a response to {path}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            raise SystemExit(f"port {port}: GET {path}: no Content-Length in {head!r}")
        while len(body) < int(length.group(1)):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            body += chunk
    return int(head.split(None, 2)[1]), body


def check_routes(server, paths, static_path):
    for path in paths:
        status, body = http_get(server.port, path)
        if path == "/" + STATIC_NAME:
            with open(static_path, "rb") as f:
                good = status == 200 and body == f.read()
        else:
            good = status == 200 and body == EXPECTED_BODY[path]
        if not good:
            raise SystemExit(f"{server.name}: GET {path} answered {status} "
                             f"{body[:80]!r}{server.tail()}")


# ---- wrk ---------------------------------------------------------------------

def run_wrk(server, path, seconds):
    """One wrk run: requests, req/s, and the CPU seconds of server and of wrk."""
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s",
               f"http://127.0.0.1:{server.port}{path}"]
    server_cpu = server.cpu_seconds()
    start = _common.now()
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = wrk.stdout.read().decode(errors="replace")
    # wait4 gives wrk's own rusage; subprocess's wait would discard it.
    _, status, usage = os.wait4(wrk.pid, 0)
    wrk.returncode = os.waitstatus_to_exitcode(status)
    elapsed = _common.now() - start
    server_cpu = server.cpu_seconds() - server_cpu
    found = re.search(r"(\d+) requests in", output)
    if wrk.returncode != 0 or not found or int(found.group(1)) == 0:
        raise SystemExit(f"{server.name} {path}: wrk failed:\n{output}{server.tail()}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{server.name} {path}: {errors.group(1)} error responses")
    socket_errors = re.search(r"Socket errors: (.*)", output)
    requests = int(found.group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return {"requests": requests, "req_per_s": rate, "elapsed_s": elapsed,
            "server_cpu_s": server_cpu, "wrk_cpu_s": usage.ru_utime + usage.ru_stime,
            "socket_errors": socket_errors.group(1) if socket_errors else None}


# ---- the run -----------------------------------------------------------------

def make_servers(args, tmp, www):
    """The contenders, by name, and the scenarios each takes part in."""
    env = dict(os.environ)
    # The servers import pyparallel from the source tree when no venv has
    # it installed, as the Makefile's targets do.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT_DIR, "python"), env.get("PYTHONPATH")) if p)
    servers = []
    if not args.peers_only:
        for name, python in ((_common.OURS, args.ft_python), (PX_GIL, args.gil_python)):
            port = free_port()
            # cwd bench/peers: the app's module is imported from there (and
            # bench/http.py must not shadow the standard library's http).
            servers.append((Server(name, [python, "-m", "pyparallel.http.server",
                                          "--bind", "127.0.0.1", "--port", str(port),
                                          "--workers", str(args.workers),
                                          "--app", "http_pyparallel:Bench", "--root", www],
                                   port, cwd=PEERS, env=env),
                            ("work", "plaintext", "json", "static")))
    asyncio_server = os.path.join(PEERS, "http_asyncio.py")
    port = free_port()
    servers.append((Server(ASYNCIO_GIL, [args.gil_python, asyncio_server, "--port", str(port)],
                           port, cwd=PEERS),
                    ("work", "plaintext", "json")))
    port = free_port()
    servers.append((Server(f"asyncio 3.13t {args.workers} loops",
                           [args.ft_python, asyncio_server, "--port", str(port),
                            "--loops", str(args.workers)], port, cwd=PEERS),
                    ("work", "plaintext", "json")))
    if args.nginx:
        port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(workers=args.workers, tmp=tmp, port=port, www=www))
        servers.append((Server(NGINX, [args.nginx, "-p", tmp, "-c", conf,
                                       "-e", os.path.join(tmp, "error.log")], port),
                        ("plaintext", "static")))
    return servers


PATHS = {"work": "/work", "plaintext": "/plaintext", "json": "/json",
         "static": "/" + STATIC_NAME}


def median_of(samples, key):
    return statistics.median(s[key] for s in samples)


def add_rows(report, scenario, samples, servers, with_cpu):
    names = [server.name for server, scenarios in servers if scenario in scenarios]
    for name in names:
        report.add(f"{scenario} req/s", name,
                   [s["req_per_s"] for s in samples[(scenario, name)]], "req/s", "higher")
    if with_cpu:
        for name in names:
            report.add(f"{scenario} server CPU/request", name,
                       [s["server_cpu_s"] / s["requests"] * 1e6
                        for s in samples[(scenario, name)]], "µs", "lower")


def add_ratio(report, metric, samples, ours, peer, key, target, better):
    """pyparallel's figure over the peer's, round by round (same round, same noise)."""
    if (ours not in samples) or (peer not in samples):
        return
    if key == "cpu":
        values = [(a["server_cpu_s"] / a["requests"]) / (b["server_cpu_s"] / b["requests"])
                  for a, b in zip(samples[ours], samples[peer])]
    else:
        values = [a["req_per_s"] / b["req_per_s"] for a, b in zip(samples[ours], samples[peer])]
    report.add(metric, _common.OURS, values, "x", better, target)


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=None, metavar="S",
                   help="seconds of each wrk run (default 5, 2 with --quick)")
    p.add_argument("--ft-python", default=os.path.join(ROOT_DIR, ".venv-ft", "bin", "python"),
                   metavar="PY", help="the free-threaded 3.13t interpreter (default .venv-ft)")
    p.add_argument("--gil-python", default=os.path.join(ROOT_DIR, ".venv-gil", "bin", "python"),
                   metavar="PY", help="the GIL-build 3.13 interpreter (default .venv-gil)")
    p.add_argument("--nginx", default=shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"),
                   metavar="PATH", help="nginx (default: from PATH or /usr/sbin); "
                                        "without it nginx is left out")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--repeat" not in argv:
        argv += ["--repeat", "1" if "--quick" in argv else "2"]
    args = _common.parse(p, argv)
    duration = args.duration or (2 if args.quick else 5)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    for python in (args.ft_python, args.gil_python):
        if not os.access(python, os.X_OK):
            raise SystemExit(f"{python}: no such interpreter (see --ft-python, --gil-python)")

    samples = {}
    started = []
    with tempfile.TemporaryDirectory(prefix="px-bench-http-") as tmp:
        www = os.path.join(tmp, "www")
        os.mkdir(www)
        # nginx's workers run as an unprivileged user: they must reach www.
        os.chmod(tmp, 0o755)
        static_path = os.path.join(www, STATIC_NAME)
        with open(static_path, "wb") as f:
            f.write(os.urandom(STATIC_SIZE))
        os.chmod(static_path, 0o644)
        servers = make_servers(args, tmp, www)
        try:
            for server, scenarios in servers:
                started.append(server)
                server.start()
                check_routes(server, [PATHS[s] for s in scenarios], static_path)
            jobs = {(scenario, server.name): (server, PATHS[scenario])
                    for scenario in PATHS for server, scenarios in servers
                    if scenario in scenarios}
            for server, path in jobs.values():
                run_wrk(server, path, 1)
            runs = {key: (lambda job=job: run_wrk(*job, duration))
                    for key, job in jobs.items()}
            samples = _common.rounds(runs, args.repeat)
        finally:
            for server in started:
                server.stop()

    report = _common.Report(
        "http", "HTTP: pyparallel.http against asyncio and nginx (wrk)",
        {"connections": CONNECTIONS, "wrk_threads": 1, "duration_s": duration,
         "static_bytes": STATIC_SIZE})
    add_rows(report, "work", samples, servers, False)
    add_rows(report, "plaintext", samples, servers, True)
    add_rows(report, "json", samples, servers, True)
    add_rows(report, "static", samples, servers, False)
    peer_ft = f"asyncio 3.13t {args.workers} loops"
    for scenario in ("work", "plaintext", "json", "static"):
        ours = samples.get((scenario, _common.OURS))
        if ours is None:
            continue
        by_name = {name: s for (sc, name), s in samples.items() if sc == scenario}
        if scenario == "work":
            add_ratio(report, f"work req/s, ours / {peer_ft}", by_name, _common.OURS,
                      peer_ft, "rate", (">=", 1.2), "higher")
        if scenario in ("plaintext", "json"):
            add_ratio(report, f"{scenario} CPU/request, ours / {ASYNCIO_GIL}", by_name,
                      _common.OURS, ASYNCIO_GIL, "cpu", ("<=", 0.8), "lower")
        if scenario in ("plaintext", "static"):
            add_ratio(report, f"{scenario} req/s, ours / nginx", by_name, _common.OURS,
                      NGINX, "rate", (">=", 1.0), "higher")
    report.note(f"wrk -t1 -c{CONNECTIONS} -d{duration}s on 127.0.0.1, "
                f"after a 1 s warm-up per server and scenario; static: one "
                f"{STATIC_SIZE >> 20} MiB file")
    for server, _ in servers:
        line = server.startup_line()
        if line and server.name != NGINX:
            report.note(f"{server.name}: {line}")
    for (scenario, name), rows in samples.items():
        busy = median_of(rows, "server_cpu_s") / median_of(rows, "elapsed_s")
        wrk_busy = median_of(rows, "wrk_cpu_s") / median_of(rows, "elapsed_s")
        wrk_per_request = statistics.median(s["wrk_cpu_s"] / s["requests"] * 1e6 for s in rows)
        errors = [s["socket_errors"] for s in rows if s["socket_errors"]]
        report.note(f"{scenario} / {name}: server {busy:.2f} cores, wrk {wrk_busy:.2f} "
                    f"cores ({wrk_per_request:.1f} µs/request)"
                    + (f"; wrk socket errors: {errors}" if errors else ""))
    for server, _ in servers:
        if server.stop_note:
            report.note(f"{server.name}: server {server.stop_note}")
    # Every wrk run's figures, for whoever wants more than the medians.
    report.params["wrk_runs"] = [{"scenario": scenario, "contender": name, "runs": rows}
                                 for (scenario, name), rows in samples.items()]
    return report.finish(args, _common.environment(args))

def exit_on_sigterm(signum, frame):
    # Raised in the main thread, so the servers are still stopped (finally).
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    main(sys.argv[1:])
