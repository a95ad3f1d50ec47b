"""Coroutines on the workers' asyncio loops: submit_work() of a coroutine
function, async def protocol callbacks, worker_loop(), and what happens to
the loops at stop.

Every worker has a running asyncio loop of its own, driven by the engine: a
coroutine that awaits leaves the worker free for its other connections.
Real sockets on 127.0.0.1; the protocol classes and coroutine functions are
at module level and report through conftest's report(), so that the tests
run in mode "interpreters" too.
"""

import asyncio
import gc
import logging
import os
import socket
import statistics
import sys
import threading
import time

import pytest

import pyparallel as px
from conftest import (
    connect,
    expected_mode,
    next_report,
    plain_server,
    recv_exactly,
    recv_until,
    report,
)
from pyparallel._aio import WorkerEventLoop

# ---- submit_work of coroutines -----------------------------------------


async def nap(seconds, tag):
    await asyncio.sleep(seconds)
    loop = asyncio.get_running_loop()
    return tag, isinstance(loop, WorkerEventLoop) and loop is px.worker_loop()


async def fail_later(message):
    await asyncio.sleep(0.01)
    raise ValueError(message)


async def observe_running_state():
    """What each step of a coroutine sees of the thread's asyncio state: the
    first step (eager), then iterations with the loop's debug mode on and
    off again."""
    loop = asyncio.get_running_loop()

    def seen():
        hooks = sys.get_asyncgen_hooks()
        return (
            hooks.firstiter == loop._asyncgen_firstiter_hook and hooks.finalizer == loop._asyncgen_finalizer_hook,
            sys.get_coroutine_origin_tracking_depth(),
            asyncio.get_running_loop() is loop,
        )

    steps = [seen()]
    loop.set_debug(True)
    await asyncio.sleep(0)
    steps.append(seen())
    loop.set_debug(False)
    await asyncio.sleep(0)
    steps.append(seen())
    return steps


def test_aio_steps_run_as_the_running_loop_with_its_hooks_and_debug_mode(rt):
    """Every step runs with the loop as the running loop and its async
    generator hooks set; in debug mode, with coroutine origin tracking,
    which ends with it."""
    steps = rt.run(lambda: px.submit_work(observe_running_state).result(timeout=10))
    assert steps == [(True, 0, True), (True, asyncio.constants.DEBUG_STACK_DEPTH, True), (True, 0, True)]


def test_aio_many_sleeping_coroutines_share_two_workers(rt):
    count = 200

    def driver():
        started = time.monotonic()
        futures = [px.submit_work(nap, 0.2, i) for i in range(count)]
        results = [f.result(timeout=10) for f in futures]
        return time.monotonic() - started, results

    elapsed, results = rt.run(driver)
    assert sorted(tag for tag, _ in results) == list(range(count))
    # Each awaits its own loop, which get_running_loop() and worker_loop()
    # both return.
    assert all(same for _, same in results)
    # 200 sleeps of 0.2 s on 2 workers: concurrent, not one after another.
    assert elapsed < 1.5, elapsed


def test_aio_coroutine_exception_reaches_errback_and_future(rt):
    seen = []

    def driver():
        future = px.submit_work(fail_later, "boom", errback=seen.append, callback=seen.append)
        assert isinstance(future.exception(timeout=10), ValueError)
        return str(future.exception())

    assert rt.run(driver) == "boom"
    assert len(seen) == 1 and isinstance(seen[0], ValueError)


def test_aio_worker_loop_off_the_workers_is_an_error():
    with pytest.raises(RuntimeError, match="workers only"):
        px.worker_loop()


# ---- async protocol callbacks ------------------------------------------


class AsyncEcho:
    """Answers after an await; "sleep N" sleeps N seconds first."""

    async def data_received(self, transport, data):
        if data.startswith(b"sleep "):
            await asyncio.sleep(float(data.split()[1]))
            return b"woke"
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        same = isinstance(loop, WorkerEventLoop) and loop is px.worker_loop()
        return b"same:" + data if same else b"other:" + data


def test_aio_async_data_received_answers(rt):
    port = rt.serve(AsyncEcho)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"ping")
            return recv_exactly(sock, 9)

    assert rt.run(driver) == b"same:ping"


class Relay:
    """Relays "PORT payload" to a server on 127.0.0.1:PORT through
    asyncio.open_connection, and answers with what it answered."""

    async def data_received(self, transport, data):
        port, payload = data.split(b" ", 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(payload)
        await writer.drain()
        answer = await reader.readexactly(len(payload) + 9)
        writer.close()
        await writer.wait_closed()
        return answer


def test_aio_async_callback_relays_through_open_connection(rt):
    port = rt.serve(Relay)

    def upstream(conn):
        data = conn.recv(1024)
        conn.sendall(b"upstream:" + data)

    def driver():
        with plain_server(upstream) as upstream_port, connect(port) as sock:
            sock.sendall(b"%d hello" % upstream_port)
            return recv_exactly(sock, 14)

    assert rt.run(driver) == b"upstream:hello"


def latency(port, payload, expected):
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(expected)) == expected
    return time.monotonic() - started


