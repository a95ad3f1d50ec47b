"""px.dict, px.list and px.xlist give the same answers in every mode.

In mode "interpreters" they are SharedDict, SharedList and SharedXList: one
container that the main interpreter and every worker see, holding values
that can cross interpreters. The program-level tests below run in whatever
mode the suite runs in and expect the same results in all of them; the
tests of the shared kinds themselves use the types directly (they work in
every mode). test_shared_kinds_properties.py compares them with dict and
list on random operations (apart: hypothesis cannot be imported in a
worker's interpreter, which imports this module to find its functions).
"""

import threading
import time

import pytest

import pyparallel as px
from conftest import expected_mode
from pyparallel import _core

INTERPRETERS = expected_mode() == "interpreters"
WAIT = 10


# ---- functions the workers run (module level: every mode finds them) ------


def fill(d, lst, x, tag):
    for i in range(3):
        d[(tag, i)] = i
        lst.append(i)
    for i in range(5):
        x.push((tag, i))
    return len(d)


def put(d, key, value):
    d[key] = value
    return key


def put_pair(pair):
    d, i = pair
    return put(d, i, f"v{i}")


def write_under_read_lock(d):
    with px.read_lock(d):
        d["x"] = 1


def nested_locks(d):
    with px.write_lock(d):
        with px.read_lock(d):
            with px.write_lock(d):
                d["nested"] = d.get("nested", 0) + 1
    return d["nested"]


def count_words(counts, words):
    for word in words:
        with px.write_lock(counts):
            counts[word] = counts.get(word, 0) + 1
    return len(words)


def protect_something():
    px.protect({})


def eternalize_something():
    px.eternalize({"x": 1})


# ---- the same answers in every mode -------------------------------------------


def test_the_issue_example_gives_the_same_counts_in_every_mode():
    d1, l1, d2, l2, x = px.dict(), px.list(), px.dict(), px.list(), px.xlist()
    futures = [px.submit_work(fill, d1, l1, x, "a"), px.submit_work(fill, d2, l2, x, "b")]
    assert [f.result(timeout=WAIT) for f in futures] == [3, 3]
    assert (len(d1), len(l1), len(d2), len(l2), len(x)) == (3, 3, 3, 3, 10)
    assert sorted(x.flush()) == sorted((t, i) for t in "ab" for i in range(5))
    assert d1 == {("a", i): i for i in range(3)} and sorted(l2) == [0, 1, 2]


def test_the_factories_make_the_kind_of_the_mode():
    kinds = (type(px.dict()), type(px.list()), type(px.xlist()))
    if INTERPRETERS:
        assert kinds == (_core.SharedDict, _core.SharedList, _core.SharedXList)
    else:
        assert kinds == (px.dict, px.list, _core.xlist)
    for obj, factory in zip((px.dict(), px.list(), px.xlist()), (px.dict, px.list, px.xlist)):
        assert isinstance(obj, factory)
    assert px.protected(px.dict()) and px.protected(px.list()) and not px.protected(px.xlist())


def test_map_passes_the_same_dict_to_every_call():
    d = px.dict()
    assert px.map(put_pair, [(d, i) for i in range(20)]) == list(range(20))
    assert sorted(d) == list(range(20)) and d[7] == "v7"


def test_a_worker_waits_for_the_main_threads_write_lock():
    d = px.dict()
    with px.write_lock(d):
        future = px.submit_work(put, d, "w", 1)
        time.sleep(0.3)
        assert not future.done() and "w" not in d
    assert future.result(timeout=WAIT) == "w" and d["w"] == 1


def test_lock_rules_hold_in_the_workers():
    d = px.dict()
    with pytest.raises(RuntimeError, match="upgrade"):
        px.submit_work(write_under_read_lock, d).result(timeout=WAIT)
    assert px.submit_work(nested_locks, d).result(timeout=WAIT) == 1
    assert nested_locks(d) == 2


def test_compound_updates_from_every_worker_are_exact():
    counts = px.dict()
    words = ("a", "b", "a", "c") * 50
    futures = [px.submit_work(count_words, counts, words) for _ in range(8)]
    assert sum(f.result(timeout=WAIT) for f in futures) == 1600
    assert counts == {"a": 800, "b": 400, "c": 400}


@pytest.mark.skipif(not INTERPRETERS, reason="objects cross interpreters only in mode 'interpreters'")
def test_a_channel_carries_the_container_itself():
    d = px.dict()
    channel = px.Channel()
    channel.put((d, "tag"))
    other, tag = channel.get(timeout=WAIT)
    other["seen"] = tag
    assert d["seen"] == "tag" and other is not d and other == d


@pytest.mark.skipif(INTERPRETERS, reason="the containers of mode 'interpreters' cross")
def test_a_channel_refuses_a_container_it_would_copy():
    with pytest.raises(TypeError, match="protected"):
        px.Channel().put(px.dict())


@pytest.mark.skipif(not INTERPRETERS, reason="worker interpreters exist in mode 'interpreters' only")
@pytest.mark.parametrize("func", [protect_something, eternalize_something])
def test_protect_and_eternalize_in_a_worker_raise(func):
    with pytest.raises(px.AsyncError, match="lives only in this worker's interpreter"):
        px.submit_work(func).result(timeout=WAIT)


