"""TechEmpower's six test types against PostgreSQL: one app for pyparallel and the servers it is measured against.

  GET /json        {"message": "Hello, World!"}, serialised per request
  GET /db          one random World row as {"id": N, "randomNumber": M}
  GET /queries?queries=N
                   N random World rows, each its own query; N is clamped to
                   1..500 and anything but an integer counts as 1
  GET /fortunes    every Fortune row plus one added at request time, sorted
                   by message, rendered as HTML by Jinja2 (which escapes them)
  GET /updates?queries=N
                   N random World rows, each read by its own query, each
                   given a new random number, written back, then answered
  GET /plaintext   Hello, World!

Every response carries `Server` and `Content-Length` (set here, so that no
server falls back to chunked framing) and `Date` (set by the server). The
database is found through libpq's variables (PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE), so any PostgreSQL loaded with TechEmpower's
hello_world schema serves (pgcluster.py makes one).

The driver, and with it the interface, is chosen by TFB_DRIVER:

  psycopg        a WSGI app on psycopg 3's blocking API, queries and
                 updates in pipeline mode; the blocking hand-off serves a
                 worker's other connections while a request waits on the
                 database
  asyncpg        an ASGI app on the worker's asyncio loop; a pool per loop
  psycopg-async  an ASGI app on psycopg 3's asyncio API, queries and updates
                 in pipeline mode; a pool per loop

Unset, it is the fastest measured in pyparallel's mode (docs/techempower.md
has the figures): asyncpg in mode interpreters (psycopg-async where asyncpg
is not installed), psycopg in modes threads and gil and under other servers.

asyncpg has no wheel for free-threaded CPython (3.13t); psycopg's C speed-ups
(psycopg-binary) have no 3.13t wheel either and refuse subinterpreters, so
psycopg runs its pure-Python implementation (libpq through ctypes) there.
`app` is the chosen one; `asgi` and `wsgi` name each interface whatever
TFB_DRIVER says (`wsgi` is always psycopg's; `asgi` is asyncpg's where it is
installed, else psycopg's asyncio API): the peers run those.

asyncpg makes one round trip per query, as TechEmpower requires of every
driver (a Sync after each statement); psycopg's pipeline mode sends the
statements of a request together with one Sync at the end, which their rules
allow for /updates only. /queries is measured both ways; docs/techempower.md
says which figure is which.

Pools hold TFB_POOL_SIZE connections (default 10, asyncpg's default and the
size TechEmpower's uvicorn entry runs with) per worker: per event loop for the
asyncio drivers, and for psycopg per worker of the process that imported the
module (per interpreter in pyparallel's mode interpreters, per process under
gunicorn).

A request that finds the database gone (refused, reset, shut down) is
answered 503 and logged on the "techempower" logger; any other failure 500.
Connections come back as the database does: a broken one is dropped and the
pool connects anew on the next request.

  cd examples/techempower && python -m pyparallel.http.server --app app:app
"""

import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import threading
from urllib.parse import parse_qs

import jinja2

SERVER = "pyparallel-techempower"
SERVER_FIELD = SERVER.encode()
POOL_SIZE = int(os.environ.get("TFB_POOL_SIZE", "10"))
ACQUIRE_TIMEOUT_S = 30.0  # a pool exhausted queues requests; this long, it answers 503
ROWS = 10000
MAX_QUERIES = 500

READ_ROW = "SELECT id, randomnumber FROM world WHERE id = $1"
READ_NUMBER = "SELECT randomnumber FROM world WHERE id = $1"
WRITE_ROW = "UPDATE world SET randomnumber = $2 WHERE id = $1"
FORTUNES = "SELECT id, message FROM fortune"
ADDED_FORTUNE = (0, "Additional fortune added at request time.")

log = logging.getLogger("techempower")

TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
    "<tr><th>id</th><th>message</th></tr>"
    "{% for id, message in fortunes %}<tr><td>{{ id }}</td><td>{{ message }}</td></tr>{% endfor %}"
    "</table></body></html>"
)


# The fastest driver in each of pyparallel's modes, as bench/techempower.py
# measured them on an idle machine: in mode interpreters psycopg runs without
# its C speed-ups (they refuse subinterpreters) while asyncpg's Cython code
# loads; in mode gil one GIL serves both workers, and the blocking path costs
# it less CPU per request than the asyncio loop's wake-ups; in mode threads
# asyncpg has no wheel and psycopg's asyncio API measured slower.
FASTEST = {"interpreters": "asyncpg", "gil": "psycopg", "threads": "psycopg"}


