"""What a handler returns, and its conversion to what the C layer sends.

The C layer takes either a tuple (status, header fields, body) — it adds
Date, Content-Length and Connection itself — or a _core.FileResponse, which
it answers from the file (sendfile, ETag, ranges, 304, 416). A handler may
return:
    str                 200, text/plain; charset=utf-8
    bytes-like          200, text/plain (PyParallel's and TechEmpower's
                        convention for plaintext)
    dict or list        200, application/json (compact, UTF-8)
    Response            its status, fields and body (body converted as above
                        when no Content-Type field is given)
    Response.file(...)  a file
    an iterator         a streamed body (sync or async; items bytes-like or
                        str), chunked, text/plain; in a Response, it may
                        come with a Content-Length field
    an awaitable        (an async def handler) its outcome, once ready
    the HttpStream      of the request (HttpProtocol._px_stream()): the
                        answer is what was done through it
    a WebSocketAccept   (a @websocket route's) the upgrade to a WebSocket
Anything else is a TypeError, answered like any failing handler (500).
Streams, awaitables and HttpStream objects pass through to_wire as they
are; the C layer runs them (src/binding/http/stream.c), with the
coroutines below for async bodies and awrite().

The fixed answers (404, 405, 500) and the header lists shared by every
response are built once and made immortal (px.eternalize), so that workers
answering at once do not contend on their reference counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from json import encoder as _json_encoder

from .. import _core
from . import _static
from ._request import RequestBodyError

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable
    from typing import Any, NoReturn

    # A body to send, as the C layer takes it.
    type Body = str | bytes | bytearray | memoryview
    # The header fields a handler gives: a mapping or (name, value) pairs.
    type Fields = Mapping[str, str] | Iterable[tuple[str, str]]
    # A body streamed as it is produced.
    type Stream = Iterator[Body] | AsyncIterator[Body]
    # What the C layer sends: (status, fields, body), a streamed body with
    # its length (or None: chunked), a file, or what passes through as it
    # is (a stream, an iterator or awaitable the C layer runs).
    type Wire = (
        tuple[int, list[tuple[str, str]], Body]
        | tuple[int, list[tuple[str, str]], Stream, int | None]
        | _core.FileResponse
        | _core.HttpStream
        | Stream
        | Awaitable[object]
    )

_json_local = threading.local()
_log = logging.getLogger("pyparallel")


def _not_serializable(obj: object) -> NoReturn:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _new_json_encoder() -> Callable[[object], Iterable[str]]:
    # The C accelerator of the json module, which typeshed does not describe.
    c_make_encoder = _json_encoder.c_make_encoder  # type: ignore[attr-defined]
    if c_make_encoder is None:
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).iterencode
    # What JSONEncoder.encode builds for every call, built once: markers,
    # default, string encoder, indent, key and item separators, sort_keys,
    # skipkeys, allow_nan.
    encode = c_make_encoder(
        None, _not_serializable, _json_encoder.encode_basestring, None, ":", ",", False, False, True
    )
    return lambda obj: encode(obj, 0)


def _dumps(obj: object) -> str:
    """json.dumps(obj, ensure_ascii=False, separators=(",", ":")), faster.

    On free-threaded CPython json.dumps and a shared JSONEncoder cost 8 to
    10 us per call on two busy workers (the encoder is rebuilt for every
    call and its attributes are read from an object every thread shares);
    one C encoder per thread, built once, costs about 1 us.
    """
    try:
        encode = _json_local.encode
    except AttributeError:
        encode = _json_local.encode = _new_json_encoder()
    return "".join(encode(obj))


TEXT_UTF8 = "text/plain; charset=utf-8"
TEXT = "text/plain"
JSON = "application/json"

TEXT_UTF8_FIELDS = _core.eternalize([("Content-Type", TEXT_UTF8)])
TEXT_FIELDS = _core.eternalize([("Content-Type", TEXT)])
JSON_FIELDS = _core.eternalize([("Content-Type", JSON)])
HTML_FIELDS = _core.eternalize([("Content-Type", "text/html; charset=utf-8")])

NOT_FOUND = _core.eternalize((404, TEXT_UTF8_FIELDS, b"Not Found\n"))
INTERNAL_ERROR = _core.eternalize((500, TEXT_UTF8_FIELDS, b"Internal Server Error\n"))

# The C layer writes these itself; a handler giving one is a mistake (the C
# layer would drop it silently). Connection is allowed: "close" in it
# closes the connection after the response.
FRAMING_FIELDS = ("content-length", "transfer-encoding", "date")
# A field name is a token (RFC 9110); a value must not break the line.
_NOT_TOKEN = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_LINE_BREAK = re.compile(r"[\r\n\0]")


def body_failed(who: str, request: _core.HttpRequest, error: RequestBodyError) -> Wire:
    """The answer to a handler that failed because its request's body could
    not be read: the error's status, logged in one line (no traceback: the
    client caused it)."""
    _log.info("%s: the body of %s %s failed: %s", who, request.method, request.target, error)
    return (error.status, TEXT_UTF8_FIELDS, f"{error}\n".encode())


def method_not_allowed(allow: str) -> Wire:
    """The 405 answer, with Allow listing the methods the path serves."""
    return (405, [("Allow", allow), ("Content-Type", TEXT_UTF8)], b"Method Not Allowed\n")


def check_field(name: object, value: object) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"header fields are (str, str) pairs, not ({type(name).__name__}, {type(value).__name__})")
    if not name or _NOT_TOKEN.search(name):
        raise ValueError(f"invalid header field name {name!r}")
    if _LINE_BREAK.search(value):
        raise ValueError(f"header field {name} has a line break or NUL in its value")
    if name.lower() in FRAMING_FIELDS:
        raise ValueError(f"header field {name} is written by the server; do not give it")


def normalise_fields(headers: Fields | None) -> list[tuple[str, str]]:
    """A list of (name, value) pairs from None, a mapping, or pairs; checked
    so that a bad field fails in the handler that gave it."""
    if headers is None:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    fields = []
    for item in items:
        name, value = item
        check_field(name, value)
        fields.append((name, value))
    return fields


def _body_and_type(body: Any) -> tuple[Body, str]:
    """(body to send, its default Content-Type) for a handler's value."""
    kind = type(body)
    if kind is bytes:
        return body, TEXT
    if kind is str:
        return body, TEXT_UTF8
    if kind is dict or kind is list:
        return _dumps(body), JSON
    if isinstance(body, (bytes, bytearray, memoryview)):
        return body, TEXT
    if isinstance(body, str):
        return str(body), TEXT_UTF8
    if isinstance(body, (dict, list)):
        return _dumps(body), JSON
    raise _unsendable(body)


