"""docs/api.md's examples are programs that run, in the mode under test: every
```python block is saved as a script (in mode "interpreters" the workers
import it as __mp_main__ to find its functions and classes) and run with the
environment pytest runs in (PYPARALLEL_MODE, PYPARALLEL_IO,
PYPARALLEL_WORKERS). It must exit 0 and print, in order, what the comments on
its print() lines say: the text after the `# ` that ends each line
`print(...)  # expected`.

An example that cannot run in a mode says so in the doc, next to the block,
with a marker the test reads, on a line of its own between the block and the
text before it:

    <!-- not in mode interpreters: TypeError: lambdas cannot cross -->

In that mode the program must then fail: a non-zero exit and the text after
the mode's colon in its stderr. So the doc cannot claim an example works where
it does not, nor that it fails where it works.

Each block is named after the heading it sits under (its first code span up to
the parenthesis, else the heading's words), so that a test id says where in
the doc to look.
"""

import pathlib
import re
import subprocess
import sys

import pytest

from conftest import expected_mode

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md"
EXAMPLE_TIMEOUT = 30
MODES = ("threads", "interpreters", "gil")

HEADING = re.compile(r"^#+ (.*)$")
MARKER = re.compile(r"^<!-- not in mode (\w+): (.+?) -->$")
# The expected output of a print() line: what follows its closing parenthesis
# and a comment sign.
PRINT = re.compile(r"^\s*print\(.*\)\s+# (.*)$")

# Examples in mode "interpreters" that need objects shared by every
# interpreter: each worker's interpreter has its own px.dict, px.list,
# px.xlist and protect registry today, and imports its own copy of what the
# script builds at the top level.
SHARED_CONTAINERS = "px.dict/px.list/px.xlist are per-interpreter in mode interpreters until the shared containers land"
NEED_SHARED_CONTAINERS = {"px.read_lock", "px.xlist", "px.eternalize"}


class Example:
    def __init__(self, name, code, failures):
        self.name = name
        self.code = code
        # mode -> the error text the doc says the program fails with there.
        self.failures = failures

    def only_imports(self):
        return all(line.startswith(("import ", "from ")) for line in self.code.splitlines() if line.strip())

    def expected_output(self):
        return [match.group(1).strip() for match in map(PRINT.match, self.code.splitlines()) if match]


def heading_name(heading):
    spans = re.findall(r"`([^`]+)`", heading)
    if spans:
        name = re.split(r"[ (=]", spans[0].removeprefix("with "), maxsplit=1)[0]
    else:
        name = "-".join(re.findall(r"\w+", heading.lower()))
    return name


def parse(text):
    """The doc's ```python blocks, as Examples, in order; a ValueError for a
    marker that is not right before a block or names no mode."""
    examples = []
    name = "top"
    markers = {}
    lines = iter(text.splitlines())
    for line in lines:
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
            for number in range(2, 100):
                if unique not in taken:
                    break
                unique = f"{name}-{number}"
            examples.append(Example(unique, "\n".join(code) + "\n", markers))
            markers = {}
        elif line.startswith("<!-- not in mode"):
            raise ValueError(f"a marker that does not read '<!-- not in mode MODE: ERROR -->': {line!r}")
        elif line.strip() and markers:
            raise ValueError(f"a marker is followed by {line!r} instead of a ```python block")
    return examples


def examples():
    params = []
    for example in parse(DOC.read_text()):
        marks = []
        if example.name in NEED_SHARED_CONTAINERS and expected_mode() == "interpreters":
            marks.append(pytest.mark.xfail(strict=True, reason=SHARED_CONTAINERS))
        params.append(pytest.param(example, id=example.name, marks=marks))
    return params


def run(example, directory):
    script = directory / "example.py"
    script.write_text(example.code)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        cwd=directory,
    )


def test_the_doc_has_examples_and_every_one_says_what_it_prints():
    found = parse(DOC.read_text())
    assert len(found) >= 40
    silent = [example.name for example in found if not example.expected_output() and not example.only_imports()]
    assert not silent, f"examples that promise no output: {silent}"


def test_the_examples_known_to_need_shared_containers_are_in_the_doc():
    names = {example.name for example in parse(DOC.read_text())}
    assert NEED_SHARED_CONTAINERS <= names, NEED_SHARED_CONTAINERS - names


@pytest.mark.parametrize(
    "text, error",
    [
        ("<!-- not in mode gil: X -->\n\ntext\n```python\n```\n", "instead of a ```python block"),
        ("<!-- not in mode fast: X -->\n```python\n```\n", "names no mode"),
        ("<!-- not in mode threads -->\n```python\n```\n", "does not read"),
    ],
)
def test_a_misplaced_or_malformed_marker_is_an_error(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse(text)


def test_a_marker_applies_to_the_next_block_only():
    first, second = parse("## `px.f(x)`\n<!-- not in mode gil: E: why -->\n\n```python\na\n```\n```python\nb\n```\n")
    assert (first.name, first.failures, second.name, second.failures) == ("px.f", {"gil": "E: why"}, "px.f-2", {})


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize("example", examples())
def test_doc_example(example, tmp_path):
    result = run(example, tmp_path)
    report = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    error = example.failures.get(expected_mode())
    if error is not None:
        assert result.returncode != 0, f"the doc says this example fails in mode {expected_mode()}\n{report}"
        assert error in result.stderr, report
        return
    assert result.returncode == 0, report
    assert [line.rstrip() for line in result.stdout.splitlines()] == example.expected_output(), report
