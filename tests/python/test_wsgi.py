"""WSGI (PEP 3333) apps on pyparallel's HTTP server, over real sockets, in the
mode the suite runs in (threads on 3.13t; interpreters and gil on 3.13).

Each app module under tests/python/apps is served by the command line,
`python -m pyparallel.http.server --app apps.MODULE:app`, in a subprocess
(one per module, shared by its tests): that is how users run WSGI apps,
and in mode interpreters it makes every worker import the app itself.
Covered: the PEP 3333 conformance set (wsgiref's validator, the environ's
keys and types, Latin-1 paths, joined header fields, start_response and
exc_info, write(), close() on every path, wsgi.file_wrapper with
sendfile), apps that break the protocol (500, a log line, the server goes
on), two CPU-bound requests on two workers at once, a blocking app not
holding up others, the interface detection and its errors, the Python API
(serve_app, WSGIServer.for_app), the diagnostics for extension modules
that refuse subinterpreters or enable the GIL, and that the pinned
frameworks keep the GIL disabled on 3.13t.
"""

import json
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time

import pytest

from conftest import LOCALHOST, expected_mode, gil_enabled, parallel_python, run_threads, speedup, wait_for
from http_helpers import Client, build_request, fetch
from pyparallel.http import AppError, WSGIServer, serve_app

HERE = os.path.dirname(os.path.abspath(__file__))
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
STARTUP = re.compile(
    r"^Serving HTTP on \S+ port (?P<port>\d+) \(http://\S+/\): app (?P<app>\S+), interface (?P<interface>\w+), "
    r"(?P<root>.+), (?P<workers>\d+) workers, mode (?P<mode>\w+), io (?P<io>\w+)$"
)


class AppServer:
    """python -m pyparallel.http.server --app SPEC with two workers, run from
    tests/python (so that the apps package is importable), its stderr (the
    log) kept in a file."""

    def __init__(self, spec, workdir, *args, env=None):
        self.log_path = os.path.join(workdir, "server.log")
        self.events_path = os.path.join(workdir, "events.log")
        open(self.events_path, "w").close()
        self.stderr = open(self.log_path, "w")
        environment = {**os.environ, "PYPARALLEL_WORKERS": "2", "WSGI_TEST_LOG": self.events_path, **(env or {})}
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pyparallel.http.server", "--bind", LOCALHOST, "--port", "0", "--app", spec, *args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=HERE,
            env=environment,
        )
        line = self.child.stdout.readline()
        match = STARTUP.match(line.rstrip("\n"))
        if match is None:
            self.kill()
            raise AssertionError(f"no startup line: {line!r}\nlog: {self.log()}")
        self.info = match.groupdict()
        self.port = int(self.info["port"])

    def log(self):
        with open(self.log_path) as log:
            return log.read()

    def events(self):
        with open(self.events_path) as events:
            return events.read().splitlines()

    def get(self, target, **kwargs):
        return fetch(self.port, "GET", target, **kwargs)

    def kill(self):
        if self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(10)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(10)
        self.stderr.close()


@pytest.fixture(scope="module")
def served_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("wsgi-file") / "data.bin"
    path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.fixture(scope="module")
def conformance(tmp_path_factory, served_file):
    server = AppServer(
        "apps.conformance:app", tmp_path_factory.mktemp("conformance"), env={"WSGI_TEST_FILE": str(served_file)}
    )
    yield server
    server.kill()


# ---- the start-up line and the conformance set -----------------------------


def test_startup_line_names_the_wsgi_interface(conformance):
    assert conformance.info["app"] == "apps.conformance:app"
    assert conformance.info["interface"] == "wsgi"
    assert conformance.info["mode"] == expected_mode()


