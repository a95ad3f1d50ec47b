"""The reader-writer lock behind px.read_lock / px.write_lock
(pyparallel._core.RWLock): its nesting rules on one thread (also as a
hypothesis state machine), and its exclusion across threads, on plain
threads and on the engine's workers.
"""

import pickle
import threading
import time

import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pyparallel as px
from conftest import JOIN_TIMEOUT, run_on_threads
from pyparallel import _core

# ---- lock semantics on one thread -------------------------------------------


def test_nesting_rules():
    lock = _core.RWLock()
    with lock.read():
        with lock.read():  # read inside read
            pass
    with lock.write():
        with lock.write():  # write inside write
            with lock.read():  # read inside write
                pass
    with lock.read():
        with pytest.raises(RuntimeError, match="upgrade"):
            with lock.write():
                pass
    # Everything was released: another thread can take the write lock now.
    taken = []

    def take():
        lock.write().__enter__()
        taken.append(1)

    t = threading.Thread(target=take)
    t.start()
    t.join(JOIN_TIMEOUT)
    assert taken == [1] and "writer=True" in repr(lock)


def test_release_without_hold_raises():
    lock = _core.RWLock()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.read().__exit__(None, None, None)
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.write().__exit__(None, None, None)
    with lock.read():
        with pytest.raises(RuntimeError, match="does not hold"):
            lock.write().__exit__(None, None, None)


def test_rwlock_rejects_arguments_and_pickling():
    with pytest.raises(TypeError):
        _core.RWLock(1)
    with pytest.raises(TypeError):
        pickle.dumps(_core.RWLock())


class LockModel(RuleBasedStateMachine):
    """One thread's enter/exit sequences against a model of the nesting rules."""

    def __init__(self):
        super().__init__()
        self.lock = _core.RWLock()
        self.stack = []  # "r"/"w" of the holds entered, innermost last

    def holds_write(self):
        return "w" in self.stack

    @rule()
    def enter_read(self):
        self.lock.read().__enter__()
        self.stack.append("r")

    @rule()
    def enter_write(self):
        if self.stack and not self.holds_write():
            with pytest.raises(RuntimeError):
                self.lock.write().__enter__()
        else:
            self.lock.write().__enter__()
            self.stack.append("w")

    @precondition(lambda self: self.stack)
    @rule()
    def exit_innermost(self):
        kind = self.stack.pop()
        guard = self.lock.write() if kind == "w" else self.lock.read()
        guard.__exit__(None, None, None)

    @invariant()
    def state_matches(self):
        text = repr(self.lock)
        assert ("writer=True" in text) == self.holds_write()
        readers = 0 if self.holds_write() or not self.stack else 1
        assert f"readers={readers}" in text

    def teardown(self):
        while self.stack:
            self.exit_innermost()


TestLockModel = LockModel.TestCase
TestLockModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# ---- lock semantics across threads ----------------------------------------


def test_writers_are_exclusive():
    obj = px.protect({"n": 0})
    state = {"inside": 0, "max_inside": 0}
    rounds = 300

    def writer(_):
        for _ in range(rounds):
            with px.write_lock(obj):
                state["inside"] += 1
                state["max_inside"] = max(state["max_inside"], state["inside"])
                value = obj["n"]
                time.sleep(0)  # invite another thread in
                obj["n"] = value + 1
                state["inside"] -= 1

    try:
        run_on_threads(writer, 4)
        assert obj["n"] == 4 * rounds
        assert state["max_inside"] == 1
    finally:
        px.unprotect(obj)


def test_readers_hold_the_lock_together():
    obj = px.protect([])
    count = 4
    barrier = threading.Barrier(count, timeout=10)

    def reader(_):
        with px.read_lock(obj):
            barrier.wait()  # breaks (BrokenBarrierError) unless all are inside

    try:
        run_on_threads(reader, count)
    finally:
        px.unprotect(obj)


@pytest.mark.parametrize("first, second", [("write", "read"), ("read", "write"), ("write", "write")])
def test_holder_excludes_the_other_kind(first, second):
    lock = _core.RWLock()
    events = []
    holding = threading.Event()

    def later():
        holding.wait(10)
        with getattr(lock, second)():
            events.append("second")

    with getattr(lock, first)():
        t = threading.Thread(target=later)
        t.start()
        holding.set()
        time.sleep(0.2)
        events.append("first done")
    t.join(JOIN_TIMEOUT)
    assert events == ["first done", "second"]


def test_waiting_writer_holds_back_new_readers_but_not_nested_ones():
    lock = _core.RWLock()
    order = []

    def writer():
        with lock.write():
            order.append("writer")

    def late_reader():
        with lock.read():
            order.append("late reader")

    with lock.read():
        w = threading.Thread(target=writer)
        w.start()
        deadline = time.monotonic() + 10
        while "writers_waiting=1" not in repr(lock):
            assert time.monotonic() < deadline, "writer never waited"
            time.sleep(0.01)
        r = threading.Thread(target=late_reader)
        r.start()
        time.sleep(0.2)
        # The holder may nest its read lock although a writer waits.
        with lock.read():
            order.append("nested read")
    w.join(JOIN_TIMEOUT)
    r.join(JOIN_TIMEOUT)
    assert order == ["nested read", "writer", "late reader"]


def test_blocked_main_thread_can_be_interrupted():
    import _thread

    lock = _core.RWLock()
    held = threading.Event()
    release = threading.Event()

    def holder():
        with lock.write():
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        with lock.write():
            pass
    assert "writers_waiting=0" in repr(lock)
    release.set()
    t.join(JOIN_TIMEOUT)
    with lock.write():
        pass


def test_readers_never_see_a_half_done_write():
    pair = px.protect({"a": 0, "b": 0})
    stop = threading.Event()
    reads = []

    def writer(_):
        for i in range(300):
            with px.write_lock(pair):
                pair["a"] = i
                time.sleep(0)  # a reader slipping in here would see a != b
                pair["b"] = i

    def reader(_):
        count = 0
        while not stop.is_set():
            with px.read_lock(pair):
                assert pair["a"] == pair["b"]
            count += 1
        reads.append(count)

    readers = threading.Thread(target=run_on_threads, args=(reader, 3))
    readers.start()
    try:
        run_on_threads(writer, 3)
    finally:
        stop.set()
        readers.join(JOIN_TIMEOUT)
        px.unprotect(pair)
    assert len(reads) == 3 and all(reads)


@pytest.mark.shares_objects
def test_locks_and_xlist_work_on_engine_workers():
    counts = px.protect({"n": 0})
    results = px.xlist()

    def work(i):
        with px.write_lock(counts):
            counts["n"] += 1
        with px.read_lock(counts):
            results.push(i)
        return px.thread_seq_id()

    try:
        ids = px.map(work, range(500))
    finally:
        px.unprotect(counts)
    assert counts["n"] == 500
    assert sorted(results.flush()) == list(range(500))
    assert 0 not in ids  # workers are not the importing thread


def test_one_guard_entered_from_many_threads():
    obj = px.protect({"n": 0})
    guard = px.write_lock(obj)

    def bump(_):
        for _ in range(200):
            with guard:
                obj["n"] += 1

    try:
        run_on_threads(bump, 4)
        assert obj["n"] == 800
    finally:
        px.unprotect(obj)
