"""px.map: a parallel map over the workers, built on submit_work.

The items are cut into chunks, one work item per chunk, so that the per-item
cost of a work item (a Future, a hand-over to a worker) is paid per chunk.
By default there are about four chunks per worker: enough for a worker that
finishes early to take another chunk (balance), few enough that the
hand-over stays negligible. Results come back in input order; when calls
raise, every chunk still runs to completion and then the exception of the
earliest failing item (in input order) is raised, as builtins.map and
Executor.map would.
"""

from __future__ import annotations

import builtins
import operator

from . import _core

# typing is imported for the type checker only: every worker interpreter
# imports this package, and typing would add milliseconds to each.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# Chunks per worker when the caller gives no chunksize.
CHUNKS_PER_WORKER = 4


# Chunks and their results travel as tuples: in mode "interpreters" a tuple
# crosses to a worker's interpreter by direct copy (and may carry
# SharedBuffers and Channels), where a list would be pickled.
def _run_chunk[T, R](func: Callable[[T], R], chunk: tuple[T, ...]) -> tuple[R, ...]:
    return tuple([func(item) for item in chunk])


def _chunksize(chunksize: int | None, count: int) -> int:
    if chunksize is None:
        chunks = _core._worker_count() * CHUNKS_PER_WORKER
        return builtins.max(1, -(-count // chunks))
    if isinstance(chunksize, bool):
        raise TypeError("map() chunksize must be an int, not bool")
    try:
        size = operator.index(chunksize)
    except TypeError:
        raise TypeError(f"map() chunksize must be an int, not {type(chunksize).__name__}") from None
    if size < 1:
        raise ValueError(f"map() chunksize must be >= 1, not {size}")
    return size


def map[T, R](func: Callable[[T], R], iterable: Iterable[T], *, chunksize: int | None = None) -> list[R]:
    """Apply func to every item on the workers; return the results in input
    order. The first exception (in input order) is raised once every chunk
    has finished."""
    if not callable(func):
        raise TypeError(f"map() needs a callable, not {type(func).__name__}")
    items = builtins.list(iterable)
    size = _chunksize(chunksize, len(items))
    if not items:
        return []
    # Workers run func on several cores: its constants must not be shared
    # mortal objects whose reference counts they would fight over.
    _core.immortalize_code(func)
    futures = [
        _core.submit_work(_run_chunk, func, tuple(items[start : start + size])) for start in range(0, len(items), size)
    ]
    results: list[R] = []
    error = None
    for future in futures:
        try:
            chunk = future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            if error is None:
                error = exc
            continue
        if error is None:
            results.extend(chunk)
    if error is not None:
        raise error
    return results


_core.immortalize_code(_run_chunk)
