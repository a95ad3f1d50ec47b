"""Servers, clients, register, run/run_once/stop, misuse, stats() and shutdown.

The runtime's entry points and what they promise about their arguments and
their life cycle: misuse raises TypeError/ValueError/OSError with a clear
message, run() ends on stop(), on a signal, or when nothing is left to do,
and a shutdown closes every connection before run() returns.
"""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyparallel as px
from conftest import (
    LOCALHOST,
    FileLogged,
    connect,
    expected_mode,
    gil_enabled,
    interrupt_and_expect_clean_exit,
    io_uring_unavailable,
    log_line,
    logged_lines,
    logging_to,
    next_report,
    plain_server,
    recv_exactly,
    recv_to_eof,
    report,
    reports_until,
    wait_for,
)

# Protocol classes and functions given to the runtime are at module level,
# so that the tests run in mode "interpreters" too (a worker's interpreter
# finds them by name). What callbacks see reaches the test through conftest's
# report() while run() runs, or through a file (conftest's log_line) where
# the test looks only once run() has returned.


class Echo:
    def data_received(self, transport, data):
        return data


class Keep:
    """Hands every connection's transport to the test (as a handle on the
    connection, in mode "interpreters")."""

    def connection_made(self, transport):
        report(transport)




# ---- register ------------------------------------------------------------------


def test_register_rejects_an_instance():
    server = px.server(LOCALHOST, 0)
    try:
        with pytest.raises(TypeError):
            px.register(server, Echo())
    finally:
        server.close()


@pytest.mark.parametrize("protocol", [None, "Echo", 42, lambda: Echo, print])
def test_register_rejects_a_non_class(protocol):
    server = px.server(LOCALHOST, 0)
    try:
        with pytest.raises(TypeError):
            px.register(server, protocol)
    finally:
        server.close()


@pytest.mark.parametrize("transport", [None, "127.0.0.1:80", object()])
def test_register_rejects_a_non_transport(transport):
    with pytest.raises(TypeError):
        px.register(transport, Echo)


def test_register_twice_raises_value_error():
    server = px.server(LOCALHOST, 0)
    try:
        px.register(server, Echo)
        with pytest.raises(ValueError):
            px.register(server, Echo)
    finally:
        server.close()


def test_register_a_closed_server_raises_async_error():
    server = px.server(LOCALHOST, 0)
    server.close()
    with pytest.raises(px.AsyncError):
        px.register(server, Echo)


def test_register_an_accepted_connection_raises_value_error(rt, reports):
    """An accepted connection's protocol is its server's."""
    port = rt.serve(Keep)

    def driver():
        with connect(port):
            accepted = next_report()
            with pytest.raises(ValueError):
                px.register(accepted, Echo)

    rt.run(driver)


def test_register_accepts_keyword_arguments(rt):
    """The README's example passes transport= and protocol= by name."""
    server = px.server(LOCALHOST, 0)
    px.register(transport=server, protocol=Echo)
    port = server.sockname[1]

    def driver():
        with connect(port) as sock:
            sock.sendall(b"by name")
            return recv_exactly(sock, 7)

    assert rt.run(driver) == b"by name"


# ---- server and client arguments ------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((None, 0), {}),
        ((b"127.0.0.1", 0), {}),
        ((LOCALHOST, "80"), {}),
        ((LOCALHOST, 1.5), {}),
        ((LOCALHOST, 0, 10), {}),  # backlog is keyword-only
        ((LOCALHOST, 0), {"backlog": "10"}),
        ((LOCALHOST,), {}),
        ((LOCALHOST, 0), {"nonsense": 1}),
    ],
)
def test_server_bad_argument_types(args, kwargs):
    with pytest.raises(TypeError):
        px.server(*args, **kwargs)


@pytest.mark.parametrize("port", [-1, 65536, 1 << 40])
def test_server_port_out_of_range(port):
    with pytest.raises(ValueError):
        px.server(LOCALHOST, port)


@pytest.mark.parametrize("port", [-1, 65536])
def test_client_port_out_of_range(port):
    with pytest.raises(ValueError):
        px.client(LOCALHOST, port)


@pytest.mark.parametrize("args", [(None, 80), (LOCALHOST, "80"), (LOCALHOST,)])
def test_client_bad_argument_types(args):
    with pytest.raises(TypeError):
        px.client(*args)


