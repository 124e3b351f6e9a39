"""salma.report.diagnose: which object a prediction picks, word signatures, the pick tables and the command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salma.__main__ import main
from salma.config import get_preset
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.model import SalmaModel
from salma.report import diagnose
from salma.train.tokenizer import synthetic_tokenizer


def test_word_signature_groups_synref_words():
    assert diagnose.word_signature("the triangle") == "shape"
    assert diagnose.word_signature("the dark red triangle") == "colour+shade+shape"
    assert diagnose.word_signature("the big blue one") == "colour+size"
    assert diagnose.word_signature("the circle to the left of the square") == "relation+shape"
    assert diagnose.word_signature("the thing") == "none"


def _disk(cx: int, cy: int, r: int = 3, size: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_pick_of_assigns_the_best_overlapping_object():
    objects = [(1, _disk(4, 4)), (2, _disk(14, 4)), (3, _disk(4, 14))]
    assert diagnose.pick_of(_disk(4, 4), objects, 1, [2])[0] == "target"
    assert diagnose.pick_of(_disk(14, 4), objects, 1, [2])[0] == "distractor"
    assert diagnose.pick_of(_disk(4, 14), objects, 1, [2])[0] == "other object"
    pick, iou_t, best = diagnose.pick_of(np.zeros((20, 20), bool), objects, 1, [2])
    assert pick == "nothing" and iou_t == best == 0.0
    both = _disk(4, 4) | _disk(14, 4)  # equal overlap with target and distractor: not a drift
    assert diagnose.pick_of(both, objects, 1, [2])[0] == "target"
    with pytest.raises(ValueError, match="target annotation 9"):
        diagnose.pick_of(_disk(4, 4), objects, 9, [])


def test_pick_table_shares_sum_to_100_and_end_with_all():
    rows = [{"kind": k, "signature": s, "pick": p, "iou_target": i} for k, s, p, i in (
        ("attribute", "shape", "other object", 0.0), ("attribute", "shape", "target", 0.8),
        ("distractor", "colour+size", "distractor", 0.1))]
    t = diagnose.pick_table(rows, "kind")
    assert list(t["kind"]) == ["attribute", "distractor", "all"] and list(t["N"]) == [2, 1, 3]
    shares = t[[f"{p} (%)" for p in diagnose.PICKS]].sum(axis=1)
    assert np.allclose(shares, 100)
    assert t.iloc[0]["target (%)"] == 50 and t.iloc[1]["distractor (%)"] == 100
    with pytest.raises(ValueError, match="kind, signature"):
        diagnose.pick_table(rows, "colour")


def test_diagnose_command_on_a_small_synref(tmp_path, capsys):
    root = tmp_path / "synref"
    generate_synref(root, seed=5, scene_size=32, n_images={"train": 2, "val": 6, "testA": 2, "testB": 2},
                    progress=False)
    torch.manual_seed(0)
    ckpt = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(tmp_path / "model")
    assert main(["diagnose", "--checkpoint", str(ckpt), "--data", str(root), "--limit", "8"]) == 0
    out = capsys.readouterr().out
    assert "by kind" in out and "by words" in out
    picks = (ckpt / "diagnosis" / "picks.csv").read_text().splitlines()
    assert len(picks) == 1 + min(8, len(ReferDataset(root, "synref", split="val")))
    assert main(["diagnose", "--checkpoint", str(tmp_path / "nope"), "--data", str(root)]) == 2
    assert "nope" in capsys.readouterr().err


def test_linear_probe_reads_what_the_features_hold_and_not_more():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    told = ["a" if v > 0 else "b" for v in x[:, 3]]  # linearly readable from channel 3
    noise = list(rng.choice(["a", "b"], size=600))  # unrelated to x
    assert diagnose.linear_probe(x[:400], told[:400], x[400:], told[400:]) > 0.95
    assert diagnose.linear_probe(x[:400], noise[:400], x[400:], noise[400:]) < 0.65
    # a val class never seen in training is never right
    assert diagnose.linear_probe(x[:400], told[:400], x[400:], ["c"] * 200) == 0.0


def test_diagnose_probes_write_one_row_per_feature_level(tmp_path, capsys):
    root = tmp_path / "synref"
    generate_synref(root, seed=6, scene_size=32, n_images={"train": 6, "val": 3, "testA": 0, "testB": 0},
                    progress=False)
    torch.manual_seed(0)
    ckpt = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(tmp_path / "model")
    assert main(["diagnose", "--checkpoint", str(ckpt), "--data", str(root), "--limit", "4", "--probes"]) == 0
    assert "Linear probes" in capsys.readouterr().out
    import pandas as pd

    probes = pd.read_csv(ckpt / "diagnosis" / "probes.csv")
    assert list(probes["features"]) == [*diagnose.PROBE_LEVELS, "chance (majority class)"]
    assert {"category_id", "colour", "size", "shade"} <= set(probes.columns)
    assert probes[["category_id", "colour"]].to_numpy().min() >= 0 and probes[["category_id"]].to_numpy().max() <= 100


def test_diagnose_of_the_shipped_foundation_writes_outside_the_repository(monkeypatch, tmp_path):
    """Case 8 of issue 23 for diagnose: the default output of a tracked checkpoint goes under runs/."""
    from salma.paths import REPO_ROOT

    monkeypatch.setenv("SALMA_RUNS_DIR", str(tmp_path))
    before = sorted((REPO_ROOT / "foundation" / "small").rglob("*"))
    assert main(["diagnose", "--checkpoint", str(REPO_ROOT / "foundation" / "small"), "--limit", "2"]) == 0
    assert (tmp_path / "diagnosis" / "small-limit2" / "picks.csv").is_file()
    assert sorted((REPO_ROOT / "foundation" / "small").rglob("*")) == before
