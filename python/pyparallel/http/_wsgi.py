"""WSGI (PEP 3333) applications on pyparallel's HTTP server.

WSGIServer.for_app(app) makes an HttpServer subclass that serves one WSGI
callable; register it like any HttpServer (serve_app and the command line's
--app do). The C layer parses and frames HTTP as for every HttpServer; for
each request, _px_handle builds the environ, calls the app on the worker
that serves the connection, and turns what the app gave into the answer.

One request-response cycle is an _Exchange: it holds the environ, what
start_response was given, and the body so far. Its life, for every
request:
  1. environ built from the request; wsgi.input reads the body as it
     arrives (stream_request_body: the app is called once the head is
     complete, and a read waits for the client, blocking the app's thread
     as any blocking call does), bounded by max_body_size;
  2. app(environ, start_response) called: the app may call write();
  3. the iterable it returned consumed through _respond, the one place
     where body data leaves the app: a list or tuple (what most apps
     return), or an iterable whose first piece of body has the whole
     Content-Length (a framework's response object), is joined and sent
     whole with its Content-Length; any other iterable is streamed as it
     produces (chunked, or with the app's Content-Length), at the pace the
     client reads: _respond takes its first piece of body (the app's
     status is known by then, and a failure there is still a 500) and
     hands the C layer a generator of the rest;
  4. the iterable's close() called whatever happened (a failing app, a
     failing close(), a bad status or header, the client going away in the
     middle of a streamed body), once the answer is done.
An app that breaks the protocol (start_response
twice without exc_info, a non-iterable, a str body, a header with a line
break, an exception from the app or its iterator) is answered 500, with
its traceback in the "pyparallel" logger; the connection goes on serving.

A WSGI app is synchronous: one that blocks (a database call) blocks its
worker's thread, and the engine hands that worker's other connections to
a spare thread, as for any blocking handler.

In mode interpreters each worker imports the app in its own interpreter:
the subclass crosses as a recipe (pyparallel._interp.class_recipe) whose
_AppRef names the app by "module:attr", or by module and qualified name.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat

from .. import _core
from ._adapter import AppServer, file_answer
from ._request import RequestBodyError, unquote_to_bytes
from ._response import INTERNAL_ERROR, body_failed

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType
    from typing import Any, ClassVar

    from ._request import Request
    from ._response import Wire

    type ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
    type Write = Callable[[bytes], None]

_log = logging.getLogger("pyparallel")

_STATUS = re.compile(r"([1-9][0-9][0-9])(?: [^\r\n\0]*)?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LINE_BREAK = re.compile(r"[\r\n\0]")


class FileWrapper:
    """wsgi.file_wrapper: an iterable over a file-like object's blocks. When
    the object is a real file read from its start, the response is sent
    from the file with sendfile instead (see _Exchange._file_answer)."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.blksize)
            if not block:
                return
            yield block


