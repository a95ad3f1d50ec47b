"""Benchmark: Flask and Starlette applications, unchanged, on pyparallel and on the servers that run them today.

Every server runs the same application modules (bench/peers/apps_flask.py and
apps_starlette.py, which render apps_fortunes.py's rows with
templates/fortunes.html), one worker per core, on 127.0.0.1:

  Flask (WSGI)       pyparallel in mode threads (3.13t), interpreters and gil
                     (3.13); gunicorn sync and gthread; granian --interface wsgi
  Starlette (ASGI)   pyparallel in its three modes; uvicorn --workers N on
                     uvloop and httptools; granian --interface asgi

  /json      TechEmpower's json test, through the framework
  /fortunes  TechEmpower's fortunes test without its database: 20 rows held
             in memory, one added per request, sorted, escaped by Jinja2
  /sleep     (Starlette) awaits asyncio.sleep(0.01), with 256 connections:
             a worker must serve its other connections while handlers wait

Each (route, server) gets a wrk run (-t1, -c64; /sleep -c256) in rounds whose
order rotates (the median counts): req/s, the server's CPU time per request
(every process of the server, from /proc), its RSS and PSS summed over its
processes after the run. Then p99 latency at a fixed rate from the open-loop
latency client (bench/latency_client.c). Before the servers start, the app's
own CPU per request is measured on every interpreter that runs a server: the
application called in-process in a loop (a WSGI environ, or an ASGI scope,
built once and copied per call; ASGI calls run as asyncio tasks, 256 at a
time, as a server runs requests), in CPU time, the fastest of several rounds,
as bench/http.py measures its compute limit. A server's overhead is its CPU
per request minus the app's on the server's interpreter: what serving costs.

--quick: one round of 1 s wrk runs without warm-up, and no p99. The issue's
targets (the best pyparallel mode against the best peer, same run, round by
round) are printed at the end as met / not met; a target not met does not
fail the run. Every server is stopped at the end (its whole
process group), on error, SIGTERM and Ctrl-C too.

  python bench/apps.py [--quick] [--duration S] [--json PATH] [--app flask|starlette]
"""

import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys

import _common
import _load
import _servers
from _servers import (
    GRANIAN,
    GRANIAN_ASGI,
    GUNICORN_GTHREAD,
    GUNICORN_SYNC,
    PX_GIL,
    PX_INTERPRETERS,
    PX_THREADS,
    PYPARALLEL_MODES,
    UVICORN,
)

ROOT_DIR = os.path.dirname(_common.BENCH_DIR)
REFERENCE = PX_INTERPRETERS

App = collections.namedtuple("App", "key label spec interface routes")
APPS = {
    "flask": App("flask", "Flask", "apps_flask:app", "wsgi", ("/json", "/fortunes")),
    "starlette": App("starlette", "Starlette", "apps_starlette:app", "asgi", ("/json", "/fortunes", "/sleep")),
}
# wrk's connections per route (the others: _load.CONNECTIONS), and the
# latency client's: a /sleep request holds its connection 10 ms, so the
# fixed rate needs more of them in flight.
CONNECTIONS = {"/sleep": 256}
LATENCY_CONNECTIONS = {"/sleep": 64}
SLEEP_BODY = b"slept"
JSON_MESSAGE = {"message": "Hello, World!"}

# The targets of the issue: req/s of the best pyparallel mode over the best
# peer's, per (app, route); pyparallel's lowest overhead over the best
# peer's; the RSS of mode threads over the lowest of the peers'.
THROUGHPUT_TARGETS = {
    ("flask", "/json"): 1.15,
    ("flask", "/fortunes"): 1.05,
    ("starlette", "/json"): 1.3,
    ("starlette", "/fortunes"): 1.05,
    ("starlette", "/sleep"): 1.3,
}
OVERHEAD_TARGET = 0.5
RSS_TARGET = 0.6

