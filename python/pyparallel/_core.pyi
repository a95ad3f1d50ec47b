"""Type stubs for pyparallel._core, the C extension under ``pyparallel``.

Most of its names are pyparallel's public API, described in __init__.pyi and
re-exported here from there, so that each type is defined once. This file
describes the rest, which the pure-Python package builds on: the lock object
behind px.dict and px.list, the HTTP layer's base classes, and the helpers
and hooks that pyparallel's own modules call. None of it is public API.
"""

import builtins
from collections.abc import Buffer, Callable, Coroutine, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, TypeVar, final

from _typeshed import WriteableBuffer
from typing_extensions import disjoint_base

from pyparallel import AsyncError as AsyncError
from pyparallel import Channel as Channel
from pyparallel import DatagramTransport as DatagramTransport
from pyparallel import ProtectionError as ProtectionError
from pyparallel import SharedBuffer as SharedBuffer
from pyparallel import Timer as Timer
from pyparallel import Transport as Transport
from pyparallel import call_from_main_thread as call_from_main_thread
from pyparallel import call_from_main_thread_and_wait as call_from_main_thread_and_wait
from pyparallel import client as client
from pyparallel import cpu_count as cpu_count
from pyparallel import datagram_endpoint as datagram_endpoint
from pyparallel import draining as draining
from pyparallel import eternalize as eternalize
from pyparallel import gmtime as gmtime
from pyparallel import is_parallel_thread as is_parallel_thread
from pyparallel import protect as protect
from pyparallel import protected as protected
from pyparallel import rdtsc as rdtsc
from pyparallel import read_file as read_file
from pyparallel import read_lock as read_lock
from pyparallel import register as register
from pyparallel import run_once as run_once
from pyparallel import server as server
from pyparallel import stats as stats
from pyparallel import stop as stop
from pyparallel import submit_work as submit_work
from pyparallel import thread_seq_id as thread_seq_id
from pyparallel import timer as timer
from pyparallel import unprotect as unprotect
from pyparallel import worker_loop as worker_loop
from pyparallel import write_file as write_file
from pyparallel import write_lock as write_lock
from pyparallel import xlist as xlist

_R = TypeVar("_R")
_Mode = Literal["threads", "interpreters", "gil"]

# ---- locks -----------------------------------------------------------------

@final
class RWLock:
    """A many-readers/one-writer lock whose holds nest per thread (a read
    inside a write is fine, a write inside only a read is RuntimeError)."""

    def read(self) -> LockGuard[None]:
        """A context manager holding the lock shared for the with-block."""

    def write(self) -> LockGuard[None]:
        """A context manager holding the lock alone for the with-block."""

@final
class LockGuard(Generic[_R]):
    """What read_lock/write_lock (and RWLock.read/write) return; its
    __enter__ gives the locked object (None for an RWLock's own guards)."""

    @property
    def exclusive(self) -> bool:
        """True for a write lock, False for a read lock."""

    def __enter__(self) -> _R:
        """Take the lock for the calling thread."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]:
        """Release the calling thread's hold."""

# ---- immortality -------------------------------------------------------------

def immortalize_code(obj: _R, /) -> _R:
    """Make the constants of the code obj would run immortal (a function, a
    class's methods, a callable's __call__, a partial's function); return
    obj."""

def is_immortal(obj: object, /) -> bool:
    """Whether obj is immortal."""

# ---- HTTP ----------------------------------------------------------------------

