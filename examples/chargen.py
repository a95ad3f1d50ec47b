"""A character generator (RFC 864): the server sends lines of rotating
printable characters for as long as the client keeps reading.

    python examples/chargen.py [--host 127.0.0.1] [--port 8019]
    python examples/chargen.py --selftest

It shows send_complete: the runtime calls it once a send has been handed to
the kernel in full, and what it returns is the next send. A client that stops
reading (an "I/O hog") therefore stops the production of more data instead
of making the server buffer it: memory stays flat, and the other connections
are served as usual (px.stats()["io_hogs"] counts connections with more than
1 MiB of unsent data).

--selftest has three clients read and check 1 MiB each while a fourth client
never reads, and checks that the server's memory did not grow with it.
"""

import argparse
import os
import sys
import time

import pyparallel as px
from _selftest import connect, recv_exactly, run_selftest

LINE_WIDTH = 72
PRINTABLE = bytes(range(32, 127))  # 95 characters


def pattern_lines(count, start=0):
    """RFC 864's pattern: line i holds 72 characters starting at i mod 95."""
    doubled = PRINTABLE * 2
    lines = []
    for i in range(start, start + count):
        offset = i % len(PRINTABLE)
        lines.append(doubled[offset : offset + LINE_WIDTH] + b"\r\n")
    return b"".join(lines)


# The pattern repeats every 95 lines; sending whole periods keeps every
# chunk identical. Ten periods: about 69 KiB per send.
CHUNK = pattern_lines(len(PRINTABLE) * 10)


class Chargen:
    initial_bytes_to_send = CHUNK

    def send_complete(self, transport, send_id):
        return CHUNK

    def data_received(self, transport, data):
        return None  # RFC 864: what the client sends is discarded


def rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def drive(port):
    rss_before = rss_mib()
    hog = connect(port)  # never reads
    try:
        readers = [connect(port) for _ in range(3)]
        want = 1 << 20
        expected = (CHUNK * (want // len(CHUNK) + 1))[:want]
        for sock in readers:
            if recv_exactly(sock, want) != expected:
                raise AssertionError("the character pattern is broken")
            sock.close()
        time.sleep(0.5)
        growth = rss_mib() - rss_before
        if growth > 64:
            raise AssertionError(f"the server grew by {growth:.0f} MiB for a client that never reads")
    finally:
        hog.close()
    return f"3 readers got 1 MiB each, RSS grew {growth:.1f} MiB with a hog connected"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8019)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)

    server = px.server(args.host, 0 if args.selftest else args.port)
    px.register(server, Chargen)
    host, port = server.sockname
    if args.selftest:
        return run_selftest("chargen", lambda: drive(port))
    # Printed by run() on the main thread once it serves (and Ctrl-C works).
    banner = f"chargen on {host}:{port}; try: nc {host} {port} | head; Ctrl-C stops it"
    px.call_from_main_thread(print, banner, flush=True)
    px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
