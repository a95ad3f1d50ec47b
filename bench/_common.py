"""What the core-runtime benchmarks share: options, timing rounds, /proc, reports.

Every script in bench/ measures pyparallel and its peers back to back in one
run on one (shared, noisy) machine, so each measurement is repeated in
rounds and the median is what counts. A round runs every contender once, in
an order rotated from round to round, so that a burst of noise from another
process lands on all contenders alike rather than on whichever ran last.

A script builds a Report: rows of (metric, contender, samples), each metric
saying whether lower or higher is better and, for pyparallel's row, the
target the issue sets. Report.finish() prints a table in which every row is
also given as a ratio to pyparallel's row of the same metric, and writes the
same data as JSON (--json PATH) for bench/run.py to collect; every script's
main(argv) returns that document too, so run.py may import the scripts or run
them as subprocesses (the latter keeps one scenario's memory, eternalized
objects and worker threads away from the next).

The workload functions live in _workloads.py and are loaded here through
load_workloads(): compiled from their source text (never from a cached .pyc),
as a user's module is on machines that set PYTHONDONTWRITEBYTECODE=1, and
optionally a second time from freshly written bytecode, so a script can show
what importing from source costs on the free-threaded build (a module compiled
from source keeps mortal code constants whose reference counts the threads
running it contend on).
"""

import argparse
import functools
import importlib.machinery
import importlib.util
import json
import os
import platform
import py_compile
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
OURS = "pyparallel"
# Marks the rows whose function was loaded from bytecode (load_workloads).
PYC = ", .pyc"
DEFAULT_WORKERS = 2


# ---- options ----------------------------------------------------------------


