"""pyparallel's application for bench/http.py: the command line's file server
plus the "work" route.

FileServer already serves /plaintext, /json and the static files under
--root; Bench adds GET /work, a pure-Python computation of about 90 us per
request (the HTTP issue's "work" scenario), with the same body as the
asyncio peer's (bench/peers/http_asyncio.py).

  python -m pyparallel.http.server --app http_pyparallel:Bench --root DIR
"""

from pyparallel.http.server import FileServer


class Bench(FileServer):
    def work(self, request):
        s = 0
        for i in range(3000):
            s += i * i
        return str(s)
