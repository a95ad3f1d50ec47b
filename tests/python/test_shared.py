"""Tests of pyparallel's shared-state primitives and introspection functions.

protect/unprotect/protected, read_lock/write_lock (and the RWLock behind
them), px.dict/px.list, xlist, eternalize/immortalize_code, rdtsc, gmtime,
cpu_count and thread_seq_id. Everything runs on real threads, on both the
free-threaded and the GIL build; nothing here needs the engine loop.
"""

import copy
import datetime
import email.utils
import gc
import os
import pickle
import re
import sys
import textwrap
import threading
import time
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import pyparallel as px
from conftest import expected_mode
from pyparallel import _core

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
JOIN_TIMEOUT = 30


def run_threads(target, count, *args):
    """Runs target(index, *args) on `count` threads; re-raises the first error."""
    errors = []

    def wrapper(index):
        try:
            target(index, *args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]


class Plain:
    """An object that supports weak references."""


# ---- protect / unprotect / protected ---------------------------------------


def test_protect_returns_the_object_and_marks_it():
    obj = {"a": 1}
    assert not px.protected(obj)
    assert px.protect(obj) is obj
    assert px.protected(obj)
    assert px.unprotect(obj) is obj
    assert not px.protected(obj)


def test_protect_twice_and_unprotect_unprotected_are_harmless():
    obj = []
    px.protect(obj)
    px.protect(obj)
    assert px.protected(obj)
    px.unprotect(obj)
    assert not px.protected(obj)
    assert px.unprotect(obj) is obj
    assert not px.protected(obj)


def test_protection_is_by_identity_not_equality():
    a, b = [1, 2], [1, 2]
    px.protect(a)
    try:
        assert px.protected(a)
        assert not px.protected(b)
    finally:
        px.unprotect(a)


def test_protect_keeps_the_object_alive_until_unprotect():
    obj = Plain()
    ref = weakref.ref(obj)
    px.protect(obj)
    del obj
    gc.collect()
    assert ref() is not None
    px.unprotect(ref())
    gc.collect()
    assert ref() is None


def test_many_objects_protected_and_unprotected():
    objs = [Plain() for _ in range(3000)]
    for obj in objs:
        px.protect(obj)
    for obj in objs[::2]:
        px.unprotect(obj)
    assert [px.protected(o) for o in objs] == [i % 2 == 1 for i in range(len(objs))]
    for obj in objs[1::2]:
        px.unprotect(obj)
    assert not any(px.protected(o) for o in objs)


def test_lock_on_unprotected_object_raises_protection_error():
    for lock in (px.read_lock, px.write_lock):
        with pytest.raises(px.ProtectionError, match=r"call px\.protect\(obj\) first"):
            with lock({}):
                pass
    assert issubclass(px.ProtectionError, px.AsyncError)


def test_lock_after_unprotect_raises_but_held_guard_still_releases():
    obj = px.protect([])
    guard = px.write_lock(obj)
    with guard:
        px.unprotect(obj)
        with pytest.raises(px.ProtectionError):
            px.read_lock(obj)
    # The guard's lock was released: a fresh protection locks at once.
    px.protect(obj)
    try:
        with px.write_lock(obj):
            pass
    finally:
        px.unprotect(obj)


def test_guard_enter_returns_the_object():
    obj = px.protect({"k": 1})
    try:
        with px.read_lock(obj) as seen:
            assert seen is obj
        with px.write_lock(obj) as seen:
            assert seen is obj
        assert px.write_lock(obj).exclusive and not px.read_lock(obj).exclusive
    finally:
        px.unprotect(obj)


# ---- lock semantics on one thread -------------------------------------------


def test_nesting_rules():
    lock = _core.RWLock()
    with lock.read():
        with lock.read():        # read inside read
            pass
    with lock.write():
        with lock.write():       # write inside write
            with lock.read():    # read inside write
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
        self.stack = []       # "r"/"w" of the holds entered, innermost last

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
                time.sleep(0)          # invite another thread in
                obj["n"] = value + 1
                state["inside"] -= 1

    try:
        run_threads(writer, 4)
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
            barrier.wait()   # breaks (BrokenBarrierError) unless all are inside

    try:
        run_threads(reader, count)
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
                time.sleep(0)          # a reader slipping in here would see a != b
                pair["b"] = i

    def reader(_):
        count = 0
        while not stop.is_set():
            with px.read_lock(pair):
                assert pair["a"] == pair["b"]
            count += 1
        reads.append(count)

    readers = threading.Thread(target=run_threads, args=(reader, 3))
    readers.start()
    try:
        run_threads(writer, 3)
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
    assert 0 not in ids      # workers are not the importing thread


