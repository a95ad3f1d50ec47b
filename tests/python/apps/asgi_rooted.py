"""asgi_raw's app mounted under a root path, as behind a proxy that serves
it at /mnt/é: the HttpServer subclass ASGIServer.for_app makes, which
--app serves as it is (without the lifespan, which serve_app runs)."""

from pyparallel.http import ASGIServer

Rooted = ASGIServer.for_app("apps.asgi_raw:app", root_path="/mnt/\u00e9")
