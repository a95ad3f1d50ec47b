"""pyparallel.http.server: the HTTP server's public names and its command line.

    python -m pyparallel.http.server [--bind ADDR] [--port 8080 | --uds PATH] [--root DIR]
        [--app module:attr] [--interface auto|pyparallel|wsgi|asgi]
        [--workers N] [--io uring|epoll] [--max-threads N]
        [--mode threads|interpreters|gil]
        [--max-header-size N] [--max-uri-size N] [--max-body-size N]
        [--header-timeout S] [--body-timeout S] [--keepalive-timeout S]
        [--graceful-timeout S] [--drain-delay S] [--ready-file PATH] [--pid-file PATH]
        [--reuse-port] [--health PATH] [--max-requests N [--max-requests-jitter J]]
        [--max-worker-memory MIB] [--version]
        [--access-log [PATH|-]] [--access-log-format common|combined|json]
        [--forwarded-allow-ips LIST] [--metrics ADDR:PORT]

Without --app it serves the current directory (or --root) the way
`python -m http.server` does, plus two built-in routes: /plaintext and
/json. With --app it serves that application: an HttpServer subclass, or
a WSGI callable (Flask, Django), or an ASGI 3 one (Starlette, FastAPI;
its lifespan startup runs before the first connection is accepted);
--interface overrides the detection (see
_apps.py and docs/apps.md). With --root, static files come from there.
--uds PATH listens on a Unix domain socket instead of a TCP port, for a
proxy on the same machine (nginx's `proxy_pass http://unix:PATH;`): a
stale socket file at PATH is replaced, a live one is an error, and the
file is removed at shutdown; its mode is 0777 less the umask.

One line on stdout says where it listens, the app and its interface, how
many workers, which mode and which I/O backend; Ctrl-C or
SIGTERM shut it down gracefully (px.run() turns both into px.stop()): the
listeners close, requests under way finish, idle connections close after a
second; a shutdown that takes longer than --graceful-timeout (a handler
that does not return) ends the process, and so does a second signal, at
once.

Lifecycle (docs/deploy.md): sockets handed over by systemd's socket
activation (LISTEN_FDS) are served instead of --bind/--port/--uds;
--ready-file and --pid-file are written once it serves and removed at
exit, and systemd hears READY=1 and STOPPING=1 (NOTIFY_SOCKET); SIGHUP
reloads the code without closing the listening sockets (_lifecycle.py);
--reuse-port lets several instances share a port; --health PATH answers a
load balancer's health checks, 503 once the shutdown began (--drain-delay
before the listeners close); --max-requests and --max-worker-memory reload
the process once a worker served that many requests or it grew that large.

Loading the app is where it can fail to run in the mode asked for: on a
free-threaded build an import that enables the GIL switches the server
to mode gil (or ends it when --mode threads was asked for), and in mode
interpreters a worker imports the app once before connections are
accepted, so that an extension refusing subinterpreters ends the server
with one line naming it.

--access-log logs every request (docs/operations.md), reopened on
SIGUSR1; --forwarded-allow-ips names the proxies whose X-Forwarded-For,
X-Forwarded-Proto and Forwarded fields are believed; --metrics serves
Prometheus metrics and a live status page from a listener of its own.

The engine starts on first use and reads PYPARALLEL_WORKERS,
PYPARALLEL_IO, PYPARALLEL_MAX_THREADS and PYPARALLEL_MODE then, so
--workers, --io, --max-threads and --mode are put into os.environ
before anything (the application's module included) can touch it.

The implementation lives in the sibling modules, so that running this file
with -m does not import it twice under two names.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import os
import signal
import sys

import pyparallel as px

from .. import _lifecycle
from ..__main__ import version_report
from . import _accesslog, _apps, _frontdoor, _metrics
from ._app import HttpServer
from ._asgi import start_lifespan
from ._request import Headers, Request
from ._response import Response
from ._routing import route

__all__ = ["FileServer", "Headers", "HttpServer", "Request", "Response", "main", "route"]

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from pyparallel import _Listener, _UnixListener


class FileServer(HttpServer):
    """The command line's default application: static files under root,
    and the two TechEmpower-style routes."""

    def plaintext(self, request: Request) -> bytes:
        return b"Hello, World!"

    def json(self, request: Request) -> dict[str, str]:
        return {"message": "Hello, World!"}


# Command-line flags for the class attributes that the C layer reads.
LIMIT_FLAGS: tuple[tuple[str, type[int] | type[float], str], ...] = (
    ("max_header_size", int, "bytes of request line and header fields before 431"),
    ("max_uri_size", int, "bytes of request target before 414"),
    ("max_body_size", int, "bytes of request body before 413"),
    (
        "max_body_memory",
        int,
        "bytes the request bodies being received may hold together before new ones get 503 "
        "(default: a quarter of the memory, at most 1 GiB)",
    ),
    ("header_timeout", float, "seconds to receive a request head before 408"),
    ("body_timeout", float, "seconds between two reads of a request body before 408"),
    (
        "min_body_rate",
        int,
        "bytes/s a request body must average once its first body timeout passed, before 408 (default: 1024)",
    ),
    ("keepalive_timeout", float, "seconds an idle keep-alive connection stays open"),
)


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    return parse


def _seconds(text: str) -> float:
    """A duration that may be 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1e9:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text}")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535 (0: any free port), not {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyparallel.http.server",
        description="Serve a directory over HTTP/1.1 (plus /plaintext and /json), or an HttpServer application, "
        "with Python handlers on every core.",
    )
    parser.add_argument("--bind", metavar="ADDR", help="address to listen on (default: every IPv4 address)")
    parser.add_argument("--port", type=_port, help="port to listen on (default: 8080; 0: any free port)")
    parser.add_argument(
        "--uds",
        metavar="PATH",
        help="listen on the Unix domain socket at PATH instead of --bind/--port (a stale socket file is "
        "replaced; the file is removed at shutdown; its mode is 0777 less the umask)",
    )
    parser.add_argument("--root", metavar="DIR", help="directory of the static files (default: the current directory)")
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="serve this application instead of the files: an HttpServer subclass, or a WSGI callable "
        "(Flask, Django: myproject.wsgi:application)",
    )
    parser.add_argument(
        "--interface",
        choices=_apps.INTERFACES,
        default="auto",
        help="the app's interface (default: auto, detected from what --app names)",
    )
    parser.add_argument("--workers", type=_positive(int), metavar="N", help="number of workers (default: one per CPU)")
    parser.add_argument("--io", choices=("uring", "epoll"), help="I/O backend (default: io_uring when available)")
    parser.add_argument(
        "--max-threads",
        type=_positive(int),
        metavar="N",
        help="threads in all, the workers' included: how many handlers may block at once (default: 256); "
        "past it, requests wait for a blocked handler to return",
    )
    parser.add_argument(
        "--mode",
        choices=("threads", "interpreters", "gil"),
        help="how workers run Python (default: threads on free-threaded builds, interpreters on GIL builds)",
    )
    _add_lifecycle_flags(parser)
    _add_ops_flags(parser)
    for name, kind, help_text in LIMIT_FLAGS:
        metavar = "N" if kind is int else "SECONDS"
        parser.add_argument(
            "--" + name.replace("_", "-"), type=_positive(kind), dest=name, metavar=metavar, help=help_text
        )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print pyparallel's version, the interpreter, and the mode and I/O backend that --mode and --io (or "
        "PYPARALLEL_MODE and PYPARALLEL_IO, or their defaults) select here, then exit",
    )
    return parser


