"""px.run / px.run_once / px.stop and the shutdown: run() ends on stop(),
on SIGINT/SIGTERM, or when nothing is left to do (no connection, work item
or timer); run and run_once belong to the main thread; and a shutdown
closes every connection, settles every future and joins every thread
before run() returns.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyparallel as px
from conftest import (
    LOCALHOST,
    Echo,
    FileLogged,
    Keep,
    connect,
    expected_mode,
    interrupt_and_expect_clean_exit,
    log_line,
    logged_lines,
    logging_to,
    next_report,
    plain_server,
    recv_exactly,
    recv_to_eof,
    report,
    run_bounded,
    wait_for,
)

# Protocol classes and functions given to the runtime are at module level,
# so that the tests run in mode "interpreters" too (a worker's interpreter
# finds them by name). What callbacks see reaches the test through conftest's
# report() while run() runs, or through a file (conftest's log_line) where
# the test looks only once run() has returned.


# ---- run, run_once, stop ---------------------------------------------------------


def test_run_returns_when_nothing_is_registered():
    assert run_bounded(5) < 2


def test_run_waits_for_pending_work_then_returns():
    future = px.submit_work(time.sleep, 0.3)
    elapsed = run_bounded(10)
    assert future.done() and future.exception() is None
    assert elapsed < 5


def test_run_returns_when_the_last_client_connection_closes():
    with plain_server(lambda conn: time.sleep(0.2)) as port:
        px.register(px.client(LOCALHOST, port), type("Quiet", (), {}))
        elapsed = run_bounded(10)
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
    assert run_bounded(10) >= 0.15
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
    elapsed = run_bounded(10)
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
    elapsed = run_bounded(10)
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
    assert run_bounded(10, mode=expected_mode()) < 5


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


# ---- shutdown leaves nothing behind ----------------------------------------------------


def engine_thread_count():
    return len(os.listdir("/proc/self/task"))


def test_shutdown_joins_every_thread(rt):
    """After run() returns, the engine's threads (spares for blocked
    callbacks included) are gone."""
    run_bounded(5)  # ends any loop an earlier test left running
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
    wait_for(
        lambda: engine_thread_count() <= baseline,
        timeout=5,
        message=f"{engine_thread_count()} threads after shutdown, {baseline} before",
    )


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