@pytest.mark.parametrize(
    "how, expected",
    [
        ("", b"line one\n+line two\nend"),
        ("lines", b"line one\n|line two\n|end"),
        ("iterate", b"line one\n|line two\n|end"),
        ("chunks", b"lin|e o|ne\n|lin|e t|wo\n|end"),
    ],
)
def test_wsgiref_validator_passes_reading_the_body_every_way(conformance, how, expected):
    body = b"line one\nline two\nend"
    response = fetch(conformance.port, "POST", f"/validated?{how}", headers=[("Content-Type", "text/plain")], body=body)
    assert (response.status, response.body) == (200, expected), conformance.log()
    assert "WSGI app: echoed a body" in conformance.log()  # wsgi.errors reaches the "pyparallel" logger


def test_validator_with_a_chunked_body_and_a_get(conformance):
    with Client(conformance.port) as client:
        client.send(
            build_request(
                "POST",
                "/validated?lines",
                headers=[("Transfer-Encoding", "chunked")],
                body=b"5\r\nab\ncd\r\n3\r\nef\n\r\n0\r\n\r\n",
                length=False,
            )
        )
        assert client.read_response().body == b"ab\n|cdef\n"
        assert client.request("GET", "/validated").body == b"+"


def test_environ_keys_and_types(conformance):
    with Client(conformance.port) as client:
        local_port = client.sock.getsockname()[1]
        response = client.request(
            "POST",
            "/environ/caf%C3%A9%2Fx%ff?q=a%20b&r",
            headers=[
                ("Content-Type", "text/plain"),
                ("X-Dup", "one"),
                ("x-dup", "two"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("X_Smuggled", "dropped"),
                ("X-Latin", "caf\xe9"),
            ],
            body=b"12345",
        )
    data = json.loads(response.body)
    fields, wsgi = data["fields"], data["wsgi"]
    assert fields["REQUEST_METHOD"] == "POST"
    assert fields["SCRIPT_NAME"] == ""
    # Percent-decoded bytes read as Latin-1, "%2F" included (PEP 3333).
    assert bytes(fields["PATH_INFO_BYTES"]) == b"/environ/caf\xc3\xa9/x\xff"
    assert fields["QUERY_STRING"] == "q=a%20b&r"
    assert (fields["CONTENT_TYPE"], fields["CONTENT_LENGTH"]) == ("text/plain", "5")
    assert (fields["SERVER_NAME"], fields["SERVER_PORT"]) == (LOCALHOST, str(conformance.port))
    assert (fields["REMOTE_ADDR"], fields["REMOTE_PORT"]) == (LOCALHOST, str(local_port))
    assert fields["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert fields["HTTP_HOST"] == "test"
    assert fields["HTTP_X_DUP"] == "one, two"
    assert fields["HTTP_COOKIE"] == "a=1; b=2"
    assert fields["HTTP_X_LATIN"] == "caf\xe9"
    assert not any("SMUGGLED" in key for key in fields)
    assert "HTTP_CONTENT_TYPE" not in fields and "HTTP_CONTENT_LENGTH" not in fields
    assert wsgi == {
        "version": [1, 0],
        "url_scheme": "http",
        "multithread": True,
        "multiprocess": False,
        "run_once": False,
        "input_read": True,
        "errors": True,
        "file_wrapper": True,
        "types": ["str"],
    }


def test_a_list_body_is_sent_whole_and_an_iterator_streamed(conformance):
    whole = conformance.get("/write")
    assert whole.header("Content-Length") == str(len(whole.body))
    expected = b"".join(bytes([index]) * (1 << 16) for index in range(40))
    streamed = conformance.get("/stream?40")
    assert (streamed.header("Transfer-Encoding"), streamed.body) == ("chunked", expected)
    given = conformance.get("/stream?40&length")
    assert (given.header("Transfer-Encoding"), given.header("Content-Length")) == (None, str(len(expected)))
    assert given.body == expected


@pytest.mark.parametrize("query", ["", "extra"])
def test_an_iterator_whose_first_piece_has_the_whole_length_is_sent_whole(conformance, query):
    """A framework's response iterator gives its body in one piece, with
    its Content-Length: head and body go out together once the iterable
    ended (its rest noted before the client has the response), cut to the
    Content-Length when it gives more."""
    response = conformance.get(f"/complete?{query}")
    assert (response.status, response.body, response.header("Content-Length")) == (200, b"whole", "5")
    assert response.header("Transfer-Encoding") is None
    assert f"after the body ?{query}" in conformance.events()


def test_no_body_means_no_content_length(conformance):
    fields = json.loads(conformance.get("/environ").body)["fields"]
    assert "CONTENT_LENGTH" not in fields


def test_exc_info_before_body_replaces_the_status(conformance):
    response = conformance.get("/exc-info-before-body")
    assert (response.status, response.header("X-Error"), response.body) == (503, "yes", b"sorry")


def test_exc_info_after_body_reraises(conformance):
    response = conformance.get("/exc-info-after-body")
    assert response.status == 500
    assert "exc_info after body: start_response returned" not in conformance.events()
    assert "KeyError: 'too late'" in conformance.log()


def test_write_callable_then_iterable(conformance):
    assert conformance.get("/write").body == b"written then iterated"


@pytest.mark.parametrize("declared, body", [("3", b"abc"), ("6", b"abcdef")])
def test_content_length_of_the_app_is_kept_to(conformance, declared, body):
    response = conformance.get(f"/content-length?{declared}")
    assert (response.status, response.body, response.header("Content-Length")) == (200, body, declared)


def test_content_length_longer_than_the_body_is_an_error(conformance):
    assert conformance.get("/content-length?9").status == 500


def test_close_is_called_on_every_path(conformance):
    assert conformance.get("/close?ok").body == b"part0 part1 part2 "
    # Failing after its first piece of body: the head and that piece are
    # out (streamed), so the server can only cut the body short.
    with Client(conformance.port) as client:
        client.send(build_request("GET", "/close?mid-body"))
        with pytest.raises(AssertionError, match="EOF inside a chunked body"):
            client.read_response()
    assert conformance.get("/close?bad-header").status == 500
    # The client leaves before the app is done: close() all the same.
    with Client(conformance.port) as client:
        client.send(build_request("GET", "/close?slow"))
    wait_for(lambda: "closed slow" in conformance.events(), message=f"events: {conformance.events()}")
    events = conformance.events()
    for name in ("ok", "mid-body", "bad-header", "slow"):
        assert events.count(f"closed {name}") == 1, events
    log = conformance.log()
    assert "failing mid-body" in log
    assert "line break" in log


def test_file_wrapper_of_a_real_file_is_sent_from_the_file(conformance, served_file):
    data = served_file.read_bytes()
    with Client(conformance.port) as client:
        whole = client.request("GET", "/file")
        ranged = client.request("GET", "/file", headers=[("Range", "bytes=10-19")])
        again = client.request("GET", "/file", headers=[("If-None-Match", whole.header("ETag"))])
    assert (whole.status, whole.body) == (200, data)
    assert (whole.header("Content-Type"), whole.header("X-From")) == ("application/x-test", "wrapper")
    # The ETag, the range and the 304 are the C layer's file path (sendfile).
    assert whole.header("ETag")
    assert (ranged.status, ranged.body) == (206, data[10:20])
    assert again.status == 304


def test_file_wrapper_of_other_objects_is_iterated(conformance, served_file):
    memory = conformance.get("/file?memory")
    assert (memory.status, memory.body, memory.header("ETag")) == (200, b"in memory " * 100, None)
    offset = conformance.get("/file?offset")
    assert (offset.status, offset.body, offset.header("ETag")) == (200, served_file.read_bytes()[10:], None)


@pytest.mark.parametrize(
    "route, logged",
    [
        ("start-response-twice", "start_response() called a second time without exc_info"),
        ("non-iterable", "returned int, not an iterable of bytes"),
        ("str-body", "a WSGI body is made of bytes, not str"),
        ("no-start-response", "before calling start_response()"),
        ("raises", "the app failed before responding"),
    ],
)
def test_a_bad_app_gets_500_a_log_line_and_the_server_goes_on(conformance, route, logged):
    with Client(conformance.port) as client:
        failed = client.request("GET", f"/{route}")
        after = client.request("GET", "/write")  # the same connection goes on
    assert (failed.status, failed.body) == (500, b"Internal Server Error\n")
    assert after.body == b"written then iterated"
    assert re.search(rf"WSGI app apps\.conformance:app failed on GET /{route}", conformance.log())
    assert logged in conformance.log()


# ---- Flask ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory, served_file):
    server = AppServer("apps.flask_app:app", tmp_path_factory.mktemp("flask"), env={"WSGI_TEST_FILE": str(served_file)})
    yield server
    server.kill()


def _multipart(boundary, parts):
    lines = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        lines += [f"--{boundary}".encode(), f"Content-Disposition: {disposition}".encode(), b"", content]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines)


def test_flask_routes_json_and_forms(flask_server):
    with Client(flask_server.port) as client:
        index = client.request("GET", "/")
        item = client.request("GET", "/items/42?q=x%20y")
        missing = client.request("GET", "/items/nope")
        posted = client.request(
            "POST",
            "/json",
            headers=[("Content-Type", "application/json")],
            body=json.dumps({"values": [1, 2, 3]}).encode(),
        )
        form = client.request(
            "POST", "/form", headers=[("Content-Type", "application/x-www-form-urlencoded")], body=b"name=Ada+L&age=36"
        )
        boundary = "pyparallelboundary"
        upload = client.request(
            "POST",
            "/upload",
            headers=[("Content-Type", f"multipart/form-data; boundary={boundary}")],
            body=_multipart(boundary, [("note", None, b"hello"), ("document", "report.bin", bytes(range(256)) * 8)]),
        )
    assert (index.status, index.body) == (200, b"Hello from Flask")
    assert json.loads(item.body) == {"id": 42, "query": "x y"}
    assert missing.status == 404
    assert json.loads(posted.body) == {"received": {"values": [1, 2, 3]}, "length": 3}
    assert form.body == b"Ada L is 36"
    assert json.loads(upload.body) == {"name": "report.bin", "size": 2048, "note": "hello"}


def test_flask_cookies_and_redirects(flask_server):
    with Client(flask_server.port) as client:
        set_ = client.request("GET", "/cookie/set")
        cookies = [value.split(";")[0] for value in set_.header_values("Set-Cookie")]
        got = client.request("GET", "/cookie/get", headers=[("Cookie", cookies[0]), ("Cookie", cookies[1])])
        moved = client.request("GET", "/old")
    assert cookies == ["flavour=oat", "size=large"]
    assert got.body == b"oat large"
    assert (moved.status, moved.header("Location")) == (302, "/")


def test_flask_streamed_generator_and_send_file(flask_server, served_file):
    with Client(flask_server.port) as client:
        streamed = client.request("GET", "/stream?name=t")
        sent = client.request("GET", "/file")
        ranged = client.request("GET", "/file", headers=[("Range", "bytes=0-9")])
    assert streamed.body == b"".join(b"row %d of t\n" % n for n in range(5))
    assert (sent.status, sent.body) == (200, served_file.read_bytes())
    assert sent.header("Content-Type") == "application/octet-stream"
    assert (ranged.status, ranged.body) == (206, served_file.read_bytes()[:10])


def test_flask_view_that_raises(flask_server):
    with Client(flask_server.port) as client:
        assert client.request("GET", "/boom").status == 500  # Flask's own error page
        assert client.request("GET", "/").status == 200
    assert "a Flask view failed" in flask_server.log()


# ---- Django -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("django")
    (workdir / "static").mkdir()
    (workdir / "static" / "site.css").write_text("body { color: teal }")
    env = {"DJANGO_TEST_DB": str(workdir / "db.sqlite3"), "DJANGO_TEST_STATIC": str(workdir / "static")}
    server = AppServer("apps.django_site:application", workdir, env=env)
    yield server
    server.kill()


def test_django_view_orm_and_template(django_server):
    with Client(django_server.port) as client:
        hello = client.request("GET", "/hello?name=Grace")
        counts = [
            json.loads(
                client.request(
                    "POST",
                    "/notes",
                    headers=[("Content-Type", "application/x-www-form-urlencoded")],
                    body=f"text=note+{n}".encode(),
                ).body
            )["count"]
            for n in range(3)
        ]
        listing = client.request("GET", "/notes")
        missing = client.request("GET", "/nowhere")
    assert (hello.status, hello.body) == (200, b"Hello from Django, Grace")
    assert counts == [1, 2, 3]
    assert listing.body == b"<ul><li>note 0</li><li>note 1</li><li>note 2</li></ul>"
    assert missing.status == 404
    # Other connections, maybe on the other worker, see the same rows.
    assert b"note 2" in fetch(django_server.port, "GET", "/notes").body


def test_django_csrf_protected_post(django_server):
    with Client(django_server.port) as client:
        page = client.request("GET", "/protected")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1).decode()
        cookie = next(v.split(";")[0] for v in page.header_values("Set-Cookie") if v.startswith("csrftoken="))
        form = [("Content-Type", "application/x-www-form-urlencoded")]
        accepted = client.request(
            "POST",
            "/protected",
            headers=[*form, ("Cookie", cookie)],
            body=f"csrfmiddlewaretoken={token}&value=7".encode(),
        )
        refused = client.request("POST", "/protected", headers=form, body=b"value=7")
    assert (accepted.status, accepted.body) == (200, b"accepted 7")
    assert refused.status == 403


