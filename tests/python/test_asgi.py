"""ASGI 3 apps (HTTP and lifespan) on pyparallel's HTTP server, over real
sockets, in the mode the suite runs in (threads on 3.13t; interpreters and
gil on 3.13).

Each app module under tests/python/apps is served by the command line,
`python -m pyparallel.http.server --app apps.MODULE:app`, in a subprocess
(one per module, shared by its tests), as users run ASGI apps; in mode
interpreters every worker imports the app and runs its lifespan itself.
Covered: the http scope's fields, request bodies, responses given whole,
streamed (chunked or with a length, with backpressure) and sent from a
file (pathsend), receive() after the response and on a disconnect, the
lifespan (startup once per process or per worker interpreter, its state
in every scope, the shutdown, a failed startup, an app without lifespan),
apps that break the protocol (500 or a closed connection, a log line, the
server goes on), 200 concurrent sleeping requests, CPU-bound requests on
two workers, and the real frameworks: Starlette and FastAPI (test_wsgi.py
checks that none of the pinned frameworks enables the GIL on 3.13t).
"""

import asyncio
import json
import os
import signal
import socket
import time
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import LOCALHOST, expected_mode, parallel_python, wait_for
from http_helpers import Client, build_request, fetch
from test_http_properties import FIELD_VALUES, PATHS, QUERIES, SETTINGS, TOKEN
from test_wsgi import AppServer, _run_cli, two_workers_ratio

WORKERS = 2


def asgi_server(spec, workdir, served_file=None, *args):
    env = {"ASGI_TEST_LOG": os.path.join(workdir, "events.log")}
    if served_file is not None:
        env["ASGI_TEST_FILE"] = str(served_file)
    return AppServer(spec, workdir, *args, env=env)


def lifespan_runs():
    """How many times the lifespan runs: once per worker interpreter in mode
    interpreters, else once."""
    return WORKERS if expected_mode() == "interpreters" else 1


@pytest.fixture(scope="module")
def served_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("asgi-file") / "data.bin"
    path.write_bytes(bytes(range(256)) * 256)
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory, served_file):
    server = asgi_server("apps.asgi_raw:app", tmp_path_factory.mktemp("asgi-raw"), served_file)
    yield server
    server.kill()


# ---- the scope, bodies, responses -----------------------------------------------


def test_startup_line_names_the_asgi_interface(raw):
    assert raw.info["app"] == "apps.asgi_raw:app"
    assert raw.info["interface"] == "asgi"
    assert raw.info["mode"] == expected_mode()


