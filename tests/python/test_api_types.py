"""The module's exception hierarchy, its Transport and Timer types (made
only by the runtime), and is_parallel_thread outside the workers.
"""

import threading

import pytest

import pyparallel as px
from conftest import LOCALHOST


def test_is_parallel_thread_outside_the_workers():
    assert px.is_parallel_thread() is False
    seen = []
    thread = threading.Thread(target=lambda: seen.append(px.is_parallel_thread()))
    thread.start()
    thread.join()
    assert seen == [False]


def test_exception_hierarchy():
    assert issubclass(px.AsyncError, Exception)
    assert issubclass(px.ProtectionError, px.AsyncError)


def test_transport_and_timer_types():
    server = px.server(LOCALHOST, 0)
    try:
        assert isinstance(server, px.Transport)
    finally:
        server.close()
    timer = px.timer(10, int)
    try:
        assert isinstance(timer, px.Timer)
    finally:
        timer.cancel()
    with pytest.raises(TypeError):
        px.Transport()
    with pytest.raises(TypeError):
        px.Timer()
