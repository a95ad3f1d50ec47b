"""The static server's redirect of a directory to its slash form never leaves
this server (the open redirect of CVE-2021-28861 in CPython's http.server).

A request for //evil.com, where a directory evil.com exists under the root,
used to be answered "301 Location: //evil.com/": a protocol-relative URL
that a browser follows to the host evil.com. Every Location the static
server sends must be a path on this server: one leading slash, and no
backslash (browsers read "/\\evil.com" as "//evil.com").

Targets are sent byte for byte as written here, as an attacker sends them.
"""

import pytest

from http_helpers import Client, serve_http
from pyparallel.http import HttpServer


class Site(HttpServer):
    pass


@pytest.fixture
def root(tmp_path):
    (tmp_path / "evil.com").mkdir()
    (tmp_path / "\\evil.com").mkdir()
    (tmp_path / "docs").mkdir()
    return tmp_path


def redirects(rt, root, targets):
    port = serve_http(rt, Site, root=str(root))

    def driver():
        with Client(port) as client:
            return [client.request("GET", target) for target in targets]

    return rt.run(driver)


@pytest.mark.parametrize(
    "target, location",
    [
        ("//evil.com", "/evil.com/"),
        ("///evil.com", "/evil.com/"),
        ("//evil.com?next=1", "/evil.com/?next=1"),
        ("/%2Fevil.com", None),
        ("/\\evil.com", "/%5Cevil.com/"),
        ("//\\evil.com", "/%5Cevil.com/"),
        ("/%5Cevil.com", "/%5Cevil.com/"),
        ("//docs", "/docs/"),
        ("/docs", "/docs/"),
    ],
)
def test_a_redirect_stays_on_this_server(rt, root, target, location):
    (answer,) = redirects(rt, root, [target])
    if location is None:
        assert answer.status == 404
        return
    assert (answer.status, answer.header("Location")) == (301, location)
    assert not answer.header("Location").startswith("//")
    assert "\\" not in answer.header("Location")


def test_the_collapsed_location_serves_the_directory(rt, root):
    (root / "evil.com" / "index.html").write_text("here")
    (root / "\\evil.com" / "index.html").write_text("backslash")
    first, second, third = redirects(rt, root, ["//evil.com", "/evil.com/", "/%5Cevil.com/"])
    assert first.header("Location") == "/evil.com/"
    assert (second.status, second.body) == (200, b"here")
    assert (third.status, third.body) == (200, b"backslash")
