"""Property tests (hypothesis): generated requests — methods, paths with
percent-encoded bytes, queries, header fields, bodies sent with
Content-Length or chunked, cut into arbitrary packets — reach an echo
application exactly as sent, and its answer comes back byte-exact.

The echo application (http_echo_app.py) answers with a JSON document of what
its handler saw (method, raw target, raw and decoded path, query string,
header fields in order, the body in base64); the test rebuilds the same
document from what it sent. One server lives for each test; every example
uses a fresh connection, and pipelines several requests on it.
"""

import base64
import json
import time
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from http_echo_app import EchoApp
from http_helpers import Client, build_request, chunked, serve_http

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Path characters: unreserved and sub-delims as they are, anything else
# percent-encoded (a byte, so also invalid UTF-8).
PLAIN = "abcXYZ019-._~!$&'()*+,;=:@"
SEGMENT = st.lists(
    st.one_of(st.sampled_from(PLAIN), st.integers(0, 255).map(lambda b: f"%{b:02X}")),
    max_size=12,
).map("".join)
PATHS = st.lists(SEGMENT, min_size=1, max_size=5).map(lambda segments: "/" + "/".join(segments))
QUERIES = st.one_of(st.just(""), st.lists(st.sampled_from(PLAIN + "?/%20"), max_size=20).map("".join))
TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=20
)
# Field values: visible ASCII and inner spaces or tabs (the parser trims
# whitespace at both ends, so values start and end with a visible character).
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
FIELD_VALUES = st.one_of(
    VISIBLE.map(str),
    st.tuples(VISIBLE, st.text(alphabet=st.sampled_from(" \t!~azAZ09\"'"), max_size=40), VISIBLE).map("".join),
)
FIELDS = st.lists(st.tuples(TOKEN.map(lambda t: "X-" + t), FIELD_VALUES), max_size=8)
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@st.composite
def requests(draw):
    method = draw(st.sampled_from(("GET", "HEAD", "OPTIONS") + BODY_METHODS))
    path = draw(PATHS)
    query = draw(QUERIES)
    fields = draw(FIELDS)
    body = draw(st.binary(max_size=3000)) if method in BODY_METHODS else b""
    framing = draw(st.sampled_from(("length", "chunked"))) if body else "none"
    sizes = draw(st.lists(st.integers(1, 700), max_size=6))
    return method, path + ("?" + query if query else ""), fields, body, framing, sizes


def encode(method, target, fields, body, framing, sizes):
    if framing == "chunked":
        head = build_request(method, target, fields + [("Transfer-Encoding", "chunked")])
        return head + chunked(body, sizes)
    return build_request(method, target, fields, body)


def expected(method, target, fields, body):
    raw_path, _, query = target.partition("?")
    return {
        "method": method,
        "target": target,
        "raw_path": raw_path,
        "path": unquote(raw_path),
        "rest": unquote(raw_path)[1:],
        "query_string": query,
        "fields": [[name, value] for name, value in fields],
        "body": base64.b64encode(body).decode(),
    }


def split_at(data, cuts):
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def test_generated_requests_round_trip_byte_exact(rt):
    port = serve_http(rt, EchoApp)

    @SETTINGS
    @given(batch=st.lists(requests(), min_size=1, max_size=4), cuts=st.lists(st.integers(0, 20_000), max_size=12))
    def check(batch, cuts):
        wire = b"".join(encode(*request) for request in batch)
        with Client(port) as client:
            for piece in split_at(wire, cuts):
                client.send(piece)
                time.sleep(0.0005)
            for method, target, fields, body, _, _ in batch:
                response = client.read_response(head=method == "HEAD")
                assert response.status == 200, (method, target, response)
                want = expected(method, target, fields, body)
                want_bytes = json.dumps(want, ensure_ascii=False, separators=(",", ":")).encode()
                assert response.header("Content-Length") == str(len(want_bytes))
                if method != "HEAD":
                    assert json.loads(response.body) == want
                    assert response.body == want_bytes
                assert response.header("X-Body-Length") == str(len(body))

    rt.run(check, timeout=120)
