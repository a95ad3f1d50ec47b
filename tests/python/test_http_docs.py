"""docs/http.md's examples are programs that run: every ```python block that
calls px.run() is run in a subprocess and must exit 0 and print what its
comments say. The expected output is the comment on each print() line, and
every line that is only a comment (for prints in a loop), in order.
"""

import pathlib
import re
import subprocess
import sys

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "http.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
EXAMPLE_TIMEOUT = 60


def examples():
    blocks = [block for block in BLOCK.findall(DOC.read_text()) if "px.run()" in block]
    return [pytest.param(block, id=f"example{i}") for i, block in enumerate(blocks, 1)]


def expected_output(code):
    lines = []
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith("# "):
            lines.append(stripped[2:])
        elif stripped.startswith("print(") and "  # " in line:
            lines.append(line.split("  # ", 1)[1].strip())
    return lines


def test_the_doc_has_examples():
    assert len(examples()) >= 8


@pytest.mark.shares_objects(
    "the examples run with python -c and start their server at the top level, which worker interpreters cannot "
    "import (docs/interpreters.md)"
)
@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize("code", examples())
def test_doc_example(code, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert [line.rstrip() for line in result.stdout.splitlines()] == expected_output(code), result.stderr
