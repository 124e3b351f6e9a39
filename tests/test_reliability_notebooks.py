"""Reliability of the notebook runner (issue 23, case 12): every notebook parameter is checked against the
values it accepts before anything runs, and ``timings.json`` keeps the notebooks a run did not execute."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from salma.cli.notebooks import list_notebooks, notebook_parameters, run_all
from salma.cli.parameters import RULES, parameter_problem
from salma.paths import REPO_ROOT


def _notebook(path, parameters: str, body: str = "print('ran')"):
    nb = new_notebook(cells=[new_markdown_cell("# T"), new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                             new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.mark.parametrize(("name", "value"), [("SIZE", "nope"), ("SEEDS", "[]"), ("SEEDS", "[0, 0]"),
                                             ("STEPS", "0"), ("N_EVAL", "-3"), ("EXTRA_VARIANTS", "[nope]"),
                                             ("PRESET", "huge"), ("DEVICE", "gpu"), ("RADIUS", "true")])
def test_case12_a_bad_parameter_is_refused_before_any_notebook_runs(name, value, tmp_path, cli_error):
    line = cli_error(["reproduce", "--only", "03", "-p", name, value, "--out", tmp_path / "executed"])
    assert f"{name}=" in line and "is not accepted" in line and RULES[name][1] in line
    assert not (tmp_path / "executed").exists(), "nothing ran"


def test_case12_ci_parameters_are_checked_too(tmp_path):
    _notebook(tmp_path / "00_a.ipynb", "N_SHOW = 2")
    (tmp_path / "ci_parameters.yml").write_text("N_SHOW: 0\n")
    with pytest.raises(ValueError, match=r"ci_parameters.yml: N_SHOW=0 is not accepted"):
        run_all(tmp_path, tmp_path / "out", ci=True)


def test_case12_every_kit_notebook_parameter_has_a_rule_its_default_passes():
    for nb in list_notebooks(REPO_ROOT / "notebooks"):
        for name, value in notebook_parameters(nb).items():
            assert parameter_problem(name, value) is None, (nb.name, name)


def test_case12_timings_are_merged_not_replaced(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_first.ipynb", "N_SHOW = 1")
    _notebook(nbs / "01_second.ipynb", "N_SHOW = 1")
    out = tmp_path / "executed"
    run_all(nbs, out, only=["00"], log_output=False)
    run_all(nbs, out, only=["01"], log_output=False, parameters={"N_SHOW": 3})
    records = json.loads((out / "timings.json").read_text())
    assert [r["notebook"] for r in records] == ["00_first.ipynb", "01_second.ipynb"]
    assert records[1]["parameters"] == {"N_SHOW": 3} and all(r["ok"] for r in records)
    run_all(nbs, out, only=["00"], log_output=False, parameters={"N_SHOW": 2})
    records = json.loads((out / "timings.json").read_text())
    assert [(r["notebook"], r["parameters"]) for r in records] == [("00_first.ipynb", {"N_SHOW": 2}),
                                                                    ("01_second.ipynb", {"N_SHOW": 3})]


def test_a_partial_reproduce_leaves_results_md_alone(tmp_path, monkeypatch):
    """An ``--only`` run with another figures folder rewrote the tracked RESULTS.md from that one notebook."""
    from salma.cli import notebooks as runner

    monkeypatch.setenv("SALMA_FIGURES_DIR", str(tmp_path / "figures"))
    before = (REPO_ROOT / "RESULTS.md").read_bytes()
    from salma.cli import main

    try:
        assert main(["reproduce", "--only", "03", "-p", "BATCH", "4", "--out", str(tmp_path / "executed"),
                     "--quiet"]) == 0
        assert (REPO_ROOT / "RESULTS.md").read_bytes() == before
    finally:  # a failing run must not leave the tracked file rewritten
        (REPO_ROOT / "RESULTS.md").write_bytes(before)
    parsed = runner.argparse.Namespace(ci=False, only=None, parameter=None, notebooks=None)
    assert runner.is_main_job(parsed) and not runner.is_main_job(runner.argparse.Namespace(
        ci=False, only=["03"], parameter=None, notebooks=None))
