"""The pure-Python pieces of pyparallel.http, without sockets: route
compilation and matching, the request's header mapping, the
conversion of return values, and the safe mapping of request paths to files
(traversal, encoded slashes, symlinks) with the directory listing.

The end-to-end tests (test_http_app.py, test_http_static.py) check the same
behaviour through real connections; these pin down the edge cases cheaply.
"""

import concurrent.futures
import json
import os
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyparallel import _core
from pyparallel.http import Headers, HttpServer, Request, Response, _request, _response, _static, route

# ---- routing -------------------------------------------------------------------------------


class Shop(HttpServer):
    def plaintext(self, request):
        return "plain"

    def hello_world(self, request):
        return "hi"

    @route("/users/{uid}", methods=("GET", "POST"))
    def user(self, request, uid):
        return uid

    @route("/users/{uid}", methods=("DELETE",))
    def delete_user(self, request, uid):
        return "deleted " + uid

    @route("/users/{uid}/posts/{pid}")
    def post(self, request, uid, pid):
        return uid + "/" + pid

    @route("/")
    @route("/index.html")
    def index(self, request):
        return "index"

    @route("/submit", methods=("post",))
    def submit(self, request):
        return "ok"

    def _helper(self):
        return "not a route"

    @staticmethod
    def tool():
        return "not a route"

    def connection_lost(self, transport, exc):
        pass


def test_method_names_route_get_and_head():
    routes = Shop._px_routes
    assert routes.lookup("/plaintext", "GET") == (Shop.plaintext, {})
    assert routes.lookup("/plaintext", "HEAD") == (Shop.plaintext, {})
    assert routes.lookup("/hello_world", "GET") == (Shop.hello_world, {})
    assert routes.lookup("/plaintext", "POST") == (None, "GET, HEAD")


def test_private_static_and_protocol_members_are_not_routes():
    for path in ("/_helper", "/tool", "/connection_lost", "/user", "/index", "/delete_user"):
        assert Shop._px_routes.lookup(path, "GET") == (None, ""), path


def test_decorated_routes_and_stacked_decorators():
    routes = Shop._px_routes
    assert routes.lookup("/", "GET") == (Shop.index, {})
    assert routes.lookup("/index.html", "HEAD") == (Shop.index, {})
    assert routes.lookup("/submit", "POST") == (Shop.submit, {})  # methods are upper-cased
    assert routes.lookup("/submit", "GET") == (None, "POST")


def test_patterns_match_one_segment_per_parameter():
    routes = Shop._px_routes
    assert routes.match("/users/42", "GET") == (Shop.user, {"uid": "42"})
    assert routes.match("/users/42", "DELETE") == (Shop.delete_user, {"uid": "42"})
    assert routes.match("/users/a/posts/b", "HEAD") == (Shop.post, {"uid": "a", "pid": "b"})
    assert routes.match("/users/a.b", "GET") == (Shop.user, {"uid": "a.b"})  # "." is literal, not a wildcard
    assert routes.match("/users/", "GET") == (None, "")
    assert routes.match("/users/4/2", "GET") == (None, "")
    assert routes.match("/users/42/", "GET") == (None, "")


def test_path_parameters_take_the_rest_of_the_path():
    class Files(HttpServer):
        @route("/files/{rest:path}")
        def files(self, request, rest):
            return rest

        @route("/{anything:path}", methods=("POST",))
        def sink(self, request, anything):
            return anything

    routes = Files._px_routes
    assert routes.match("/files/a/b/c.txt", "GET") == (Files.files, {"rest": "a/b/c.txt"})
    assert routes.match("/files/", "GET") == (Files.files, {"rest": ""})
    assert routes.match("/files", "GET") == (None, "POST")  # only the catch-all matches
    assert routes.match("/x/y", "POST") == (Files.sink, {"anything": "x/y"})
    assert routes.match("/files/a\nb", "GET") == (Files.files, {"rest": "a\nb"})  # from /files/a%0Ab
    # The first pattern that serves the method wins; the others say what they allow.
    assert routes.match("/files/z", "POST") == (Files.sink, {"anything": "files/z"})
    assert routes.match("/x", "PUT") == (None, "POST")


def test_wrong_method_on_a_pattern_lists_what_is_allowed():
    assert Shop._px_routes.match("/users/42", "PUT") == (None, "DELETE, GET, HEAD, POST")


