"""Training loop: schedules, resume after a kill, run cache, stage 0, Accelerate with two CPU processes."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from salma.checkpoint import load_state_dict
from salma.config import LossConfig, get_preset
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.train import identity as identity_module
from salma.train.batches import TrainScenes
from salma.train.identity import RunSpec, git_commit, git_dirty
from salma.train.loop import build_model, lr_at, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synref_tiny")
    generate_synref(root, seed=3, scene_size=32, n_images={"train": 24, "val": 6, "testA": 2, "testB": 2},
                    progress=False)
    return root


def tiny_cfg(steps: int = 6, **mba):
    cfg = get_preset("tiny")
    return dataclasses.replace(
        cfg, mba=dataclasses.replace(cfg.mba, **mba),
        train=dataclasses.replace(cfg.train, steps=steps, batch_size=4, grad_accum=2, warmup_ratio=0.2),
    )


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])), "cosine decay is monotone"
    assert lrs[-1] < 0.01


def test_resume_after_kill_matches_uninterrupted(tiny_data, kill_and_resume):
    cfg = tiny_cfg(steps=6)
    spec = RunSpec(stage="stage1", data_root=str(tiny_data), checkpoint_every=2, eval_limit=8, name="full")
    full, resumed = kill_and_resume(cfg, spec, stop_after=3)
    assert resumed.metrics["ciou"] == pytest.approx(full.metrics["ciou"], abs=1e-6)
    assert [r["step"] for r in resumed.log] == list(range(1, 7)), "the resumed log has each step once"
    assert [r["total"] for r in resumed.log] == pytest.approx([r["total"] for r in full.log], abs=1e-5)


def test_run_cache_reuses_finished_run(tiny_data, tmp_path):
    cfg = tiny_cfg(steps=2)
    spec = RunSpec(stage="stage1", data_root=str(tiny_data), eval_limit=4, name="cached")
    first = train(cfg, spec, runs_root=tmp_path, progress=False)
    again = train(cfg, spec, runs_root=tmp_path, progress=False)
    assert not first.cached and again.cached and again.run_dir == first.run_dir
    other = train(dataclasses.replace(cfg, loss=LossConfig(tmc_weight=0.0)), spec, runs_root=tmp_path,
                  progress=False)
    assert other.run_dir != first.run_dir, "a different config is a different run"


def test_run_cache_tells_regenerated_data_at_the_same_path_apart(tmp_path):
    """Runs are cached by a hash that covers the data's annotation files, not only the data root's path: a
    SynRef regenerated in place with another spec (as synref-1.1 was) must not reuse the old data's runs."""
    from salma.data.synref_words import SYNREF_1_0_SPEC
    from salma.train.identity import run_hash

    root = tmp_path / "synref"
    sizes = {"train": 12, "val": 4, "testA": 0, "testB": 0}
    generate_synref(root, seed=1, scene_size=32, n_images=sizes, progress=False, spec=SYNREF_1_0_SPEC)
    cfg, spec = tiny_cfg(steps=2), RunSpec(stage="stage1", data_root=str(root), name="data")
    old = run_hash(cfg, spec)
    assert run_hash(cfg, spec) == old, "the same data gives the same hash"
    generate_synref(root, seed=1, scene_size=32, n_images=sizes, progress=False)  # the default (1.1) spec
    assert run_hash(cfg, spec) != old


def test_stage0_trains_sam_only_and_reports_prior(tiny_data, tmp_path):
    cfg = dataclasses.replace(tiny_cfg(steps=2, enabled=False),
                              sam2=dataclasses.replace(get_preset("tiny").sam2, freeze_encoder=False))
    result = train(cfg, RunSpec(stage="stage0", data_root=str(tiny_data), name="s0"), runs_root=tmp_path,
                   progress=False)
    assert {"point_ciou", "prior_union_iou"} <= set(result.metrics)
    assert 0.0 <= result.metrics["prior_union_iou"] <= 1.0
    assert {"point", "prior"} <= set(result.log[0])


def stage0_cfg(steps: int = 4):
    return dataclasses.replace(tiny_cfg(steps=steps, enabled=False),
                               sam2=dataclasses.replace(get_preset("tiny").sam2, freeze_encoder=False))


