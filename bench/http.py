"""Benchmark: pyparallel's HTTP server against what users run instead, in one run.

Every server of bench/_servers.py (pyparallel in its three modes, nginx,
asyncio and uvloop with one loop, 3.13t asyncio with a loop per thread,
gunicorn sync and gthread, granian) runs the same handler logic
(bench/peers/http_logic.py) on 127.0.0.1, and every scenario measures them
back to back, in rounds whose order rotates; the median of the rounds counts.

  work       GET /work: about 90 us of pure Python per request. Also measured:
             the compute limit, the handler's loop timed alone on the 3.13
             GIL build (CPU time) times the workers, as req/s.
  plaintext  TechEmpower's plaintext and json tests (keep-alive, Date
  json       field checked on every server)
  static     a 1 MiB file
  shared     GET /shared?k=<random key> (wrk's Lua script): a lookup in a dict
             of --shared-entries entries that every server process loads at
             start-up; req/s and the memory of all the server's processes
             (process-based servers hold one copy per worker)
  latency    p50/p99 of GET /json at a fixed --latency-rate, from an open-loop
             generator (bench/latency_client.c) that counts each request from
             when it was due (no coordinated omission)
  idle       --idle-connections keep-alive connections, each after one
             request, held open: the memory each costs the server

The wrk scenarios use wrk -t1 -c64 and report req/s, the server's CPU time per
request (user + system of every process of the server, from /proc), the
server's memory after the run (Rss and Pss summed over its processes) and
wrk's own CPU per request (it shares the cores with the server). Servers are
started twice: without the shared table (everything but shared), then with
it. Every server is stopped at the end (its whole process group), on error,
SIGTERM and Ctrl-C too.

  python bench/http.py [--quick] [--duration S] [--json PATH] [--only SCENARIO]
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

import _common
import _idle
import _load
import _servers
from _servers import ASYNCIO, NGINX, PX_GIL, PX_INTERPRETERS, PX_THREADS, PYPARALLEL_MODES

ROOT_DIR = os.path.dirname(_common.BENCH_DIR)
CONNECTIONS = _load.CONNECTIONS
STATIC_NAME = "file-1MiB.bin"
STATIC_SIZE = 1 << 20
WRK_SCENARIOS = ("work", "plaintext", "json", "static")
SCENARIOS = WRK_SCENARIOS + ("shared", "latency", "idle")
PATHS = {
    "work": "/work",
    "plaintext": "/plaintext",
    "json": "/json",
    "static": "/" + STATIC_NAME,
    "latency": "/json",
    "idle": "/plaintext",
}
REFERENCE = PX_INTERPRETERS
LIMIT = "compute limit (3.13, serial loop x workers)"
WORK_LIMIT_TARGET = 0.85

SHARED_LUA = """\
local entries = {entries}
request = function()
  return wrk.format(nil, "/shared?k=" .. math.random(0, entries - 1))
end
"""

# Times the handler's loop alone, in CPU time (a busy machine stretches wall
# time, not this): seconds per call, the fastest of 7 rounds (what another
# process does to the caches and the shared core only ever adds time).
LIMIT_PROBE = """\
import sys, time
sys.path.insert(0, sys.argv[1])
import http_logic
for _ in range(200):
    http_logic.work()
rounds = []
for _ in range(7):
    start = time.thread_time()
    for _ in range(300):
        http_logic.work()
    rounds.append((time.thread_time() - start) / 300)