def test_one_guard_entered_from_many_threads():
    obj = px.protect({"n": 0})
    guard = px.write_lock(obj)

    def bump(_):
        for _ in range(200):
            with guard:
                obj["n"] += 1

    try:
        run_threads(bump, 4)
        assert obj["n"] == 800
    finally:
        px.unprotect(obj)


# ---- px.dict / px.list ------------------------------------------------------

# What only the dict and list subclasses of modes "threads" and "gil" do; in
# mode "interpreters" px.dict() and px.list() make the kinds every
# interpreter shares, which test_interp_shared_containers.py tests.
subclass_kind = pytest.mark.skipif(
    expected_mode() == "interpreters", reason="mode 'interpreters': px.dict/px.list are SharedDict/SharedList"
)


@subclass_kind
def test_protected_containers_behave_like_builtins():
    d = px.dict({"a": 1}, b=2)
    assert isinstance(d, dict) and d == {"a": 1, "b": 2}
    assert px.dict.fromkeys("xy", 0) == {"x": 0, "y": 0}
    lst = px.list(range(3))
    assert isinstance(lst, list) and lst == [0, 1, 2]
    lst += [3]
    lst *= 1
    lst.extend([4])
    lst.insert(0, -1)
    assert lst.pop() == 4 and lst.index(0) == 1 and lst.count(1) == 1 and 2 in lst
    lst.sort(reverse=True)
    assert lst == [3, 2, 1, 0, -1]
    d |= {"c": 3}
    assert d.setdefault("d", 4) == 4 and d.pop("a") == 1
    assert type(d | {"e": 5}) is px.dict
    assert type(lst + [9]) is px.list and type(lst * 2) is px.list
    assert repr(px.list([1])) == "[1]" and repr(px.dict(a=1)) == "{'a': 1}"


def test_protected_containers_are_protected_and_cannot_be_unprotected():
    for obj in (px.dict(), px.list()):
        assert px.protected(obj)
        assert px.protect(obj) is obj
        with px.read_lock(obj):
            pass
        with pytest.raises(px.ProtectionError, match="own lock"):
            px.unprotect(obj)
        assert px.protected(obj)


def test_protected_container_lock_dies_with_it():
    d = px.dict(a=1)
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


def test_mutating_under_own_read_lock_raises():
    d = px.dict(a=1)
    with px.read_lock(d):
        with pytest.raises(RuntimeError, match="upgrade"):
            d["b"] = 2
    with px.write_lock(d):
        d["b"] = 2
        d.update(c=3)
    assert d == {"a": 1, "b": 2, "c": 3}


@subclass_kind
def test_copies_are_new_protected_containers():
    for obj in (px.dict(a=[1]), px.list([[1]])):
        for dup in (obj.copy(), copy.copy(obj), copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))):
            assert type(dup) is type(obj) and dup == obj and dup is not obj
            assert px.protected(dup)
            assert dup.__px_rwlock__ is not obj.__px_rwlock__


def test_iteration_under_read_lock_excludes_writers():
    d = px.dict((i, i) for i in range(100))
    lst = px.list(range(100))
    stop = threading.Event()

    def writer(index):
        n = 1000 + index * 1_000_000
        while not stop.is_set():
            n += 1
            d[n] = n          # each mutation takes the write lock on its own
            del d[n]
            lst.append(n)
            lst.pop()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            with px.read_lock(d):
                first = list(d)        # no "changed size during iteration"
                assert list(d) == first
            with px.read_lock(lst):
                first = list(lst)
                assert list(lst) == first
    finally:
        stop.set()
        for t in threads:
            t.join(JOIN_TIMEOUT)


def test_compound_updates_under_write_lock_are_exact():
    counts = px.dict()

    def add(index):
        for i in range(500):
            key = i % 7
            with px.write_lock(counts):
                counts[key] = counts.get(key, 0) + 1

    run_threads(add, 4)
    assert sum(counts.values()) == 2000