def test_django_static_files(django_server):
    response = fetch(django_server.port, "GET", "/static/site.css")
    assert (response.status, response.body) == (200, b"body { color: teal }")
    assert response.header("Content-Type").startswith("text/css")
    assert fetch(django_server.port, "GET", "/static/none.css").status == 404


# ---- concurrency ---------------------------------------------------------------


def _timed(client, target):
    started = time.monotonic()
    response = client.request("GET", target)
    assert response.status == 200
    return time.monotonic() - started


def _connections_on_two_workers(port):
    """Two connections served by different workers (a connection stays on
    the worker that accepted it), out of up to 8 opened."""
    clients = []
    by_worker = {}
    for _ in range(8):
        client = Client(port)
        clients.append(client)
        by_worker.setdefault(client.request("GET", "/whoami").body, client)
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, "8 connections, all served by one worker"
    return clients, list(by_worker.values())


def two_workers_ratio(port, target):
    """How many times the time of one request two such requests take on
    connections of two different workers (best of 3 interleaved attempts:
    the machine is shared), as speedup() measures it."""
    clients, (first, second) = _connections_on_two_workers(port)
    try:
        _timed(first, target)  # warm up

        def both():
            run_threads((_timed, first, target), (_timed, second, target))

        return speedup(lambda: _timed(first, target), both, target=1 / 1.6, attempts=3)
    finally:
        for client in clients:
            client.close()


