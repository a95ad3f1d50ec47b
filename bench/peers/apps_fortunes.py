"""The rows and template of the fortunes route of bench/apps.py's applications.

TechEmpower's fortunes test without its database: FORTUNES is the table, held
in memory (20 rows, TechEmpower's twelve among them, with the one that must be
escaped and the one in Japanese); every request copies it, adds one row, sorts
the rows by message and renders templates/fortunes.html, whose Jinja2
environment escapes every message (both frameworks turn autoescaping on for
.html templates). apps_flask.py and apps_starlette.py render the same rows
with the same template, so the two differ only in their framework.
"""

import os
from collections import namedtuple

Fortune = namedtuple("Fortune", "id message")


TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TEMPLATE = "fortunes.html"
ADDED = Fortune(0, "Additional fortune added at request time.")

FORTUNES = (
    Fortune(1, "fortune: No such file or directory"),
    Fortune(2, "A computer scientist is someone who fixes things that aren't broken."),
    Fortune(3, "After enough decimal places, nobody gives a damn."),
    Fortune(4, "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1"),
    Fortune(5, "A computer program does what you tell it to do, not what you want it to do."),
    Fortune(6, "Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen"),
    Fortune(7, "Any program that runs right is obsolete."),
    Fortune(8, "A list is only as strong as its weakest link. — Donald Knuth"),
    Fortune(9, "Feature: A bug with seniority."),
    Fortune(10, "Computers make very fast, very accurate mistakes."),
    Fortune(11, '<script>alert("This should not be displayed in a browser alert box.");</script>'),
    Fortune(12, "フレームワークのベンチマーク"),
    Fortune(13, "A cache hit & a cache miss walk into a bar; only one of them remembers why."),
    Fortune(14, "There are 10 kinds of people: those who read binary and those who don't."),
    Fortune(15, "The fastest request is the one you never make."),
    Fortune(16, 'Every core is busy when "one more thread" is the answer to everything.'),
    Fortune(17, "Measure twice, optimise once."),
    Fortune(18, "It works on my machine <br> is not a deployment strategy."),
    Fortune(19, "Latency is a tail; throughput is the dog it wags."),
    Fortune(20, "Zero-copy: the bytes you did not move cannot be wrong."),
)


def rows():
    """The rows of one response: the table, the added row, sorted by message."""
    fortunes = [*FORTUNES, ADDED]
    fortunes.sort(key=lambda fortune: fortune.message)
    return fortunes
