"""px.dict and px.list: builtins subclasses that are protected from birth
(each has its own lock, which mutations take), how they copy, and what their
lock guarantees to readers and writers on several threads.
"""

import copy
import gc
import pickle
import threading
import weakref

import pytest

import pyparallel as px
from conftest import JOIN_TIMEOUT, expected_mode, run_on_threads

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
            d[n] = n  # each mutation takes the write lock on its own
            del d[n]
            lst.append(n)
            lst.pop()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            with px.read_lock(d):
                first = list(d)  # no "changed size during iteration"
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

    run_on_threads(add, 4)
    assert sum(counts.values()) == 2000
