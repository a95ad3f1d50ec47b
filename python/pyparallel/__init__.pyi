"""Type stubs for pyparallel: the whole public API of ``import pyparallel as px``.

docs/api.md describes every name with an example. Names that start with an
underscore exist only here, for type checkers: the protocol classes that
document what ``px.register`` looks up on a protocol class, the ``stats()``
dictionary, and the aliases for sendable data. Import them under
``typing.TYPE_CHECKING`` to annotate code of your own.

``dict`` and ``list`` are pyparallel's protected containers; the built-ins are
spelled ``builtins.dict`` and ``builtins.list`` throughout.
"""

import asyncio
import builtins
import os
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    NotRequired,
    ParamSpec,
    Protocol,
    Self,
    TypeAlias,
    TypedDict,
    TypeVar,
    TypeVarTuple,
    final,
    overload,
    type_check_only,
)

from typing_extensions import disjoint_base

from ._core import LockGuard as _LockGuard
from ._core import RWLock as _RWLock

__version__: str

__all__ = [
    "AsyncError",
    "Channel",
    "DatagramTransport",
    "ProtectionError",
    "SharedBuffer",
    "Timer",
    "Transport",
    "call_from_main_thread",
    "call_from_main_thread_and_wait",
    "client",
    "cpu_count",
    "datagram_endpoint",
    "dict",
    "draining",
    "eternalize",
    "gmtime",
    "is_parallel_thread",
    "list",
    "map",
    "protect",
    "protected",
    "rdtsc",
    "read_file",
    "read_lock",
    "register",
    "run",
    "run_once",
    "server",
    "stats",
    "stop",
    "submit_work",
    "thread_seq_id",
    "timer",
    "unprotect",
    "worker_loop",
    "write_file",
    "write_lock",
    "xlist",
]

_T = TypeVar("_T", default=Any)
_R = TypeVar("_R")
_KT = TypeVar("_KT")
_VT = TypeVar("_VT")
_P = ParamSpec("_P")
_Ts = TypeVarTuple("_Ts")

# ---- data a callback may return or a transport may send ------------------

_Chunk: TypeAlias = bytes | bytearray | memoryview | str
# A tuple is sent as one vectored write.
_Sendable: TypeAlias = _Chunk | tuple[_Chunk, ...]
# What a protocol callback may return: None sends nothing.
_Reply: TypeAlias = _Sendable | None
_StrOrBytesPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# ---- servers and clients -------------------------------------------------

# Not @final although it cannot be subclassed: _Listener refines it below.
@disjoint_base
class Transport:
    """A connection, or a listener (from ``server``).

    Created by ``server`` and ``client`` and passed to protocol callbacks;
    not instantiable directly, nor subclassable. Every method may be called
    from any thread.
    """

    def send(self, data: _Sendable, /) -> int:
        """Queue data for sending, in call order; return its send id (from 1)."""

    def close(self) -> None:
        """Close once queued data is sent (a listener stops accepting)."""

    def is_closing(self) -> bool:
        """True once close() was called or the connection ended."""

    def fileno(self) -> int:
        """A listener's socket descriptor (it stays the listener's), to hand
        to another process; ValueError for a connection or once closed."""

    def sendfile(self, before: _Chunk, path: _StrOrBytesPath, after: _Chunk, /) -> int:
        """Send before, the whole file, and after as one send; return its id."""

    def sendfile_ranged(
        self,
        before: _Chunk,
        path: _StrOrBytesPath,
        after: _Chunk,
        offset: int,
        nbytes: int,
        /,
    ) -> int:
        """Send before, nbytes of the file from offset, and after; return its id."""

    def pause_reading(self) -> None:
        """Stop delivering received bytes to the protocol."""

    def resume_reading(self) -> None:
        """Resume delivering received bytes."""

    @property
    def peername(self) -> tuple[str, int] | str | None:
        """The remote address as (host, port), or a Unix socket's path (""
        for a peer without one, as a connecting socket has); None for a
        listener or a client that is not connected yet."""

    @property
    def sockname(self) -> tuple[str, int] | str | None:
        """The local address as (host, port), or a Unix socket's path;
        None before a client's connection exists."""