def _pyparallel_stats():
    """px.stats() when a pyparallel server imports the app, else None."""
    px = sys.modules.get("pyparallel")
    try:
        return px.stats() if px is not None else None
    except RuntimeError:
        return None


def _driver():
    stats = _pyparallel_stats()
    chosen = os.environ.get("TFB_DRIVER") or FASTEST.get(stats and stats["mode"], "psycopg")
    if chosen not in ("asyncpg", "psycopg", "psycopg-async"):
        raise RuntimeError(f"TFB_DRIVER={chosen!r}: expected asyncpg, psycopg or psycopg-async")
    return chosen


DRIVER = _driver()


# ---- what every driver shares ----------------------------------------------------


def queries_count(query_string):
    """The `queries` parameter: 1..500, anything but an integer is 1."""
    values = parse_qs(query_string).get("queries")
    try:
        count = int(values[0]) if values else 1
    except ValueError:
        return 1
    return min(max(count, 1), MAX_QUERIES)


def random_ids(count):
    """count distinct row ids, so an update writes each row once."""
    return random.sample(range(1, ROWS + 1), count)


def new_number(old):
    """A random number other than old, so that every update changes its row."""
    number = random.randint(1, ROWS - 1)
    return number + 1 if number >= old else number


def world(row):
    return {"id": row[0], "randomNumber": row[1]}


def render_fortunes(rows):
    rows = [*rows, ADDED_FORTUNE]
    rows.sort(key=lambda row: row[1])
    return TEMPLATE.render(fortunes=rows).encode()


def dumps(value):
    return json.dumps(value, separators=(",", ":")).encode()


JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain"


def database_gone(exc):
    """True for the failures that mean the database is not there (503)."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("asyncpg"):
        import asyncpg

        return isinstance(
            exc,
            (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
             asyncpg.AdminShutdownError),
        )  # fmt: skip
    if module.startswith("psycopg"):
        import psycopg

        return isinstance(exc, psycopg.OperationalError)  # AdminShutdown among them
    return False


def failure(exc, path):
    """(status, content type, body) for a request that raised exc, logged."""
    if database_gone(exc):
        log.error("%s: database unavailable: %s: %s", path, type(exc).__name__, exc)
        return 503, TEXT, b"database unavailable"
    log.exception("%s: failed", path)
    return 500, TEXT, b"internal server error"


# ---- asyncio drivers: a pool per event loop ----------------------------------------


async def _keep_session(conn):
    """asyncpg's pool resets a released connection's session (advisory locks,
    cursors, LISTEN, settings) with a query of its own, a second round trip
    per request; these handlers change none of that, so the reset is left out."""


class AsyncpgDatabase:
    def __init__(self):
        import asyncpg

        self.asyncpg = asyncpg
        self.pool = None

    async def open(self):
        # min_size 0: the pool opens without the database (it connects on
        # demand), so a worker starts, and recovers, whatever its state.
        self.pool = await self.asyncpg.create_pool(
            min_size=0,
            max_size=POOL_SIZE,
            max_inactive_connection_lifetime=0,
            command_timeout=ACQUIRE_TIMEOUT_S,
            reset=_keep_session,
        )

    async def close(self):
        await self.pool.close()

    async def db(self):
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await conn.fetchrow(READ_ROW, random.randint(1, ROWS))

    async def queries(self, count):
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return [await conn.fetchrow(READ_ROW, i) for i in random_ids(count)]

    async def fortunes(self):
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return [tuple(row) for row in await conn.fetch(FORTUNES)]

    async def updates(self, count):
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            rows = [(i, new_number(await conn.fetchval(READ_NUMBER, i))) for i in random_ids(count)]
            # One statement per row, sent together (asyncpg pipelines executemany).
            await conn.executemany(WRITE_ROW, sorted(rows))
            return rows


class PsycopgAsyncDatabase:
    def __init__(self):
        self.pool = AsyncPool(POOL_SIZE)

    async def open(self):
        pass  # connections are made on demand

    async def close(self):
        await self.pool.close()

    async def db(self):
        async with self.pool.connection() as conn:
            cursor = await conn.execute(PSYCOPG_READ_ROW, (random.randint(1, ROWS),))
            return await cursor.fetchone()

    async def queries(self, count):
        async with self.pool.connection() as conn:
            async with conn.pipeline():
                cursors = [await conn.execute(PSYCOPG_READ_ROW, (i,)) for i in random_ids(count)]
            return [await cursor.fetchone() for cursor in cursors]

    async def fortunes(self):
        async with self.pool.connection() as conn:
            return await (await conn.execute(FORTUNES)).fetchall()

    async def updates(self, count):
        async with self.pool.connection() as conn:
            async with conn.pipeline():
                cursors = [await conn.execute(PSYCOPG_READ_ROW, (i,)) for i in random_ids(count)]
            rows = [(row[0], new_number(row[1])) for row in [await cursor.fetchone() for cursor in cursors]]
            async with conn.pipeline(), conn.cursor() as cursor:
                await cursor.executemany(PSYCOPG_WRITE_ROW, psycopg_updates(rows))
            return rows


PSYCOPG_READ_ROW = READ_ROW.replace("$1", "%s")
PSYCOPG_WRITE_ROW = "UPDATE world SET randomnumber = %s WHERE id = %s"


def psycopg_updates(rows):
    """PSYCOPG_WRITE_ROW's parameters for (id, number) rows, in id order (as
    every writer takes its rows' locks, so two requests cannot deadlock)."""
    return [(number, i) for i, number in sorted(rows)]


