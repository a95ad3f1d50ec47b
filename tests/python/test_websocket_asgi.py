"""The ASGI websocket scope: a raw ASGI app and Starlette's WebSocket
routes served by `python -m pyparallel.http.server --app`, talked to with
the websockets client. Covered: websocket.connect, accept (subprotocol and
headers), receive and send of text and bytes, close from either side with
its code reaching the other, disconnect, the websocket.http.response
denial extension, a close before accepting (403) and an app that fails
before accepting (500)."""

import os

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import LOCALHOST, wait_for
from test_wsgi import AppServer


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ws-asgi")
    server = AppServer("apps.ws_asgi:app", workdir, env={"ASGI_TEST_LOG": os.path.join(workdir, "events.log")})
    yield server
    server.kill()


@pytest.fixture(scope="module")
def starlette(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ws-starlette")
    server = AppServer(
        "apps.ws_asgi:starlette_app", workdir, env={"ASGI_TEST_LOG": os.path.join(workdir, "events.log")}
    )
    yield server
    server.kill()


def url(server, path):
    return f"ws://{LOCALHOST}:{server.port}{path}"


def test_raw_app_echo_subprotocol_headers_and_disconnect(raw):
    with connect(url(raw, "/echo"), subprotocols=["x", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["x-asgi"] == "yes"
        ws.send("hé")
        assert ws.recv() == "hé"
        ws.send(b"\x00" * 100000)
        assert ws.recv() == b"\x00" * 100000
        ws.close(4000)
    wait_for(lambda: "disconnect 4000" in raw.events())


def test_raw_app_closes_with_its_code(raw):
    with connect(url(raw, "/close")) as ws:
        assert ws.recv() == "bye"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "done")


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [("/deny", 401, b"no entry"), ("/refuse", 403, b"Forbidden\n"), ("/fail", 500, b"Internal Server Error\n")],
)
def test_refusals(raw, path, status, body):
    with pytest.raises(InvalidStatus) as refused:
        connect(url(raw, path))
    response = refused.value.response
    assert (response.status_code, response.body) == (status, body)
    if path == "/deny":
        assert response.headers["x-why"] == "token"


def test_starlette_websocket_routes(starlette):
    with connect(url(starlette, "/ws"), subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("hi")
        assert ws.recv() == "starlette: hi"
        ws.send(b"abc")
        assert ws.recv() == b"cba"
    wait_for(lambda: "starlette disconnect 1000" in starlette.events())
    with connect(url(starlette, "/json")) as ws:
        ws.send('{"n": 1}')
        assert ws.recv() == '{"got":{"n":1},"path":"/json"}'
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd.code == 4003
