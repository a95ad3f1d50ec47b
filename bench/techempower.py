"""Benchmark: TechEmpower's database tests on a real PostgreSQL, pyparallel against the Python servers that lead them.

Every server runs examples/techempower/app.py (the same SQL, the same pools:
10 connections per worker) against one PostgreSQL cluster that this script
starts (examples/techempower/pgcluster.py) on the same cores, one worker per
core, on 127.0.0.1:

  pyparallel 3.13t threads      psycopg (WSGI, pure-Python libpq binding:
                                asyncpg and psycopg-binary have no 3.13t wheel)
  pyparallel 3.13 interpreters  asyncpg (ASGI) and psycopg (WSGI; psycopg-binary
                                refuses subinterpreters: pure Python there)
  pyparallel 3.13 gil           asyncpg (ASGI) and psycopg (WSGI, with psycopg-binary)
  granian asgi + asyncpg        granian --interface asgi
  uvicorn uvloop + asyncpg      uvicorn --workers N on uvloop and httptools
  gunicorn gthread + psycopg    gunicorn's gthread workers (4 threads each)

pyparallel's 3.13 modes run on .venv-bench's interpreter (the same CPython
as .venv-gil; pyparallel from the source tree), where bench/requirements.txt
installs asyncpg and psycopg-binary for the peers.

  /db                 one row
  /queries?queries=20 twenty rows, each its own query
  /fortunes           every fortune, one added, sorted, rendered by Jinja2
  /updates?queries=20 twenty rows read and written

Each (route, server) gets a wrk run (-t1, -c64) in rounds whose order
rotates (the median counts): req/s, the server's CPU time per request (every
process of the server, from /proc) and the database's (every postgres
process, from /proc, over the same run); then p99 latency at a fixed rate
from the open-loop latency client. The issue's targets (the best pyparallel
server against the best peer, round by round) are printed at the end as met
/ not met.

  python bench/techempower.py [--quick] [--duration S] [--json PATH] [--route R]
"""

import os
import re
import shutil
import signal
import statistics
import sys

import _common
import _load
import _servers
from _servers import GRANIAN_ASGI, GUNICORN_GTHREAD, PX_GIL, PX_INTERPRETERS, PX_THREADS, PYPARALLEL_MODES, UVICORN
from apps import exit_on_sigterm, target_lines

ROOT_DIR = os.path.dirname(_common.BENCH_DIR)
EXAMPLE = os.path.join(ROOT_DIR, "examples", "techempower")
sys.path.insert(0, EXAMPLE)

import pgcluster  # noqa: E402  (examples/techempower is on the path only from here on)

ROUTES = {
    "db": "/db",
    "queries": "/queries?queries=20",
    "fortunes": "/fortunes",
    "updates": "/updates?queries=20",
}
# The latency client's fixed rate per route: under what every server
# sustains (a request of /updates writes twenty rows).
LATENCY_RATES = {"db": 1000.0, "queries": 200.0, "fortunes": 1000.0, "updates": 150.0}
# The targets of the issue: req/s of the best pyparallel server over the best
# peer's, per route; pyparallel's lowest server CPU/request over the best
# peer's.
THROUGHPUT_TARGETS = {"db": 1.3, "queries": 1.0, "fortunes": 1.3, "updates": 1.0}
CPU_TARGET = 0.7
PEERS = {
    GRANIAN_ASGI: "granian asgi + asyncpg",
    UVICORN: "uvicorn uvloop + asyncpg",
    GUNICORN_GTHREAD: "gunicorn gthread + psycopg",
}


def px_name(mode_name, driver):
    return f"{mode_name} + {driver}"


# ---- the servers -------------------------------------------------------------------


