"""functools.partial in eternalize() and in what the runtime makes immortal
for the code it runs on workers: eternalize(partial) covers the partial, the
function it wraps (code constants, defaults), its arguments and keywords;
immortalize_code and submit_work follow a partial to its function but leave
its arguments (often made per call) mortal.

The function is conftest's module imported from source (the source_module
fixture: no .pyc), whose constants CPython leaves mortal.
"""

import functools
import sys

import pytest

import pyparallel as px
from conftest import big_consts, fresh, gil_enabled
from pyparallel import _core


def expected_work(n, scale=1000003):
    total = 0
    for i in range(n):
        total = (total + i * scale) % 2147483647
    return total


def mortal_parts(work):
    """work's constants and default, checked to start mortal."""
    parts = big_consts(work.__code__) + [work.__defaults__[0]]
    assert len(parts) == 2 and not any(_core.is_immortal(c) for c in parts)
    return parts


def test_eternalize_a_partial_covers_function_args_and_keywords(source_module):
    work = source_module.work
    constants = mortal_parts(work)
    n, scale = fresh(300), fresh(10**20 + 7)
    part = functools.partial(work, n, scale=scale)
    covered = [part, part.args, n, part.keywords, scale]
    assert not any(_core.is_immortal(obj) for obj in covered)

    assert px.eternalize(part) is part

    # (3.13t makes functions immortal by itself once threads have started.)
    assert all(_core.is_immortal(obj) for obj in covered + constants + [work])
    expected = expected_work(300, 10**20 + 7)
    # Calls no longer count references of what they pass on.
    counts = [sys.getrefcount(obj) for obj in (work, n, scale, *constants)]
    results = [part() for _ in range(20)]
    assert [sys.getrefcount(obj) for obj in (work, n, scale, *constants)] == counts
    assert results == [expected] * 20


def test_eternalize_a_graph_holding_partials(source_module):
    work = source_module.work
    constants = mortal_parts(work)
    first = fresh(12345678901)
    table = fresh({"handlers": [1, 2]})
    table["handlers"] = [functools.partial(work, first), functools.partial(work, scale=fresh(7.5))]
    px.eternalize(table)
    assert all(_core.is_immortal(h) for h in table["handlers"])
    assert _core.is_immortal(first) and _core.is_immortal(table["handlers"][1].keywords["scale"])
    assert all(_core.is_immortal(c) for c in constants)


class MyPartial(functools.partial):
    pass


@pytest.mark.parametrize("kind", ["subclass", "unsupported argument", "unsupported keyword"])
def test_eternalize_rejects_partials_it_cannot_cover_and_changes_nothing(source_module, kind):
    work = source_module.work
    constants = mortal_parts(work)
    bad = {
        "subclass": MyPartial(work, 1),
        "unsupported argument": functools.partial(work, object()),
        "unsupported keyword": functools.partial(work, scale=bytearray(b"x")),
    }[kind]
    graph = fresh({"ok": [fresh("sibling")], "bad": None})
    graph["bad"] = bad
    with pytest.raises(TypeError, match=r"cannot make an object of type '.*' immortal"):
        px.eternalize(graph)
    assert not _core.is_immortal(graph) and not _core.is_immortal(graph["ok"][0])
    assert not _core.is_immortal(bad)
    assert not any(_core.is_immortal(c) for c in constants)


def test_immortalize_code_follows_a_partial_to_its_function_only(source_module):
    work = source_module.work
    constants = mortal_parts(work)
    scale = fresh(10**21)
    nested = functools.partial(MyPartial(work, scale=scale), 5)  # a subclass inside: not flattened
    assert _core.immortalize_code(nested) is nested
    assert all(_core.is_immortal(c) for c in constants)
    # Arguments are per-call data: never made immortal behind the caller's back.
    assert not _core.is_immortal(scale) and not _core.is_immortal(nested)


@pytest.mark.skipif(gil_enabled(), reason="only a free-threaded build pays for mortal constants shared by threads")
def test_work_submitted_as_a_partial_gets_immortal_constants(source_module):
    work = source_module.work
    constants = mortal_parts(work)
    scale = fresh(10**22)
    result = px.submit_work(functools.partial(work, scale=scale), 30).result(timeout=10)
    assert result == expected_work(30, 10**22)
    assert all(_core.is_immortal(c) for c in constants)
    assert not _core.is_immortal(scale)
