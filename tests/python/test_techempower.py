"""TechEmpower's six test types (examples/techempower/app.py) against a real PostgreSQL, checked by TechEmpower's rules.

One cluster for the session (examples/techempower/pgcluster.py: Debian's
PostgreSQL in a temporary directory, TechEmpower's hello_world data, stopped
at the end). The app runs as users run it, `python -m pyparallel.http.server
--app app:app` with two workers, in the mode of this run, once per driver that
is served on this interpreter: psycopg 3 (WSGI, blocking, pipeline mode)
everywhere; on 3.13 psycopg's asyncio API too (ASGI on the worker's loop),
and asyncpg (ASGI) where it is installed (it has no 3.13t wheel).

Checked: every endpoint's status, Server and Date fields, content type and
body shape; rows as the database has them; the queries parameter clamped to
1..500 with anything but an integer taken as 1; fortunes with the added row,
sorted and escaped; updates persisted (read back with psql). Then the
database stopped under the app (503 and a log line, no hang; service resumes
once it is back), and 512 connections at once on pools of 10 per worker
(they queue: every request is answered 200).

A machine without PostgreSQL's server fails these tests with the line saying
what to install; they are not skipped.
"""

import html
import json
import os
import re
import selectors
import socket
import sys
import sysconfig
import time

import pytest

from conftest import LOCALHOST, expected_mode, wait_for
from test_wsgi import AppServer

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "techempower")
sys.path.insert(0, os.path.abspath(EXAMPLE))

import pgcluster  # noqa: E402  (examples/techempower is on the path only from here on)

pytestmark = [pytest.mark.end_to_end, pytest.mark.timeout(120)]

ADDED_FORTUNE = (0, "Additional fortune added at request time.")
ROWS = 10000
CONCURRENT = 512
REQUEST_TIMEOUT_S = 30.0