# The app called in-process on one interpreter: prints {path: CPU seconds
# per call}, the fastest of `rounds` rounds of `calls` calls (CPU time: a
# busy machine stretches wall time, not this), after a warm-up that also
# checks every call answers 200.
APP_PROBE = """\
import asyncio, importlib, io, json, sys, time

peers, spec, interface, paths, calls, rounds = sys.argv[1:]
sys.path.insert(0, peers)
module, _, attr = spec.partition(":")
app = getattr(importlib.import_module(module), attr)
calls, rounds = int(calls), int(rounds)
BATCH = 256


def environ(path):
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000", "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def wsgi_calls(path, n, statuses):
    base = environ(path)

    def start_response(status, headers, exc_info=None):
        statuses.append(int(status.split()[0]))

    for _ in range(n):
        env = dict(base)
        env["wsgi.input"] = io.BytesIO()
        body = app(env, start_response)
        try:
            for _chunk in body:
                pass
        finally:
            if hasattr(body, "close"):
                body.close()


def scope(path):
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1:8080")], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def asgi_calls(path, n, statuses):
    base = scope(path)

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one():
        await app(dict(base, state={}), receive, send)

    for start in range(0, n, BATCH):
        await asyncio.gather(*(one() for _ in range(min(BATCH, n - start))))


async def measure(path):
    async def run(n, statuses):
        if interface == "asgi":
            await asgi_calls(path, n, statuses)
        else:
            wsgi_calls(path, n, statuses)

    statuses = []
    await run(min(calls, 200), statuses)
    if set(statuses) != {200}:
        raise SystemExit(f"{spec} {path} in-process: status {sorted(set(statuses))}")
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        await run(calls, [])
        best = min(best, (time.thread_time() - start) / calls)
    return best


async def main():
    return {path: await measure(path) for path in paths.split(",")}


print(json.dumps(asyncio.run(main())))
"""

VERSIONS_PROBE = """\
import importlib.metadata as m, json, sys
found = {"python": sys.version.split()[0]}
for name in sys.argv[1:]:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        found[name] = None
print(json.dumps(found))
"""
FRAMEWORKS = ("flask", "werkzeug", "jinja2", "markupsafe", "starlette", "anyio")
PEER_PACKAGES = FRAMEWORKS + ("uvicorn", "uvloop", "httptools", "gunicorn", "granian")


# ---- the servers -------------------------------------------------------------


def contenders(args, app):
    """The servers of app (not started); each knows the interpreter it runs
    on (server.python), whose in-process figure its overhead is taken from."""
    workers, keepalive = args.workers, args.keepalive
    env = _servers.server_env()
    servers = []

    def add(name, python, command, **kw):
        port = _servers.free_port()
        command = [part.format(port=port) for part in command]
        server = _servers.Server(name, command, port, set(app.routes), **kw)
        server.python = python
        servers.append(server)

    if not args.peers_only:
        for name, python in (
            (PX_THREADS, args.ft_python),
            (PX_INTERPRETERS, args.gil_python),
            (PX_GIL, args.gil_python),
        ):
            px_env = _servers.server_env(PYPARALLEL_MODE=PYPARALLEL_MODES[name])
            add(name, python, _servers.pyparallel_command(python, workers, keepalive, app.spec), env=px_env)
    peers = dict(env=env, processes=1 + workers)
    bench = args.bench_python
    if app.interface == "wsgi":
        for name, worker_class in ((GUNICORN_SYNC, "sync"), (GUNICORN_GTHREAD, "gthread")):
            add(name, bench, _servers.gunicorn_command(bench, workers, keepalive, worker_class, app.spec), **peers)
        add(GRANIAN, bench, _servers.granian_command(bench, "wsgi", workers, app.spec), **peers)
    else:
        add(UVICORN, bench, _servers.uvicorn_command(bench, workers, keepalive, app.spec), **peers)
        add(GRANIAN_ASGI, bench, _servers.granian_command(bench, "asgi", workers, app.spec), **peers)
    return servers


# ---- checks ------------------------------------------------------------------


