"""WSGI apps for the PEP 3333 conformance tests (test_wsgi.py), behind one
router app so that one server serves them all: `--app apps.conformance:app`.

Each route is an app of its own, chosen by the first segment of PATH_INFO.
What a test must see from inside the server (close() having been called,
in every mode, also in a worker's interpreter) is appended to the file
named by WSGI_TEST_LOG: one line per event.
"""

import io
import json
import os
import sys
import time
import warnings
from wsgiref.validate import WSGIWarning, validator

import pyparallel as px

# A validator warning is a failure of the server under test, not a note.
warnings.simplefilter("error", WSGIWarning)

CGI_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
)


def note(line):
    with open(os.environ["WSGI_TEST_LOG"], "a") as log:
        log.write(line + "\n")


def text(start_response, body, status="200 OK", extra=()):
    body = body.encode("utf-8") if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *extra])
    return [body]


def _echo(environ, start_response):
    stream = environ["wsgi.input"]
    how = environ["QUERY_STRING"]
    if how == "lines":
        body = b"|".join(stream.readlines())
    elif how == "iterate":
        body = b"|".join(line for line in stream)
    elif how == "chunks":
        body = b"|".join(iter(lambda: stream.read(3), b""))
    else:
        first = stream.readline()
        body = first + b"+" + stream.read(int(environ.get("CONTENT_LENGTH") or 0) - len(first))
    environ["wsgi.errors"].write("echoed a body\n")
    environ["wsgi.errors"].flush()
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


validated = validator(_echo)


def environ_dump(environ, start_response):
    fields = {key: value for key, value in environ.items() if key in CGI_KEYS or key.startswith("HTTP_")}
    wsgi = {
        "version": list(environ["wsgi.version"]),
        "url_scheme": environ["wsgi.url_scheme"],
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "run_once": environ["wsgi.run_once"],
        "input_read": all(hasattr(environ["wsgi.input"], name) for name in ("read", "readline", "readlines")),
        "errors": all(hasattr(environ["wsgi.errors"], name) for name in ("write", "writelines", "flush")),
        "file_wrapper": callable(environ["wsgi.file_wrapper"]),
        "types": sorted({type(value).__name__ for key, value in environ.items() if key.isupper()}),
    }
    # PATH_INFO as Latin-1 code points, so that JSON carries it unchanged.
    fields["PATH_INFO_BYTES"] = list(environ["PATH_INFO"].encode("latin-1"))
    body = json.dumps({"fields": fields, "wsgi": wsgi}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def exc_info_before_body(environ, start_response):
    """The error page replaces the first status: allowed until body data."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise KeyError("lookup failed")
    except KeyError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Error", "yes")], sys.exc_info())
    return [b"sorry"]


def exc_info_after_body(environ, start_response):
    """Once body data was given, start_response re-raises exc_info."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial")
    try:
        raise KeyError("too late")
    except KeyError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    note("exc_info after body: start_response returned")
    return [b"never"]


def start_response_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"never"]


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(bytearray(b"then "))
    return [b"iterated"]


class Tracked:
    """An iterable whose close() is noted; raises mid-body when asked, and
    calls start_response itself when given it (as a generator app does)."""

    def __init__(self, name, fail_after=None, delay=0.0, start=None):
        self.name = name
        self.fail_after = fail_after
        self.delay = delay
        self.start = start

    def __iter__(self):
        if self.start is not None:
            self.start[0]("200 OK", self.start[1])
        for index in range(3):
            if self.fail_after == index:
                raise RuntimeError(f"{self.name}: failing mid-body")
            if self.delay:
                time.sleep(self.delay)
            yield b"part%d " % index

    def close(self):
        note(f"closed {self.name}")


def close_tracked(environ, start_response):
    how = environ["QUERY_STRING"]
    headers = [("Content-Type", "text/plain")]
    if how == "ok":
        start_response("200 OK", headers)
        return Tracked("ok")
    if how == "mid-body":
        start_response("200 OK", headers)
        return Tracked("mid-body", fail_after=1)
    if how == "bad-header":
        return Tracked("bad-header", start=(start_response, [("X-Bad", "a\r\nInjected: yes")]))
    if how == "slow":  # the client goes away meanwhile
        start_response("200 OK", headers)
        return Tracked("slow", delay=0.2)
    raise ValueError(how)


def file_wrapper(environ, start_response):
    path = os.environ["WSGI_TEST_FILE"]
    how = environ["QUERY_STRING"]
    if how == "memory":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory " * 100), 64)
    handle = open(path, "rb")
    if how == "offset":
        handle.seek(10)
    start_response("200 OK", [("Content-Type", "application/x-test"), ("X-From", "wrapper")])
    return environ["wsgi.file_wrapper"](handle, 4096)


def content_length(environ, start_response):
    declared = environ["QUERY_STRING"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", declared)])
    return [b"abc", b"def"]


def non_iterable(environ, start_response):
    start_response("200 OK", [])
    return 42


def str_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["not bytes"]


def no_start_response(environ, start_response):
    return [b"who am I"]


def raises(environ, start_response):
    raise RuntimeError("the app failed before responding")


def cpu(environ, start_response):
    """Pure-Python work of the size the query asks for."""
    total = 0
    for i in range(int(environ["QUERY_STRING"])):
        total += i * i % 7
    return text(start_response, str(total))


def blocking(environ, start_response):
    time.sleep(float(environ["QUERY_STRING"]))
    return text(start_response, "slept")


def whoami(environ, start_response):
    """The serving worker, told by its asyncio loop (one per worker): a
    connection stays on the worker that accepted it, though a worker may
    move to another thread (a blocked or computing callback's is handed
    off)."""
    return text(start_response, str(id(px.worker_loop())))


def streamed(environ, start_response):
    """A generator body of /stream?N pieces of 64 KiB, with the app's
    Content-Length when asked (/stream?N&length)."""
    query = environ["QUERY_STRING"].split("&")
    pieces = int(query[0])
    fields = [("Content-Type", "application/octet-stream")]
    if "length" in query:
        fields.append(("Content-Length", str(pieces << 16)))
    start_response("200 OK", fields)
    return (bytes([index % 256]) * (1 << 16) for index in range(pieces))


def complete_first(environ, start_response):
    """A generator whose first piece is its whole Content-Length (as a
    framework's response iterator gives); /complete?extra then gives more
    bytes, which the PEP says are not sent. Its note after the body comes
    0.3 s later: a server that sends the response whole notes it before
    the client has the response; one that streams it, after."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])

    def body():
        yield b"whole"
        time.sleep(0.3)
        note(f"after the body ?{environ['QUERY_STRING']}")
        if environ["QUERY_STRING"] == "extra":
            yield b" and more"

    return body()


ROUTES = {
    "complete": complete_first,
    "validated": validated,
    "environ": environ_dump,
    "exc-info-before-body": exc_info_before_body,
    "exc-info-after-body": exc_info_after_body,
    "start-response-twice": start_response_twice,
    "write": write_callable,
    "close": close_tracked,
    "file": file_wrapper,
    "content-length": content_length,
    "non-iterable": non_iterable,
    "str-body": str_body,
    "no-start-response": no_start_response,
    "raises": raises,
    "cpu": cpu,
    "sleep": blocking,
    "whoami": whoami,
    "stream": streamed,
}


def app(environ, start_response):
    first = environ["PATH_INFO"].split("/")[1]
    route = ROUTES.get(first)
    if route is None:
        return text(start_response, "no such route", "404 Not Found")
    return route(environ, start_response)