def test_port_in_use_names_the_address():
    with socket.socket() as other:
        other.bind((LOCALHOST, 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError) as info:
            px.server(LOCALHOST, port)
    message = str(info.value)
    assert LOCALHOST in message and str(port) in message, message


def test_second_server_on_the_same_port_is_refused():
    """Two px.server calls on one address must not silently share it (as
    SO_REUSEPORT would): a user expects the second to fail like any bind."""
    first = px.server(LOCALHOST, 0)
    try:
        port = first.sockname[1]
        with pytest.raises(OSError) as info:
            px.server(LOCALHOST, port)
        assert str(port) in str(info.value)
    finally:
        first.close()


def test_unresolvable_host_raises_oserror():
    with pytest.raises(OSError):
        px.server("no-such-host.invalid", 0)


def test_server_sockname_reports_the_bound_port():
    server = px.server(LOCALHOST, 0)
    try:
        host, port = server.sockname
        assert host == LOCALHOST
        assert 0 < port < 65536
    finally:
        server.close()


def test_server_on_all_addresses(rt):
    """host "" listens on every IPv4 address, 127.0.0.1 included."""
    port = rt.serve(Echo, host="")

    def driver():
        with connect(port) as sock:
            sock.sendall(b"any")
            return recv_exactly(sock, 3)

    assert rt.run(driver) == b"any"


def test_server_resolves_a_name(rt):
    port = rt.serve(Echo, host="localhost")

    def driver():
        family = socket.AF_INET6 if ":" in rt.servers[0].sockname[0] else socket.AF_INET
        host = rt.servers[0].sockname[0]
        with socket.socket(family) as sock:
            sock.settimeout(10)
            sock.connect((host, port))
            sock.sendall(b"named")
            return recv_exactly(sock, 5)

    assert rt.run(driver) == b"named"


def test_nothing_is_accepted_before_register(rt):
    """A server that is not registered yet leaves connections in the backlog;
    they are served once a protocol is registered."""
    server = px.server(LOCALHOST, 0)
    port = server.sockname[1]
    sock = connect(port)  # completes in the kernel's backlog
    try:
        sock.sendall(b"early")
        px.register(server, Echo)

        def driver():
            return recv_exactly(sock, 5)

        assert rt.run(driver) == b"early"
    finally:
        sock.close()


def test_listener_close_stops_accepting_but_keeps_connections(rt):
    server = px.server(LOCALHOST, 0)
    px.register(server, Echo)
    port = server.sockname[1]

    def driver():
        with connect(port) as kept:
            kept.sendall(b"a")
            assert recv_exactly(kept, 1) == b"a"
            server.close()
            server.close()  # harmless twice
            wait_for(lambda: _connect_is_refused(port), message="the closed listener still accepts")
            kept.sendall(b"still here")
            assert recv_exactly(kept, 10) == b"still here"

    rt.run(driver)


def _connect_is_refused(port):
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # The listener closed while this connection sat in its accept
        # queue: the closing is under way, not finished; ask again.
        return False


# ---- clients ---------------------------------------------------------------------


class RoundTripClient:
    initial_bytes_to_send = b"round trip"

    def __init__(self):
        self.received = b""

    def data_received(self, transport, data):
        report(data)
        self.received += data
        if self.received == b"round trip":
            transport.close()

    def connection_lost(self, transport, exc):
        report(("lost", exc))


def test_client_connects_and_exchanges_data(rt, reports):
    port = rt.serve(Echo)
    px.register(px.client(LOCALHOST, port), RoundTripClient)

    def driver():
        return reports_until(lambda item: isinstance(item, tuple))

    received = rt.run(driver)
    assert b"".join(r for r in received if isinstance(r, bytes)) == b"round trip"
    assert received[-1] == ("lost", None)


class RefusedClient(FileLogged):
    def connection_made(self, transport):
        self.log("made")

    def connection_lost(self, transport, exc):
        self.log(f"lost {type(exc).__name__} {isinstance(exc, ConnectionRefusedError)}")


def test_client_connection_refused(tmp_path):
    """A failed connect ends in connection_lost(ConnectionRefusedError);
    connection_made never runs, and run() then ends by itself."""
    log = tmp_path / "events"
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        px.register(px.client(LOCALHOST, port), logging_to(RefusedClient, log))
        _run_bounded(10)
    assert logged_lines(log) == ["lost ConnectionRefusedError True"]


class PlainServerClient(FileLogged):
    def connection_made(self, transport):
        self.log(f"made {transport.peername[0]} {transport.peername[1]}")

    def data_received(self, transport, data):
        self.log(f"data {data.hex()}")

    def connection_lost(self, transport, exc):
        self.log(f"lost {exc!r}")


def test_client_of_a_plain_socket_server(tmp_path):
    """px.client against a server that is not pyparallel: greeting, EOF."""
    log = tmp_path / "events"
    with plain_server(lambda conn: conn.sendall(b"hello from a plain server")) as port:
        px.register(px.client(LOCALHOST, port), logging_to(PlainServerClient, log))
        _run_bounded(10)
    events = logged_lines(log)
    assert events[0] == f"made {LOCALHOST} {port}"
    data = b"".join(bytes.fromhex(e.split()[1]) for e in events if e.startswith("data "))
    assert data == b"hello from a plain server"
    assert events[-1] == "lost None"


# ---- run, run_once, stop ---------------------------------------------------------


def _run_bounded(limit, **run_kwargs):
    """px.run(**run_kwargs) with a watchdog: fails (after stopping it) if it
    lasts longer than limit seconds. Returns the elapsed time."""
    timed_out = threading.Event()

    def expire():
        timed_out.set()
        px.stop()

    watchdog = threading.Timer(limit, expire)
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        px.run(**run_kwargs)
    finally:
        watchdog.cancel()
    assert not timed_out.is_set(), f"px.run() did not return within {limit} s"
    return time.monotonic() - started


def test_run_returns_when_nothing_is_registered():
    assert _run_bounded(5) < 2


def test_run_waits_for_pending_work_then_returns():
    future = px.submit_work(time.sleep, 0.3)
    elapsed = _run_bounded(10)
    assert future.done() and future.exception() is None
    assert elapsed < 5


def test_run_returns_when_the_last_client_connection_closes():
    with plain_server(lambda conn: time.sleep(0.2)) as port:
        px.register(px.client(LOCALHOST, port), type("Quiet", (), {}))
        elapsed = _run_bounded(10)
    assert 0.15 < elapsed < 5


def test_stop_from_another_thread_ends_run_promptly(rt):
    port = rt.serve(Echo)
    stopped_at = []

    def driver():
        # stop() when run() has not started yet has no effect (docs/api.md):
        # a call the main thread answers proves that run() is running.
        px.call_from_main_thread_and_wait(int)
        with connect(port) as sock:
            sock.sendall(b"x")
            recv_exactly(sock, 1)
            stopped_at.append(time.monotonic())
            px.stop()
            # The shutdown closes this connection.
            assert recv_to_eof(sock) == b""

    rt.run(driver)
    assert time.monotonic() - stopped_at[0] < 3


def test_stop_when_nothing_runs_is_harmless():
    px.stop()
    px.stop()
    # A later run still works and is not ended by the earlier stops.
    future = px.submit_work(time.sleep, 0.2)
    assert _run_bounded(10) >= 0.15
    assert future.done()


class Tracked(FileLogged):
    def connection_made(self, transport):
        report("made")

    def connection_lost(self, transport, exc):
        self.log(f"lost {exc!r}")


def test_shutdown_closes_every_connection_before_run_returns(rt, reports, tmp_path):
    """run() returns only after every connection's connection_lost ran."""
    log = tmp_path / "lost"
    port = rt.serve(logging_to(Tracked, log))
    socks = []

    def driver():
        for _ in range(5):
            socks.append(connect(port))
        assert [next_report() for _ in range(5)] == ["made"] * 5

    try:
        rt.run(driver)
        lost = logged_lines(log)
        assert len(lost) == 5, lost
        for sock in socks:
            assert recv_to_eof(sock) == b""
    finally:
        for sock in socks:
            sock.close()


def test_run_waits_for_a_live_timer(tmp_path):
    log = tmp_path / "fired"
    px.timer(0.3, log_line, str(log), "fired")
    elapsed = _run_bounded(10)
    assert logged_lines(log) == ["fired"] and 0.25 < elapsed < 5


# The periodic timer that cancel_periodic_timer cancels, in the main
# interpreter.
PERIODIC_TIMERS = []


def cancel_periodic_timer():
    PERIODIC_TIMERS.pop().cancel()


def test_run_waits_for_a_periodic_timer_until_cancelled(tmp_path):
    log = tmp_path / "ticks"
    PERIODIC_TIMERS[:] = [px.timer(0.02, log_line, str(log), "tick", period=0.02)]
    # A Timer does not cross between interpreters: a timer's callback on a
    # worker has the main thread cancel it.
    px.timer(0.3, px.call_from_main_thread, cancel_periodic_timer)
    elapsed = _run_bounded(10)
    assert not PERIODIC_TIMERS, "the periodic timer was not cancelled"
    assert 0.25 < elapsed < 5 and len(logged_lines(log)) >= 5


def call_on_a_thread(func, *args):
    """func(*args) on a plain thread; returns the exception it raised."""
    raised = []

    def target():
        try:
            func(*args)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return raised[0] if raised else None


def test_run_and_run_once_belong_to_the_main_thread():
    assert isinstance(call_on_a_thread(px.run), px.AsyncError)
    assert isinstance(call_on_a_thread(px.run_once, 0), px.AsyncError)


def test_run_mode_argument():
    """run(mode=...) must agree with the running mode; nonsense is refused."""
    px.submit_work(int).result(timeout=10)  # the workers run
    other = "gil" if expected_mode() == "threads" else "threads"
    with pytest.raises(ValueError):
        px.run(mode=other)
    with pytest.raises(ValueError):
        px.run(mode="bogus")
    with pytest.raises(TypeError):
        px.run(mode=1)
    assert _run_bounded(10, mode=expected_mode()) < 5


# The threads note_thread ran on, in the main interpreter.
RAN_ON = []


def note_thread():
    RAN_ON.append(threading.current_thread())


def test_run_once_runs_queued_main_thread_calls():
    RAN_ON.clear()
    px.submit_work(px.call_from_main_thread, note_thread)
    started = time.monotonic()
    count = 0
    while count == 0 and time.monotonic() - started < 10:
        count = px.run_once(timeout=5)
    assert count == 1
    assert RAN_ON == [threading.main_thread()]
    assert time.monotonic() - started < 4, "run_once waited for its timeout after the call ran"


def test_run_once_with_a_timeout_returns_when_nothing_comes():
    started = time.monotonic()
    assert px.run_once(timeout=0.2) == 0
    assert 0.15 < time.monotonic() - started < 3
    started = time.monotonic()
    assert px.run_once(timeout=0) == 0
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("timeout, error", [("1", TypeError), (-1, ValueError)])
def test_run_once_bad_timeout(timeout, error):
    """A negative timeout is a mistake, not "forever" (as for queue.get)."""
    with pytest.raises(error):
        px.run_once(timeout=timeout)


# ---- signals -----------------------------------------------------------------------

# A script file (not python -c), so that in mode "interpreters" the workers
# can import it to find Echo; what starts the server is under the
# __main__ guard for that reason.
SIGNAL_CHILD = textwrap.dedent(
    """
    import sys
    import pyparallel as px

    class Echo:
        def data_received(self, transport, data):
            return data
        def connection_lost(self, transport, exc):
            print("connection_lost", exc, flush=True)

    if __name__ == "__main__":
        server = px.server("127.0.0.1", 0)
        px.register(server, Echo)
        # Announced from inside run(), once its signal handling is in place.
        px.call_from_main_thread(print, "port", server.sockname[1], flush=True)
        px.run()
        print("run returned", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_run_shuts_down_cleanly(signum, tmp_path):
    """SIGINT/SIGTERM end run() with a clean shutdown: the open connection is
    closed (its connection_lost runs), run() returns normally (no
    KeyboardInterrupt, as docs/api.md says), and the process exits 0."""
    script = tmp_path / "signal_child.py"
    script.write_text(SIGNAL_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("port "), (line, child.stderr.read() if child.poll() is not None else "")
        port = int(line.split()[1])
        with connect(port) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
            out, err = interrupt_and_expect_clean_exit(child, sock, signum)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "connection_lost None" in out, out
    assert out.rstrip().endswith("run returned"), out


# ---- stats, mode, backend ------------------------------------------------------------

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


def test_stats_workers_follow_the_environment():
    wanted = os.environ.get("PYPARALLEL_WORKERS")
    px.submit_work(int).result(timeout=10)
    if wanted:
        assert px.stats()["workers"] == int(wanted)
    else:
        assert px.stats()["workers"] == px.cpu_count()


def test_stats_io_backend_matches_the_environment():
    px.submit_work(int).result(timeout=10)
    io = px.stats()["io"]
    wanted = os.environ.get("PYPARALLEL_IO")
    names = {"uring": "io_uring", "io_uring": "io_uring", "epoll": "epoll"}
    if wanted:
        assert io == names[wanted]
    else:
        assert io in ("io_uring", "epoll")


def test_stats_mode_matches_the_build():
    assert px.stats()["mode"] == expected_mode()


@pytest.mark.skipif(gil_enabled(), reason="only a free-threaded build can keep the GIL off")
def test_import_keeps_the_gil_disabled():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, pyparallel; print(sys._is_gil_enabled())"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out.stderr
    assert "GIL" not in out.stderr, out.stderr


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


# ---- threads and errors ----------------------------------------------------------------


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


# ---- shutdown leaves nothing behind ----------------------------------------------------


def engine_thread_count():
    return len(os.listdir("/proc/self/task"))


def test_shutdown_joins_every_thread(rt):
    """After run() returns, the engine's threads (spares for blocked
    callbacks included) are gone."""
    _run_bounded(5)  # ends any loop an earlier test left running
    baseline = engine_thread_count()
    port = rt.serve(Echo)

    def driver():
        with connect(port) as sock:
            sock.sendall(b"x")
            recv_exactly(sock, 1)
        # Blocking work makes the engine start spare threads.
        futures = [px.submit_work(time.sleep, 0.2) for _ in range(6)]
        for future in futures:
            future.result(timeout=10)
        assert engine_thread_count() > baseline

    rt.run(driver)
    wait_for(lambda: engine_thread_count() <= baseline, timeout=5,
             message=f"{engine_thread_count()} threads after shutdown, {baseline} before")


def test_shutdown_settles_every_future(rt):
    """Work still queued at shutdown is cancelled: every future is done
    (with a result, or cancelled) once run() returns, none hangs."""
    futures = []

    def driver():
        futures.extend(px.submit_work(time.sleep, 0.3) for _ in range(40))
        time.sleep(0.05)

    rt.run(driver)
    assert rt.elapsed < 5
    assert all(f.done() for f in futures), sum(not f.done() for f in futures)
    for future in futures:
        assert future.cancelled() or future.exception() is None


def test_transport_of_a_finished_run_raises_on_send(rt, reports):
    port = rt.serve(Keep)
    kept = []

    def driver():
        sock = connect(port)
        kept.append(next_report())
        return sock

    sock = rt.run(driver)
    try:
        with pytest.raises(px.AsyncError):
            kept[0].send(b"after the run")
        kept[0].close()  # harmless
    finally:
        sock.close()


# ---- environment variables ---------------------------------------------------------------


def run_with_env(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("value", ["abc", "-3", "2x"])
def test_bad_workers_variable_is_a_clear_error(value):
    """A malformed PYPARALLEL_WORKERS is a ValueError naming the variable at
    the first use of the runtime, not silently replaced by a default: a
    production deployment that sets it wants to know it was not applied."""
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10)", PYPARALLEL_WORKERS=value)
    assert result.returncode != 0, "the bad value was ignored"
    assert "ValueError" in result.stderr and "PYPARALLEL_WORKERS" in result.stderr, result.stderr


def test_bad_io_variable_is_a_clear_error():
    """Like PYPARALLEL_WORKERS: PYPARALLEL_IO=bogus must not quietly mean auto."""
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10)", PYPARALLEL_IO="bogus")
    assert result.returncode != 0, "the bad value was ignored"
    assert "ValueError" in result.stderr and "PYPARALLEL_IO" in result.stderr, result.stderr


def test_bad_mode_variable_is_a_clear_error():
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10)", PYPARALLEL_MODE="bogus")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "PYPARALLEL_MODE" in result.stderr, result.stderr


@pytest.mark.parametrize("io", ["uring", "epoll"])
def test_io_variable_selects_the_backend(io):
    if io == "uring" and io_uring_unavailable():
        pytest.skip(f"io_uring is unavailable here ({io_uring_unavailable()})")
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10); print(px.stats()['io'])",
                          PYPARALLEL_IO=io)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == {"uring": "io_uring", "epoll": "epoll"}[io]
