"""HTTP client helpers for the tests of pyparallel.http (test_http_*.py).

A deliberately small HTTP/1.1 client over a plain socket, so that tests see
the bytes the server sends: requests are built by hand (any method, target,
header or framing, including invalid ones), responses are parsed strictly
(the status line, the header fields, a Content-Length body; HEAD, 1xx, 204
and 304 responses have none; a response without Content-Length ends at EOF).
A Client keeps a receive buffer, so pipelined responses are read one after
another in order.
"""

from conftest import LOCALHOST, SOCKET_TIMEOUT, connect


class HttpResponse:
    """One parsed response: status (int), reason, version, fields (list of
    (name, value) as received), body (bytes), head (the raw head bytes)."""

    def __init__(self, version, status, reason, fields, body, head):
        self.version = version
        self.status = status
        self.reason = reason
        self.fields = fields
        self.body = body
        self.head = head

    def header(self, name, default=None):
        """The value of the field name (case-insensitive); default if absent;
        an AssertionError when it appears more than once."""
        values = self.header_values(name)
        assert len(values) <= 1, f"{name} appears {len(values)} times: {values}"
        return values[0] if values else default

    def header_values(self, name):
        lowered = name.lower()
        return [value for field, value in self.fields if field.lower() == lowered]

    def __repr__(self):
        return f"<HttpResponse {self.status} {self.fields} {self.body[:80]!r}>"


def build_request(method="GET", target="/", headers=(), body=b"", version="HTTP/1.1", host=True, length=True):
    """The bytes of a request. Host (HTTP/1.1) and Content-Length (when there
    is a body) are added unless given in headers or turned off."""
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} {version}"]
    if host and version == "HTTP/1.1" and "host" not in names:
        lines.append("Host: test")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if length and body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body, sizes):
    """body in chunked transfer coding, cut into chunks of the given sizes
    (the rest in one last chunk)."""
    out = []
    position = 0
    for size in sizes:
        piece = body[position : position + size]
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        position += size
    if position < len(body):
        out.append(b"%x\r\n%s\r\n" % (len(body) - position, body[position:]))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


class Client:
    """One connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=SOCKET_TIMEOUT):
        self.sock = connect(port, timeout=timeout)
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", target="/", headers=(), body=b"", **kwargs):
        """Sends one request and reads its response."""
        self.send(build_request(method, target, headers, body, **kwargs))
        return self.read_response(head=method == "HEAD")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _take_head(self):
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise AssertionError(f"EOF inside a response head; got {self.buffer[-300:]!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def _take(self, n):
        while len(self.buffer) < n:
            if not self._fill():
                raise AssertionError(f"EOF after {len(self.buffer)} of {n} body bytes")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _take_line(self):
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise AssertionError(f"EOF inside a chunked body; got {self.buffer[-300:]!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _take_chunked(self):
        """A chunked body, decoded (RFC 9112 7.1); trailer fields are read
        and dropped."""
        body = b""
        while True:
            size = int(self._take_line().split(b";", 1)[0], 16)
            if size == 0:
                while self._take_line():
                    pass
                return body
            body += self._take(size)
            assert self._take(2) == b"\r\n", "a chunk not followed by CRLF"

    def read_response(self, head=False):
        """The next response. head: it answers a HEAD request (no body)."""
        raw_head = self._take_head()
        status_line, *field_lines = raw_head.decode("latin-1").split("\r\n")
        version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
        fields = []
        for line in field_lines:
            name, sep, value = line.partition(":")
            assert sep and name and name == name.strip(), f"bad field line {line!r}"
            fields.append((name, value.strip()))
        response = HttpResponse(version, int(status), reason, fields, b"", raw_head)
        length = response.header("Content-Length")
        if head or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        if (response.header("Transfer-Encoding") or "").lower() == "chunked":
            response.body = self._take_chunked()
        elif length is not None:
            response.body = self._take(int(length))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def at_eof(self, timeout=SOCKET_TIMEOUT):
        """True when the server closes the connection (EOF or reset) within
        timeout with nothing more to read."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return not self.buffer
                self.buffer += chunk
        except ConnectionResetError:
            return not self.buffer
        except TimeoutError:
            return False


def fetch(port, method="GET", target="/", headers=(), body=b"", **kwargs):
    """One request on a new connection; the response."""
    with Client(port) as client:
        return client.request(method, target, headers, body, **kwargs)


def serve_http(rt, app, **attributes):
    """Registers app (an HttpServer subclass) on 127.0.0.1:0 through the
    runtime harness, with attributes as class attributes of a subclass when
    given; the port."""
    if attributes:
        app = type(app.__name__, (app,), attributes)
    return rt.serve(app)


__all__ = ["LOCALHOST", "Client", "HttpResponse", "build_request", "chunked", "fetch", "serve_http"]