@disjoint_base
class HttpRequest:
    """One HTTP request, as the C layer parsed it; made by the C layer only."""

    @property
    def method(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def client(self) -> tuple[str, int] | None: ...
    @property
    def scheme(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def keep_alive(self) -> bool: ...
    @property
    def target(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def raw_path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def header_fields(self) -> list[tuple[str, str]]: ...
    def _px_take_body(self, /) -> bytes | HttpBody: ...
    def _px_asgi_scope(
        self,
        type: str,
        asgi: dict[str, str],
        scheme: str,
        root_path: str,
        server: tuple[str, int] | None,
        extensions: dict[str, dict[str, object]],
        /,
    ) -> dict[str, Any]: ...
    def _px_asks_websocket(self, /) -> bool: ...
    # Storage for what a subclass builds on first use; unset until then.
    _query: object
    _headers: object

@final
class HttpBody:
    """The body of a request being received, read as it arrives
    (stream_request_body; Request.stream() and Request.reader())."""

    def read(self, size: int | None = -1, /) -> bytes: ...
    def readinto(self, buffer: WriteableBuffer, /) -> int: ...
    def _read(self, size: int | None = -1, /) -> bytes | None: ...
    def _when_readable(self, fn: Callable[[], object], /) -> bool: ...

@disjoint_base
class HttpProtocol:
    """Base class of HTTP protocols (pyparallel.http.HttpServer): the C layer
    parses and frames HTTP/1.1 and calls _px_handle(request) for each request
    on the connection's instance. The class attributes are read at
    register()."""

    max_header_size: ClassVar[int]
    max_uri_size: ClassVar[int]
    max_body_size: ClassVar[int]
    # Seconds; None: no limit.
    header_timeout: ClassVar[float | None]
    body_timeout: ClassVar[float | None]
    max_body_memory: ClassVar[int | None]
    min_body_rate: ClassVar[int | None]
    keepalive_timeout: ClassVar[float | None]
    # True: the handler is called once the head is complete, and reads the
    # body as it arrives.
    stream_request_body: ClassVar[bool]
    # The proxies whose X-Forwarded-For/-Proto and Forwarded fields set
    # request.client and request.scheme: addresses and networks, "*" for
    # any; None: none.
    forwarded_allow_ips: ClassVar[str | Sequence[str] | None]
    # The class the C layer makes requests of (an HttpRequest subclass with
    # __slots__ = ()).
    _px_request_class: ClassVar[type[HttpRequest]]
    def _px_stream(self, /) -> HttpStream: ...

@final
class HttpStream:
    """A request's streamed answer (HttpProtocol._px_stream(); docs/http.md,
    "Streaming and async handlers")."""

    @property
    def disconnected(self) -> bool: ...
    @property
    def started(self) -> bool: ...
    @property
    def ended(self) -> bool: ...
    @property
    def head_only(self) -> bool: ...
    def start(
        self,
        status: int,
        headers: list[tuple[str, str]] | dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None: ...
    def write(self, data: bytes | bytearray | memoryview | str, /) -> bool: ...
    def awrite(self, data: bytes | bytearray | memoryview | str, /) -> Coroutine[object, None, bool]: ...
    def end(self, /) -> None: ...
    def respond(
        self,
        answer: tuple[int, list[tuple[str, str]], bytes | bytearray | memoryview | str]
        | FileResponse
        | WebSocketAccept,
        /,
    ) -> None: ...
    def abort(self, /) -> None: ...
    def wait_disconnected(self, /) -> Coroutine[object, None, None]: ...
    def _write(self, data: bytes | bytearray | memoryview | str, /) -> int: ...
    def _when_drained(self, fn: Callable[[], object], /) -> bool: ...
    def _when_disconnected(self, fn: Callable[[], object], /) -> bool: ...

@final
class FileResponse:
    """A response _px_handle may return: the file at path, sent by the C
    layer with sendfile (ETag, Last-Modified, 304, ranges: 206, 416)."""

    def __init__(
        self,
        path: str,
        content_type: str | None,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
    ) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, str]] | None: ...

@final
class WebSocketAccept:
    """What a handler returns to upgrade its request to a WebSocket (see
    pyparallel.http.websocket)."""

    def __init__(
        self,
        target: object,
        opened: Callable[[WebSocket], object] | None = None,
        request: object = None,
        subprotocols: Sequence[str] = (),
        headers: list[tuple[str, str]] | None = None,
        *,
        max_message_size: int = 1048576,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 5.0,
        max_send_buffer: int = 4194304,
        compression: bool = True,
    ) -> None: ...

@final
class WebSocket:
    """A WebSocket connection, made by the upgrade of a request."""

    def send(self, message: str | Buffer, /) -> bool: ...
    def ping(self, data: Buffer = b"", /) -> bool: ...
    def close(self, code: int = 1000, reason: str = "") -> None: ...
    @property
    def request(self) -> Any: ...
    @property
    def subprotocol(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def close_code(self) -> int | None: ...
    @property
    def close_reason(self) -> str | None: ...
    @property
    def buffered_amount(self) -> int: ...
    def __getattr__(self, name: str) -> Any: ...
    def __setattr__(self, name: str, value: Any) -> None: ...

@final
class WebSocketGroup:
    """The process-wide group of WebSockets called name."""

    def __init__(self, name: str) -> None: ...
    def join(self, ws: WebSocket, /) -> bool: ...
    def leave(self, ws: WebSocket, /) -> None: ...
    def broadcast(self, message: str | Buffer, exclude: WebSocket | None = None) -> int: ...
    def __len__(self) -> int: ...
    @property
    def name(self) -> str: ...

# ---- the runtime ---------------------------------------------------------------

def _submit_to(worker: int, func: Callable[..., object], /, *args: object, **kwargs: object) -> Future[object]:
    """submit_work() on the given worker (0 .. workers - 1)."""

def _keep_socket_file(listener: Transport, /) -> None:
    """Leave a listener's Unix socket file when it closes (a reload)."""

def run(*, mode: _Mode | None = None, graceful_timeout: float | None = None, drain_delay: float = 0.0) -> None:
    """The loop of pyparallel.run(), without its signal handling."""

# ---- mode "interpreters": containers every interpreter shares -------------------

class SharedDict:
    """px.dict() in mode "interpreters": one dict for the main interpreter and
    every worker, holding values that can cross interpreters."""

    def __new__(cls, *args: object, **kwargs: object) -> SharedDict: ...
    def __len__(self) -> int: ...
    def __getitem__(self, key: object, /) -> object: ...
    def __setitem__(self, key: object, value: object, /) -> None: ...
    def __delitem__(self, key: object, /) -> None: ...
    def __contains__(self, key: object, /) -> bool: ...
    def get(self, key: object, default: object = None, /) -> object: ...

class SharedList:
    """px.list() in mode "interpreters": one list for the main interpreter and
    every worker, holding values that can cross interpreters."""

    def __new__(cls, *args: object, **kwargs: object) -> SharedList: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: object, /) -> object: ...
    def append(self, value: object, /) -> None: ...

class SharedXList:
    """px.xlist() in mode "interpreters": one interlocked list for the main
    interpreter and every worker."""

    def __new__(cls, *args: object, **kwargs: object) -> SharedXList: ...
    def __len__(self) -> int: ...
    def push(self, obj: object) -> None: ...
    def pop(self) -> object: ...
    def flush(self) -> builtins.list[object]: ...

def _shared_containers() -> bool:
    """Whether px.dict(), px.list() and px.xlist() make the shared kinds."""

def _main_shared(names: tuple[str, ...], /) -> dict[str, SharedDict | SharedList | SharedXList]:
    """The main interpreter's __main__ globals of these names that are shared
    containers (a worker interpreter's engine thread only)."""

def _eternalize_here[T](obj: T, /) -> T:
    """eternalize() of data each interpreter builds for itself (never refused
    in a worker interpreter)."""

def _worker_count() -> int:
    """The number of workers (starting the loop if needed)."""

def _recycle_worker(worker: int, timeout: float, /, *prepare: object) -> str | None:
    """Mode "interpreters": replace the worker's interpreter with a fresh one,
    in which prepare[0](*prepare[1:]) runs first, its connections finishing
    on the old one; the worker is left retired. None, or why the old
    interpreter is kept until the loop stops. TimeoutError when the
    worker's connections did not end within timeout."""

def _retire_worker(worker: int, retiring: bool, /) -> None:
    """Keep new connections off the worker, or give them to it again."""

def _worker_index() -> int:
    """The worker this interpreter serves (mode "interpreters"), or that the
    calling thread runs for; -1 off the workers."""

def _broken_workers() -> list[int]:
    """The workers whose interpreter's state broke since the last call."""

def _shutdown() -> None:
    """Stop the loop and join its threads; registered with atexit."""

def _importing_main(flag: bool, /) -> None:
    """Mode "interpreters": whether a worker interpreter is importing the
    main script now (submitting work meanwhile is refused)."""

def _log_in_main(fields: tuple[object, ...], message: str, exc: BaseException | None, /) -> None:
    """Mode "interpreters": log a worker interpreter's record in the main
    interpreter (see pyparallel._interp)."""

# The access log and the request counters (pyparallel.http's _accesslog and
# _metrics; docs/operations.md).
def _access_log_open(path: str | None, format: str, /) -> None: ...
def _access_log_reopen() -> None: ...
def _access_log_flush() -> None: ...
def _access_log_close() -> None: ...
def _http_counters_enable(on: bool, /) -> None: ...
def _http_counters(workers: int, /) -> list[dict[str, int | list[int]]]: ...
def _http_duration_bounds() -> tuple[float, ...]: ...
