"""The request object a handler receives, and its case-insensitive headers.

The C layer parses each request into a Request: a subclass of
pyparallel._core.HttpRequest, which holds the strings (the target as
received, the path percent-decoded and raw, the header fields as a list of
(name, value) pairs) and makes each on first use. Request adds the parsed
query and the case-insensitive header mapping, also built on first use only.

Query parsing is done here rather than by urllib.parse: it gives the same
results (tested against it), at a fraction of the cost on free-threaded
CPython, where urllib's version runs generators and looks every escape up in
a dict that all threads share.

The body is bytes, read whole by the C layer before the handler runs,
unless the class sets stream_request_body: then a body that did not arrive
with its head reaches the handler while it is still arriving, through a
_core.HttpBody, and stream() (async, on the worker loop) or reader() (a
file whose reads block their thread) read it as it comes; `body` reads it
whole on first use.
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import AsyncIterator, Iterator, Mapping

from .. import _core

# typing is imported for the type checker only: every worker interpreter
# imports this package, and typing would add milliseconds to each.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import overload

    from _typeshed import WriteableBuffer

# The reads of reader() on a streamed body: what its buffer asks for.
_READ_SIZE = 64 * 1024


class RequestBodyError(OSError):
    """A request body that cannot be read to its end: the client went away
    or sent a malformed body (status 400), was too slow (body_timeout,
    min_body_rate: 408), or passed max_body_size (413). The server answers
    with status itself when it can and closes the connection; an answer
    the handler gives after it is dropped."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _whole(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


async def _arriving(body: _core.HttpBody) -> AsyncIterator[bytes]:
    """The chunks of a streamed body as they arrive, awaiting in the
    running loop (the worker's) while none is there."""
    loop = asyncio.get_running_loop()
    while True:
        chunk = body._read()
        if chunk is None:
            future: asyncio.Future[None] = loop.create_future()
            if body._when_readable(functools.partial(loop.call_soon_threadsafe, _wake, future)):
                await future
            continue
        if not chunk:
            return
        yield chunk


class _RawBody(io.RawIOBase):
    """A streamed body as the raw file under reader()'s buffer."""

    def __init__(self, body: _core.HttpBody) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        return self._body.readinto(buffer)


def unquote_to_bytes(text: str) -> bytes:
    """The bytes of text with every %XX escape decoded (a "%" not followed
    by two hex digits stays as it is): urllib.parse.unquote_to_bytes, which
    looks every escape up in a dict that all threads share, a costly thing
    on free-threaded CPython."""
    parts = text.split("%")
    out = [parts[0].encode("utf-8", "surrogateescape")]
    for part in parts[1:]:
        pair = part[:2]
        if len(pair) == 2 and pair.isascii() and pair.isalnum():
            try:
                out.append(bytes.fromhex(pair))
            except ValueError:
                pass
            else:
                out.append(part[2:].encode("utf-8", "surrogateescape"))
                continue
        out.append(b"%")
        out.append(part.encode("utf-8", "surrogateescape"))
    return b"".join(out)


def decode_path(raw_path: str) -> str:
    """The percent-decoded form of a raw request path: UTF-8, an invalid
    sequence becoming U+FFFD (what urllib.parse.unquote gives)."""
    if "%" not in raw_path:
        return raw_path
    return unquote_to_bytes(raw_path).decode("utf-8", "replace")


def parse_query(query_string: str) -> dict[str, list[str]]:
    """urllib.parse.parse_qs(query_string, keep_blank_values=True), in a
    third of its time: {name: [value, ...]}, "+" read as a space, escapes
    decoded, fields without "=" kept with the value ""."""
    result: dict[str, list[str]] = {}
    for field in query_string.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "+" in value:
            value = value.replace("+", " ")
        name = decode_path(name)
        value = decode_path(value)
        values = result.get(name)
        if values is None:
            result[name] = [value]
        else:
            values.append(value)
    return result


