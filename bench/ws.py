"""Benchmark: WebSocket echo and a broadcast room, pyparallel against uvicorn, granian and the websockets library.

Every server serves the same two endpoints on 127.0.0.1 (bench/peers/ws_*.py):

  pyparallel 3.13t threads      ws_pyparallel.py: @websocket routes of an
  pyparallel 3.13 interpreters  HttpServer, its room a WebSocketGroup
  uvicorn websockets            ws_asgi.py, a raw ASGI app, on uvicorn
                                --ws websockets (uvloop, httptools)
  granian asgi                  the same app on granian --interface asgi
  websockets                    ws_websockets.py, the library's own asyncio
                                server, websockets.broadcast() for the room

  echo  256 connections, each keeping --depth binary messages of 16 bytes in
        flight (closed loop): messages per second and the p99 of a message's
        round trip. Servers with workers use --workers of them.
  room  1000 connections in one room; one of them sends --rate messages per
        second, each broadcast to all 1000: deliveries per second and the
        p99 of the fan-out latency (from sending to each delivery). A room
        must live in one process for the peers (a room over processes needs
        a broker, which none has), so they serve it with one worker;
        pyparallel's room spans its workers.

The load generator is bench/ws_client.c (compiled on first use), a separate
single-threaded process; each (scenario, server) runs once per round, in an
order that rotates (the median of --repeat rounds counts). The issue's
targets: echo messages/s of pyparallel's best mode at least 2x the best
peer's; broadcast p99 below the best peer's. Every server is stopped at the
end, on error and Ctrl-C too.

  python bench/ws.py [--quick] [--duration S] [--depth N] [--rate R] [--json PATH]
"""

import json
import os
import subprocess
import sys

import _common
import _servers
from _servers import PX_INTERPRETERS, PX_THREADS, Server, free_port, server_env, serving

ROOT_DIR = os.path.dirname(_common.BENCH_DIR)
UVICORN_WS = "uvicorn websockets"
GRANIAN_WS = "granian asgi"
WEBSOCKETS = "websockets"
PYPARALLEL = (PX_THREADS, PX_INTERPRETERS)
ECHO_CONNECTIONS = 256
ROOM_CONNECTIONS = 1000
ECHO_TARGET = 2.0


