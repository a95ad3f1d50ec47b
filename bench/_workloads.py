"""The functions the core-runtime benchmarks run on workers, threads and processes.

They live in a module of their own, loaded by _common.load_workloads() from
source, because that is how a user's code reaches the workers: imported from a
.py file (with PYTHONDONTWRITEBYTECODE=1, always compiled from source). On the
free-threaded build such a module keeps mortal code constants (here 1000003
and 7919; small ints are immortal anyway), and threads that run its functions
at once contend on their reference counts; the benchmarks include that cost
rather than hide it. Keep the constants: they are part of what is measured.
"""


def return_none():
    """The empty work item: what submit_work costs by itself."""
    return None


def checksum(n):
    """CPU-bound pure Python: a rolling checksum of range(n) (about 1 µs per 10)."""
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1000003
    return total


def make_table(size):
    """The shared data: size int keys mapping to their decimal strings."""
    return {i: str(i) for i in range(size)}


def lookup_block(table, count, start):
    """Reads `count` entries of `table` spread over it, from position `start`.

    The keys are computed (not read from a shared list) so that the only
    objects shared between threads are the table, its values and this
    function's code.
    """
    size = len(table)
    total = 0
    for i in range(start, start + count):
        total += len(table[i * 7919 % size])
    return total
