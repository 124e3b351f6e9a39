"""Shared test set-up. Kept minimal so that every module's test file stays independent.

matplotlib must never open a window or pick an interactive backend in tests; the package itself never
chooses a backend (docs/design.md section "Conventions"), so the tests choose it from outside, before any import.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "agg")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top-level folder (holds pyproject.toml, salma/, notebooks/)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def fixture_builders():
    """``tests/fixtures/builders.py``: writers of the hand-made RefCOCOg and MeViS fixtures in the real layouts."""
    import importlib.util

    path = REPO_ROOT / "tests" / "fixtures" / "builders.py"
    spec = importlib.util.spec_from_file_location("salma_test_fixture_builders", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def kill_and_resume(tmp_path):
    """``run(cfg, spec, stop_after) -> (full, resumed)``: one uninterrupted run, and the same run stopped after
    ``stop_after`` steps then started again as a new process would (the in-memory feature store emptied); checks
    that the stopped run left no metrics and that both end with bit-identical weights. The callers check logs
    and metrics."""
    import torch

    from salma.checkpoint import load_state_dict
    from salma.train import batches
    from salma.train.loop import train

    def run(cfg, spec, stop_after: int):
        batches._FEATURE_STORES.clear()
        full = train(cfg, spec, runs_root=tmp_path / "uninterrupted", progress=False)
        batches._FEATURE_STORES.clear()
        killed = train(cfg, spec, runs_root=tmp_path / "killed", progress=False, stop_after=stop_after)
        assert killed.metrics == {} and not (killed.run_dir / "metrics.json").exists()
        batches._FEATURE_STORES.clear()
        resumed = train(cfg, spec, runs_root=tmp_path / "killed", progress=False)
        a = load_state_dict(full.final / "model.safetensors")
        b = load_state_dict(resumed.final / "model.safetensors")
        for k in a:
            assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())
        return full, resumed

    return run


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv) -> str``: run ``python -m salma argv`` in-process, check it failed the command line's
    one way (exit status 2, exactly one line on stderr, no traceback) and return that line."""
    from salma.cli import main

    def run(argv: list[str]) -> str:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (code, err)
        assert len(err) == 1 and err[0].startswith("error: "), err
        return err[0]

    return run
