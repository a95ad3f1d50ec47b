"""The handler logic that every HTTP server of bench/http.py runs.

Each peer's application (http_asyncio.py, http_wsgi.py, http_pyparallel.py)
calls these functions, so the servers differ in how they move requests and
responses, not in what a handler computes:

  work()           about 90 us of pure Python per request (the HTTP issue's
                   "work" route), returning the same decimal string everywhere
  json_body()      {"message": "Hello, World!"} encoded per request
                   (TechEmpower's json test)
  shared(query)    the value for key k=<int> of a dict loaded at start-up
                   (the "shared" scenario: what a server holds per process)

TABLE is that dict: BENCH_SHARED_ENTRIES entries (int -> its decimal str),
built when this module is imported, that is once per process for the
process-based peers, once per worker interpreter in pyparallel's interpreters
mode, and once in all for the thread-based servers. Unset or 0: empty.

write_table_file() and TableView are the same table as bytes in a file, for
pyparallel's interpreters mode, where objects are not shared but a
px.SharedBuffer is: every interpreter maps the one file and looks keys up
with a binary search.
"""

import bisect
import json
import os
import struct
from array import array

PLAINTEXT = b"Hello, World!"
WORK_ITERATIONS = 3000


def work():
    s = 0
    for i in range(WORK_ITERATIONS):
        s += i * i
    return str(s)


def json_body():
    return json.dumps({"message": "Hello, World!"}, separators=(",", ":")).encode()


def make_table(entries):
    return {i: str(i) for i in range(entries)}


TABLE = make_table(int(os.environ.get("BENCH_SHARED_ENTRIES") or 0))


def shared(query_string):
    """TABLE's value for the query "k=<int>"; KeyError or ValueError otherwise."""
    return shared_in(TABLE, query_string)


# The table file: entries (int64), the sorted keys (int64 each), entries + 1
# offsets of the values (int64 each), then the values' UTF-8 bytes.
_INT64 = struct.Struct("=q")


def write_table_file(path, entries):
    """Writes the table of `entries` entries to path (atomically)."""
    values = [str(i).encode() for i in range(entries)]
    offsets = array("q", [0])
    total = 0
    for value in values:
        total += len(value)
        offsets.append(total)
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "wb") as f:
        f.write(_INT64.pack(entries))
        f.write(array("q", range(entries)).tobytes())
        f.write(offsets.tobytes())
        f.write(b"".join(values))
    os.replace(partial, path)


class TableView:
    """The table of a table file, read in place from a buffer (a SharedBuffer)."""

    def __init__(self, buffer):
        view = memoryview(buffer)
        entries = _INT64.unpack_from(view)[0]
        keys_end = 8 + 8 * entries
        offsets_end = keys_end + 8 * (entries + 1)
        self.keys = view[8:keys_end].cast("q")
        self.offsets = view[keys_end:offsets_end].cast("q")
        self.values = view[offsets_end:]

    def __getitem__(self, key):
        i = bisect.bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            raise KeyError(key)
        return str(self.values[self.offsets[i] : self.offsets[i + 1]], "utf-8")


def shared_in(table, query_string):
    """shared() on another table (a TableView)."""
    name, _, value = query_string.partition("=")
    if name != "k":
        raise KeyError(name)
    return table[int(value)]
