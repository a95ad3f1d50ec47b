"""_core.xlist, the interlocked list of one interpreter (what px.xlist()
makes in modes "threads" and "gil"; test_interp_shared_containers.py tests
the one that mode "interpreters" shares between interpreters): push, pop
(LIFO), flush (push order), the references it holds, and pushes, pops and
flushes from many threads at once that lose and duplicate nothing; a
hypothesis model of its sequential behaviour.
"""

import gc
import threading
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import JOIN_TIMEOUT, Plain, run_on_threads
from pyparallel import _core


def test_xlist_basics():
    x = _core.xlist()
    assert len(x) == 0 and x.flush() == []
    with pytest.raises(IndexError):
        x.pop()
    for i in range(20):
        x.push(i)
    assert len(x) == 20
    assert x.pop() == 19 and x.pop() == 18  # LIFO
    assert x.flush() == list(range(18))  # push order
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

    run_on_threads(push, 8)
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
    run_on_threads(produce, producers)
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
@given(
    st.lists(
        st.one_of(st.tuples(st.just("push"), st.integers()), st.just(("pop",)), st.just(("flush",)), st.just(("len",)))
    )
)
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
