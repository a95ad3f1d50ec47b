"""What the examples share (not an example itself): their --selftest mode,
and the choice of mode for the examples whose connections share objects.

A self-test runs the example's server for real on 127.0.0.1 (port 0) and
drives it with plain blocking sockets from a thread, while the main thread
runs px.run() as the example does normally. Whatever the outcome, the run is
stopped; a watchdog stops it if the client part hangs. The exit status says
whether the check passed, so tests/python/test_examples.py can run every
example as a test.
"""

import os
import socket
import sys
import threading
import traceback

import pyparallel as px


def use_a_mode_that_shares_objects(name, what):
    """For an example whose connections share Python objects (what: which).

    Mode "interpreters", the default on GIL builds, gives each worker an
    interpreter of its own, so each would get a separate copy of what and the
    example would split silently. On a GIL build the example runs in mode
    "gil" unless PYPARALLEL_MODE chooses; asked for "interpreters", it exits
    saying why. Call it before the engine starts (the first px.server()).
    """
    mode = os.environ.get("PYPARALLEL_MODE", "").strip().lower()
    if mode == "interpreters":
        sys.exit(
            f"{name}: its connections share {what}, and in mode 'interpreters' every worker has an interpreter of "
            "its own that shares no objects: run it in mode 'threads' (free-threaded Python) or 'gil' "
            "(docs/interpreters.md shows how that mode shares data instead)"
        )
    if not mode and sys._is_gil_enabled():
        os.environ["PYPARALLEL_MODE"] = "gil"


def run_selftest(name, drive, timeout=30.0):
    """Runs px.run() while drive() plays the client; returns an exit status.

    drive() returns a short summary (printed on success) or raises.
    """
    outcome = {}
    finished = threading.Event()

    def stop_until_finished():
        # px.stop() may come before run() has started: repeat it.
        while not finished.is_set():
            px.stop()
            finished.wait(0.1)

    def client():
        try:
            outcome["summary"] = drive()
        except BaseException:
            outcome["error"] = traceback.format_exc()
        finally:
            stop_until_finished()

    def expire():
        outcome.setdefault("error", f"timed out after {timeout} s")
        stop_until_finished()

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    thread = threading.Thread(target=client, daemon=True)
    watchdog.start()
    thread.start()
    try:
        px.run()
    finally:
        finished.set()
        watchdog.cancel()
        thread.join(10)
    if "error" in outcome:
        print(f"{name} selftest: FAILED\n{outcome['error']}", file=sys.stderr)
        return 1
    print(f"{name} selftest: ok ({outcome.get('summary', '')})")
    return 0


def connect(port, timeout=10.0):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def recv_lines(sock, count):
    """Reads count \\n-terminated lines (without their endings)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {data.count(b'\n')} of {count} lines")
        data += chunk
    lines = data.split(b"\n")
    if len(lines) - 1 > count:
        raise AssertionError(f"more than {count} lines: {lines[count:]!r}")
    return [line.rstrip(b"\r") for line in lines[:count]]


def run_clients(client, count, timeout=20.0):
    """Runs client(index) for every index below count, each on its own
    thread, at once; re-raises the first failure."""
    failures = []

    def guarded(index):
        try:
            client(index)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"a client did not finish within {timeout} s")
    if failures:
        raise failures[0]
