"""px.stats(): the keys and types of its snapshot, and the value of each
counter against what a test did: connections and bytes over real
connections on 127.0.0.1, work items, blocked and queued work, unhandled
errors, per-worker memory in mode "interpreters"; and calls from any thread.

Counters are totals of the running loop (errors: of the process), so each
test compares them with a snapshot it took before acting.
"""

import os
import time

import pytest

import pyparallel as px
from conftest import (
    LOCALHOST,
    Echo,
    connect,
    expected_mode,
    next_report,
    recv_exactly,
    recv_until_closed,
    report,
    wait_for,
)

STATS_KEYS = {
    "mode",
    "io",
    "workers",
    "threads",
    "worker",
    "connections",
    "accepted",
    "bytes_in",
    "bytes_out",
    "io_hogs",
    "pending_work",
    "errors",
    "gc_paced",
    "channels",
}


def test_stats_keys_and_types():
    px.submit_work(int).result(timeout=10)
    stats = px.stats()
    assert STATS_KEYS <= set(stats), STATS_KEYS - set(stats)
    for key in STATS_KEYS - {"mode", "io", "worker", "channels"}:
        assert isinstance(stats[key], int) and stats[key] >= 0, (key, stats[key])
    assert len(stats["worker"]) == stats["workers"]
    for worker in stats["worker"]:
        assert {"callbacks", "queue_depth", "handoffs"} <= set(worker)
    assert isinstance(stats["channels"], list)
    assert stats["threads"] >= stats["workers"]
    assert sum(w["callbacks"] for w in stats["worker"]) >= 1


def counters(stats=None):
    """The counters of a stats() snapshot that tests compare, summed over
    the workers where they are per worker."""
    stats = px.stats() if stats is None else stats
    totals = {key: stats[key] for key in ("connections", "accepted", "bytes_in", "bytes_out", "errors")}
    for key in ("callbacks", "handoffs", "queue_depth"):
        totals[key] = sum(worker[key] for worker in stats["worker"])
    return totals


def grown_by(before, **deltas):
    """A predicate for wait_for: every counter named in deltas is now
    exactly its value in before plus its delta. Counters may trail the
    event by a moment (bytes_out is counted when the write returns, which
    may be after the client has read the bytes), so tests wait for the
    exact value rather than reading it once."""

    def check():
        now = counters()
        return all(now[key] == before[key] + delta for key, delta in deltas.items())

    return check


def test_stats_count_each_connection_and_byte(rt):
    """Three connections to an echo server, each sending a different size:
    connections and accepted grow by exactly three, bytes_in and bytes_out
    by exactly what was sent and echoed, and connections falls back once
    they are closed (accepted does not: it is a total)."""
    port = rt.serve(Echo)
    sizes = (1, 70_000, 250_000)

    def driver():
        before = counters()
        socks = [connect(port) for _ in sizes]
        try:
            wait_for(grown_by(before, connections=3, accepted=3), message=f"{counters()} after 3 connects")
            for sock, size in zip(socks, sizes):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                sock.sendall(payload)
                assert recv_exactly(sock, size) == payload
            total = sum(sizes)
            wait_for(grown_by(before, bytes_in=total, bytes_out=total), message=f"{counters()}, {total} bytes echoed")
        finally:
            for sock in socks:
                sock.close()
        wait_for(grown_by(before, connections=0, accepted=3), message=f"{counters()} after closing")

    rt.run(driver)


class CountedClient:
    """Sends its initial bytes on connecting and reports how many come back."""

    initial_bytes_to_send = b"client" * 1000

    def data_received(self, transport, data):
        report(len(data))


def test_stats_count_a_client_connection_at_both_ends(rt, reports):
    """A px.client connected to a px.server of the same process is two
    connections, of which one was accepted; its bytes are counted at both
    ends: what the client sends is out at the client and in at the server,
    and the echo the other way round."""
    port = rt.serve(Echo)
    size = len(CountedClient.initial_bytes_to_send)
    before = counters()
    px.register(px.client(LOCALHOST, port), CountedClient)

    def driver():
        received = 0
        while received < size:
            received += next_report()
        assert received == size
        wait_for(
            grown_by(before, connections=2, accepted=1, bytes_in=2 * size, bytes_out=2 * size),
            message=f"{counters()} against {before}",
        )

    rt.run(driver)


