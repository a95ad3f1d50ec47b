"""Runs every benchmark scenario back to back and collects the results.

`make bench` runs this with the free-threaded venv; `make bench-quick` adds
--quick. Each scenario script runs in a subprocess of its own (so one
scenario's worker threads, eternalized objects and memory stay away from the
next), writes its report as JSON, and prints its table with ratios against
pyparallel as it goes. The collected reports are written to
bench/results/latest.json, and their tables to bench/results/latest.md.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402  (the scripts' shared table printer)

# In the order a reader meets them: the runtime's overheads, then its
# scaling, then serving.
SCENARIOS = ["submit_work", "map", "shared_dict", "echo", "http"]


def run_scenario(name, quick, raw_dir):
    path = os.path.join(raw_dir, f"{name}.json")
    if os.path.exists(path):
        os.unlink(path)
    cmd = [sys.executable, os.path.join(HERE, f"{name}.py"), "--json", path]
    if quick:
        cmd.append("--quick")
    started = time.monotonic()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    if proc.returncode != 0 or not os.path.exists(path):
        print(f"bench/run.py: {name} failed (exit {proc.returncode})",
              file=sys.stderr)
        return None
    with open(path) as f:
        doc = json.load(f)
    doc["seconds"] = round(elapsed, 1)
    return doc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="the short version of every scenario")
    p.add_argument("--only", action="append", choices=SCENARIOS,
                   help="run only this scenario (repeatable)")
    args = p.parse_args(argv)

    results = os.path.join(HERE, "results")
    raw_dir = os.path.join(results, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    names = args.only or SCENARIOS
    docs, failed = [], []
    for name in names:
        doc = run_scenario(name, args.quick, raw_dir)
        (docs if doc else failed).append(doc or name)

    with open(os.path.join(results, "latest.json"), "w") as f:
        json.dump({"quick": args.quick, "reports": docs, "failed": failed},
                  f, indent=2)
        f.write("\n")
    tables = io.StringIO()
    for doc in docs:
        _common.print_document(doc, out=tables)
    with open(os.path.join(results, "latest.md"), "w") as f:
        f.write("# Benchmark results\n\n")
        f.write("Produced by `make bench`"
                f"{' (quick)' if args.quick else ''}; every ratio compares "
                "a contender with pyparallel measured in the same run.\n\n")
        f.write("```\n" + tables.getvalue().strip() + "\n```\n")
        if failed:
            f.write("\nScenarios that failed: " + ", ".join(failed) + "\n")
    print(f"\nwrote {os.path.relpath(results)}/latest.md and latest.json"
          f"{'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