def servers_for(scenario, args, bench_python):
    """The contenders of one scenario, not started."""
    workers = args.workers if scenario == "echo" else 1
    peers = os.path.join(_common.BENCH_DIR, "peers")
    out = []

    def add(name, command, env=None, processes=1):
        port = free_port()
        out.append(
            Server(
                name,
                [part.format(port=port) for part in command],
                port,
                (scenario,),
                env=env or server_env(),
                processes=processes,
            )
        )

    for name, python, mode in (
        (PX_THREADS, os.path.join(ROOT_DIR, ".venv-ft", "bin", "python"), "threads"),
        (PX_INTERPRETERS, os.path.join(ROOT_DIR, ".venv-gil", "bin", "python"), "interpreters"),
    ):
        if not args.peers_only:
            env = server_env(PYPARALLEL_MODE=mode, PYPARALLEL_WORKERS=str(args.workers))
            add(name, [python, os.path.join(peers, "ws_pyparallel.py"), "{port}"], env)
    tool = os.path.dirname(bench_python)
    add(
        UVICORN_WS,
        [os.path.join(tool, "uvicorn"), "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)]
        + ["--ws", "websockets", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "ws_asgi:app"],
        processes=workers + (1 if workers > 1 else 0),
    )
    add(
        GRANIAN_WS,
        [os.path.join(tool, "granian"), "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)]
        + ["--interface", "asgi", "--http", "1", "--log-level", "warning", "ws_asgi:app"],
        processes=workers + 1,
    )
    add(WEBSOCKETS, [bench_python, os.path.join(peers, "ws_websockets.py"), "{port}"])
    return out


def run_client(client, server, scenario, args, duration):
    path, connections, param = (
        ("/echo", ECHO_CONNECTIONS, args.depth) if scenario == "echo" else ("/room", ROOM_CONNECTIONS, args.rate)
    )
    command = [client, scenario, str(server.port), path, str(connections), str(param), str(args.warmup), str(duration)]
    cpu0 = server.cpu_seconds()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.warmup + duration + 120)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{server.name}: the load generator hung") from None
    if result.returncode != 0:
        raise SystemExit(f"{server.name} ({scenario}): the load generator failed: {result.stderr.strip()}")
    sample = json.loads(result.stdout)
    sample["server_cpu_seconds"] = server.cpu_seconds() - cpu0
    return sample


def best(samples, names, key, higher):
    values = {n: sorted(s[key] for s in samples[n])[len(samples[n]) // 2] for n in names if n in samples}
    if not values:
        return None, None
    name = (max if higher else min)(values, key=values.get)
    return name, values[name]


def main(argv=None):
    p = _common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=4, metavar="N", help="echo messages in flight per connection (4)")
    p.add_argument("--rate", type=float, default=50, metavar="R", help="room messages per second (50)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="seconds measured (3; --quick 1)")
    p.add_argument("--warmup", type=float, default=None, metavar="S", help="seconds before (0.5; --quick 0.3)")
    p.add_argument("--bench-python", default=sys.executable, help="the venv of uvicorn, granian and websockets")
    args = _common.parse(p, argv, repeats=(3, 1))
    duration = args.duration or (1.0 if args.quick else 3.0)
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 0.5
    _servers.raise_open_files_limit()
    client = _common.build_c_tool("ws_client.c")

    report = _common.Report(
        "ws",
        "WebSocket: echo and a broadcast room",
        {
            "echo_connections": ECHO_CONNECTIONS,
            "depth": args.depth,
            "room_connections": ROOM_CONNECTIONS,
            "rate": args.rate,
            "duration_s": duration,
            "warmup_s": args.warmup,
        },
        reference=PX_THREADS,
    )
    all_samples = {}
    for scenario in ("echo", "room"):
        servers = servers_for(scenario, args, args.bench_python)
        with serving(servers, lambda server: None):
            samples = _common.rounds(
                {s.name: (lambda s=s, sc=scenario: run_client(client, s, sc, args, duration)) for s in servers},
                args.repeat,
            )
        all_samples[scenario] = samples
        group = "echo, 256 connections" if scenario == "echo" else "broadcast room, 1000 connections"
        for server in servers:
            rows = samples[server.name]
            report.add(
                "messages per second",
                server.name,
                [r["messages"] / r["seconds"] for r in rows],
                "msg/s",
                "higher",
                group=group,
            )
            report.add("p99 latency", server.name, [r["p99_us"] / 1000 for r in rows], "ms", "lower", group=group)
            report.add("p50 latency", server.name, [r["p50_us"] / 1000 for r in rows], "ms", "lower", group=group)
            report.add(
                "server CPU per message",
                server.name,
                [r["server_cpu_seconds"] / max(r["messages"], 1) * 1e6 for r in rows],
                "µs",
                "lower",
                group=group,
            )
            if server.stop_note:
                report.note(f"{server.name} ({scenario}): server {server.stop_note}")

    peers = (UVICORN_WS, GRANIAN_WS, WEBSOCKETS)
    rates = {n: [{"rate": r["messages"] / r["seconds"]} for r in rows] for n, rows in all_samples["echo"].items()}
    ours_name, ours = best(rates, PYPARALLEL, "rate", True)
    peer_name, peer = best(rates, peers, "rate", True)
    if ours and peer:
        ratio = ours / peer
        report.note(
            f"target echo >= {ECHO_TARGET:g}x the best peer: {ours_name} {ours:,.0f} msg/s vs {peer_name} "
            f"{peer:,.0f}: {ratio:.2f}x ({'met' if ratio >= ECHO_TARGET else 'not met'})"
        )
    room = all_samples["room"]
    ours_name, ours = best(room, PYPARALLEL, "p99_us", False)
    peer_name, peer = best(room, peers, "p99_us", False)
    if ours is not None and peer is not None:
        met = "met" if ours < peer else "not met"
        report.note(
            f"target broadcast p99 below the best peer's: {ours_name} {ours / 1000:.1f} ms vs {peer_name} "
            f"{peer / 1000:.1f} ms ({met})"
        )
    report.note(
        f"echo: {ECHO_CONNECTIONS} connections x {args.depth} messages of 16 bytes in flight; room: "
        f"{ROOM_CONNECTIONS} members, {args.rate:g} messages/s broadcast; {duration:g} s windows after "
        f"{args.warmup:g} s; peers serve the room with one worker (a room is per process for them)"
    )
    return report.finish(args, _common.environment(args))


if __name__ == "__main__":
    main(sys.argv[1:])