@pytest.mark.skipif(not parallel_python(), reason="mode gil runs one request's Python at a time")
@pytest.mark.timeout(120)
def test_two_cpu_bound_requests_run_on_two_workers_at_once(conformance):
    """Two requests of about 0.3 s of pure-Python work each, on connections
    of two different workers, take less than 1.6x the time of one."""
    ratio = two_workers_ratio(conformance.port, "/cpu?3000000")
    assert ratio >= 1 / 1.6, f"two requests took {1 / ratio:.2f}x the time of one"


def test_a_blocking_app_does_not_hold_up_other_connections(conformance):
    slow = threading.Thread(target=lambda: conformance.get("/sleep?1.5"))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    for _ in range(6):  # whichever worker they land on
        assert conformance.get("/write").status == 200
    assert time.monotonic() - started < 1.0
    slow.join(10)


# ---- the command line: interfaces, root, limits, errors -----------------------


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pyparallel.http.server", "--bind", LOCALHOST, "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--app", "apps.interfaces:AsgiCallable"], "is a class but not an HttpServer subclass"),
        (["--app", "apps.interfaces:wsgi_app", "--interface", "asgi"], "wsgi_app is not an ASGI 3 application"),
        (["--app", "apps.interfaces:Pages", "--interface", "asgi"], "is an HttpServer subclass, not an ASGI callable"),
        (["--app", "apps.interfaces:Pages", "--interface", "wsgi"], "is an HttpServer subclass, not a WSGI callable"),
        (["--app", "apps.interfaces:wsgi_app", "--interface", "pyparallel"], "wants an HttpServer subclass"),
        (["--app", "apps.interfaces:not_callable"], "is not an application"),
        (["--interface", "wsgi"], "--interface wsgi needs --app"),
    ],
)
def test_interfaces_that_cannot_be_served_exit_2_with_one_line(args, message):
    result = _run_cli(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "spec, interface, expected",
    [
        ("apps.interfaces:wsgi_app", "auto", "wsgi"),
        ("apps.interfaces:Pages", "auto", "pyparallel"),
        ("apps.interfaces:WsgiClass", "wsgi", "wsgi"),
        ("apps.interfaces:asgi_app", "auto", "asgi"),
        ("apps.interfaces:asgi_instance", "auto", "asgi"),
        ("apps.interfaces:asgi_app", "asgi", "asgi"),
    ],
)
def test_interface_detection_and_override(tmp_path, spec, interface, expected):
    server = AppServer(spec, tmp_path, "--interface", interface)
    try:
        assert server.info["interface"] == expected
        assert server.get("/page").body == f"{expected} page".encode()
    finally:
        server.kill()