def test_http_scope_has_every_field(raw):
    response = raw.get("/scope/%C3%A9%20x?a=1&b=%20", headers=[("X-Twice", "one"), ("x-twice", "two")])
    assert response.status == 200
    scope = json.loads(response.body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/é x"
    assert scope["raw_path"] == "/scope/%C3%A9%20x"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == ""
    assert ["x-twice", "one"] in scope["headers"] and ["x-twice", "two"] in scope["headers"]
    assert ["host", "test"] in scope["headers"]
    assert scope["client"][0] == LOCALHOST and isinstance(scope["client"][1], int)
    assert scope["server"] == [LOCALHOST, raw.port]
    assert "http.response.pathsend" in scope["extensions"]
    assert scope["types"]["raw_path"] == "bytes" and scope["types"]["query_string"] == "bytes"
    assert scope["types"]["state"] == "dict"
    assert scope["header_types"] == ["bytes"]


# Field values with obs-text too (Latin-1 bytes 0xA0-0xFF), which the
# scope gives as the bytes received.
OBS_VALUES = st.one_of(
    FIELD_VALUES,
    st.tuples(FIELD_VALUES, st.text(alphabet=st.characters(min_codepoint=0xA0, max_codepoint=0xFF), min_size=1)).map(
        "".join
    ),
)


@given(
    path=PATHS,
    query=QUERIES,
    fields=st.lists(st.tuples(TOKEN.map(lambda t: "X-" + t), OBS_VALUES), max_size=8),
)
@SETTINGS
def test_generated_requests_give_their_scope(raw, path, query, fields):
    """The scope's path (percent-decoded, as urllib's unquote), raw_path,
    query_string and headers (names lowered, values as received, in order)
    for generated requests, sent under /scope/, which the app answers with
    its scope."""
    target = "/scope" + path + ("?" + query if query else "")
    with Client(raw.port) as client:
        client.send(build_request("GET", target, fields))
        response = client.read_response()
    assert response.status == 200, response.body
    scope = json.loads(response.body)
    raw_path = "/scope" + path
    assert scope["raw_path"] == raw_path
    assert scope["path"] == unquote(raw_path, errors="replace")
    assert scope["query_string"] == query
    assert scope["headers"] == [["host", "test"]] + [[name.lower(), value] for name, value in fields]


def test_root_path_prefixes_path_and_raw_path(tmp_path):
    """An app mounted under a root path (the ASGIServer class attribute):
    path and raw_path start with it (spec 2.4), raw_path's bytes in
    Latin-1."""
    server = AppServer("apps.asgi_rooted:Rooted", str(tmp_path))
    try:
        response = server.get("/scope/%C3%A9?q=1")
        assert response.status == 200
        scope = json.loads(response.body)
        assert scope["root_path"] == "/mnt/\u00e9"
        assert scope["path"] == "/mnt/\u00e9/scope/\u00e9"
        assert scope["raw_path"] == "/mnt/\u00e9/scope/%C3%A9"  # the bytes, shown as Latin-1
        assert scope["query_string"] == "q=1"
    finally:
        server.kill()


def test_http_1_0_and_head(raw):
    with Client(raw.port) as client:
        client.send(build_request("GET", "/scope", version="HTTP/1.0"))
        assert json.loads(client.read_response().body)["http_version"] == "1.0"
    with Client(raw.port) as client:
        response = client.request("HEAD", "/scope")
        assert response.status == 200 and response.body == b""
        assert int(response.header("Content-Length")) > 0
        response = client.request("HEAD", "/head-length")
        assert response.header("Content-Length") == "1234" and response.body == b""
        assert client.request("GET", "/whoami").status == 200  # the connection goes on


@pytest.mark.parametrize("chunked_body", [False, True])
def test_request_body_reaches_the_app(raw, chunked_body):
    body = bytes(range(256)) * 100
    if chunked_body:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:])) + b"0\r\n\r\n"
        response = fetch(raw.port, "POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=framed)
    else:
        response = fetch(raw.port, "POST", "/echo", body=body)
    assert response.status == 200 and response.body == body


def test_a_body_arriving_in_pieces_reaches_the_app_as_it_comes(raw):
    """The app has the first piece of a chunked upload before the client
    sent the rest (test_http_body_stream.py checks that a streamed body
    holds no more than its bound, and the limits)."""
    with Client(raw.port) as client:
        client.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]))
        client.send(b"3e8\r\n" + b"a" * 1000 + b"\r\n")
        wait_for(lambda: any(line.startswith("first piece") for line in raw.events()), message=raw.events())
        assert "more True" in next(line for line in raw.events() if line.startswith("first piece"))
        piece = b"b" * 65536
        for _ in range(8):
            client.send(b"10000\r\n" + piece + b"\r\n")
        client.send(b"0\r\n\r\n")
        result = json.loads(client.read_response().body)
    assert result["size"] == 1000 + 8 * 65536
    assert result["events"] >= 3


def test_a_whole_response_has_its_content_length(raw):
    response = raw.get("/whoami")
    assert response.header("Content-Length") == str(len(response.body))
    assert response.header("Transfer-Encoding") is None


def test_a_body_in_pieces_is_streamed(raw):
    response = raw.get("/stream")
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.body == b"piece 0\npiece 1\npiece 2\n"
    response = raw.get("/stream?length")
    assert response.header("Content-Length") == "24" and response.header("Transfer-Encoding") is None
    assert response.body == b"piece 0\npiece 1\npiece 2\n"


def test_a_streamed_body_waits_for_a_slow_reader(raw):
    """256 pieces of 64 KiB (16 MiB) to a client that reads slowly at first:
    everything arrives, in order, and the connection serves on."""
    with Client(raw.port) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.send(build_request("GET", "/big?256"))
        time.sleep(0.5)  # the server fills the socket and waits
        response = client.read_response()
        assert response.status == 200 and len(response.body) == 256 * 65536
        assert set(response.body) == {ord("x")}
        assert client.request("GET", "/whoami").status == 200


