"""python -m pyparallel: what this installation is, and what it would run with.

    python -m pyparallel --version

prints pyparallel's version, the interpreter (implementation, version,
free-threaded build or not), and the mode and I/O backend that the engine
would use here: PYPARALLEL_MODE or the build's default mode, and PYPARALLEL_IO
or the backend the kernel allows (io_uring, else epoll). Without arguments it
prints its usage. The HTTP server's --version (pyparallel.http.server) is the
same action.

The engine makes both choices when it starts (the binding parses the mode,
src/engine/loop.c probes io_uring and falls back to epoll) and reports them
only through px.stats(); so --version starts it, reads stats() and leaves the
atexit hook to stop it. The answer is the engine's own rather than a guess
made here, and a setting the engine would refuse (an unknown mode, io_uring
forced where the kernel refuses it) is reported as the error it would raise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import sysconfig

from . import _core
from ._version import __version__

# typing is imported for the type checker only (see _interp.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def _interpreter() -> str:
    """The interpreter as one phrase: "CPython 3.13.5, free-threaded build
    (GIL disabled)"."""
    name = f"{platform.python_implementation()} {platform.python_version()}"
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return f"{name}, GIL build"
    # A free-threaded build turns the GIL back on for PYTHON_GIL=1 or an
    # extension that does not declare free-threading support.
    gil = "enabled" if sys._is_gil_enabled() else "disabled"
    return f"{name}, free-threaded build (GIL {gil})"


def _engine_choices() -> tuple[str, str]:
    """(mode, io) as the engine reports them, each with where it came from,
    or raises what starting the engine raises."""
    # One worker is enough to learn the choices: a machine with many cores
    # would otherwise start a thread (and, in mode interpreters, an
    # interpreter) per core for nothing. A PYPARALLEL_WORKERS of the caller's
    # stays, so that a bad value is reported.
    os.environ.setdefault("PYPARALLEL_WORKERS", "1")
    stats = _core.stats()
    mode_env = os.environ.get("PYPARALLEL_MODE", "")
    mode = f"{stats['mode']} ({'from PYPARALLEL_MODE' if mode_env else 'the default for this interpreter'})"
    io_env = os.environ.get("PYPARALLEL_IO", "")
    if io_env and io_env != "auto":
        io = f"{stats['io']} (from PYPARALLEL_IO)"
    elif stats["io"] == "io_uring":
        io = "io_uring (chosen automatically: the kernel allows it)"
    else:
        io = f"{stats['io']} (chosen automatically: io_uring is unavailable here)"
    return mode, io


def version_report() -> tuple[list[str], str | None]:
    """(lines, error): the lines --version prints, and the engine's refusal
    of this environment's settings as a message (None when it starts)."""
    lines = [f"pyparallel {__version__}", f"python: {_interpreter()}"]
    try:
        mode, io = _engine_choices()
    except (ValueError, OSError, _core.AsyncError) as exc:
        return lines, f"the engine would not start here: {exc}"
    return lines + [f"mode: {mode}", f"io: {io}"], None


class VersionAction(argparse.Action):
    """--version for any of pyparallel's command lines: prints
    version_report() and exits (1 when the engine refuses the settings)."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: object = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        if help is None:
            help = (
                "print pyparallel's version, the interpreter, and the mode and I/O backend that PYPARALLEL_MODE and "
                "PYPARALLEL_IO (or their defaults) select here, then exit"
            )
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        lines, error = version_report()
        print("\n".join(lines), flush=True)
        if error is not None:
            parser.exit(1, f"{parser.prog}: {error}\n")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyparallel",
        description="pyparallel: Python protocol callbacks and work items in parallel on every core of one process. "
        "The HTTP server is python -m pyparallel.http.server.",
    )
    parser.add_argument("--version", action=VersionAction)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    # --version exits from the parser; without it, nothing was asked.
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
