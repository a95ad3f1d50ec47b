"""docs/apps.md's examples are programs that run in every mode: each ```python
block that calls px.run() runs as a script in the mode under test and must
exit 0 and print what its comments say (doc_examples.py has the rules)."""

import pathlib

import pytest

from conftest import expected_mode
from doc_examples import params, parse

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "apps.md"
EXAMPLE_TIMEOUT = 60


def programs():
    return [example for example in parse(DOC.read_text()) if "px.run()" in example.code]


def test_the_doc_has_examples():
    assert programs()


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize("example", params(programs()))
def test_doc_example(example, tmp_path):
    example.check(tmp_path, expected_mode(), EXAMPLE_TIMEOUT)
