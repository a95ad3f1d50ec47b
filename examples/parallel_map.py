"""px.map: a CPU-bound pure-Python function over all cores of one process.

    python examples/parallel_map.py [--limit 300000] [--chunks 64]
    python examples/parallel_map.py --selftest

The task: for each number below LIMIT, the length of its Collatz sequence;
report the number with the longest one. The range is cut into chunks, and
px.map runs longest_chain on the chunks in parallel on the workers and
returns their results in input order, like the builtin map. On a
free-threaded Python this uses every core (compare the two timings it
prints); on a GIL build (gil mode) the workers take turns, so expect no
speed-up there.

--selftest runs a small range and checks px.map's answer (and order) against
the builtin map's.
"""

import argparse
import sys
import time

import pyparallel as px


def chain_length(n):
    steps = 1
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def longest_chain(bounds):
    """The (length, number) of the longest Collatz chain in range(*bounds)."""
    best = (0, 0)
    for n in range(*bounds):
        length = chain_length(n)
        if length > best[0]:
            best = (length, n)
    return best


def chunk_bounds(limit, chunks):
    size = max(1, limit // chunks)
    return [(start, min(start + size, limit)) for start in range(1, limit, size)]


def timed(func, *args):
    started = time.perf_counter()
    result = func(*args)
    return result, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300_000)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--selftest", action="store_true", help="a small run checked against the builtin map")
    args = parser.parse_args(argv)
    if args.selftest:
        args.limit, args.chunks = 30_000, 16

    bounds = chunk_bounds(args.limit, args.chunks)
    parallel, parallel_time = timed(px.map, longest_chain, bounds)
    serial, serial_time = timed(lambda: list(map(longest_chain, bounds)))
    stats = px.stats()
    if parallel != serial:
        print("parallel_map: FAILED: px.map and the builtin map disagree", file=sys.stderr)
        return 1
    length, number = max(parallel)
    print(f"below {args.limit}: {number} has the longest Collatz chain ({length} numbers)")
    print(
        f"px.map on {stats['workers']} workers ({stats['mode']} mode): {parallel_time:.3f} s; "
        f"builtin map: {serial_time:.3f} s; speed-up {serial_time / parallel_time:.2f}x"
    )
    if args.selftest:
        print(f"parallel_map selftest: ok ({len(bounds)} chunks, results in input order)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