def expected_fortunes():
    """The /fortunes page every server must send: the template rendered by
    Jinja2 alone, with autoescaping as both frameworks configure it."""
    import apps_fortunes  # bench/peers is on sys.path (see main)

    try:
        import jinja2
    except ImportError:
        raise SystemExit(
            f"{sys.executable}: no jinja2 (bench/requirements.txt installs it; run this on .venv-bench)"
        ) from None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(apps_fortunes.TEMPLATES), autoescape=True)
    return env.get_template(apps_fortunes.TEMPLATE).render(fortunes=apps_fortunes.rows()).encode()


def check_routes(server, fortunes):
    """One request per route: status, body, and a Date field everywhere."""
    for route in sorted(server.scenarios):
        status, head, body = _servers.http_get(server.port, route)
        if route == "/json":
            try:
                good = json.loads(body) == JSON_MESSAGE
            except ValueError:
                good = False
        else:
            good = body == (fortunes if route == "/fortunes" else SLEEP_BODY)
        if status != 200 or not good:
            raise SystemExit(f"{server.name}: GET {route} answered {status} {body[:200]!r}{server.tail()}")
        if not re.search(rb"(?im)^date:", head):
            raise SystemExit(f"{server.name}: GET {route}: no Date field in {head!r}")


# ---- measuring ----------------------------------------------------------------


