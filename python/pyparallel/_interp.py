"""What mode "interpreters" does in Python: finding functions and classes by
name in a worker interpreter, pickling across interpreters, and carrying
exceptions with their tracebacks.

Each worker runs its own subinterpreter, so objects never cross between
interpreters: a function or protocol class is found again by module and
qualified name, and other values are copied (by pyparallel._core) or
pickled (here). The script run as __main__ works the way
multiprocessing's "spawn" start method makes it work: a worker interpreter
imports the main script's file under the name "__mp_main__" the first time
it needs one of its names, so code under `if __name__ == "__main__":` does
not run again there, and pickles naming "__main__" find that module.

Logging: a worker interpreter's root logger hands every record to the main
interpreter's logging (log_record), so that what the application
configured there (handlers, levels, pytest's caplog) sees workers' records.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import sys
import threading
import traceback

from . import _core

# typing is imported for the type checker only: every worker interpreter
# imports this package, and typing would add milliseconds to each.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import types
    from collections.abc import Callable

MAIN_ALIAS = "__mp_main__"

# In a worker interpreter: how to import the main script, as
# ("path", file) or ("module", name), or None when there is none (an
# interactive session, python -c, a package's __main__).
_main_source: tuple[str, str] | None = None
_in_worker = False
# The main script's module once imported here; the lock makes threads of
# this interpreter that need it at the same time import it once (runpy
# puts a half-run module in sys.modules meanwhile, so that cannot tell).
_main: types.ModuleType | None = None
_main_lock = threading.Lock()


def _advice(exc: BaseException) -> str:
    """The hint added to an import that failed because an extension cannot
    load in a subinterpreter."""
    if isinstance(exc, ImportError) and "subinterpreter" in str(exc):
        return (
            " (an extension module it needs does not support subinterpreters: run it in mode 'gil' with "
            "PYPARALLEL_MODE=gil, px.run(mode='gil') or --mode gil)"
        )
    return ""


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        advice = _advice(exc)
        if not advice:
            raise
        raise ImportError(f"cannot import {name!r} in a worker interpreter: {exc}{advice}", name=name) from exc


def setup_worker(main_path: str | None, main_name: str | None) -> None:
    """Called once in each new worker interpreter."""
    global _main_source, _in_worker
    _in_worker = True
    if main_name and main_name != "__main__" and not main_name.endswith(".__main__"):
        _main_source = ("module", main_name)
    elif main_path:
        _main_source = ("path", main_path)
    root = logging.getLogger()
    root.addHandler(_ToMainInterpreter())
    # Every record goes over: the main interpreter's loggers decide.
    root.setLevel(logging.DEBUG)


# The LogRecord attributes that cross (the message is formatted first).
_RECORD_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "thread",
    "threadName",
    "process",
    "processName",
    "stack_info",
)


class _ToMainInterpreter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = tuple(getattr(record, name, None) for name in _RECORD_FIELDS)
            exc = record.exc_info[1] if record.exc_info else None
            _core._log_in_main(fields, record.getMessage(), exc)
        except Exception:
            self.handleError(record)


def log_record(fields: tuple[object, ...], message: str, exc: BaseException | None) -> None:
    """In the main interpreter: log a worker interpreter's record."""
    record = logging.makeLogRecord(dict(zip(_RECORD_FIELDS, fields), msg=message, args=None))
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def main_source() -> tuple[str | None, str | None]:
    """(path, module name) of the main script, as setup_worker takes them;
    called in the main interpreter."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    path = getattr(main, "__file__", None)
    if path is not None and not isinstance(path, str):
        path = None
    return path, name


def _main_module() -> types.ModuleType:
    if _main is not None:
        return _main
    with _main_lock:
        if _main is None:
            _import_main()
    return _main  # type: ignore[return-value]  # (set by _import_main, which mypy does not follow)


def _share_main_containers(content: dict[str, object], script: str) -> None:
    """Makes the px.dict(), px.list() and px.xlist() that the main script's
    top level made in this worker interpreter the main interpreter's own.

    The worker runs the script's top level again (under __mp_main__), and a
    line such as ``hits = px.dict()`` made a second container here; the
    program means the one the main interpreter made under that name. Each
    such global is rebound, in the module's namespace and in the globals of
    the script's functions, to the main interpreter's container. A name the
    main interpreter does not bind to a container of the same kind would
    leave two different objects behind one name: that is an ImportError.
    """
    kinds = (_core.SharedDict, _core.SharedList, _core.SharedXList)
    made = {name: obj for name, obj in content.items() if type(obj) in kinds}
    if not made:
        return
    theirs = _core._main_shared(tuple(made))
    missing = [name for name, obj in made.items() if type(theirs.get(name)) is not type(obj)]
    if missing:
        raise ImportError(
            f"the main script {script!r} makes {', '.join(missing)} at its top level, but in the main interpreter "
            f"{'these names are' if len(missing) > 1 else 'this name is'} not bound to the same kind of shared "
            "container: in mode 'interpreters' each worker imports the script and takes the main interpreter's "
            "px.dict/px.list/px.xlist of the same name, so make them at the top level, before any other use"
        )
    # The script's functions (and its classes' methods) read their globals
    # from the namespace they ran in, which runpy copied into content.
    namespaces = [content]
    functions = [obj for obj in content.values() if callable(obj)]
    functions += [member for obj in content.values() if isinstance(obj, type) for member in vars(obj).values()]
    for function in functions:
        namespace = getattr(function, "__globals__", None)
        if isinstance(namespace, dict) and all(namespace is not seen for seen in namespaces):
            namespaces.append(namespace)
    for namespace in namespaces:
        for name in made:
            if namespace.get(name) is made[name]:
                namespace[name] = theirs[name]


def _import_main() -> None:
    global _main
    if _main_source is None:
        raise ImportError(
            "the main module has no file a worker interpreter could import (an interactive session or "
            "python -c): define the function or class in a module, or use mode 'threads' or 'gil'"
        )
    import runpy
    import types

    kind, value = _main_source
    module = types.ModuleType(MAIN_ALIAS)
    # While the script's top level runs here, starting work would make the
    # workers import it again, and so on (multiprocessing refuses the same).
    _core._importing_main(True)
    try:
        if kind == "module":
            content = runpy.run_module(value, run_name=MAIN_ALIAS, alter_sys=True)
        else:
            content = runpy.run_path(value, run_name=MAIN_ALIAS)
    except Exception as exc:
        advice = _advice(exc) or (
            ": in mode 'interpreters' each worker imports the main script to find its functions and classes (as "
            "multiprocessing's spawn does), so the code that starts the program must be under "
            '`if __name__ == "__main__":`'
        )
        raise ImportError(
            f"importing the main script {value!r} in a worker interpreter failed: {exc!r}{advice}"
        ) from exc
    finally:
        _core._importing_main(False)
    _share_main_containers(content, value)
    module.__dict__.update(content)
    sys.modules[MAIN_ALIAS] = module
    # As multiprocessing's spawn does, so that code and pickles that name
    # __main__ find the script's names.
    sys.modules["__main__"] = module
    _main = module


def _module(name: str) -> types.ModuleType:
    if _in_worker:
        if name == "__main__" or name == MAIN_ALIAS:
            return _main_module()
    elif name == MAIN_ALIAS:
        name = "__main__"
    module = sys.modules.get(name)
    # A module another thread of this interpreter is still importing is in
    # sys.modules half run: import_module waits for that import to finish.
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return _import(name)
    return module


def resolve(module: str, qualname: str) -> object:
    """module.qualname, found in this interpreter."""
    obj = _module(module)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = "the main script" if module in ("__main__", MAIN_ALIAS) else f"module {module!r}"
            raise AttributeError(
                f"{where} has no {qualname!r} in {'a worker' if _in_worker else 'the main'} interpreter: in mode "
                "'interpreters', functions and classes are found by module and qualified name, so they must "
                "be defined at module level (not inside a function, nor created at run time)"
            ) from None
    return obj


# What a class made at run time may not carry into its recipe.
_CLASS_DUNDERS = frozenset({"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"})


class _ClassRecipe:
    """Pickles as the call that makes the class again (see class_recipe)."""

    def __init__(
        self, base: type, name: str, qualname: str, module: str, doc: str | None, attrs: dict[str, object]
    ) -> None:
        self.args = (base, name, qualname, module, doc, attrs)

    def __reduce__(self) -> tuple[Callable[..., type], tuple[object, ...]]:
        return (_rebuild_class, self.args)


def _rebuild_class(
    base: type, name: str, qualname: str, module: str, doc: str | None, attrs: dict[str, object]
) -> type:
    namespace = dict(attrs, __module__=module, __qualname__=qualname, __doc__=doc)
    return type(base)(name, (base,), namespace)


def class_recipe(cls: type) -> bytes | None:
    """A pickle that makes cls again in another interpreter, or None. It
    exists for a class made at run time as a subclass of one class that can
    be found by name, adding attributes that can be pickled (the HTTP CLI's
    app with its command-line limits, say); such a class cannot be found by
    name itself."""
    if len(cls.__bases__) != 1:
        return None
    base = cls.__bases__[0]
    if "__main__" in (cls.__module__, base.__module__) and main_source() == (None, None):
        return None  # python -c: the workers could not import what it refers to
    attrs = {name: value for name, value in vars(cls).items() if name not in _CLASS_DUNDERS}
    try:
        return dumps(_ClassRecipe(base, cls.__name__, cls.__qualname__, cls.__module__, cls.__doc__, attrs))
    except Exception:
        return None


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if module in ("__main__", MAIN_ALIAS):
            return resolve(module, name)
        if module not in sys.modules:
            _import(module)
        return super().find_class(module, name)


def dumps(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> object:
    return _Unpickler(io.BytesIO(data)).load()


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another interpreter; it is
    the __cause__ of the exception that crossed, so that it is printed with
    it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def encode_exception(exc: BaseException) -> tuple[bytes | None, str]:
    """(pickle or None, traceback text) for an exception that crosses."""
    text = "".join(traceback.format_exception(exc))
    try:
        payload = dumps(exc)
        loads(payload)  # what does not come back is sent as text only
    except Exception:
        payload = None
    return payload, text


def decode_exception(payload: bytes | None, text: str, fallback: Callable[[str], BaseException]) -> BaseException:
    exc = None
    if payload is not None:
        try:
            exc = loads(payload)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        last = text.strip().splitlines()[-1] if text.strip() else "an exception"
        exc = fallback(f"{last} (raised in another interpreter; the exception could not be pickled)")
    exc.__cause__ = RemoteTraceback(text)
    return exc


def own_threads() -> list[str]:
    """The threads that this worker interpreter's code started and that
    still run (their names): its replacement (--max-requests) ends it only
    once there are none, since ending an interpreter waits for them. The
    engine's threads (seen here as dummy threads) are not among them."""
    main = threading.main_thread()
    return [
        t.name
        for t in threading.enumerate()
        if t is not main and t.is_alive() and not isinstance(t, threading._DummyThread)
    ]