@final
@type_check_only
class _Listener(Transport):
    """What ``server`` returns: a Transport whose address is always known."""

    @property
    def peername(self) -> None:
        """A listener has no peer."""

    @property
    def sockname(self) -> tuple[str, int]:
        """The bound address as (host, port): the port chosen for port 0."""

@final
@type_check_only
class _UnixListener(Transport):
    """What ``server(path=...)`` returns."""

    @property
    def peername(self) -> None:
        """A listener has no peer."""

    @property
    def sockname(self) -> str:
        """The socket's path as given (an abstract name starts with "\\0")."""

_UnixPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

@overload
def server(
    host: str, port: int, *, backlog: int = 1024, path: None = None, reuse_port: bool = False, fd: None = None
) -> _Listener:
    """Listen on host:port; connections are accepted once registered.
    reuse_port sets SO_REUSEPORT: several processes listen on one port."""

@overload
def server(
    host: None = None,
    port: None = None,
    *,
    backlog: int = 1024,
    path: _UnixPath,
    reuse_port: Literal[False] = False,
    fd: None = None,
) -> _UnixListener:
    """Listen on the Unix domain socket at path (a stale socket file is
    replaced, and the file is removed at close)."""

@overload
def server(
    host: None = None,
    port: None = None,
    *,
    backlog: int = 1024,
    path: None = None,
    reuse_port: Literal[False] = False,
    fd: int,
) -> _Listener | _UnixListener:
    """Serve a socket that already listens (systemd's socket activation,
    a reload's parent), through a duplicate of fd: fd stays the caller's."""

@overload
def client(host: str, port: int, *, path: None = None) -> Transport:
    """Connect to host:port (a name is resolved off the workers); the
    connection starts once registered."""

@overload
def client(host: None = None, port: None = None, *, path: _UnixPath) -> Transport:
    """Connect to the Unix domain socket at path once registered."""

def register(transport: Transport, protocol: type[object]) -> None:
    """Serve transport with protocol, a class (one instance per connection).

    Every member of the class is optional; ``_ProtocolClass`` lists them.
    """

def run(
    *,
    mode: Literal["threads", "interpreters", "gil"] | None = None,
    graceful_timeout: float | None = None,
    drain_delay: float = 0.0,
) -> None:
    """Run until stop(), SIGINT/SIGTERM, or nothing is registered or pending.

    Main thread only. mode (default: PYPARALLEL_MODE, else the build's own)
    applies when run() starts the loop. With graceful_timeout, a shutdown
    drains first (listeners closed, accepted connections left to finish;
    drain_delay seconds before, draining() is true already), and one that
    takes longer than graceful_timeout seconds in all ends the process;
    None: no drain and no limit.
    """

def run_once(timeout: float | None = None) -> int:
    """Run the main thread's queued calls once; return how many ran."""

def stop() -> None:
    """Ask run() to return (from any thread); shutdown is clean. With a
    graceful_timeout, the first call drains and a second one ends the drain."""

def draining() -> bool:
    """True once a graceful shutdown began (its listeners are closed): a
    health route answers 503 then, so that a load balancer sends no more."""

# ---- datagram endpoints --------------------------------------------------

@final
class DatagramTransport:
    """A UDP endpoint (from ``datagram_endpoint``), served on one worker.

    Not instantiable directly. Every method may be called from any thread.
    """

    def sendto(self, data: _Sendable, addr: tuple[str, int] | None = None) -> None:
        """Send data as one datagram to addr, a (host, port) with a numeric
        address; None: the remote of a connected endpoint."""

    def close(self) -> None:
        """Close the endpoint; connection_lost runs on its worker."""

    @property
    def sockname(self) -> tuple[str, int]:
        """The bound address as (host, port)."""

    @property
    def peername(self) -> tuple[str, int] | None:
        """The remote address of a connected endpoint, else None."""