def test_stats_count_work_items_as_worker_callbacks():
    """Each work item is one callback of the worker that ran it: the
    workers' callbacks grow by exactly the number of submit_work calls (and
    of px.map's chunks), and nothing is pending once they are done."""
    px.submit_work(int).result(timeout=10)
    # Mode "interpreters" sets each worker's interpreter up with work items
    # of its own when the loop starts: those must be over.
    wait_for(lambda: px.stats()["pending_work"] == 0)
    before = counters()
    futures = [px.submit_work(pow, i, 2) for i in range(25)]
    assert [future.result(timeout=10) for future in futures] == [i * i for i in range(25)]
    wait_for(grown_by(before, callbacks=25), message=f"{counters()} against {before}")
    assert px.map(abs, range(-50, 50), chunksize=10) == [abs(i) for i in range(-50, 50)]
    wait_for(grown_by(before, callbacks=35), message=f"{counters()} against {before}")
    stats = px.stats()
    assert stats["pending_work"] == 0
    assert all(worker["queue_depth"] == 0 for worker in stats["worker"])


BLOCKING_ITEMS = 32


def test_stats_show_queued_and_blocked_work():
    """Work items that sleep: right after they are submitted most of them
    are pending (no worker can start more than one before the one it runs
    is handed off, which takes 10 ms); each one is handed off, since it
    blocks its thread, to a spare thread the engine starts; once they are
    done nothing is pending or queued."""
    px.submit_work(int).result(timeout=10)
    wait_for(lambda: px.stats()["pending_work"] == 0)
    before = counters()
    futures = [px.submit_work(time.sleep, 0.1) for _ in range(BLOCKING_ITEMS)]
    queued = px.stats()
    assert 0 < queued["pending_work"] <= BLOCKING_ITEMS, queued["pending_work"]
    assert 0 < counters(queued)["queue_depth"] - before["queue_depth"] <= BLOCKING_ITEMS
    for future in futures:
        future.result(timeout=30)
    wait_for(lambda: px.stats()["pending_work"] == 0 and counters()["queue_depth"] == 0)
    after = px.stats()
    assert counters(after)["handoffs"] - before["handoffs"] >= BLOCKING_ITEMS, (counters(after), before)
    assert after["threads"] > after["workers"]


def fail(message):
    raise RuntimeError(message)


class FailingProtocol:
    def data_received(self, transport, data):
        fail("data_received failure")


def test_stats_count_unhandled_callback_errors_not_work_errors(rt, pxlog):
    """errors counts the exceptions no handler took: one each for a protocol
    callback, a timer callback and a call_from_main_thread function; an
    exception of a work item goes to its future and is not counted."""
    port = rt.serve(FailingProtocol)

    def driver():
        before = counters()
        with connect(port) as sock:
            sock.sendall(b"x")
            assert recv_until_closed(sock) == b""
        px.timer(0.01, fail, "timer failure")
        px.call_from_main_thread(fail, "main-thread failure")
        with pytest.raises(RuntimeError, match="work failure"):
            px.submit_work(fail, "work failure").result(timeout=10)
        wait_for(grown_by(before, errors=3), message=f"{counters()} against {before}")
        time.sleep(0.2)
        assert counters()["errors"] == before["errors"] + 3

    rt.run(driver)


def test_stats_worker_memory_in_mode_interpreters_only():
    """Mode "interpreters" reports how much memory each worker's interpreter
    took to create (positive: an interpreter costs megabytes); the other
    modes, which have no interpreter per worker, report no memory."""
    px.submit_work(int).result(timeout=10)
    stats = px.stats()
    assert len(stats["worker"]) == stats["workers"]
    if expected_mode() == "interpreters":
        memory = [worker["memory"] for worker in stats["worker"]]
        # Under a sanitizer (make test's ASan step) freed memory sits in
        # ASan's quarantine and an interpreter may be made from it: its
        # resident growth can be 0 there (see memory_not_under_sanitizer).
        least = 0 if os.environ.get("PYPARALLEL_SANITIZED") else 1
        assert all(isinstance(m, int) and least <= m < 1 << 30 for m in memory), memory
    else:
        assert all("memory" not in worker for worker in stats["worker"]), stats["worker"]


def test_stats_is_callable_from_any_thread(rt):
    results = []

    def driver():
        results.append(px.stats())
        results.append(px.submit_work(px.stats).result(timeout=10))

    rt.run(driver)
    assert all(STATS_KEYS <= set(r) for r in results)