def test_statuses_without_a_body(raw):
    for status in (204, 304):
        with Client(raw.port) as client:
            response = client.request("GET", f"/no-body?{status}")
            assert response.status == status and response.body == b""
            assert response.header("ETag") == '"v1"'
            assert client.request("GET", "/whoami").status == 200


def test_pathsend_is_sent_from_the_file(raw, served_file):
    response = raw.get("/pathsend")
    assert response.status == 200 and response.body == served_file.read_bytes()
    assert response.header("Content-Type") == "application/octet-stream"
    assert response.header("ETag") is not None  # the C layer's file answer
    # The app chose a 200 of the whole file: a Range it did not honour is
    # not applied behind its back.
    whole = raw.get("/pathsend", headers=[("Range", "bytes=10-19")])
    assert whole.status == 200 and whole.body == served_file.read_bytes()
    other = raw.get("/pathsend?203")
    assert other.status == 203 and other.body == served_file.read_bytes()


def test_receive_says_disconnect_once_the_client_goes(raw):
    with Client(raw.port) as client:
        client.send(build_request("GET", "/disconnect"))
        wait_for(lambda: "waiting" in raw.events(), message=raw.events())
    wait_for(lambda: "http.disconnect" in raw.events(), message=raw.events())


def test_the_answer_comes_before_the_app_returns(raw):
    started = time.monotonic()
    response = raw.get("/after-response")
    assert response.body == b"answered"
    assert time.monotonic() - started < 0.25  # the app sleeps 0.3 s after answering
    wait_for(lambda: "after the response: http.disconnect" in raw.events(), message=raw.events())


# ---- apps that break the protocol ---------------------------------------------


@pytest.mark.parametrize(
    "route, logged",
    [
        ("start-twice", "sent 'http.response.start' a second time"),
        ("body-before-start", "sent 'http.response.body' before 'http.response.start'"),
        ("never-responds", "returned without completing its response"),
        ("raises-before", "app failed before its response"),
        ("status", "status must be an int in 200..599"),
        ("str-header", "ASGI response headers are pairs of bytes"),
        ("unknown-event", "'http.response.teapot', not an event of an http response"),
        ("short-length", "Content-Length is 10, but it sent 3 bytes"),
    ],
)
def test_a_bad_app_gets_500_a_log_line_and_the_server_goes_on(raw, route, logged):
    with Client(raw.port) as client:
        response = client.request("GET", f"/bad/{route}")
        assert response.status == 500
        assert response.body == b"Internal Server Error\n"
        assert client.request("GET", "/whoami").status == 200
    wait_for(lambda: logged in raw.log(), message=raw.log())
    assert f"ASGI app apps.asgi_raw:app failed on GET /bad/{route}" in raw.log()


def test_a_failure_mid_stream_closes_the_connection(raw):
    with Client(raw.port) as client:
        client.send(build_request("GET", "/bad/raises-mid-stream"))
        data = b""
        while chunk := client.sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")  # truncated: no last chunk
    wait_for(lambda: "app failed mid-stream" in raw.log(), message=raw.log())
    assert raw.get("/whoami").status == 200


def test_an_event_after_the_response_is_refused(raw):
    assert raw.get("/bad/send-after-complete").body == b"complete"
    wait_for(
        lambda: "refused: the ASGI app sent 'http.response.body' after its response completed" in raw.events(),
        message=raw.events(),
    )


# ---- lifespan ----------------------------------------------------------------------


def test_lifespan_startup_ran_before_serving_and_its_state_reaches_every_scope(raw):
    assert raw.events().count("startup") == lifespan_runs()
    for _ in range(3):
        state = json.loads(raw.get("/state").body)
        assert state["count"] == 1  # each request has its own copy
        assert state["started_by"] == str(raw.child.pid)


def test_lifespan_shutdown_runs_as_the_server_stops(tmp_path, served_file):
    server = asgi_server("apps.asgi_raw:app", tmp_path, served_file)
    try:
        assert server.get("/whoami").status == 200
        server.child.send_signal(signal.SIGTERM)
        assert server.child.wait(30) == 0
        assert server.events().count("shutdown") == lifespan_runs(), server.events()
    finally:
        server.kill()


