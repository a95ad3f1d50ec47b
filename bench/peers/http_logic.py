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
"""

import json
import os

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
    name, _, value = query_string.partition("=")
    if name != "k":
        raise KeyError(name)
    return TABLE[int(value)]
