"""The examples of a doc page, read and run as programs (test_api_docs.py,
test_http_docs.py).

An example is a ```python block. It runs as a script file in a directory of
its own, with the environment pytest runs in (PYPARALLEL_MODE, PYPARALLEL_IO,
PYPARALLEL_WORKERS), so that in mode "interpreters" the workers can import it
as __mp_main__ to find its functions and classes. What it must print, in
order, is written in its comments: the comment that ends a line
`print(...)  # expected`, and every line that is only a comment (the output
of a print() in a loop).

An example that cannot run in a mode says so in the doc, next to the block,
with a marker on a line of its own between the text before the block and the
block:

    <!-- not in mode interpreters: TypeError: lambdas cannot cross -->

In that mode the program must fail: a non-zero exit, and the text after the
mode's colon in its stderr. So the doc cannot claim an example works where it
does not, nor that it fails where it works.

Each example is named after the heading it sits under (its first code span up
to the parenthesis, else the heading's words; -2, -3 … for the next blocks
under the same heading), so that a test id says where in the doc to look.
"""

import re
import subprocess
import sys

import pytest

MODES = ("threads", "interpreters", "gil")

HEADING = re.compile(r"^#+ (.*)$")
MARKER = re.compile(r"^<!-- not in mode (\w+): (.+?) -->$")
# A print() line's expected output: what follows its closing parenthesis and
# a comment sign.
PRINT = re.compile(r"^\s*print\(.*\)\s+# (.*)$")


class Example:
    def __init__(self, name, code, failures):
        self.name = name
        self.code = code
        # mode -> the error text the doc says the program fails with there.
        self.failures = failures

    def only_imports(self):
        return all(line.startswith(("import ", "from ")) for line in self.code.splitlines() if line.strip())

    def expected_output(self):
        lines = []
        for line in self.code.splitlines():
            if line.strip().startswith("# "):
                lines.append(line.strip()[2:])
            elif match := PRINT.match(line):
                lines.append(match.group(1).strip())
        return lines

    def run(self, directory, timeout):
        """Runs the example as directory/example.py, in directory."""
        script = directory / "example.py"
        script.write_text(self.code)
        return subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, cwd=directory
        )

    def check(self, directory, mode, timeout):
        """Runs the example in mode (the environment's) and fails unless it
        does what the doc says: exits 0 and prints its comments, or, where a
        marker says it fails in mode, fails with the marker's error."""
        result = self.run(directory, timeout)
        report = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        error = self.failures.get(mode)
        if error is not None:
            assert result.returncode != 0, f"the doc says this example fails in mode {mode}\n{report}"
            assert error in result.stderr, report
            return
        assert result.returncode == 0, report
        assert [line.rstrip() for line in result.stdout.splitlines()] == self.expected_output(), report


def heading_name(heading):
    spans = re.findall(r"`([^`]+)`", heading)
    if spans:
        return re.split(r"[ (=]", spans[0].removeprefix("with "), maxsplit=1)[0]
    return "-".join(re.findall(r"\w+", heading.lower()))


def parse(text):
    """The ```python blocks of a doc page, as Examples, in order; a
    ValueError for a marker that is malformed, names no mode, or is not
    right before a block."""
    examples = []
    name = "top"
    markers = {}
    lines = iter(text.splitlines())
    for line in lines:
        if markers and not MARKER.match(line) and not line.startswith("```python") and line.strip():
            raise ValueError(f"a marker is followed by {line!r} instead of a ```python block")
        if heading := HEADING.match(line):
            name = heading_name(heading.group(1))
        elif marker := MARKER.match(line):
            mode, error = marker.groups()
            if mode not in MODES:
                raise ValueError(f"{line!r} names no mode of {MODES}")
            markers[mode] = error
        elif line == "```python":
            code = []
            for line in lines:
                if line == "```":
                    break
                code.append(line)
            taken = {example.name for example in examples}
            unique = name
            number = 1
            while unique in taken:
                number += 1
                unique = f"{name}-{number}"
            examples.append(Example(unique, "\n".join(code) + "\n", markers))
            markers = {}
        elif line.startswith("```"):
            # Another language's block: its lines are neither headings nor
            # markers.
            for line in lines:
                if line == "```":
                    break
        elif line.startswith("<!-- not in mode"):
            raise ValueError(f"a marker that does not read '<!-- not in mode MODE: ERROR -->': {line!r}")
    return examples


def params(examples):
    """pytest parameters for examples, named after them."""
    return [pytest.param(example, id=example.name) for example in examples]
