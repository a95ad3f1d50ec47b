"""The live status page of --metrics (/): one HTML file, package data
beside this module, with its script and styles inline and no external
asset, so that it works offline. It polls /status.json (every second, or
?interval=MS) and draws small canvas charts: per worker its busy share
and requests per second (what shows whether every core is working), and
for the server its requests per second, connections, hand-offs, queue
depths and memory."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def page() -> bytes:
    return resources.files(__package__).joinpath("status.html").read_bytes()
