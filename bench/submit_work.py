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

import sys
from concurrent.futures import ThreadPoolExecutor

import _common

TARGET_US = 2.0
TPE = "ThreadPoolExecutor"
MP = "multiprocessing.Pool"


def batch_round_trip(submit, wait, func, n):
    """µs per item to submit n calls of func, then wait for all of them."""
    start = _common.now()
    pending = [submit(func) for _ in range(n)]
    for item in pending:
        wait(item)
    return (_common.now() - start) / n * 1e6


def lone_latency(submit, wait, func, n):
    """µs per item to submit one call and wait for it, n times."""
    start = _common.now()
    for _ in range(n):
        wait(submit(func))
    return (_common.now() - start) / n * 1e6


def future_result(future):
    return future.result()


def async_result(result):
    return result.get()


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=None, metavar="N",
                   help="items per round trip measurement (default 50000, "
                        "20000 with --quick)")
    p.add_argument("--lone", type=int, default=None, metavar="N",
                   help="items per latency measurement (default 2000, 500 "
                        "with --quick)")
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
    processes = _common.mp_context().Pool(args.workers)
    contenders.append((f"{MP}({args.workers}).apply_async",
                       processes.apply_async, async_result))
    try:
        for _, submit, wait in contenders:
            batch_round_trip(submit, wait, func, min(items, 2_000))
        batch = _common.rounds(
            {name: (lambda s=submit, w=wait: batch_round_trip(s, w, func, items))
             for name, submit, wait in contenders}, args.repeat)
        single = _common.rounds(
            {name: (lambda s=submit, w=wait: lone_latency(s, w, func, lone))
             for name, submit, wait in contenders}, args.repeat)
    finally:
        threads.shutdown()
        processes.terminate()
        processes.join()

    report = _common.Report(
        "submit_work", "submit_work: cost of one work item",
        {"items": items, "lone_items": lone, "function": "return_none"})
    for name, _, _ in contenders:
        target = ("<=", TARGET_US) if name == _common.OURS else None
        report.add("round trip per item", name, batch[name], "µs", "lower", target)
    for name, _, _ in contenders:
        report.add("latency of a lone item", name, single[name], "µs", "lower")
    report.note(f"round trip: submit {items} items, then wait for all; "
                f"latency: submit one and wait for it, {lone} times")
    return report.finish(args, _common.environment(args, px))


if __name__ == "__main__":
    main(sys.argv[1:])