def drivers():
    """The drivers served on this interpreter, in the mode of this run.

    On 3.13t (mode threads) both of psycopg's APIs: asyncpg has no 3.13t
    wheel (docs/techempower.md, "Drivers")."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return ["psycopg", "psycopg-async"]
    # asyncpg is installed into .venv-gil (tests/requirements-gil.txt): a
    # server that cannot import it fails its tests rather than drop them.
    return ["psycopg", "psycopg-async", "asyncpg"]


@pytest.fixture(scope="session")
def postgres():
    try:
        cluster = pgcluster.Cluster().start()
    except pgcluster.PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module", params=drivers())
def server(request, postgres, tmp_path_factory):
    driver = request.param
    env = {
        **postgres.env(),
        "TFB_DRIVER": driver,
        "PYTHONPATH": os.pathsep.join(p for p in (os.path.abspath(EXAMPLE), os.environ.get("PYTHONPATH")) if p),
    }
    app = AppServer("app:app", tmp_path_factory.mktemp(f"techempower-{driver}"), env=env)
    app.driver = driver
    yield app
    app.kill()


def get(server, target):
    response = server.get(target)
    assert response.header("Server"), f"{target}: no Server field in {response.fields}"
    assert response.header("Date"), f"{target}: no Date field in {response.fields}"
    assert int(response.header("Content-Length")) == len(response.body), f"{target}: {response.fields}"
    return response


def get_json(server, target):
    response = get(server, target)
    assert response.status == 200, f"{target}: {response.status} {response.body!r}\n{server.log()[-2000:]}"
    assert response.header("Content-Type") == "application/json"
    return json.loads(response.body)


def check_world(row):
    assert set(row) == {"id", "randomNumber"}, row
    assert isinstance(row["id"], int) and 1 <= row["id"] <= ROWS, row
    assert isinstance(row["randomNumber"], int) and 1 <= row["randomNumber"] <= ROWS, row


def rows_in_database(postgres, ids):
    out = postgres.psql(f"SELECT id, randomnumber FROM world WHERE id IN ({','.join(map(str, ids))})")
    return {int(i): int(n) for i, n in (line.split("|") for line in out.split())}


def test_database_cpu_keeps_the_time_of_a_backend_that_exited(postgres):
    """The benchmark's database CPU per request is the difference of two
    readings: a backend that exits between them (a pool's connection
    closed) must not take its time out of the second."""
    import psycopg

    conninfo = {k.lower().removeprefix("pg").replace("database", "dbname"): v for k, v in postgres.env().items()}
    with psycopg.connect(**conninfo) as conn:
        backend = conn.info.backend_pid
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        before = postgres.cpu_seconds()
    wait_for(lambda: not os.path.exists(f"/proc/{backend}"), message=f"backend {backend} did not exit")
    assert postgres.cpu_seconds() >= before


# ---- the six test types --------------------------------------------------------------


def test_startup_line_names_the_interface_the_driver_needs(server):
    assert server.info["interface"] == ("wsgi" if server.driver == "psycopg" else "asgi")
    assert server.info["mode"] == expected_mode()


def test_without_tfb_driver_the_mode_gets_its_fastest_driver(postgres, tmp_path):
    """Unset (empty here, whatever the caller's environment says), TFB_DRIVER
    is the driver measured fastest in the mode: asyncpg's ASGI app in mode
    interpreters, psycopg's WSGI app in modes threads and gil."""
    env = {
        **postgres.env(),
        "TFB_DRIVER": "",
        "PYTHONPATH": os.pathsep.join(p for p in (os.path.abspath(EXAMPLE), os.environ.get("PYTHONPATH")) if p),
    }
    app = AppServer("app:app", tmp_path, env=env)
    try:
        assert app.info["interface"] == ("asgi" if expected_mode() == "interpreters" else "wsgi")
        check_world(get_json(app, "/db"))
    finally:
        app.kill()


def test_json(server):
    assert get_json(server, "/json") == {"message": "Hello, World!"}


def test_plaintext(server):
    response = get(server, "/plaintext")
    assert response.status == 200 and response.body == b"Hello, World!"
    assert response.header("Content-Type").startswith("text/plain")


def test_db_answers_a_row_as_the_database_has_it(server, postgres):
    row = get_json(server, "/db")
    check_world(row)
    assert rows_in_database(postgres, [row["id"]]) == {row["id"]: row["randomNumber"]}


@pytest.mark.parametrize(
    "query, count",
    [("", 1), ("?queries=", 1), ("?queries=foo", 1), ("?queries=0", 1), ("?queries=-3", 1), ("?queries=1", 1),
     ("?queries=20", 20), ("?queries=500", 500), ("?queries=501", 500), ("?queries=99999", 500)],
)  # fmt: skip
def test_queries_are_clamped_to_1_500(server, query, count):
    rows = get_json(server, "/queries" + query)
    assert isinstance(rows, list) and len(rows) == count, f"{query}: {len(rows)} rows"
    for row in rows:
        check_world(row)


def test_queries_answer_rows_as_the_database_has_them(server, postgres):
    rows = get_json(server, "/queries?queries=20")
    assert rows_in_database(postgres, [r["id"] for r in rows]) == {r["id"]: r["randomNumber"] for r in rows}


def test_fortunes_adds_one_sorts_and_escapes(server, postgres):
    response = get(server, "/fortunes")
    assert response.status == 200
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    page = response.body.decode("utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>Fortunes</title>" in page
    cells = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", page)
    shown = [(int(i), html.unescape(message)) for i, message in cells]
    stored = [tuple(line.split("|", 1)) for line in postgres.psql("SELECT id, message FROM fortune").splitlines()]
    expected = sorted([(int(i), message) for i, message in stored] + [ADDED_FORTUNE], key=lambda row: row[1])
    assert shown == expected
    assert len(shown) == 13
    # The script row is escaped, not markup; the Japanese one is UTF-8 text.
    assert "<script>" not in page and "&lt;script&gt;alert(&#34;This should not be displayed" in page
    assert "<td>フレームワークのベンチマーク</td>" in page


@pytest.mark.parametrize("query, count", [("?queries=foo", 1), ("?queries=20", 20), ("?queries=501", 500)])
def test_updates_are_persisted(server, postgres, query, count):
    rows = get_json(server, "/updates" + query)
    assert isinstance(rows, list) and len(rows) == count
    for row in rows:
        check_world(row)
    assert len({row["id"] for row in rows}) == count
    assert rows_in_database(postgres, [r["id"] for r in rows]) == {r["id"]: r["randomNumber"] for r in rows}


def test_unknown_path_is_404(server):
    assert get(server, "/nothing").status == 404


# ---- the database going away, and a pool exhausted ------------------------------------------


def test_database_stopped_gives_503_and_a_log_line_then_service_resumes(server, postgres):
    assert get(server, "/db").status == 200  # the pool holds a connection to lose
    postgres.stop()
    try:
        for target in ("/db", "/queries?queries=5", "/fortunes", "/updates?queries=5"):
            started = time.monotonic()
            response = get(server, target)
            assert response.status in (500, 503), f"{target} with the database stopped: {response}"
            assert time.monotonic() - started < 10, f"{target} took {time.monotonic() - started:.1f} s"
        assert get(server, "/json").status == 200  # what needs no database goes on
        wait_for(lambda: "database unavailable" in server.log(), message=f"no log line:\n{server.log()[-2000:]}")
    finally:
        postgres.restart()
    wait_for(lambda: server.get("/db").status == 200, timeout=20, interval=0.2, message="/db never recovered")
    for target in ("/queries?queries=5", "/fortunes", "/updates?queries=5"):
        assert get(server, target).status == 200, target
    assert server.child.poll() is None


def concurrent_gets(port, target, count, timeout):
    """count requests on count connections at once; their status codes
    (None for a connection that closed without a response)."""
    selector = selectors.DefaultSelector()
    request = f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    received = {}
    try:
        for _ in range(count):
            sock = socket.create_connection((LOCALHOST, port), timeout=timeout)
            received[sock] = b""
        for sock in received:
            sock.sendall(request)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        open_count = count
        while open_count and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                data = key.fileobj.recv(65536)
                received[key.fileobj] += data
                if not data:
                    selector.unregister(key.fileobj)
                    open_count -= 1
        assert open_count == 0, f"{open_count} of {count} requests unanswered after {timeout:g} s"
    finally:
        for sock in received:
            sock.close()
        selector.close()
    statuses = []
    for data in received.values():
        found = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
        statuses.append(int(found.group(1)) if found else None)
    return statuses


@pytest.mark.timeout(90)
def test_512_connections_on_small_pools_queue_rather_than_fail(server):
    errors_before = server.log().count("ERROR")
    statuses = concurrent_gets(server.port, "/queries?queries=5", CONCURRENT, REQUEST_TIMEOUT_S + 20)
    assert statuses == [200] * CONCURRENT, {s: statuses.count(s) for s in set(statuses)}
    assert server.log().count("ERROR") == errors_before, server.log()[-2000:]
