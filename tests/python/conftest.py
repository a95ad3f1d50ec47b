"""Fixtures and helpers shared by the pytest suite of pyparallel's runtime API.

Every test runs against the real runtime: real sockets on 127.0.0.1 (port 0,
so the kernel picks a free port), real files under tmp_path, no mocks.

The central fixture is `rt`, a Runtime harness. A test registers its servers
with `rt.serve(Protocol)` and then hands a *driver* function to
`rt.run(driver)`: the main thread runs `px.run()` (the documented way to run
pyparallel, and where `call_from_main_thread` work executes) while the driver
plays the client side on a plain thread. Whatever happens, the harness ends
with `px.stop()` and a bounded join: the driver's own exit stops the run, and
a watchdog stops it when the driver hangs. The driver's return value is
returned, and its exception re-raised, on the main thread.

The environment defaults to two workers (what the Makefile uses); a caller's
PYPARALLEL_WORKERS, PYPARALLEL_IO and PYPARALLEL_MODE win.
"""

import contextlib
import ctypes
import os
import pickle
import queue

os.environ.setdefault("PYPARALLEL_WORKERS", "2")

import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time

import pytest

import pyparallel as px

# pytest-timeout's limit for a test without a timeout marker of its own; it
# takes precedence over the command line's --timeout (the Makefile's 120).
DEFAULT_TEST_TIMEOUT = 60
# How long a client waits for any single answer before the test fails.
SOCKET_TIMEOUT = 10.0
# How long a test waits for one of its own threads to finish.
JOIN_TIMEOUT = 30.0
LOCALHOST = "127.0.0.1"
# The io_uring_setup system call's number in Linux's common system call
# table (x86-64, arm64, riscv and the others that use it).
IO_URING_SETUP = 425


def io_uring_unavailable():
    """Why the kernel refuses io_uring here (a container's seccomp profile,
    kernel.io_uring_disabled, an old kernel), or None when it works. Asked
    of the kernel directly, so that a broken backend is never mistaken for
    a missing one."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(IO_URING_SETUP, 4, params)
    if fd >= 0:
        os.close(fd)
        return None
    return f"io_uring_setup failed: {os.strerror(ctypes.get_errno())}"


# Why a test marked shares_objects is skipped in mode "interpreters".
SHARES_OBJECTS_REASON = (
    "the test shares its own objects with its callbacks (a protocol class or function made inside the test, or "
    "state the callbacks record for the test to check); in mode 'interpreters' callbacks run in the workers' "
    "interpreters, which find code by module and qualified name and share no objects with the test"
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "shares_objects(reason=None): skipped in mode 'interpreters', where callbacks cannot reach the test's objects",
    )
    config.addinivalue_line(
        "markers",
        "end_to_end: a suite driving outside programs (a database, a browser, a load balancer): run once per mode, "
        "with io_uring and without a sanitizer; skipped with PYPARALLEL_IO=epoll and in the sanitizer build",
    )


def pytest_collection_modifyitems(config, items):
    if expected_mode() == "interpreters":
        for item in items:
            marker = item.get_closest_marker("shares_objects")
            if marker is not None:
                reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else SHARES_OBJECTS_REASON)
                item.add_marker(pytest.mark.skip(reason=f"mode 'interpreters': {reason}"))
    # End-to-end suites spend their time in the outside programs, which
    # neither the I/O backend nor a sanitizer build changes; the backends and
    # the sanitizer are covered by the rest of the suite, so these run once
    # per mode and keep make test within its budget.
    if os.environ.get("PYPARALLEL_IO") == "epoll" or os.environ.get("PYPARALLEL_SANITIZED"):
        skip = pytest.mark.skip(reason="end-to-end suites run once per mode: with io_uring, without a sanitizer")
        for item in items:
            if item.get_closest_marker("end_to_end") is not None:
                item.add_marker(skip)
    if os.environ.get("PYPARALLEL_IO") == "uring":
        reason = io_uring_unavailable()
        if reason:
            skip = pytest.mark.skip(reason=f"PYPARALLEL_IO=uring, but io_uring is unavailable here ({reason})")
            for item in items:
                item.add_marker(skip)
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))


def gil_enabled():
    """True when Python code cannot run on two cores at once."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


def expected_mode():
    """The mode the runtime picks: PYPARALLEL_MODE, else "interpreters" on a
    GIL build and "threads" on a free-threaded one ("gil" when it runs with
    PYTHON_GIL=1)."""
    if os.environ.get("PYPARALLEL_MODE"):
        return os.environ["PYPARALLEL_MODE"]
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "interpreters"
    return "gil" if gil_enabled() else "threads"


