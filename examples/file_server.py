"""Files served from a handler without blocking its worker.

    python examples/file_server.py [--root DIR] [--port 8008]
    python examples/file_server.py --selftest

A client sends a file name on a line; the server answers with the file's
size, a newline and its bytes, or "error: ..." when it cannot read it. The
handler is a coroutine: px.read_file runs the read on the engine's file
threads and returns a Future, which the handler awaits on its worker's
asyncio loop, so the worker serves other connections while the file is
read. Try it with `echo README.md | nc 127.0.0.1 8008`.

--selftest writes files around the read piece size (1 MiB) with
px.write_file into a temporary directory, serves it on a free port, checks
that eight concurrent clients get every file exactly, and exits.
"""

import argparse
import asyncio
import os
import sys
import tempfile

import pyparallel as px
from _selftest import connect, recv_exactly, run_clients, run_selftest

ROOT_ENV = "FILE_SERVER_ROOT"


class FileServer:
    lines_mode = True

    async def lines_received(self, transport, line):
        root = os.environ[ROOT_ENV]
        name = os.path.basename(line.decode("utf-8", "replace").strip())
        try:
            data = await asyncio.wrap_future(px.read_file(os.path.join(root, name)))
        except OSError as exc:
            return f"error: {exc.strerror}\n"
        return (b"%d\n" % len(data), data)


SIZES = {"empty": 0, "small": 100, "piece": 1 << 20, "piece_plus_1": (1 << 20) + 1, "big": 3 << 20}


def drive(port, root):
    contents = {name: os.urandom(size) for name, size in SIZES.items()}
    for name, data in contents.items():
        if px.write_file(os.path.join(root, name), data).result(timeout=10) != len(data):
            raise AssertionError(f"short write of {name}")

    def client(index):
        with connect(port) as sock:
            for name, data in contents.items():
                sock.sendall(name.encode() + b"\n")
                header = b""
                while not header.endswith(b"\n"):
                    header += recv_exactly(sock, 1)
                if int(header) != len(data) or recv_exactly(sock, len(data)) != data:
                    raise AssertionError(f"client {index}: wrong bytes for {name}")
            sock.sendall(b"missing\n")
            answer = b""
            while not answer.endswith(b"\n"):
                answer += recv_exactly(sock, 1)
            if not answer.startswith(b"error: No such file"):
                raise AssertionError(f"client {index}: {answer!r} for a missing file")

    run_clients(client, 8)
    return f"8 clients, {len(SIZES)} files each, mode {px.stats()['mode']}, io {px.stats()['io']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8008)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="file-server-") as scratch:
        # The workers (in mode "interpreters", their own interpreters) read
        # the root from the environment, which every interpreter shares.
        os.environ[ROOT_ENV] = os.path.abspath(scratch if args.selftest else args.root)
        server = px.server(args.host, 0 if args.selftest else args.port)
        px.register(server, FileServer)
        host, port = server.sockname
        if args.selftest:
            return run_selftest("file_server", lambda: drive(port, scratch))
        px.call_from_main_thread(print, f"file server on {host}:{port}; Ctrl-C stops it", flush=True)
        px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