class LoopDatabases:
    """The database object of the running loop, made and opened on first use.

    An asyncio pool belongs to the loop it was made on; in pyparallel's modes
    threads and gil one module serves every worker's loop, so each loop gets
    its own (in mode interpreters, and under uvicorn or granian, there is one
    loop per module anyway)."""

    def __init__(self, factory):
        self.factory = factory
        self.by_loop = {}
        self.lock = threading.Lock()

    async def get(self):
        loop = asyncio.get_running_loop()
        opening = self.by_loop.get(loop)
        if opening is None:
            with self.lock:
                opening = self.by_loop.get(loop)
                if opening is None:
                    opening = self.by_loop[loop] = loop.create_task(self._open())
        return await asyncio.shield(opening)

    async def _open(self):
        database = self.factory()
        try:
            await database.open()
        except BaseException:
            self.by_loop.pop(asyncio.get_running_loop(), None)  # the next request tries again
            raise
        return database

    async def close(self):
        loop = asyncio.get_running_loop()
        opening = self.by_loop.pop(loop, None)
        if opening is not None and opening.done() and not opening.exception():
            await opening.result().close()


async def _json(database, query):
    return 200, JSON, dumps({"message": "Hello, World!"})


async def _plaintext(database, query):
    return 200, TEXT, b"Hello, World!"


async def _db(database, query):
    return 200, JSON, dumps(world(await (await database.get()).db()))


async def _queries(database, query):
    rows = await (await database.get()).queries(queries_count(query))
    return 200, JSON, dumps([world(row) for row in rows])


async def _fortunes(database, query):
    return 200, HTML, render_fortunes(await (await database.get()).fortunes())


async def _updates(database, query):
    rows = await (await database.get()).updates(queries_count(query))
    return 200, JSON, dumps([world(row) for row in rows])


ASYNC_ROUTES = {
    "/json": _json,
    "/plaintext": _plaintext,
    "/db": _db,
    "/queries": _queries,
    "/fortunes": _fortunes,
    "/updates": _updates,
}


def make_asgi(factory):
    databases = LoopDatabases(factory)

    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await databases.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        handler = ASYNC_ROUTES.get(path)
        if handler is None:
            status, content_type, body = 404, TEXT, b"not found"
        else:
            try:
                status, content_type, body = await handler(databases, scope["query_string"].decode("latin-1"))
            except Exception as exc:
                status, content_type, body = failure(exc, path)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"server", SERVER_FIELD),
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return asgi


# ---- psycopg, blocking: WSGI ---------------------------------------------------------


def _workers_here():
    """How many workers share this module: pyparallel's in modes threads and
    gil (one import serves them all), else 1 (mode interpreters imports it
    per worker, gunicorn per process)."""
    stats = _pyparallel_stats()
    return 1 if stats is None or stats["mode"] == "interpreters" else stats["workers"]