class _Errors:
    """wsgi.errors: each line the app writes becomes a record of the
    "pyparallel" logger (what is left without a newline, at flush())."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            _log.error("WSGI app: %s", line)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            _log.error("WSGI app: %s", self._pending)
            self._pending = ""


def _latin1(raw_path: str) -> str:
    """PATH_INFO: the raw path percent-decoded to bytes, read as Latin-1 (the
    PEP's "native string" of bytes from the wire)."""
    if "%" not in raw_path:
        return raw_path
    return unquote_to_bytes(raw_path).decode("latin-1")


def _status_code(status: object) -> int:
    if not isinstance(status, str):
        raise TypeError(f"the WSGI status must be a str like '200 OK', not {type(status).__name__}")
    found = _STATUS.fullmatch(status)
    if found is None or not 200 <= int(found.group(1)) <= 599:
        raise ValueError(f"invalid WSGI status {status!r}: a final status is '200 OK' .. '599 ...'")
    return int(found.group(1))


class _Exchange:
    """One request and its response; see the module's docstring."""

    __slots__ = ("server", "request", "errors", "status", "fields", "length", "sent", "chunks")

    def __init__(self, server: WSGIServer, request: Request) -> None:
        self.server = server
        self.request = request
        self.errors = _Errors()
        self.status: int | None = None  # once start_response was called
        self.fields: list[tuple[str, str]] = []
        self.length: int | None = None  # the app's Content-Length
        self.sent = False  # whether body data was given: the head counts as sent
        self.chunks: list[bytes] = []

    def environ(self) -> dict[str, Any]:
        request = self.request
        server = self.server
        client = request.client
        # A trusted proxy's X-Forwarded-Proto (or Forwarded proto=) says
        # https: the C layer set request.scheme (forwarded_allow_ips).
        scheme = "https" if request.scheme == "https" else server.url_scheme
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": _latin1(request.raw_path),
            "QUERY_STRING": request.query_string,
            "SERVER_PROTOCOL": request.version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            # Read as it arrives, not buffered whole: a read may wait for
            # the client. It ends with the body (chunked ones too), hence
            # input_terminated.
            "wsgi.input": request.reader(),
            "wsgi.input_terminated": True,
            "wsgi.errors": self.errors,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }
        # Over a Unix domain socket the peer has no address: REMOTE_ADDR is
        # "" and REMOTE_PORT is left out, as gunicorn does. A trusted
        # proxy's X-Forwarded-For is already in request.client.
        if client is None:
            environ["REMOTE_ADDR"] = ""
        else:
            environ["REMOTE_ADDR"] = client[0]
            environ["REMOTE_PORT"] = str(client[1])
        for name, value in request.header_fields:
            key = name.upper()
            # "X_Forwarded_For" would land on the same key as
            # "X-Forwarded-For", which a proxy in front may have set: a
            # header whose name has an underscore is dropped, as gunicorn,
            # nginx and Apache do.
            if "_" in key:
                continue
            key = key.replace("-", "_")
            if key == "CONTENT_LENGTH" or key == "CONTENT_TYPE":
                # The C layer refused a repeated or malformed length.
                environ[key] = value
                continue
            key = "HTTP_" + key
            previous = environ.get(key)
            if previous is None:
                environ[key] = value
            else:
                environ[key] = previous + ("; " if key == "HTTP_COOKIE" else ", ") + value
        server_name = server.server_name
        if server_name is None:
            host = environ.get("HTTP_HOST", "")
            name, _, port = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
            environ["SERVER_NAME"] = name or "localhost"
            environ["SERVER_PORT"] = port or ("443" if scheme == "https" else "80")
        else:
            environ["SERVER_NAME"] = server_name
            environ["SERVER_PORT"] = server.server_port
        return environ

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None) -> Write:
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback's frames
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        code = _status_code(status)
        fields, length = self._check_headers(headers)
        self.status, self.fields, self.length = code, fields, length
        self.chunks = []  # what write() gave before an exc_info restart is dropped
        return self.write

    @staticmethod
    def _check_headers(headers: object) -> tuple[list[tuple[str, str]], int | None]:
        if not isinstance(headers, list):
            raise TypeError(
                f"WSGI response headers must be a list of (name, value) tuples, not {type(headers).__name__}"
            )
        fields = []
        length = None
        for item in headers:
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError(f"WSGI response headers must be (name, value) tuples, not {item!r}")
            name, value = item
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"WSGI response header {item!r}: name and value must be str")
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid WSGI response header name {name!r}")
            if _LINE_BREAK.search(value):
                raise ValueError(f"WSGI response header {name} has a line break or NUL in its value")
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"WSGI response header {name}: its value is not Latin-1 (PEP 3333)") from None
            lowered = name.lower()
            if lowered == "content-length":
                if not value.strip().isdigit():
                    raise ValueError(f"invalid Content-Length {value!r} from the WSGI app")
                length = int(value)
            elif lowered == "transfer-encoding":
                raise ValueError("a WSGI app must not set Transfer-Encoding (hop-by-hop; the server frames bodies)")
            elif lowered != "date":  # the C layer writes Date itself
                fields.append(item)
        return fields, length

    def write(self, data: bytes) -> None:
        if self.status is None:
            raise RuntimeError("write() called before start_response()")
        self._body(data)

    def _body(self, data: object) -> None:
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError(f"a WSGI body is made of bytes, not {type(data).__name__}")
            data = bytes(data)
        if data:
            if self.status is None:
                raise RuntimeError("the WSGI app gave body data before calling start_response()")
            self.sent = True
            self.chunks.append(data)

    def run(self) -> Wire:
        environ = self.environ()
        result = None
        streamed = False
        try:
            result = self.server._px_app.app(environ, self.start_response)
            answer = self._respond(result)
            streamed = isinstance(answer, tuple) and len(answer) == 4
            return answer
        except Exception as error:
            return self._failed(error)
        finally:
            if not streamed:  # else the stream's generator closes it
                self._close(result)
            self.errors.flush()

    def _respond(self, result: Any) -> Wire:
        """What the C layer sends for the app's iterable. The body is
        consumed here and nowhere else: a list or tuple is joined, any
        other iterable streamed (see the top of this file)."""
        if isinstance(result, FileWrapper) and self.status == 200:
            answer = self._file_answer(result.filelike)
            if answer is not None:
                return answer
        try:
            chunks = iter(result)
        except TypeError:
            raise TypeError(f"the WSGI app returned {type(result).__name__}, not an iterable of bytes") from None
        if not isinstance(result, (list, tuple)):
            # The first piece of body (or the end) decides the head.
            for chunk in chunks:
                self._body(chunk)
                if self.chunks:
                    break
            else:
                chunks = iter(())
            if self.status is None:
                raise RuntimeError("the WSGI app returned without calling start_response()")
            # A body that its Content-Length says is complete (a framework's
            # response, which its iterator gives in one piece) is sent whole,
            # head and body at once, after the rest of the iterable (nothing
            # more, by the PEP; cut to the length if it gives more).
            length = self.length
            if self.chunks and (length is None or sum(map(len, self.chunks)) < length):
                return (self.status, self.fields, self._rest(chunks, result), length)
        for chunk in chunks:
            self._body(chunk)
        if self.status is None:
            raise RuntimeError("the WSGI app returned without calling start_response()")
        body = b"".join(self.chunks)
        if self.length is not None and len(body) != self.length:
            if len(body) < self.length and self.request.method != "HEAD":
                raise ValueError(f"the WSGI app's Content-Length is {self.length}, but it gave {len(body)} bytes")
            body = body[: self.length]  # the PEP: never more than Content-Length
        return (self.status, self.fields, body)

    def _rest(self, chunks: Iterator[object], result: object) -> Iterator[bytes]:
        """The streamed body: what write() and the iterable have given so
        far, then the rest of the iterable, piece by piece; the iterable's
        close() when it ends, fails or the client goes away (the C layer
        closes this generator then)."""
        try:
            while True:
                pending, self.chunks = self.chunks, []
                yield from pending
                for chunk in chunks:
                    self._body(chunk)
                    if self.chunks:
                        break
                else:
                    pending, self.chunks = self.chunks, []
                    yield from pending
                    return
        finally:
            self._close(result)
            self.errors.flush()

    def _file_answer(self, filelike: Any) -> _core.FileResponse | None:
        """A FileResponse (sendfile) for a real file read from its start,
        else None (the wrapper is iterated)."""
        try:
            path = filelike.name
            if not isinstance(path, str) or filelike.tell() != 0:
                return None
            opened = os.fstat(filelike.fileno())
            named = os.stat(path)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            return None
        if self.length is not None and self.length != opened.st_size:
            return None
        return file_answer(path, self.fields)

    def _failed(self, error: BaseException) -> Wire:
        request = self.request
        if isinstance(error, RequestBodyError):
            return body_failed(f"WSGI app {self.server._px_app.name}", request, error)
        _log.error(
            "WSGI app %s failed on %s %s",
            self.server._px_app.name,
            request.method,
            request.target,
            exc_info=error,
        )
        return INTERNAL_ERROR

    def _close(self, result: object) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception as error:
            _log.error("close() of the WSGI app %s's response failed", self.server._px_app.name, exc_info=error)


class WSGIServer(AppServer):
    """The HttpServer that serves a WSGI app; make one with for_app().

    Class attributes, besides HttpServer's (root, the limits):
        server_name, server_port  SERVER_NAME and SERVER_PORT (str); None:
                                  from the Host header
        url_scheme                wsgi.url_scheme ("http")
    """

    _px_interface: ClassVar[str] = "WSGI"
    stream_request_body: ClassVar[bool] = True

    def _px_handle(self, request: Request) -> Wire:
        return self._px_static_file(request) or _Exchange(self, request).run()