def test_route_tables_are_immortal_and_hold_no_functions():
    """Every worker reads them at once (see RouteTable): only immortal dicts
    of str and int, and tuples."""
    routes = Shop._px_routes
    # is_immortal, not sys.getrefcount: on 3.14 an immortal object's count
    # drifts below its initial value when references taken before it became
    # immortal are dropped (the interpreter's stack decrefs them unchecked).
    assert _core.is_immortal(routes.exact) and _core.is_immortal(routes.allow)
    assert all(_core.is_immortal(table) for table in routes.exact.values())
    assert all(type(index) is int for table in routes.exact.values() for index in table.values())
    assert all(_core.is_immortal(table) for _, table, _ in routes.patterns)
    assert type(routes.patterns) is tuple and type(routes.handlers) is tuple
    assert Shop._px_exact is routes.exact and Shop._px_handlers is routes.handlers


def test_pattern_literals_are_not_regular_expressions():
    class Dotted(HttpServer):
        @route("/v1.0/{name}.json")
        def item(self, request, name):
            return name

    assert Dotted._px_routes.match("/v1.0/x.json", "GET") == (Dotted.item, {"name": "x"})
    assert Dotted._px_routes.match("/v1x0/x.json", "GET") == (None, "")
    assert Dotted._px_routes.match("/v1.0/xxjson", "GET") == (None, "")


def test_subclasses_inherit_and_override_routes():
    class Base(HttpServer):
        def a(self, request):
            return "base a"

        def b(self, request):
            return "base b"

    class Derived(Base):
        def b(self, request):
            return "derived b"

        def c(self, request):
            return "derived c"

    assert Base._px_routes.exact.keys() == {"/a", "/b"}
    assert Base._px_routes.lookup("/b", "GET") == (Base.b, {})
    assert Derived._px_routes.lookup("/a", "GET") == (Base.a, {})
    assert Derived._px_routes.lookup("/b", "GET") == (Derived.b, {})
    assert Derived._px_routes.lookup("/c", "GET") == (Derived.c, {})


def test_two_handlers_for_one_route_is_an_error():
    with pytest.raises(TypeError, match=r"GET /x is routed to both"):

        class Clash(HttpServer):
            @route("/x")
            def one(self, request):
                return "1"

            @route("/x")
            def two(self, request):
                return "2"


@pytest.mark.parametrize(
    "path, error",
    [
        ("relative", "starting with '/'"),
        ("/a/{b", "unbalanced brace"),
        ("/a/b}", "unbalanced brace"),
        ("/a/{}", "not a Python identifier"),
        ("/a/{1x}", "not a Python identifier"),
        ("/{x}/{x}", "repeats parameter"),
        ("/{x:int}", "not a parameter kind"),
    ],
)
def test_bad_route_paths_fail_where_they_are_written(path, error):
    with pytest.raises(ValueError, match=error):
        route(path)


def test_bad_route_methods_and_targets():
    with pytest.raises(TypeError, match="sequence of names"):
        route("/x", methods="GET")
    with pytest.raises(ValueError, match="at least one method"):
        route("/x", methods=())
    with pytest.raises(ValueError, match="not an HTTP method name"):
        route("/x", methods=("GE T",))
    with pytest.raises(TypeError, match="decorates a function"):
        route("/x")(staticmethod(lambda: None))


# ---- the request headers ---------------------------------------------------------------------


def test_headers_are_case_insensitive_and_combine_repeats():
    headers = Headers([("Host", "h"), ("X-Tag", "a"), ("Accept", "*/*"), ("x-tag", "b")])
    assert headers["host"] == headers["HOST"] == "h"
    assert headers["X-TAG"] == "a, b"
    assert headers.get_all("x-tag") == ["a", "b"]
    assert headers.get_all("missing") == []
    assert headers.get("Missing") is None and headers.get("missing", "d") == "d"
    assert "ACCEPT" in headers and "nope" not in headers and 42 not in headers
    assert list(headers) == ["host", "x-tag", "accept"]
    assert len(headers) == 3
    assert dict(headers) == {"host": "h", "x-tag": "a, b", "accept": "*/*"}
    assert headers.fields == [("Host", "h"), ("X-Tag", "a"), ("Accept", "*/*"), ("x-tag", "b")]
    with pytest.raises(KeyError):
        headers["missing"]