class BlockingPool:
    """At most `size` psycopg connections, made on demand and kept; a request
    that finds them all in use waits for one (up to ACQUIRE_TIMEOUT_S).

    Not psycopg_pool's ConnectionPool: it runs daemon threads, which a
    subinterpreter (pyparallel's mode interpreters) does not allow, and while
    the database is down it keeps a request waiting out its reconnection
    attempts; here a request finds the database gone at once."""

    def __init__(self, size):
        import psycopg

        self.connect = psycopg.Connection.connect
        self.idle = []  # list.append and list.pop are atomic, with or without the GIL
        self.slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self):
        if not self.slots.acquire(timeout=ACQUIRE_TIMEOUT_S):
            raise TimeoutError(f"no free database connection within {ACQUIRE_TIMEOUT_S:g} s")
        try:
            conn = self.idle.pop() if self.idle else self.connect(autocommit=True, prepare_threshold=0)
            try:
                yield conn
            finally:
                if conn.broken or conn.closed:
                    conn.close()
                else:
                    self.idle.append(conn)
        finally:
            self.slots.release()


class AsyncPool:
    """BlockingPool on one asyncio loop, for psycopg's AsyncConnection."""

    def __init__(self, size):
        import psycopg

        self.connect = psycopg.AsyncConnection.connect
        self.idle = []
        self.slots = asyncio.BoundedSemaphore(size)

    @contextlib.asynccontextmanager
    async def connection(self):
        async with asyncio.timeout(ACQUIRE_TIMEOUT_S):
            await self.slots.acquire()
        try:
            conn = self.idle.pop() if self.idle else await self.connect(autocommit=True, prepare_threshold=0)
            try:
                yield conn
            finally:
                if conn.broken or conn.closed:
                    await conn.close()
                else:
                    self.idle.append(conn)
        finally:
            self.slots.release()

    async def close(self):
        while self.idle:
            await self.idle.pop().close()


class PsycopgDatabase:
    def __init__(self):
        self.pool = BlockingPool(POOL_SIZE * _workers_here())

    def db(self):
        with self.pool.connection() as conn:
            return conn.execute(PSYCOPG_READ_ROW, (random.randint(1, ROWS),)).fetchone()

    def queries(self, count):
        with self.pool.connection() as conn:
            with conn.pipeline():
                cursors = [conn.execute(PSYCOPG_READ_ROW, (i,)) for i in random_ids(count)]
            return [cursor.fetchone() for cursor in cursors]

    def fortunes(self):
        with self.pool.connection() as conn:
            return conn.execute(FORTUNES).fetchall()

    def updates(self, count):
        with self.pool.connection() as conn:
            with conn.pipeline():
                cursors = [conn.execute(PSYCOPG_READ_ROW, (i,)) for i in random_ids(count)]
            rows = [(row[0], new_number(row[1])) for row in [cursor.fetchone() for cursor in cursors]]
            with conn.pipeline(), conn.cursor() as cursor:
                cursor.executemany(PSYCOPG_WRITE_ROW, psycopg_updates(rows))
            return rows


_blocking = None
_blocking_lock = threading.Lock()


def _blocking_database():
    """The process's (interpreter's) psycopg pool, made on the first request,
    when pyparallel's runtime can say how many workers share it."""
    global _blocking
    if _blocking is None:
        with _blocking_lock:
            if _blocking is None:
                _blocking = PsycopgDatabase()
    return _blocking


WSGI_ROUTES = {
    "/json": (JSON, lambda db, q: {"message": "Hello, World!"}),
    "/db": (JSON, lambda db, q: world(db.db())),
    "/queries": (JSON, lambda db, q: [world(row) for row in db.queries(queries_count(q))]),
    "/updates": (JSON, lambda db, q: [world(row) for row in db.updates(queries_count(q))]),
    "/fortunes": (HTML, lambda db, q: db.fortunes()),
}


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/plaintext":
        status, content_type, body = 200, TEXT, b"Hello, World!"
    elif path in WSGI_ROUTES:
        content_type, handler = WSGI_ROUTES[path]
        try:
            database = None if path == "/json" else _blocking_database()
            result = handler(database, environ.get("QUERY_STRING", ""))
            status, body = 200, render_fortunes(result) if content_type == HTML else dumps(result)
        except Exception as exc:
            status, content_type, body = failure(exc, path)
    else:
        status, content_type, body = 404, TEXT, b"not found"
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}", [("Server", SERVER), ("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    return [body]


def _async_driver():
    if DRIVER == "psycopg-async":
        return PsycopgAsyncDatabase
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return PsycopgAsyncDatabase
    return AsyncpgDatabase


asgi = make_asgi(_async_driver())
app = wsgi if DRIVER == "psycopg" else asgi
