"""Benchmark: recycling workers under load (--max-requests), pyparallel against gunicorn.

The Flask app of bench/apps.py (/json), one worker per core, under wrk
(-c64, --duration seconds), twice per server: without a request limit, and
with --max-requests N (default 3000: each worker is recycled several times
in a run). How each recycles:

  pyparallel 3.13 interpreters  the worker's interpreter is replaced in place,
                                while the other worker serves
  pyparallel 3.13 gil           the process reloads (re-exec with the
  pyparallel 3.13t threads      listening socket, as on SIGHUP)
  gunicorn gthread              the master forks a new worker process, which
                                imports the app

Printed per server: req/s without and with the limit and their ratio (what
recycling costs that server), the recycles seen in its output, failed
requests (wrk's socket errors; a non-2xx answer fails the run) and its RSS
after; then each with-limit req/s against gunicorn gthread's. Rounds rotate
the order of the servers; the median counts. Every server is stopped at the
end, on error and Ctrl-C too.

  python bench/recycle.py [--quick] [--duration S] [--max-requests N] [--json PATH]
"""

import json
import os
import re
import sys

import _common
import _load
import _servers
from _servers import GUNICORN_GTHREAD, PX_GIL, PX_INTERPRETERS, PX_THREADS, PYPARALLEL_MODES

ROOT_DIR = os.path.dirname(_common.BENCH_DIR)
APP = "apps_flask:app"
ROUTE = "/json"
# What each server writes once per recycle.
RECYCLED = {
    PX_INTERPRETERS: re.compile(r"serves with a new interpreter"),
    PX_GIL: re.compile(r"reload: process \d+ serves"),
    PX_THREADS: re.compile(r"reload: process \d+ serves"),
    GUNICORN_GTHREAD: re.compile(r"Booting worker with pid"),
}


def contenders(args, limit):
    """The servers, with --max-requests limit (None: no limit)."""
    servers = []

    def add(name, python, command, **kw):
        port = _servers.free_port()
        server = _servers.Server(name, [part.format(port=port) for part in command], port, {ROUTE}, **kw)
        servers.append(server)

    extra = ["--max-requests", str(limit)] if limit else []
    for name, python in ((PX_INTERPRETERS, args.gil_python), (PX_GIL, args.gil_python), (PX_THREADS, args.ft_python)):
        env = _servers.server_env(PYPARALLEL_MODE=PYPARALLEL_MODES[name])
        command = _servers.pyparallel_command(python, args.workers, 600, APP) + extra
        add(name, python, command, env=env)
    command = _servers.gunicorn_command(args.bench_python, args.workers, 600, "gthread", APP)
    command[-1:-1] = extra + ["--log-level", "info"]
    add(GUNICORN_GTHREAD, args.bench_python, command, env=_servers.server_env(), processes=1 + args.workers)
    return servers


def check(server):
    status, _, body = _servers.http_get(server.port, ROUTE)
    if status != 200 or json.loads(body) != {"message": "Hello, World!"}:
        raise SystemExit(f"{server.name}: {ROUTE} answered {status} {body[:80]!r}")


def measure(args, limit):
    """name -> list of wrk results (one per round) for the servers with limit."""
    with _servers.serving(contenders(args, limit), check) as servers:

        def run(server):
            seen = [0]  # the recycles in the server's output so far

            def one():
                result = _load.run_wrk(server, ROUTE, args.duration)
                total = len(RECYCLED[server.name].findall(server.output_text()))
                result["recycles"], seen[0] = total - seen[0], total
                return result

            return one

        return _common.rounds({server.name: run(server) for server in servers}, args.repeat)


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    venv = os.path.join(ROOT_DIR, "{}", "bin", "python")
    p.add_argument("--duration", type=int, default=None, metavar="S", help="seconds of each wrk run (default 5)")
    p.add_argument("--max-requests", type=int, default=3000, metavar="N", help="the limit (default 3000)")
    p.add_argument("--ft-python", default=venv.format(".venv-ft"), metavar="PY", help="3.13t (default .venv-ft)")
    p.add_argument("--gil-python", default=venv.format(".venv-gil"), metavar="PY", help="3.13 (default .venv-gil)")
    p.add_argument(
        "--bench-python", default=venv.format(".venv-bench"), metavar="PY", help="gunicorn's (default .venv-bench)"
    )
    args = _common.parse(p, sys.argv[1:] if argv is None else argv, repeats=(3, 1))
    args.duration = args.duration or (2 if args.quick else 5)
    if args.max_requests < 1:
        p.error("--max-requests must be at least 1")
    sys.path.insert(0, _servers.PEERS)
    _servers.raise_open_files_limit()
    plain = measure(args, None)
    limited = measure(args, args.max_requests)
    params = {"route": ROUTE, "app": APP, "duration_s": args.duration, "max_requests": args.max_requests}
    title = f"Flask {ROUTE} with --max-requests {args.max_requests}"
    report = _common.Report("recycle", title, params, PX_INTERPRETERS)
    for name, rounds in limited.items():
        report.add("req/s recycling", name, [r["req_per_s"] for r in rounds], "req/s", "higher")
        kept = [b["req_per_s"] / f["req_per_s"] for b, f in zip(rounds, plain[name])]
        report.add("kept", name, kept, "x", "higher")
        report.add("recycles", name, [r["recycles"] for r in rounds], "", "higher")
        report.add("runs with socket errors", name, [bool(r["socket_errors"]) for r in rounds], "", "lower")
        report.add("RSS after", name, [r["rss_mib"] for r in rounds], "MiB", "lower")
    return report.finish(args, _common.environment(args))


if __name__ == "__main__":
    main()
