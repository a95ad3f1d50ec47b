"""The WSGI peer of bench/http.py, served by gunicorn and by granian.

One WSGI application with the routes of the other peers: GET /plaintext,
/json, /work and /shared?k=N (the logic of http_logic.py, which every peer
shares) and the static files of the directory BENCH_STATIC_ROOT, sent through
the server's wsgi.file_wrapper (gunicorn turns it into sendfile). The
servers add Date (and Server) themselves.

  gunicorn --workers N --worker-class sync|gthread http_wsgi:app
  granian --interface wsgi --workers N http_wsgi:app
"""

import os

import http_logic

STATIC_ROOT = os.environ.get("BENCH_STATIC_ROOT")
NOT_FOUND = b"Not Found\n"
TEXT = "text/plain"
TEXT_UTF8 = "text/plain; charset=utf-8"


def plaintext(environ):
    return TEXT, http_logic.PLAINTEXT


def json(environ):
    return "application/json", http_logic.json_body()


def work(environ):
    return TEXT_UTF8, http_logic.work().encode()


def shared(environ):
    try:
        return TEXT_UTF8, http_logic.shared(environ.get("QUERY_STRING", "")).encode()
    except (KeyError, ValueError):
        return None


ROUTES = {"/plaintext": plaintext, "/json": json, "/work": work, "/shared": shared}


def static_file(environ, start_response, path):
    """The file under STATIC_ROOT named by path, or None."""
    if STATIC_ROOT is None or "/." in path:
        return None
    full = os.path.join(STATIC_ROOT, path.lstrip("/"))
    try:
        f = open(full, "rb")
    except OSError:
        return None
    size = os.fstat(f.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 1 << 16)
    with f:
        return [f.read()]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    route = ROUTES.get(path)
    result = route(environ) if route is not None and environ["REQUEST_METHOD"] == "GET" else None
    if result is None:
        if route is None and environ["REQUEST_METHOD"] == "GET":
            body = static_file(environ, start_response, path)
            if body is not None:
                return body
        start_response("404 Not Found", [("Content-Type", TEXT), ("Content-Length", str(len(NOT_FOUND)))])
        return [NOT_FOUND]
    content_type, body = result
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
