"""pyparallel._lifecycle: what a serving process does for whoever runs it:
readiness, inherited sockets, the zero-downtime reload, and the supervision
that replaces a worker's interpreter (mode interpreters) or reloads the
process.

Readiness: once the process serves, it writes --pid-file and --ready-file
(each holds its PID; both are removed at exit, unless a newer process wrote
them meanwhile), tells systemd READY=1 (and its MAINPID) over NOTIFY_SOCKET,
and tells the process that started it for a reload through the pipe whose
descriptor PYPARALLEL_READY_FD names.

Inherited sockets (listen_fds): systemd's socket activation hands a service
its listening sockets as descriptors 3, 4, ... with LISTEN_FDS=n and
LISTEN_PID=<its PID>; a reload hands them over the same way.

The reload (Reloader, on SIGHUP): the process starts its own command line
again as a new process, handing it the listening sockets, so that the
sockets never close and no connection attempt is refused. The new process
imports the application and starts serving; once it says it is ready, the
old one drains (its listeners close: new connections go to the new one; its
requests under way finish) and exits. The new process is the old one's
child until then, and afterwards the init process's (or a subreaper's, such
as systemd's): it replaces the old one, with a new PID, which it reports
to systemd (MAINPID=, which needs NotifyAccess=all) and in the PID file. A
new process that fails before it is ready (a syntax error in the app) or
does not become ready in time is logged and killed, and the old one serves
on, as if nothing happened.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time

from . import _core

# typing is imported for the type checker only (see http/_request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from . import _Listener, _UnixListener

_log = logging.getLogger("pyparallel")

# systemd's sd_listen_fds(): the first inherited socket is descriptor 3.
LISTEN_FDS_START = 3
# The variable naming the pipe a reloading parent waits on.
READY_FD_VAR = "PYPARALLEL_READY_FD"
# How long a reload waits for its new process to be ready.
RELOAD_READY_TIMEOUT = 60.0
# Where a reload's new process gets its descriptors from: dups at or above
# this number, so that moving them to 3, 4, ... never overwrites one.
_HANDOVER_BASE = 64


def listen_fds() -> list[int]:
    """The listening sockets handed to this process (LISTEN_FDS, for this
    PID): descriptors 3, 4, ..., made non-inheritable; [] when there are
    none. The variables are removed, as sd_listen_fds(1) does, so that a
    process this one starts does not take them for its own."""
    count = os.environ.pop("LISTEN_FDS", None)
    pid = os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if count is None or pid != str(os.getpid()):
        return []
    try:
        n = int(count)
    except ValueError:
        raise ValueError(f"LISTEN_FDS={count!r} is not a number of sockets") from None
    fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + n))
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def notify(state: str) -> bool:
    """Sends state ("READY=1", "STOPPING=1", ...) to systemd when
    NOTIFY_SOCKET is set (a Unix datagram socket; "@" starts an abstract
    name), as sd_notify(3) does; False when it is not set."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        _log.warning("cannot notify the service manager at %s: %s", path, exc)
        return False
    return True


def _write_pid_file(path: str) -> None:
    # Written aside and renamed, so that a reader never sees half a file.
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


def _remove_if_ours(path: str) -> None:
    try:
        with open(path) as f:
            ours = f.read().strip() == str(os.getpid())
        if ours:
            os.unlink(path)
    except OSError:
        pass


class Readiness:
    """The files and messages that say this process serves."""

    def __init__(self, ready_file: str | None = None, pid_file: str | None = None) -> None:
        self.ready_file = ready_file
        self.pid_file = pid_file

    def ready(self) -> None:
        """Called once the process serves (its listeners accept)."""
        if self.pid_file:
            _write_pid_file(self.pid_file)
        if self.ready_file:
            _write_pid_file(self.ready_file)
        notify(f"READY=1\nMAINPID={os.getpid()}")
        ready_fd = os.environ.pop(READY_FD_VAR, None)
        if ready_fd is not None:
            try:
                fd = int(ready_fd)
                os.write(fd, b"ready\n")
                os.close(fd)
            except (ValueError, OSError) as exc:
                _log.warning("cannot tell the reloading process that this one is ready: %s", exc)

    def stopping(self) -> None:
        """Called as the process stops serving (not after a reload: the new
        process serves on)."""
        if self.ready_file:
            _remove_if_ours(self.ready_file)
        notify("STOPPING=1")

    def close(self) -> None:
        """Called at exit: the files go, unless a newer process wrote them."""
        for path in (self.ready_file, self.pid_file):
            if path:
                _remove_if_ours(path)