def test_object_head_reads_only_the_object_under_its_mask():
    """The stage-0 object head pools the embedding over the object's mask: what lies outside the mask
    cannot change its answer, what lies inside does; its colour target is the image's mean under the mask."""
    from salma.train.heads import ObjectHead, mean_colour

    torch.manual_seed(0)
    head = ObjectHead(8, [1, 2, 3])
    embed = torch.randn(1, 8, 4, 4)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :8] = 1.0  # the top-left 2x2 embedding cells
    outside, inside = embed.clone(), embed.clone()
    outside[..., 2:, 2:] += 5.0
    inside[..., :2, :2] += 5.0
    assert torch.allclose(head(outside, mask), head(embed, mask))
    assert not torch.allclose(head(inside, mask), head(embed, mask))
    assert head.classes(np.array([3, 1]), torch.device("cpu")).tolist() == [2, 0]
    image = torch.zeros(1, 3, 16, 16)
    image[:, 0, :8, :8] = 2.0  # red inside the mask
    image[:, 2, 8:, 8:] = 7.0  # blue outside it
    assert mean_colour(image, mask).tolist() == [[2.0, 0.0, 0.0]]


def test_stage0_object_objectives_train_the_encoder_and_resume(tiny_data, kill_and_resume):
    """With ``category_loss_weight`` and ``colour_loss_weight`` the encoder learns the category and colour of
    the prompted objects: the run logs both losses, reports the head's val accuracy, and a killed run resumes
    to the same weights (the head's state travels in the checkpoints)."""
    spec = RunSpec(stage="stage0", data_root=str(tiny_data), name="s0cat", checkpoint_every=2,
                   category_loss_weight=0.5, colour_loss_weight=0.5)
    full, resumed = kill_and_resume(stage0_cfg(steps=4), spec, stop_after=2)
    assert {"category", "colour"} <= set(full.log[0]) and 0.0 <= full.metrics["category_accuracy"] <= 1.0
    assert [r["total"] for r in resumed.log] == pytest.approx([r["total"] for r in full.log], abs=1e-5)
    assert resumed.metrics["category_accuracy"] == pytest.approx(full.metrics["category_accuracy"])


def test_mask_boxes_are_tight_fractions_of_the_image():
    from salma.train.heads import mask_boxes

    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, 2:4, 3:7] = 1  # rows 2-3, columns 3-6
    masks[1, 0, 7, 0] = 1  # one pixel in the bottom-left corner
    masks[2] = 1  # the whole image
    assert mask_boxes(masks).tolist() == [[3 / 8, 2 / 8, 7 / 8, 4 / 8], [0.0, 7 / 8, 1 / 8, 1.0], [0.0, 0.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="non-empty mask"):
        mask_boxes(torch.zeros(1, 1, 8, 8))


def test_stage1_box_objective_reaches_the_mllm_and_resumes(tiny_data, kill_and_resume):
    """The box auxiliary reads the [SEG] embedding: its loss alone moves the MLLM's weights, the run logs it,
    and a killed run resumes to the same weights (the head's state travels in the checkpoints)."""
    from salma.train.batches import draw_referring
    from salma.train.heads import BoxHead, mask_boxes

    cfg = tiny_cfg(steps=4, enabled=False)
    model = build_model(cfg, RunSpec(stage="stage1"))
    model.train()
    images, exprs, masks, _, _ = draw_referring(TrainScenes(ReferDataset(
        tiny_data, "synref", split="train")), np.random.default_rng(0), 4)
    batch = model.make_batch(images, exprs, masks)
    head = BoxHead(cfg.sam2.prompt_dim)
    torch.nn.functional.l1_loss(head(model(batch).segment.language), mask_boxes(batch.gt_masks)).backward()
    llm = [p for n, p in model.named_parameters() if n.startswith("mllm.model.language_model.")]
    assert llm and any(p.grad is not None and p.grad.abs().sum() > 0 for p in llm)

    spec = RunSpec(stage="stage1", data_root=str(tiny_data), checkpoint_every=2, eval_limit=4, name="box",
                   box_loss_weight=1.0)
    full, resumed = kill_and_resume(cfg, spec, stop_after=2)
    assert "box" in full.log[0]
    assert [r["total"] for r in resumed.log] == pytest.approx([r["total"] for r in full.log], abs=1e-5)
    with pytest.raises(ValueError, match="box_loss_weight is a stage-1 objective"):
        RunSpec(stage="finetune", box_loss_weight=1.0)


def test_image_token_targets_follow_the_pixel_shuffle_raster():
    """Each MLLM image token's targets describe its own cell of the image, cells in row-major order (the
    order InternVL's pixel shuffle leaves the 2x2 patch groups in)."""
    from salma.train.heads import ImageTokenHead

    head = ImageTokenHead(8, [1, 2])
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4] = (255, 0, 0)
    red = np.zeros((8, 8), bool)
    red[:4, :4] = True  # fills the top-left cell (token 0)
    corner = np.zeros((8, 8), bool)
    corner[6:, 6:] = True  # a quarter of the bottom-right cell (token 3)
    shares, colour, cover = head.targets(image, [red, corner], [2, 1], grid=2)
    assert shares.tolist() == [[0, 0, 1], [1, 0, 0], [1, 0, 0], [0.75, 0.25, 0]]
    assert colour[0].tolist() == [1, 0, 0] and cover.tolist() == [1, 0, 0, 0.25]


