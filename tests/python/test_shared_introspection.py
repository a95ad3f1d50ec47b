"""The introspection functions of the shared-state part of the binding:
px.gmtime, px.cpu_count, px.rdtsc and px.thread_seq_id, from one thread and
from many.
"""

import datetime
import email.utils
import os
import re
import sys
import threading
import time

import pyparallel as px
from conftest import run_on_threads

IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d\d:\d\d:\d\d GMT$"
)


def test_gmtime_is_an_imf_fixdate_of_now():
    text = px.gmtime()
    assert IMF_FIXDATE.match(text), text
    parsed = email.utils.parsedate_to_datetime(text)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - parsed).total_seconds()) < 2
    assert text.startswith(parsed.strftime("%a"))  # weekday agrees with the date


def test_gmtime_advances_and_agrees_across_threads():
    first = px.gmtime()
    results = []
    run_on_threads(lambda i: results.extend(px.gmtime() for _ in range(1000)), 4)
    assert all(IMF_FIXDATE.match(r) for r in results)
    stamps = {email.utils.parsedate_to_datetime(r) for r in results}
    assert max(stamps) - min(stamps) < datetime.timedelta(seconds=3)
    time.sleep(1.1)
    assert email.utils.parsedate_to_datetime(px.gmtime()) > email.utils.parsedate_to_datetime(first)


def test_cpu_count_is_online_logical_cpus():
    assert px.cpu_count() == os.sysconf("SC_NPROCESSORS_ONLN")
    if "PYTHON_CPU_COUNT" not in os.environ and "cpu_count" not in sys._xoptions:
        assert px.cpu_count() == os.cpu_count()


def test_rdtsc_increases():
    values = [px.rdtsc() for _ in range(1000)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    before = px.rdtsc()
    time.sleep(0.01)
    assert px.rdtsc() > before


def test_thread_seq_id_is_unique_stable_and_ordered():
    assert px.thread_seq_id() == 0  # the thread that imported pyparallel
    start = threading.Barrier(8, timeout=10)
    turn = threading.Lock()
    first_calls = []
    ids = {}

    def worker(index):
        start.wait()
        with turn:  # first calls in a known order
            mine = px.thread_seq_id()
            first_calls.append(mine)
        for _ in range(100):
            assert px.thread_seq_id() == mine
        ids[index] = mine

    run_on_threads(worker, 8)
    assert len(set(ids.values())) == 8 and 0 not in ids.values()
    assert first_calls == sorted(first_calls)
    assert px.thread_seq_id() == 0
    # A new thread gets a number never handed out before.
    later = []
    run_on_threads(lambda i: later.append(px.thread_seq_id()), 1)
    assert later[0] > max(ids.values())