def parser(description):
    """An argument parser with the options every script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short run (about 15 s) with fewer items and rounds")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help="rounds of measurement; the median is reported (default 5, 3 with --quick; http.py, apps.py: 3, 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="workers of pyparallel and of every peer pool (default: $PYPARALLEL_WORKERS, else 2)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--peers-only",
        action="store_true",
        help="measure only the peers (for an interpreter without pyparallel); otherwise a failed import is an error",
    )
    return p


def parse(p, argv, repeats=(5, 3)):
    """Parses argv and settles the defaults that depend on --quick; repeats:
    the default rounds of a full and of a quick run."""
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = repeats[1] if args.quick else repeats[0]
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.workers is None:
        args.workers = int(os.environ.get("PYPARALLEL_WORKERS") or DEFAULT_WORKERS)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    # Other processes on the machine skew every figure: record how busy it
    # was before this run started.
    args.load_before = os.getloadavg()[0]
    # Set before pyparallel is imported (its runtime reads it when it starts)
    # and inherited by the servers the echo benchmark starts.
    os.environ["PYPARALLEL_WORKERS"] = str(args.workers)
    return args


def import_pyparallel(args):
    """pyparallel, or None with --peers-only when it cannot be imported."""
    try:
        import pyparallel

        if not hasattr(pyparallel, "submit_work"):
            # A directory without its __init__ imports as a namespace package.
            raise ImportError(f"{list(pyparallel.__path__)} holds no pyparallel API")
    except ImportError as exc:
        if not args.peers_only:
            raise SystemExit(
                f"cannot import pyparallel ({exc}); run this with the venv that has it (.venv-ft), or pass --peers-only"
            ) from None
        print(f"pyparallel not importable ({exc}): measuring the peers only", file=sys.stderr)
        return None
    if args.peers_only:
        return None
    return pyparallel


# ---- workload modules -----------------------------------------------------


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module from its source text even when a valid .pyc exists."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def _load(name, loader):
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as the import system does, and under its own
    # name so that multiprocessing can pickle its functions by reference.
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def load_workloads(with_bytecode=False):
    """The _workloads module compiled from source, and its .pyc twin or None.

    The twin is loaded from bytecode written to a temporary file (under the
    name _workloads_pyc), as it would be imported on a machine that caches
    bytecode. It is for threads only: multiprocessing's children import
    _workloads by name.
    """
    path = os.path.join(BENCH_DIR, "_workloads.py")
    from_source = _load("_workloads", _SourceOnlyLoader("_workloads", path))
    if not with_bytecode:
        return from_source, None
    with tempfile.TemporaryDirectory() as tmp:
        cfile = os.path.join(tmp, "_workloads_pyc.pyc")
        py_compile.compile(path, cfile=cfile, doraise=True)
        loader = importlib.machinery.SourcelessFileLoader("_workloads_pyc", cfile)
        from_bytecode = _load("_workloads_pyc", loader)
    return from_source, from_bytecode


def mp_context():
    """The multiprocessing context of the peers: forkserver.

    Forking a process that already runs threads (pyparallel's workers, a
    ThreadPoolExecutor) is unsafe; forkserver is also the default from 3.14.
    Its children import the workload module from bench/ by name.
    """
    import multiprocessing

    if BENCH_DIR not in sys.path:
        sys.path.insert(0, BENCH_DIR)
    return multiprocessing.get_context("forkserver")


def build_c_tool(source_name, libs=()):
    """The binary of the C load generator bench/<source_name> (which may
    include bench/clients.h), compiled into build/bench/ unless an up-to-date
    binary is there."""
    source = os.path.join(BENCH_DIR, source_name)
    binary = os.path.join(os.path.dirname(BENCH_DIR), "build", "bench", os.path.splitext(source_name)[0])
    newest_input = max(os.path.getmtime(path) for path in (source, os.path.join(BENCH_DIR, "clients.h")))
    if os.path.exists(binary) and os.path.getmtime(binary) >= newest_input:
        return binary
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    cc = os.environ.get("CC") or "cc"
    command = [cc, "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", source, "-o", binary, *libs]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cannot build the load generator: {' '.join(command)}\n{result.stderr}")
    return binary


# ---- measuring ---------------------------------------------------------------

now = time.perf_counter


def rounds(contenders, repeat):
    """Runs every contender once per round, `repeat` rounds; returns samples.

    contenders maps a name to a callable that performs one measurement and
    returns its value. The first contender of round r is the r-th (mod their
    number), so no contender always runs first or last.
    """
    names = list(contenders)
    samples = {name: [] for name in names}
    for r in range(repeat if names else 0):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            samples[name].append(contenders[name]())
    return samples


def time_rounds(runs, repeat, warm_up=None, cpu_clocks=None):
    """Wall and CPU seconds per round for each callable of runs, which must agree.

    runs maps a contender's name to a callable doing the whole job once and
    returning its result; a contender whose result differs from the others'
    fails the benchmark rather than be measured. warm_up maps the same names
    to callables run once beforehand (by default, runs themselves).
    cpu_clocks maps a name to a callable returning the CPU seconds used so
    far by everything that does that contender's work (by default
    cpu_seconds(): this process). Returns (wall, cpu): name -> samples each.

    CPU time is reported beside wall time because the machine is shared: a
    busy neighbour stretches wall time, but barely changes how much CPU the
    work itself takes, so the CPU figures show a contender's overhead (and
    its reference-count contention) even when the scaling figures are noisy.
    """
    cpu_clocks = cpu_clocks or {}
    for run in (warm_up or runs).values():
        run()
    results = {}

    def once(name):
        clock = cpu_clocks.get(name, cpu_seconds)
        cpu, start = clock(), now()
        results[name] = runs[name]()
        return now() - start, clock() - cpu

    samples = rounds({name: functools.partial(once, name) for name in runs}, repeat)
    first = next(iter(results.values()))
    if any(result != first for result in results.values()):
        raise SystemExit(f"the contenders' results differ: {results}")
    return (
        {name: [wall for wall, _ in s] for name, s in samples.items()},
        {name: [cpu for _, cpu in s] for name, s in samples.items()},
    )


def cpu_seconds(pids=()):
    """User plus system CPU time of this process (all threads) and of pids."""
    return time.process_time() + sum(proc_cpu_seconds(pid) for pid in pids)


def pool_cpu_clock(context):
    """A CPU clock for multiprocessing work: this process and its live children."""
    return lambda: cpu_seconds([child.pid for child in context.active_children()])


def proc_cpu_seconds(pid):
    """User plus system CPU time of process `pid` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) is in parentheses and may itself contain
    # spaces or parentheses, so the fields are counted after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def environment(args, px=None):
    """The header of a report: machine, interpreter, and pyparallel's runtime."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    env = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_build": "free-threaded" if _free_threaded_build() else "gil",
        "gil_enabled": gil,
        "executable": sys.executable,
        "PYPARALLEL_WORKERS": os.environ.get("PYPARALLEL_WORKERS"),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "load_average_before": args.load_before,
        "load_average_after": os.getloadavg()[0],
    }
    if px is not None:
        stats = px.stats()
        env.update(
            pyparallel_mode=stats.get("mode"), io_backend=stats.get("io"), pyparallel_workers=stats.get("workers")
        )
    return env


def _free_threaded_build():
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


# ---- reports -----------------------------------------------------------------

_CHECKS = {
    "<=": lambda value, bound: value <= bound,
    ">=": lambda value, bound: value >= bound,
}


class Report:
    """The rows of one scenario, printed as a table and written as JSON.

    Ratios are taken against the rows of the reference contender (pyparallel,
    or one of its configurations when a report has several). A row may name
    a group and a column: bench/run.py lays each group out as one table with
    a line per contender and a column per metric (by default the group is
    the report and the column the metric).
    """

    def __init__(self, scenario, title, params, reference=OURS):
        self.scenario = scenario
        self.title = title
        self.params = params
        self.reference = reference
        self.rows = []
        self.notes = []

    def add(self, metric, contender, samples, unit, better, target=None, group=None, column=None):
        """Adds a row; better is "lower" or "higher"; target e.g. ("<=", 2.0)."""
        if better not in ("lower", "higher"):
            raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
        if target is not None and target[0] not in _CHECKS:
            raise ValueError(f"target must be ('<=' or '>=', bound), not {target!r}")
        samples = [float(s) for s in samples]
        self.rows.append(
            {
                "metric": metric,
                "contender": contender,
                "unit": unit,
                "better": better,
                "median": statistics.median(samples),
                "min": min(samples),
                "max": max(samples),
                "samples": samples,
                "target": list(target) if target else None,
                "group": group or self.title,
                "column": column or metric,
            }
        )

    def add_speedups(self, metric, seconds, baseline, target=None):
        """Adds a row per contender of seconds (name -> seconds per round)
        but the baseline: the baseline's time of each round divided by the
        contender's, higher is better; target applies to pyparallel's row."""
        for name, times in seconds.items():
            if name != baseline:
                self.add(
                    metric,
                    name,
                    [b / t for b, t in zip(seconds[baseline], times)],
                    "x",
                    "higher",
                    target if name == OURS else None,
                )

    def note(self, text):
        self.notes.append(text)

    def _complete_rows(self):
        ours = {row["metric"]: row["median"] for row in self.rows if row["contender"] == self.reference}
        for row in self.rows:
            base = ours.get(row["metric"])
            row["ratio_to_ours"] = (row["median"] / base) if base else None
            if row["target"]:
                op, bound = row["target"]
                row["target_met"] = _CHECKS[op](row["median"], bound)
            else:
                row["target_met"] = None

    def document(self, args, env):
        self._complete_rows()
        return {
            "scenario": self.scenario,
            "title": self.title,
            "quick": args.quick,
            "repeat": args.repeat,
            "workers": args.workers,
            "reference": self.reference,
            "params": self.params,
            "environment": env,
            "rows": self.rows,
            "notes": self.notes,
        }

    def finish(self, args, env):
        """Prints the table (and notes), writes --json, returns the document."""
        doc = self.document(args, env)
        print_document(doc)
        if args.json:
            directory = os.path.dirname(os.path.abspath(args.json))
            os.makedirs(directory, exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
        return doc


def _fmt(value):
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def print_document(doc, out=None):
    """Prints a report document as a plain-text table."""
    out = out or sys.stdout
    env = doc["environment"]
    runtime = ""
    if env.get("pyparallel_mode"):
        runtime = f", pyparallel {env['pyparallel_mode']} mode, {env['io_backend']}"
    build = "GIL build"
    if env["python_build"] == "free-threaded":
        build = f"free-threaded, GIL {'on' if env['gil_enabled'] else 'off'}"
    print(f"\n== {doc['title']} ==", file=out)
    print(
        f"{env['cpu']}, {env['cores']} cores, Linux {env['kernel']}, "
        f"Python {env['python']} ({build}){runtime}; "
        f"{doc['workers']} workers; median of {doc['repeat']} rounds"
        f"{' (quick)' if doc['quick'] else ''}; load average "
        f"{env['load_average_before']:.2f} before, "
        f"{env['load_average_after']:.2f} after",
        file=out,
    )
    reference = doc.get("reference", OURS)
    if reference != OURS:
        print(f"ratios: a contender's median / {reference}'s", file=out)
    header = ("metric", "contender", "median", "unit", "min..max", "ratio to ours", "target")
    lines = []
    for row in doc["rows"]:
        arrow = "lower is better" if row["better"] == "lower" else "higher is better"
        target = ""
        if row["target"]:
            op, bound = row["target"]
            verdict = "met" if row["target_met"] else "MISSED"
            target = f"{op} {_fmt(bound)}: {verdict}"
        ratio = row["ratio_to_ours"]
        lines.append(
            (
                f"{row['metric']} ({arrow})",
                row["contender"],
                _fmt(row["median"]),
                row["unit"],
                f"{_fmt(row['min'])}..{_fmt(row['max'])}",
                "-" if ratio is None else f"{ratio:.2f}x",
                target,
            )
        )
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    for i, line in enumerate([header] + lines):
        cells = [cell.rjust(w) if j in (2, 4, 5) else cell.ljust(w) for j, (cell, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip(), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)
    for text in doc["notes"]:
        print(f"note: {text}", file=out)
