"""pyparallel: Python protocol callbacks and work items in parallel on every
core of one process.

    import pyparallel as px

The engine and most of the API are in the C extension pyparallel._core;
this package adds what is easier in Python: run() (which turns SIGINT and
SIGTERM into a clean stop), map(), the protected containers dict and list
and the xlist factory (each the kind every interpreter shares in mode
"interpreters"),
and the atexit hook that stops the engine before the interpreter finalizes.
docs/api.md describes every name.
"""

import atexit as _atexit
import os as _os
import signal as _signal
import sys as _sys
import threading as _threading

from . import _core
from ._core import (
    AsyncError,
    Channel,
    DatagramTransport,
    ProtectionError,
    SharedBuffer,
    Timer,
    Transport,
    call_from_main_thread,
    call_from_main_thread_and_wait,
    client,
    cpu_count,
    datagram_endpoint,
    draining,
    eternalize,
    gmtime,
    is_parallel_thread,
    protect,
    protected,
    rdtsc,
    read_file,
    read_lock,
    register,
    run_once,
    server,
    stats,
    stop,
    submit_work,
    thread_seq_id,
    timer,
    unprotect,
    worker_loop,
    write_file,
    write_lock,
)
from ._protected import dict, list, xlist
from ._version import __version__ as __version__
from ._work import map

__all__ = [
    "AsyncError",
    "Channel",
    "DatagramTransport",
    "ProtectionError",
    "SharedBuffer",
    "Timer",
    "Transport",
    "call_from_main_thread",
    "call_from_main_thread_and_wait",
    "client",
    "cpu_count",
    "datagram_endpoint",
    "dict",
    "draining",
    "eternalize",
    "gmtime",
    "is_parallel_thread",
    "list",
    "map",
    "protect",
    "protected",
    "rdtsc",
    "read_file",
    "read_lock",
    "register",
    "run",
    "run_once",
    "server",
    "stats",
    "stop",
    "submit_work",
    "thread_seq_id",
    "timer",
    "unprotect",
    "worker_loop",
    "write_file",
    "write_lock",
    "xlist",
]


class _SignalStop:
    """The SIGINT/SIGTERM handler of a run(): the first signal stops the
    run; a second one, while the loop still stops (a callback that does
    not return), ends the process at once with status 128 + the signal's
    number and a line on stderr."""

    def __init__(self):
        self.signalled = False

    def __call__(self, signum, frame):
        if not self.signalled:
            self.signalled = True
            from ._lifecycle import notify

            notify("STOPPING=1")  # to systemd, when it runs the process
            _core.stop()
            return
        name = _signal.Signals(signum).name
        try:
            _sys.stdout.flush()
        except Exception:
            pass
        _os.write(2, f"pyparallel: {name} again during shutdown; exiting at once\n".encode())
        _os._exit(128 + signum)


def run(*, mode=None, graceful_timeout=None, drain_delay=0.0):
    """Serve until stop() is called, SIGINT or SIGTERM arrives, or nothing
    is registered and no work is pending; then shut down cleanly (every
    connection closed, pending work cancelled, threads joined).

    mode: "threads" (free-threaded builds), "interpreters" (GIL builds: one
    subinterpreter with its own GIL per worker) or "gil"; by default
    PYPARALLEL_MODE, else the build's natural mode.

    graceful_timeout: seconds the shutdown may take (None: no limit, and
    no drain). With it, the shutdown is graceful: the listeners close at
    once (new connections are refused; draining() is True), the accepted
    connections get until then to end (an HTTP server answers the requests
    that reach them with "Connection: close" and closes them once idle for
    a second), then what is left is closed. drain_delay: seconds before
    the drain during which everything goes on except that draining() is
    already true (a load balancer's health checks see 503 and stop sending
    while the listeners still accept). A callback that has not returned
    by then cannot be joined, so the process exits with status 1 and a line
    on stderr. A second SIGINT or SIGTERM during the shutdown exits at once
    (status 128 + the signal's number).
    """
    if _threading.current_thread() is not _threading.main_thread():
        return _core.run(mode=mode, graceful_timeout=graceful_timeout, drain_delay=drain_delay)  # raises
    # Ctrl-C and SIGTERM stop the run instead of raising or killing the
    # process, unless the application installed handlers of its own.
    handler = _SignalStop()
    previous = {}
    for signum, default in ((_signal.SIGINT, _signal.default_int_handler), (_signal.SIGTERM, _signal.SIG_DFL)):
        if _signal.getsignal(signum) is default:
            previous[signum] = _signal.signal(signum, handler)
    try:
        _core.run(mode=mode, graceful_timeout=graceful_timeout, drain_delay=drain_delay)
    finally:
        for signum, previous_handler in previous.items():
            _signal.signal(signum, previous_handler)


_atexit.register(_core._shutdown)
