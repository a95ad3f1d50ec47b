"""The cycle collector paced by the workers (src/binding/core/gcpace.c).

On a free-threaded CPython whose collector counts its own frees against its
next run (3.13.5t, gh-142048), collections drift apart while a program makes
reference cycles, and its memory grows. In mode threads and gil the workers
then collect once the heap grew by a quarter since the last collection,
and px.stats()["gc_paced"] counts those collections. Elsewhere (GIL builds,
mode interpreters, interpreters that count right) CPython paces itself and
pyparallel adds nothing.

Each test runs its program in a fresh process: the probe runs when a
process's first loop starts, on a heap of known size.
"""

import sysconfig

import pytest

from conftest import expected_mode, run_script

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

# The program's own probe of the drift, the same test as the binding's: a
# collection that frees 4096 cycles leaves the young count far below zero
# on an interpreter that counts those frees against its next run.
PROGRAM = """
    import gc, sys, time
    import pyparallel as px

    def drifts():
        gc.disable()
        gc.collect()
        for _ in range(4096):
            cycle = []
            cycle.append(cycle)
        del cycle
        gc.collect()
        young = gc.get_count()[0]
        gc.enable()
        return young < -2048

    class Node:
        __slots__ = ("other",)

    def garbage(pairs):
        for _ in range(pairs):
            a, b = Node(), Node()
            a.other, b.other = b, a
        return pairs

    def make_garbage_for(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            px.map(garbage, [2000] * 8)

    def main():
        drifting = drifts()
        stats = px.stats()
        ours = [c for c in gc.callbacks if getattr(c, "__name__", "") == "_px_gc_paced"]
        print("drifting", drifting)
        print("mode", stats["mode"])
        print("callbacks", len(ours))
        print("paced_at_start", stats["gc_paced"])
        make_garbage_for(1.5)
        print("paced_with_garbage", px.stats()["gc_paced"])
        gc.disable()
        time.sleep(0.2)  # a check under way as it was disabled ends first
        before = px.stats()["gc_paced"]
        make_garbage_for(0.5)
        print("paced_while_disabled", px.stats()["gc_paced"] - before)
        gc.enable()

    if __name__ == "__main__":
        main()
"""


def run_program(tmp_path):
    lines = run_script(tmp_path, PROGRAM, timeout=120)
    return {key: value for key, value in (line.split(" ", 1) for line in lines)}


@pytest.mark.skipif(not FREE_THREADED, reason="the drift is in the free-threaded collector")
@pytest.mark.skipif(expected_mode() == "interpreters", reason="worker interpreters are left to CPython")
def test_the_workers_collect_when_the_collector_drifts(tmp_path):
    out = run_program(tmp_path)
    if out["drifting"] != "True":
        # An interpreter with the fix: CPython paces itself.
        assert out["callbacks"] == "0", out
        assert int(out["paced_with_garbage"]) == 0, out
        return
    assert out["callbacks"] == "1", out
    assert int(out["paced_at_start"]) == 0, out
    # 8 million cyclic objects and more in 1.5 s: the heap grows by a
    # quarter many times over, and each time the workers collect.
    assert int(out["paced_with_garbage"]) >= 3, out
    # gc.disable() holds for the workers' collections too.
    assert int(out["paced_while_disabled"]) == 0, out


@pytest.mark.skipif(FREE_THREADED and expected_mode() != "interpreters", reason="paced there (the test above)")
def test_nothing_is_added_where_cpython_paces_itself(tmp_path):
    out = run_program(tmp_path)
    assert out["callbacks"] == "0", out
    assert out["paced_with_garbage"] == "0", out
    assert out["paced_while_disabled"] == "0", out
