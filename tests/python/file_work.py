"""Work items of test_files.py, in a module of their own: that test imports
hypothesis, which does not load in the workers' interpreters (mode
"interpreters"), where these functions are found by module and name."""

import asyncio

import pyparallel as px


async def write_then_read(path, data):
    """On a worker's asyncio loop: awaits both futures there."""
    written = await asyncio.wrap_future(px.write_file(path, data))
    return written, await asyncio.wrap_future(px.read_file(path))


def read_on_worker(path):
    """A plain work item that waits for its own read (a blocking wait: the
    worker is handed off meanwhile)."""
    return px.is_parallel_thread(), px.read_file(path).result(timeout=10)