# ---- xlist ------------------------------------------------------------------

# The interlocked list of one interpreter (what px.xlist() makes in modes
# "threads" and "gil"), holding any object.


def test_xlist_basics():
    x = _core.xlist()
    assert len(x) == 0 and x.flush() == []
    with pytest.raises(IndexError):
        x.pop()
    for i in range(20):
        x.push(i)
    assert len(x) == 20
    assert x.pop() == 19 and x.pop() == 18          # LIFO
    assert x.flush() == list(range(18))             # push order
    assert len(x) == 0
    with pytest.raises(IndexError):
        x.pop()
    with pytest.raises(TypeError):
        _core.xlist([1])
    assert "len=0" in repr(x)


def test_xlist_holds_and_releases_references():
    x = _core.xlist()
    obj = Plain()
    ref = weakref.ref(obj)
    x.push(obj)
    del obj
    gc.collect()
    assert ref() is not None
    x.pop()
    gc.collect()
    assert ref() is None


def test_xlist_cycle_is_collected():
    x = _core.xlist()
    obj = Plain()
    obj.x = x
    x.push(obj)
    ref = weakref.ref(obj)
    del x, obj
    gc.collect()
    assert ref() is None


def test_xlist_pushes_from_many_threads_arrive_once_in_order():
    x = _core.xlist()
    per_thread = 5000

    def push(index):
        for i in range(per_thread):
            x.push((index, i))

    run_threads(push, 8)
    items = x.flush()
    assert len(items) == 8 * per_thread and len(set(items)) == len(items)
    for index in range(8):
        assert [i for t, i in items if t == index] == list(range(per_thread))


def test_xlist_concurrent_push_pop_flush_lose_and_duplicate_nothing():
    x = _core.xlist()
    per_producer = 4000
    producers = 3
    done = threading.Event()
    taken = [[] for _ in range(2)]

    def produce(index):
        for i in range(per_producer):
            x.push((index, i))

    def consume(index):
        sink = taken[index]
        while not done.is_set() or len(x):
            if index == 0:
                try:
                    sink.append([x.pop()])
                except IndexError:
                    pass
            else:
                batch = x.flush()
                if batch:
                    sink.append(batch)

    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in consumers:
        t.start()
    run_threads(produce, producers)
    done.set()
    for t in consumers:
        t.join(JOIN_TIMEOUT)
    seen = [item for sink in taken for batch in sink for item in batch] + x.flush()
    assert sorted(seen) == sorted((p, i) for p in range(producers) for i in range(per_producer))
    # Each flush is a snapshot in push order: a producer's items ascend.
    for batch in taken[1]:
        for p in range(producers):
            mine = [i for q, i in batch if q == p]
            assert mine == sorted(mine)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("push"), st.integers()),
                          st.just(("pop",)), st.just(("flush",)), st.just(("len",)))))
def test_xlist_matches_a_stack_model(ops):
    x = _core.xlist()
    model = []
    for op in ops:
        if op[0] == "push":
            x.push(op[1])
            model.append(op[1])
        elif op[0] == "pop":
            if model:
                assert x.pop() == model.pop()
            else:
                with pytest.raises(IndexError):
                    x.pop()
        elif op[0] == "flush":
            assert x.flush() == model
            model = []
        else:
            assert len(x) == len(model)
    assert x.flush() == model


# ---- eternalize ------------------------------------------------------------


def fresh(value):
    """A new, mortal copy of value (literals may be shared constants)."""
    return pickle.loads(pickle.dumps(value))


def test_eternalize_every_supported_type():
    leaves = [fresh("text " * 3), fresh(b"bytes" * 3), fresh(10**30), fresh(2.5),
              fresh(3 + 4j), fresh(123456789)]
    containers = [fresh((1000001, "t")), fresh([1000002]), fresh({"k": 1000003}),
                  fresh({1000004}), fresh(frozenset({1000005})), slice(1000006, None, 2)]
    for obj in leaves + containers:
        assert not _core.is_immortal(obj), obj
        assert px.eternalize(obj) is obj
        assert _core.is_immortal(obj), obj
    for obj in containers:
        inner = obj.start if isinstance(obj, slice) else (
            next(iter(obj.values())) if isinstance(obj, dict) else next(iter(obj)))
        assert _core.is_immortal(inner)


