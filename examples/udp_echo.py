"""A UDP echo server: every datagram goes back to its sender.

    python examples/udp_echo.py [--host 127.0.0.1] [--port 8007]
    python examples/udp_echo.py --selftest

The whole server is the Echo class: pyparallel makes one instance for the
endpoint, on one worker, and sends what datagram_received returns back to the
address the datagram came from. Try it with `nc -u 127.0.0.1 8007`.

--selftest serves on a free port, checks that eight concurrent clients get
each of their datagrams back (sizes up to 60000 bytes; a datagram the
network dropped is sent again), and exits.
"""

import argparse
import os
import socket
import sys

import pyparallel as px
from _selftest import run_clients, run_selftest


class Echo:
    def datagram_received(self, transport, data, addr):
        return data


def wait_for_echo(sock, message, port):
    try:
        while True:
            echoed, addr = sock.recvfrom(65536)
            if echoed == message and addr[1] == port:
                return True
    except TimeoutError:
        return False


def drive(port):
    def client(index):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            for size in (0, 1, 100, 1472, 9000, 60000):
                message = os.urandom(size)
                # UDP may drop a datagram (the server's receive buffer holds
                # only a few large ones): send again, as UDP clients do, and
                # skip late echoes of earlier attempts.
                for _attempt in range(20):
                    sock.sendto(message, ("127.0.0.1", port))
                    if wait_for_echo(sock, message, port):
                        break
                else:
                    raise AssertionError(f"client {index}: no echo of {size} bytes")

    run_clients(client, 8)
    stats = px.stats()
    return f"8 clients, {stats['bytes_out']} bytes echoed, mode {stats['mode']}, io {stats['io']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)

    endpoint = px.datagram_endpoint(Echo, local_addr=(args.host, 0 if args.selftest else args.port))
    host, port = endpoint.sockname
    if args.selftest:
        return run_selftest("udp_echo", lambda: drive(port))
    banner = f"UDP echo on {host}:{port} ({px.stats()['mode']} mode); Ctrl-C stops it"
    px.call_from_main_thread(print, banner, flush=True)
    px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
