"""The live status page of --metrics, in headless Chromium: it renders
with no external asset, polls /status.json, and its charts (per worker:
busy share and requests per second; for the server: requests per second,
connections, hand-offs, queue depths, memory) receive data and change
under a small load, with no console error. A screenshot is saved under
the test's tmp_path."""

import http.client
import threading

import pytest

from browser import chromium, console_errors, wait_for
from conftest import LOCALHOST
from ops_helpers import OpsServer

pytestmark = pytest.mark.end_to_end

CHARTS = ["busy-0", "rps-0", "busy-1", "rps-1", "rps", "connections", "handoffs", "queue", "memory"]


def load(port, stop):
    """Keep-alive requests, one after the other, until stop is set."""
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
    while not stop.is_set():
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello"
    conn.close()


def test_the_status_page_shows_live_charts(tmp_path):
    server = OpsServer("--app", "ops_apps:Api", "--metrics", f"{LOCALHOST}:0")
    stop = threading.Event()
    loaders = [threading.Thread(target=load, args=(server.port, stop)) for _ in range(2)]
    try:
        with chromium() as driver:
            driver.get(f"http://{LOCALHOST}:{server.metrics_port}/?interval=200")
            assert driver.title == "pyparallel status"
            wait_for(driver, lambda d: d.execute_script("return window.pxStatus.samples") >= 2)
            for t in loaders:
                t.start()
            # Under load: requests per second show, on the page and in its
            # charts, for the server and for the workers together.
            wait_for(
                driver,
                lambda d: d.execute_script("return window.pxStatus.requestsPerSecond") > 10,
                message="the page never showed the load",
            )
            points = driver.execute_script(
                "return Object.fromEntries(Object.entries(pxStatus.charts).map(([k, c]) => [k, c.points.length]))"
            )
            assert set(CHARTS) <= set(points), points
            assert all(points[name] >= 2 for name in CHARTS), points
            canvas = driver.find_element("id", "chart-rps")
            assert int(canvas.get_attribute("data-points")) >= 2
            before = driver.execute_script("return document.getElementById('chart-rps').toDataURL()")
            samples = driver.execute_script("return pxStatus.samples")
            wait_for(driver, lambda d: d.execute_script("return pxStatus.samples") >= samples + 3)
            after = driver.execute_script("return document.getElementById('chart-rps').toDataURL()")
            assert after != before, "the chart did not change"
            rows = driver.find_elements("css selector", "#workers tbody tr")
            assert len(rows) == 2
            busiest = max(float(row.find_element("class name", "rps").text) for row in rows)
            assert busiest > 0
            assert "mode" in driver.find_element("id", "summary").text
            assert driver.find_element("id", "error").text == ""
            shot = tmp_path / "status.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
            assert console_errors(driver) == []
    finally:
        stop.set()
        for t in loaders:
            if t.is_alive() or t.ident is not None:
                t.join(10)
        server.stop()
