"""The C layer's contract with _px_handle, the method of an HttpProtocol
subclass that pyparallel.http.HttpServer implements: what each kind of
value it returns becomes on the wire. bytes and str are framed in C as they
are (HttpServer returns a handler's bytes or str without building a tuple),
a (status, fields, body) tuple as given, anything else is a 500 with the
error logged, and the connection keeps serving.
"""

import pytest

import pyparallel as px
from http_helpers import Client
from pyparallel import _core


class Direct(_core.HttpProtocol):
    """Answers by path, with what _px_handle returns as it is."""

    def _px_handle(self, raw):
        return {
            "/bytes": b"raw bytes",
            "/str": "h\u00e9llo \u20ac",
            "/empty": b"",
            "/tuple": (201, [("Content-Type", "application/x-test")], b"made"),
            "/subclass": _Bytes(b"not exactly bytes"),
            "/surrogate": "\udc80",
            "/int": 42,
        }[raw.path]


class _Bytes(bytes):
    pass


def test_bytes_and_str_are_framed_in_c(rt):
    def driver(port):
        with Client(port) as client:
            return [client.request("GET", path) for path in ("/bytes", "/str", "/empty", "/tuple")] + [
                client.request("HEAD", "/str")
            ]

    port = rt.serve(Direct)
    raw, text, empty, made, head = rt.run(lambda: driver(port))
    assert (raw.status, raw.header("Content-Type"), raw.body) == (200, "text/plain", b"raw bytes")
    assert raw.header("Content-Length") == "9"
    assert (text.status, text.header("Content-Type")) == (200, "text/plain; charset=utf-8")
    assert text.body == "h\u00e9llo \u20ac".encode()
    assert (empty.status, empty.header("Content-Length"), empty.body) == (200, "0", b"")
    assert (made.status, made.header("Content-Type"), made.body) == (201, "application/x-test", b"made")
    assert (head.status, head.header("Content-Length"), head.body) == (200, str(len(text.body)), b"")


def test_other_values_are_a_500_and_the_connection_keeps_serving(rt, pxlog):
    def driver(port):
        with Client(port) as client:
            return [client.request("GET", path) for path in ("/subclass", "/surrogate", "/int", "/bytes")]

    port = rt.serve(Direct)
    subclass, surrogate, number, after = rt.run(lambda: driver(port))
    for response in (subclass, surrogate, number):
        assert response.status == 500, response
        assert response.body == b"Internal Server Error\n"
    assert (after.status, after.body) == (200, b"raw bytes")
    assert (
        "_px_handle must return (status, fields, body), bytes, str, a FileResponse, an iterator, an awaitable or the "
        "request's HttpStream, not _Bytes"
    ) in pxlog.text
    assert "not int" in pxlog.text
    assert "surrogates not allowed" in pxlog.text


# ---- what register() reads from the class ---------------------------------------------------


class _Handled(_core.HttpProtocol):
    def _px_handle(self, request):
        return b""


class _WithDict(_core.HttpRequest):
    pass


def _register(protocol):
    server = px.server("127.0.0.1", 0)
    try:
        px.register(server, protocol)
    finally:
        server.close()


@pytest.mark.parametrize(
    "attributes, error, message",
    [
        ({"max_header_size": 0}, ValueError, "max_header_size must be a positive int"),
        ({"max_uri_size": "big"}, TypeError, "max_uri_size must be an int"),
        ({"header_timeout": -1}, ValueError, "header_timeout must be a number of seconds"),
        ({"_px_request_class": dict}, TypeError, "_px_request_class must be pyparallel._core.HttpRequest"),
        ({"_px_request_class": _WithDict}, TypeError, "with __slots__ = ()"),
        ({"_px_dispatch": classmethod(lambda cls: ({}, [], print, print))}, TypeError, "_px_dispatch() must return"),
    ],
)
def test_register_rejects_a_misconfigured_class_with_the_fix(attributes, error, message):
    protocol = type("Misconfigured", (_Handled,), attributes)
    with pytest.raises(error) as raised:
        _register(protocol)
    assert message in str(raised.value)
