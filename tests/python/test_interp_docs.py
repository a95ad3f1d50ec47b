"""docs/interpreters.md's examples are programs that run: every ```python
block is saved as a script (the workers import it as __mp_main__) and run in
mode "interpreters"; it must exit 0 and print what the comments on its
print() lines say, in order.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import gil_enabled

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "interpreters.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
EXAMPLE_TIMEOUT = 60

pytestmark = pytest.mark.skipif(
    not gil_enabled(),
    reason="mode 'interpreters' needs a CPython with the GIL; free-threaded builds use mode 'threads'",
)


def examples():
    return [pytest.param(block, id=f"example{i}") for i, block in enumerate(BLOCK.findall(DOC.read_text()), 1)]


def expected_output(code):
    return [line.split("  # ", 1)[1].strip() for line in code.splitlines() if line.strip().startswith("print(")]


def test_the_doc_has_examples():
    assert len(examples()) >= 3


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize("code", examples())
def test_doc_example(code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        cwd=tmp_path,
        env=dict(os.environ, PYPARALLEL_MODE="interpreters"),
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert [line.rstrip() for line in result.stdout.splitlines()] == expected_output(code), result.stderr
