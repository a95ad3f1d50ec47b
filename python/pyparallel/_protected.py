"""Protected containers: ``px.dict``, ``px.list``, and the ``px.xlist`` factory.

In mode "interpreters" (the current loop's mode, else PYPARALLEL_MODE or the
build's default) ``px.dict()``, ``px.list()`` and ``px.xlist()`` make the
kinds that every interpreter shares (``SharedDict``, ``SharedList``,
``SharedXList`` of pyparallel._core: one container in memory outside every
interpreter, holding values that can cross interpreters), since a Python
object belongs to one interpreter and a worker's writes to it would never
reach the others. ``isinstance(obj, px.dict)`` (``px.list``, ``px.xlist``)
holds for both kinds. In the other modes:

``px.dict`` and ``px.list`` are ordinary ``dict``/``list`` subclasses that carry their own
many-readers/one-writer lock from creation (the ``__px_rwlock__`` slot, an
``RWLock``), so ``px.protected(d)`` is True and ``px.read_lock(d)`` /
``px.write_lock(d)`` work on them without ``px.protect()``. The lock lives and
dies with the container (``px.protect()`` would keep an object alive until
``px.unprotect()``); ``px.unprotect()`` refuses them.

What is locked, and why:

- Every method that **mutates** takes the write lock, so code that holds the
  read lock (iterating, reading several items that must agree) never sees a
  half-done change, and a thread holding the write lock can run several
  mutations as one step::

      with px.write_lock(accounts):
          accounts["a"] -= 10
          accounts["b"] += 10

- Methods that **scan** the whole container (``copy``, ``==``, ``repr``,
  pickling; for lists also ``index``, ``count``, ``in``) take the read lock.
- Single-item reads (``d[k]``, ``d.get(k)``, ``k in d``, ``lst[i]``,
  ``len()``) and iteration do not lock: one item is read atomically anyway,
  and an iterator cannot hold a lock for its caller. Iterate inside
  ``with px.read_lock(obj):`` to exclude writers.
- Locks nest per thread (see ``RWLock``): mutating while holding the write
  lock is fine; mutating while holding only the read lock raises
  RuntimeError (a lock upgrade could deadlock).

Copies (``copy()``, pickling, ``copy.copy``) produce new containers of the
same class with their own lock.
"""

from __future__ import annotations

import builtins
import functools

from . import _core
from ._core import RWLock

# typing is imported for the type checker only: every worker interpreter
# imports this package, and typing would add milliseconds to each.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Self

__all__ = ["dict", "list", "xlist"]

_dict = builtins.dict
_list = builtins.list


def _locked[R](method: Callable[..., R], exclusive: bool) -> Callable[..., R]:
    """Wrap a base-class method so that it runs under the container's lock."""
    take = RWLock.write if exclusive else RWLock.read

    @functools.wraps(method)
    def locked(self: _Protected, *args: Any, **kwargs: Any) -> R:
        with take(self.__px_rwlock__):
            return method(self, *args, **kwargs)

    return locked


def _writes[R](method: Callable[..., R]) -> Callable[..., R]:
    return _locked(method, True)


def _reads[R](method: Callable[..., R]) -> Callable[..., R]:
    return _locked(method, False)


class _EitherKind(type):
    """The metaclass of px.dict, px.list and px.xlist: the kind shared by
    every interpreter counts as an instance too."""

    def __instancecheck__(cls, obj: object) -> bool:
        # Of the class itself only: a subclass's instances are its own.
        return type.__instancecheck__(cls, obj) or type(obj) in cls.__dict__.get("_kinds", ())


class _Protected(metaclass=_EitherKind):
    """What px.dict and px.list share: the lock slot, copies, pickling."""

    __slots__ = ()
    _plain: ClassVar[type[Any]] = None  # type: ignore[assignment]  # the built-in base: dict or list
    __px_rwlock__: RWLock

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Only px.dict() and px.list() themselves switch kinds: a subclass
        # asked for its own class.
        shared = cls.__dict__.get("_kinds")
        if shared and _core._shared_containers():
            return shared[0](*args, **kwargs)  # type: ignore[no-any-return]
        self = super().__new__(cls, *args, **kwargs)
        self.__px_rwlock__ = RWLock()  # type: ignore[misc]  # (the slot is the subclass's)
        return self

    # __init__ is the base's own: the object is not shared before it returns.

    def copy(self) -> Self:
        """A shallow copy, as a new container of this class with its own lock."""
        with self.__px_rwlock__.read():
            return type(self)(self)

    def __reduce__(self) -> tuple[type[Self], tuple[object]]:
        with self.__px_rwlock__.read():
            return (type(self), (self._plain(self),))


class dict(_Protected, _dict):  # type: ignore[type-arg]  # (__init__.pyi gives px.dict its parameters)
    """A dict protected from creation: see the module docstring."""

    __slots__ = ("__px_rwlock__", "__weakref__")
    _plain = _dict
    _kinds = (_core.SharedDict,)  # the kind of mode "interpreters"

    __setitem__ = _writes(_dict.__setitem__)
    __delitem__ = _writes(_dict.__delitem__)
    __ior__ = _writes(_dict.__ior__)
    update = _writes(_dict.update)
    setdefault = _writes(_dict.setdefault)
    pop = _writes(_dict.pop)
    popitem = _writes(_dict.popitem)
    clear = _writes(_dict.clear)

    __eq__ = _reads(_dict.__eq__)
    __ne__ = _reads(_dict.__ne__)
    __hash__ = None
    __repr__ = _reads(_dict.__repr__)

    def __or__(self, other: object) -> Any:
        if not isinstance(other, _dict):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new


class list(_Protected, _list):  # type: ignore[type-arg]  # (as dict)
    """A list protected from creation: see the module docstring."""

    __slots__ = ("__px_rwlock__", "__weakref__")
    _plain = _list
    _kinds = (_core.SharedList,)

    __setitem__ = _writes(_list.__setitem__)
    __delitem__ = _writes(_list.__delitem__)
    __iadd__ = _writes(_list.__iadd__)
    __imul__ = _writes(_list.__imul__)
    append = _writes(_list.append)
    extend = _writes(_list.extend)
    insert = _writes(_list.insert)
    pop = _writes(_list.pop)
    remove = _writes(_list.remove)
    clear = _writes(_list.clear)
    sort = _writes(_list.sort)
    reverse = _writes(_list.reverse)

    index = _reads(_list.index)
    count = _reads(_list.count)
    __contains__ = _reads(_list.__contains__)
    __eq__ = _reads(_list.__eq__)
    __ne__ = _reads(_list.__ne__)
    __lt__ = _reads(_list.__lt__)
    __le__ = _reads(_list.__le__)
    __gt__ = _reads(_list.__gt__)
    __ge__ = _reads(_list.__ge__)
    __hash__ = None
    __repr__ = _reads(_list.__repr__)

    def __add__(self, other: Any) -> Any:
        with self.__px_rwlock__.read():
            return type(self)(_list.__add__(self, other))

    def __mul__(self, n: Any) -> Any:
        with self.__px_rwlock__.read():
            return type(self)(_list.__mul__(self, n))

    __rmul__ = __mul__


class xlist(metaclass=_EitherKind):
    """px.xlist(): the interlocked list (push, pop, flush, len) of
    pyparallel._core, in mode "interpreters" the one every interpreter
    shares."""

    __slots__ = ()
    _kinds = (_core.SharedXList, _core.xlist)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if _core._shared_containers():
            return _core.SharedXList(*args, **kwargs)
        return _core.xlist(*args, **kwargs)
