"""SharedDict and SharedList (px.dict and px.list of mode "interpreters")
against dict and list: random sequences of operations give the same results
and leave the same contents. The types work in every mode.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from pyparallel import _core

keys = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([1.0, True, False, -0.0, 2.5]),
    st.text(max_size=2),
    st.tuples(st.integers(0, 2), st.booleans()),
)
values = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=4),
    st.tuples(st.integers(), st.text(max_size=3)),
)

dict_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("del"), keys),
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("pop"), keys),
        st.tuples(st.just("popitem")),
        st.tuples(st.just("setdefault"), keys, values),
        st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=3)),
        st.tuples(st.just("clear")),
    ),
    max_size=40,
)


def apply(obj, op):
    try:
        name, *args = op
        if name == "set":
            obj[args[0]] = args[1]
        elif name == "del":
            del obj[args[0]]
        elif name == "get":
            return obj[args[0]]
        elif name == "pop":
            return obj.pop(*args)
        elif name in ("popitem", "clear", "reverse"):
            return getattr(obj, name)()
        elif name == "insert":
            return obj.insert(*args)
        else:
            return getattr(obj, name)(*args)
    except (KeyError, IndexError, ValueError) as exc:
        return type(exc)


@settings(max_examples=150, deadline=None)
@given(dict_ops)
def test_shared_dict_matches_dict(ops):
    plain, shared = {}, _core.SharedDict()
    for op in ops:
        assert apply(shared, op) == apply(plain, op), op
        assert shared == plain and list(shared.items()) == list(plain.items())


list_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), values),
        st.tuples(st.just("insert"), st.integers(-5, 5), values),
        st.tuples(st.just("pop"), st.integers(-5, 5)),
        st.tuples(st.just("remove"), values),
        st.tuples(st.just("extend"), st.lists(values, max_size=3)),
        st.tuples(st.just("reverse")),
        st.tuples(st.just("index"), values),
        st.tuples(st.just("count"), values),
        st.tuples(st.just("clear")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(list_ops)
def test_shared_list_matches_list(ops):
    plain, shared = [], _core.SharedList()
    for op in ops:
        assert apply(shared, op) == apply(plain, op), op
        assert shared == plain
