"""--metrics ADDR:PORT: Prometheus' text exposition format from a listener
of its own, validated with prometheus_client's parser: requests by status
class, the request duration histogram, bytes in and out, open
connections, per-worker busy time, requests, hand-offs, callbacks and
queue depths, I/O hogs, memory; the JSON the status page polls; and a
scrape that still answers while every worker is busy."""

import http.client
import json
import re
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import LOCALHOST, expected_mode
from ops_helpers import OpsServer


@pytest.fixture(scope="module")
def server():
    server = OpsServer("--app", "ops_apps:Api", "--metrics", f"{LOCALHOST}:0")
    yield server
    server.kill()


def get(port, path):
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def scrape(server):
    status, content_type, body = get(server.metrics_port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return families


def value(families, name, sample=None, **labels):
    family = families[name]
    for s in family.samples:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((name, sample, labels))


def test_counters_and_histogram_follow_the_requests(server):
    before = scrape(server)
    for _ in range(5):
        assert get(server.port, "/hello")[0] == 200
    assert get(server.port, "/slow")[0] == 200
    assert get(server.port, "/nowhere")[0] == 404
    assert get(server.port, "/boom")[0] == 500
    after = scrape(server)

    def delta(name, sample=None, **labels):
        return value(after, name, sample, **labels) - value(before, name, sample, **labels)

    requests = "pyparallel_http_requests"
    assert after[requests].type == "counter"
    assert delta(requests, code="2xx") == 6
    assert delta(requests, code="4xx") == 1
    assert delta(requests, code="5xx") == 1
    duration = "pyparallel_http_request_duration_seconds"
    assert after[duration].type == "histogram"
    assert delta(duration, duration + "_count") == 8
    # /slow sleeps 50 ms: it is past the 25 ms bucket, the others are not.
    assert delta(duration, duration + "_bucket", le="0.025") == 7
    assert delta(duration, duration + "_bucket", le="+Inf") == 8
    assert delta(duration, duration + "_sum") >= 0.05
    assert delta("pyparallel_http_response_body_bytes") == 5 * 5 + 4 + 10 + 22
    assert delta("pyparallel_received_bytes") > 0 and delta("pyparallel_sent_bytes") > 0
    assert delta("pyparallel_accepted_connections") == 8
    workers = {s.labels["worker"] for s in after["pyparallel_worker_busy_seconds"].samples}
    assert workers == {"0", "1"}
    assert sum(s.value for s in after["pyparallel_worker_requests"].samples) >= 8
    # (A handler that sleeps may be handed off: its worker goes on, not busy.)
    assert sum(s.value for s in after["pyparallel_worker_busy_seconds"].samples) > 0
    for name in (
        "pyparallel_worker_handoffs",
        "pyparallel_worker_callbacks",
        "pyparallel_worker_queue_depth",
        "pyparallel_io_hogs",
        "pyparallel_pending_work",
        "pyparallel_resident_memory_bytes",
    ):
        assert name in after, name
    if expected_mode() == "interpreters":
        memory = after["pyparallel_worker_interpreter_memory_bytes"].samples
        assert len(memory) == 2 and all(s.value > 0 for s in memory)


def test_open_connections_gauge(server):
    baseline = value(scrape(server), "pyparallel_open_connections")
    socks = [socket.create_connection((LOCALHOST, server.port)) for _ in range(3)]
    try:
        for sock in socks:  # each connection served once, so that it is surely accepted
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert value(scrape(server), "pyparallel_open_connections") == baseline + 3
    finally:
        for sock in socks:
            sock.close()


def test_status_json_and_unknown_paths(server):
    status, content_type, body = get(server.metrics_port, "/status.json")
    assert status == 200 and content_type == "application/json"
    data = json.loads(body)
    assert len(data["workers"]) == 2 and data["mode"] == expected_mode()
    assert {"busy_seconds", "requests", "handoffs", "queue_depth", "memory"} <= set(data["workers"][0])
    assert {"connections", "accepted", "bytes_in", "bytes_out", "requests_by_class", "resident_bytes"} <= set(data)
    assert get(server.metrics_port, "/nope")[0] == 404
    # The status page: one HTML file that loads nothing from elsewhere.
    status, content_type, page = get(server.metrics_port, "/")
    assert status == 200 and content_type == "text/html; charset=utf-8"
    assert b"status.json" in page and b'getContext("2d")' in page  # it polls, and draws on canvases
    assert not re.search(rb"""(?:src|href)\s*=\s*["'](?!data:)""", page), "the page refers to another resource"
    assert not re.search(rb"https?://", page)
    # The application's port does not serve the metrics.
    assert get(server.port, "/metrics")[0] == 404


def test_a_scrape_answers_while_every_worker_is_busy(server):
    # Two slow handlers hold both workers' threads; the listener of the
    # metrics is not theirs.
    threads = [threading.Thread(target=get, args=(server.port, "/slow")) for _ in range(8)]
    for t in threads:
        t.start()
    started = time.monotonic()
    families = scrape(server)
    assert time.monotonic() - started < 2
    assert "pyparallel_http_requests" in families
    for t in threads:
        t.join()


def test_a_bad_address_is_refused():
    with pytest.raises(AssertionError, match="expected ADDR:PORT"):
        OpsServer("--app", "ops_apps:Api", "--metrics", "localhost")
