"""The access log of the command line's server (--access-log).

The lines are written by the C layer (src/http/accesslog.c): one per
request, for every interface (HttpServer handlers, static files, WSGI and
ASGI apps) and for the errors the server answers itself, from per-worker
buffers, so that logging takes no lock the workers share. This module
opens and closes it, and reopens it on SIGUSR1 for logrotate: rename the
file, send the signal, and lines go to a new file at the old path (the
lines logged before the signal land in the renamed one).
"""

from __future__ import annotations

import signal

from pyparallel import _core

FORMATS = ("common", "combined", "json")

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType


def _reopen(signum: int, frame: FrameType | None) -> None:
    _core._access_log_reopen()


def start(path: str, format: str = "combined") -> None:
    """Logs to path ("-": standard error) in format; OSError when the file
    cannot be opened. On a file, SIGUSR1 reopens it (main thread only)."""
    _core._access_log_open(None if path == "-" else path, format)
    if path != "-":
        signal.signal(signal.SIGUSR1, _reopen)


def stop() -> None:
    """Writes what the workers hold and closes the log."""
    _core._access_log_close()