def test_a_failed_startup_stops_the_server_with_the_apps_message():
    result = _run_cli("--app", "apps.asgi_raw:failing_app", env={"ASGI_TEST_LOG": os.devnull})
    assert result.returncode == 3, result
    assert "lifespan startup failed: the database is unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_without_lifespan_is_served(tmp_path):
    server = AppServer("apps.interfaces:asgi_app", tmp_path)
    try:
        assert server.info["interface"] == "asgi"
        assert server.get("/page").body == b"asgi page"
        assert "does not support lifespan" in server.log()
    finally:
        server.kill()


# ---- concurrency ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_200_concurrent_sleeping_requests_take_well_under_two_seconds(raw):
    """Each awaits asyncio.sleep(0.2): the workers serve the others
    meanwhile, so 200 of them take about 0.2 s, not 40 / workers."""

    async def one(_):
        reader, writer = await asyncio.open_connection(LOCALHOST, raw.port)
        writer.write(build_request("GET", "/sleep?0.2", headers=[("Connection", "close")]))
        data = await reader.read()
        writer.close()
        return data.split(b" ", 2)[1]

    async def load():
        return await asyncio.gather(*(one(i) for i in range(200)))

    raw.get("/whoami")
    started = time.monotonic()
    statuses = asyncio.run(load())
    elapsed = time.monotonic() - started
    assert statuses == [b"200"] * 200
    assert elapsed < 1.5, f"200 requests sleeping 0.2 s took {elapsed:.2f} s"


@pytest.mark.skipif(not parallel_python(), reason="mode gil runs one request's Python at a time")
@pytest.mark.timeout(120)
def test_two_cpu_bound_requests_run_on_two_workers_at_once(raw):
    ratio = two_workers_ratio(raw.port, "/cpu?3000000")
    assert ratio >= 1 / 1.6, f"two requests took {1 / ratio:.2f}x the time of one"


# ---- Starlette ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def starlette_server(tmp_path_factory, served_file):
    server = asgi_server("apps.starlette_app:app", tmp_path_factory.mktemp("starlette"), served_file)
    yield server
    server.kill()


def test_starlette_routes_lifespan_state_and_sleep(starlette_server):
    server = starlette_server
    assert json.loads(server.get("/").body) == {"greeting": "hello from the lifespan", "path": "/"}
    assert server.events().count("starlette startup") == lifespan_runs()
    assert json.loads(server.get("/items/42?q=x").body) == {"item": 42, "q": "x"}
    assert server.get("/items/notanint").status == 404
    assert server.get("/sleep?s=0.05").body == b"slept"
    assert server.get("/fails").status == 500


def test_starlette_form_cookies_redirects_and_template(starlette_server):
    server = starlette_server
    boundary = "pxboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nada\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n{'z' * 3000}\r\n--{boundary}--\r\n"
    ).encode()
    response = fetch(
        server.port, "POST", "/form", headers=[("Content-Type", f"multipart/form-data; boundary={boundary}")], body=body
    )
    assert json.loads(response.body) == {"name": "ada", "filename": "a.txt", "size": 3000}
    first = server.get("/cookie")
    assert first.body == b"seen 0" and "visits=1" in first.header("Set-Cookie")
    assert server.get("/cookie", headers=[("Cookie", "visits=1")]).body == b"seen 1"
    redirect = server.get("/redirect")
    assert redirect.status == 302 and redirect.header("Location") == "/"
    page = server.get("/fortunes")
    assert page.status == 200 and b"fortune &lt;2&gt;" in page.body


def test_starlette_streaming_file_and_background_task(starlette_server, served_file):
    server = starlette_server
    streamed = server.get("/stream")
    assert streamed.header("Transfer-Encoding") == "chunked" and streamed.body == b"0\n1\n2\n3\n4\n"
    file = server.get("/file")
    assert file.status == 200 and file.body == served_file.read_bytes()
    started = time.monotonic()
    assert server.get("/background?tag=one").body == b"queued"
    assert time.monotonic() - started < 0.2  # answered before the task's 0.2 s
    wait_for(lambda: "background one" in server.events(), message=server.events())


