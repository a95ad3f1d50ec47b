"""The asyncio peer of bench/http.py: a minimal HTTP/1.1 keep-alive server.

Serves GET /plaintext ("Hello, World!"), GET /json ({"message": "Hello,
World!"}), GET /work and GET /shared?k=N (the logic of http_logic.py, which
every peer shares), each with Date, Content-Type and Content-Length fields,
on asyncio.Protocol; pipelined requests are answered in order. Anything else
gets 404. It parses no more than a benchmark needs (the request line; no
bodies), which flatters it against a real server.

With --uvloop the loops are uvloop's (libuv) instead of asyncio's own.

With --loops 1 it runs one event loop (the way asyncio is run on the GIL
build); with --loops N, N threads each run their own loop on their own
listening socket bound with SO_REUSEPORT, so the kernel spreads connections
among them (the way to use every core on free-threaded 3.13t). Prints
"LISTENING <port>" once every loop accepts, and stops on SIGTERM or SIGINT.

  python bench/peers/http_asyncio.py --port PORT [--loops N] [--uvloop]
"""

import argparse
import asyncio
import signal
import threading
import time
from email.utils import formatdate

import http_logic

NOT_FOUND = b"Not Found\n"


def plaintext_body(query):
    return http_logic.PLAINTEXT


def json_body(query):
    return http_logic.json_body()


def work_body(query):
    return http_logic.work().encode()


def shared_body(query):
    try:
        return http_logic.shared(query.decode()).encode()
    except (KeyError, ValueError):
        return None


ROUTES = {
    b"/plaintext": (b"text/plain", plaintext_body),
    b"/json": (b"application/json", json_body),
    b"/work": (b"text/plain; charset=utf-8", work_body),
    b"/shared": (b"text/plain; charset=utf-8", shared_body),
}


class DateField:
    """The Date field, formatted once a second rather than per response."""

    def __init__(self):
        self.second = None
        self.field = b""

    def get(self):
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.field = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self.field


class Http(asyncio.Protocol):
    def __init__(self, date):
        self.date = date
        self.buffer = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buffer = self.buffer + data if self.buffer else data
        replies = []
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            line_end = buffer.find(b"\r\n", start)
            parts = buffer[start:line_end].split(b" ")
            start = end + 4
            body = None
            if len(parts) == 3 and parts[0] == b"GET":
                path, _, query = parts[1].partition(b"?")
                route = ROUTES.get(path)
                if route is not None:
                    body = route[1](query)
            if body is None:
                replies.append(self.response(b"404 Not Found", b"text/plain", NOT_FOUND))
            else:
                replies.append(self.response(b"200 OK", route[0], body))
        self.buffer = buffer[start:]
        if replies:
            self.transport.write(b"".join(replies))

    def response(self, status, content_type, body):
        return b"".join(
            (
                b"HTTP/1.1 ",
                status,
                b"\r\n",
                self.date.get(),
                b"Content-Type: ",
                content_type,
                b"\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )


async def serve(port, reuse_port, ready, stopped_by_signal):
    loop = asyncio.get_running_loop()
    date = DateField()
    server = await loop.create_server(lambda: Http(date), "127.0.0.1", port, backlog=4096, reuse_port=reuse_port)
    stopped = loop.create_future()
    if stopped_by_signal:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set_result, None)
    ready(loop, stopped)
    async with server:
        await stopped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="run uvloop's event loops")
    args = parser.parse_args()
    if args.loops < 1:
        parser.error("--loops must be at least 1")
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.loops == 1:
        asyncio.run(serve(args.port, False, lambda loop, stopped: print("LISTENING", args.port, flush=True), True))
        return
    # The main thread waits for a signal and stops each thread's loop; the
    # threads inherit the blocked mask, so the signal reaches sigwait only.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    loops = []
    started = threading.Barrier(args.loops + 1)

    def ready(loop, stopped):
        loops.append((loop, stopped))
        started.wait()

    threads = [
        threading.Thread(target=asyncio.run, args=(serve(args.port, True, ready, False),)) for _ in range(args.loops)
    ]
    for thread in threads:
        thread.start()
    started.wait()
    print("LISTENING", args.port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for loop, stopped in loops:
        loop.call_soon_threadsafe(stopped.set_result, None)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