def _spawn(argv: Sequence[str], fds: Sequence[int], ready_fd: int) -> int:
    """Starts argv with fds as its descriptors 3, 4, ... and LISTEN_FDS /
    LISTEN_PID saying so (LISTEN_PID is the new process's own PID, which
    only the process itself knows: a shell sets it, then execs argv, keeping
    the PID), and ready_fd as the descriptor after them."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HANDOVER_BASE) for fd in (*fds, ready_fd)]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, LISTEN_FDS_START + i) for i, fd in enumerate(high)]
        env = dict(os.environ)
        env["LISTEN_FDS"] = str(len(fds))
        env[READY_FD_VAR] = str(LISTEN_FDS_START + len(fds))
        env.pop("LISTEN_FDNAMES", None)
        script = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
        return os.posix_spawn("/bin/sh", ["sh", "-c", script, "sh", *argv], env, file_actions=actions)
    finally:
        for fd in high:
            os.close(fd)


def command_line() -> list[str]:
    """This process's command line, to start it again: the interpreter with
    its options (sys.orig_argv), so that `python -X dev -m pkg args` comes
    back as it was."""
    return [sys.executable, *sys.orig_argv[1:]]


class Reloader:
    """SIGHUP's handler: a reload as the module's docstring describes. It
    runs on the main thread (Python runs signal handlers there); the wait
    for the new process runs on a thread of its own, so that the server
    keeps serving meanwhile."""

    def __init__(
        self,
        listeners: Sequence[_Listener | _UnixListener],
        readiness: Readiness,
        *,
        argv: Sequence[str] | None = None,
        on_spawn: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.listeners = listeners
        self.readiness = readiness
        # What gives way to the new process (a listener of another port
        # that it binds again) and what takes it back after a failure.
        self.on_spawn = on_spawn
        self.on_failure = on_failure
        self.argv = list(argv) if argv is not None else command_line()
        self.lock = threading.Lock()
        self.under_way = False
        self.reloaded = False

    def __call__(self, signum: int = signal.SIGHUP, frame: object = None) -> None:
        self.reload()

    def reload(self) -> bool:
        """Starts a reload; False when one is under way already, or the
        server is stopping."""
        with self.lock:
            if self.under_way or self.reloaded or _core.draining():
                _log.warning("reload asked while one is under way or the server stops: ignored")
                return False
            self.under_way = True
        try:
            fds = [listener.fileno() for listener in self.listeners]
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            if self.on_spawn is not None:
                self.on_spawn()
            try:
                pid = _spawn(self.argv, fds, write_end)
            finally:
                os.close(write_end)
        except (OSError, ValueError) as exc:
            _log.error("reload failed: cannot start a new process: %s; this one serves on", exc)
            self._failed()
            return False
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        _log.info("reload: started process %d with the listening sockets; waiting until it is ready", pid)
        threading.Thread(target=self._wait_ready, args=(pid, read_end), name="pyparallel-reload", daemon=True).start()
        return True

    def _wait_ready(self, pid: int, read_end: int) -> None:
        try:
            ready = self._read_ready(pid, read_end)
        finally:
            os.close(read_end)
        if ready:
            _log.info("reload: process %d serves; this process (%d) drains and exits", pid, os.getpid())
            with self.lock:
                self.reloaded = True
                self.under_way = False
            # A Unix socket's file is the new process's now: closing this
            # process's listener must not remove it.
            for listener in self.listeners:
                _core._keep_socket_file(listener)
            # The new process wrote the files and told systemd; the drain
            # is this process's own business.
            _core.stop()
            return
        notify("READY=1")  # the reload is over: this process serves on
        self._failed()

    def _failed(self) -> None:
        if self.on_failure is not None:
            self.on_failure()
        with self.lock:
            self.under_way = False

    def _read_ready(self, pid: int, read_end: int) -> bool:
        """Whether the new process said it is ready; when it failed or took
        too long, it is logged, killed if needed and reaped."""
        deadline = time.monotonic() + RELOAD_READY_TIMEOUT
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _log.error(
                    "reload failed: process %d was not ready within %g s; it is killed and this one serves on",
                    pid,
                    RELOAD_READY_TIMEOUT,
                )
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False
            if poller.poll(left * 1000):
                data = os.read(read_end, 64)
                if data.startswith(b"ready"):
                    # Reaped once it exits, by whoever adopts it then: a
                    # thread here would keep this process waiting.
                    threading.Thread(target=_reap, args=(pid,), daemon=True).start()
                    return True
                # The pipe closed: the new process ended without being ready.
                _, status = os.waitpid(pid, 0)
                how = (
                    f"exited with status {os.waitstatus_to_exitcode(status)}"
                    if os.WIFEXITED(status)
                    else f"was killed by signal {os.WTERMSIG(status)}"
                )
                _log.error("reload failed: process %d %s before it was ready; this one serves on", pid, how)
                return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# How often the supervisor looks, and how long it waits after a reload or a
# replacement that did not happen (doubling up to the last), so that one
# that keeps failing is not tried again and again.
SUPERVISE_SECONDS = 1.0
RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)
# A worker whose interpreter breaks again within this many seconds of its
# replacement gets its next one after a pause (RETRY_SECONDS, doubling).
BROKEN_AGAIN_SECONDS = 10.0
# How much memory the replaced interpreters may leave behind (see
# Supervisor) before the process is reloaded: this much at least, or twice
# what the workers' interpreters took when they were made.
RETAINED_MIN = 64 << 20

# The replacements that workers asked for (request_recycle), as (worker,
# cause, broken), for the supervisor's thread.
_RECYCLE_REQUESTS: queue.SimpleQueue[tuple[int, str, bool]] = queue.SimpleQueue()


def request_recycle(worker: int, cause: str, broken: bool = False) -> None:
    """Asks the supervisor to replace worker's interpreter (mode
    interpreters). A worker's interpreter calls it in the main one, through
    call_from_main_thread, when it reached --max-requests, or (broken) when
    its state is in doubt (an ASGI lifespan that failed)."""
    _RECYCLE_REQUESTS.put((worker, cause, broken))


def resident_bytes() -> int:
    """The process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