def test_starlette_shutdown_runs_its_lifespan_exit(tmp_path, served_file):
    server = asgi_server("apps.starlette_app:app", tmp_path, served_file)
    try:
        assert server.get("/").status == 200
        server.child.send_signal(signal.SIGTERM)
        assert server.child.wait(30) == 0
        assert server.events().count("starlette shutdown") == lifespan_runs(), server.events()
    finally:
        server.kill()


# ---- Django's ASGI handler ----------------------------------------------------------------


def test_django_through_its_asgi_handler(tmp_path):
    env = {"DJANGO_TEST_DB": str(tmp_path / "db.sqlite3"), "DJANGO_TEST_STATIC": str(tmp_path)}
    server = AppServer("apps.django_site:asgi_application", tmp_path, env=env)
    try:
        assert server.info["interface"] == "asgi"
        assert server.get("/hello?name=Ada").body == b"Hello from Django, Ada"
        form = [("Content-Type", "application/x-www-form-urlencoded")]
        counts = [
            json.loads(fetch(server.port, "POST", "/notes", headers=form, body=f"text=n{n}".encode()).body)["count"]
            for n in range(2)
        ]
        assert counts == [1, 2]
        assert fetch(server.port, "GET", "/notes").body == b"<ul><li>n0</li><li>n1</li></ul>"
        assert server.get("/nowhere").status == 404
    finally:
        server.kill()


def test_root_and_limits_with_an_asgi_app(tmp_path):
    (tmp_path / "static.txt").write_text("from the root")
    server = asgi_server("apps.asgi_raw:app", tmp_path, None, "--root", str(tmp_path), "--max-body-size", "10")
    try:
        assert server.get("/static.txt").body == b"from the root"
        assert server.get("/whoami").status == 200  # not a file: the app
        assert fetch(server.port, "POST", "/echo", body=b"x" * 10).body == b"x" * 10
        assert fetch(server.port, "POST", "/echo", body=b"x" * 11).status == 413
    finally:
        server.kill()


# ---- FastAPI ------------------------------------------------------------------------------


@pytest.mark.skipif(expected_mode() == "interpreters", reason="pydantic-core refuses subinterpreters")
def test_fastapi_app(tmp_path):
    server = asgi_server("apps.fastapi_app:app", tmp_path)
    try:
        assert json.loads(server.get("/items/7?q=hi").body) == {"item_id": 7, "q": "hi"}
        missing = server.get("/items/404")
        assert missing.status == 404 and json.loads(missing.body) == {"detail": "no such item"}
        assert server.get("/items/seven").status == 422
        body = json.dumps({"name": "pen", "price": 1.5, "tags": ["a"]}).encode()
        created = fetch(server.port, "POST", "/items", headers=[("Content-Type", "application/json")], body=body)
        assert json.loads(created.body) == {"name": "pen", "total": 4.5, "tags": ["a"]}
        assert json.loads(server.get("/sleep?s=0.01").body) == {"slept": 0.01}
        assert json.loads(server.get("/sync").body) == {"sync": True}
    finally:
        server.kill()


@pytest.mark.skipif(expected_mode() != "interpreters", reason="mode interpreters alone refuses the app")
def test_fastapi_in_mode_interpreters_is_refused_in_one_line():
    result = _run_cli("--app", "apps.fastapi_app:app")
    assert result.returncode == 2, result
    assert "the extension module pydantic_core._pydantic_core does not support subinterpreters" in result.stderr
    assert "--mode threads" in result.stderr and "--mode gil" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_app_runs_an_asgi_app_and_its_lifespan(rt):
    from pyparallel.http import ASGIServer, serve_app

    listener = serve_app("apps.asgi_raw:app", LOCALHOST, 0)
    port = listener.sockname[1]
    plain = rt.serve(ASGIServer.for_app("apps.interfaces:asgi_app"))

    def driver():
        assert fetch(port, "GET", "/whoami").status == 200
        # The state the lifespan's startup stored: it ran before serving.
        assert json.loads(fetch(port, "GET", "/state").body) == {"started_by": str(os.getpid()), "count": 1}
        assert fetch(plain, "GET", "/page").body == b"asgi page"

    rt.run(driver)