def app_cpu(python, app, args):
    """{route: CPU seconds per call} of app called in-process on python."""
    calls, rounds = (200, 3) if args.quick else (500, 7)
    command = [python, "-c", APP_PROBE, _servers.PEERS, app.spec, app.interface, ",".join(app.routes)]
    # From bench/peers: `python -c` puts the working directory first on
    # sys.path, and bench/http.py would shadow the standard library's http.
    out = subprocess.run(command + [str(calls), str(rounds)], capture_output=True, text=True, cwd=_servers.PEERS)
    if out.returncode != 0:
        raise SystemExit(f"{python}: {app.label} in-process failed:\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def measure_app(app, servers, args, latency_client, fortunes):
    """Starts app's servers, checks them, runs wrk and the latency client in
    rounds, stops them. Returns (samples, latency, facts): samples and
    latency map (route, server name) to one result per round."""
    facts = {}
    with _servers.serving(servers, lambda server: check_routes(server, fortunes)):
        for server in servers:
            rss, pss = server.memory_mib()
            facts[server.name] = {"start_s": server.ready_s, "rest_rss_mib": rss, "rest_pss_mib": pss}

        def wrk(server, route, seconds):
            connections = CONNECTIONS.get(route, _load.CONNECTIONS)
            return _load.run_wrk(server, route, seconds, connections=connections)

        jobs = {
            (route, s.name): (lambda s=s, route=route: wrk(s, route, args.duration))
            for route in app.routes
            for s in servers
        }
        if not args.quick:
            for (route, name), _ in jobs.items():
                wrk(next(s for s in servers if s.name == name), route, 1)
        samples = _common.rounds(jobs, args.repeat)

        def latency(server, route):
            connections = LATENCY_CONNECTIONS.get(route, args.latency_connections)
            return _load.run_latency(
                latency_client,
                server,
                route,
                args.latency_rate,
                connections,
                args.latency_warmup,
                args.latency_duration,
            )

        runs = {
            (route, s.name): (lambda s=s, route=route: latency(s, route))
            for route in app.routes
            if route in args.latency_routes
            for s in servers
        }
        latencies = _common.rounds(runs, args.repeat)
    for server in servers:
        facts[server.name]["startup_line"] = server.startup_line()
        facts[server.name]["stop_note"] = server.stop_note
    return samples, latencies, facts


# ---- the report -------------------------------------------------------------------


def per_request(sample):
    return sample["server_cpu_s"] / sample["requests"]


# The wrk columns of a route's table: (column, unit, better, figure of one
# run given the app's own CPU seconds per request on the server's interpreter).
WRK_COLUMNS = (
    ("req/s", "req/s", "higher", lambda s, own: s["req_per_s"]),
    ("server CPU/request", "µs", "lower", lambda s, own: per_request(s) * 1e6),
    ("app CPU/request", "µs", "lower", lambda s, own: own * 1e6),
    ("overhead/request", "µs", "lower", lambda s, own: (per_request(s) - own) * 1e6),
    ("server RSS", "MiB", "lower", lambda s, own: s["rss_mib"]),
    ("server PSS", "MiB", "lower", lambda s, own: s["pss_mib"]),
)


def add_app_rows(report, app, servers, samples, latencies, cpu):
    for route in app.routes:
        group = f"{app.label} {route}"
        measured = [s for s in servers if (route, s.name) in samples]
        for column, unit, better, func in WRK_COLUMNS:
            for server in measured:
                own = cpu[(server.python, app.key)][route]
                values = [func(s, own) for s in samples[(route, server.name)]]
                if column == "app CPU/request":
                    values = values[:1]  # one figure per interpreter, not per round
                report.add(f"{group} {column}", server.name, values, unit, better, group=group, column=column)
        for server in measured:
            rows = latencies.get((route, server.name))
            if rows:
                p99 = [r["p99_us"] / 1000 for r in rows]
                report.add(f"{group} p99", server.name, p99, "ms", "lower", group=group, column="p99")


def ratio_row(report, metric, samples_of, names_ours, names_peers, value, higher, target, lines):
    """Adds the row of target (op, bound): value() of the best of ours over
    that of the best peer (by median), round by round; samples_of(name) ->
    the rounds' samples. A line in lines when it cannot be measured."""
    pick = max if higher else min
    if not names_ours or not names_peers:
        lines.append(f"target {metric}: not measured (no {'pyparallel' if not names_ours else 'peer'} server)")
        return
    medians = {name: statistics.median(value(s) for s in samples_of(name)) for name in names_ours + names_peers}
    ours = pick(names_ours, key=medians.get)
    peer = pick(names_peers, key=medians.get)
    pairs = list(zip((value(s) for s in samples_of(ours)), (value(s) for s in samples_of(peer))))
    if any(b <= 0 for _, b in pairs):
        lines.append(f"target {metric}: not measured ({peer}'s figure is not above zero)")
        return
    metric = f"{metric}: {ours} / {peer}"
    report.add(metric, ours, [a / b for a, b in pairs], "x", "higher" if higher else "lower", target, group="targets")


def add_targets(report, app, servers, samples, cpu, lines):
    ours = [s.name for s in servers if s.name in PYPARALLEL_MODES]
    peers = [s.name for s in servers if s.name not in PYPARALLEL_MODES]
    python = {s.name: s.python for s in servers}
    for route in app.routes:
        group = f"{app.label} {route}"
        have = ([n for n in ours if (route, n) in samples], [n for n in peers if (route, n) in samples])

        def rounds_of(name, route=route):
            return [dict(s, name=name) for s in samples[(route, name)]]

        def overhead(s, route=route):
            return per_request(s) - cpu[(python[s["name"]], app.key)][route]

        bound = THROUGHPUT_TARGETS[(app.key, route)]
        ratio_row(report, f"{group} req/s", rounds_of, *have, lambda s: s["req_per_s"], True, (">=", bound), lines)
        ratio_row(report, f"{group} overhead", rounds_of, *have, overhead, False, ("<=", OVERHEAD_TARGET), lines)

    # A server's memory for the app: the most it held after any route's run
    # of the round.
    def memory_rounds(name):
        routes = [samples[(route, name)] for route in app.routes if (route, name) in samples]
        return [{"rss_mib": max(run["rss_mib"] for run in runs)} for runs in zip(*routes)]

    threads = [name for name in ours if name == PX_THREADS and memory_rounds(name)]
    peers = [name for name in peers if memory_rounds(name)]
    ratio_row(
        report,
        f"{app.label} RSS",
        memory_rounds,
        threads,
        peers,
        lambda s: s["rss_mib"],
        False,
        ("<=", RSS_TARGET),
        lines,
    )


def target_lines(doc, lines):
    """The report's target rows as lines that say met / not met."""
    out = []
    for row in doc["rows"]:
        if row["target"]:
            op, bound = row["target"]
            verdict = "met" if row["target_met"] else "not met"
            out.append(f"target {row['metric']} = {row['median']:.2f}x ({op} {bound:g}): {verdict}")
    return out + lines


def build_report(args, apps, servers, samples, latencies, facts, cpu, lines):
    report = _common.Report(
        "apps",
        "Applications: Flask and Starlette, unchanged, on every server",
        {
            "connections": _load.CONNECTIONS,
            "route_connections": CONNECTIONS,
            "wrk_threads": 1,
            "duration_s": args.duration,
            "latency_rate": args.latency_rate,
            "latency_connections": args.latency_connections,
            "latency_route_connections": LATENCY_CONNECTIONS,
            "latency_duration_s": args.latency_duration,
            "latency_routes": list(args.latency_routes),
            "keepalive_s": args.keepalive,
        },
        reference=REFERENCE,
    )
    for app in apps:
        add_app_rows(report, app, servers[app.key], samples[app.key], latencies[app.key], cpu)
    for app in apps:
        add_targets(report, app, servers[app.key], samples[app.key], cpu, lines)

    sleep = f" (/sleep: -c{CONNECTIONS['/sleep']})" if any("/sleep" in app.routes for app in apps) else ""
    report.note(
        f"wrk -t1 -c{_load.CONNECTIONS}{sleep} -d{args.duration}s on 127.0.0.1"
        + ("" if args.quick else ", after a 1 s warm-up per server and route")
    )
    if args.latency_routes:
        report.note(
            f"p99: GET at {args.latency_rate:g} req/s over {args.latency_connections} connections "
            f"(/sleep: {LATENCY_CONNECTIONS['/sleep']}), {args.latency_duration:g} s after "
            f"{args.latency_warmup:g} s of warm-up, open loop"
        )
    else:
        report.note("p99: not measured in a quick run")
    labels = {args.ft_python: "3.13t", args.gil_python: "3.13 (pyparallel's venv)"}
    labels.setdefault(args.bench_python, "3.13 (the peers' venv)")
    for app in apps:
        figures = "; ".join(
            f"{labels.get(python, python)} "
            + ", ".join(f"{route} {seconds * 1e6:.1f} µs" for route, seconds in cpu[(python, app.key)].items())
            for python in dict.fromkeys(s.python for s in servers[app.key])
        )
        report.note(f"{app.label} called in-process (CPU per request): {figures}")
    for app in apps:
        for name, fact in facts[app.key].items():
            if name in PYPARALLEL_MODES and fact["startup_line"]:
                report.note(f"{app.label} / {name}: {fact['startup_line']}")
            if fact["stop_note"]:
                report.note(f"{app.label} / {name}: server {fact['stop_note']}")
        for (route, name), rows in samples[app.key].items():
            errors = [s["socket_errors"] for s in rows if s["socket_errors"]]
            if errors:
                report.note(f"{app.label} {route} / {name}: wrk socket errors: {errors}")
        for (route, name), rows in latencies[app.key].items():
            failed = [r["errors"] + r["bad_status"] + r["unanswered"] for r in rows]
            if any(failed):
                report.note(f"{app.label} {route} / {name}: latency requests failed: {failed}")
    report.params["facts"] = facts
    report.params["app_cpu_s"] = {f"{key} {labels.get(p, p)}": figures for (p, key), figures in cpu.items()}
    report.params["samples"] = [
        {"app": key, "route": route, "contender": name, "runs": rows, "latency": latencies[key].get((route, name))}
        for key, by_route in samples.items()
        for (route, name), rows in by_route.items()
    ]
    return report


# ---- the run -------------------------------------------------------------------


def versions(args):
    """Interpreters and the frameworks' and peers' versions of each venv,
    and a note for every framework whose version differs between them."""
    found, lines = {}, []
    for key, python, names in (
        ("bench", args.bench_python, PEER_PACKAGES),
        ("gil", args.gil_python, FRAMEWORKS),
        ("ft", args.ft_python, FRAMEWORKS),
    ):
        out = subprocess.run([python, "-c", VERSIONS_PROBE, *names], capture_output=True, text=True, cwd=_servers.PEERS)
        found[key] = json.loads(out.stdout) if out.returncode == 0 else {}
    for name in FRAMEWORKS:
        seen = {key: found[key].get(name) for key in found}
        if len(set(seen.values())) > 1:
            lines.append(f"{name} differs between the venvs: {seen}")
    return found, lines


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    venv = os.path.join(ROOT_DIR, "{}", "bin", "python")
    p.add_argument(
        "--duration", type=int, default=None, metavar="S", help="seconds of each wrk run (default 3, 1 with --quick)"
    )
    p.add_argument("--ft-python", default=venv.format(".venv-ft"), metavar="PY", help="3.13t (default .venv-ft)")
    p.add_argument("--gil-python", default=venv.format(".venv-gil"), metavar="PY", help="3.13 (default .venv-gil)")
    p.add_argument(
        "--bench-python",
        default=venv.format(".venv-bench"),
        metavar="PY",
        help="the interpreter with gunicorn, granian, uvicorn and the frameworks (default .venv-bench)",
    )
    p.add_argument("--app", action="append", choices=list(APPS), help="measure only this application (repeatable)")
    p.add_argument(
        "--latency-rate",
        type=float,
        default=1000.0,
        metavar="R",
        help="requests per second of the p99 runs (default 1000)",
    )
    p.add_argument(
        "--latency-connections",
        type=int,
        default=16,
        metavar="N",
        help=f"connections of the p99 runs (default 16; /sleep: {LATENCY_CONNECTIONS['/sleep']})",
    )
    p.add_argument(
        "--keepalive", type=float, default=600.0, metavar="S", help="keep-alive timeout of every server (default 600)"
    )
    args = _common.parse(p, sys.argv[1:] if argv is None else argv, repeats=(3, 1))
    args.duration = args.duration or (1 if args.quick else 3)
    args.latency_warmup, args.latency_duration = 0.5, 2.0
    # A quick run leaves p99 out: windows short enough for it would be noise
    # (and a gunicorn sync worker blocked on an idle connection holds the
    # latency client for its 10 s of draining).
    args.latency_routes = () if args.quick else ("/json", "/fortunes", "/sleep")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    for python in (args.ft_python, args.gil_python, args.bench_python):
        if not os.access(python, os.X_OK):
            raise SystemExit(f"{python}: no such interpreter (see --ft-python, --gil-python, --bench-python)")
    sys.path.insert(0, _servers.PEERS)
    _servers.raise_open_files_limit()
    latency_client = _common.build_c_tool("latency_client.c", ["-lm"])
    fortunes = expected_fortunes()
    apps = [APPS[key] for key in (args.app or APPS)]

    servers = {app.key: contenders(args, app) for app in apps}
    cpu = {}
    for app in apps:
        for python in dict.fromkeys(s.python for s in servers[app.key]):
            cpu[(python, app.key)] = app_cpu(python, app, args)
    samples, latencies, facts = {}, {}, {}
    for app in apps:
        samples[app.key], latencies[app.key], facts[app.key] = measure_app(
            app, servers[app.key], args, latency_client, fortunes
        )
    lines = []
    report = build_report(args, apps, servers, samples, latencies, facts, cpu, lines)
    report.params["versions"], differences = versions(args)
    for text in differences:
        report.note(text)
    doc = report.finish(args, _common.environment(args))
    print()
    for line in target_lines(doc, lines):
        print(line)
    return doc


def exit_on_sigterm(signum, frame):
    # Raised in the main thread, so the servers are still stopped (finally).
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    main(sys.argv[1:])
