"""Benchmark: a key-value store shared by the workers, read and written from all of them at once.

The store holds --keys int keys with int values. Each round, every worker
runs --ops operations (reads, or writes, of keys spread over the store) at
the same time as the others, through:

  pyparallel            px.dict (in mode interpreters: the SharedDict every
                        interpreter sees), the workers' work items via
                        px.submit_work
  Manager().dict()      multiprocessing's proxy of a dict in a server
                        process, used by a Pool of as many processes
  SharedBuffer table    fixed 8-byte slots of a px.SharedBuffer, one per
                        key, read and written through memoryview by the
                        same work items (no lock: a lower bound for what a
                        store without locking costs)

and reports operations per second (all workers together; the median over
rounds), pyparallel's throughput as a multiple of Manager's (target: at
least 10), and the memory each store takes per key. What each contender
reads is checked against what the store was filled with before the rounds
start.

  PYPARALLEL_MODE=interpreters python bench/shared_kv.py [--quick] [--keys N] [--ops N] [--json PATH]
"""

import os
import sys

import _common

TARGET_VS_MANAGER = 10.0
SLOT = 8  # bytes of one value in the SharedBuffer table


# ---- what the workers run (module level: workers find it by name) ----------


def kv_reads(store, worker, ops, keys):
    total = 0
    key = worker
    for _ in range(ops):
        total += store[key]
        key = (key + 7919) % keys
    return total


def kv_writes(store, worker, ops, keys):
    key = worker
    for i in range(ops):
        store[key] = i
        key = (key + 7919) % keys
    return ops


def table_reads(buf, worker, ops, keys):
    return kv_reads(memoryview(buf).cast("q"), worker, ops, keys)


def table_writes(buf, worker, ops, keys):
    return kv_writes(memoryview(buf).cast("q"), worker, ops, keys)


# ---- memory ----------------------------------------------------------------------


def rss_bytes(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def filled(make, keys, pid="self"):
    """A store made and filled with keys entries, and the RSS it added."""
    before = rss_bytes(pid() if callable(pid) else pid)
    store = make()
    for key in range(keys):
        store[key] = key
    return store, rss_bytes(pid() if callable(pid) else pid) - before


# ---- contenders --------------------------------------------------------------------


def on_workers(px, func, store, workers, ops, keys):
    futures = [px.submit_work(func, store, w, ops, keys) for w in range(workers)]
    return sum(f.result() for f in futures)


def on_pool(pool, func, store, workers, ops, keys):
    results = [pool.apply_async(func, (store, w, ops, keys)) for w in range(workers)]
    return sum(r.get() for r in results)


def expected_sum(workers, ops, keys):
    """What kv_reads returns over every worker while store[k] == k."""
    return sum(kv_reads(range(keys), w, ops, keys) for w in range(workers))


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=10_000, metavar="N", help="keys in the store (default 10000)")
    p.add_argument(
        "--ops",
        type=int,
        default=None,
        metavar="N",
        help="operations per worker and round for pyparallel and the "
        "table (default 200000, 50000 with --quick); Manager "
        "does a tenth of them",
    )
    args = _common.parse(p, argv)
    ops = args.ops or (50_000 if args.quick else 200_000)
    manager_ops = max(1, ops // 10)
    if args.keys < args.workers:
        p.error("--keys must be at least --workers")
    px = _common.import_pyparallel(args)
    if px is None:
        raise SystemExit("shared_kv needs pyparallel (its px.dict and SharedBuffer)")
    workers, keys = args.workers, args.keys

    context = _common.mp_context()
    manager = context.Manager()
    pool = context.Pool(workers)
    try:
        store, px_memory = filled(px.dict, keys)
        shared, manager_memory = filled(manager.dict, keys, lambda: manager._process.pid)
        buf = px.SharedBuffer(keys * SLOT)
        view = memoryview(buf).cast("q")
        for key in range(keys):
            view[key] = key
        del view

        runs = {
            "reads": {
                _common.OURS: (lambda: on_workers(px, kv_reads, store, workers, ops, keys), ops),
                "Manager().dict()": (lambda: on_pool(pool, kv_reads, shared, workers, manager_ops, keys), manager_ops),
                "SharedBuffer table": (lambda: on_workers(px, table_reads, buf, workers, ops, keys), ops),
            },
            "writes": {
                _common.OURS: (lambda: on_workers(px, kv_writes, store, workers, ops, keys), ops),
                "Manager().dict()": (lambda: on_pool(pool, kv_writes, shared, workers, manager_ops, keys), manager_ops),
                "SharedBuffer table": (lambda: on_workers(px, table_writes, buf, workers, ops, keys), ops),
            },
        }
        report = _common.Report(
            "shared_kv",
            "shared_kv: a key-value store read and written by every worker",
            {"keys": keys, "ops_per_worker": ops, "manager_ops_per_worker": manager_ops},
        )
        for kind in ("reads", "writes"):
            contenders = runs[kind]
            # The reads check what each store holds: the keys themselves.
            if kind == "reads":
                for name, (run, count) in contenders.items():
                    if run() != expected_sum(workers, count, keys):
                        raise SystemExit(f"{name} read back wrong values")
            else:
                for run, _ in contenders.values():
                    run()

            def timed(run):
                start = _common.now()
                run()
                return _common.now() - start

            seconds = _common.rounds(
                {name: (lambda run=run: timed(run)) for name, (run, _) in contenders.items()}, args.repeat
            )
            rates = {name: [workers * contenders[name][1] / s for s in samples] for name, samples in seconds.items()}
            for name, samples in rates.items():
                report.add(f"{kind} per second, {workers} workers", name, samples, "ops/s", "higher")
            report.add(
                f"{kind}: throughput over Manager().dict()'s",
                _common.OURS,
                [ours / theirs for ours, theirs in zip(rates[_common.OURS], rates["Manager().dict()"])],
                "x",
                "higher",
                (">=", TARGET_VS_MANAGER),
            )
        for name, memory in (
            (_common.OURS, px_memory),
            ("Manager().dict()", manager_memory),
            ("SharedBuffer table", keys * SLOT),
        ):
            report.add("memory per key", name, [memory / keys], "bytes", "lower")
    finally:
        pool.terminate()
        manager.shutdown()

    report.note(
        f"{keys:,} keys; per round every worker does {ops:,} operations "
        f"({manager_ops:,} for Manager().dict(), whose every operation is a round trip "
        f"to its server process)"
    )
    report.note(
        "memory: RSS growth of the process holding the store while it was filled "
        "(Manager: its server process); the table: its slots"
    )
    report.note("the SharedBuffer table takes no lock: concurrent writers to one slot race")
    report.note(
        f"pyparallel mode: {px.stats()['mode']}; PYPARALLEL_MODE={os.environ.get('PYPARALLEL_MODE', '(unset)')}"
    )
    return report.finish(args, _common.environment(args, px))


if __name__ == "__main__":
    main(sys.argv[1:])
