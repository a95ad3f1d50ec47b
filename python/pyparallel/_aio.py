"""The asyncio event loop of each worker.

Every worker has one WorkerEventLoop, created on first use on that worker
(in the worker's own interpreter in mode "interpreters"): coroutines given
to submit_work() and ``async def`` protocol callbacks run as its tasks, and
``asyncio.get_running_loop()`` in them returns it. pyparallel.worker_loop()
returns it from any code running on a worker.

The binding (src/binding/core/aio.c) drives it, so that the worker waits for
the loop and for its connections in one place: the engine watches the
selector's epoll fd, and the binding runs one iteration of the loop
(_px_step) whenever that fd is readable, a timer of the loop is due, or
callbacks are ready. So the selector never blocks: the engine does the
waiting.
"""

from __future__ import annotations

import asyncio
import selectors
import sys
import time
from asyncio import events
from threading import get_ident

# typing is imported for the type checker only (see _interp.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import collections
    import contextvars
    from collections.abc import Awaitable, Callable

__all__ = ["WorkerEventLoop"]

# How long the loop's close may take to let cancelled tasks, async
# generators and the default executor finish, in seconds.
CLOSE_BUDGET = 2.0
# The longest single wait of the selector while the loop closes.
CLOSE_POLL = 0.01
# How long the coroutines given to on_close (an ASGI app's lifespan
# shutdown) may take, together, in seconds, before the rest of the close.
ON_CLOSE_BUDGET = 10.0


class _PollingSelector(selectors.EpollSelector):
    """An epoll selector that only polls: the engine waits for its fd.

    While the loop closes (the engine is stopping and no longer watches the
    fd) it waits, in short slices, as an ordinary selector does.
    """

    blocking = False
    # Set for an iteration whose caller knows there is nothing to poll for
    # (the engine's watch of the fd is armed and has not fired).
    skip = False

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self.skip and not self.blocking:
            return []
        if not self.blocking:
            timeout = 0
        elif timeout is None or timeout > CLOSE_POLL:
            timeout = CLOSE_POLL
        return super().select(timeout)


