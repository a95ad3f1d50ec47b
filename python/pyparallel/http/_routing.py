"""Routing: which handler serves a request's path and method.

Two ways to declare a route on an HttpServer subclass:
  - by method name: a public method `def plaintext(self, request)` serves
    GET and HEAD on /plaintext (PyParallel's convention);
  - by decorator: @route("/users/{uid}", methods=("GET", "POST")) serves the
    given methods on a path pattern; each {name} matches one path segment
    (no "/"), {name:path} any rest of the path ("/" included, maybe empty),
    and is passed to the handler as a keyword argument (str).
A route that serves GET also serves HEAD (the C layer sends only the head).

Routes are compiled once per class, when the class is created: exact paths
go into a dict, patterns into precompiled regular expressions tried in order
of definition. Serving a request is then a dict lookup, plus a regex match
per pattern only when no exact path matched.
"""

from __future__ import annotations

import re
import types

from .. import _core

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    # A handler: the class's plain function, called as
    # function(server, request, **parameters).
    type Handler = Callable[..., object]
    # (path, methods, function, member name), as collect_routes finds them.
    type Declaration = tuple[str, tuple[str, ...], Handler, str]

# Members a protocol class may define for the runtime itself: never routes.
PROTOCOL_MEMBERS = frozenset(
    {
        "connection_made",
        "data_received",
        "lines_received",
        "send_complete",
        "connection_lost",
        "exception_handler",
        "initial_bytes_to_send",
        "next_bytes_to_send",
        "lines_mode",
        "message_received",  # WebSocket callbacks (_websocket.py)
        "websocket_closed",
    }
)

