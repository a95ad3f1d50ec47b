"""Benchmark: an echo server in pyparallel against one in asyncio, on the same interpreter.

Each contender is a server in its own subprocess (bench/peers/echo_*.py) on
127.0.0.1. The load generator is bench/echo_client.c (compiled on first use
into build/bench/), a separate single-threaded process holding --connections
connections with --depth pipelined messages of --size bytes in flight on
each; it checks every echoed byte. A round runs the client once against every
server (the servers are all started first and wait idle meanwhile): a
warm-up, then a measured window of --duration seconds (or --max-messages
messages). Reported, as the median over rounds:

  messages per second     echoed bytes / size / window
  server CPU per message  the server's user + system time over the same window
                          (/proc/<pid>/stat, all its threads) / messages

The load generator shares the machine's cores with the server; its own CPU
share is given in the notes. Every server is stopped at the end (SIGTERM,
then SIGKILL after 10 s), also after an error or an interrupt.

  python bench/echo.py [--quick] [--connections N] [--depth N] [--json PATH]
                       [--asyncio-python PYTHON ...]
"""

import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile

import _common

PEERS = os.path.join(_common.BENCH_DIR, "peers")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class Server:
    """One echo server subprocess; start() waits for it to listen."""

    def __init__(self, name, command):
        self.name = name
        self.command = command
        self.process = None
        self.port = None
        self.stderr = tempfile.TemporaryFile()
        self.stop_note = None

    def start(self):
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL
        )
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            deadline = _common.now() + START_TIMEOUT
            while not line.endswith(b"\n"):
                left = deadline - _common.now()
                if left <= 0 or not sel.select(left):
                    raise SystemExit(
                        f"{self.name}: server not listening after {START_TIMEOUT:g} s{self.error_output()}"
                    )
                chunk = os.read(self.process.stdout.fileno(), 256)
                if not chunk:
                    raise SystemExit(
                        f"{self.name}: server exited with status {self.process.wait()}{self.error_output()}"
                    )
                line += chunk
        words = line.split()
        if len(words) != 2 or words[0] != b"LISTENING":
            raise SystemExit(f"{self.name}: unexpected first line {line!r}")
        self.port = int(words[1])

    def error_output(self):
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return f"; its stderr:\n{text}" if text else ""

    def stop(self):
        """SIGTERM, then SIGKILL; records how the server ended."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(STOP_TIMEOUT)
            if status != 0:
                self.stop_note = f"exited with status {status} on SIGTERM"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.stop_note = f"did not exit within {STOP_TIMEOUT:g} s of SIGTERM: killed"
        finally:
            self.process.stdout.close()


def run_client(client, server, args, duration):
    command = [
        client,
        str(server.port),
        str(server.process.pid),
        str(args.connections),
        str(args.depth),
        str(args.size),
        str(args.warmup),
        str(duration),
        str(args.max_messages),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.warmup + duration + 30)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{server.name}: the load generator hung") from None
    if result.returncode != 0:
        raise SystemExit(f"{server.name}: the load generator failed: {result.stderr.strip()}{server.error_output()}")
    sample = json.loads(result.stdout)
    if sample["messages"] == 0:
        raise SystemExit(f"{server.name}: no message echoed in the measured window")
    return sample


def interpreter_label(python):
    probe = (
        "import sys; print(sys.version.split()[0], "
        "'GIL' if getattr(sys, '_is_gil_enabled', lambda: True)() else 'free-threaded')"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--connections", type=int, default=64, metavar="N", help="connections of the load generator (default 64)"
    )
    p.add_argument("--depth", type=int, default=16, metavar="N", help="messages in flight per connection (default 16)")
    p.add_argument("--size", type=int, default=64, metavar="BYTES", help="bytes per message (default 64)")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        metavar="S",
        help="seconds before the measured window (default 0.5, 0.3 with --quick)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="seconds of the measured window (default 3, 1 with --quick)",
    )
    p.add_argument(
        "--max-messages",
        type=int,
        default=50_000_000,
        metavar="N",
        help="end the window early after N messages (default 50000000)",
    )
    p.add_argument(
        "--asyncio-python",
        action="append",
        default=[],
        metavar="PYTHON",
        help="also run the asyncio server on this interpreter (for instance the GIL build); may be repeated",
    )
    args = _common.parse(p, argv)
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 0.5
    duration = args.duration or (1.0 if args.quick else 3.0)
    px = _common.import_pyparallel(args)
    client = _common.build_c_tool("echo_client.c")

    servers = []
    if px is not None:
        servers.append(Server(_common.OURS, [sys.executable, os.path.join(PEERS, "echo_pyparallel.py")]))
    asyncio_server = os.path.join(PEERS, "echo_asyncio.py")
    servers.append(Server("asyncio", [sys.executable, asyncio_server]))
    for python in args.asyncio_python:
        servers.append(Server(f"asyncio ({interpreter_label(python)})", [python, asyncio_server]))
    try:
        for server in servers:
            server.start()
        samples = _common.rounds(
            {server.name: (lambda s=server: run_client(client, s, args, duration)) for server in servers}, args.repeat
        )
    finally:
        for server in servers:
            server.stop()

    report = _common.Report(
        "echo",
        "echo: messages per second and server CPU per message",
        {
            "connections": args.connections,
            "depth": args.depth,
            "size": args.size,
            "warmup_s": args.warmup,
            "duration_s": duration,
        },
    )
    for server in servers:
        report.add(
            "messages per second",
            server.name,
            [s["messages"] / s["seconds"] for s in samples[server.name]],
            "msg/s",
            "higher",
        )
    for server in servers:
        report.add(
            "server CPU per message",
            server.name,
            [s["server_cpu_seconds"] / s["messages"] * 1e6 for s in samples[server.name]],
            "µs",
            "lower",
        )
    report.note(
        f"{args.connections} connections x {args.depth} messages of "
        f"{args.size} bytes in flight; {duration:g} s windows after "
        f"{args.warmup:g} s of warm-up"
    )
    for server in servers:
        rows = samples[server.name]
        busy = statistics.median(s["server_cpu_seconds"] / s["seconds"] for s in rows)
        client_busy = statistics.median(s["client_cpu_seconds"] / s["seconds"] for s in rows)
        report.note(f"{server.name}: the server kept {busy:.2f} cores busy, the load generator {client_busy:.2f}")
        if server.stop_note:
            report.note(f"{server.name}: server {server.stop_note}")
    return report.finish(args, _common.environment(args, px))


if __name__ == "__main__":
    main(sys.argv[1:])
