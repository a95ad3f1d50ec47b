"""The apps of test_http_body_stream.py, in a module of their own: mode
"interpreters" imports them in each worker, and the test module imports
hypothesis, which worker interpreters cannot load."""

import asyncio
import hashlib
import json

from conftest import FileLogged
from pyparallel.http import HttpServer, RequestBodyError, WSGIServer, route

MIB = 1 << 20
BLOCK = bytes(range(256)) * 256  # 64 KiB


def digest(data):
    return hashlib.sha256(data).hexdigest()


class Streamed(HttpServer, FileLogged):
    stream_request_body = True
    max_body_size = 256 * MIB

    @route("/astream", methods=("POST",))
    async def astream(self, request):
        sha = hashlib.sha256()
        length = chunks = 0
        async for chunk in request.stream():
            sha.update(chunk)
            length += len(chunk)
            chunks += 1
        return {"length": length, "sha256": sha.hexdigest(), "chunks": chunks}

    @route("/reader", methods=("POST",))
    def reader(self, request):
        body = request.reader()
        sha = hashlib.sha256()
        sizes = set()
        while piece := body.read(10_000):
            sizes.add(len(piece))
            sha.update(piece)
        return {"sha256": sha.hexdigest(), "largest": max(sizes, default=0)}

    @route("/lines", methods=("POST",))
    def lines(self, request):
        body = request.reader()
        first = body.readline()
        second = body.readline(3)
        rest = body.readlines()
        return {"first": first.decode(), "second": second.decode(), "rest": [line.decode() for line in rest]}

    @route("/iterate", methods=("POST",))
    def iterate(self, request):
        return {"lines": [line.decode() for line in request.reader()]}

    @route("/body", methods=("POST",))
    def body(self, request):
        return {"length": len(request.body), "sha256": digest(request.body), "again": request.body is request.body}

    @route("/twice", methods=("POST",))
    async def twice(self, request):
        stream = request.stream()
        errors = []
        for other in (request.stream, request.reader, lambda: request.body):
            try:
                other()
            except RuntimeError as error:
                errors.append(str(error))
        data = b"".join([chunk async for chunk in stream])
        return {"errors": errors, "data": data.decode()}

    @route("/late", methods=("POST",))
    async def late(self, request):
        await asyncio.sleep(0.3)
        return b"".join([chunk async for chunk in request.stream()])

    @route("/early", methods=("POST",))
    def early(self, request):
        return "early"

    @route("/failing", methods=("POST",))
    def failing(self, request):
        self.log("reading")
        try:
            request.reader().read()
        except RequestBodyError as error:
            self.log(f"error {error.status}")
            raise
        return "read"

    @route("/afailing", methods=("POST",))
    async def afailing(self, request):
        self.log("reading")
        try:
            async for _ in request.stream():
                pass
        except RequestBodyError as error:
            self.log(f"error {error.status}")
            raise
        return "read"

    @route("/echo", methods=("POST",))
    def echo(self, request):
        body = request.reader()

        def pieces():
            while piece := body.read(65536):
                yield piece

        return pieces()

    def hello(self, request):
        return "hello"


class Limited(Streamed):
    max_body_size = 100_000
    body_timeout = 0.3


class Buffered(HttpServer):
    @route("/astream", methods=("POST",))
    async def astream(self, request):
        chunks = [chunk async for chunk in request.stream()]
        data = b"".join(chunks)
        return {"length": len(data), "sha256": digest(data), "chunks": len(chunks)}

    def hello(self, request):
        return "hello"

    @route("/reader", methods=("POST",))
    def reader(self, request):
        data = request.reader().read()
        try:
            request.stream()
        except RuntimeError as error:
            return {"data": data.decode(), "again": str(error), "body": request.body.decode()}
        return "stream() twice was allowed"


def incremental_app(environ, start_response):
    """Reads wsgi.input in pieces; notes in the file its query names when it
    saw the first piece."""
    stream = environ["wsgi.input"]
    first = stream.read(1024)
    with open(environ["QUERY_STRING"], "a") as log:
        log.write(f"first {len(first)}\n")
    rest = stream.read()
    body = json.dumps(
        {
            "length": len(first) + len(rest),
            "sha256": digest(first + rest),
            "content_length": environ.get("CONTENT_LENGTH"),
            "terminated": environ["wsgi.input_terminated"],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


IncrementalWSGI = WSGIServer.for_app(incremental_app)