def test_eternalize_a_nested_graph_with_cycles():
    graph = fresh({"rows": [(i, f"name{i}", float(i)) for i in range(300, 400)],
                   "index": {f"name{i}": i for i in range(300, 400)},
                   "tags": {frozenset({"a", "b"})}})
    graph["self"] = graph
    graph["rows"].append(graph["rows"])
    px.eternalize(graph)
    pending, seen = [graph], set()
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        assert _core.is_immortal(obj), repr(obj)[:80]
        if isinstance(obj, dict):
            pending.extend(obj.keys())
            pending.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            pending.extend(obj)
    assert not gc.is_tracked(graph) and not gc.is_tracked(graph["rows"])
    assert graph["index"]["name350"] == 350      # still an ordinary dict


def test_eternalize_deep_nesting_does_not_recurse():
    root = leaf = []
    for _ in range(200_000):
        nxt = []
        leaf.append(nxt)
        leaf = nxt
    px.eternalize(root)
    assert _core.is_immortal(leaf)


def test_eternalize_accepts_already_immortal_objects():
    for obj in (None, True, False, Ellipsis, 5, "", (), int):
        assert px.eternalize(obj) is obj
    assert px.eternalize({"x": (None, True, ...)})["x"][1] is True


def test_refcount_of_eternalized_object_stays_put():
    obj = fresh({"payload": "x" * 100})
    before = sys.getrefcount(obj)
    px.eternalize(obj)
    immortal = sys.getrefcount(obj)
    assert immortal > before
    refs = [obj] * 1000
    holders = [{"o": obj} for _ in range(100)]
    assert sys.getrefcount(obj) == immortal
    assert sys.getrefcount(obj["payload"]) == immortal
    del refs, holders
    assert sys.getrefcount(obj) == immortal


class MyInt(int):
    pass


@pytest.mark.parametrize("bad", [object(), bytearray(b"x"), MyInt(5), px.dict(), Plain(),
                                 iter([]), range(3), memoryview(b"x")])
def test_eternalize_rejects_unsupported_types_and_changes_nothing(bad):
    sibling = fresh("a sibling string")
    graph = fresh({"ok": [sibling]})
    graph["ok"].append((1, bad))
    with pytest.raises(TypeError, match=r"cannot make an object of type '.*' immortal"):
        px.eternalize(graph)
    assert not _core.is_immortal(graph)
    assert not _core.is_immortal(graph["ok"])
    assert not _core.is_immortal(sibling)


def test_eternalize_error_names_the_path():
    with pytest.raises(TypeError, match=r"found in dict > list > tuple"):
        px.eternalize({"k": [(1, object())]})


def test_eternalize_function_and_code():
    big = fresh(98765432109876)
    ns = {}
    exec(textwrap.dedent("""
        def f(x, y=BIG, *, z=(1.25, "kw")):
            def inner():
                return 123456789012 + x
            return inner() + 987654321098
    """), {"BIG": big}, ns)
    f = ns["f"]
    px.eternalize(f)
    code = f.__code__
    assert _core.is_immortal(f) and _core.is_immortal(code)
    assert _core.is_immortal(f.__defaults__) and _core.is_immortal(big)
    assert _core.is_immortal(f.__kwdefaults__) and _core.is_immortal(f.__kwdefaults__["z"])
    nested = [c for c in code.co_consts if hasattr(c, "co_consts")][0]
    assert _core.is_immortal(nested)
    assert all(_core.is_immortal(c) for c in nested.co_consts)
    assert f(1) == 123456789012 + 1 + 987654321098


# ---- immortalize_code ------------------------------------------------------


MODULE_SOURCE = textwrap.dedent("""
    def work(n, scale=1000003):
        total = 0
        for i in range(n):
            total = (total + i * scale) % 2147483647
        return total

    def with_mutable_default(x, cache=[]):
        return x + 77777777

    class Handler:
        def data_received(self, transport, data):
            return (b"reply", 55555555)

        @staticmethod
        def helper():
            return 44444444.5

        @classmethod
        def make(cls):
            return "class method constant " * 2

    class Callable:
        def __call__(self):
            return 33333333
""")


@pytest.fixture
def source_module(tmp_path, monkeypatch):
    """A module imported from source, not from a .pyc (the pitfall)."""
    (tmp_path / "px_source_mod.py").write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    sys.modules.pop("px_source_mod", None)
    import px_source_mod
    yield px_source_mod
    sys.modules.pop("px_source_mod", None)


