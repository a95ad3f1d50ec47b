"""An echo server on a Unix domain socket, and a pyparallel client of it.

    python examples/uds_echo.py [--path ./echo.sock]
    python examples/uds_echo.py --selftest

The same protocol classes as over TCP: px.server(path=...) listens on the
socket file (a stale one left by a crashed server is replaced, a live one
is an error) and removes it when it closes; px.client(path=...) connects to
it. A Unix socket is the usual link between a proxy and an app on one
machine (nginx's `proxy_pass http://unix:/path/to/app.sock;`): no TCP port
to guard, and the file's permissions say who may connect. Try it with
`nc -U ./echo.sock`.

--selftest serves on a socket in a temporary directory, where a pyparallel
client and eight plain ones check their echoes, and exits.
"""

import argparse
import os
import socket
import sys
import tempfile

import pyparallel as px
from _selftest import recv_exactly, run_clients, run_selftest


class Echo:
    def data_received(self, transport, data):
        return data


class Greeter:
    """A pyparallel client: sends a greeting, closes once it is echoed."""

    initial_bytes_to_send = b"hello over a unix socket"

    def __init__(self):
        self.received = b""

    def data_received(self, transport, data):
        self.received += data
        if self.received == self.initial_bytes_to_send:
            px.call_from_main_thread(print, f"client got its echo from {transport.peername}", flush=True)
            transport.close()


def drive(path):
    def client(index):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            for i in range(50):
                message = b"client %d message %d\n" % (index, i)
                sock.sendall(message)
                if recv_exactly(sock, len(message)) != message:
                    raise AssertionError(f"client {index}: wrong echo of message {i}")

    run_clients(client, 8)
    stats = px.stats()
    return f"8 clients over {path}, {stats['bytes_out']} bytes echoed, mode {stats['mode']}, io {stats['io']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="./echo.sock", help="the socket file (default: ./echo.sock)")
    parser.add_argument("--selftest", action="store_true", help="serve in a temporary directory, check, exit")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "echo.sock") if args.selftest else args.path
        server = px.server(path=path)
        px.register(server, Echo)
        px.register(px.client(path=path), Greeter)
        if args.selftest:
            return run_selftest("uds_echo", lambda: drive(path))
        px.call_from_main_thread(print, f"echo server on unix:{server.sockname}; Ctrl-C stops it", flush=True)
        px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
