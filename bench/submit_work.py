"""Benchmark: what one px.submit_work costs, against a thread pool and a process pool.

Two measurements, each for px.submit_work, concurrent.futures'
ThreadPoolExecutor(workers).submit on the same interpreter, and
multiprocessing.Pool(workers).apply_async (forkserver), all running the same
empty function (_workloads.return_none, loaded from source):

  round trip per item  submit N items, then wait for every future; the time
                       divided by N. This is the runtime's overhead per work
                       item when work is plentiful (target: at most 2 µs).
  latency per item     submit one item and wait for it before the next: the
                       time from submit to result for a lone item, wake-ups
                       included.

Every pool is created and warmed up before the first measurement; rounds run
the contenders in rotated order and the median of the rounds is reported.

  python bench/submit_work.py [--quick] [--items N] [--json PATH]
"""

import functools
import sys
from concurrent.futures import ThreadPoolExecutor

import _common

TARGET_US = 2.0
TPE = "ThreadPoolExecutor"
MP = "multiprocessing.Pool"


def submit_all_then_wait(submit, wait, func, n):
    """Submits n calls of func, then waits for every one of them."""
    pending = [submit(func) for _ in range(n)]
    for item in pending:
        wait(item)


def submit_and_wait_each(submit, wait, func, n):
    """Submits one call of func and waits for it, n times."""
    for _ in range(n):
        wait(submit(func))


def future_result(future):
    return future.result()


def async_result(result):
    return result.get()


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--items",
        type=int,
        default=None,
        metavar="N",
        help="items per round trip measurement (default 50000, 20000 with --quick)",
    )
    p.add_argument(
        "--lone",
        type=int,
        default=None,
        metavar="N",
        help="items per latency measurement (default 2000, 500 with --quick)",
    )
    args = _common.parse(p, argv)
    items = args.items or (20_000 if args.quick else 50_000)
    lone = args.lone or (500 if args.quick else 2_000)
    px = _common.import_pyparallel(args)
    workloads, _ = _common.load_workloads()
    func = workloads.return_none

    # (name, submit, wait) per contender; pyparallel's name is what ratios use.
    contenders = []
    if px is not None:
        contenders.append((_common.OURS, px.submit_work, future_result))
    threads = ThreadPoolExecutor(args.workers)
    contenders.append((f"{TPE}({args.workers})", threads.submit, future_result))
    context = _common.mp_context()
    processes = context.Pool(args.workers)
    pool = f"{MP}({args.workers}).apply_async"
    contenders.append((pool, processes.apply_async, async_result))
    clocks = {pool: _common.pool_cpu_clock(context)}

    def jobs(how, n):
        return {name: functools.partial(how, submit, wait, func, n) for name, submit, wait in contenders}

    try:
        warm_up = jobs(submit_all_then_wait, min(items, 2_000))
        batch, batch_cpu = _common.time_rounds(jobs(submit_all_then_wait, items), args.repeat, warm_up, clocks)
        single, _ = _common.time_rounds(jobs(submit_and_wait_each, lone), args.repeat, warm_up, clocks)
    finally:
        threads.shutdown()
        processes.terminate()
        processes.join()

    report = _common.Report(
        "submit_work",
        "submit_work: cost of one work item",
        {"items": items, "lone_items": lone, "function": "return_none"},
    )

    def per_item(samples, n):
        return [seconds / n * 1e6 for seconds in samples]

    for name, _, _ in contenders:
        target = ("<=", TARGET_US) if name == _common.OURS else None
        report.add("round trip per item", name, per_item(batch[name], items), "µs", "lower", target)
    for name, _, _ in contenders:
        report.add("CPU time per item (round trip)", name, per_item(batch_cpu[name], items), "µs", "lower")
    for name, _, _ in contenders:
        report.add("latency of a lone item", name, per_item(single[name], lone), "µs", "lower")
    report.note(
        f"round trip: submit {items} items, then wait for all; latency: submit one and wait for it, {lone} times"
    )
    report.note(
        "CPU time: all threads of this process (and the pool's "
        "processes for multiprocessing), whatever else the machine runs"
    )
    return report.finish(args, _common.environment(args, px))


if __name__ == "__main__":
    main(sys.argv[1:])
