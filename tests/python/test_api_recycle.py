"""_recycle_worker(), the in-place replacement of one worker's interpreter
behind --max-requests (mode interpreters), called in-process while clients
keep a worker's connections busy: none of their requests fails, the worker
then serves from a new interpreter, the count is in px.stats(), and misuse
says what to do instead (the main thread must not wait for it; modes
threads and gil have no worker interpreter to replace)."""

import http.client
import importlib
import threading
import time

import pytest

import pyparallel as px
from conftest import LOCALHOST, interpreters_mode
from pyparallel import _core
from pyparallel.http import HttpServer


class WhoServes(HttpServer):
    def interp(self, request):
        import _interpreters

        return str(_interpreters.get_current()[0])

    def worker(self, request):
        from pyparallel import _core

        return str(_core._worker_index())

    def slow(self, request):
        time.sleep(2)
        return "slow"


def get(conn):
    conn.request("GET", "/interp")
    response = conn.getresponse()
    return response.status, response.read(), response.will_close


@pytest.mark.skipif(not interpreters_mode(), reason="worker interpreters are mode interpreters'")
def test_replacement_under_load_fails_no_request(rt):
    port = rt.serve(WhoServes)
    outcomes, stop = [], threading.Event()

    def client():
        conn = None
        while not stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection(LOCALHOST, port, timeout=10)
                status, body, closing = get(conn)
                outcomes.append((status, body))
                if closing:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                outcomes.append((None, repr(exc)))
                conn = None

    def driver():
        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            before = px.stats()["recycled_interpreters"]
            for worker in (0, 1, 0):
                assert _core._recycle_worker(worker, 10.0) is None
                _core._retire_worker(worker, False)
            assert px.stats()["recycled_interpreters"] == before + 3
        finally:
            stop.set()
            for thread in clients:
                thread.join(20)

    rt.run(driver, timeout=60)
    assert [o for o in outcomes if o[0] != 200] == []
    # Workers' first interpreters are 1 and 2: new ones served too.
    assert max(int(body) for _, body in outcomes) > 2


@pytest.mark.skipif(not interpreters_mode(), reason="worker interpreters are mode interpreters'")
def test_a_worker_whose_connections_do_not_end_keeps_its_interpreter(rt):
    port = rt.serve(WhoServes)
    answers = {}

    def driver():
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
        conn.request("GET", "/worker")
        worker = int(conn.getresponse().read())
        conn.request("GET", "/slow")
        time.sleep(0.2)  # under way
        failures = px.stats()["recycle_failures"]
        with pytest.raises(TimeoutError, match=f"worker {worker}'s interpreter was not replaced: its connections"):
            _core._recycle_worker(worker, 0.5)
        assert px.stats()["recycle_failures"] == failures + 1
        # The request under way was answered, by the worker's interpreter.
        response = conn.getresponse()
        answers["slow"] = (response.status, response.read())
        conn.close()

    rt.run(driver, timeout=30)
    assert answers["slow"] == (200, b"slow")


@pytest.mark.skipif(not interpreters_mode(), reason="worker interpreters are mode interpreters'")
def test_misuse_is_refused_with_what_to_do(rt):
    rt.serve(WhoServes)
    errors = {}

    def driver():
        with pytest.raises(ValueError, match="out of range"):
            _core._recycle_worker(99, 1.0)
        with pytest.raises(TypeError, match="a worker index, a timeout in seconds"):
            _core._recycle_worker(0)
        # What fails in the new interpreter before it serves changes nothing.
        recycled = px.stats()["recycled_interpreters"]
        with pytest.raises(ModuleNotFoundError, match="no_such_module"):
            _core._recycle_worker(0, 1.0, importlib.import_module, "no_such_module")
        assert px.stats()["recycled_interpreters"] == recycled
        # Main-thread calls wait for run()'s own thread: refused.
        try:
            px.call_from_main_thread_and_wait(_core._recycle_worker, 0, 1.0)
        except px.AsyncError as exc:
            errors["main"] = str(exc)

    rt.run(driver, timeout=30)
    assert "call it from a thread of its own" in errors["main"]


@pytest.mark.skipif(interpreters_mode(), reason="modes threads and gil")
def test_shared_interpreter_modes_point_to_the_reload(rt):
    rt.serve(WhoServes)

    def driver():
        with pytest.raises(px.AsyncError, match=r"a reload \(SIGHUP\) replaces"):
            _core._recycle_worker(0, 1.0)

    rt.run(driver, timeout=30)