def _add_lifecycle_flags(parser: argparse.ArgumentParser) -> None:
    """Shutdown, readiness, reload and load-balancing flags (docs/deploy.md)."""
    group = parser.add_argument_group("lifecycle (docs/deploy.md)")
    group.add_argument(
        "--graceful-timeout",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="after SIGINT or SIGTERM the listeners close and requests under way get this long to finish "
        "(idle connections close after a second) before the process exits anyway, e.g. while a handler "
        "has not returned (default: 30); a second signal exits at once",
    )
    group.add_argument(
        "--drain-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="after SIGINT or SIGTERM, serve on for this long with --health answering 503 before the listeners "
        "close, so that a load balancer stops sending first (default: 0)",
    )
    group.add_argument(
        "--ready-file",
        metavar="PATH",
        help="write the process's PID to PATH once it serves, remove it at exit (readiness for a supervisor "
        "without sd_notify; with NOTIFY_SOCKET set, systemd is sent READY=1 and STOPPING=1 anyway)",
    )
    group.add_argument(
        "--pid-file",
        metavar="PATH",
        help="write the serving process's PID to PATH (rewritten by the new process after a SIGHUP reload, "
        "which has a new PID), remove it at exit",
    )
    group.add_argument(
        "--reuse-port",
        action="store_true",
        help="listen with SO_REUSEPORT, so that several instances share --port (the kernel spreads the "
        "connections among them)",
    )
    group.add_argument(
        "--max-requests",
        type=_positive(int),
        metavar="N",
        help="recycle once a worker has served N requests: in mode interpreters that worker's interpreter is "
        "replaced in place while the others serve; in modes threads and gil the process reloads (as SIGHUP "
        "does) once it served N times the workers",
    )
    group.add_argument(
        "--max-requests-jitter",
        type=int,
        default=0,
        metavar="J",
        help="add a random 0..J to --max-requests, drawn per worker, so that workers do not reach it together",
    )
    group.add_argument(
        "--max-worker-memory",
        type=_positive(int),
        metavar="MIB",
        help="reload the process (as SIGHUP does) once its resident memory exceeds MIB mebibytes per worker "
        "(checked every second)",
    )
    group.add_argument(
        "--health",
        metavar="PATH",
        help="answer GET PATH with 200 'ok', and with 503 'draining' once the shutdown began, for a load "
        "balancer's health checks (before the app sees the request)",
    )


