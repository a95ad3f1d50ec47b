"""Worker interpreters across run() cycles.

In mode "interpreters" the worker interpreters outlive a run: px.run()
parks them when it ends and the next run with as many workers takes them
back. Ending and creating them each time grew the process by about 7.5 MiB
per cycle on CPython 3.13, most of it memory CPython keeps of every ended
interpreter, and made every run pay their start-up again. The programs
below run in a fresh process in the mode of this test run, so the same
checks hold (trivially) in modes "threads" and "gil", where the work runs in
the main interpreter.
"""

from conftest import interpreters_mode, run_script

CYCLES_PROGRAM = """
import gc
import os
import sys

import pyparallel as px


def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def interpreter_id():
    import _interpreters
    return _interpreters.get_current()[0]


def sys_path_head():
    return sys.path[0]


if __name__ == "__main__":
    cycles = int(sys.argv[1])
    ids = set()
    for i in range(cycles):
        futures = [px.submit_work(interpreter_id) for _ in range(8)]
        px.run()
        ids.update(f.result() for f in futures)
        gc.collect()
        if i == 1:
            settled = resident_mib()
    print("growth", round(resident_mib() - settled, 1))
    print("interpreters", len(ids))
    sys.path.insert(0, "/nonexistent-marker")
    f = px.submit_work(sys_path_head)
    px.run()
    print("path", f.result())
"""

WORKER_COUNT_PROGRAM = """
import os

import pyparallel as px


def interpreter_id():
    import _interpreters
    return _interpreters.get_current()[0]


def ids_of_one_run():
    futures = [px.submit_work(interpreter_id) for _ in range(8)]
    px.run()
    return {f.result() for f in futures}


if __name__ == "__main__":
    first = ids_of_one_run()
    os.environ["PYPARALLEL_WORKERS"] = "1"
    second = ids_of_one_run()
    print("overlap", len(first & second))
    print("second", len(second))
"""


def test_run_cycles_do_not_grow_the_process_and_reuse_the_workers(tmp_path):
    out = dict(line.split(" ", 1) for line in run_script(tmp_path, CYCLES_PROGRAM, "30", timeout=120))
    # 28 cycles at ~7.5 MiB each grew it by ~210 MiB before; allocator
    # noise is a few MiB.
    assert float(out["growth"]) < 24, out
    expected = 2 if interpreters_mode() else 1
    assert int(out["interpreters"]) == expected, out
    # A program's sys.path changes between runs reach the parked workers.
    assert out["path"] == "/nonexistent-marker", out


def test_another_worker_count_starts_new_worker_interpreters(tmp_path):
    out = dict(line.split(" ", 1) for line in run_script(tmp_path, WORKER_COUNT_PROGRAM, timeout=120))
    if interpreters_mode():
        assert out == {"overlap": "0", "second": "1"}, out
    else:
        assert out == {"overlap": "1", "second": "1"}, out