def contenders(args, cluster):
    workers, keepalive = args.workers, args.keepalive
    db_env = cluster.env()
    servers = []

    def add(name, command, env, **kw):
        port = _servers.free_port()
        command = [part.format(port=port) for part in command]
        server = _servers.Server(name, command, port, set(ROUTES), cwd=EXAMPLE, env=env, **kw)
        servers.append(server)

    bench = args.bench_python
    for mode_name, python, drivers in (
        (PX_THREADS, args.ft_python, ("psycopg",)),
        (PX_INTERPRETERS, bench, ("asyncpg", "psycopg")),
        (PX_GIL, bench, ("asyncpg", "psycopg")),
    ):
        for driver in drivers:
            env = _servers.server_env(PYPARALLEL_MODE=PYPARALLEL_MODES[mode_name], TFB_DRIVER=driver, **db_env)
            add(px_name(mode_name, driver), _servers.pyparallel_command(python, workers, keepalive, "app:app"), env)
    peers = dict(processes=1 + workers)
    asgi = _servers.server_env(TFB_DRIVER="asyncpg", **db_env)
    wsgi = _servers.server_env(TFB_DRIVER="psycopg", **db_env)
    # The app sends its own Server field; uvicorn would add a second.
    uvicorn = _servers.uvicorn_command(bench, workers, keepalive, "app:asgi")
    add(PEERS[UVICORN], uvicorn[:-1] + ["--no-server-header", uvicorn[-1]], asgi, **peers)
    add(PEERS[GRANIAN_ASGI], _servers.granian_command(bench, "asgi", workers, "app:asgi"), asgi, **peers)
    gunicorn = _servers.gunicorn_command(bench, workers, keepalive, "gthread", "app:wsgi")
    add(PEERS[GUNICORN_GTHREAD], gunicorn, wsgi, **peers)
    return servers


def check_routes(server):
    """One request per route: 200, and the Server and Date fields."""
    for path in ROUTES.values():
        status, head, body = _servers.http_get(server.port, path)
        if status != 200:
            raise SystemExit(f"{server.name}: GET {path} answered {status} {body[:200]!r}{server.tail()}")
        for field in (b"server", b"date"):
            if not re.search(rb"(?im)^" + field + rb":", head):
                raise SystemExit(f"{server.name}: GET {path}: no {field.decode()} field in {head!r}")


# ---- measuring -------------------------------------------------------------------------


def measure(args, servers, cluster, latency_client):
    """(samples, latencies, facts): samples and latencies map (route, server
    name) to one result per round; each wrk sample has the database's CPU
    seconds over the run too."""

    def wrk(server, route, seconds):
        before = cluster.cpu_seconds()
        sample = _load.run_wrk(server, ROUTES[route], seconds)
        sample["db_cpu_s"] = cluster.cpu_seconds() - before
        return sample

    facts = {}
    with _servers.serving(servers, check_routes):
        jobs = {
            (route, s.name): (lambda s=s, route=route: wrk(s, route, args.duration))
            for route in args.routes
            for s in servers
        }
        if not args.quick:
            for route, name in jobs:
                wrk(next(s for s in servers if s.name == name), route, 1)
        samples = _common.rounds(jobs, args.repeat)
        latencies = {}
        if not args.quick:
            runs = {
                (route, s.name): (
                    lambda s=s, route=route: _load.run_latency(
                        latency_client, s, ROUTES[route], LATENCY_RATES[route], 16, 0.5, 2.0
                    )
                )
                for route in args.routes
                for s in servers
            }
            latencies = _common.rounds(runs, 1)
        for server in servers:
            rss, pss = server.memory_mib()
            facts[server.name] = {"rss_mib": rss, "pss_mib": pss, "startup_line": server.startup_line()}
    for server in servers:
        facts[server.name]["stop_note"] = server.stop_note
    return samples, latencies, facts


# ---- the report -----------------------------------------------------------------------

COLUMNS = (
    ("req/s", "req/s", "higher", lambda s: s["req_per_s"]),
    ("server CPU/request", "µs", "lower", lambda s: s["server_cpu_s"] / s["requests"] * 1e6),
    ("database CPU/request", "µs", "lower", lambda s: s["db_cpu_s"] / s["requests"] * 1e6),
)


def target_row(report, route, samples, ours, peers, func, higher, target, lines):
    """The best of ours over the best peer (by median), round by round."""
    pick = max if higher else min
    medians = {n: statistics.median(func(s) for s in samples[(route, n)]) for n in ours + peers}
    best, peer = pick(ours, key=medians.get), pick(peers, key=medians.get)
    pairs = list(zip((func(s) for s in samples[(route, best)]), (func(s) for s in samples[(route, peer)])))
    ratios = [a / b for a, b in pairs if b > 0]
    if not ratios:
        lines.append(f"target {route}: not measured ({peer}'s figure is not above zero)")
        return
    column = "req/s" if higher else "server CPU/request"
    report.add(f"{route} {column}: {best} / {peer}", best, ratios, "x", "higher" if higher else "lower", target,
               group="targets")  # fmt: skip