def datagram_endpoint(
    protocol: type[object],
    *,
    local_addr: tuple[str, int] | None = None,
    remote_addr: tuple[str, int] | None = None,
) -> DatagramTransport:
    """A UDP endpoint bound to local_addr and/or connected to remote_addr,
    served by one instance of protocol (``_DatagramProtocolClass``)."""

@type_check_only
class _DatagramProtocolClass(Protocol):
    """The members a datagram protocol class may define; all optional."""

    def connection_made(self, transport: DatagramTransport, /) -> _Sendable | None: ...
    def datagram_received(
        self, transport: DatagramTransport, data: bytes, addr: tuple[str, int], /
    ) -> _Sendable | None: ...
    def error_received(self, transport: DatagramTransport, exc: OSError, /) -> object: ...
    def connection_lost(self, transport: DatagramTransport, exc: BaseException | None, /) -> object: ...

# ---- protocol classes ----------------------------------------------------

@type_check_only
class _ProtocolClass(Protocol):
    """Every member a protocol class may define; all of them are optional.

    Callbacks of one connection never run concurrently; callbacks of
    different connections run in parallel on the workers.
    """

    # Sent as soon as the connection is made; or a callable returning it
    # (taking no arguments, or a method taking only self).
    initial_bytes_to_send: ClassVar[_Sendable | Callable[..., _Sendable]]
    # Sent in reply to every receive, instead of calling data_received.
    next_bytes_to_send: ClassVar[_Sendable | Callable[..., _Sendable]]
    # Deliver complete lines to lines_received instead of data_received.
    lines_mode: ClassVar[bool]
    # Longest line accepted in lines mode (default 65536 bytes).
    max_line_length: ClassVar[int]

    def connection_made(self, transport: Transport) -> _Reply: ...
    def data_received(self, transport: Transport, data: bytes) -> _Reply: ...
    def lines_received(self, transport: Transport, line: bytes) -> _Reply: ...
    def send_complete(self, transport: Transport, send_id: int) -> _Reply: ...
    # The peer half-closed (sends no more; every byte was delivered). A true
    # result keeps the connection open for sending until transport.close();
    # anything else closes it once what is queued is sent. Without this
    # member the connection closes that way too.
    def eof_received(self, transport: Transport) -> bool | None: ...
    def connection_lost(self, transport: Transport, exc: OSError | AsyncError | None) -> object: ...
    def exception_handler(self, transport: Transport, exc: BaseException) -> object: ...

# One protocol per member, for annotating a class that defines only some.
@type_check_only
class _HasConnectionMade(Protocol):
    def connection_made(self, transport: Transport) -> _Reply: ...

@type_check_only
class _HasDataReceived(Protocol):
    def data_received(self, transport: Transport, data: bytes) -> _Reply: ...

@type_check_only
class _HasLinesReceived(Protocol):
    lines_mode: ClassVar[bool]
    def lines_received(self, transport: Transport, line: bytes) -> _Reply: ...

@type_check_only
class _HasSendComplete(Protocol):
    def send_complete(self, transport: Transport, send_id: int) -> _Reply: ...

@type_check_only
class _HasEofReceived(Protocol):
    def eof_received(self, transport: Transport) -> bool | None: ...

@type_check_only
class _HasConnectionLost(Protocol):
    def connection_lost(self, transport: Transport, exc: OSError | AsyncError | None) -> object: ...

@type_check_only
class _HasExceptionHandler(Protocol):
    def exception_handler(self, transport: Transport, exc: BaseException) -> object: ...

# ---- work ----------------------------------------------------------------

@overload
def submit_work(
    func: Callable[..., Coroutine[Any, Any, _R]],
    /,
    *args: Any,
    callback: Callable[[_R], object] | None = None,
    errback: Callable[[BaseException], object] | None = None,
    **kwargs: Any,
) -> Future[_R]:
    """Run the coroutine func(*args, **kwargs) as a task of a worker's
    asyncio loop; the future gets its outcome."""