def _metrics_address(text: str) -> tuple[str, int]:
    try:
        return _metrics.parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _allow_ips(text: str) -> str:
    """A comma-separated list of addresses and networks, or *: checked here
    for a clear message (the C layer checks it again)."""
    for entry in text.replace(",", " ").split():
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{entry!r} is not an IP address or network (a.b.c.d, ::1, 10.0.0.0/8) or *"
            ) from None
    return text


def _add_ops_flags(parser: argparse.ArgumentParser) -> None:
    """Seeing what the server does: the access log, the proxies believed,
    the metrics and status page (docs/operations.md)."""
    parser.add_argument(
        "--access-log",
        nargs="?",
        const="-",
        metavar="PATH",
        help="log one line per request to PATH, or to stderr with - or no PATH (default: no access log); "
        "SIGUSR1 reopens PATH, for logrotate",
    )
    parser.add_argument(
        "--access-log-format",
        choices=_accesslog.FORMATS,
        default="combined",
        help="the access log's lines: Apache's common or combined log format, or JSON objects that also "
        "carry the duration (default: combined)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        type=_allow_ips,
        metavar="LIST",
        help="comma-separated addresses and networks of the proxies whose X-Forwarded-For, "
        "X-Forwarded-Proto and Forwarded fields set the client address and scheme, * for any "
        "(default: 127.0.0.1; a Unix socket's peer is always believed)",
    )
    parser.add_argument(
        "--metrics",
        type=_metrics_address,
        metavar="ADDR:PORT",
        help="serve Prometheus metrics (/metrics) and a live status page (/) on a listener of their own",
    )


