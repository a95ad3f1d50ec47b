"""ASGI 3 apps written against the spec alone (no framework), for the
conformance tests of test_asgi.py: `--app apps.asgi_raw:app`.

app routes by path; each route is one behaviour a test checks, the bad
ones included. What a test must see from inside the server (the lifespan's
events, a disconnect, a background step), in every mode, also from a
worker's interpreter, is appended to the file named by ASGI_TEST_LOG.
failing_app's lifespan startup fails; it serves nothing.
"""

import asyncio
import json
import os


def note(line):
    """Appends line to ASGI_TEST_LOG; nothing when the test reads no log (a
    worker interpreter made before the test set it does not have it)."""
    path = os.environ.get("ASGI_TEST_LOG")
    if path:
        with open(path, "a") as log:
            log.write(line + "\n")


async def respond(send, body, status=200, headers=((b"content-type", b"text/plain"),)):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive):
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        if not message.get("more_body", False):
            return b"".join(chunks)


def describe(scope):
    """The scope as JSON: bytes as latin-1 text, tuples as lists."""

    def plain(value):
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    described = {key: plain(value) for key, value in scope.items() if key != "state"}
    described["types"] = {key: type(value).__name__ for key, value in scope.items()}
    described["header_types"] = sorted({type(part).__name__ for pair in scope["headers"] for part in pair})
    return json.dumps(described).encode()


async def lifespan(scope, receive, send):
    message = await receive()
    assert message["type"] == "lifespan.startup"
    scope["state"]["started_by"] = f"{os.getpid()}"
    scope["state"]["count"] = 0
    note("startup")
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    note("shutdown")
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    # Routed below the root path (a proxy's mount point), as frameworks
    # do; anything under /scope/ shows its scope.
    path = scope["path"][len(scope["root_path"]) :]
    route = ROUTES.get(path) or (scope_route if path.startswith("/scope/") else None)
    if route is None:
        await respond(send, b"not found", status=404)
        return
    await route(scope, receive, send)


async def scope_route(scope, receive, send):
    await respond(send, describe(scope), headers=[(b"content-type", b"application/json")])


async def echo(scope, receive, send):
    body = await read_body(receive)
    await respond(send, body)


async def upload(scope, receive, send):
    """Counts the body's events and bytes; notes the first piece as it
    comes, so that a test can send the rest only once the app has it."""
    events = size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        events += 1
        size += len(message["body"])
        if events == 1:
            note(f"first piece {len(message['body'])} more {message.get('more_body', False)}")
        if not message.get("more_body", False):
            break
    await respond(send, json.dumps({"events": events, "size": size}).encode())


async def stream(scope, receive, send):
    """Three pieces, chunked, or with a Content-Length (?length)."""
    headers = [(b"content-type", b"text/plain")]
    if scope["query_string"] == b"length":
        headers.append((b"content-length", b"24"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(3):
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": f"piece {i}\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def big(scope, receive, send):
    """?N pieces of 64 KiB, streamed."""
    count = int(scope["query_string"] or b"16")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    piece = b"x" * 65536
    for _ in range(count):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def pathsend(scope, receive, send):
    path = os.environ["ASGI_TEST_FILE"]
    size = os.path.getsize(path)
    status = 203 if scope["query_string"] == b"203" else 200
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.pathsend", "path": path})


async def sleep(scope, receive, send):
    await asyncio.sleep(float(scope["query_string"] or b"0.2"))
    await respond(send, b"slept")


async def cpu(scope, receive, send):
    total = 0
    for i in range(int(scope["query_string"] or b"1000000")):
        total += i * i
    await respond(send, str(total).encode())


async def whoami(scope, receive, send):
    """The serving worker, told by its loop (see conformance.whoami)."""
    await respond(send, str(id(asyncio.get_running_loop())).encode())


async def state(scope, receive, send):
    # A copy per request: a change here is not seen by the next request.
    scope["state"]["count"] += 1
    await respond(send, json.dumps(scope["state"]).encode())


async def disconnect(scope, receive, send):
    """Waits for the client to go away, without answering."""
    await read_body(receive)
    note("waiting")
    message = await receive()
    note(message["type"])


async def after_response(scope, receive, send):
    """Answers, then goes on (what a background task does): the client has
    its answer at once, and receive() says the exchange is over."""
    await respond(send, b"answered")
    await asyncio.sleep(0.3)
    message = await receive()
    note(f"after the response: {message['type']}")


async def no_body_statuses(scope, receive, send):
    status = int(scope["query_string"] or b"204")
    await send({"type": "http.response.start", "status": status, "headers": [(b"etag", b'"v1"')]})
    await send({"type": "http.response.body", "body": b""})


async def head_length(scope, receive, send):
    """A HEAD answer with the length of a body it does not send."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1234")]})
    await send({"type": "http.response.body", "body": b""})


# ---- apps that break the protocol ------------------------------------------


async def start_twice(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def body_before_start(scope, receive, send):
    await send({"type": "http.response.body", "body": b"early"})


async def send_after_complete(scope, receive, send):
    await respond(send, b"complete")
    try:
        await send({"type": "http.response.body", "body": b"late"})
    except RuntimeError as error:
        note(f"refused: {error}")


async def never_responds(scope, receive, send):
    return


async def raises_before(scope, receive, send):
    raise ValueError("app failed before its response")


async def raises_mid_stream(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("app failed mid-stream")


async def bad_status(scope, receive, send):
    await respond(send, b"", status=99)


async def str_header(scope, receive, send):
    await respond(send, b"", headers=[("content-type", "text/plain")])


async def unknown_event(scope, receive, send):
    await send({"type": "http.response.teapot"})


async def short_length(scope, receive, send):
    await respond(send, b"abc", headers=[(b"content-length", b"10")])


ROUTES = {
    "/scope": scope_route,
    "/echo": echo,
    "/upload": upload,
    "/stream": stream,
    "/big": big,
    "/pathsend": pathsend,
    "/sleep": sleep,
    "/cpu": cpu,
    "/whoami": whoami,
    "/state": state,
    "/disconnect": disconnect,
    "/after-response": after_response,
    "/no-body": no_body_statuses,
    "/head-length": head_length,
    "/bad/start-twice": start_twice,
    "/bad/body-before-start": body_before_start,
    "/bad/send-after-complete": send_after_complete,
    "/bad/never-responds": never_responds,
    "/bad/raises-before": raises_before,
    "/bad/raises-mid-stream": raises_mid_stream,
    "/bad/status": bad_status,
    "/bad/str-header": str_header,
    "/bad/unknown-event": unknown_event,
    "/bad/short-length": short_length,
}


async def failing_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
        return
    await respond(send, b"never served", status=500)