@overload
def submit_work(
    func: Callable[..., _R],
    /,
    *args: Any,
    callback: Callable[[_R], object] | None = None,
    errback: Callable[[BaseException], object] | None = None,
    **kwargs: Any,
) -> Future[_R]:
    """Run func(*args, **kwargs) on a worker; the future gets the outcome."""

def worker_loop() -> asyncio.AbstractEventLoop:
    """The asyncio event loop of the calling worker (created on first use);
    RuntimeError off the workers."""

def map(
    func: Callable[[_T], _R],
    iterable: Iterable[_T],
    *,
    chunksize: int | None = None,
) -> builtins.list[_R]:
    """Apply func to every item on all workers; results in input order."""

def call_from_main_thread(func: Callable[_P, object], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
    """Run func on the main thread from run()/run_once(); don't wait."""

def call_from_main_thread_and_wait(func: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Run func on the main thread and return its result (or raise)."""

@final
class Timer:
    """A timer from ``timer``; not instantiable directly."""

    def cancel(self) -> None:
        """Stop the timer; a run under way completes. Idempotent."""

def timer(
    delay: float,
    func: Callable[[*_Ts], object],
    /,
    *args: *_Ts,
    period: float | None = None,
) -> Timer:
    """Run func(*args) on a worker after delay seconds, every period if given."""

# ---- files ---------------------------------------------------------------

def read_file(path: _StrOrBytesPath, *, offset: int = 0, length: int | None = None) -> Future[bytes]:
    """Read the file (length bytes from offset; None: to its end) off the
    workers; the Future gets the bytes or an OSError."""

def write_file(path: _StrOrBytesPath, data: _Sendable, *, append: bool = False, exclusive: bool = False) -> Future[int]:
    """Write data to the file (created; truncated unless append; exclusive:
    fail when it exists) off the workers; the Future gets the byte count."""

# ---- shared state --------------------------------------------------------

def protect(obj: _R, /) -> _R:
    """Attach a readers-writer lock to obj; return obj. AsyncError in a
    worker's interpreter (mode interpreters), where no other sees obj."""

def unprotect(obj: _R, /) -> _R:
    """Remove the lock protect() gave obj; return obj (ProtectionError for
    px.dict and px.list, whose lock is their own)."""

def protected(obj: object, /) -> bool:
    """Whether obj has a lock (protect, px.dict, px.list)."""

def read_lock(obj: _R, /) -> _LockGuard[_R]:
    """``with read_lock(obj):`` shares obj's lock with other readers."""

def write_lock(obj: _R, /) -> _LockGuard[_R]:
    """``with write_lock(obj):`` holds obj's lock alone (no upgrade from a
    read hold: RuntimeError)."""

class dict(builtins.dict[_KT, _VT]):
    """A dict protected from creation: mutations take its write lock,
    whole-container reads its read lock. In mode interpreters px.dict()
    makes a pyparallel._core.SharedDict instead: one dict for every
    interpreter, holding None, bool, int, float, str, bytes, tuples of these
    and SharedBuffers (with a dict's methods, but no dict subclass;
    isinstance(d, px.dict) holds)."""

    # The lock that read_lock/write_lock take; its own, made with the dict.
    __px_rwlock__: _RWLock

class list(builtins.list[_T]):
    """A list protected from creation: mutations take its write lock,
    whole-container reads its read lock. In mode interpreters px.list()
    makes a pyparallel._core.SharedList, one list for every interpreter
    holding the values a SharedDict holds."""

    __px_rwlock__: _RWLock

@final
class xlist(Generic[_T]):
    """Interlocked list: push from any thread, pop (LIFO), or flush all. In
    mode interpreters px.xlist() makes a pyparallel._core.SharedXList, one
    for every interpreter, holding the values a SharedDict holds."""

    def push(self, obj: _T, /) -> None:
        """Add obj; safe from any thread."""

    def pop(self) -> _T:
        """The most recently pushed object; IndexError when empty."""

    def flush(self) -> builtins.list[_T]:
        """Everything pushed so far, in push order; atomically empties."""

    def __len__(self) -> int: ...

def eternalize(obj: _R, /) -> _R:
    """Make obj's graph immortal (never freed; treat it as read-only).
    AsyncError in a worker's interpreter outside a module's top level."""

@final
class SharedBuffer:
    """Memory every interpreter and thread sees without copying, through the
    buffer protocol (``memoryview(buf)``); freed with its last holder. Pass
    it to workers and through channels (it cannot be pickled)."""

    def __new__(cls, size: int) -> Self:
        """size zero-filled, writable bytes."""

    @classmethod
    def from_file(cls, path: str | bytes | os.PathLike[str] | os.PathLike[bytes], /) -> SharedBuffer:
        """The file at path, mapped read-only."""

    @property
    def readonly(self) -> bool: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

@final
class Channel(Generic[_T]):
    """A FIFO of shareable values between the main thread and the workers,
    in every mode; items are copied (or shared: SharedBuffer, Channel)."""

    def __new__(cls, maxsize: int = 0, *, name: str | None = None) -> Self:
        """maxsize: the most items it holds (0: no limit); name: for stats()."""

    @property
    def name(self) -> str: ...
    @property
    def maxsize(self) -> int: ...
    def put(self, item: _T, timeout: float | None = None) -> None:
        """Append item, waiting up to timeout seconds for room (queue.Full)."""

    def get(self, timeout: float | None = None) -> _T:
        """Remove the oldest item, waiting up to timeout seconds (queue.Empty)."""

    def __len__(self) -> int: ...

# ---- introspection -------------------------------------------------------

def rdtsc() -> int:
    """The CPU's time-stamp counter (x86); elsewhere monotonic nanoseconds."""

def gmtime() -> str:
    """Now as an RFC 9110 date, e.g. 'Sun, 22 Nov 2026 04:05:19 GMT' (cached)."""

def cpu_count() -> int:
    """Logical CPUs online."""

def thread_seq_id() -> int:
    """A small integer for the calling thread: 0 for the one that imported
    pyparallel, then 1, 2... in order of first call; never reused."""

def is_parallel_thread() -> bool:
    """True on the engine's worker threads."""

@type_check_only
class _WorkerStats(TypedDict):
    callbacks: int
    queue_depth: int
    handoffs: int
    steals: int
    # Nanoseconds spent in callbacks.
    busy_ns: int
    # Mode "interpreters" only: how much the resident set grew while the
    # worker's interpreter was created and set up (bytes).
    memory: NotRequired[int]

@type_check_only
class _ChannelStats(TypedDict):
    name: str
    depth: int
    maxsize: int
    puts: int
    gets: int
    puts_per_second: float
    gets_per_second: float

@type_check_only
class _Stats(TypedDict):
    mode: Literal["threads", "interpreters", "gil"]
    io: Literal["io_uring", "epoll"]
    workers: int
    threads: int
    worker: builtins.list[_WorkerStats]
    connections: int
    accepted: int
    bytes_in: int
    bytes_out: int
    io_hogs: int
    pending_work: int
    datagrams_dropped: int
    errors: int
    # SystemExit escaping a callback in a worker interpreter (mode
    # "interpreters"; 0 in the others).
    broken_interpreters: int
    # Worker interpreters replaced in place while the loop ran, and
    # replacements that did not happen (mode "interpreters").
    recycled_interpreters: int
    recycle_failures: int
    channels: builtins.list[_ChannelStats]

def stats() -> _Stats:
    """A snapshot of the runtime's counters."""

# ---- errors --------------------------------------------------------------

class AsyncError(Exception):
    """The root of pyparallel's own exceptions."""

class ProtectionError(AsyncError):
    """read_lock/write_lock on an object that is not protected."""