def parallel_python():
    """True when the workers run Python code on several cores at once
    (modes "threads" and "interpreters")."""
    return expected_mode() != "gil"


# ---- client-side socket helpers -------------------------------------------


def connect(port, host=LOCALHOST, timeout=SOCKET_TIMEOUT):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock, n):
    """Reads exactly n bytes; fails the test on EOF or timeout."""
    chunks = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            got = b"".join(chunks)
            raise AssertionError(f"EOF after {len(got)} of {n} bytes: {got[-200:]!r}")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_until(sock, terminator):
    """Reads until the received bytes end with terminator."""
    data = b""
    while not data.endswith(terminator):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF before {terminator!r}; got {data[-200:]!r}")
        data += chunk
    return data


def recv_to_eof(sock, limit=64 << 20):
    """Reads until the peer closes; fails on timeout (the peer did not close)."""
    chunks = []
    total = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise AssertionError(f"more than {limit} bytes before EOF")


def recv_until_closed(sock):
    """Like recv_to_eof, but a reset also counts as closed: a server that
    closes a connection with unread input makes the kernel send RST."""
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def wait_for(predicate, timeout=SOCKET_TIMEOUT, interval=0.005, message=None):
    """Polls predicate until it is true; fails the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


def run_script(tmp_path, source, *args, env=None, timeout=60):
    """Writes source (dedented) as tmp_path/main.py and runs it in a fresh
    process, in the mode of this test run unless env says otherwise, with
    2 workers; its stdout lines. Fails on a non-zero exit."""
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(source))
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "PYPARALLEL_WORKERS": "2", **(env or {})},
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout.splitlines()


def interpreters_mode():
    """Whether programs run in mode "interpreters" (PYPARALLEL_MODE, or the
    default of a GIL build)."""
    return expected_mode() == "interpreters"


def run_threads(*calls, timeout=30.0):
    """Runs every call (a function, or a (function, *args) tuple) on its own
    thread, all at once; waits for all, re-raises the first failure, and
    fails if one is still running after timeout seconds."""
    failures = []

    def guarded(func, *args):
        try:
            func(*args)
        except BaseException as exc:
            failures.append(exc)

    threads = []
    for call in calls:
        func, *args = call if isinstance(call, tuple) else (call,)
        threads.append(threading.Thread(target=guarded, args=(func, *args), daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if failures:
        raise failures[0]
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"a thread was still running after {timeout} s")


def run_on_threads(target, count, *args):
    """Runs target(index, *args) for index 0..count-1, each on its own
    thread, like run_threads."""
    run_threads(*((target, index, *args) for index in range(count)), timeout=JOIN_TIMEOUT)


class Plain:
    """An object that supports weak references (and nothing else)."""


@contextlib.contextmanager
def plain_server(handle):
    """A one-connection TCP server that is not pyparallel: handle(conn) runs
    on a thread for the first connection. Yields the port."""
    with socket.socket() as listener:
        listener.bind((LOCALHOST, 0))
        listener.listen()

        def serve_one():
            conn, _ = listener.accept()
            with conn:
                handle(conn)

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(SOCKET_TIMEOUT)


def interrupt_and_expect_clean_exit(child, sock, signum=signal.SIGINT, limit=5.0):
    """Sends signum to a child serving sock's peer; the child must close the
    connection and exit 0 within limit seconds. Returns its stdout, stderr."""
    started = time.monotonic()
    child.send_signal(signum)
    assert recv_to_eof(sock) == b""
    out, err = child.communicate(timeout=limit + 5)
    assert time.monotonic() - started < limit, f"shutdown took {time.monotonic() - started:.1f} s"
    assert child.returncode == 0, (child.returncode, out, err)
    assert "Traceback" not in err, err
    return out, err


def bound_port(listening_transport):
    return listening_transport.sockname[1]


# ---- what callbacks report to the test, in every mode -------------------
#
# In mode "interpreters" a callback runs in a worker's interpreter and cannot
# touch the test's objects. It calls report(item) instead: that runs
# record(item) on the main thread (px.call_from_main_thread finds record by
# name in the main interpreter, where it is this module's own), and the test
# reads the items, in the order they were reported, from the `reports`
# fixture. The same code runs unchanged in modes "threads" and "gil".

_reports = queue.Queue()


def record(item):
    """Runs on the main thread: keeps item for the test."""
    _reports.put(item)


def report(item):
    """Called by a callback in any interpreter: hands item (a value that
    crosses between interpreters) to the test."""
    px.call_from_main_thread(record, item)


def next_report(timeout=SOCKET_TIMEOUT):
    """The oldest item reported and not read yet; fails after timeout."""
    try:
        return _reports.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"nothing was reported within {timeout} s") from None


def reports_until(until, timeout=SOCKET_TIMEOUT):
    """Items reported, up to and including the first for which until(item)."""
    got = []
    while True:
        got.append(next_report(timeout))
        if until(got[-1]):
            return got


def no_more_reports(wait=0.3):
    """Fails if anything is reported within wait seconds."""
    try:
        item = _reports.get(timeout=wait)
    except queue.Empty:
        return
    raise AssertionError(f"unexpected report {item!r}")


@pytest.fixture
def reports():
    """Starts a test with nothing reported; see report()."""
    while True:
        try:
            _reports.get_nowait()
        except queue.Empty:
            break
    return _reports


# What a test checks once run() has returned cannot come through report()
# (calls still queued for the main thread are not run then): a callback
# writes it to a file instead, before it returns.


def log_line(path, line):
    """Appends line to the file at path."""
    with open(path, "a") as log:
        log.write(line + "\n")


def logged_lines(path):
    try:
        with open(path) as log:
            return log.read().splitlines()
    except FileNotFoundError:
        return []


class FileLogged:
    """A protocol base whose log(line) appends to log_path (see logging_to)."""

    log_path = None

    def log(self, line):
        log_line(self.log_path, line)


def logging_to(protocol, path):
    """protocol (a FileLogged) with its log_path set to path; the subclass
    reaches a worker's interpreter as its recipe: protocol, found by name,
    and the str."""
    return type(protocol.__name__, (protocol,), {"log_path": str(path)})


# ---- protocols of several test files -------------------------------------
#
# In mode "interpreters" a worker imports a protocol class's module to find
# it, and test_properties imports hypothesis, whose compiled extension
# (hypothesis._native) does not load in subinterpreters: its protocols live
# here, beside those that several test files use.


class Netstring:
    """Returns every line framed as <length>:<line>, so that empty lines and
    lines holding \\r are seen exactly."""

    lines_mode = True

    def lines_received(self, transport, line):
        return b"%d:" % len(line) + line + b","


class Echo:
    def data_received(self, transport, data):
        return data


class Keep:
    """Hands every connection's transport to the test (as a handle on the
    connection, in mode "interpreters")."""

    def connection_made(self, transport):
        report(transport)


class Framed:
    """Replies to each line with the line's pieces as one vectored write of
    mixed buffer kinds: the tuple must arrive whole and in order."""

    lines_mode = True

    def lines_received(self, transport, line):
        kinds = (bytes, bytearray, memoryview)
        pieces = [line[i : i + 3] for i in range(0, len(line), 3)]
        return tuple(kinds[i % 3](piece) for i, piece in enumerate(pieces)) + (b"\n",)


# ---- CPU-bound work for the parallelism tests ----------------------------


def burn(n):
    total = 0
    for i in range(n):
        total += i % 7
    return total


def burn_with_constants(n):
    """Like burn, with integer constants above the small-int cache. In a
    module imported from source (PYTHONDONTWRITEBYTECODE=1) such constants
    are mortal, and threads running this code contend on their reference
    counts unless the runtime makes them immortal (the issue's pitfall)."""
    total = 0
    for i in range(n):
        total = (total + i * 40503) % 1000003
    return total


def calibrate_burn(seconds, func=burn):
    """The n for which func(n) takes about seconds on this machine."""
    n = 50_000
    while True:
        took = min(timed(func, n) for _ in range(2))
        if took > seconds / 4:
            return max(1, int(n * seconds / took))
        n *= 2


def timed(func, *args):
    started = time.perf_counter()
    func(*args)
    return time.perf_counter() - started


# How many times longer a latency bound is with the extension built under
# a sanitizer (make test's ASan step): the binding runs several times
# slower there, and unevenly, while the property a latency test checks (no
# request waits behind blocked ones) holds or fails by far more than that.
SANITIZER_SLOWDOWN = 4 if os.environ.get("PYPARALLEL_SANITIZED") else 1


# Resident memory is not measured with the extension built under a
# sanitizer (make test's ASan step): ASan keeps freed memory in quarantine
# and adds shadow memory, so RSS says nothing of what the code holds.
# Where memory is measured, a test runs without it in the other steps.
memory_not_under_sanitizer = pytest.mark.skipif(
    bool(os.environ.get("PYPARALLEL_SANITIZED")),
    reason="memory is not measured with the extension built under a sanitizer (ASan quarantines freed memory)",
)


def speedup(serial, parallel, target, attempts=5):
    """How many times faster parallel() runs than serial() (both doing the
    same work): the best of up to attempts interleaved pairs of runs,
    stopping once target is reached. Interleaving makes a change in the
    machine's load affect both alike, and a passing attempt proves the
    property: a runtime that cannot run in parallel never reaches target.
    Under a sanitizer (make test's ASan step) the binding runs several times
    slower and unevenly, so speedups are not measured there."""
    if os.environ.get("PYPARALLEL_SANITIZED"):
        pytest.skip("speedups are not measured with the extension built under a sanitizer")
    best = 0.0
    for _ in range(attempts):
        best = max(best, timed(serial) / timed(parallel))
        if best >= target:
            break
    return best


# ---- mortal objects and code (test_shared_eternalize*) -------------------
#
# eternalize() and immortalize_code() make objects immortal; the tests need
# objects that are mortal to begin with: copies made at run time, and code
# imported from source, not from a .pyc, whose constants CPython leaves
# mortal (the pitfall immortalize_code exists for).


def fresh(value):
    """A new, mortal copy of value (literals may be shared constants)."""
    return pickle.loads(pickle.dumps(value))


MODULE_SOURCE = textwrap.dedent("""
    def work(n, scale=1000003):
        total = 0
        for i in range(n):
            total = (total + i * scale) % 2147483647
        return total

    def with_mutable_default(x, cache=[]):
        return x + 77777777

    class Handler:
        def data_received(self, transport, data):
            return (b"reply", 55555555)

        @staticmethod
        def helper():
            return 44444444.5

        @classmethod
        def make(cls):
            return "class method constant " * 2

    class Callable:
        def __call__(self):
            return 33333333
""")


@pytest.fixture
def source_module(tmp_path, monkeypatch):
    """A module imported from source, not from a .pyc (the pitfall)."""
    (tmp_path / "px_source_mod.py").write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    sys.modules.pop("px_source_mod", None)
    import px_source_mod

    yield px_source_mod
    sys.modules.pop("px_source_mod", None)


def big_consts(code):
    return [
        c
        for c in code.co_consts
        if isinstance(c, (int, float, str, bytes, tuple))
        and c not in (None, True, False)
        and not (isinstance(c, int) and -5 <= c <= 256)
    ]


# ---- the Runtime harness ----------------------------------------------------


def run_bounded(limit, **run_kwargs):
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


class KeepAlive:
    """A protocol for the listener that keeps px.run() running in tests that
    register nothing else (run() ends when nothing is registered)."""


class Runtime:
    """See the module docstring."""

    def __init__(self):
        self.servers = []

    def serve(self, protocol, host=LOCALHOST, port=0, **kwargs):
        """Listens on host:port with protocol registered; returns the bound port."""
        server = px.server(host, port, **kwargs)
        px.register(server, protocol)
        self.servers.append(server)
        return bound_port(server)

    def run(self, driver, timeout=30.0, keepalive=True):
        """Runs px.run() on this (main) thread while driver() runs on another.

        The run ends when the driver returns or raises (it calls px.stop())
        or when timeout passes (a watchdog calls px.stop() and the test fails).
        """
        if keepalive:
            self.serve(KeepAlive)
        outcome = {}
        run_returned = threading.Event()
        expired = threading.Event()

        def stop_until_run_returns():
            # px.stop() may race with run() starting on the main thread, so
            # it is repeated until run() has really returned.
            while not run_returned.is_set():
                px.stop()
                run_returned.wait(0.1)

        def drive():
            try:
                outcome["value"] = driver()
            except BaseException as exc:  # re-raised on the main thread
                outcome["error"] = exc
            finally:
                stop_until_run_returns()

        def expire():
            expired.set()
            stop_until_run_returns()

        driver_thread = threading.Thread(target=drive, name="test-driver", daemon=True)
        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        driver_thread.start()
        watchdog.start()
        started = time.monotonic()
        try:
            px.run()
        finally:
            self.elapsed = time.monotonic() - started
            run_returned.set()
            watchdog.cancel()
            driver_thread.join(10)
        if expired.is_set():
            # The driver's own error (often an EOF caused by the watchdog's
            # stop) is secondary: the test overran its time.
            raise AssertionError(f"the test driver did not finish within {timeout} s") from outcome.get("error")
        if driver_thread.is_alive():
            raise AssertionError("the test driver is still running after px.run() returned")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    # Helpers, reachable through the fixture.
    connect = staticmethod(connect)
    recv_exactly = staticmethod(recv_exactly)
    recv_until = staticmethod(recv_until)
    recv_to_eof = staticmethod(recv_to_eof)
    recv_until_closed = staticmethod(recv_until_closed)
    wait_for = staticmethod(wait_for)


@pytest.fixture
def rt():
    return Runtime()


@pytest.fixture
def pxlog(caplog):
    """caplog capturing everything the "pyparallel" logger emits."""
    import logging

    caplog.set_level(logging.DEBUG, logger="pyparallel")
    return caplog
