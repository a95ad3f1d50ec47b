"""The asyncio peer of bench/echo.py: an echo server with one event loop.

Listens on 127.0.0.1 (port 0 unless given), prints "LISTENING <port>" once it
accepts connections, and echoes every byte back from data_received until
SIGTERM or SIGINT.

  python bench/peers/echo_asyncio.py [PORT]
"""

import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
    stopped = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set_result, None)
    print("LISTENING", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await stopped


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