class Recycler:
    """Replaces one worker's interpreter in place (mode interpreters): the
    new interpreter runs prepare (a function and its arguments: the
    application's import) while the worker still serves; then the worker
    stops taking connections while those it has finish on the old
    interpreter, which is ended (_core._recycle_worker, within timeout
    seconds), start(worker) finishes readying the application on the worker
    (an ASGI app's lifespan startup), and the worker takes connections
    again. A worker whose new interpreter cannot start the application
    takes none until a later replacement succeeds."""

    def __init__(self, prepare: tuple[object, ...], start: Callable[[int], None], timeout: float) -> None:
        self.prepare = prepare
        self.start = start
        self.timeout = timeout

    def replace(self, worker: int, cause: str) -> bool:
        """Whether worker's interpreter was replaced; each step is logged."""
        _log.warning("worker %d: %s: replacing its interpreter", worker, cause)
        began = time.monotonic()
        try:
            kept = _core._recycle_worker(worker, self.timeout, *self.prepare)
            self.start(worker)
        except Exception as exc:
            _log.error("worker %d: its interpreter was not replaced: %s", worker, exc)
            return False
        _core._retire_worker(worker, False)
        if kept:
            _log.warning("worker %d: %s", worker, kept)
        _log.info("worker %d serves with a new interpreter (%.2f s)", worker, time.monotonic() - began)
        return True


