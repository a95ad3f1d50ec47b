"""docs/http.md's examples are programs that run in every mode: each ```python
block that calls px.run() runs as a script in the mode under test
(tools/run-pytest.sh runs the suite once per mode) and must exit 0 and print
what its comments say: the comment on each print() line, and every line that
is only a comment (for prints in a loop), in order (doc_examples.py has the
rules). The other blocks are not programs: the page's opening import, and a
module for the command line's --app.
"""

import pathlib

import pytest

from conftest import expected_mode
from doc_examples import params, parse

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "http.md"
EXAMPLE_TIMEOUT = 60


# The handlers count their visits in a px.dict that the main thread reads.
def programs():
    return [example for example in parse(DOC.read_text()) if "px.run()" in example.code]


def test_the_doc_has_examples():
    found = programs()
    assert len(found) >= 8


@pytest.mark.timeout(EXAMPLE_TIMEOUT + 10)
@pytest.mark.parametrize("example", params(programs()))
def test_doc_example(example, tmp_path):
    example.check(tmp_path, expected_mode(), EXAMPLE_TIMEOUT)
