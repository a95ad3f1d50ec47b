"""pyparallel's application for bench/http.py: the command line's file server
plus the routes of http_logic.py.

FileServer already serves /plaintext, /json and the static files under
--root; Bench adds GET /work and GET /shared?k=N with the logic every peer
shares (http_logic.py), and GET /stats: the runtime's mode and the memory of
each worker (px.stats()), for the report. BenchSharedBuffer serves /shared
from a SharedBuffer instead of a dict.

The shared table is eternalized, as pyparallel's documentation advises for
read-only data loaded at start-up (threads reading it then leave its
reference counts alone). In interpreters mode each worker's interpreter
imports this module, so it builds a table of its own.

  python -m pyparallel.http.server --app http_pyparallel:Bench --root DIR
"""

import os

import http_logic

import pyparallel as px
from pyparallel.http.server import FileServer, Response

if http_logic.TABLE:
    px.eternalize(http_logic.TABLE)

# BenchSharedBuffer's table: the file BENCH_SHARED_FILE, written by the first
# interpreter that imports this module (the main one, before any worker
# starts) and mapped by every interpreter: one copy in memory.
TABLE_FILE = os.environ.get("BENCH_SHARED_FILE")
if TABLE_FILE:
    if not os.path.exists(TABLE_FILE):
        http_logic.write_table_file(TABLE_FILE, int(os.environ["BENCH_SHARED_FILE_ENTRIES"]))
    TABLE_VIEW = http_logic.TableView(px.SharedBuffer.from_file(TABLE_FILE))


class Bench(FileServer):
    def work(self, request):
        return http_logic.work()

    def shared(self, request):
        try:
            return http_logic.shared(request.query_string)
        except (KeyError, ValueError):
            return Response(b"Not Found\n", status=404)

    def stats(self, request):
        stats = px.stats()
        return {
            "mode": stats["mode"],
            "io": stats["io"],
            "worker_memory": [worker.get("memory") for worker in stats["worker"]],
        }


class BenchSharedBuffer(Bench):
    """Bench with the shared table in a SharedBuffer (BENCH_SHARED_FILE):
    how mode interpreters shares big read-only data."""

    def shared(self, request):
        try:
            return http_logic.shared_in(TABLE_VIEW, request.query_string)
        except (KeyError, ValueError):
            return Response(b"Not Found\n", status=404)