_SENDABLE = (str, bytes, bytearray, memoryview, dict, list)
_STREAMS = (Iterator, AsyncIterator)


def is_stream(value: object) -> bool:
    """Whether value is a body to stream: a sync or an async iterator."""
    return isinstance(value, _STREAMS)


def _stream_fields(headers: Fields | None) -> tuple[list[tuple[str, str]], int | None]:
    """(fields, Content-Length or None) of a Response with a streamed body:
    the one framing field it may give is Content-Length."""
    if headers is None:
        return [], None
    items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
    fields: list[tuple[str, str]] = []
    length: int | None = None
    for name, value in items:
        if isinstance(name, str) and name.lower() == "content-length":
            if not isinstance(value, (str, int)) or not str(value).isdigit():
                raise ValueError(f"invalid Content-Length {value!r}")
            length = int(value)
            continue
        fields.append((name, value))
    return normalise_fields(fields), length


def _unsendable(value: object) -> TypeError:
    return TypeError(f"cannot send {type(value).__name__}: return str, bytes, dict, list, Response or Response.file()")


class Response:
    """A response with full control: body (str, bytes-like, dict or list,
    converted like a handler's return value, or a sync or async iterator of
    bytes-like or str, streamed), status (200..599) and extra header fields
    (a mapping or (name, value) pairs). A Content-Type field given here
    replaces the one derived from the body. With a streamed body, a
    Content-Length field sends it with that length rather than chunked."""

    __slots__ = ("body", "status", "headers", "length")
    body: Body | dict[str, Any] | list[Any] | Iterator[Body] | AsyncIterator[Body]
    status: int
    headers: list[tuple[str, str]]
    length: int | None

    def __init__(
        self, body: Body | dict[str, Any] | list[Any] = b"", status: int = 200, headers: Fields | None = None
    ) -> None:
        if type(status) is not int:
            raise TypeError(f"status must be an int, not {type(status).__name__}")
        if not 200 <= status <= 599:
            raise ValueError(f"status must be within 200..599, not {status}")
        self.length = None
        if is_stream(body):
            self.headers, self.length = _stream_fields(headers)
        elif not isinstance(body, _SENDABLE):
            raise _unsendable(body)  # here, rather than once the handler has returned
        else:
            self.headers = normalise_fields(headers)
        self.body = body
        self.status = status

    @staticmethod
    def file(
        path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
        content_type: str | None = None,
        status: int = 200,
        headers: Fields | None = None,
    ) -> _core.FileResponse:
        """The file at path as the response, sent by the C layer with
        sendfile; it answers ETag/If-None-Match/If-Modified-Since (304) and
        a byte range (206, 416) itself. content_type defaults to the guess
        of mimetypes from the name. A missing file is answered 404."""
        path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if content_type is None:
            content_type = _static.content_type(path)
        return _core.FileResponse(path, content_type, status=status, headers=normalise_fields(headers) or None)

    def wire(self) -> Wire:
        """The (status, fields, body) tuple for the C layer; a streamed
        body's is (status, fields, body, length)."""
        if isinstance(self.body, _STREAMS):
            fields = self.headers
            if not any(name.lower() == "content-type" for name, _ in fields):
                fields = [("Content-Type", TEXT), *fields]
            return (self.status, fields, self.body, self.length)
        body, default_type = _body_and_type(self.body)
        fields = self.headers
        if not len(body):
            return (self.status, fields, body)
        for name, _ in fields:
            if name.lower() == "content-type":
                return (self.status, fields, body)
        return (self.status, [("Content-Type", default_type), *fields], body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r}>"