def build_report(args, servers, samples, latencies, facts, cluster_version):
    reference = max(
        (s.name for s in servers if s.name.startswith("pyparallel")),
        key=lambda n: statistics.median(x["req_per_s"] for x in samples[(args.routes[0], n)]),
    )
    report = _common.Report(
        "techempower",
        "TechEmpower's database tests on PostgreSQL",
        {
            "connections": _load.CONNECTIONS,
            "duration_s": args.duration,
            "routes": {route: ROUTES[route] for route in args.routes},
            "latency_rates": LATENCY_RATES,
            "pool_size_per_worker": 10,
            "postgres": cluster_version,
        },
        reference=reference,
    )
    names = [s.name for s in servers]
    for route in args.routes:
        group = f"TechEmpower {route}"
        for column, unit, better, func in COLUMNS:
            for name in names:
                values = [func(s) for s in samples[(route, name)]]
                report.add(f"{group} {column}", name, values, unit, better, group=group, column=column)
        for name in names:
            rows = latencies.get((route, name))
            if rows:
                report.add(f"{group} p99", name, [r["p99_us"] / 1000 for r in rows], "ms", "lower", group=group,
                           column="p99")  # fmt: skip
    lines = []
    ours = [n for n in names if n.startswith("pyparallel")]
    peers = [n for n in names if not n.startswith("pyparallel")]
    for route in args.routes:
        rate = THROUGHPUT_TARGETS[route]
        target_row(report, route, samples, ours, peers, COLUMNS[0][3], True, (">=", rate), lines)
        target_row(report, route, samples, ours, peers, COLUMNS[1][3], False, ("<=", CPU_TARGET), lines)
    report.note(
        f"wrk -t1 -c{_load.CONNECTIONS} -d{args.duration}s on 127.0.0.1"
        + ("" if args.quick else ", after a 1 s warm-up per server and route")
        + f"; PostgreSQL {cluster_version} on the same cores (fsync off), pools of 10 connections per worker"
    )
    if latencies:
        rates = ", ".join(f"{route} {LATENCY_RATES[route]:g}" for route in args.routes)
        report.note(f"p99: GET at a fixed rate (req/s: {rates}) over 16 connections, 2 s after 0.5 s, open loop")
    for name, fact in facts.items():
        if name.startswith("pyparallel") and fact["startup_line"]:
            report.note(f"{name}: {fact['startup_line']}")
        if fact["stop_note"]:
            report.note(f"{name}: server {fact['stop_note']}")
    for (route, name), rows in samples.items():
        errors = [s["socket_errors"] for s in rows if s["socket_errors"]]
        if errors:
            report.note(f"{route} / {name}: wrk socket errors: {errors}")
    for (route, name), rows in latencies.items():
        failed = [r["errors"] + r["bad_status"] + r["unanswered"] for r in rows]
        if any(failed):
            report.note(f"{route} / {name}: latency requests failed: {failed}")
    report.params["facts"] = facts
    report.params["samples"] = [
        {"route": route, "contender": name, "runs": rows, "latency": latencies.get((route, name))}
        for (route, name), rows in samples.items()
    ]
    return report, lines


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    venv = os.path.join(ROOT_DIR, "{}", "bin", "python")
    p.add_argument("--duration", type=int, default=None, metavar="S", help="seconds of each wrk run (default 3)")
    p.add_argument("--ft-python", default=venv.format(".venv-ft"), metavar="PY", help="3.13t (default .venv-ft)")
    p.add_argument(
        "--bench-python",
        default=venv.format(".venv-bench"),
        metavar="PY",
        help="3.13 with the peers and asyncpg and psycopg-binary (default .venv-bench); pyparallel's 3.13 modes too",
    )
    p.add_argument("--route", action="append", choices=list(ROUTES), help="measure only this route (repeatable)")
    p.add_argument("--keepalive", type=float, default=600.0, metavar="S", help="keep-alive timeout (default 600)")
    args = _common.parse(p, sys.argv[1:] if argv is None else argv, repeats=(3, 1))
    args.duration = args.duration or (1 if args.quick else 3)
    args.routes = args.route or list(ROUTES)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    for python in (args.ft_python, args.bench_python):
        if not os.access(python, os.X_OK):
            raise SystemExit(f"{python}: no such interpreter (see --ft-python, --bench-python)")
    _servers.raise_open_files_limit()
    latency_client = _common.build_c_tool("latency_client.c", ["-lm"])
    try:
        cluster = pgcluster.Cluster()
    except pgcluster.PostgresMissing as exc:
        raise SystemExit(str(exc)) from None
    with cluster:
        version = cluster.psql("SHOW server_version").strip()
        servers = contenders(args, cluster)
        samples, latencies, facts = measure(args, servers, cluster, latency_client)
    report, lines = build_report(args, servers, samples, latencies, facts, version)
    doc = report.finish(args, _common.environment(args))
    print()
    for line in target_lines(doc, lines):
        print(line)
    return doc


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    main(sys.argv[1:])
