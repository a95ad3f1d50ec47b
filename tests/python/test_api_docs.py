"""docs/api.md's examples are programs that run in every mode: each ```python
block runs as a script in the mode under test (tools/run-pytest.sh runs the
suite once per mode) and must print what its comments say, or, where the doc
marks it as failing in that mode, fail with the error the doc names
(doc_examples.py has the rules).
"""

import pathlib
import re

import pytest

from conftest import expected_mode
from doc_examples import Example, params, parse

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md"
EXAMPLE_TIMEOUT = 30


# The examples that need px.dict, px.list, px.xlist or protected objects
# shared by every interpreter.
def test_the_doc_has_examples_and_every_one_says_what_it_prints():
    found = parse(DOC.read_text())
    assert len(found) >= 40
    silent = [example.name for example in found if not example.expected_output() and not example.only_imports()]
    assert not silent, f"examples that promise no output: {silent}"


@pytest.mark.parametrize(
    "text, error",
    [
        ("<!-- not in mode gil: X -->\n\ntext\n```python\n```\n", "instead of a ```python block"),
        ("<!-- not in mode gil: X -->\n```sh\n```\n", "instead of a ```python block"),
        ("<!-- not in mode gil: X -->\n## `px.f()`\n```python\n```\n", "instead of a ```python block"),
        ("<!-- not in mode fast: X -->\n```python\n```\n", "names no mode"),
        ("<!-- not in mode threads -->\n```python\n```\n", "does not read"),
    ],
)
def test_a_misplaced_or_malformed_marker_is_an_error(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        parse(text)


def test_a_marker_applies_to_the_next_block_only_and_headings_name_the_blocks():
    text = (
        "## `px.f(x)`\n<!-- not in mode gil: E: why -->\n\n```python\na\n```\n"
        "```sh\n# not a heading\n```\n```python\nb\n```\n"
    )
    first, second = parse(text)
    assert (first.name, first.failures, second.name, second.failures) == ("px.f", {"gil": "E: why"}, "px.f-2", {})


def test_a_marked_example_must_fail_with_the_documented_error(tmp_path):
    mode = expected_mode()
    failing = Example("failing", "raise TypeError('documented')\n", {mode: "TypeError: documented"})
    failing.check(tmp_path, mode, EXAMPLE_TIMEOUT)
    for code, failures in [
        ("print('fine')  # fine\n", {mode: "TypeError"}),
        ("raise TypeError('other')\n", {mode: "TypeError: documented"}),
    ]:
        with pytest.raises(AssertionError):
            Example("wrong", code, failures).check(tmp_path, mode, EXAMPLE_TIMEOUT)


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize("example", params(parse(DOC.read_text())))
def test_doc_example(example, tmp_path):
    example.check(tmp_path, expected_mode(), EXAMPLE_TIMEOUT)
