"""Mode "interpreters": one subinterpreter with its own GIL per worker.

Each test writes a small program and runs it in a fresh process with
PYPARALLEL_MODE=interpreters, because what is tested is how a program's own
code reaches the workers: functions and protocol classes of the script run
as __main__ (found again through its re-import as __mp_main__), of modules
beside it, and what cannot cross. The programs print what they observe and
the test checks it. Runs on GIL builds only (a free-threaded build runs
Python in parallel in mode "threads").
"""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import gil_enabled

pytestmark = pytest.mark.skipif(
    not gil_enabled(),
    reason="mode 'interpreters' needs a CPython with the GIL; free-threaded builds use mode 'threads'",
)

RUN_TIMEOUT = 60


def run_program(tmp_path, source, *, modules=None, mode="interpreters", args=()):
    """Writes source as main.py (and modules as NAME.py) in tmp_path, runs it;
    returns (stdout lines, stderr). Fails on a non-zero exit."""
    for name, text in (modules or {}).items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYPARALLEL_MODE=mode, PYPARALLEL_WORKERS="2")
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout.splitlines(), result.stderr


def test_functions_of_the_main_script_run_in_the_workers_interpreters(tmp_path):
    out, err = run_program(
        tmp_path,
        """
        import os
        import threading
        import pyparallel as px

        # One write(2) per line: the workers' interpreters import this at
        # the same time, and print() writes its pieces one by one.
        os.write(2, f"imported as {__name__}\\n".encode())

        def square(x):
            return x * x

        def where():
            return (__name__, px.is_parallel_thread(), threading.current_thread() is threading.main_thread())

        if __name__ == "__main__":
            os.write(2, b"main block\\n")
            print(px.map(square, range(20)))
            print(px.submit_work(where).result(timeout=10))
            stats = px.stats()
            print(stats["mode"], len(stats["worker"]), all(w["memory"] > 0 for w in stats["worker"]))
        """,
    )
    assert out == [str([x * x for x in range(20)]), "('__mp_main__', True, False)", "interpreters 2 True"]
    # The main block ran once; each worker interpreter imported the script.
    assert err.count("main block") == 1
    assert err.count("imported as __main__") == 1
    assert 1 <= err.count("imported as __mp_main__") <= 2


