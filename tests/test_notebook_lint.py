"""Lint of every notebook against the conventions of docs/design.md section "Conventions", and of the lint itself (a negative test on a
deliberately bad notebook, so that the lint cannot pass vacuously)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from salma.cli.notebooks import (
    lint_collection,
    lint_notebook,
    list_notebooks,
    load_ci_parameters,
    notebook_parameters,
    parse_parameters,
)

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = list_notebooks(NOTEBOOK_DIR)


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_follows_conventions(path):
    assert lint_notebook(path) == []


def test_notebooks_together():
    assert lint_collection(NOTEBOOKS, load_ci_parameters(NOTEBOOK_DIR)) == []


def test_ci_parameters_is_a_mapping_of_upper_case_names():
    ci = load_ci_parameters(NOTEBOOK_DIR)
    assert ci, "ci_parameters.yml is empty: CI would run notebooks at their full default sizes"
    assert all(k.isupper() for k in ci)


# --------------------------------------------------------------------------- the lint catches mistakes
def _notebook(cells, kernel="python3"):
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": kernel, "display_name": kernel,
                                                              "language": "python"}})


def _write(tmp_path, name, nb) -> Path:
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def _good_cells():
    return [new_markdown_cell("# Title\n\nintro"),
            new_code_cell('PRESET = "small"\nSEEDS = [0, 1]\nRADIUS = 2.5', metadata={"tags": ["parameters"]}),
            new_code_cell("import salma")]


def test_lint_accepts_a_good_notebook(tmp_path):
    path = _write(tmp_path, "07_good_one.ipynb", _notebook(_good_cells()))
    assert lint_notebook(path) == []
    assert notebook_parameters(path) == {"PRESET": "small", "SEEDS": [0, 1], "RADIUS": 2.5}
    assert parse_parameters("LR = -1e-3") == ({"LR": -1e-3}, []), "a negative number is a literal"


def test_lint_flags_a_bad_notebook(tmp_path):
    long_def = "def helper(x):\n" + "".join(f"    x = x + {i}\n" for i in range(11)) + "    return x\n"
    executed = new_code_cell("1 + 1", execution_count=3,
                             outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"},
                                                             execution_count=3)])
    cells = [new_code_cell("print('no title')"),
             new_code_cell("preset = 'small'\nSTEPS = int('3')", metadata={"tags": ["parameters"]}),
             new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
             executed,
             new_code_cell(long_def),
             new_code_cell("import matplotlib\nmatplotlib.use('agg')")]
    path = _write(tmp_path, "Bad-Name.ipynb", _notebook(cells, kernel="ir"))
    problems = "\n".join(lint_notebook(path))
    for expected in ["NN_snake_case", "kernelspec", "'# ' title", "2 cells are tagged 'parameters'",
                     "'preset' is not UPPER_CASE", "STEPS is not a literal", "stored outputs",
                     "execution count", "helper is 13 lines", "forces a matplotlib backend"]:
        assert expected in problems, f"lint missed: {expected}\n{problems}"


def test_lint_flags_a_missing_parameters_cell(tmp_path):
    path = _write(tmp_path, "01_none.ipynb", _notebook([new_markdown_cell("# T"), new_code_cell("x = 1")]))
    assert any("0 cells are tagged 'parameters'" in p for p in lint_notebook(path))


def test_lint_flags_shared_helpers_and_unknown_ci_keys(tmp_path):
    helper = new_code_cell("def show(x):\n    return x")
    a = _write(tmp_path, "01_a.ipynb", _notebook(_good_cells() + [helper]))
    b = _write(tmp_path, "02_b.ipynb", _notebook(_good_cells() + [helper]))
    problems = "\n".join(lint_collection([a, b], {"PRESET": "tiny", "NOT_A_PARAMETER": 1}))
    assert "show is defined in 01_a.ipynb, 02_b.ipynb" in problems
    assert "NOT_A_PARAMETER" in problems
    assert "PRESET" not in problems


@pytest.mark.parametrize("source", ["X = foo()", "X = [1, y]", "X: int = 1", "X = Y = 1", "import os",
                                    "X = {'a': f'{1}'}", "X = 1 + 2"])
def test_parameters_must_be_literal_assignments(source):
    _, problems = parse_parameters(source)
    assert problems, source


def test_parameters_accept_literals():
    values, problems = parse_parameters('A = 1\nB = "s"  # comment\nC = None\nD = (1, -2.5)\n'
                                        'E = {"k": [True, False]}')
    assert problems == []
    assert values == {"A": 1, "B": "s", "C": None, "D": (1, -2.5), "E": {"k": [True, False]}}
