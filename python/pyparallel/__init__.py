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
import signal as _signal
import threading as _threading

from . import _core
from ._core import (
    AsyncError,
    Channel,
    ProtectionError,
    SharedBuffer,
    Timer,
    Transport,
    call_from_main_thread,
    call_from_main_thread_and_wait,
    client,
    cpu_count,
    eternalize,
    gmtime,
    is_parallel_thread,
    protect,
    protected,
    rdtsc,
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
    write_lock,
)
from ._protected import dict, list, xlist
from ._work import map

__all__ = [
    "AsyncError",
    "Channel",
    "ProtectionError",
    "SharedBuffer",
    "Timer",
    "Transport",
    "call_from_main_thread",
    "call_from_main_thread_and_wait",
    "client",
    "cpu_count",
    "dict",
    "eternalize",
    "gmtime",
    "is_parallel_thread",
    "list",
    "map",
    "protect",
    "protected",
    "rdtsc",
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
    "write_lock",
    "xlist",
]


def _stop_on_signal(signum, frame):
    _core.stop()


def run(*, mode=None):
    """Serve until stop() is called, SIGINT or SIGTERM arrives, or nothing
    is registered and no work is pending; then shut down cleanly (every
    connection closed, pending work cancelled, threads joined).

    mode: "threads" (free-threaded builds), "interpreters" (GIL builds: one
    subinterpreter with its own GIL per worker) or "gil"; by default
    PYPARALLEL_MODE, else the build's natural mode.
    """
    if _threading.current_thread() is not _threading.main_thread():
        return _core.run(mode=mode)  # raises: run() belongs to the main thread
    # Ctrl-C and SIGTERM stop the run instead of raising or killing the
    # process, unless the application installed handlers of its own.
    previous = {}
    for signum, default in ((_signal.SIGINT, _signal.default_int_handler), (_signal.SIGTERM, _signal.SIG_DFL)):
        if _signal.getsignal(signum) is default:
            previous[signum] = _signal.signal(signum, _stop_on_signal)
    try:
        _core.run(mode=mode)
    finally:
        for signum, handler in previous.items():
            _signal.signal(signum, handler)


_atexit.register(_core._shutdown)