def test_stage1_image_token_objective_trains_the_vision_side_and_resumes(tiny_data, kill_and_resume):
    spec = RunSpec(stage="stage1", data_root=str(tiny_data), checkpoint_every=2, eval_limit=4, name="tok",
                   token_loss_weight=1.0, box_loss_weight=1.0)
    full, resumed = kill_and_resume(tiny_cfg(steps=4, enabled=False), spec, stop_after=2)
    assert {"tokens", "box"} <= set(full.log[0])
    assert [r["total"] for r in resumed.log] == pytest.approx([r["total"] for r in full.log], abs=1e-5)
    # the objective alone reaches InternViT and the projector, and nothing of SAM-2
    from salma.train.batches import TrainScenes, draw_referring
    from salma.train.heads import ImageTokenHead, image_token_loss

    model = build_model(tiny_cfg(enabled=False), RunSpec(stage="stage1"))
    scenes = TrainScenes(ReferDataset(tiny_data, "synref", split="train"))
    images, exprs, masks, _, indices = draw_referring(scenes, np.random.default_rng(1), 3)
    head = ImageTokenHead(model.mllm.config.text_config.hidden_size, scenes.dataset.categories())
    image_token_loss(model, head, model.make_batch(images, exprs, masks), scenes, indices, "cpu").backward()
    moved = {n.split(".")[2] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == {"vision_tower", "multi_modal_projector"}, moved
    with pytest.raises(ValueError, match="token_loss_weight is a stage-1 objective"):
        RunSpec(stage="stage0", token_loss_weight=1.0)


def test_object_weights_are_stage0_fields_left_out_of_older_hashes(tiny_data):
    from salma.train.identity import run_hash

    cfg = stage0_cfg()
    plain = RunSpec(stage="stage0", data_root=str(tiny_data), name="s0")
    assert run_hash(cfg, plain) != run_hash(cfg, dataclasses.replace(plain, category_loss_weight=0.5))
    # Every field is in the hash, at its default too (no field is left out to keep older keys), and so is the
    # hash version: raising it retrains every cached run once.
    for name, value in (("clip_frames", 3), ("box_loss_weight", 0.0), ("eval_limit", 7)):
        changed = dataclasses.replace(plain, **{name: value})
        assert (run_hash(cfg, changed) == run_hash(cfg, plain)) == (getattr(plain, name) == value), name
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(identity_module, "RUN_HASH_VERSION", identity_module.RUN_HASH_VERSION + 1)
        bumped = run_hash(cfg, plain)
    assert bumped != run_hash(cfg, plain)
    with pytest.raises(ValueError, match="category_loss_weight is a stage-0 objective"):
        RunSpec(stage="stage1", category_loss_weight=0.5)
    with pytest.raises(ValueError, match="colour_loss_weight is a stage-0 objective"):
        RunSpec(stage="finetune", colour_loss_weight=0.5)


def test_finetune_from_foundation_with_frozen_encoder(tiny_data, tmp_path):
    base = train(tiny_cfg(steps=2, enabled=False), RunSpec(stage="stage1", data_root=str(tiny_data),
                                                           eval_limit=4, name="base"),
                 runs_root=tmp_path, progress=False)
    cfg = dataclasses.replace(tiny_cfg(steps=2), sam2=dataclasses.replace(get_preset("tiny").sam2,
                                                                          freeze_encoder=True))
    tuned = train(cfg, RunSpec(stage="finetune", data_root=str(tiny_data), init_from=str(base.final),
                               eval_limit=4, name="ft"), runs_root=tmp_path, progress=False)
    a = load_state_dict(base.final / "model.safetensors")
    b = load_state_dict(tuned.final / "model.safetensors")
    enc = [k for k in a if k.startswith("sam.model.image_encoder.")]
    assert enc and all(torch.equal(a[k], b[k]) for k in enc), "the frozen encoder must not move"
    dec = [k for k in a if k.startswith("sam.model.sam_mask_decoder.transformer")]
    assert any(not torch.equal(a[k], b[k]) for k in dec), "the decoder must train"
    assert any(k.startswith("mba.") for k in b), "SALMA adds MBA weights on top of a baseline foundation"


def test_missing_foundation_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m salma pretrain --preset tiny"):
        build_model(tiny_cfg(), RunSpec(init_from=str(tmp_path / "nope")))


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage='warmup'.*stage0, stage1, finetune"):
        RunSpec(stage="warmup")


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tiny_data, tmp_path):
    """The same train() under `accelerate launch` with two CPU processes (gloo), no code change.

    accelerate's `--cpu` launcher with several processes needs MPI; its torchrun launcher (`--multi_gpu`)
    starts the processes, and Accelerator(cpu=True) then runs them as MULTI_CPU over gloo."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, json, os, sys
        from salma.config import get_preset
        from salma.train.identity import RunSpec
        from salma.train.loop import train
        cfg = get_preset("tiny")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2, batch_size=4))
        r = train(cfg, RunSpec(stage="stage1", data_root={str(tiny_data)!r}, eval_limit=4, name="ddp"),
                  runs_root={str(tmp_path / 'runs')!r}, progress=False)
        rank = os.environ["RANK"]
        with open({str(tmp_path)!r} + f"/rank{{rank}}.json", "w") as f:
            json.dump({{"final": str(r.final), "steps": len(r.log), "world": os.environ["WORLD_SIZE"]}}, f)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
                          check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == "2" for r in results), "two processes must have taken part"
    assert results[0]["final"] == results[1]["final"]
    assert any((tmp_path / "runs").glob("ddp-*/final/model.safetensors")) and results[0]["steps"] == 2


def test_loader_workers_give_the_same_training(tiny_data, tmp_path, monkeypatch):
    """Batches prefetched by DataLoader workers (the GPU path) train exactly as batches made in-process."""
    cfg = tiny_cfg(steps=3)
    spec = RunSpec(stage="stage1", data_root=str(tiny_data), checkpoint_every=10, eval_limit=4, name="w")
    monkeypatch.setenv("SALMA_LOADER_WORKERS", "0")
    here = train(cfg, spec, runs_root=tmp_path / "a", progress=False)
    monkeypatch.setenv("SALMA_LOADER_WORKERS", "2")
    workers = train(cfg, spec, runs_root=tmp_path / "b", progress=False)
    assert [r["total"] for r in workers.log] == pytest.approx([r["total"] for r in here.log], abs=1e-6)
    a = load_state_dict(here.final / "model.safetensors")
    b = load_state_dict(workers.final / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_mba_lr_scale_groups_and_config_hash_compatibility():
    """mba_lr_scale puts MBA's parameters in their own AdamW groups at a multiple of the learning rate; at its
    default (1) there are the two groups a run without the option has; the config dict holds the scale."""
    import dataclasses

    from salma.config import SalmaConfig, get_preset
    from salma.model import SalmaModel
    from salma.train.loop import param_groups
    from salma.train.tokenizer import synthetic_tokenizer

    cfg = get_preset("tiny")
    model = SalmaModel(cfg, tokenizer=synthetic_tokenizer())
    params = [p for p in model.parameters() if p.requires_grad]
    plain = param_groups(model, params, cfg.train)
    assert [g["lr_scale"] for g in plain] == [1.0, 1.0] and sum(len(g["params"]) for g in plain) == len(params)
    assert cfg.to_dict()["train"]["mba_lr_scale"] == 1.0
    scaled_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, mba_lr_scale=10.0))
    assert scaled_cfg.to_dict()["train"]["mba_lr_scale"] == 10.0 and scaled_cfg.hash() != cfg.hash()
    assert SalmaConfig.from_dict(scaled_cfg.to_dict()) == scaled_cfg and SalmaConfig.from_dict(cfg.to_dict()) == cfg
    scaled = param_groups(model, params, scaled_cfg.train)
    mba = {id(p) for p in model.mba.parameters()}
    assert sum(len(g["params"]) for g in scaled) == len(params)
    for g in scaled:
        in_mba = {id(p) in mba for p in g["params"]}
        assert len(in_mba) == 1 and g["lr_scale"] == (10.0 if in_mba.pop() else 1.0)
    assert any(model.mba.gamma is p for g in scaled if g["lr_scale"] == 10.0 and g["weight_decay"] == 0.0
               for p in g["params"])


def test_mllm_lr_scale_groups_the_mllm_and_its_projection():
    """mllm_lr_scale gives InternVL and text_hidden_fcs their own groups at a multiple of the rate; SAM-2 keeps
    the base rate."""
    from salma.model import SalmaModel
    from salma.train.loop import param_groups
    from salma.train.tokenizer import synthetic_tokenizer

    cfg = get_preset("tiny")
    assert cfg.to_dict()["train"]["mllm_lr_scale"] == 1.0
    scaled = dataclasses.replace(cfg.train, mllm_lr_scale=3.0)
    model = SalmaModel(cfg, tokenizer=synthetic_tokenizer())
    params = [p for p in model.parameters() if p.requires_grad]
    groups = param_groups(model, params, scaled)
    assert sum(len(g["params"]) for g in groups) == len(params)
    name = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        heads = {name[id(p)].split(".")[0] for p in g["params"]}
        assert heads <= ({"mllm", "text_hidden_fcs"} if g["lr_scale"] == 3.0 else {"sam", "mba"}), (g["lr_scale"], heads)
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 3.0, 3.0]


def test_manifest_git_fields_name_the_checkout_or_say_null(monkeypatch):
    """git_commit is the checkout's HEAD and git_dirty a bool in a git checkout; with no git at all (an
    installed package on a machine without git) both are None rather than an exception or a guess."""
    if shutil.which("git") and git_commit() is not None:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(identity_module.__file__).parent).stdout.strip()
        assert git_commit() == head
        assert isinstance(git_dirty(), bool)
    monkeypatch.setenv("PATH", "")  # git cannot be found
    assert git_commit() is None
    assert git_dirty() is None


def test_warmups_of_gamma_the_auxiliary_losses_and_the_lr_are_pinned(tiny_data, tmp_path):
    """Issue 24: the paper's 5% warm-up of gamma and of the auxiliary losses, and the trainer's ramps, as
    logged: linear from 0 over 5% of the steps, then 1; the lr warms up over warmup_ratio then decays."""
    from salma.config import LossConfig, MBAConfig

    assert MBAConfig().gamma_warmup_ratio == 0.05 and LossConfig().aux_warmup_ratio == 0.05
    cfg = get_preset("tiny")
    assert cfg.mba.gamma_warmup_ratio == 0.05 and cfg.loss.aux_warmup_ratio == 0.05
    steps = 40  # 5% = 2 steps
    cfg = tiny_cfg(steps=steps)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=2, grad_accum=1, warmup_ratio=0.1))
    spec = RunSpec(stage="stage1", data_root=str(tiny_data), checkpoint_every=100, eval_limit=2, name="ramps")
    log = train(cfg, spec, runs_root=tmp_path, progress=False).log
    assert [r["gamma_scale"] for r in log[:4]] == [0.0, 0.5, 1.0, 1.0]
    assert [r["aux_scale"] for r in log[:4]] == [0.0, 0.5, 1.0, 1.0]
    assert all(r["gamma_scale"] == 1.0 == r["aux_scale"] for r in log[2:])
    lr = [r["lr"] for r in log]
    base = cfg.train.lr
    assert lr[:4] == pytest.approx([base / 4, base / 2, 3 * base / 4, base])  # 10% of 40 = 4 warm-up steps
    assert all(a >= b for a, b in itertools.pairwise(lr[3:])) and lr[-1] < 0.01 * base


def test_mba_instrumentation_is_logged_every_step(tiny_data, tmp_path):
    """Issue 24: gamma, dL/dgamma and its sign agreement, the MBA sub-modules' gradient norms and the relative
    write r (overall, inside the targets) are in every row; r = 0 while gamma_eff = 0 (step 1: warm-up 0)."""
    from salma.train.mba_stats import MBA_PARTS

    cfg = tiny_cfg(steps=20)
    spec = RunSpec(stage="stage1", data_root=str(tiny_data), checkpoint_every=100, eval_limit=2, name="instr")
    log = train(cfg, spec, runs_root=tmp_path, progress=False).log
    keys = {"gamma", "dgamma", "dgamma_sign_agreement", "mba_write", "mba_write_target",
            *(f"grad_{p}" for p in MBA_PARTS)}
    assert all(keys <= set(r) for r in log)
    first = log[0]
    assert first["gamma_scale"] == 0.0 and first["mba_write"] == 0.0 and first["mba_write_target"] == 0.0
    assert first["dgamma"] == 0.0 and first["grad_q_proj"] == 0.0, "at gamma_eff = 0 the branch gets no gradient"
    later = log[-1]
    assert later["mba_write"] > 0 and later["grad_q_proj"] > 0 and later["dgamma"] != 0
    assert all(0.0 <= r["dgamma_sign_agreement"] <= 1.0 for r in log[1:])


def test_sign_agreement_and_write_ratio():
    from salma.mba import write_ratio
    from salma.train.mba_stats import sign_agreement

    assert sign_agreement([1e-3, 2.0, 5.0]) == 1.0 and sign_agreement([1.0, -1.0, 2.0, -3.0]) == 0.0
    assert sign_agreement([-1.0, -2.0, 3.0, 0.0]) == 0.25
    before = torch.ones(2, 4, 2, 2)
    after = before.clone()
    after[0, :, 0, 0] += 2.0  # sample 0: one of its 4 positions changed by 2 in every channel
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, :4, :4] = 1.0  # the top-left feature cell of each sample
    overall, target = write_ratio(before, after, masks)
    assert float(overall) == pytest.approx((2.0 * 2 / 4 + 0.0) / 2)  # ||diff|| = 2*2, ||F|| = 4 per sample
    assert float(target) == pytest.approx((2.0 + 0.0) / 2)  # inside the cell: ||diff|| 4 / ||F|| 2
    assert float(write_ratio(before, before, masks)[0]) == 0.0


def test_lora_regime_fine_tunes_a_foundation_trained_without_lora(tiny_data, tmp_path):
    """Issue 24: the paper's MLLM regime (LoRA on the LLM, InternViT frozen) from a foundation trained without
    LoRA: the adapters start at zero, so the loaded model predicts as the foundation; only LoRA, the
    embeddings and the non-MLLM parts train; the run resumes and saves a model that loads back."""
    from salma.model import SalmaModel
    from salma.train.tokenizer import synthetic_tokenizer

    torch.manual_seed(0)
    found = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(tmp_path / "found")
    cfg = tiny_cfg(steps=2)
    cfg = dataclasses.replace(cfg, mllm=dataclasses.replace(cfg.mllm, lora=True, freeze_vision=True))
    spec = RunSpec(stage="finetune", data_root=str(tiny_data), init_from=str(found), checkpoint_every=1,
                   eval_limit=2, name="lora")
    model = build_model(cfg, spec)
    assert model.cfg.mllm.lora
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and not any(n.startswith("mllm.model.vision_tower") for n in trainable)
    assert not any(n.endswith("q_proj.base_layer.weight") for n in trainable), "LLM base weights frozen"
    result = train(cfg, spec, runs_root=tmp_path / "runs", progress=False)
    assert SalmaModel.from_pretrained(result.final).cfg.mllm.lora


def test_study_configurations_are_checked_and_change_only_what_they_say(cli_error, tmp_path):
    """Issue 24: an unknown configuration name is refused naming the accepted ones; each configuration is the
    salma variant with its stated changes (faithful is the salma variant itself)."""
    from salma.train.experiments import variant_config
    from salma.train.study import STUDY, study_config

    line = cli_error(["train", "--preset", "tiny", "--study", "nope", "--runs", tmp_path])
    assert "'nope' is not known" in line and "faithful, faithful_4x" in line
    assert "changes the salma variant" in cli_error(["train", "--preset", "tiny", "--variant", "baseline",
                                                     "--study", "faithful", "--runs", tmp_path])
    base = variant_config("tiny", "salma")
    assert study_config(base, "faithful") == base
    assert study_config(base, "faithful_8x").train.steps == 8 * base.train.steps
    lr = study_config(base, "gamma_lr_100x")
    assert lr.train.gamma_lr_scale == 100.0 and dataclasses.replace(lr, train=base.train) == base
    z = study_config(base, "gamma0_1_zero_out")
    assert (z.mba.gamma_init, z.mba.zero_init_output) == (1.0, True)
    assert all(c.label for c in STUDY.values())
