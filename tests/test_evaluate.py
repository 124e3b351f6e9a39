"""`python -m salma evaluate`: metrics with floors, per-image caching of features and prior."""

from __future__ import annotations

import json

import pytest
import torch

from salma.__main__ import main
from salma.config import get_preset
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.eval.image import evaluate_model
from salma.model import SalmaModel
from salma.train.tokenizer import synthetic_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("synref_eval")
    generate_synref(root, seed=5, scene_size=32, n_images={"train": 2, "val": 8, "testA": 2, "testB": 2},
                    progress=False)
    torch.manual_seed(0)
    model = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer())
    ckpt = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(ckpt)
    return root, model, ckpt


def test_one_encoder_pass_and_one_prior_per_image(setup, monkeypatch):
    root, model, _ = setup
    ds = ReferDataset(root, "synref", split="val")
    calls = {"encode": 0, "prior": 0}
    real_encode = model.sam.encode_image
    import salma.model as model_module

    real_prior = model_module.structural_prior

    def encode(images):
        calls["encode"] += images.shape[0]
        return real_encode(images)

    def prior(*args, **kwargs):
        calls["prior"] += args[1].shape[0]
        return real_prior(*args, **kwargs)

    monkeypatch.setattr(model.sam, "encode_image", encode)
    monkeypatch.setattr(model_module, "structural_prior", prior)
    result = evaluate_model(model, ds, progress=False)
    n_images = len(ds.image_ids())
    assert len(ds) > n_images, "the fixture should have several expressions on some image"
    assert calls == {"encode": n_images, "prior": n_images}
    assert len(result.per_sample) == len(ds)
    rows = {r["subset"]: r for r in result.metrics.to_rows()}
    assert rows["all"]["N"] == len(ds) and 0.0 <= rows["all"]["cIoU"] <= 1.0


def test_cli_writes_json_and_markdown_with_trivial_floors(setup, tmp_path, capsys):
    root, _, ckpt = setup
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--split", "val", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "eval.json").read_text())
    assert set(summary["trivial"]) == {"largest_object", "whole_image"}
    assert summary["model"][0]["subset"] == "all"
    md = (out / "eval.md").read_text()
    assert "largest_object" in md and "whole_image" in md and "cIoU" in md
    assert "eval.json" in capsys.readouterr().out


def test_cli_errors_name_the_problem(setup, tmp_path, cli_error):
    root, _, ckpt = setup
    assert "split" in cli_error(["evaluate", "--checkpoint", ckpt, "--data", root, "--split", "nope"])
    assert "not a SalmaModel checkpoint" in cli_error(["evaluate", "--checkpoint", tmp_path, "--data", root])


def test_attention_rows_only_distractor_gives_the_same_rows_fig5_keeps(setup):
    """07 traces only the expressions with a look-alike: the rows must equal the full pass's distractor rows."""
    from salma.report.measures import attention_rows

    root, model, _ = setup
    ds = ReferDataset(root, "synref", split="val")
    full = attention_rows(model, ds, limit=20, progress=False)
    kept = [r for r in full if r["chance_distractor"] == r["chance_distractor"]]  # not NaN
    fast = attention_rows(model, ds, limit=20, progress=False, only_distractor=True)
    assert kept, "the fixture needs expressions with a distractor"
    assert len(fast) == len(kept) < len(full)
    for a, b in zip(fast, kept):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a if k not in ("model", "kind"))
