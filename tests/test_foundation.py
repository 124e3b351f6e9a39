"""The shipped SynRef foundation: intact (sha256), grounded as its manifest says, refused when wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salma.io import sha256_file
from salma.paths import foundation_dir
from salma.train.foundation import FOUNDATION_CHECK_SAMPLES, ensure_foundation, foundation_check
from salma.train.recipes import PRETRAIN_RECIPES

SMALL = foundation_dir("small")
shipped = pytest.mark.skipif(not (SMALL / "manifest.json").is_file(), reason="no small foundation shipped yet")


@shipped
def test_small_foundation_sha_and_size_match_manifest():
    manifest = json.loads((SMALL / "manifest.json").read_text())
    weights = SMALL / "model.safetensors"
    assert sha256_file(weights) == manifest["sha256"]["model.safetensors"]
    assert weights.stat().st_size < 10 * 1024 * 1024, "the shipped foundation must stay under 10 MB"
    assert (SMALL / "training_curve.png").stat().st_size > 0, "pretrain writes its training curve beside it"


@shipped
@pytest.mark.slow
def test_small_foundation_remeasures_its_recorded_ciou():
    manifest = json.loads((SMALL / "manifest.json").read_text())
    recorded = manifest["val_check"]["ciou"]
    measured = foundation_check(SMALL, "small", FOUNDATION_CHECK_SAMPLES)["ciou"]
    assert measured == pytest.approx(recorded, abs=0.02)


def test_missing_small_foundation_names_the_command(monkeypatch, tmp_path):
    from salma import paths

    monkeypatch.setattr(paths, "foundation_root", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m salma pretrain --preset small"):
        ensure_foundation("small")


def test_finetuning_keeps_the_foundations_segmentation_loss_weights():
    """Every fine-tuning run (image and video, every variant) trains the segmentation head with the weights the
    foundation's stage 1 used; switching to Sa2VA's 2.0 BCE + 0.5 Dice measurably undid the foundation (val
    cIoU 32.0 -> 28.9 after 250 steps). The paper preset, with real pretrained weights, keeps Sa2VA's."""
    from salma.config import SYNREF_FINETUNE_LOSS
    from salma.train.experiments import variant_config, video_config
    from salma.train.recipes import VARIANTS

    for preset in ("tiny", "small"):
        for variant in VARIANTS:
            for cfg in (variant_config(preset, variant), video_config(preset, variant)):
                assert (cfg.loss.bce_weight, cfg.loss.dice_weight) == (
                    SYNREF_FINETUNE_LOSS.bce_weight, SYNREF_FINETUNE_LOSS.dice_weight), (preset, variant)
    salma = variant_config("small", "salma")
    assert salma.loss.tmc_weight > 0 and salma.loss.boundary_weight > 0  # the variant's own changes survive
    paper = variant_config("paper", "salma")
    assert (paper.loss.bce_weight, paper.loss.dice_weight) == (2.0, 0.5)


@pytest.fixture
def stubbed_pretrain(monkeypatch, tmp_path):
    """``pretrain`` with its data, training and writing stubbed out. ``trained`` lists each stage's
    (cfg, spec) as ``train`` is called, i.e. while pretrain runs (the git_dirty test depends on that);
    ``written`` holds write_foundation's arguments by name (bound to its real signature, so a call that no
    longer fits it fails here). A preset's data root is ``data-preset``, one with N training images
    ``data-N``."""
    import inspect
    from types import SimpleNamespace

    from salma.train import foundation as foundation_module
    from salma.train.identity import RunResult

    stub = SimpleNamespace(trained=[], written={}, foundation_module=foundation_module)
    write_signature = inspect.signature(foundation_module.write_foundation)

    def fake_root(preset, data_root=None, train_images=None):
        return Path(data_root) if data_root else tmp_path / f"data-{train_images or 'preset'}"

    def fake_train(cfg, spec, runs_root, progress):
        stub.trained.append((cfg, spec))
        return RunResult(run_dir=tmp_path / spec.stage, final=tmp_path / spec.stage / "final", metrics={})

    def fake_write(*args, **kwargs):
        stub.written.update(write_signature.bind(*args, **kwargs).arguments)

    monkeypatch.setattr(foundation_module, "synref_root", fake_root)
    monkeypatch.setattr(foundation_module, "train", fake_train)
    monkeypatch.setattr(foundation_module, "write_foundation", fake_write)
    stub.run = lambda preset, **kw: foundation_module.pretrain(preset, runs_root=tmp_path, out=str(tmp_path / "foundation"),
                                                         progress=False, **kw)
    stub.specs = lambda: {spec.stage: (cfg, spec) for cfg, spec in stub.trained}
    return stub