def test_aio_sleeping_coroutine_leaves_the_worker_free(rt):
    port = rt.serve(AsyncEcho)

    def driver():
        # One sleeper per worker (connections go to the least loaded one).
        sleepers = [connect(port) for _ in range(2)]
        try:
            for sock in sleepers:
                sock.sendall(b"sleep 1.0")
            time.sleep(0.05)
            times = [latency(port, b"ping", b"same:ping") for _ in range(20)]
            for sock in sleepers:
                assert recv_exactly(sock, 4) == b"woke"
        finally:
            for sock in sleepers:
                sock.close()
        return times

    times = rt.run(driver)
    assert statistics.median(times) < 0.05, times
    assert max(times) < 0.5, times


class Ordered:
    """Each line is answered after an await whose length it gives; a
    connection's callbacks must still run one at a time, in order."""

    lines_mode = True

    async def lines_received(self, transport, line):
        await asyncio.sleep(float(line) / 1000)
        return line + b";"

    async def eof_received(self, transport):
        await asyncio.sleep(0.01)
        transport.send(b"eof")
        return False


def test_aio_one_connections_callbacks_stay_in_order(rt):
    port = rt.serve(Ordered)

    def driver():
        with connect(port) as sock:
            # Several lines in one segment: the later ones wait for the
            # earlier ones' coroutines, though they sleep less.
            sock.sendall(b"50\n20\n0\n10\n")
            sock.shutdown(socket.SHUT_WR)
            return recv_until(sock, b"eof")

    assert rt.run(driver) == b"50;20;0;10;eof"


class Failing:
    async def data_received(self, transport, data):
        await asyncio.sleep(0)
        raise KeyError(data.decode())

    def exception_handler(self, transport, exc):
        transport.send(b"handled " + type(exc).__name__.encode())
        transport.close()


def test_aio_coroutine_exception_reaches_exception_handler(rt):
    port = rt.serve(Failing)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            return recv_until(sock, b"KeyError")

    assert rt.run(driver) == b"handled KeyError"


class Lifecycle:
    async def connection_made(self, transport):
        await asyncio.sleep(0.01)
        return b"hello;"

    async def data_received(self, transport, data):
        return data

    async def connection_lost(self, transport, exc):
        await asyncio.sleep(0.01)
        report(("lost", exc is None))


def test_aio_connection_made_and_lost_may_be_coroutines(rt, reports):
    port = rt.serve(Lifecycle)

    def driver():
        with connect(port) as sock:
            assert recv_exactly(sock, 6) == b"hello;"
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
        return next_report()

    assert rt.run(driver) == ("lost", True)


class Blocking:
    """A coroutine that blocks its thread (time.sleep) instead of awaiting:
    it blocks its worker's loop, but the worker is handed to another thread
    and its plain connections go on."""

    async def data_received(self, transport, data):
        if data == b"block":
            started = threading.get_ident()
            time.sleep(1.0)
            return b"done" if threading.get_ident() == started else b"moved"
        return b"async:" + data


class PlainEcho:
    def data_received(self, transport, data):
        return data


def test_aio_blocking_coroutine_hands_the_worker_off(rt):
    async_port = rt.serve(Blocking)
    plain_port = rt.serve(PlainEcho)

    def driver():
        blockers = [connect(async_port) for _ in range(2)]
        try:
            for sock in blockers:
                sock.sendall(b"block")
            time.sleep(0.1)
            started = time.monotonic()
            plain = [latency(plain_port, b"ping", b"ping") for _ in range(10)]
            # An async connection of a blocked worker waits for the loop,
            # which runs on one thread at a time: not on the new holder.
            asynchronous = latency(async_port, b"ping", b"async:ping")
            waited = time.monotonic() - started
            answers = [recv_exactly(sock, 4) for sock in blockers]
        finally:
            for sock in blockers:
                sock.close()
        return plain, asynchronous, waited, answers

    plain, asynchronous, waited, answers = rt.run(driver)
    assert answers == [b"done", b"done"]
    assert statistics.median(plain) < 0.2, plain
    assert waited > 0.5, (waited, asynchronous)


# ---- the loops' end ------------------------------------------------------


async def leave_a_task_behind(seconds):
    asyncio.get_running_loop().create_task(asyncio.sleep(seconds))

    async def agen():
        yield 1
        await asyncio.sleep(seconds)
        yield 2

    gen = agen()
    await gen.__anext__()  # a suspended async generator for shutdown_asyncgens
    asyncio.get_running_loop()._px_test_gen = gen
    return os.getpid()


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_aio_loops_close_at_stop_without_leaks(caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    counts = []
    for _ in range(20):
        future = px.submit_work(leave_a_task_behind, 100)
        px.run()  # ends once the coroutine returned; the task is left pending
        assert future.result(timeout=0) == os.getpid()
        gc.collect()
        counts.append(open_fds())
    # The loops' selectors and self-pipes are closed with them.
    assert counts[-1] <= counts[1], counts
    if expected_mode() != "interpreters":
        # Closed loops cancel their tasks first: nothing was destroyed pending.
        messages = [r.getMessage() for r in caplog.records]
        assert not [m for m in messages if "destroyed but it is pending" in m], messages