def test_root_and_limits_with_a_wsgi_app(tmp_path):
    (tmp_path / "static.txt").write_text("from the root")
    server = AppServer("apps.interfaces:wsgi_app", tmp_path, "--root", str(tmp_path), "--max-body-size", "10")
    try:
        assert server.info["root"] == f"root {os.path.realpath(tmp_path)}"
        assert server.get("/static.txt").body == b"from the root"
        assert server.get("/page").body == b"wsgi page"  # not a file: the app
        assert fetch(server.port, "POST", "/page", body=b"x" * 11).status == 413
    finally:
        server.kill()


# ---- the Python API -------------------------------------------------------------


def test_serve_app_and_for_app(rt):
    listener = serve_app("apps.interfaces:wsgi_app", LOCALHOST, 0, max_body_size=10)
    port = listener.sockname[1]
    plain = rt.serve(WSGIServer.for_app("apps.interfaces:wsgi_app"))

    def driver():
        assert fetch(port, "GET", "/page").body == b"wsgi page"
        assert fetch(port, "POST", "/page", body=b"x" * 11).status == 413
        response = fetch(plain, "GET", "/server", headers=[("Host", "example.org:8000")])
        assert response.body == b"example.org 8000"  # SERVER_NAME/PORT from Host without server=
        assert fetch(port, "GET", "/server").body == f"{LOCALHOST} {port}".encode()

    rt.run(driver)


