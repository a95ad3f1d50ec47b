"""px.protect / px.unprotect / px.protected, and what read_lock/write_lock
do with an object that is (no longer) protected.

Everything runs on plain threads in every mode; nothing here needs the
engine loop. The lock itself is test_shared_rwlock.py's subject.
"""

import gc
import weakref

import pytest

import pyparallel as px
from conftest import Plain


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
