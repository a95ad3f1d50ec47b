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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .. import _core

# typing is imported for the type checker only: every worker interpreter
# imports this package, and typing would add milliseconds to each.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import overload


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
    body        bytes (a chunked body arrives decoded)
    version     "HTTP/1.1" or "HTTP/1.0"
    keep_alive  True when the connection stays open after the response
    client      the client's (host, port); None over a Unix domain socket,
                which has no network peer (as uvicorn's scope gives)

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