print(min(rounds))
"""


# ---- checks -----------------------------------------------------------------


def expected_body(scenario, static_bytes):
    import http_logic  # bench/peers is on sys.path (see main)

    return {
        "work": http_logic.work().encode(),
        "plaintext": http_logic.PLAINTEXT,
        "json": http_logic.json_body(),
        "latency": http_logic.json_body(),
        "idle": http_logic.PLAINTEXT,
        "static": static_bytes,
    }[scenario]


def check_routes(server, static_bytes):
    """One request per route: status, body, and a Date field everywhere."""
    for scenario in server.scenarios:
        if scenario == "shared":
            path, body = "/shared?k=12345", b"12345"
        else:
            path, body = PATHS[scenario], expected_body(scenario, static_bytes)
        status, head, got = _servers.http_get(server.port, server.path(scenario, path))
        if status != 200 or got != body:
            raise SystemExit(f"{server.name}: GET {path} answered {status} {got[:80]!r}{server.tail()}")
        if not re.search(rb"(?im)^date:", head):
            raise SystemExit(f"{server.name}: GET {path}: no Date field in {head!r}")


def pyparallel_stats(server):
    """What the /stats route of a pyparallel server says (mode, worker memory)."""
    import json

    status, _, body = _servers.http_get(server.port, "/stats")
    return json.loads(body) if status == 200 else None


# ---- the compute limit ---------------------------------------------------------


def compute_limit(python, workers):
    """Seconds of CPU per call of the work loop on python, and the req/s
    that `workers` cores doing nothing else would reach."""
    out = subprocess.run([python, "-c", LIMIT_PROBE, _servers.PEERS], capture_output=True, text=True, check=True)
    seconds = float(out.stdout)
    return seconds, workers / seconds


# ---- one group of servers ----------------------------------------------------------


def run_group(servers, jobs, args, static_bytes, extra_rounds=None):
    """Starts servers, checks them, runs the jobs in rounds, stops them.

    jobs maps (scenario, server name) -> callable doing one measurement.
    extra_rounds(started) may add measurements that need the servers up.
    Returns (samples, facts): facts per server name (start-up time, memory
    at rest, pyparallel's /stats).
    """
    facts = {}
    # All at once: loading the shared table takes seconds per server.
    with _servers.serving(servers, lambda server: check_routes(server, static_bytes)):
        for server in servers:
            rss, pss = server.memory_mib()
            facts[server.name] = {"start_s": server.ready_s, "rest_rss_mib": rss, "rest_pss_mib": pss}
            if server.name in PYPARALLEL_MODES:
                facts[server.name]["stats"] = pyparallel_stats(server)
        if not args.quick:
            for job in jobs.values():
                job(warm_up=True)
        samples = _common.rounds({key: job for key, job in jobs.items()}, args.repeat)
        if extra_rounds:
            samples.update(extra_rounds())
    return samples, facts


def wrk_job(server, scenario, duration, script=None):
    path = server.path(scenario, PATHS.get(scenario, "/shared"))

    def job(warm_up=False):
        return _load.run_wrk(server, path, 1 if warm_up else duration, script)

    return job


# ---- the report -------------------------------------------------------------------


def add_wrk_rows(report, scenario, samples, names):
    def values(name, func):
        return [func(s) for s in samples[(scenario, name)]]

    columns = (
        ("req/s", "req/s", "higher", lambda s: s["req_per_s"]),
        ("server CPU/request", "µs", "lower", lambda s: s["server_cpu_s"] / s["requests"] * 1e6),
        ("server RSS", "MiB", "lower", lambda s: s["rss_mib"]),
        ("server PSS", "MiB", "lower", lambda s: s["pss_mib"]),
        ("wrk CPU/request", "µs", "lower", lambda s: s["wrk_cpu_s"] / s["requests"] * 1e6),
    )
    for column, unit, better, func in columns:
        for name in names:
            report.add(f"{scenario} {column}", name, values(name, func), unit, better, group=scenario, column=column)


def add_ratio_target(report, metric, samples, scenario, ours, peer, cpu, target):
    """ours' figure over peer's, round by round (same round, same noise)."""
    a, b = samples.get((scenario, ours)), samples.get((scenario, peer))
    if not a or not b:
        return
    if cpu:
        values = [(x["server_cpu_s"] / x["requests"]) / (y["server_cpu_s"] / y["requests"]) for x, y in zip(a, b)]
    else:
        values = [x["req_per_s"] / y["req_per_s"] for x, y in zip(a, b)]
    report.add(metric, ours, values, "x", "lower" if cpu else "higher", target, group="targets", column="ratio")


def build_report(args, samples, facts, limits, servers, asyncio_ft):
    report = _common.Report(
        "http",
        "HTTP: pyparallel against the servers users run instead",
        {
            "connections": CONNECTIONS,
            "wrk_threads": 1,
            "duration_s": args.duration,
            "static_bytes": STATIC_SIZE,
            "shared_entries": args.shared_entries,
            "latency_rate": args.latency_rate,
            "latency_connections": args.latency_connections,
            "latency_duration_s": args.latency_duration,
            "idle_connections": args.idle_connections,
            "keepalive_s": args.keepalive,
        },
        reference=REFERENCE,
    )
    for scenario in WRK_SCENARIOS + ("shared",):
        names = [s.name for s in servers if (scenario, s.name) in samples]
        if not names:
            continue
        if scenario == "work" and limits:
            report.add("work req/s", LIMIT, [limits["gil"][1]], "req/s", "higher", group="work", column="req/s")
        add_wrk_rows(report, scenario, samples, names)
    names = [s.name for s in servers if ("latency", s.name) in samples]
    for column, key in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")):
        for name in names:
            report.add(
                f"latency {column}",
                name,
                [s[key] / 1000 for s in samples[("latency", name)]],
                "ms",
                "lower",
                group="latency",
                column=column,
            )
    for name in names:
        report.add(
            "latency failed requests",
            name,
            [s["errors"] + s["bad_status"] + s["unanswered"] for s in samples[("latency", name)]],
            "",
            "lower",
            group="latency",
            column="failed",
        )
    names = [s.name for s in servers if ("idle", s.name) in samples]
    for name in names:
        rows = samples[("idle", name)]
        report.add("idle connections held", name, [s["held"] for s in rows], "", "higher", group="idle", column="held")
        # The first round's: later rounds find the memory that the previous
        # round's connections left in the server's allocators.
        if rows[0]["kib_per_connection"] is not None:
            report.add(
                "idle memory/connection",
                name,
                [rows[0]["kib_per_connection"]],
                "KiB",
                "lower",
                group="idle",
                column="RSS/connection",
            )
        report.add(
            "idle server RSS",
            name,
            [s["rss_after_mib"] for s in rows],
            "MiB",
            "lower",
            group="idle",
            column="server RSS",
        )

    # The targets of the HTTP and interpreters issues, round by round.
    add_ratio_target(report, f"work req/s / {asyncio_ft}", samples, "work", PX_THREADS, asyncio_ft, False, (">=", 1.2))
    for scenario in ("plaintext", "json"):
        add_ratio_target(
            report, f"{scenario} CPU/request / {ASYNCIO}", samples, scenario, PX_THREADS, ASYNCIO, True, ("<=", 0.8)
        )
    for scenario in ("plaintext", "static"):
        add_ratio_target(report, f"{scenario} req/s / nginx", samples, scenario, PX_THREADS, NGINX, False, (">=", 1.0))
    if limits:
        for name in (PX_INTERPRETERS, PX_THREADS, PX_GIL):
            rows = samples.get(("work", name))
            if rows:
                target = (">=", WORK_LIMIT_TARGET) if name == PX_INTERPRETERS else None
                report.add(
                    "work req/s / compute limit",
                    name,
                    [s["req_per_s"] / limits["gil"][1] for s in rows],
                    "x",
                    "higher",
                    target,
                    group="targets",
                    column="ratio",
                )

    report.note(
        f"wrk -t1 -c{CONNECTIONS} -d{args.duration}s on 127.0.0.1"
        + ("" if args.quick else ", after a 1 s warm-up per server and scenario")
        + f"; static: one {STATIC_SIZE >> 20} MiB file; shared: "
        f"{args.shared_entries:,} entries"
    )
    if limits:
        for build, (seconds, rate) in limits.items():
            report.note(
                f"work loop alone on the {build} build: {seconds * 1e6:.1f} µs of "
                f"CPU per call, so {args.workers} cores reach {rate:,.0f} req/s"
            )
    report.note(
        f"latency: GET /json at {args.latency_rate:g} req/s over "
        f"{args.latency_connections} connections, {args.latency_duration:g} s "
        f"after {args.latency_warmup:g} s of warm-up, open loop"
    )
    report.note(
        f"idle: {args.idle_connections} connections after one GET /plaintext "
        f"each; memory read {args.idle_settle:g} s after the last response; "
        "RSS/connection from the first round (later rounds reuse what the "
        "first one's connections left in the allocators)"
    )
    for name in PYPARALLEL_MODES:
        fact = facts["base"].get(name) or facts["shared"].get(name) or {}
        stats = fact.get("stats")
        if stats:
            memory = [m for m in stats.get("worker_memory") or [] if m is not None]
            if memory:
                report.add(
                    "memory per worker (px.stats)",
                    name,
                    [statistics.mean(memory) / (1 << 20)],
                    "MiB",
                    "lower",
                    group="pyparallel workers",
                    column="interpreter memory",
                )
    for server in servers:
        line = server.startup_line()
        if line and server.name in PYPARALLEL_MODES:
            report.note(f"{server.name}: {line}")
        if server.stop_note:
            report.note(f"{server.name}: server {server.stop_note}")
    for name in names:
        rows = samples[("idle", name)]
        if any(s["timed_out"] for s in rows):
            report.note(
                f"idle / {name}: connections still unanswered after "
                f"{_idle.TIMEOUT_S:g} s: {[s['unanswered'] for s in rows]}"
            )
    for (scenario, name), rows in samples.items():
        errors = [s.get("socket_errors") for s in rows if s.get("socket_errors")]
        if errors:
            report.note(f"{scenario} / {name}: wrk socket errors: {errors}")
    report.params["facts"] = facts
    report.params["limits"] = limits
    report.params["samples"] = [
        {"scenario": scenario, "contender": name, "runs": rows} for (scenario, name), rows in samples.items()
    ]
    return report


# ---- the run -------------------------------------------------------------------


def versions(args):
    found = {
        "ft_python": _load.interpreter_version(args.ft_python),
        "gil_python": _load.interpreter_version(args.gil_python),
    }
    for tool, command, pattern in (
        ("wrk", ["wrk", "--version"], r"wrk \S*?([\d.]+)"),
        ("nginx", [args.nginx or "nginx", "-v"], r"nginx/([\d.]+)"),
    ):
        try:
            out = subprocess.run(command, capture_output=True, text=True)
            version = re.search(pattern, out.stdout + out.stderr)
            found[tool] = f"{tool} {version.group(1)}" if version else None
        except OSError:
            found[tool] = None
    if args.bench_python:
        probe = (
            "import importlib.metadata as m\nfor p in ('uvloop', 'gunicorn', 'granian'):\n    print(p, m.version(p))"
        )
        out = subprocess.run([args.bench_python, "-c", probe], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            name, version = line.split()
            found[name] = version
    return found


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    venv = os.path.join(ROOT_DIR, "{}", "bin", "python")
    p.add_argument(
        "--duration", type=int, default=None, metavar="S", help="seconds of each wrk run (default 5, 1 with --quick)"
    )
    p.add_argument(
        "--ft-python",
        default=venv.format(".venv-ft"),
        metavar="PY",
        help="the free-threaded 3.13t interpreter (default .venv-ft)",
    )
    p.add_argument(
        "--gil-python",
        default=venv.format(".venv-gil"),
        metavar="PY",
        help="the GIL-build 3.13 interpreter (default .venv-gil)",
    )
    p.add_argument(
        "--bench-python",
        default=venv.format(".venv-bench"),
        metavar="PY",
        help="the interpreter with uvloop, gunicorn and granian "
        "(default .venv-bench; missing: those peers are left out)",
    )
    p.add_argument(
        "--nginx",
        default=shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin"),
        metavar="PATH",
        help="nginx (default: from PATH or /usr/sbin); without it nginx is left out",
    )
    p.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    p.add_argument(
        "--shared-entries",
        type=int,
        default=1_000_000,
        metavar="N",
        help="entries of the shared table (default 1000000)",
    )
    p.add_argument(
        "--latency-rate",
        type=float,
        default=2000.0,
        metavar="R",
        help="requests per second of the latency scenario (default 2000)",
    )
    p.add_argument(
        "--latency-connections",
        type=int,
        default=16,
        metavar="N",
        help="connections of the latency scenario (default 16)",
    )
    p.add_argument(
        "--idle-connections",
        type=int,
        default=None,
        metavar="N",
        help="connections of the idle scenario (default 10000, 1000 with --quick)",
    )
    p.add_argument(
        "--keepalive",
        type=float,
        default=600.0,
        metavar="S",
        help="keep-alive timeout given to every server (default 600)",
    )
    args = _common.parse(p, sys.argv[1:] if argv is None else argv, repeats=(3, 1))
    args.duration = args.duration or (1 if args.quick else 5)
    args.latency_warmup = 0.3 if args.quick else 1.0
    args.latency_duration = 1.0 if args.quick else 5.0
    args.idle_connections = args.idle_connections or (1000 if args.quick else 10_000)
    args.idle_settle = 0.3 if args.quick else _idle.SETTLE_S
    scenarios = set(args.only or SCENARIOS)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    for python in (args.ft_python, args.gil_python):
        if not os.access(python, os.X_OK):
            raise SystemExit(f"{python}: no such interpreter (see --ft-python, --gil-python)")
    if not os.access(args.bench_python, os.X_OK):
        print(f"{args.bench_python} missing: uvloop, gunicorn and granian left out", file=sys.stderr)
        args.bench_python = None
    sys.path.insert(0, _servers.PEERS)
    nofile = _servers.raise_open_files_limit()
    if "idle" in scenarios and args.idle_connections + 100 > nofile:
        raise SystemExit(f"--idle-connections {args.idle_connections}: the open files limit is {nofile}")
    latency_client = _common.build_c_tool("latency_client.c", ["-lm"])

    limits = {}
    if "work" in scenarios:
        limits["gil"] = compute_limit(args.gil_python, args.workers)
        limits["free-threaded"] = compute_limit(args.ft_python, args.workers)
    samples, facts = {}, {}
    with tempfile.TemporaryDirectory(prefix="px-bench-http-") as tmp:
        www = os.path.join(tmp, "www")
        os.mkdir(www)
        # nginx's workers run as an unprivileged user: they must reach www.
        os.chmod(tmp, 0o755)
        static_path = os.path.join(www, STATIC_NAME)
        static_bytes = os.urandom(STATIC_SIZE)
        with open(static_path, "wb") as f:
            f.write(static_bytes)
        os.chmod(static_path, 0o644)
        lua = os.path.join(tmp, "shared.lua")
        with open(lua, "w") as f:
            f.write(SHARED_LUA.format(entries=args.shared_entries))

        base = [s for s in _servers.contenders(args, tmp, www, 0) if s.scenarios & (scenarios - {"shared"})]
        for server in base:
            server.scenarios = server.scenarios & scenarios - {"shared"}
        jobs = {
            (scenario, s.name): wrk_job(s, scenario, args.duration)
            for scenario in WRK_SCENARIOS
            for s in base
            if scenario in s.scenarios
        }

        def latency_and_idle():
            extra = {}
            runs = {
                ("latency", s.name): (
                    lambda s=s: _load.run_latency(
                        latency_client,
                        s,
                        s.path("latency", PATHS["latency"]),
                        args.latency_rate,
                        args.latency_connections,
                        args.latency_warmup,
                        args.latency_duration,
                    )
                )
                for s in base
                if "latency" in s.scenarios
            }
            runs.update(
                {
                    ("idle", s.name): (
                        lambda s=s: _idle.hold_idle(
                            s, s.path("idle", PATHS["idle"]), args.idle_connections, args.idle_settle
                        )
                    )
                    for s in base
                    if "idle" in s.scenarios
                }
            )
            extra.update(_common.rounds(runs, args.repeat))
            return extra

        all_servers = list(base)
        if base:
            got, facts = run_group(base, jobs, args, static_bytes, latency_and_idle)
            samples.update(got)
        if "shared" in scenarios:
            shared = [s for s in _servers.contenders(args, tmp, www, args.shared_entries) if "shared" in s.scenarios]
            for server in shared:
                server.scenarios = {"shared"}
            jobs = {("shared", s.name): wrk_job(s, "shared", args.duration, lua) for s in shared}
            got, shared_facts = run_group(shared, jobs, args, static_bytes)
            samples.update(got)
            facts = {"base": facts, "shared": shared_facts}
            all_servers += shared
        else:
            facts = {"base": facts, "shared": {}}

    names = list(dict.fromkeys(s.name for s in all_servers))
    servers = [next(s for s in all_servers if s.name == name) for name in names]
    asyncio_ft = f"asyncio 3.13t {args.workers} loops"
    report = build_report(args, samples, facts, limits, servers, asyncio_ft)
    report.params["versions"] = versions(args)
    env = _common.environment(args)
    return report.finish(args, env)


def exit_on_sigterm(signum, frame):
    # Raised in the main thread, so the servers are still stopped (finally).
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    main(sys.argv[1:])
