"""Applications of any interface: loading "module:attr", telling which
interface an object speaks, and making the HttpServer subclass that serves
it (serve_app, and the command line's --app/--interface).

The interfaces:
    pyparallel  an HttpServer subclass, served as it is
    wsgi        a PEP 3333 callable, served by a WSGIServer made for it
    asgi        an ASGI 3 callable, served by an ASGIServer made for it

Detection ("auto"): an HttpServer subclass is pyparallel; a coroutine
function, or an object whose __call__ is one, is ASGI 3 (what asgiref's
guarantee_single_callable looks for); any other callable is WSGI.

Loading watches two things that decide whether an app can run in the mode
asked for, so that the user gets one line instead of a traceback from a
worker:
  - on a free-threaded build, an import that enables the GIL (an extension
    module that does not declare free-threading support): CPython warns,
    naming the module, and the GIL stays on for the process, so the workers
    cannot run Python in parallel. gil_modules says which modules did it.
  - in mode interpreters every worker imports the app in its own
    interpreter; check_in_worker() does that once, before the server
    accepts connections, and subinterpreter_refusal() turns an extension
    module's refusal into a line naming it.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import sys
import warnings

import pyparallel as px

from .. import _core

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyparallel import _Listener

PYPARALLEL = "pyparallel"
WSGI = "wsgi"
ASGI = "asgi"
INTERFACES = ("auto", PYPARALLEL, WSGI, ASGI)

# CPython 3.13t's warning when an import turns the GIL on.
_GIL_WARNING = re.compile(r"GIL\) has been enabled to load module '([^']+)'")
# CPython's ImportError for an extension that refuses a subinterpreter.
_REFUSAL = re.compile(r"module (\S+) does not support loading in subinterpreters")


class AppError(ValueError):
    """An application that cannot be loaded or served as asked; its message
    is one line for the user."""


def split_spec(spec: str, flag: str = "--app") -> tuple[str, str]:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"{flag} wants MODULE:ATTR, not {spec!r}")
    return module_name, attribute


def resolve_spec(spec: str, flag: str = "--app") -> object:
    """The object named by "module:attr" (attr may be dotted)."""
    module_name, attribute = split_spec(spec, flag)
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"{flag} {spec}: cannot import {module_name}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"{flag} {spec}: {module_name} has no {attribute}") from None
    return target


def _gil_enabled() -> bool:
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


def load(spec: str, flag: str = "--app") -> tuple[object, list[str]]:
    """(the object named by spec, the modules whose import enabled the GIL
    meanwhile: empty unless this is a free-threaded build whose GIL was off
    and is on now)."""
    was_enabled = _gil_enabled()
    before = set(sys.modules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        target = resolve_spec(spec, flag)
    gil_modules: list[str] = []
    if not was_enabled and _gil_enabled():
        for warning in caught:
            found = _GIL_WARNING.search(str(warning.message))
            if found and found.group(1) not in gil_modules:
                gil_modules.append(found.group(1))
        if not gil_modules:  # the warning went elsewhere: name the new extension modules
            gil_modules = sorted(
                name
                for name in set(sys.modules) - before
                if str(getattr(sys.modules[name], "__file__", "") or "").endswith((".so", ".pyd"))
            )
    for warning in caught:
        if not _GIL_WARNING.search(str(warning.message)):
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return target, gil_modules


def is_asgi(app: object) -> bool:
    """Whether app is an ASGI 3 callable: a coroutine function, or an object
    whose __call__ is one."""
    if inspect.iscoroutinefunction(app):
        return True
    # Looked up on the type, as a call does (a class's own __call__ there
    # is its metaclass's, never a coroutine function).
    return not isinstance(app, type) and inspect.iscoroutinefunction(type(app).__call__)


def detect(app: object) -> str:
    """The interface app speaks (see the module's docstring); AppError when
    it is no application at all."""
    if isinstance(app, type):
        if issubclass(app, _core.HttpProtocol):
            return PYPARALLEL
        # PEP 3333 allows a class as the app, but a class named by mistake
        # is far more common: it takes saying so.
        raise AppError(
            f"{app.__qualname__} is a class but not an HttpServer subclass (for a WSGI application that is a "
            f"class, give interface wsgi)"
        )
    if is_asgi(app):
        return ASGI
    if callable(app):
        return WSGI
    raise AppError(f"{app!r} is not an application: not an HttpServer subclass, nor a WSGI or ASGI callable")


def _name(app: object) -> str:
    qualname = getattr(app, "__qualname__", None)
    if isinstance(qualname, str):  # a function or a class
        return f"{app.__module__}:{qualname}"
    return repr(app)


def check_interface(app: object, interface: str) -> str:
    """The interface to serve app with: detected for "auto", else checked
    against what app is."""
    if interface not in INTERFACES:
        raise AppError(f"unknown interface {interface!r}; interfaces: {', '.join(INTERFACES)}")
    if interface == WSGI and isinstance(app, type) and not issubclass(app, _core.HttpProtocol):
        return WSGI
    found = detect(app)
    if interface == "auto":
        interface = found
    if interface == PYPARALLEL and found != PYPARALLEL:
        raise AppError(f"interface pyparallel wants an HttpServer subclass, not {app!r}")
    if interface in (WSGI, ASGI) and found == PYPARALLEL:
        raise AppError(
            f"{_name(app)} is an HttpServer subclass, not a{' WSGI' if interface == WSGI else 'n ASGI'} callable: "
            f"use interface pyparallel"
        )
    if interface == ASGI and found != ASGI:
        raise AppError(
            f"{_name(app)} is not an ASGI 3 application: its call is not a coroutine function taking "
            f"(scope, receive, send)"
        )
    return interface


def server_class(
    app: object, interface: str = "auto", *, server: tuple[str, int] | str | None = None, **attributes: object
) -> tuple[type, str]:
    """(the HttpServer subclass that serves app, its interface). app is the
    application or its "module:attr"; attributes are class attributes of
    the subclass (root and the limits). In mode interpreters each worker
    finds the app again: by the "module:attr" when given one, else by its
    module and qualified name."""
    from ._asgi import ASGIServer
    from ._wsgi import WSGIServer

    target = resolve_spec(app, "app") if isinstance(app, str) else app
    interface = check_interface(target, interface)
    if interface == WSGI:
        return WSGIServer.for_app(app, server=server, **attributes), interface
    if interface == ASGI:
        return ASGIServer.for_app(app, server=server, **attributes), interface
    assert isinstance(target, type)  # check_interface made sure
    if not attributes:
        return target, interface
    namespace = {"__module__": target.__module__, "__qualname__": target.__qualname__, **attributes}
    return type(target.__name__, (target,), namespace), interface


def check_workers(spec: str) -> None:
    """Mode interpreters: a worker imports the app in its own interpreter
    before any connection is accepted (the workers share sys.path, so one
    tells for all); AppError, one line, when that fails."""
    try:
        px.submit_work(check_in_worker, spec).result(timeout=120)
    except Exception as exc:
        module = subinterpreter_refusal(exc)
        if module is not None:
            raise AppError(
                f"{spec}: the extension module {module} does not support subinterpreters, and in mode "
                f"interpreters every worker imports the app in its own; run it with --mode threads (on a "
                f"free-threaded Python) or --mode gil"
            ) from None
        first = str(exc).strip().splitlines()
        reason = first[0] if first else repr(exc)
        raise AppError(f"{spec}: importing it in a worker interpreter failed: {reason}") from None


def serve_app(
    app: object, host: str = "", port: int = 8080, *, interface: str = "auto", **attributes: object
) -> _Listener:
    """Listens on host:port and registers the HttpServer subclass that
    serves app there (see server_class): what `python -m
    pyparallel.http.server --app` does, for a program that calls px.run()
    itself. Returns the listening transport. An ASGI app's lifespan
    startup runs before the class is registered. AppError for an app that
    cannot be served (in mode interpreters, an app given as "module:attr"
    that a worker's interpreter cannot import; an ASGI app whose startup
    failed)."""
    listener = px.server(host, port)
    try:
        if px.stats()["mode"] == "interpreters":
            if isinstance(app, str):
                check_workers(app)
            else:
                _check_crosses(app)
        cls, interface = server_class(app, interface, server=listener.sockname, **attributes)
        if interface == ASGI:
            from ._asgi import start_lifespan

            start_lifespan(cls)
        px.register(listener, cls)
    except BaseException:
        listener.close()
        raise
    return listener


def _check_crosses(app: object) -> None:
    """Mode interpreters: an app given as an object reaches the workers
    pickled, which finds a module-level function or class by name and
    which an app object (Flask's, Django's) refuses."""
    try:
        pickle.dumps(app)
    except Exception:
        raise AppError(
            f"{_name(app)} cannot cross to the workers' interpreters (in mode interpreters every worker "
            f'imports the app itself): give it as "module:attr", or use mode threads or gil'
        ) from None


def check_in_worker(spec: str) -> None:
    """Imports spec's module and finds its attribute in the calling
    interpreter (run as work, so in a worker's in mode interpreters)."""
    resolve_spec(spec)


def subinterpreter_refusal(exc: BaseException | None) -> str | None:
    """The extension module named by an ImportError that says it cannot load
    in a subinterpreter, or None."""
    text = str(exc)
    while exc is not None and not _REFUSAL.search(text):
        exc = exc.__cause__ or exc.__context__
        text = str(exc) if exc is not None else ""
    found = _REFUSAL.search(text)
    return found.group(1) if found else None
