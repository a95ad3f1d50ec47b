"""Proxy headers (--forwarded-allow-ips, HttpServer.forwarded_allow_ips):
from a trusted peer, X-Forwarded-For/-Proto and RFC 7239 Forwarded set the
client address and scheme that handlers see (request.client,
request.scheme), WSGI's REMOTE_ADDR and wsgi.url_scheme, and the ASGI
scope's client and scheme; from any other peer they are ignored. The
untrusted peer is the same machine connecting from 127.0.0.2, which the
default list (127.0.0.1) does not name. Spoofed lists show that the client
is taken from the right, past the trusted proxies only."""

import http.client
import json
import subprocess
import sys

import pytest

from conftest import LOCALHOST
from ops_helpers import OpsServer

UNTRUSTED = ("127.0.0.2", 0)
REAL = "203.0.113.7"


@pytest.fixture(scope="module")
def api():
    server = OpsServer("--app", "ops_apps:Api", "--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8")
    yield server
    server.kill()


def seen(port, headers=(), source=None, path="/who"):
    conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10, source_address=source)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("headers", "client", "scheme"),
    [
        ([], [LOCALHOST, None], "http"),
        ([("X-Forwarded-For", REAL), ("X-Forwarded-Proto", "https")], [REAL, 0], "https"),
        # The client sent its own X-Forwarded-For; the proxy appended the
        # address it saw: the spoofed one is left of it, and ignored.
        ([("X-Forwarded-For", f"6.6.6.6, {REAL}")], [REAL, 0], "http"),
        # Through an inner trusted proxy (10/8): skipped from the right.
        (
            [("X-Forwarded-For", f"6.6.6.6, {REAL}, 10.1.2.3"), ("X-Forwarded-Proto", "http, https, https")],
            [REAL, 0],
            "https",
        ),
        # A list of trusted proxies only: the leftmost.
        ([("X-Forwarded-For", "10.0.0.9, 10.0.0.8")], ["10.0.0.9", 0], "http"),
        # Two field lines read as one list.
        ([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", REAL)], [REAL, 0], "http"),
        ([("Forwarded", 'for="[2001:db8::1]:4711";proto=https;by=10.0.0.1')], ["2001:db8::1", 4711], "https"),
        ([("Forwarded", f"for=6.6.6.6, for={REAL}:8080;proto=HTTPS")], [REAL, 8080], "https"),
        # Forwarded is the standard: it wins over X-Forwarded-For.
        ([("Forwarded", f"for={REAL}"), ("X-Forwarded-For", "6.6.6.6")], [REAL, 0], "http"),
        # Unknown or obfuscated nodes, garbage: the peer stays the client.
        ([("Forwarded", "for=unknown;proto=https")], [LOCALHOST, None], "https"),
        ([("X-Forwarded-For", "not-an-address")], [LOCALHOST, None], "http"),
        ([("X-Forwarded-Proto", "https")], [LOCALHOST, None], "https"),
    ],
)
def test_a_trusted_proxy_sets_the_client_and_scheme(api, headers, client, scheme):
    got = seen(api.port, headers)
    if client[1] is None:
        assert got["client"][0] == client[0] and got["client"][1] > 0
    else:
        assert got["client"] == client
    assert got["scheme"] == scheme


def test_headers_from_other_peers_are_ignored(api):
    got = seen(
        api.port,
        [("X-Forwarded-For", REAL), ("X-Forwarded-Proto", "https"), ("Forwarded", f"for={REAL};proto=https")],
        source=UNTRUSTED,
    )
    assert got["client"][0] == "127.0.0.2" and got["scheme"] == "http"


def test_the_default_list_is_loopback_and_star_trusts_anyone():
    default = OpsServer("--app", "ops_apps:Api")
    star = OpsServer("--app", "ops_apps:Api", "--forwarded-allow-ips", "*")
    try:
        headers = [("X-Forwarded-For", REAL)]
        assert seen(default.port, headers)["client"] == [REAL, 0]
        assert seen(default.port, headers, source=UNTRUSTED)["client"][0] == "127.0.0.2"
        assert seen(star.port, headers, source=UNTRUSTED)["client"] == [REAL, 0]
    finally:
        default.stop()
        star.stop()


def test_a_bad_list_is_refused(tmp_path):
    for ips in ("127.0.0.1,example.org", "10.0.0.0/33"):
        with pytest.raises(AssertionError, match="--forwarded-allow-ips: invalid _allow_ips value|is not an IP"):
            OpsServer("--app", "ops_apps:Api", "--forwarded-allow-ips", ips)
    # Set as a class attribute: px.register refuses it.
    script = tmp_path / "bad.py"
    script.write_text(
        "import pyparallel as px\n"
        "from pyparallel.http import HttpServer\n"
        "class Bad(HttpServer):\n"
        "    forwarded_allow_ips = ['10.0.0.1', 'proxy.example']\n"
        "try:\n"
        "    px.register(px.server('127.0.0.1', 0), Bad)\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert "Bad.forwarded_allow_ips: '10.0.0.1,proxy.example' is not a list" in out.stdout, out


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_wsgi_environ_and_asgi_scope(interface, tmp_path):
    log = tmp_path / "access.log"
    server = OpsServer("--app", f"ops_apps:{interface}_app", "--interface", interface, "--access-log", str(log))
    try:
        spoof = [("X-Forwarded-For", REAL), ("X-Forwarded-Proto", "https")]
        trusted, untrusted = seen(server.port, spoof, path="/"), seen(server.port, spoof, source=UNTRUSTED, path="/")
    finally:
        server.stop()
    if interface == "wsgi":
        assert (trusted["client"], trusted["port"], trusted["scheme"]) == (REAL, "0", "https")
        assert trusted["server_port"] == "443" or trusted["server_port"] == str(server.port)
        assert (untrusted["client"], untrusted["scheme"]) == ("127.0.0.2", "http")
    else:
        assert (trusted["client"], trusted["scheme"]) == ([REAL, 0], "https")
        assert (untrusted["client"][0], untrusted["scheme"]) == ("127.0.0.2", "http")
    # The access log names the client the handler saw.
    hosts = sorted(line.split(" ", 1)[0] for line in log.read_text().splitlines())
    assert hosts == ["127.0.0.2", REAL]
