"""px.eternalize (making an object graph immortal, all or nothing) and
pyparallel._core.immortalize_code (making the constants of the code a worker
runs immortal, so that parallel threads do not contend on their reference
counts). test_shared_eternalize_partial.py covers functools.partial in both.
"""

import gc
import sys
import textwrap

import pytest

import pyparallel as px
from conftest import Plain, big_consts, fresh
from pyparallel import _core

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()


# ---- eternalize ------------------------------------------------------------


def test_eternalize_every_supported_type():
    leaves = [fresh("text " * 3), fresh(b"bytes" * 3), fresh(10**30), fresh(2.5), fresh(3 + 4j), fresh(123456789)]
    containers = [
        fresh((1000001, "t")),
        fresh([1000002]),
        fresh({"k": 1000003}),
        fresh({1000004}),
        fresh(frozenset({1000005})),
        slice(1000006, None, 2),
    ]
    for obj in leaves + containers:
        assert not _core.is_immortal(obj), obj
        assert px.eternalize(obj) is obj
        assert _core.is_immortal(obj), obj
    for obj in containers:
        inner = (
            obj.start
            if isinstance(obj, slice)
            else (next(iter(obj.values())) if isinstance(obj, dict) else next(iter(obj)))
        )
        assert _core.is_immortal(inner)


def test_eternalize_a_nested_graph_with_cycles():
    graph = fresh(
        {
            "rows": [(i, f"name{i}", float(i)) for i in range(300, 400)],
            "index": {f"name{i}": i for i in range(300, 400)},
            "tags": {frozenset({"a", "b"})},
        }
    )
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
    assert graph["index"]["name350"] == 350  # still an ordinary dict


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


@pytest.mark.parametrize(
    "bad", [object(), bytearray(b"x"), MyInt(5), px.dict(), Plain(), iter([]), range(3), memoryview(b"x")]
)
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
    exec(
        textwrap.dedent("""
        def f(x, y=BIG, *, z=(1.25, "kw")):
            def inner():
                return 123456789012 + x
            return inner() + 987654321098
    """),
        {"BIG": big},
        ns,
    )
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


def test_immortalize_code_of_a_function_from_source(source_module):
    work = source_module.work
    consts = big_consts(work.__code__)
    assert consts
    assert _core.immortalize_code(work) is work
    assert all(_core.is_immortal(c) for c in consts)
    assert _core.is_immortal(work.__code__.co_consts)  # the "done" mark
    assert _core.is_immortal(work.__defaults__[0])
    if not FREE_THREADED:  # (3.13t makes code objects immortal by itself)
        assert not _core.is_immortal(work.__code__)
    assert _core.immortalize_code(work) is work  # again: no change
    assert work(10) == sum(i * 1000003 for i in range(10)) % 2147483647


def test_immortalize_code_leaves_mutable_defaults_alone(source_module):
    func = source_module.with_mutable_default
    _core.immortalize_code(func)
    assert not _core.is_immortal(func.__defaults__[0])
    assert all(_core.is_immortal(c) for c in big_consts(func.__code__))


def test_immortalize_code_of_classes_methods_and_callables(source_module):
    handler = source_module.Handler
    _core.immortalize_code(handler)
    for code in (handler.data_received.__code__, handler.helper.__code__, handler.make.__func__.__code__):
        assert big_consts(code) and all(_core.is_immortal(c) for c in big_consts(code)), code
    obj = source_module.Callable()
    _core.immortalize_code(obj)
    assert all(_core.is_immortal(c) for c in big_consts(type(obj).__call__.__code__))
    bound = handler().data_received
    assert _core.immortalize_code(bound) is bound
    for other in (len, 42, "text", None):
        assert _core.immortalize_code(other) is other