def test_a_protocol_class_of_the_main_script_serves_connections(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import socket
        import threading
        import pyparallel as px

        finished = []

        def done(label, words):
            # On the main thread: run() stops once the client and the socket
            # both have their answers.
            print(label, words)
            finished.append(label)
            if len(finished) == 2:
                px.stop()

        class Upper:
            def connection_made(self, transport):
                return f"hello from {__name__}\\n"

            def data_received(self, transport, data):
                return data.upper()

        class Client:
            def connection_made(self, transport):
                self.got = b""
                transport.send(b"ping\\n")

            def data_received(self, transport, data):
                self.got += data
                if self.got.endswith(b"PING\\n"):
                    px.call_from_main_thread(done, "client got", self.got.decode().split())
                    transport.close()

        def drive(port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"abc")
                got = b""
                while not got.endswith(b"ABC"):
                    chunk = sock.recv(100)
                    if not chunk:
                        raise AssertionError(f"the server closed after {got!r}")
                    got += chunk
            px.call_from_main_thread(done, "socket got", got.decode().split())

        if __name__ == "__main__":
            server = px.server("127.0.0.1", 0)
            px.register(server, Upper)
            port = server.sockname[1]
            client = px.client("127.0.0.1", port)
            px.register(client, Client)
            threading.Thread(target=drive, args=(port,), daemon=True).start()
            px.run()
            print("client closed", client.is_closing())
        """,
    )
    assert sorted(out[:2]) == [
        "client got ['hello', 'from', '__mp_main__', 'PING']",
        "socket got ['hello', 'from', '__mp_main__', 'ABC']",
    ]
    assert out[2:] == ["client closed True"]


def test_a_transport_crosses_as_a_handle_on_its_connection(tmp_path):
    """Connections hand their transports to the main interpreter, where
    another thread sends to all of them: a fan-out across the workers'
    interpreters."""
    out, _ = run_program(
        tmp_path,
        """
        import socket
        import threading
        import pyparallel as px

        members = []
        everyone = threading.Event()

        def join(transport):
            members.append(transport)
            if len(members) == 4:
                everyone.set()

        class Member:
            def connection_made(self, transport):
                px.call_from_main_thread(join, transport)

        def drive(port):
            socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
            everyone.wait(10)
            ids = [member.send(b"hello all\\n") for member in members]
            heard = []
            for sock in socks:
                got = b""
                while not got.endswith(b"\\n"):
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    got += chunk
                heard.append(got)
                sock.close()
            print(heard == [b"hello all\\n"] * 4, ids == [1, 1, 1, 1])
            px.stop()

        if __name__ == "__main__":
            server = px.server("127.0.0.1", 0)
            px.register(server, Member)
            threading.Thread(target=drive, args=(server.sockname[1],), daemon=True).start()
            px.run()
            print(all(type(m) is px.Transport for m in members))
            try:
                px.Channel().put(server)
            except px.AsyncError as exc:
                print("listener:", "only a connection's transport crosses" in str(exc))
        """,
    )
    assert out == ["True True", "True", "listener: True"]


def test_a_class_whose_module_is_still_importing_in_another_thread_is_waited_for(tmp_path):
    """A worker thread that blocks while importing the protocol's module (a
    slow import) is replaced by another thread of the same interpreter;
    that thread must wait for the import, not see the half-run module."""
    out, _ = run_program(
        tmp_path,
        """
        import socket
        import threading
        import pyparallel as px
        import slowecho

        def drive(port):
            socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(8)]
            for i, sock in enumerate(socks):
                sock.sendall(b"%d;" % i)
            replies = []
            for i, sock in enumerate(socks):
                got = b""
                while len(got) < len(b"%d;" % i):
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    got += chunk
                replies.append(got == b"%d;" % i)
                sock.close()
            print(all(replies), len(replies))
            px.stop()

        if __name__ == "__main__":
            server = px.server("127.0.0.1", 0)
            px.register(server, slowecho.Echo)
            threading.Thread(target=drive, args=(server.sockname[1],), daemon=True).start()
            px.run()
        """,
        modules={
            "slowecho": """
            import time

            time.sleep(0.5)  # blocks the importing worker thread

            class Echo:
                def data_received(self, transport, data):
                    return data
            """
        },
    )
    assert out == ["True 8"]


def test_register_imports_the_protocols_module_in_every_worker_before_the_first_connection(tmp_path):
    """Finding the class in a worker's interpreter imports its module there
    (a second here); register() has every worker do it at once, so the
    first connections, made after that, are answered at once."""
    out, _ = run_program(
        tmp_path,
        """
        import socket
        import threading
        import time
        import pyparallel as px
        import slowimport

        def drive(port):
            time.sleep(2.5)  # both workers' imports (1 s each, in parallel) are done
            took = []
            for i in range(4):
                started = time.monotonic()
                with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                    sock.sendall(b"%d;" % i)
                    assert sock.recv(100) == b"%d;" % i
                took.append(time.monotonic() - started)
            print(max(took) < 0.6, [round(t, 2) for t in took])
            px.stop()

        if __name__ == "__main__":
            server = px.server("127.0.0.1", 0)
            px.register(server, slowimport.Echo)
            threading.Thread(target=drive, args=(server.sockname[1],), daemon=True).start()
            px.run()
        """,
        modules={
            "slowimport": """
            import time

            time.sleep(1.0)

            class Echo:
                def data_received(self, transport, data):
                    return data
            """
        },
    )
    assert out[0].startswith("True"), out


def test_values_cross_by_copy_or_pickle(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import dataclasses
        import fractions
        import pyparallel as px

        @dataclasses.dataclass
        class Point:
            x: int
            y: int

        def identity(*args, **kwargs):
            return args, kwargs

        def moved(point):
            return Point(point.x + 1, point.y + 1)

        if __name__ == "__main__":
            values = (None, True, 1 << 80, -3, 2.5, "\\u2603", b"\\x00", (1, (2, "x")), [1, {2: 3}],
                      fractions.Fraction(1, 3))
            args, kwargs = px.submit_work(identity, *values, key=[4]).result(timeout=10)
            print(args == values, kwargs == {"key": [4]},
                  [type(v).__name__ for v in args] == [type(v).__name__ for v in values])
            point = px.submit_work(moved, Point(1, 2)).result(timeout=10)
            print(type(point).__module__, point)
        """,
    )
    assert out == ["True True True", "__main__ Point(x=2, y=3)"]


