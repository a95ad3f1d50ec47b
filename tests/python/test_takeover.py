"""Idle workers take over (issue 15, part 2).

- A connection whose callback computes for 2 s (pure Python, never
  sleeping) does not stall the other connections of its worker: 100 other
  connections pinging meanwhile are answered with a p99 latency under
  50 ms. The computing thread loses its worker to a thread that serves the
  rest, while the computation leaves a core idle.
- px.map over items of very unequal cost finishes within 1.2x of the ideal
  split (the sum of the costs divided by the workers): an idle worker takes
  the items queued behind a long one.

Costs are spent computing until a deadline on the clock, so an item costs
the same wall time however loaded the shared machine is; the ideal split is
then known exactly rather than measured.
"""

import json
import os
import subprocess
import sys
import time

import pytest

import pyparallel as px
from conftest import SANITIZER_SLOWDOWN, expected_mode

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "takeover_client.py")

# The targets.
P99_LIMIT = 0.050
IDEAL_SPLIT_FACTOR = 1.2
# Attempts before a timing test fails: the machine is shared, and one
# passing attempt proves the property (without take-over every attempt
# fails by far: the pings of the computing worker wait up to 2 s, the
# long item's worker runs half the others after it).
ATTEMPTS = 3


def compute(seconds):
    """Computes in pure Python, without sleeping, for seconds of wall time."""
    until = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < until:
        rounds += 1
    return rounds


# ---- a computing callback does not stall its worker's other connections ----


class Computing:
    """b"compute S" computes for S seconds, then answers b"computed"; any
    other bytes are echoed."""

    def data_received(self, transport, data):
        if data.startswith(b"compute "):
            compute(float(data.split()[1]))
            return b"computed"
        return data


def p99(latencies):
    ordered = sorted(latencies)
    return ordered[int(len(ordered) * 0.99)]


@pytest.mark.timeout(180)
def test_pings_stay_quick_while_a_callback_computes_for_2_s(rt):
    """One connection computes for 2 s; 100 others (about half of them on
    its worker) ping every 20 ms meanwhile, from a client process of its
    own. Their p99 round trip stays under 50 ms, and the computing
    connection's own answer still comes (its callbacks never overlap)."""
    port = rt.serve(Computing)

    def driver():
        results = []
        for _ in range(ATTEMPTS):
            done = subprocess.run(
                [sys.executable, CLIENT, str(port), "100", "2.0"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            outcome = json.loads(done.stdout)
            assert outcome["computed"] == "computed"
            results.append(p99(outcome["latencies"]))
            if results[-1] < P99_LIMIT * SANITIZER_SLOWDOWN:
                break
        return results

    results = rt.run(driver, timeout=150)
    assert min(results) < P99_LIMIT * SANITIZER_SLOWDOWN, f"p99 ping latencies {results} (s) while a callback computed"


# ---- px.map over items of unequal cost -----------------------------------


def spend(seconds):
    compute(seconds)
    return seconds


UNIT = 0.01


def one_long_item():
    """One item 20 times the cost of each of the 23 others."""
    return [20 * UNIT] + [UNIT] * 23


@pytest.mark.skipif(
    expected_mode() == "gil",
    reason="mode 'gil' runs Python code on one thread at a time: the ideal split of CPU-bound items is the serial time",
)
@pytest.mark.parametrize(
    ("costs", "chunksize"),
    [(one_long_item(), None), (one_long_item(), 1)],
    ids=["default-chunks", "chunksize-1"],
)
def test_map_over_unequal_items_finishes_near_the_ideal_split(costs, chunksize):
    """Without stealing, the long item's worker also runs about half of
    the others after it (about 1.45x the ideal split, by chunks or item
    by item); with it, the other worker runs them meanwhile."""
    workers = px.stats()["workers"]
    ideal = sum(costs) / workers
    # The split is reachable: no single item costs more than it.
    assert max(costs) <= ideal
    assert px.map(spend, costs, chunksize=chunksize) == costs
    took = []
    for _ in range(ATTEMPTS + 2):
        started = time.monotonic()
        px.map(spend, costs, chunksize=chunksize)
        took.append(time.monotonic() - started)
        if min(took) <= IDEAL_SPLIT_FACTOR * ideal * SANITIZER_SLOWDOWN:
            break
    ratio = min(took) / ideal
    assert ratio <= IDEAL_SPLIT_FACTOR * SANITIZER_SLOWDOWN, (
        f"px.map took {ratio:.2f}x the ideal split ({min(took):.3f} s for {ideal:.3f} s)"
    )