def to_wire(result: Any) -> Wire:
    """What the C layer sends for a handler's return value."""
    kind = type(result)
    if kind is bytes:
        return (200, TEXT_FIELDS, result)
    if kind is str:
        return (200, TEXT_UTF8_FIELDS, result)
    if kind is dict or kind is list:
        return (200, JSON_FIELDS, _dumps(result))
    if isinstance(result, Response):
        return result.wire()
    if isinstance(result, _core.FileResponse):
        return result
    if isinstance(result, _PASS_THROUGH) or hasattr(type(result), "__await__"):
        return result  # type: ignore[no-any-return]  # (a stream or an awaitable)
    body, content_type = _body_and_type(result)
    return (200, [("Content-Type", content_type)], body)


# What the C layer takes as it is (see the top of this file).
_PASS_THROUGH = (_core.HttpStream, _core.WebSocketAccept, Iterator, AsyncIterator)


async def stream_async_body(
    stream: _core.HttpStream,
    status: int,
    fields: list[tuple[str, str]] | None,
    body: AsyncIterator[Body],
    length: int | None,
) -> _core.HttpStream:
    """Streams an async iterator through the request's stream (a task of
    the worker loop; returns the stream, which answers the request). Its
    first item is awaited before the head goes, so that a body failing at
    once is answered 500 like any failing handler; after the head, a
    failure is logged and the connection closed. aclose() always runs."""
    if fields is None:
        fields = TEXT_FIELDS
    try:
        if stream.head_only:
            stream.start(status, fields, length)
            stream.end()
            return stream
        empty = False
        try:
            first = await anext(body)
        except StopAsyncIteration:
            empty = True
        stream.start(status, fields, length)
        try:
            if empty or await stream.awrite(first):
                async for item in body:
                    if not await stream.awrite(item):
                        break
        except Exception:
            _log.error("the streamed body of a request failed after its head was sent", exc_info=True)
            stream.abort()
            return stream
        stream.end()
        return stream
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _wait(register: Callable[[Callable[[], object]], bool]) -> None:
    """Waits, in the running loop, until register(callback) calls back;
    register returns False when there is nothing to wait for."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    if register(lambda: loop.call_soon_threadsafe(_wake, future)):
        await future


async def stream_awrite(stream: _core.HttpStream, data: Body) -> bool:
    """HttpStream.awrite: write, then wait while the stream is full."""
    state = stream._write(data)
    if state == 1:
        await _wait(stream._when_drained)
    return not stream.disconnected


async def stream_wait_disconnected(stream: _core.HttpStream) -> None:
    """HttpStream.wait_disconnected."""
    await _wait(stream._when_disconnected)