def test_what_cannot_cross_raises_a_clear_error(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import threading
        import pyparallel as px

        def outer():
            def nested():
                return 1
            return nested

        class Holder:
            def __init__(self):
                self.lock = threading.Lock()

            def method(self):
                return 1

        def make_generator():
            return (i for i in range(3))

        def attempt(label, call):
            try:
                call()
            except TypeError as exc:
                text = str(exc)
                print(label, "mode 'threads' or 'gil'" in text, text[:text.index(";")] if ";" in text else text)
            else:
                print(label, "no error")

        if __name__ == "__main__":
            attempt("lambda", lambda: px.submit_work(lambda: 1))
            attempt("nested", lambda: px.submit_work(outer()))
            attempt("method", lambda: px.submit_work(Holder().method))
            attempt("argument", lambda: px.submit_work(print, threading.Lock()))
            attempt("map", lambda: px.map(lambda x: x, [1]))
            attempt("timer", lambda: px.timer(0, lambda: None))
            future = px.submit_work(make_generator)
            exc = future.exception(timeout=10)
            print("result", type(exc).__name__, "cannot cross" in str(exc))
        """,
    )
    assert out[0].startswith("lambda True submit_work() function <function <lambda>")
    assert out[0].endswith("is a lambda")
    assert out[1].startswith("nested True") and out[1].endswith("is defined inside a function")
    assert out[2].startswith("method True") and "bound to a Holder instance that cannot be pickled" in out[2]
    assert out[3].startswith("argument True submit_work() argument of type _thread.lock cannot cross")
    assert out[4].startswith("map True") and out[4].endswith("is a lambda")
    assert out[5].startswith("timer True timer() function")
    assert out[6] == "result TypeError True"


def test_exceptions_cross_with_their_tracebacks(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import pyparallel as px

        class Unpicklable(Exception):
            def __init__(self, a, b):
                super().__init__(a)
                self.b = b

        def fail():
            raise KeyError("missing thing")

        def fail_oddly():
            raise Unpicklable("odd", lambda: None)

        if __name__ == "__main__":
            exc = px.submit_work(fail).exception(timeout=10)
            print(type(exc).__name__, exc, "in fail" in str(exc.__cause__))
            exc = px.submit_work(fail_oddly).exception(timeout=10)
            print(type(exc).__name__, "Unpicklable: odd" in str(exc), "in fail_oddly" in str(exc.__cause__))
        """,
    )
    assert out == ["KeyError 'missing thing' True", "AsyncError True True"]


def test_workers_submit_work_and_call_the_main_thread(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import threading
        import pyparallel as px

        def inner(x):
            return x + 1

        def outer(x):
            # A nested submission: its Future lives in this worker's interpreter.
            return px.submit_work(inner, x).result(timeout=10) * 10

        def on_main(x):
            return (x, threading.current_thread() is threading.main_thread())

        def ask_main(x):
            return px.call_from_main_thread_and_wait(on_main, x)

        def tick(channel):
            channel.put(px.is_parallel_thread())

        if __name__ == "__main__":
            print(px.submit_work(outer, 4).result(timeout=10))
            future = px.submit_work(ask_main, 7)
            while not future.done():
                px.run_once(timeout=0.1)
            print(future.result())
            channel = px.Channel()
            timer = px.timer(0.01, tick, channel, period=0.01)
            print([channel.get(timeout=10) for _ in range(3)])
            timer.cancel()
        """,
    )
    assert out == ["50", "(7, True)", "[True, True, True]"]


def test_per_module_state_is_per_interpreter(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import sys
        import pyparallel as px
        from pyparallel import _core

        def identities():
            return (id(_core), id(px.AsyncError), id(_core.Future), px.protected(px.dict()),
                    sys.modules["__main__"].__name__)

        if __name__ == "__main__":
            mine = (id(_core), id(px.AsyncError), id(_core.Future))
            for _ in range(4):
                theirs = px.submit_work(identities).result(timeout=10)
                print(all(a != b for a, b in zip(mine, theirs[:3])), theirs[3], theirs[4])
        """,
    )
    assert out == ["True True __mp_main__"] * 4


