"""The shipped SynRef foundation: intact (sha256), grounded as its manifest says, refused when wrong."""

from __future__ import annotations

import json

import pytest

from salma.experiments import FOUNDATION_CHECK_SAMPLES, ensure_foundation, foundation_check, foundation_dir
from salma.train import _sha256

SMALL = foundation_dir("small")
shipped = pytest.mark.skipif(not (SMALL / "manifest.json").is_file(), reason="no small foundation shipped yet")


@shipped
def test_small_foundation_sha_and_size_match_manifest():
    manifest = json.loads((SMALL / "manifest.json").read_text())
    weights = SMALL / "model.safetensors"
    assert _sha256(weights) == manifest["sha256"]["model.safetensors"]
    assert weights.stat().st_size < 10 * 1024 * 1024, "the shipped foundation must stay under 10 MB"


@shipped
@pytest.mark.slow
def test_small_foundation_remeasures_its_recorded_ciou():
    manifest = json.loads((SMALL / "manifest.json").read_text())
    recorded = manifest["val_check"]["ciou"]
    measured = foundation_check(SMALL, "small", FOUNDATION_CHECK_SAMPLES)["ciou"]
    assert measured == pytest.approx(recorded, abs=0.02)


def test_missing_small_foundation_names_the_command(monkeypatch, tmp_path):
    from salma import experiments

    monkeypatch.setattr(experiments, "FOUNDATION_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m salma pretrain --preset small"):
        ensure_foundation("small")