@pytest.mark.skipif(not INTERPRETERS, reason="objects cross interpreters only in mode 'interpreters'")
def test_a_protected_object_does_not_cross_as_a_copy():
    totals = px.protect({})
    try:
        with pytest.raises(TypeError, match="protected"):
            px.submit_work(len, totals)
    finally:
        px.unprotect(totals)


# ---- the shared kinds (they work in every mode) -----------------------------


@pytest.mark.parametrize(
    "value, hint",
    [
        (lambda: 0, "name of the function"),
        ([1], "tuple of its items"),
        ({1: 2}, "pairs"),
        (object(), "tuple of its fields"),
        (_core.SharedDict(), "holds no other"),
    ],
)
def test_values_that_cannot_cross_raise_type_error_saying_what_to_store(value, hint):
    for store in (
        lambda v: _core.SharedDict().__setitem__("k", v),
        _core.SharedList().append,
        _core.SharedXList().push,
    ):
        with pytest.raises(TypeError, match="holds values that can cross interpreters") as info:
            store(value)
        assert hint in str(info.value) and type(value).__name__ in str(info.value)


def test_keys_that_python_finds_equal_are_one_key():
    d = _core.SharedDict()
    d[1] = "int"
    d[1.0] = "float"
    d[True] = "bool"
    assert len(d) == 1 and list(d) == [1] and type(list(d)[0]) is int and d[1] == "bool"
    d[(1, 2.0)] = "tuple"
    assert d[(True, 2)] == "tuple" and d.get(-0.0) is None
    d[-0.0] = "zero"
    assert d[0] == "zero" and d[False] == "zero"
    with pytest.raises(ValueError, match="NaN"):
        d[float("nan")] = 1
    with pytest.raises(TypeError, match="unhashable type: 'list'"):
        d[[1]] = 1
    with pytest.raises(TypeError, match="keys in mode 'interpreters'"):
        d[frozenset()] = 1


def test_shared_dict_api():
    d = _core.SharedDict({"a": 1}, b=2)
    assert d == {"a": 1, "b": 2} and d != {"a": 1} and repr(d) == "{'a': 1, 'b': 2}"
    assert d.keys() == {"a", "b"} and list(d.items()) == [("a", 1), ("b", 2)]
    assert d.setdefault("c", 3) == 3 and d.setdefault("c", 4) == 3
    assert d.pop("a") == 1 and d.pop("zz", None) is None and d.popitem() == ("c", 3)
    with pytest.raises(KeyError):
        d[("missing", 1)]
    with pytest.raises(KeyError):
        del d["missing"]
    d |= {"e": 5}
    assert d | {"f": 6} == {"b": 2, "e": 5, "f": 6} and {"f": 6} | d == {"f": 6, "b": 2, "e": 5}
    copy = d.copy()
    copy["g"] = 7
    assert "g" not in d and type(copy) is _core.SharedDict
    assert _core.SharedDict.fromkeys("xy", 0) == {"x": 0, "y": 0}
    assert list(reversed(d)) == ["e", "b"]
    with pytest.raises(TypeError, match="cannot be pickled"):
        d.__reduce__()
    d.clear()
    assert len(d) == 0 and not d


def test_shared_list_api():
    lst = _core.SharedList(range(5))
    assert lst == [0, 1, 2, 3, 4] and lst[1:3] == [1, 2] and lst[-1] == 4 and 3 in lst
    lst[1:3] = ("a", "b", "c")
    del lst[::2]
    assert lst == ["a", "c", 4]
    lst += (1, 2)
    lst.sort(key=str, reverse=True)
    assert lst == ["c", "a", 4, 2, 1] and lst.index(2) == 3 and lst.count("a") == 1
    lst.remove("a")
    assert lst.pop() == 1 and lst.pop(0) == "c" and lst == [4, 2]
    assert lst * 2 == [4, 2, 4, 2] and lst + [3] == [4, 2, 3] and lst < [5]
    assert type(lst + [3]) is _core.SharedList and list(reversed(lst)) == [2, 4]
    with pytest.raises(IndexError):
        lst[5]
    with pytest.raises(ValueError, match="extended slice"):
        lst[::2] = (1, 2, 3)


def test_locks_of_the_shared_kinds():
    d = _core.SharedDict()
    assert px.protected(d) and d.__px_rwlock__ == d.__px_rwlock__
    with pytest.raises(px.ProtectionError, match="own lock"):
        px.unprotect(d)
    with px.read_lock(d):
        with pytest.raises(RuntimeError, match="upgrade"):
            d["x"] = 1
        assert d.get("x") is None
    entered = threading.Event()
    released = threading.Event()

    def writer():
        entered.set()
        d["t"] = 1
        released.set()

    with px.write_lock(d):
        thread = threading.Thread(target=writer)
        thread.start()
        entered.wait(WAIT)
        assert not released.wait(0.2)
    thread.join(WAIT)
    assert d["t"] == 1


def test_a_shared_buffer_in_a_shared_dict_is_the_same_memory():
    buf = px.SharedBuffer(16)
    d = _core.SharedDict(buf=buf)
    memoryview(d["buf"])[0] = 7
    assert memoryview(buf)[0] == 7