class Supervisor:
    """A thread that keeps the workers' interpreters sound.

    The process is reloaded (through reloader, as SIGHUP does) once its
    resident set exceeds memory_limit bytes (--max-worker-memory times the
    workers: the workers share the process's memory, so the process is
    measured). In mode interpreters (a recycler given), a worker's
    interpreter is replaced in place, one worker at a time, when the worker
    asked for it (--max-requests: request_recycle) or when its state is
    broken (SystemExit escaped one of its callbacks:
    _core._broken_workers()). CPython keeps part of the memory of every
    interpreter it ends (about the interpreter's own size: its allocator's
    arenas stay when any block in them outlived it), so the growth of the
    resident set across each replacement is added up, and once it passes
    RETAINED_MIN or twice the workers' interpreters' size, the process is
    reloaded instead, which gives all of it back. In modes
    threads and gil, where the workers share the process's interpreter,
    each cause reloads the process. Each cause is logged; a replacement or
    a reload that fails is tried again after a pause that doubles each
    time. The thread ends once a reload succeeded."""

    def __init__(self, reloader: Reloader, memory_limit: int | None = None, recycler: Recycler | None = None) -> None:
        self.reloader = reloader
        self.memory_limit = memory_limit
        self.recycler = recycler
        self.broken_seen = 0
        self.failures = 0
        # Mode interpreters: the workers to replace and why, when each may
        # be tried again, and how much the process may grow by replacements.
        self.wanted: dict[int, str] = {}
        self.retry_at: dict[int, float] = {}
        self.worker_failures: dict[int, int] = {}
        # When each worker's interpreter was last replaced, and how many
        # times in a row it broke again soon after.
        self.replaced_at: dict[int, float] = {}
        self.broke_again: dict[int, int] = {}
        self.broken: set[int] = set()  # of the wanted, those that broke
        self.retained = 0
        if recycler is not None:
            made = sum(int(w.get("memory", 0)) for w in _core.stats()["worker"])
            self.retained_limit = max(RETAINED_MIN, 2 * made)
        self.thread = threading.Thread(target=self._run, name="pyparallel-supervisor", daemon=True)
        self.thread.start()

    def _cause(self) -> str | None:
        broken = int(_core.stats()["broken_interpreters"])
        if broken > self.broken_seen:
            self.broken_seen = broken
            return f"a worker interpreter's state is broken (SystemExit escaped a callback; {broken} so far)"
        return self._memory_over()

    def _memory_over(self) -> str | None:
        if self.memory_limit is not None:
            used = resident_bytes()
            if used > self.memory_limit:
                return f"resident memory {used >> 20} MiB is over {self.memory_limit >> 20} MiB (--max-worker-memory)"
        return None

    def _back_off_broken_again(self) -> None:
        """A worker whose new interpreter broke too, soon after its
        replacement, waits for its next one, longer each time."""
        now = time.monotonic()
        for worker in self.broken:
            if worker in self.retry_at or worker not in self.replaced_at:
                continue
            since = now - self.replaced_at.pop(worker)
            if since >= BROKEN_AGAIN_SECONDS:
                self.broke_again.pop(worker, None)
                continue
            streak = self.broke_again[worker] = self.broke_again.get(worker, 0) + 1
            pause = RETRY_SECONDS[min(streak, len(RETRY_SECONDS)) - 1]
            self.retry_at[worker] = now + pause
            _log.warning("worker %d broke again %.1f s after its replacement: next one in %g s", worker, since, pause)

    def _recycle(self, recycler: Recycler) -> str | None:
        """One look in mode interpreters: replaces at most one worker's
        interpreter; returns the cause of a reload when one is needed."""
        while True:
            try:
                worker, cause, broken = _RECYCLE_REQUESTS.get_nowait()
            except queue.Empty:
                break
            self.wanted.setdefault(worker, cause)
            if broken:
                self.broken.add(worker)
        for worker in _core._broken_workers():
            self.wanted[worker] = "its state is broken (SystemExit escaped a callback)"
            self.broken.add(worker)
        self._back_off_broken_again()
        over = self._memory_over()
        if over is not None:
            return over
        if self.wanted and self.retained > self.retained_limit:
            self.wanted.clear()
            return (
                f"replaced interpreters left {self.retained >> 20} MiB behind, over {self.retained_limit >> 20} MiB "
                "(CPython keeps part of each one's memory)"
            )
        now = time.monotonic()
        for worker, cause in sorted(self.wanted.items()):
            if self.retry_at.get(worker, 0.0) > now:
                continue
            before = resident_bytes()
            replaced = recycler.replace(worker, cause)
            self.retained += max(0, resident_bytes() - before)
            if replaced:
                del self.wanted[worker]
                self.retry_at.pop(worker, None)
                self.worker_failures.pop(worker, None)
                self.broken.discard(worker)
                self.replaced_at[worker] = time.monotonic()
            else:
                failed = self.worker_failures.get(worker, 0)
                self.worker_failures[worker] = failed + 1
                self.retry_at[worker] = now + RETRY_SECONDS[min(failed, len(RETRY_SECONDS) - 1)]
            break
        return None

    def _run(self) -> None:
        pending = None
        while not self.reloader.reloaded:
            # Replacements that wait take their turn soon, one after another.
            time.sleep(SUPERVISE_SECONDS / 10 if self.wanted else SUPERVISE_SECONDS)
            if self.reloader.under_way or self.reloader.reloaded or _core.draining():
                continue
            cause = self._recycle(self.recycler) if self.recycler is not None else self._cause()
            cause = cause or pending
            if cause is None:
                continue
            _log.warning("%s: reloading the process", cause)
            if self._reload():
                return
            # The cause stays: asked for again after a longer pause each time.
            pending = cause
            time.sleep(RETRY_SECONDS[min(self.failures, len(RETRY_SECONDS) - 1)])
            self.failures += 1

    def _reload(self) -> bool:
        """Asks for a reload (SIGHUP, handled on the main thread) and waits
        for its outcome: whether it succeeded."""
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(SUPERVISE_SECONDS)
        while self.reloader.under_way:
            time.sleep(SUPERVISE_SECONDS / 10)
        return self.reloader.reloaded