def test_requests_are_made_by_the_c_layer_only():
    assert issubclass(Request, _core.HttpRequest)
    with pytest.raises(TypeError, match="cannot create"):
        Request()


# ---- return values ------------------------------------------------------------------------


def test_plain_return_values():
    assert _response.to_wire("héllo") == (200, [("Content-Type", "text/plain; charset=utf-8")], "héllo")
    assert _response.to_wire(b"x") == (200, [("Content-Type", "text/plain")], b"x")
    assert _response.to_wire({"a": [1, "é"]}) == (200, [("Content-Type", "application/json")], '{"a":[1,"é"]}')
    assert _response.to_wire([1, 2]) == (200, [("Content-Type", "application/json")], "[1,2]")
    assert _response.to_wire(bytearray(b"ba")) == (200, [("Content-Type", "text/plain")], bytearray(b"ba"))


def test_unsendable_return_values_raise_type_error():
    for value in (None, 42, 1.5, object(), (b"a", b"b")):
        with pytest.raises(TypeError, match="cannot send"):
            _response.to_wire(value)


def test_response_objects():
    assert Response().wire() == (200, [], b"")
    assert Response("made", 201).wire() == (201, [("Content-Type", "text/plain; charset=utf-8")], "made")
    assert Response({"k": 1}, 202, {"X-A": "1"}).wire() == (
        202,
        [("Content-Type", "application/json"), ("X-A", "1")],
        '{"k":1}',
    )
    html = Response("<p>", headers=[("content-type", "text/html")])
    assert html.wire() == (200, [("content-type", "text/html")], "<p>")
    assert Response(status=204).wire() == (204, [], b"")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"status": 99}, ValueError, "within 200..599"),
        ({"status": 600}, ValueError, "within 200..599"),
        ({"status": 101}, ValueError, "within 200..599"),
        ({"status": "200"}, TypeError, "must be an int"),
        ({"body": 3}, TypeError, "cannot send"),
        ({"headers": [("Content-Length", "3")]}, ValueError, "written by the server"),
        ({"headers": {"transfer-encoding": "chunked"}}, ValueError, "written by the server"),
        ({"headers": {"Date": "now"}}, ValueError, "written by the server"),
        ({"headers": {"X-A": "1\r\nX-Injected: 1"}}, ValueError, "line break"),
        ({"headers": {"Bad Name": "1"}}, ValueError, "invalid header field name"),
        ({"headers": {"X-A": 1}}, TypeError, r"\(str, str\) pairs"),
    ],
)
def test_bad_responses_fail_in_the_handler(kwargs, error, message):
    with pytest.raises(error, match=message):
        Response(**kwargs)