def test_serve_app_errors():
    with pytest.raises(AppError, match="wsgi_app is not an ASGI 3 application"):
        serve_app("apps.interfaces:wsgi_app", LOCALHOST, 0, interface="asgi")
    with pytest.raises(TypeError, match="unknown attributes: colour"):
        WSGIServer.for_app("apps.interfaces:wsgi_app", colour="blue")
    with pytest.raises(AppError, match="MODULE:ATTR"):
        WSGIServer.for_app("apps.interfaces")


@pytest.mark.skipif(expected_mode() != "interpreters", reason="an app object crosses nothing in this mode")
def test_serve_app_of_an_object_that_cannot_cross_says_what_to_give():
    from apps.flask_app import app

    with pytest.raises(
        AppError,
        match=r"<Flask 'apps.flask_app'> cannot cross to the workers' interpreters .* "
        r"give it as \"module:attr\"",
    ):
        serve_app(app, LOCALHOST, 0)


# ---- diagnostics: extensions that refuse subinterpreters or enable the GIL ---

LEGACY_EXTENSION = r"""
#include <Python.h>
/* Single-phase init, no Py_mod_gil slot: refuses subinterpreters with
 * their own GIL, and enables the GIL on a free-threaded build. */
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "px_legacy_ext", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_px_legacy_ext(void) { return PyModule_Create(&def); }
"""

