"""An echo server: whatever a client sends comes back.

    python examples/echo.py [--host 127.0.0.1] [--port 8007]
    python examples/echo.py --selftest

The whole server is the Echo class: pyparallel makes one instance per
connection and sends what data_received returns. Connections are spread over
all workers, and on a free-threaded Python their data_received calls run in
parallel. Try it with `nc 127.0.0.1 8007`.

--selftest serves on a free port, checks that eight concurrent clients get
their bytes back exactly (small messages and a 1 MiB one), and exits.
"""

import argparse
import os
import sys
import threading

import pyparallel as px
from _selftest import connect, recv_exactly, run_clients, run_selftest


class Echo:
    initial_bytes_to_send = b"echo server ready\r\n"

    def data_received(self, transport, data):
        return data


def drive(port):
    banner = b"echo server ready\r\n"

    def client(index):
        with connect(port) as sock:
            if recv_exactly(sock, len(banner)) != banner:
                raise AssertionError("wrong banner")
            for i in range(50):
                message = b"client %d message %d\n" % (index, i)
                sock.sendall(message)
                if recv_exactly(sock, len(message)) != message:
                    raise AssertionError(f"client {index}: wrong echo of message {i}")
            big = os.urandom(1 << 20)
            writer = threading.Thread(target=sock.sendall, args=(big,))
            writer.start()
            echoed = recv_exactly(sock, len(big))
            writer.join()
            if echoed != big:
                raise AssertionError(f"client {index}: 1 MiB echo differs")

    run_clients(client, 8)
    stats = px.stats()
    return f"8 clients, {stats['bytes_out']} bytes echoed, mode {stats['mode']}, io {stats['io']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)

    server = px.server(args.host, 0 if args.selftest else args.port)
    px.register(server, Echo)
    host, port = server.sockname
    if args.selftest:
        return run_selftest("echo", lambda: drive(port))
    # Printed by run() on the main thread once it serves (and Ctrl-C works).
    banner = f"echo server on {host}:{port} ({px.stats()['mode']} mode); Ctrl-C stops it"
    px.call_from_main_thread(print, banner, flush=True)
    px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
