"""Benchmark: all workers reading one big shared dict, with and without px.eternalize.

A dict of --size entries (1,000,000 by default, int keys, str values) is built
on the main thread, as data loaded at start-up is. The work is a list of
items, each reading --block entries spread over the dict
(_workloads.lookup_block); the same items run

  serial                        on the main thread, one after the other
  pyparallel                    px.map over the workers
  ThreadPoolExecutor(workers)   .map on the same interpreter

and a contender's scaling is the round's serial time divided by its own
(target for pyparallel with the dict eternalized: at least 1.8 on two
workers). The phase with the plain dict runs first; then the dict is
eternalized (which cannot be undone) and the rounds run again. Eternalizing
helps the thread pool too, so the thread pool with the eternalized dict
separates the effect of eternalize from that of the runtime.

The function is compiled from source, as a user's module is with
PYTHONDONTWRITEBYTECODE=1: on 3.13t its code constants stay mortal and
threads running it contend on their reference counts. The rows marked ".pyc"
run it loaded from bytecode instead, so the table shows that cost for the
thread pool, and shows whether pyparallel avoids it.

  python bench/shared_dict.py [--quick] [--size N] [--lookups N] [--json PATH]
"""

import functools
import sys
from concurrent.futures import ThreadPoolExecutor

import _common

TARGET_SCALING = 1.8


def phase_contenders(px, threads, workers, functions, starts):
    """name -> callable running every item once and returning the sum."""
    source, bytecode = functions
    runs = {"serial": lambda: sum(map(source, starts))}
    if px is not None:
        runs[_common.OURS] = lambda: sum(px.map(source, starts))
        runs[_common.OURS + _common.PYC] = lambda: sum(px.map(bytecode, starts))
    name = f"ThreadPoolExecutor({workers})"
    runs[name] = lambda: sum(threads.map(source, starts))
    runs[name + _common.PYC] = lambda: sum(threads.map(bytecode, starts))
    return runs


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--size", type=int, default=1_000_000, metavar="N", help="entries of the shared dict (default 1000000)"
    )
    p.add_argument(
        "--lookups",
        type=int,
        default=None,
        metavar="N",
        help="lookups per round (default 1000000, 200000 with --quick)",
    )
    p.add_argument("--block", type=int, default=10_000, metavar="N", help="lookups per work item (default 10000)")
    args = _common.parse(p, argv)
    lookups = args.lookups or (200_000 if args.quick else 1_000_000)
    if args.size < 1 or args.block < 1 or lookups < args.block:
        p.error("--size and --block must be positive and --lookups >= --block")
    px = _common.import_pyparallel(args)
    source, bytecode = _common.load_workloads(with_bytecode=True)

    start = _common.now()
    table = source.make_table(args.size)
    build_seconds = _common.now() - start
    starts = list(range(0, lookups - args.block + 1, args.block))
    functions = (
        functools.partial(source.lookup_block, table, args.block),
        functools.partial(bytecode.lookup_block, table, args.block),
    )

    report = _common.Report(
        "shared_dict",
        "shared_dict: workers reading one big shared dict",
        {"size": args.size, "lookups": len(starts) * args.block, "block": args.block, "items": len(starts)},
    )
    threads = ThreadPoolExecutor(args.workers)
    try:
        phases = [("plain dict", None)]
        if px is not None:
            phases.append(("eternalized dict", px.eternalize))
        for label, prepare in phases:
            if prepare is not None:
                start = _common.now()
                prepare(table)
                eternalize_seconds = _common.now() - start
            runs = phase_contenders(px, threads, args.workers, functions, starts)
            warm_up = phase_contenders(px, threads, args.workers, functions, starts[: 2 * args.workers])
            seconds, cpu = _common.time_rounds(runs, args.repeat, warm_up)
            target = (">=", TARGET_SCALING) if prepare is not None else None
            report.add_speedups(f"scaling, {label}", seconds, "serial", target)
            lookups_done = len(starts) * args.block
            for name in runs:
                report.add(
                    f"time per lookup, {label}", name, [t / lookups_done * 1e9 for t in seconds[name]], "ns", "lower"
                )
            for name in runs:
                report.add(
                    f"CPU time per lookup, {label}", name, [t / lookups_done * 1e9 for t in cpu[name]], "ns", "lower"
                )
    finally:
        threads.shutdown()

    report.note(
        f"{args.size:,} entries built in {build_seconds:.2f} s; {len(starts)} items of {args.block:,} lookups per round"
    )
    if px is not None:
        report.note(f"px.eternalize of the dict took {eternalize_seconds:.2f} s")
    else:
        report.note("no eternalized phase: it needs pyparallel")
    report.note(
        "CPU time: all threads of this process, whatever else the "
        "machine runs; contention shows as CPU time above serial's"
    )
    report.note(
        "lookup_block compiled from source (as imported with "
        "PYTHONDONTWRITEBYTECODE=1); '.pyc' rows: loaded from bytecode"
    )
    return report.finish(args, _common.environment(args, px))


if __name__ == "__main__":
    main(sys.argv[1:])
