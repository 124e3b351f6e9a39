"""Execute every notebook with papermill at the CI sizes (notebooks/ci_parameters.yml) and check the
results JSON each one writes. Kernel python3, MPLBACKEND=agg, an execution timeout per cell; executed
copies and figures go to a temporary folder (SALMA_FIGURES_DIR), so the tests never touch figures/.

A new notebook must add its check to CHECKS below (the test fails for a notebook without one).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from papermill import PapermillExecutionError

from salma.config import PRESET_NAMES
from salma.notebooks import ANSI, list_notebooks, load_ci_parameters, parameters_for, run_notebook

pytestmark = pytest.mark.notebooks

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = list_notebooks(NOTEBOOK_DIR)
CELL_TIMEOUT = 900  # seconds per cell at the CI sizes


def _finite_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_00_environment(results: dict[str, Any], figures: Path) -> None:
    for name in ("torch", "transformers", "sam2", "peft", "accelerate"):
        assert results["versions"][name], f"{name} version missing"
    assert results["sam2_builds"] is True, results["sam2_error"]
    assert results["internvl_builds"] is True, results["internvl_error"]
    for part in ("sam2", "internvl"):
        for key in ("build_s", "forward_s"):
            assert _finite_positive(results[part][key]), (part, key, results[part][key])
        assert results[part]["params"] > 0
    assert results["device"] in ("cpu", "cuda", "cuda:0")
    # the kernel papermill started is this interpreter's environment (the venv), not another python
    assert Path(results["python_prefix"]).resolve() == Path(sys.prefix).resolve()
    assert (figures / "00_environment.png").stat().st_size > 0
    assert (figures / "00_environment.csv").exists() and (figures / "00_environment.md").exists()


# notebook stem -> check(results read from figures/<stem>.json, the figures folder)
CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "00_environment": check_00_environment,
}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(figures, executed) shared by the notebooks of one session: later notebooks may read what
    earlier ones wrote, and they run in sorted order like the main job."""
    base = tmp_path_factory.mktemp("notebooks")
    return base / "figures", base / "executed"


def _env(monkeypatch, figures: Path) -> None:
    monkeypatch.setenv("SALMA_FIGURES_DIR", str(figures))
    monkeypatch.setenv("MPLBACKEND", "agg")


def test_notebooks_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_ci_sizes(path, run_dirs, monkeypatch):
    figures, executed = run_dirs
    _env(monkeypatch, figures)
    params = parameters_for(path, load_ci_parameters(NOTEBOOK_DIR))
    try:
        run_notebook(path, executed, params, timeout=CELL_TIMEOUT, log_output=False)
    except PapermillExecutionError as exc:  # the notebook's own error, not papermill's internals
        pytest.fail(f"{path.name} failed with {params}:\n{ANSI.sub('', str(exc))}", pytrace=False)
    assert path.stem in CHECKS, f"add a check for {path.name} to CHECKS in {Path(__file__).name}"
    results_file = figures / f"{path.stem}.json"
    assert results_file.exists(), f"{path.name} did not write {results_file.name}"
    CHECKS[path.stem](json.loads(results_file.read_text()), figures)


def test_bad_parameter_names_the_parameter_and_accepted_values(tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path / "figures")
    with pytest.raises(PapermillExecutionError) as info:
        run_notebook(NOTEBOOK_DIR / "00_environment.ipynb", tmp_path, {"PRESET": "nope"},
                     timeout=CELL_TIMEOUT, log_output=False)
    message = str(info.value)
    assert "PRESET" in message and "'nope'" in message
    assert ", ".join(PRESET_NAMES) in message
