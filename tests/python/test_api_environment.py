"""What the runtime is configured by: PYPARALLEL_WORKERS, PYPARALLEL_IO and
PYPARALLEL_MODE (taking effect, and a clear error for a malformed value, at
the runtime's first use), and the mode a build implies (a free-threaded
build keeps the GIL off).
"""

import os
import subprocess
import sys

import pytest

import pyparallel as px
from conftest import expected_mode, gil_enabled, io_uring_unavailable

# ---- the workers, backend and mode in use ------------------------------------------------


def test_stats_workers_follow_the_environment():
    wanted = os.environ.get("PYPARALLEL_WORKERS")
    px.submit_work(int).result(timeout=10)
    if wanted:
        assert px.stats()["workers"] == int(wanted)
    else:
        assert px.stats()["workers"] == px.cpu_count()


def test_stats_io_backend_matches_the_environment():
    px.submit_work(int).result(timeout=10)
    io = px.stats()["io"]
    wanted = os.environ.get("PYPARALLEL_IO")
    names = {"uring": "io_uring", "io_uring": "io_uring", "epoll": "epoll"}
    if wanted:
        assert io == names[wanted]
    else:
        assert io in ("io_uring", "epoll")


def test_stats_mode_matches_the_build():
    assert px.stats()["mode"] == expected_mode()


@pytest.mark.skipif(gil_enabled(), reason="only a free-threaded build can keep the GIL off")
def test_import_keeps_the_gil_disabled():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, pyparallel; print(sys._is_gil_enabled())"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out.stderr
    assert "GIL" not in out.stderr, out.stderr


# ---- environment variables ---------------------------------------------------------------


def run_with_env(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("value", ["abc", "-3", "2x"])
def test_bad_workers_variable_is_a_clear_error(value):
    """A malformed PYPARALLEL_WORKERS is a ValueError naming the variable at
    the first use of the runtime, not silently replaced by a default: a
    production deployment that sets it wants to know it was not applied."""
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10)", PYPARALLEL_WORKERS=value)
    assert result.returncode != 0, "the bad value was ignored"
    assert "ValueError" in result.stderr and "PYPARALLEL_WORKERS" in result.stderr, result.stderr


def test_bad_io_variable_is_a_clear_error():
    """Like PYPARALLEL_WORKERS: PYPARALLEL_IO=bogus must not quietly mean auto."""
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10)", PYPARALLEL_IO="bogus")
    assert result.returncode != 0, "the bad value was ignored"
    assert "ValueError" in result.stderr and "PYPARALLEL_IO" in result.stderr, result.stderr


def test_bad_mode_variable_is_a_clear_error():
    result = run_with_env("import pyparallel as px; px.submit_work(int).result(timeout=10)", PYPARALLEL_MODE="bogus")
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "PYPARALLEL_MODE" in result.stderr, result.stderr


@pytest.mark.parametrize("io", ["uring", "epoll"])
def test_io_variable_selects_the_backend(io):
    if io == "uring" and io_uring_unavailable():
        pytest.skip(f"io_uring is unavailable here ({io_uring_unavailable()})")
    result = run_with_env(
        "import pyparallel as px; px.submit_work(int).result(timeout=10); print(px.stats()['io'])", PYPARALLEL_IO=io
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == {"uring": "io_uring", "epoll": "epoll"}[io]