def test_an_extension_that_refuses_subinterpreters_suggests_mode_gil(tmp_path):
    out, err = run_program(
        tmp_path,
        """
        import logging
        import socket
        import pyparallel as px
        import uses_curses

        if __name__ == "__main__":
            logging.basicConfig()
            exc = px.submit_work(uses_curses.terminal_name).exception(timeout=10)
            print(type(exc).__name__, "mode 'gil'" in str(exc), "PYPARALLEL_MODE=gil" in str(exc))
            server = px.server("127.0.0.1", 0)
            px.register(server, uses_curses.Protocol)
            with socket.create_connection(("127.0.0.1", server.sockname[1]), timeout=10) as sock:
                print("refused", sock.recv(10) == b"")
            print("errors", px.stats()["errors"] >= 1)
        """,
        modules={
            "uses_curses": """
                import _curses

                def terminal_name():
                    return "never"

                class Protocol:
                    def data_received(self, transport, data):
                        return data
            """
        },
    )
    assert out == ["ImportError True True", "refused True", "errors True"]
    assert "does not support loading in subinterpreters" in err and "--mode gil" in err


def test_the_same_program_runs_in_mode_gil(tmp_path):
    source = """
        import pyparallel as px

        def square(x):
            return x * x

        if __name__ == "__main__":
            print(px.stats()["mode"], px.map(square, range(5)))
    """
    assert run_program(tmp_path, source, mode="gil")[0] == ["gil [0, 1, 4, 9, 16]"]
    assert run_program(tmp_path, source)[0] == ["interpreters [0, 1, 4, 9, 16]"]


def test_run_mode_argument_and_bad_modes(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import pyparallel as px

        def report():
            print(px.stats()["mode"])

        if __name__ == "__main__":
            # run() starts the loop, in the mode it asks for; the call
            # queued before runs inside it.
            px.call_from_main_thread(report)
            px.run(mode="interpreters")
            try:
                px.run(mode="threads")
            except ValueError as exc:
                print("threads:", "free-threaded" in str(exc))
            try:
                px.run(mode="processes")
            except ValueError as exc:
                print("unknown:", "threads, interpreters, gil" in str(exc))
        """,
        mode="gil",
    )
    assert out == ["interpreters", "threads: True", "unknown: True"]


def test_shared_buffer_is_freed_with_its_last_holder_across_interpreters(tmp_path):
    out, _ = run_program(
        tmp_path,
        """
        import gc
        import os
        import pyparallel as px

        held = []

        def hold(buf):
            held.append(buf)
            memoryview(buf)[len(held)] = 1
            return len(buf)

        def mappings():
            with open("/proc/self/maps") as maps:
                return sum("pyparallel.SharedBuffer" in line for line in maps)

        if __name__ == "__main__":
            before = mappings()
            buf = px.SharedBuffer(1 << 20)
            print([px.submit_work(hold, buf).result(timeout=10) for _ in range(4)])
            print(sum(memoryview(buf)[1:5]) > 0)
            del buf
            gc.collect()
            print("held by workers", mappings() == before + 1)
            # The workers' interpreters outlive a run (parked for the next
            # one), and so do their module globals, as in the other modes.
            px.run()
            print("still held", mappings() == before + 1)
            # Another worker count ends them, and their holds with them.
            os.environ["PYPARALLEL_WORKERS"] = "1"
            px.run()
            print("freed", mappings() == before)
        """,
    )
    assert out == [str([1 << 20] * 4), "True", "held by workers True", "still held True", "freed True"]