class WorkerEventLoop(asyncio.SelectorEventLoop):
    """The asyncio loop of one worker, run by the engine (see the module)."""

    if TYPE_CHECKING:
        # BaseEventLoop's and BaseSelectorEventLoop's internals that this
        # loop drives (typeshed leaves them out).
        _thread_id: int | None
        _selector: _PollingSelector
        _ready: collections.deque[asyncio.Handle]
        _scheduled: list[asyncio.TimerHandle]

        _closed: bool
        _debug: bool
        _stopping: bool
        _old_agen_hooks: sys._asyncgen_hooks | None
        _coroutine_origin_tracking_enabled: bool

        def _write_to_self(self) -> None: ...
        def _run_once(self) -> None: ...
        def _run_forever_setup(self) -> None: ...
        def _run_forever_cleanup(self) -> None: ...
        def _asyncgen_firstiter_hook(self, agen: object) -> None: ...
        def _asyncgen_finalizer_hook(self, agen: object) -> None: ...

    def __init__(self) -> None:
        super().__init__(_PollingSelector())
        # True while spawn() makes a task: the binding queues the loop's
        # next iteration itself, so call_soon need not wake it.
        self._px_spawning = False
        self._px_on_close: list[Callable[[], Awaitable[object]]] = []

    def _px_add_on_close(self, fn: Callable[[], Awaitable[object]]) -> None:
        """fn() is awaited first when the loop closes, while its tasks still
        run (an ASGI app's lifespan shutdown, which may need them): the
        coroutines given, one after the other, within ON_CLOSE_BUDGET."""
        self._px_on_close.append(fn)

    # A callback or timer added while the loop is not running on some thread
    # (from a plain protocol callback, a work item, another thread) must wake
    # it: asyncio wakes a loop only from call_soon_threadsafe, which running
    # loops need, but this loop is idle between iterations. The self-pipe
    # makes the selector's fd readable, which the engine watches.

    def call_soon[*Ts](
        self, callback: Callable[[*Ts], object], *args: *Ts, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = super().call_soon(callback, *args, context=context)
        if self._thread_id is None and not self._px_spawning:
            self._write_to_self()
        return handle

    def call_at[*Ts](
        self,
        when: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        if self._thread_id is None:
            self._write_to_self()
        return handle

    # Every iteration and every eager first step runs as the thread's running
    # loop: _run_forever_setup and _cleanup, which a server pays for on each
    # request. _px_enter and _px_leave do the same with fewer calls; the
    # cases where those do more (debug mode's coroutine origin tracking, the
    # errors of a closed or already running loop) take asyncio's own path.

    def _px_enter(self) -> None:
        if self._debug or self._closed or self._thread_id is not None or events._get_running_loop() is not None:
            self._run_forever_setup()  # tracks origins, or raises as asyncio does
            return
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = get_ident()
        sys.set_asyncgen_hooks(self._asyncgen_firstiter_hook, self._asyncgen_finalizer_hook)
        events._set_running_loop(self)

    def _px_leave(self) -> None:
        if self._coroutine_origin_tracking_enabled:
            self._run_forever_cleanup()
            return
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)
        hooks = self._old_agen_hooks
        if hooks is not None:
            sys.set_asyncgen_hooks(*hooks)
            self._old_agen_hooks = None

    def _px_fileno(self) -> int:
        return self._selector.fileno()

    def _px_step(self, poll: bool = True) -> float | None:
        """Runs one iteration on the calling thread, as the running loop;
        poll False: without polling the selector (the binding knows it has
        nothing).

        Returns what the loop waits for then (_px_wait).
        """
        self._selector.skip = not poll
        self._px_enter()
        try:
            self._run_once()
        finally:
            self._px_leave()
        return self._px_wait()

    def _px_wait(self) -> float | None:
        """What the loop waits for: 0.0 when callbacks are ready (run again
        soon), the seconds until the next timer is due, or None when only
        I/O can wake it."""
        if self._ready:
            return 0.0
        if self._scheduled:
            return max(0.0, self._scheduled[0].when() - self.time())
        return None

    def _px_run_until(self, done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:
            self._px_step()

    def _px_close(self) -> None:
        """Cancels the tasks, lets them finish, shuts the async generators
        and the default executor down, and closes the loop; within
        CLOSE_BUDGET seconds. Called as the engine stops."""
        if self.is_closed():
            return
        self._selector.blocking = True
        if self._px_on_close:
            hooks, self._px_on_close = self._px_on_close, []
            task = self.create_task(_run_in_turn(hooks))
            self._px_run_until(task.done, time.monotonic() + ON_CLOSE_BUDGET)
        deadline = time.monotonic() + CLOSE_BUDGET
        tasks = [t for t in asyncio.all_tasks(self) if not t.done()]
        for task in tasks:
            task.cancel()
        self._px_run_until(lambda: all(t.done() for t in tasks), deadline)
        for shutdown in (
            self.shutdown_asyncgens(),
            self.shutdown_default_executor(CLOSE_BUDGET),
        ):
            task = self.create_task(shutdown)
            self._px_run_until(task.done, deadline)
            if not task.done():
                task.cancel()
                self._px_step()
        self.close()


async def _run_in_turn(hooks: list[Callable[[], Awaitable[object]]]) -> None:
    for hook in hooks:
        await hook()


def spawn_eager(
    loop: WorkerEventLoop,
    awaitable: Awaitable[object],
    on_done: Callable[[asyncio.Future[object]], object],
) -> asyncio.Future[object] | None:
    """spawn(), with the task's first step run now, on the calling thread,
    as the running loop (asyncio's eager tasks): a handler that finishes
    without waiting for anything (most requests) is done before this
    returns, without an iteration of the loop. Returns the task, or None
    when it finished (on_done has run). The binding calls it only while no
    other thread runs the loop."""
    if not asyncio.iscoroutine(awaitable):
        return spawn(loop, awaitable, on_done)
    try:
        loop._px_enter()
    except RuntimeError:  # a loop runs on this thread already
        return spawn(loop, awaitable, on_done)
    try:
        task = asyncio.Task(awaitable, loop=loop, eager_start=True)
    finally:
        loop._px_leave()
    if task.done():
        on_done(task)
        return None
    task.add_done_callback(on_done)
    return task


def spawn(
    loop: asyncio.AbstractEventLoop,
    awaitable: Awaitable[object],
    on_done: Callable[[asyncio.Future[object]], object],
) -> asyncio.Future[object]:
    """Runs awaitable as a task of loop; on_done(task) when it ends. The
    caller (the binding) queues the loop's next iteration: the task's first
    step does not wake the loop through the self-pipe."""
    loop._px_spawning = True  # type: ignore[attr-defined]
    try:
        task = asyncio.ensure_future(awaitable, loop=loop)
    finally:
        loop._px_spawning = False  # type: ignore[attr-defined]
    task.add_done_callback(on_done)
    return task