def big_consts(code):
    return [c for c in code.co_consts if isinstance(c, (int, float, str, bytes, tuple))
            and c not in (None, True, False) and not (isinstance(c, int) and -5 <= c <= 256)]


def test_immortalize_code_of_a_function_from_source(source_module):
    work = source_module.work
    consts = big_consts(work.__code__)
    assert consts
    assert _core.immortalize_code(work) is work
    assert all(_core.is_immortal(c) for c in consts)
    assert _core.is_immortal(work.__code__.co_consts)     # the "done" mark
    assert _core.is_immortal(work.__defaults__[0])
    if not FREE_THREADED:      # (3.13t makes code objects immortal by itself)
        assert not _core.is_immortal(work.__code__)
    assert _core.immortalize_code(work) is work           # again: no change
    assert work(10) == sum(i * 1000003 for i in range(10)) % 2147483647


def test_immortalize_code_leaves_mutable_defaults_alone(source_module):
    func = source_module.with_mutable_default
    _core.immortalize_code(func)
    assert not _core.is_immortal(func.__defaults__[0])
    assert all(_core.is_immortal(c) for c in big_consts(func.__code__))


def test_immortalize_code_of_classes_methods_and_callables(source_module):
    handler = source_module.Handler
    _core.immortalize_code(handler)
    for code in (handler.data_received.__code__, handler.helper.__code__,
                 handler.make.__func__.__code__):
        assert big_consts(code) and all(_core.is_immortal(c) for c in big_consts(code)), code
    obj = source_module.Callable()
    _core.immortalize_code(obj)
    assert all(_core.is_immortal(c) for c in big_consts(type(obj).__call__.__code__))
    bound = handler().data_received
    assert _core.immortalize_code(bound) is bound
    for other in (len, 42, "text", None):
        assert _core.immortalize_code(other) is other


# ---- introspection ------------------------------------------------------------


IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d\d:\d\d:\d\d GMT$")


def test_gmtime_is_an_imf_fixdate_of_now():
    text = px.gmtime()
    assert IMF_FIXDATE.match(text), text
    parsed = email.utils.parsedate_to_datetime(text)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 2
    assert text.startswith(parsed.strftime("%a"))   # weekday agrees with the date


def test_gmtime_advances_and_agrees_across_threads():
    first = px.gmtime()
    results = []
    run_threads(lambda i: results.extend(px.gmtime() for _ in range(1000)), 4)
    assert all(IMF_FIXDATE.match(r) for r in results)
    stamps = {email.utils.parsedate_to_datetime(r) for r in results}
    assert max(stamps) - min(stamps) < datetime.timedelta(seconds=3)
    time.sleep(1.1)
    assert email.utils.parsedate_to_datetime(px.gmtime()) > email.utils.parsedate_to_datetime(first)


def test_cpu_count_is_online_logical_cpus():
    assert px.cpu_count() == os.sysconf("SC_NPROCESSORS_ONLN")
    if "PYTHON_CPU_COUNT" not in os.environ and "cpu_count" not in sys._xoptions:
        assert px.cpu_count() == os.cpu_count()


def test_rdtsc_increases():
    values = [px.rdtsc() for _ in range(1000)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    before = px.rdtsc()
    time.sleep(0.01)
    assert px.rdtsc() > before


def test_thread_seq_id_is_unique_stable_and_ordered():
    assert px.thread_seq_id() == 0     # the thread that imported pyparallel
    start = threading.Barrier(8, timeout=10)
    turn = threading.Lock()
    first_calls = []
    ids = {}

    def worker(index):
        start.wait()
        with turn:      # first calls in a known order
            mine = px.thread_seq_id()
            first_calls.append(mine)
        for _ in range(100):
            assert px.thread_seq_id() == mine
        ids[index] = mine

    run_threads(worker, 8)
    assert len(set(ids.values())) == 8 and 0 not in ids.values()
    assert first_calls == sorted(first_calls)
    assert px.thread_seq_id() == 0
    # A new thread gets a number never handed out before.
    later = []
    run_threads(lambda i: later.append(px.thread_seq_id()), 1)
    assert later[0] > max(ids.values())
