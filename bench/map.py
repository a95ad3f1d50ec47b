"""Benchmark: px.map of CPU-bound pure Python, as a speedup over one thread.

The function is _workloads.checksum, sized at start-up to take about 100 µs
of CPU per item on this interpreter. Each round times the same list of items
through:

  serial                                 list(map(func, items)) on the main thread
  pyparallel                             px.map(func, items)
  ThreadPoolExecutor(workers).map        same interpreter
  multiprocessing.Pool(workers).map      forkserver, default chunk size

and the speedup of a contender is the serial time of the round divided by
its own (the median over rounds is reported; target for pyparallel: at least
1.95 on two workers). The function is compiled from source, as a user's
module is with PYTHONDONTWRITEBYTECODE=1; the rows marked ".pyc" run the same
function loaded from bytecode, which shows what the mortal code constants of
a module compiled from source cost the threads (pyparallel should not care;
in mode interpreters, where nothing is shared, pyparallel has no such row).

  python bench/map.py [--quick] [--items N] [--item-us US] [--json PATH]
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import _common

TARGET_SPEEDUP = 1.95


def calibrate(func, item_us):
    """The argument n for which func(n) takes about item_us µs of CPU here.

    Measured in the thread's CPU time, not wall time, so that other
    processes on the machine do not shrink the items.
    """
    n = 1_000
    while True:
        timings = []
        for _ in range(5):
            start = time.thread_time()
            func(n)
            timings.append(time.thread_time() - start)
        seconds = sorted(timings)[len(timings) // 2]
        if seconds >= 0.005:
            return max(1, round(n * item_us * 1e-6 / seconds))
        n *= 4


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--items", type=int, default=None, metavar="N", help="items per map (default 8000, 2000 with --quick)"
    )
    p.add_argument(
        "--item-us", type=float, default=100.0, metavar="US", help="CPU time of one item, in µs (default 100)"
    )
    args = _common.parse(p, argv)
    count = args.items or (2_000 if args.quick else 8_000)
    px = _common.import_pyparallel(args)
    source, bytecode = _common.load_workloads(with_bytecode=True)
    n = calibrate(source.checksum, args.item_us)
    items = [n] * count

    threads = ThreadPoolExecutor(args.workers)
    context = _common.mp_context()
    processes = context.Pool(args.workers)
    runs = {"serial": lambda: list(map(source.checksum, items))}
    if px is not None:
        runs[_common.OURS] = lambda: px.map(source.checksum, items)
        # A worker interpreter (mode interpreters) imports the function's
        # module by name, and the .pyc twin has none it could import; the
        # twin is about reference-count contention, which it cannot have.
        if px.stats()["mode"] != "interpreters":
            runs[_common.OURS + _common.PYC] = lambda: px.map(bytecode.checksum, items)
    tpe = f"ThreadPoolExecutor({args.workers}).map"
    runs[tpe] = lambda: list(threads.map(source.checksum, items))
    runs[tpe + _common.PYC] = lambda: list(threads.map(bytecode.checksum, items))
    pool = f"multiprocessing.Pool({args.workers}).map"
    runs[pool] = lambda: processes.map(source.checksum, items)
    try:
        seconds, cpu = _common.time_rounds(runs, args.repeat, cpu_clocks={pool: _common.pool_cpu_clock(context)})
    finally:
        threads.shutdown()
        processes.terminate()
        processes.join()

    report = _common.Report(
        "map", "map: CPU-bound pure Python over all workers", {"items": count, "item_us": args.item_us, "checksum_n": n}
    )
    report.add_speedups("speedup over serial", seconds, "serial", (">=", TARGET_SPEEDUP))
    for name in runs:
        report.add("time per item", name, [t / count * 1e6 for t in seconds[name]], "µs", "lower")
    for name in runs:
        report.add("CPU time per item", name, [t / count * 1e6 for t in cpu[name]], "µs", "lower")
    report.note(
        f"{count} items of checksum({n}), about {args.item_us:g} µs of CPU "
        f"each; speedup = the round's serial time / the contender's"
    )
    report.note(
        "CPU time: all threads of this process (and the pool's "
        "processes for multiprocessing), whatever else the machine runs"
    )
    report.note(
        "function compiled from source (as imported with "
        "PYTHONDONTWRITEBYTECODE=1; in mode interpreters each worker "
        "imports _workloads itself); '.pyc' rows: the same function "
        "loaded from bytecode"
    )
    return report.finish(args, _common.environment(args, px))


if __name__ == "__main__":
    main(sys.argv[1:])