def test_pretrain_records_the_checkout_as_it_was_when_training_started(stubbed_pretrain, monkeypatch):
    """The manifest's git_commit/git_dirty describe the code that trained. Read after training, git_dirty was
    always true when the shipped foundation is rebuilt in place (its own tracked files had just been
    rewritten), so pretrain reads them first; here the tree turns "dirty" as soon as anything trains."""
    foundation_module = stubbed_pretrain.foundation_module
    monkeypatch.setattr(foundation_module, "git_commit", lambda: "0123abc")
    monkeypatch.setattr(foundation_module, "git_dirty", lambda: bool(stubbed_pretrain.trained))
    stubbed_pretrain.run("tiny")
    assert [spec.stage for _, spec in stubbed_pretrain.trained] == ["stage0", "stage1"]
    assert stubbed_pretrain.written["provenance"] == {"git_commit": "0123abc", "git_dirty": False}


def test_pretrain_passes_the_recipes_auxiliary_weights_to_their_stages(stubbed_pretrain):
    """The small recipe's object head (stage 0) and MLLM read-outs (stage 1) reach the runs that train them."""
    stubbed_pretrain.run("small")
    recipe = stubbed_pretrain.foundation_module.PRETRAIN_RECIPES["small"]["cpu"]
    specs = stubbed_pretrain.specs()
    (cfg0, s0), (cfg1, s1) = specs["stage0"], specs["stage1"]
    assert (s0.category_loss_weight, s0.colour_loss_weight) == (recipe.stage0.category_weight,
                                                               recipe.stage0.colour_weight) != (0, 0)
    assert (s1.box_loss_weight, s1.token_loss_weight) == (recipe.stage1.box_weight, recipe.stage1.token_weight) != (0, 0)
    assert (s0.box_loss_weight, s1.category_loss_weight) == (0.0, 0.0)
    assert not cfg0.sam2.freeze_encoder and cfg1.sam2.freeze_encoder
    assert (cfg0.train.steps, cfg1.train.steps, cfg1.train.lr) == (recipe.stage0.steps, recipe.stage1.steps,
                                                                   recipe.stage1.lr)
    assert (cfg1.loss.bce_weight, cfg1.loss.dice_weight) == (0.5, 2.0)  # the fine-tuning runs' weights too


def test_pretrain_reads_more_images_for_stage_1_only(stubbed_pretrain, tmp_path):
    """Stage1Recipe.train_images gives stage 1 a larger training set than stage 0 (and fine-tuning); a data
    root given on the command line is used by both stages."""
    assert PRETRAIN_RECIPES["small"]["cpu"].stage1.train_images == 20000
    stubbed_pretrain.run("small")
    specs = {stage: spec for stage, (_, spec) in stubbed_pretrain.specs().items()}
    assert specs["stage0"].data_root == str(tmp_path / "data-preset")
    assert specs["stage1"].data_root == str(tmp_path / "data-20000")
    written = stubbed_pretrain.written
    assert written["data_root"] == tmp_path / "data-preset" and written["stage1_data_root"] == tmp_path / "data-20000"

    stubbed_pretrain.trained.clear()
    stubbed_pretrain.run("small", data_root=str(tmp_path / "mine"))
    specs = {stage: spec for stage, (_, spec) in stubbed_pretrain.specs().items()}
    assert specs["stage0"].data_root == specs["stage1"].data_root == str(tmp_path / "mine")


@pytest.mark.slow
def test_foundation_manifest_tells_trained_from_reused_stages(tmp_path):
    """A foundation written from runs the cache already held says so, and still records the time its stages
    took to train, so that its wall_seconds (the command's own time) is never read as the training time."""
    import torch

    from salma.checkpoint import load_state_dict
    from salma.train.foundation import pretrain

    first = json.loads((pretrain("tiny", runs_root=tmp_path, out=str(tmp_path / "a"), progress=False)
                        / "manifest.json").read_text())
    again = json.loads((pretrain("tiny", runs_root=tmp_path, out=str(tmp_path / "b"), progress=False)
                        / "manifest.json").read_text())
    for stage in ("stage0", "stage1"):
        assert first[stage]["cached"] is False and again[stage]["cached"] is True
        assert again[stage]["step_seconds"] == first[stage]["step_seconds"] > 0
    assert first["stage0"]["metrics"]["category_accuracy"] >= 0.0, "the tiny recipe trains the object head"
    a, b = (load_state_dict(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the same run's weights"