class Ops:
    """The metrics listener the command line started, which a reload moves
    to the new process: released just before that one starts (it binds the
    same address), restored when the reload failed."""

    def __init__(self, address: tuple[str, int] | None) -> None:
        self.address = address
        self.metrics: _metrics.MetricsServer | None = None

    def release(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def restore(self) -> None:
        if self.address is None or self.metrics is not None:
            return
        try:
            self.metrics = _metrics.MetricsServer(*self.address)
        except OSError as exc:
            logging.getLogger("pyparallel").error("--metrics: cannot listen again after a failed reload: %s", exc)


def start_ops(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Ops | None:
    """Starts the metrics listener (its address on stdout) and the access
    log the command line asks for, each stopped at exit, after the
    shutdown (atexit runs them before the engine's own exit handler, which
    was registered first): the log then holds the last requests too.
    None, said on stderr, when one cannot start."""
    ops = Ops(args.metrics)
    if args.metrics is not None:
        try:
            ops.metrics = _metrics.MetricsServer(*args.metrics)
        except OSError as exc:
            print(f"{parser.prog}: --metrics: {exc}", file=sys.stderr)
            return None
        atexit.register(ops.release)
        host, port = ops.metrics.address
        print(f"Metrics on http://{_url_host(host)}:{port}/metrics, status page on /", flush=True)
    if args.access_log is not None:
        try:
            _accesslog.start(args.access_log, args.access_log_format)
        except OSError as exc:
            print(f"{parser.prog}: --access-log: {exc}", file=sys.stderr)
            return None
        atexit.register(_accesslog.stop)
    return ops


def load_app(spec: str, interface: str = "auto") -> tuple[object, str, list[str]]:
    """(the application named by "module:attr", its interface, the modules
    whose import enabled the GIL); _apps.AppError when it cannot be served."""
    target, gil_modules = _apps.load(spec)
    return target, _apps.check_interface(target, interface), gil_modules


def attributes(args: argparse.Namespace) -> dict[str, Any]:
    """The class attributes the command line sets: the limits, and root."""
    overrides = {name: getattr(args, name) for name, _, _ in LIMIT_FLAGS if getattr(args, name) is not None}
    if args.forwarded_allow_ips is not None:
        overrides["forwarded_allow_ips"] = args.forwarded_allow_ips
    root = args.root if args.root is not None else (None if args.app else os.getcwd())
    if root is not None:
        if not os.path.isdir(root):
            raise ValueError(f"--root {root}: not a directory")
        overrides["root"] = os.path.realpath(root)
    return overrides


def recycler(app: type, interface: str, spec: str | None, timeout: float) -> _lifecycle.Recycler:
    """What replaces a worker's interpreter in place (--max-requests and the
    other causes, mode interpreters): the new interpreter imports the
    application before the worker retires, and an ASGI app's lifespan
    starts on the worker before it takes connections again."""

    def start(worker: int) -> None:
        if interface == _apps.ASGI:
            start_lifespan(app, [worker])

    prepare = (_apps.check_in_worker, spec) if spec is not None else ()
    return _lifecycle.Recycler(prepare, start, timeout)


def configure(args: argparse.Namespace, server: tuple[str, int] | str | None = None) -> tuple[type, str]:
    """(the protocol class to serve, its interface): the application (or
    FileServer) with the command line's root and limits as class
    attributes of a subclass. server is the listener's address, for WSGI's
    SERVER_NAME and SERVER_PORT."""
    if not args.app:
        if args.interface not in ("auto", _apps.PYPARALLEL):
            raise _apps.AppError(f"--interface {args.interface} needs --app")
        return _apps.server_class(FileServer, _apps.PYPARALLEL, **attributes(args), **_frontdoor_attributes(args))
    target, interface, _ = load_app(args.app, args.interface)
    # A WSGI or ASGI app goes by its spec, which mode interpreters' workers
    # import.
    if interface in (_apps.WSGI, _apps.ASGI):
        served, interface = _apps.server_class(args.app, interface, server=server, **attributes(args))
        # A subclass of the adapter's own making: the health route's and
        # the request count's attributes join those of the command line.
        for name, value in _frontdoor_attributes(args).items():
            setattr(served, name, value)
        return served, interface
    return _apps.server_class(target, interface, server=server, **attributes(args), **_frontdoor_attributes(args))


def _frontdoor_attributes(args: argparse.Namespace) -> dict[str, Any]:
    return _frontdoor.attributes(args.health, args.max_requests or 0, args.max_requests_jitter)


def _gil_decision(parser: argparse.ArgumentParser, spec: str, gil_modules: list[str]) -> None:
    """On a free-threaded build whose GIL the app's import enabled: mode gil
    from now on, said on stderr, or the end when mode threads was asked."""
    names = ", ".join(gil_modules) or "an extension module"
    cause = (
        f"importing {spec} enabled the GIL: {names} did not declare that it can run without it "
        f"(CPython then runs one thread at a time)"
    )
    asked = os.environ.get("PYPARALLEL_MODE", "").lower()
    if asked == "threads":
        parser.exit(
            2,
            f"{parser.prog}: {cause}, so mode threads cannot run Python in parallel; run it with "
            f"--mode gil, or use a build of {names} that supports free-threading\n",
        )
    if asked != "gil":
        os.environ["PYPARALLEL_MODE"] = "gil"
        print(f"{parser.prog}: {cause}; the server runs in mode gil from now on", file=sys.stderr, flush=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def app_name(app: type) -> str:
    """MODULE:ATTR, as --app takes it (this module under -m is __main__,
    whose spec still knows its real name)."""
    wsgi_app = getattr(app, "_px_app", None)
    if wsgi_app is not None:
        return str(wsgi_app.name)
    module = sys.modules.get(app.__module__)
    spec = getattr(module, "__spec__", None)
    return f"{spec.name if spec is not None else app.__module__}:{app.__qualname__}"


def startup_line(listener: _Listener | _UnixListener, app: type, interface: str = _apps.PYPARALLEL) -> str:
    sockname = listener.sockname
    if isinstance(sockname, str):
        where = f"unix:{sockname}"
    else:
        host, port = sockname[:2]
        where = f"{host} port {port} (http://{_url_host(host)}:{port}/)"
    stats = px.stats()
    root = getattr(app, "root", None)
    serving = f"root {root}" if root is not None else "no static files"
    return (
        f"Serving HTTP on {where}: "
        f"app {app_name(app)}, interface {interface}, {serving}, "
        f"{stats['workers']} workers, mode {stats['mode']}, io {stats['io']}"
    )


def _listen(args: argparse.Namespace, inherited: list[int]) -> list[_Listener | _UnixListener]:
    """The listeners to serve: the inherited sockets (socket activation, a
    reload), else the one that --uds or --bind/--port name."""
    if not inherited:
        if args.uds is not None:
            return [px.server(path=args.uds)]
        return [px.server(args.bind, args.port, reuse_port=args.reuse_port)]
    listeners = []
    for fd in inherited:
        try:
            listeners.append(px.server(fd=fd))  # serves a duplicate
        finally:
            os.close(fd)
    return listeners


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # First: the variables are this process's only (LISTEN_PID).
        inherited = _lifecycle.listen_fds()
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_requests_jitter < 0 or (args.max_requests_jitter and not args.max_requests):
        parser.error("--max-requests-jitter takes a number >= 0, with --max-requests")
    if args.uds is not None and (args.bind is not None or args.port is not None):
        parser.error("--uds listens on a Unix domain socket instead of --bind and --port: give one or the other")
    if args.uds is None:
        args.bind = "" if args.bind is None else args.bind
        args.port = 8080 if args.port is None else args.port
    # Before the engine's first use, which reads them once.
    if args.workers is not None:
        os.environ["PYPARALLEL_WORKERS"] = str(args.workers)
    if args.io is not None:
        os.environ["PYPARALLEL_IO"] = args.io
    if args.max_threads is not None:
        os.environ["PYPARALLEL_MAX_THREADS"] = str(args.max_threads)
    if args.mode is not None:
        os.environ["PYPARALLEL_MODE"] = args.mode
    if args.version:
        lines, error = version_report()
        print("\n".join(lines), flush=True)
        if error is not None:
            parser.exit(1, f"{parser.prog}: {error}\n")
        parser.exit(0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        # Loaded before the engine starts: the GIL decision may change the mode.
        if args.app:
            _, _, gil_modules = load_app(args.app, args.interface)
            if gil_modules:
                _gil_decision(parser, args.app, gil_modules)
        configure(args)
    except _apps.AppError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        listeners = _listen(args, inherited)
    except ValueError as exc:  # the engine refuses the mode, or a path too long
        parser.error(str(exc))
    except OSError as exc:
        where = (
            "the inherited sockets"
            if inherited
            else f"unix:{args.uds}"
            if args.uds is not None
            else f"{args.bind or '*'} port {args.port}"
        )
        print(f"{parser.prog}: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    listener = listeners[0]
    if args.app and px.stats()["mode"] == "interpreters":
        try:
            _apps.check_workers(args.app)
        except _apps.AppError as exc:
            parser.exit(2, f"{parser.prog}: --app {exc}\n")
    app, interface = configure(args, server=listener.sockname)
    if interface == _apps.ASGI:
        try:
            start_lifespan(app)
        except _apps.AppError as exc:
            for each in listeners:
                each.close()
            px.stop()
            parser.exit(3, f"{parser.prog}: --app {exc}\n")
    readiness = _lifecycle.Readiness(args.ready_file, args.pid_file)
    ops = start_ops(parser, args)
    if ops is None:
        for each in listeners:
            each.close()
        px.stop()
        return 1
    reloader = _lifecycle.Reloader(listeners, readiness, on_spawn=ops.release, on_failure=ops.restore)
    # Before the first request: --max-requests sends SIGHUP from a worker,
    # whose default action would end the process.
    signal.signal(signal.SIGHUP, reloader)
    for each in listeners:
        px.register(each, app)
    memory_limit = args.max_worker_memory * px.stats()["workers"] << 20 if args.max_worker_memory else None
    # A worker's interpreter is replaced in place when others serve meanwhile.
    in_place = px.stats()["mode"] == "interpreters" and px.stats()["workers"] > 1
    replacer = recycler(app, interface, args.app, args.graceful_timeout) if in_place else None
    if memory_limit is not None or px.stats()["mode"] == "interpreters":
        _lifecycle.Supervisor(reloader, memory_limit, replacer)
    # Printed from run() on the main thread, so that once the line is out,
    # SIGINT and SIGTERM already stop the server cleanly; then it is ready.
    px.call_from_main_thread(print, startup_line(listener, app, interface), flush=True)
    px.call_from_main_thread(readiness.ready)
    try:
        px.run(graceful_timeout=args.graceful_timeout, drain_delay=args.drain_delay)
    finally:
        readiness.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
