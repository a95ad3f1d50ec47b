"""The version and what --version reports, through the real command lines
in subprocesses: `python -m pyparallel` (--version, and usage without
arguments) and `python -m pyparallel.http.server --version`.

The version has one home (python/pyparallel/_version.py): the installed
distribution's metadata, pyparallel.__version__ and the first line of
--version must all be it, and CHANGELOG.md must have an entry for it. The
mode and the I/O backend --version names are the engine's own choices, so
they are checked against what px.stats() reports in a process with the same
environment.
"""

import importlib.metadata
import os
import pathlib
import platform
import re
import subprocess
import sys
import sysconfig
import tomllib

import pytest

import pyparallel as px
from conftest import expected_mode

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 60


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
    )


def engine_choice(env=None):
    """(mode, io) that px.stats() reports in a fresh process with env."""
    out = run("-c", "import pyparallel as px; s = px.stats(); print(s['mode'], s['io'])", env=env)
    assert out.returncode == 0, out.stderr
    mode, io = out.stdout.split()
    return mode, io


def report(result):
    """The lines of a successful --version as a dict: version, python, mode,
    io."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    first, *rest = result.stdout.splitlines()
    fields = dict(line.split(": ", 1) for line in rest)
    assert set(fields) == {"python", "mode", "io"}, result.stdout
    return {"version": first, **fields}


def test_one_version_everywhere():
    version = importlib.metadata.version("pyparallel")
    assert px.__version__ == version
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pyparallel._version.__version__"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), (
        f"CHANGELOG.md has no entry for {version}"
    )


@pytest.mark.timeout(2 * TIMEOUT)
@pytest.mark.parametrize("module", ["pyparallel", "pyparallel.http.server"])
def test_version_names_the_package_interpreter_mode_and_backend(module):
    info = report(run("-m", module, "--version"))
    assert info["version"] == f"pyparallel {importlib.metadata.version('pyparallel')}"

    python = info["python"]
    assert python.startswith(f"{platform.python_implementation()} {platform.python_version()}, "), python
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        gil = "enabled" if sys._is_gil_enabled() else "disabled"
        assert python.endswith(f", free-threaded build (GIL {gil})"), python
    else:
        assert python.endswith(", GIL build"), python

    mode, io = engine_choice()
    assert mode == expected_mode()
    source = "from PYPARALLEL_MODE" if os.environ.get("PYPARALLEL_MODE") else "the default for this interpreter"
    assert info["mode"] == f"{mode} ({source})"
    assert info["io"].split(" ", 1)[0] == io, info["io"]
    if os.environ.get("PYPARALLEL_IO", "auto") != "auto":
        assert info["io"] == f"{io} (from PYPARALLEL_IO)"


def test_version_follows_the_environment():
    env = {"PYPARALLEL_IO": "epoll", "PYPARALLEL_MODE": ""}
    info = report(run("-m", "pyparallel", "--version", env=env))
    assert info["io"] == "epoll (from PYPARALLEL_IO)"
    assert info["mode"] == f"{engine_choice(env)[0]} (the default for this interpreter)"

    # The other mode this interpreter can run, and the automatic backend.
    mode = "gil" if sys._is_gil_enabled() else "threads"
    env = {"PYPARALLEL_IO": "auto", "PYPARALLEL_MODE": mode}
    info = report(run("-m", "pyparallel", "--version", env=env))
    assert info["mode"] == f"{mode} (from PYPARALLEL_MODE)"
    if engine_choice(env)[1] == "io_uring":
        assert info["io"] == "io_uring (chosen automatically: the kernel allows it)"
    else:
        assert info["io"] == "epoll (chosen automatically: io_uring is unavailable here)"


def test_the_http_servers_version_follows_its_mode_and_io_flags():
    mode = "gil" if sys._is_gil_enabled() else "threads"
    env = {"PYPARALLEL_IO": "", "PYPARALLEL_MODE": ""}
    info = report(run("-m", "pyparallel.http.server", "--mode", mode, "--io", "epoll", "--version", env=env))
    assert info["mode"].split()[0] == mode
    assert info["io"].split()[0] == "epoll"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PYPARALLEL_MODE": "sideways"}, "unknown mode 'sideways' (from PYPARALLEL_MODE)"),
        ({"PYPARALLEL_IO": "carrier-pigeon"}, "PYPARALLEL_IO must be uring, epoll or auto"),
        ({"PYPARALLEL_WORKERS": "none"}, "PYPARALLEL_WORKERS must be a number of workers"),
    ],
)
def test_version_reports_settings_the_engine_refuses(env, message):
    """The version still comes first; then the engine's own error, exit 1."""
    result = run("-m", "pyparallel", "--version", env=env)
    assert result.returncode == 1, result.stdout
    version, python = result.stdout.splitlines()
    assert version == f"pyparallel {px.__version__}" and python.startswith("python: "), result.stdout
    assert f"python -m pyparallel: the engine would not start here: {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_without_arguments_it_prints_its_usage():
    result = run("-m", "pyparallel")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m pyparallel [-h] [--version]"), result.stdout
    assert "--version" in result.stdout.split("options:", 1)[1]
    assert result.stderr == ""


def test_an_unknown_argument_is_an_error():
    result = run("-m", "pyparallel", "--serve")
    assert result.returncode == 2
    assert "unrecognized arguments: --serve" in result.stderr


def test_the_http_server_lists_version_in_its_help():
    result = run("-m", "pyparallel.http.server", "--help")
    assert result.returncode == 0, result.stderr
    assert "--version" in result.stdout
