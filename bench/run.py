"""Runs every benchmark scenario against its peers, back to back, and writes the results.

`make bench` runs this on .venv-bench (the GIL-build venv with the Python
peers and matplotlib); `make bench-quick` adds --quick (about two minutes:
one round, 1 s wrk runs, 1000 idle connections, no p99 for the apps, and
neither shared_dict, echo nor ws). Each scenario script runs in a subprocess of
its own, on the interpreter it measures (so one scenario's worker threads,
eternalized objects and memory stay away from the next):

  http                        bench/http.py: every HTTP server, every HTTP
                              scenario (it starts the servers on .venv-ft,
                              .venv-gil and .venv-bench itself)
  apps                        bench/apps.py: a Flask and a Starlette app on
                              pyparallel and on gunicorn, granian and uvicorn
                              (servers started the same way)
  techempower                 bench/techempower.py: TechEmpower's database
                              tests against a PostgreSQL it starts, the same
                              servers with asyncpg and psycopg (not with
                              --quick)
  map, submit_work            on .venv-ft (3.13t, mode threads)
  map, submit_work            on .venv-gil with PYPARALLEL_MODE=interpreters
   (interpreters)
  shared_kv                   on .venv-gil with PYPARALLEL_MODE=interpreters
                              (px.dict shared by every interpreter against
                              multiprocessing's Manager().dict())
  shared_dict, echo           on .venv-ft (not with --quick)
  ws                          bench/ws.py: WebSocket echo and a broadcast
                              room on pyparallel (.venv-ft, .venv-gil) and
                              on uvicorn, granian and the websockets
                              library (not with --quick)
  recycle                     bench/recycle.py: Flask under load with
                              --max-requests, each pyparallel mode against
                              gunicorn gthread (not with --quick)

Every script prints its table with ratios against pyparallel as it goes and
writes its report as JSON; this collects them into bench/results/latest.json,
lays them out as bench/results/latest.md, and draws the PNG plots there
(bench/_report.py). SIGTERM or Ctrl-C stops the scenario under way, whose
script stops its servers.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _report  # noqa: E402  (bench/ is on the path only from here on)

VENV_FT = os.path.join(ROOT, ".venv-ft", "bin", "python")
VENV_GIL = os.path.join(ROOT, ".venv-gil", "bin", "python")

# name -> (script, interpreter (None: this one), PYPARALLEL_MODE, in --quick).
# In the order a reader meets them: serving first, then the runtime.
SCENARIOS = {
    "http": ("http.py", None, None, True),
    "apps": ("apps.py", None, None, True),
    "techempower": ("techempower.py", None, None, False),
    "map": ("map.py", VENV_FT, None, True),
    "map-interpreters": ("map.py", VENV_GIL, "interpreters", True),
    "submit_work": ("submit_work.py", VENV_FT, None, True),
    "submit_work-interpreters": ("submit_work.py", VENV_GIL, "interpreters", True),
    "shared_kv": ("shared_kv.py", VENV_GIL, "interpreters", True),
    "shared_dict": ("shared_dict.py", VENV_FT, None, False),
    "echo": ("echo.py", VENV_FT, None, False),
    "ws": ("ws.py", None, None, False),
    "recycle": ("recycle.py", None, None, False),
}

_running = None


def stop_running(signum, frame):
    """Passes SIGTERM on to the scenario under way (which stops its servers)."""
    if _running is not None and _running.poll() is None:
        _running.send_signal(signal.SIGTERM)
        try:
            _running.wait(60)
        except subprocess.TimeoutExpired:
            _running.kill()
    raise SystemExit(128 + signum)


def run_scenario(name, quick, raw_dir):
    global _running
    script, python, mode, _ = SCENARIOS[name]
    path = os.path.join(raw_dir, f"{name}.json")
    if os.path.exists(path):
        os.unlink(path)
    cmd = [python or sys.executable, os.path.join(HERE, script), "--json", path]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ)
    env.pop("PYPARALLEL_MODE", None)
    if mode:
        env["PYPARALLEL_MODE"] = mode
    print(
        f"\n### {name}: {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}"
        f"{f' (PYPARALLEL_MODE={mode})' if mode else ''}",
        flush=True,
    )
    started = time.monotonic()
    _running = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
    try:
        status = _running.wait()
    except KeyboardInterrupt:
        # The scenario got the Ctrl-C too (same process group): let it
        # stop its servers before leaving.
        try:
            _running.wait(60)
        except subprocess.TimeoutExpired:
            _running.kill()
        raise
    _running = None
    elapsed = time.monotonic() - started
    if status != 0 or not os.path.exists(path):
        print(f"bench/run.py: {name} failed (exit {status})", file=sys.stderr)
        return None
    with open(path) as f:
        doc = json.load(f)
    doc["name"] = name
    doc["seconds"] = round(elapsed, 1)
    return doc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the short version of every scenario (about two minutes)")
    p.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)")
    p.add_argument(
        "--render", action="store_true", help="run nothing: lay out latest.json again as latest.md and plots"
    )
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_running)

    results = os.path.join(HERE, "results")
    if args.render:
        with open(os.path.join(results, "latest.json")) as f:
            run = scrubbed(json.load(f))
        with open(os.path.join(results, "latest.json"), "w") as f:
            json.dump(run, f, indent=2)
            f.write("\n")
        return write_outputs(run, results)
    raw_dir = os.path.join(results, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    names = args.only or [name for name, spec in SCENARIOS.items() if spec[3] or not args.quick]
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    docs, failed = [], []
    for name in names:
        doc = run_scenario(name, args.quick, raw_dir)
        (docs if doc else failed).append(doc or name)
    run = {
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "skipped": [name for name in SCENARIOS if name not in names],
        "reports": docs,
        "failed": failed,
    }
    run = scrubbed(run)
    with open(os.path.join(results, "latest.json"), "w") as f:
        json.dump(run, f, indent=2)
        f.write("\n")
    return write_outputs(run, results)


def scrubbed(run):
    """run without this machine's paths (the checkout, home, temporary
    directories), which the reports pick up from interpreters and servers."""
    text = json.dumps(run)
    for path, name in ((ROOT, "."), (tempfile.gettempdir(), "$TMPDIR"), (os.path.expanduser("~"), "~")):
        text = text.replace(json.dumps(path)[1:-1], name)
    return json.loads(text)


def write_outputs(run, results):
    plots = _report.draw_plots(run, results)
    with open(os.path.join(results, "latest.md"), "w") as f:
        f.write(_report.markdown(run, plots))
    failed = run["failed"]
    print(
        f"\nwrote {os.path.relpath(results, ROOT)}/latest.md, latest.json"
        f"{', ' + ', '.join(plots) if plots else ''} after {run['seconds']:.0f} s"
        f"{'; failed: ' + ', '.join(failed) if failed else ''}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