# ---- static files ---------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """root/ with files, a subdirectory, an index, and symlinks that stay in
    or leave the root; secret.txt lies beside root/, outside it."""
    (tmp_path / "secret.txt").write_text("secret")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inner.txt").write_text("inner")
    (root / "a.txt").write_text("a")
    (root / "with index").mkdir()
    (root / "with index" / "index.html").write_text("<p>index</p>")
    (root / "evil").mkdir()
    (root / "evil" / "index.html").symlink_to(tmp_path / "secret.txt")
    (root / "leak").symlink_to(tmp_path / "secret.txt")
    (root / "leakdir").symlink_to(tmp_path)
    (root / "alias.txt").symlink_to(root / "a.txt")
    (root / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "fifo")
    return _static.real_root(root)


def test_resolve_files_directories_and_redirects(tree):
    assert _static.resolve(tree, "/a.txt") == (_static.FILE, os.path.join(tree, "a.txt"))
    assert _static.resolve(tree, "/sub/inner.txt") == (_static.FILE, os.path.join(tree, "sub", "inner.txt"))
    assert _static.resolve(tree, "/sub") == (_static.REDIRECT, "/sub/")
    assert _static.resolve(tree, "/sub/") == (_static.DIRECTORY, os.path.join(tree, "sub"))
    assert _static.resolve(tree, "/") == (_static.DIRECTORY, tree)
    assert _static.resolve(tree, "/with%20index/") == (_static.FILE, os.path.join(tree, "with index", "index.html"))
    assert _static.resolve(tree, "/with%20index") == (_static.REDIRECT, "/with%20index/")
    # A symlink that stays inside the root is followed.
    assert _static.resolve(tree, "/alias.txt") == (_static.FILE, os.path.join(tree, "a.txt"))
    # Empty and "." segments are harmless.
    assert _static.resolve(tree, "//sub/./inner.txt") == (_static.FILE, os.path.join(tree, "sub", "inner.txt"))


@pytest.mark.parametrize(
    "raw_path",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/sub/../a.txt",  # ".." is refused even when it would stay inside
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/sub%2Finner.txt",
        "/a.txt%00",
        "/a.txt%00.html",
        "/leak",
        "/leakdir/secret.txt",
        "/leakdir/",
        "/evil/",  # its index.html leaves the root: never served (listed instead)
        "/missing",
        "/a.txt/",
        "/fifo",
        "*",
        "",
    ],
)
def test_resolve_never_leaves_the_root(tree, raw_path):
    found = _static.resolve(tree, raw_path)
    if raw_path == "/evil/":
        assert found == (_static.DIRECTORY, os.path.join(tree, "evil"))
    else:
        assert found is None


def test_real_root_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        _static.real_root(tmp_path / "file")
    with pytest.raises(ValueError, match="not a directory"):
        _static.real_root(tmp_path / "missing")


def test_listing_escapes_names_and_marks_directories_and_links(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / '<b>&"x".txt').write_text("x")
    (tmp_path / "javascript:alert(1)").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "sub")
    page = _static.listing(str(tmp_path), "/<dir>/").decode()
    assert "<title>Directory listing for /&lt;dir&gt;/</title>" in page
    assert '<li><a href="%3Cb%3E%26%22x%22.txt">&lt;b&gt;&amp;&quot;x&quot;.txt</a></li>' in page
    assert '<li><a href="javascript%3Aalert%281%29">javascript:alert(1)</a></li>' in page
    assert '<li><a href="sub/">sub/</a></li>' in page
    assert '<li><a href="link/">link@</a></li>' in page
    assert "<b>" not in page
    assert page.index('"%3Cb') < page.index('"javascript') < page.index('"link/') < page.index('"sub/')


def test_listing_of_an_unreadable_directory_is_none(tmp_path):
    assert _static.listing(str(tmp_path / "missing"), "/missing/") is None


def test_listing_of_non_utf8_names(tmp_path):
    name = b"caf\xe9.txt"
    with open(os.path.join(os.fsencode(tmp_path), name), "wb"):
        pass
    page = _static.listing(str(tmp_path), "/")
    assert b'href="caf%E9.txt"' in page


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.html", "text/html"),
        ("a.TXT", "text/plain"),
        ("a.json", "application/json"),
        ("a.png", "image/png"),
        ("a.tar.gz", "application/gzip"),
        ("a.unknown-ext", "application/octet-stream"),
        ("Makefile", "application/octet-stream"),
    ],
)
def test_content_type_from_the_name(name, expected):
    assert _static.content_type(name) == expected
    assert _static.content_type(name) == expected  # from the cache


# ---- percent-decoding and query parsing match urllib.parse ---------------------------------

# Pieces rich in what matters: escapes valid, invalid and partial, "+", the
# separators, and characters that are not ASCII.
URL_PIECES = st.sampled_from(list("%+&=/aZ09 é\x00;?#٠") + ["%2", "%zz", "%C3%A9", "%e9", "%2F", "%%", "%٠١", "% 1"])


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.lists(URL_PIECES, max_size=16).map("".join))
def test_decoding_matches_urllib(text):
    assert _request.decode_path(text) == urllib.parse.unquote(text)
    assert _request.unquote_to_bytes(text) == urllib.parse.unquote_to_bytes(text)
    assert _request.parse_query(text) == urllib.parse.parse_qs(text, keep_blank_values=True)


def test_json_bodies_match_json_dumps_on_every_thread():
    values = [{"a": [1, "é", None, True, 1.5, -0.0]}, [], {}, {"x": {"y": [1, {"z": 'q"\n'}]}}, {1: 2, None: 3}]
    expected = [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values]

    def encode_all():
        return [_response.to_wire(v)[2] for v in values]

    assert encode_all() == expected
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(result == expected for result in pool.map(lambda _: encode_all(), range(16)))
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        _response.to_wire({"a": {1}})