class Headers(Mapping[str, str]):
    """The request's header fields as a read-only, case-insensitive mapping.

    headers["content-type"] and headers["Content-Type"] are the same field.
    A field received several times reads as its values joined with ", "
    (RFC 9110's rule for combining field lines); get_all() gives them apart.
    Iteration yields each name once, lower-cased, in order of arrival.
    """

    __slots__ = ("_fields", "_index")
    _fields: list[tuple[str, str]]
    _index: dict[str, list[str]] | None

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._index = None

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._fields:
                index.setdefault(name.lower(), []).append(value)
            self._index = index
        return index

    def __getitem__(self, name: str) -> str:
        values = self._lookup()[name.lower()]
        return values[0] if len(values) == 1 else ", ".join(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    if TYPE_CHECKING:

        @overload
        def get(self, name: str, default: None = None) -> str | None: ...
        @overload
        def get[T](self, name: str, default: str | T) -> str | T: ...

    def get(self, name: str, default: object = None) -> object:
        values = self._lookup().get(name.lower())
        if values is None:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Every value of the field name, in order of arrival ([] if absent)."""
        return list(self._lookup().get(name.lower(), ()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup())

    def __len__(self) -> int:
        return len(self._lookup())

    @property
    def fields(self) -> list[tuple[str, str]]:
        """The fields as received: a list of (name, value) pairs."""
        return list(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Request(_core.HttpRequest):
    """One HTTP request, as a handler sees it.

    method      "GET", "POST", ... (as received: methods are case-sensitive)
    path        the path, percent-decoded ("/a b" for "/a%20b"; UTF-8, an
                invalid sequence read as U+FFFD)
    raw_path    the path as received, not decoded
    target      the request target as received (path and query)
    query_string  what follows "?" in the target, raw ("" when none)
    query       dict of str -> list of str, parsed from query_string
                (as urllib.parse.parse_qs with keep_blank_values=True)
    headers     Headers: a case-insensitive mapping
    header_fields  the header fields as received: a list of (name, value)
    body        bytes (a chunked body arrives decoded); with
                stream_request_body, read whole on first use
    stream()    the body as an async iterator of bytes chunks
    reader()    the body as a binary file
    version     "HTTP/1.1" or "HTTP/1.0"
    keep_alive  True when the connection stays open after the response
    client      the client's (host, port); None over a Unix domain socket,
                which has no network peer (as uvicorn's scope gives). From
                a peer in the class's forwarded_allow_ips, the client its
                X-Forwarded-For or Forwarded field names (port 0 when the
                proxy gives none)
    scheme      "http", or "https" when such a proxy's X-Forwarded-Proto
                or Forwarded proto= says so

    The C layer makes requests itself, for each request it parses; they
    cannot be made from Python. Everything but query and headers is the C
    base's; those two are built on first use and kept in the base's _query
    and _headers members.
    """

    __slots__ = ()
    _query: dict[str, list[str]]
    _headers: Headers

    @property
    def query(self) -> dict[str, list[str]]:
        try:
            return self._query
        except AttributeError:
            query = self._query = parse_query(self.query_string)
            return query

    @property
    def headers(self) -> Headers:
        try:
            return self._headers
        except AttributeError:
            headers = self._headers = Headers(self.header_fields)
            return headers

    def stream(self) -> AsyncIterator[bytes]:
        """The body as an async iterator of bytes chunks (a chunked body
        decoded), for `async for chunk in request.stream()` in an async
        handler. With stream_request_body the chunks come as the client
        sends them, awaited on the worker loop; otherwise the whole body is
        one chunk (none when it is empty). Once per request, with reader():
        a second call raises RuntimeError. Raises RequestBodyError when the
        body cannot be read to its end."""
        body = self._px_take_body()
        if isinstance(body, bytes):
            return _whole(body)
        return _arriving(body)

    def reader(self) -> io.BufferedIOBase:
        """The body as a binary file: read(n=-1), readline(limit=-1),
        readlines(), iteration by lines. With stream_request_body its reads
        wait for the body to arrive, blocking the thread (a handler that
        blocks is handed off, as any blocking handler); otherwise it reads
        the whole body from memory. Once per request, with stream(); raises
        RequestBodyError when the body cannot be read to its end."""
        body = self._px_take_body()
        if isinstance(body, bytes):
            return io.BytesIO(body)
        return io.BufferedReader(_RawBody(body), _READ_SIZE)
