"""px.stats(): the keys and types of its snapshot, the connection and byte
counters against real connections, and calls from any thread.
"""

import pyparallel as px
from conftest import Echo, connect, recv_exactly, wait_for


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
}


def test_stats_keys_and_types():
    px.submit_work(int).result(timeout=10)
    stats = px.stats()
    assert STATS_KEYS <= set(stats), STATS_KEYS - set(stats)
    for key in STATS_KEYS - {"mode", "io", "worker"}:
        assert isinstance(stats[key], int) and stats[key] >= 0, (key, stats[key])
    assert len(stats["worker"]) == stats["workers"]
    for worker in stats["worker"]:
        assert {"callbacks", "queue_depth", "handoffs"} <= set(worker)
    assert stats["threads"] >= stats["workers"]
    assert sum(w["callbacks"] for w in stats["worker"]) >= 1


def test_stats_count_connections_and_bytes(rt):
    port = rt.serve(Echo)
    payload = b"x" * 100_000

    def driver():
        before = px.stats()
        socks = [connect(port) for _ in range(3)]
        try:
            wait_for(lambda: px.stats()["connections"] >= before["connections"] + 3)
            during = px.stats()
            for sock in socks:
                sock.sendall(payload)
                assert recv_exactly(sock, len(payload)) == payload
            # Counters may trail the data by a moment (a client can read
            # bytes before the writing thread has counted them).
            wait_for(lambda: px.stats()["bytes_in"] - before["bytes_in"] >= 3 * len(payload))
            wait_for(lambda: px.stats()["bytes_out"] - before["bytes_out"] >= 3 * len(payload))
        finally:
            for sock in socks:
                sock.close()
        assert during["accepted"] >= before["accepted"] + 3
        wait_for(lambda: px.stats()["connections"] <= before["connections"])

    rt.run(driver)


def test_stats_is_callable_from_any_thread(rt):
    results = []

    def driver():
        results.append(px.stats())
        results.append(px.submit_work(px.stats).result(timeout=10))

    rt.run(driver)
    assert all(STATS_KEYS <= set(r) for r in results)
