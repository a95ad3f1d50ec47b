"""--metrics ADDR:PORT: the server's counters in Prometheus' text
exposition format (/metrics), a live status page (/) and the JSON it
polls (/status.json), from a listener of their own.

The listener is a small threaded http.server in the main interpreter, not
a route of the application: a scrape or the page still answers when every
worker is busy, and it costs the workers nothing. Every figure is read
when asked: the engine's (px.stats(): connections, bytes, per-worker
busy time, hand-offs, callbacks, queue depths, I/O hogs, interpreter
memory) and the HTTP layer's per-worker request counters (requests by
status class, the duration histogram, response bytes), which the workers
count each in a cache line of their own and which are summed here, per
scrape, not on the request path.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyparallel as px
from pyparallel import _core

from . import _status

# typing is imported for the type checker only (see _request.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The counters' status classes, from index 1 (index 0 counts statuses
# outside 100..599, which the C layer never answers with).
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def snapshot() -> dict[str, Any]:
    """Everything the exposition and the page show, read now."""
    stats = px.stats()
    workers = stats["worker"]
    counters = _core._http_counters(len(workers))
    per_worker = []
    for i, (w, c) in enumerate(zip(workers, counters, strict=True)):
        requests = c["requests"]
        assert isinstance(requests, list)
        per_worker.append(
            {
                "worker": i,
                "busy_seconds": w["busy_ns"] / 1e9,
                "requests": sum(requests),
                "handoffs": w["handoffs"],
                "callbacks": w["callbacks"],
                "steals": w["steals"],
                "queue_depth": w["queue_depth"],
                "memory": w.get("memory"),
            }
        )
    return {
        "time": time.time(),
        "mode": stats["mode"],
        "io": stats["io"],
        "threads": stats["threads"],
        "connections": stats["connections"],
        "accepted": stats["accepted"],
        "bytes_in": stats["bytes_in"],
        "bytes_out": stats["bytes_out"],
        "io_hogs": stats["io_hogs"],
        "pending_work": stats["pending_work"],
        "resident_bytes": _resident_bytes(),
        "workers": per_worker,
        "counters": counters,
    }


def _line(out: list[str], name: str, value: float, labels: str = "") -> None:
    out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def exposition(snap: dict[str, Any]) -> str:
    """The Prometheus text format (version 0.0.4) of a snapshot."""
    out: list[str] = []
    counters: list[dict[str, Any]] = snap["counters"]
    workers: list[dict[str, Any]] = snap["workers"]

    _family(out, "pyparallel_http_requests_total", "counter", "HTTP requests answered, by status class.")
    for i, cls in enumerate(_CLASSES, 1):
        _line(out, "pyparallel_http_requests_total", sum(c["requests"][i] for c in counters), f'code="{cls}"')

    name = "pyparallel_http_request_duration_seconds"
    _family(out, name, "histogram", "Time from a request's complete head to its answer queued (streamed: ended).")
    cumulative = 0
    bounds = _core._http_duration_bounds()
    for b, bound in enumerate(bounds):
        cumulative += sum(c["duration"][b] for c in counters)
        _line(out, name + "_bucket", cumulative, f'le="{bound}"')
    cumulative += sum(c["duration"][len(bounds)] for c in counters)
    _line(out, name + "_bucket", cumulative, 'le="+Inf"')
    _line(out, name + "_sum", sum(c["duration_sum_ns"] for c in counters) / 1e9)
    _line(out, name + "_count", cumulative)

    process = (
        (
            "pyparallel_http_response_body_bytes_total",
            "counter",
            "Bytes of HTTP response bodies.",
            sum(c["body_bytes"] for c in counters),
        ),
        ("pyparallel_received_bytes_total", "counter", "Bytes received on every connection.", snap["bytes_in"]),
        ("pyparallel_sent_bytes_total", "counter", "Bytes sent on every connection.", snap["bytes_out"]),
        ("pyparallel_open_connections", "gauge", "Connections open now.", snap["connections"]),
        ("pyparallel_accepted_connections_total", "counter", "Connections accepted.", snap["accepted"]),
        ("pyparallel_io_hogs", "gauge", "Connections over the I/O hog threshold now.", snap["io_hogs"]),
        ("pyparallel_pending_work", "gauge", "Work items queued on every worker.", snap["pending_work"]),
        ("pyparallel_threads", "gauge", "OS threads of the engine, spares included.", snap["threads"]),
        ("pyparallel_resident_memory_bytes", "gauge", "The process's resident memory.", snap["resident_bytes"]),
    )
    for metric, kind, help_text, number in process:
        _family(out, metric, kind, help_text)
        _line(out, metric, number)

    per_worker = (
        ("pyparallel_worker_busy_seconds_total", "counter", "busy_seconds", "Time the worker spent in callbacks."),
        ("pyparallel_worker_requests_total", "counter", "requests", "HTTP requests the worker answered."),
        ("pyparallel_worker_handoffs_total", "counter", "handoffs", "Times the worker's blocked thread was replaced."),
        ("pyparallel_worker_callbacks_total", "counter", "callbacks", "Callbacks and work items the worker ran."),
        ("pyparallel_worker_steals_total", "counter", "steals", "Work items the worker took from a busy one."),
        ("pyparallel_worker_queue_depth", "gauge", "queue_depth", "Events and work waiting for the worker."),
    )
    for metric, kind, key, help_text in per_worker:
        _family(out, metric, kind, help_text)
        for w in workers:
            _line(out, metric, w[key], f'worker="{w["worker"]}"')
    if any(w["memory"] is not None for w in workers):
        metric = "pyparallel_worker_interpreter_memory_bytes"
        _family(out, metric, "gauge", "Memory held by the worker's interpreter (mode interpreters).")
        for w in workers:
            if w["memory"] is not None:
                _line(out, metric, w["memory"], f'worker="{w["worker"]}"')
    return "\n".join(out) + "\n"


def status_json(snap: dict[str, Any]) -> bytes:
    """What the status page polls: the snapshot less the raw counters, and
    the requests by status class summed."""
    data = {key: value for key, value in snap.items() if key != "counters"}
    data["requests_by_class"] = {
        cls: sum(c["requests"][i] for c in snap["counters"]) for i, cls in enumerate(_CLASSES, 1)
    }
    return json.dumps(data, separators=(",", ":")).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "pyparallel-metrics"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", exposition(snapshot()).encode())
        elif path == "/status.json":
            self._send(200, "application/json", status_json(snapshot()))
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", _status.page())
        else:
            self._send(404, "text/plain; charset=utf-8", b"Not Found\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not the application's requests: not logged."""


class _Listener(ThreadingHTTPServer):
    daemon_threads = True


class _Listener6(_Listener):
    address_family = socket.AF_INET6


class MetricsServer:
    """The listener of --metrics, serving from a daemon thread; it turns the
    request counters on."""

    def __init__(self, host: str, port: int) -> None:
        listener = _Listener6 if ":" in host else _Listener
        self.httpd = listener((host, port), _Handler)
        _core._http_counters_enable(True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="pyparallel-metrics", daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def parse_address(text: str) -> tuple[str, int]:
    """ADDR:PORT ("127.0.0.1:9100", "[::1]:9100", ":9100" for every IPv4
    address); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics {text}: expected ADDR:PORT, e.g. 127.0.0.1:9100")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)
