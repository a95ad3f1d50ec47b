"""Protected containers: ``px.dict`` and ``px.list``.

Both are ordinary ``dict``/``list`` subclasses that carry their own
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

from ._core import RWLock

# typing is imported for the type checker only: every worker interpreter
# imports this package, and typing would add milliseconds to each.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Self

__all__ = ["dict", "list"]

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


class _Protected:
    """What px.dict and px.list share: the lock slot, copies, pickling."""

    __slots__ = ()
    _plain: ClassVar[type[Any]] = None  # type: ignore[assignment]  # the built-in base: dict or list
    __px_rwlock__: RWLock

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
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
