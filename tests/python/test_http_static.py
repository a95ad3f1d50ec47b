"""Static files of an HttpServer with a root, through real connections:
files (sendfile, Content-Type from mimetypes), ETag and Last-Modified with
their conditionals (304), byte ranges (206, suffix and open-ended, 416),
index.html, the directory listing, the redirect of a directory to its slash
form, routes taking precedence over files, methods other than GET and HEAD
(405), and every traversal attempt (.., %2e%2e, %2f, NUL, symlinks out of
the root) answered 404 with nothing outside the root ever sent.

Targets are sent byte for byte as written here (no client-side
normalisation), which is what an attacker does.
"""

import os

import pytest

from http_helpers import Client, fetch, serve_http
from pyparallel.http import HttpServer

SECRET = b"the secret outside the root"


@pytest.fixture
def site(tmp_path):
    """root/ with files, a subdirectory with and one without index.html, and
    symlinks; secret.txt beside root/, outside it."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"0123456789")
    (root / "page.html").write_text("<p>page</p>")
    (root / "big.bin").write_bytes(os.urandom(1 << 20))
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_text("<h1>docs index</h1>")
    (root / "plain").mkdir()
    (root / "plain" / "a b.txt").write_text("spaced")
    (root / "plain" / "<script>.txt").write_text("x")
    (root / "plain" / "nested").mkdir()
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "up").symlink_to(tmp_path)
    (root / "inside.txt").symlink_to(root / "hello.txt")
    (root / "plaintext").write_text("a file shadowed by the route")
    return root


class Site(HttpServer):
    def plaintext(self, request):
        return b"Hello, World!"


def run_site(rt, site, driver):
    port = serve_http(rt, Site, root=str(site))
    return rt.run(lambda: driver(port))


def test_files_with_type_length_and_validators(rt, site):
    def driver(port):
        with Client(port) as client:
            return (
                client.request("GET", "/hello.txt"),
                client.request("GET", "/page.html"),
                client.request("GET", "/big.bin"),
            )

    text, html, big = run_site(rt, site, driver)
    assert (text.status, text.body) == (200, b"0123456789")
    assert text.header("Content-Type") == "text/plain"
    assert text.header("Content-Length") == "10"
    assert text.header("ETag") and text.header("Last-Modified").endswith(" GMT")
    assert text.header("Accept-Ranges") == "bytes"
    assert html.header("Content-Type") == "text/html" and html.body == b"<p>page</p>"
    assert big.body == (site / "big.bin").read_bytes()
    assert big.header("Content-Type") == "application/octet-stream"


def test_conditional_requests_get_304(rt, site):
    def driver(port):
        with Client(port) as client:
            first = client.request("GET", "/hello.txt")
            etag, modified = first.header("ETag"), first.header("Last-Modified")
            return (
                client.request("GET", "/hello.txt", headers=[("If-None-Match", etag)]),
                client.request("GET", "/hello.txt", headers=[("If-None-Match", '"other", ' + etag)]),
                client.request("GET", "/hello.txt", headers=[("If-None-Match", '"other"')]),
                client.request("GET", "/hello.txt", headers=[("If-Modified-Since", modified)]),
                client.request("GET", "/hello.txt", headers=[("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")]),
                client.request("HEAD", "/hello.txt", headers=[("If-None-Match", etag)]),
                etag,
            )

    *responses, etag = run_site(rt, site, driver)
    matched, listed, other, unmodified, modified, head = responses
    for response in (matched, listed, unmodified, head):
        assert response.status == 304, response
        assert response.body == b""
    assert matched.header("ETag") == etag
    assert (other.status, other.body) == (200, b"0123456789")
    assert (modified.status, modified.body) == (200, b"0123456789")


@pytest.mark.parametrize(
    "range_header, status, body, content_range",
    [
        ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=0-0", 206, b"0", "bytes 0-0/10"),
        ("bytes=10-", 416, b"", "bytes */10"),
        ("bytes=20-30", 416, b"", "bytes */10"),
        ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: the whole file
        ("lines=1-2", 200, b"0123456789", None),
    ],
)
def test_byte_ranges(rt, site, range_header, status, body, content_range):
    def driver(port):
        return fetch(port, "GET", "/hello.txt", headers=[("Range", range_header)])

    response = run_site(rt, site, driver)
    assert response.status == status
    assert response.body == body
    assert response.header("Content-Length") == str(len(body))
    assert response.header("Content-Range") == content_range


def test_range_of_a_large_file(rt, site):
    data = (site / "big.bin").read_bytes()

    def driver(port):
        return fetch(port, "GET", "/big.bin", headers=[("Range", "bytes=100000-699999")])

    response = run_site(rt, site, driver)
    assert response.status == 206 and response.body == data[100000:700000]


def test_head_of_a_file(rt, site):
    def driver(port):
        with Client(port) as client:
            head = client.request("HEAD", "/big.bin")
            after = client.request("GET", "/hello.txt")
        return head, after

    head, after = run_site(rt, site, driver)
    assert head.status == 200 and head.body == b"" and head.header("Content-Length") == str(1 << 20)
    assert after.body == b"0123456789"


def test_directories_index_listing_and_redirect(rt, site):
    def driver(port):
        with Client(port) as client:
            return (
                client.request("GET", "/docs/"),
                client.request("GET", "/docs"),
                client.request("GET", "/plain?sort=name"),
                client.request("GET", "/plain/"),
                client.request("GET", "/plain/a%20b.txt"),
                client.request("GET", "/"),
            )

    index, redirect, redirect_query, listing, spaced, top = run_site(rt, site, driver)
    assert index.body == b"<h1>docs index</h1>" and index.header("Content-Type") == "text/html"
    assert (redirect.status, redirect.header("Location")) == (301, "/docs/")
    assert (redirect_query.status, redirect_query.header("Location")) == (301, "/plain/?sort=name")
    assert listing.status == 200 and listing.header("Content-Type") == "text/html; charset=utf-8"
    page = listing.body.decode()
    assert '<a href="a%20b.txt">a b.txt</a>' in page
    assert '<a href="%3Cscript%3E.txt">&lt;script&gt;.txt</a>' in page
    assert '<a href="nested/">nested/</a>' in page
    assert "<script>" not in page
    assert spaced.body == b"spaced"
    assert b'<a href="hello.txt">hello.txt</a>' in top.body


def test_routes_take_precedence_over_files(rt, site):
    response = run_site(rt, site, lambda port: fetch(port, "GET", "/plaintext"))
    assert response.body == b"Hello, World!"


def test_only_get_and_head_on_files(rt, site):
    def driver(port):
        with Client(port) as client:
            return client.request("POST", "/hello.txt", body=b"x"), client.request("DELETE", "/missing")

    post, missing = run_site(rt, site, driver)
    assert (post.status, post.header("Allow")) == (405, "GET, HEAD")
    assert missing.status == 404


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/docs%2f..%2f..%2fsecret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/hello.txt%00",
        "/hello.txt%00.html",
        "/leak.txt",
        "/up/secret.txt",
        "/up/",
        "/up",
        "/missing.txt",
        "/hello.txt/",
    ],
)
def test_nothing_outside_the_root_is_served(rt, site, target):
    def driver(port):
        with Client(port) as client:
            response = client.request("GET", target)
            after = client.request("GET", "/inside.txt")  # a symlink that stays inside works
        return response, after

    response, after = run_site(rt, site, driver)
    assert response.status == 404, (target, response)
    assert SECRET not in response.body
    assert after.body == b"0123456789"