LEGACY_APP = """
import px_legacy_ext

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"legacy"]
"""


@pytest.fixture(scope="module")
def legacy_app(tmp_path_factory):
    """A directory holding px_legacy_ext (compiled here) and legacy_app.py."""
    directory = tmp_path_factory.mktemp("legacy")
    (directory / "px_legacy_ext.c").write_text(LEGACY_EXTENSION)
    (directory / "legacy_app.py").write_text(LEGACY_APP)
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0]
    target = directory / ("px_legacy_ext" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            f"-I{sysconfig.get_paths()['include']}",
            "-o",
            str(target),
            str(directory / "px_legacy_ext.c"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return directory


def _legacy_env(directory):
    return {"PYTHONPATH": str(directory), "PYPARALLEL_MODE": ""}


@pytest.mark.skipif(FREE_THREADED, reason="mode interpreters needs a GIL build")
def test_an_extension_refusing_subinterpreters_is_named_in_one_line(legacy_app):
    result = _run_cli("--app", "legacy_app:app", "--mode", "interpreters", env=_legacy_env(legacy_app))
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        "python -m pyparallel.http.server: --app legacy_app:app: the extension module px_legacy_ext does not "
        "support subinterpreters, and in mode interpreters every worker imports the app in its own; run it with "
        "--mode threads (on a free-threaded Python) or --mode gil"
    )


@pytest.mark.skipif(FREE_THREADED, reason="a GIL build")
def test_the_same_app_runs_in_mode_gil(legacy_app, tmp_path):
    server = AppServer("legacy_app:app", tmp_path, "--mode", "gil", env=_legacy_env(legacy_app))
    try:
        assert server.get("/").body == b"legacy"
    finally:
        server.kill()


@pytest.mark.skipif(not FREE_THREADED or gil_enabled(), reason="needs a free-threaded build running without the GIL")
def test_an_import_enabling_the_gil_switches_to_mode_gil(legacy_app, tmp_path):
    server = AppServer("legacy_app:app", tmp_path, env=_legacy_env(legacy_app))
    try:
        assert server.info["mode"] == "gil"
        assert server.get("/").body == b"legacy"
        assert (
            "python -m pyparallel.http.server: importing legacy_app:app enabled the GIL: px_legacy_ext did not "
            "declare that it can run without it (CPython then runs one thread at a time); the server runs in mode "
            "gil from now on"
        ) in server.log()
    finally:
        server.kill()


@pytest.mark.skipif(not FREE_THREADED or gil_enabled(), reason="needs a free-threaded build running without the GIL")
def test_an_import_enabling_the_gil_refuses_mode_threads(legacy_app):
    result = _run_cli("--app", "legacy_app:app", "--mode", "threads", env=_legacy_env(legacy_app))
    assert result.returncode == 2, result
    assert "importing legacy_app:app enabled the GIL: px_legacy_ext did not declare" in result.stderr
    assert "so mode threads cannot run Python in parallel; run it with --mode gil" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not FREE_THREADED, reason="the GIL question is one of free-threaded builds")
def test_the_pinned_frameworks_keep_the_gil_disabled():
    code = (
        "import sys, flask, werkzeug, jinja2, markupsafe, itsdangerous, click, blinker, django, asgiref, sqlparse\n"
        "import markupsafe._speedups, django.db.backends.sqlite3.base\n"
        "import starlette.applications, starlette.templating, anyio, fastapi, pydantic, pydantic_core, multipart\n"
        "print(sys._is_gil_enabled())"
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHON_GIL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", result.stderr