_PARAMETER = re.compile(r"\{([^{}]*)\}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def route[F: Callable[..., object]](path: str, methods: Sequence[str] = ("GET",)) -> Callable[[F], F]:
    """Declares the decorated method a handler of path for methods.

    path is a literal path ("/about") or a pattern with {name} parameters
    ("/users/{uid}/posts/{pid}") and {name:path} parameters ("/files/{rest:path}");
    methods is a sequence of method names.
    Decorators may be stacked to serve several paths with one method.
    """
    _compile_path(path)  # a bad pattern fails where it is written
    methods = _normalise_methods(methods)

    def decorate(func: F) -> F:
        if not isinstance(func, types.FunctionType):
            raise TypeError(f"@route() decorates a function, not {type(func).__name__}")
        func.__dict__.setdefault("_px_routes", []).append((path, methods))
        return func

    return decorate


def _normalise_methods(methods: Sequence[str]) -> tuple[str, ...]:
    if isinstance(methods, str):
        raise TypeError("route() methods must be a sequence of names, like ('GET',), not a str")
    normalised = []
    for method in methods:
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise ValueError(f"route() method {method!r} is not an HTTP method name")
        normalised.append(method.upper())
    if not normalised:
        raise ValueError("route() needs at least one method")
    if "GET" in normalised and "HEAD" not in normalised:
        normalised.append("HEAD")
    return tuple(normalised)


def _compile_path(path: str) -> re.Pattern[str] | None:
    """None for a literal path, else the pattern's compiled regex."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"route path must be a str starting with '/', not {path!r}")
    if "{" not in path and "}" not in path:
        return None
    parts = []
    names = set()
    position = 0
    for match in _PARAMETER.finditer(path):
        literal = path[position : match.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"route path {path!r} has an unbalanced brace")
        name, colon, kind = match.group(1).partition(":")
        if not name.isidentifier():
            raise ValueError(f"route path {path!r}: parameter {{{name}}} is not a Python identifier")
        if colon and kind != "path":
            raise ValueError(f"route path {path!r}: {{{name}:{kind}}} is not a parameter kind (only :path is)")
        if name in names:
            raise ValueError(f"route path {path!r} repeats parameter {{{name}}}")
        names.add(name)
        parts.append(re.escape(literal))
        parts.append(f"(?P<{name}>.*)" if colon else f"(?P<{name}>[^/]+)")
        position = match.end()
    rest = path[position:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"route path {path!r} has an unbalanced brace")
    parts.append(re.escape(rest))
    # DOTALL: a decoded path may hold a newline (%0A), which {name:path} takes too.
    return re.compile("".join(parts), re.DOTALL)


def _allow(methods: Iterable[str]) -> str:
    return ", ".join(sorted(methods))


class RouteTable:
    """A class's compiled routes, shaped for workers that read them at once.

    exact:    {path: {method: index}}
    allow:    {path: "GET, HEAD, ..."}, the Allow of a 405 on an exact path
    patterns: ((regex, {method: index}, allow), ...) in order of definition
    handlers: (function, ...): index -> the class's plain function, called
              as function(server, request, **parameters)

    The dicts are made immortal (px.eternalize) and hold only str and int.
    On free-threaded CPython an ordinary dict, made by the thread that
    created the class and read by every worker, costs each lookup
    reference-count traffic on shared objects, and a lookup with a key that
    is a fresh string (a request's path always is) can fall back to locking
    the dict: measured, that turned a 10 us request into a 50 us one.
    Immortal dicts, str and int need no reference counting at all, and the
    functions and regexes sit in tuples, which are read without locks.
    """

    __slots__ = ("exact", "allow", "patterns", "handlers")
    exact: dict[str, dict[str, int]]
    allow: dict[str, str]
    patterns: tuple[tuple[re.Pattern[str], dict[str, int], str], ...]
    handlers: tuple[Handler, ...]

    def __init__(self, declarations: Iterable[Declaration]) -> None:
        """declarations: (path, methods, function, name) in order."""
        exact: dict[str, dict[str, int]] = {}
        patterns: dict[str, list[Any]] = {}  # path -> [regex, {method: index}]
        handlers: list[Handler] = []
        indexes: dict[str, int] = {}
        owners: dict[tuple[str, str], str] = {}
        for path, methods, func, name in declarations:
            if name not in indexes:
                indexes[name] = len(handlers)
                handlers.append(func)
            regex = _compile_path(path)
            if regex is None:
                table = exact.setdefault(path, {})
            else:
                table = patterns.setdefault(path, [regex, {}])[1]
            for method in methods:
                previous = owners.get((path, method))
                if previous is not None and previous != name:
                    raise TypeError(f"{method} {path} is routed to both {previous}() and {name}()")
                owners[path, method] = name
                table[method] = indexes[name]
        # Each interpreter builds its own table (a worker interpreter too,
        # when it makes a class again from its recipe), hence _here.
        self.exact = _core._eternalize_here(exact)
        self.allow = _core._eternalize_here({path: _allow(table) for path, table in exact.items()})
        self.patterns = tuple(
            (regex, _core._eternalize_here(table), _core._eternalize_here(_allow(table)))
            for regex, table in patterns.values()
        )
        self.handlers = tuple(handlers)

    def lookup(self, path: str, method: str) -> tuple[Handler | None, Any]:
        """(function, parameters) of the route that serves method on path,
        else (None, allow), where allow lists the methods that the routes
        matching path serve ("" when none matches: the path is unknown)."""
        methods = self.exact.get(path)
        if methods is not None:
            index = methods.get(method)
            if index is None:
                return None, self.allow[path]
            return self.handlers[index], {}
        return self.match(path, method)

    def match(self, path: str, method: str) -> tuple[Handler | None, Any]:
        """lookup() for a path with no exact route: the patterns only."""
        allowed: set[str] = set()
        for regex, table, _ in self.patterns:
            found = regex.fullmatch(path)
            if found is None:
                continue
            index = table.get(method)
            if index is not None:
                return self.handlers[index], found.groupdict()
            allowed.update(table)
        return None, _allow(allowed)


def collect_routes(cls: type, base: type) -> RouteTable:
    """The RouteTable of cls, a subclass of base: the routes declared by
    every class between cls and base in the MRO, a subclass's member
    replacing a base class's member of the same name."""
    namespace: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        if klass is base or not issubclass(klass, base):
            continue
        namespace.update(klass.__dict__)
    declarations: list[Declaration] = []
    for name, value in namespace.items():
        if not isinstance(value, types.FunctionType):
            continue
        declared = value.__dict__.get("_px_routes")
        if declared is not None:
            for path, methods in declared:
                declarations.append((path, methods, value, name))
        elif not name.startswith("_") and name not in PROTOCOL_MEMBERS:
            declarations.append(("/" + name, ("GET", "HEAD"), value, name))
    return RouteTable(declarations)
