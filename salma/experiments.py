"""The kit's runs as named recipes: the SynRef data a preset uses, the foundation, the ablation variants.

Paper Table 2 rows and Table 3 variants become ``VARIANTS``; each is a change of the preset's config. Every
fine-tuning run starts from the same foundation (DESIGN.md "Foundation, then fine-tuning") with the SAM-2
image encoder frozen, as Sa2VA and SALMA train, so differences between runs come from the method.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from salma.config import LossConfig, MBAConfig, SalmaConfig, get_preset
from salma.train import RunResult, RunSpec, git_commit, git_dirty, train

REPO_ROOT = Path(__file__).resolve().parent.parent
FOUNDATION_ROOT = REPO_ROOT / "foundation"


def default_runs_root() -> Path:
    """Where runs are cached: ``$SALMA_RUNS_DIR`` if set (the tests point it at a temporary folder), else
    ``<repo>/runs`` (git-ignored), whatever the current directory (notebooks run in ``notebooks/``)."""
    import os

    return Path(os.environ.get("SALMA_RUNS_DIR") or REPO_ROOT / "runs")


def _variant(mba: dict, loss: dict) -> dict:
    return {"mba": mba, "loss": loss}


# name -> (description, changes to MBAConfig, changes to LossConfig). Paper Table 2 and Table 3.
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "baseline": ("Sa2VA baseline (no pre-pass, no MBA)", {"enabled": False}, {"tmc_weight": 0.0, "boundary_weight": 0.0}),
    "mba": ("+MBA", {}, {"tmc_weight": 0.0, "boundary_weight": 0.0}),
    "mba_tmc": ("+MBA +TMC", {}, {"boundary_weight": 0.0}),
    "salma": ("+MBA +TMC +Boundary (SALMA)", {}, {}),
    "film": ("SALMA with Residual FiLM", {"film": True}, {}),
    "bias": ("SALMA with the prior as attention bias", {"mode": "bias"}, {}),
    "released": ("the released code's MBA input ([SEG] only, no TMC)", {"text_source": "seg_only"},
                 {"tmc_weight": 0.0}),
}


def variant_config(preset: str, variant: str, seed: int = 0, steps: int | None = None) -> SalmaConfig:
    """The preset's fine-tuning config for one ablation variant and seed (encoder frozen)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not known; accepted values: {', '.join(VARIANTS)}")
    cfg = get_preset(preset)
    _, mba_changes, loss_changes = VARIANTS[variant]
    # The preset's fine-tuning recipe first, the caller's seed and steps last (they win).
    train_cfg = dataclasses.replace(cfg.train, **FINETUNE_RECIPE.get(preset, {}))
    train_cfg = dataclasses.replace(train_cfg, seed=seed, **({"steps": steps} if steps else {}))
    return dataclasses.replace(
        cfg,
        sam2=dataclasses.replace(cfg.sam2, freeze_encoder=True),
        mba=dataclasses.replace(cfg.mba, **mba_changes),
        loss=dataclasses.replace(cfg.loss, **{**FINETUNE_SEG_LOSS.get(preset, {}), **loss_changes}),
        train=train_cfg,
    )


# The segmentation-loss weights of every fine-tuning run (image and video) at the presets that start from a
# SynRef foundation: the weights the foundation's stage 1 was trained with (0.5 BCE + 2.0 Dice, ``pretrain``;
# REFERENCE 9: Sa2VA's 2.0 BCE + 0.5 Dice collapses to empty masks from scratch). Switching to Sa2VA's weights
# for fine-tuning undoes part of the foundation. Measured on this CPU (2026-11-23, small, baseline, seed 0,
# from the shipped foundation: val cIoU 32.0, SynRef-Video J&F 39.3 per_frame on the first 40 valid_u
# expressions without any video training): 250 image steps with 2.0 / 0.5 -> val cIoU 28.9 (28.15 +- 0.69 over
# 3 seeds), with 0.5 / 2.0 -> 32.0; 200 video steps with 2.0 / 0.5 -> J&F 23.1 (1200 steps: 25.4), with
# 0.5 / 2.0 -> 38.1. The paper preset (real pretrained weights) keeps Sa2VA's weights.
FOUNDATION_SEG_LOSS: dict[str, float] = {"bce_weight": 0.5, "dice_weight": 2.0}
FINETUNE_SEG_LOSS: dict[str, dict] = {"tiny": FOUNDATION_SEG_LOSS, "small": FOUNDATION_SEG_LOSS}

# Fine-tuning learning rates and lengths the CPU measurements support (see the training issue's note).
FINETUNE_RECIPE: dict[str, dict] = {
    "tiny": {"lr": 3e-4, "batch_size": 8, "steps": 20},
    "small": {"lr": 1e-4, "batch_size": 16, "steps": 250},
}
# Fine-tuning draws from the first N training images: their frozen-encoder features are computed once per
# process and shared by every run (a few minutes for 3000 images on a 2-core CPU).
FINETUNE_IMAGES: dict[str, int | None] = {"tiny": None, "small": 3000}


def synref_root(preset: str, data_root: str | Path | None = None, train_images: int | None = None) -> Path:
    """The SynRef dataset of a preset, generated (deterministically) on first use under ``data/``.
    ``train_images``: that many training images instead of the preset's (the foundation's stage 1 may read
    more than fine-tuning does). Every image is drawn from its own (seed, split, index), so the first N
    training images and the whole val split are the same whatever the count."""
    from salma.data.synref import GENERATOR_VERSION, generate_synref

    cfg = get_preset(preset).data
    n_train = train_images or cfg.train_images
    # The generator version is in the folder name: runs are cached by their data root, so a new generator
    # must never be mistaken for the old one's data.
    root = Path(data_root) if data_root else (
        REPO_ROOT / "data" / f"{GENERATOR_VERSION}-{cfg.scene_size}px-seed{cfg.seed}-{n_train}")
    if not (root / "synref" / "instances.json").is_file():
        generate_synref(root, seed=cfg.seed, scene_size=cfg.scene_size, workers=_generator_workers(),
                        n_images={"train": n_train, "val": cfg.val_images,
                                  "testA": cfg.test_images, "testB": cfg.test_images})
    return root


def _generator_workers() -> int:
    """Processes for generating SynRef: all cores but one (the output does not depend on it)."""
    import os

    return max(1, min(8, (os.cpu_count() or 1) - 1))


def foundation_dir(preset: str) -> Path:
    return FOUNDATION_ROOT / preset


def ensure_foundation(preset: str, runs_root: str | Path | None = None, progress: bool = True) -> Path:
    """The preset's foundation directory. The shipped one (``foundation/<preset>/``) is used when present;
    the tiny preset's is trained on the spot when missing (about a minute on a CPU); for the small preset a
    missing foundation is an error that names the command that makes it."""
    shipped = foundation_dir(preset)
    if (shipped / "model.safetensors").is_file():
        return shipped
    if preset == "tiny":
        runs_root = Path(runs_root or default_runs_root())
        return pretrain("tiny", runs_root=runs_root, out=str(runs_root / "foundation-tiny"), progress=progress)
    raise FileNotFoundError(
        f"the {preset} foundation is missing ({shipped}/model.safetensors). It ships with the kit; "
        f"re-create it with `python -m salma pretrain --preset {preset}` (about 2 hours on a 2-core CPU)."
    )


def finetune(preset: str, variant: str, seed: int = 0, steps: int | None = None, data_root: str | None = None,
             foundation: str | None = None, runs_root: str | Path | None = None, progress: bool = True,
             eval_limit: int = 400) -> RunResult:
    """One ablation run: ``variant`` fine-tuned from the preset's foundation (cached by config hash)."""
    cfg = variant_config(preset, variant, seed, steps)
    runs_root = Path(runs_root or default_runs_root())
    found = Path(foundation) if foundation else ensure_foundation(preset, runs_root=runs_root, progress=progress)
    spec = RunSpec(stage="finetune", data_root=str(synref_root(preset, data_root)), init_from=str(found),
                   name=f"{preset}-{variant}-s{seed}", eval_limit=eval_limit, checkpoint_every=100,
                   train_images=FINETUNE_IMAGES.get(preset))
    return train(cfg, spec, runs_root=runs_root, progress=progress)


# ---------------------------------------------------------------------------------------------- video
# SynRef-Video of each preset (frames as large as the preset's SynRef scenes). small = the generator's defaults.
VIDEO_DATA: dict[str, dict] = {
    "tiny": {"scene_size": 32, "n_frames": 8, "n_videos": {"train": 24, "valid_u": 6}},
    "small": {"scene_size": 64, "n_frames": 12, "n_videos": {"train": 400, "valid_u": 60}},
}
# Video fine-tuning recipes: TrainConfig changes ("train") and the run's clip settings. Measured on this CPU
# (2026-11-23, 2 threads, baseline, seed 0, from the shipped foundation, J&F per_frame on the first 40 valid_u
# expressions; floors on the same 40: largest object per frame 25.6, first-frame GT copied 42.3): the foundation
# with no video training scores 39.3 (appearance 45.9, motion 35.3); with the foundation's loss weights
# (FINETUNE_SEG_LOSS) 200 steps give 38.1 and 1200 steps 37.9 (appearance 41.0, motion 36.1; 18 min on a
# shared CPU): longer video training does not help at this scale, so the recipe is short. (With Sa2VA's
# 2.0 BCE + 0.5 Dice: 23.1 after 200 steps, 25.4 after 1200.)
VIDEO_RECIPE: dict[str, dict] = {
    "tiny": {"train": {"lr": 3e-4, "batch_size": 2, "grad_accum": 1, "steps": 10, "warmup_ratio": 0.1},
             "clip_frames": 4, "mllm_frames": 5, "eval_limit": 6},
    "small": {"train": {"lr": 1e-4, "batch_size": 4, "grad_accum": 1, "steps": 200, "warmup_ratio": 0.05},
              "clip_frames": 5, "mllm_frames": 5, "eval_limit": 40},
}


def synref_video_root(preset: str, data_root: str | Path | None = None) -> Path:
    """The SynRef-Video dataset of a preset, generated (deterministically) on first use under ``data/``; the
    folder is named by the generator version and every argument, as ``synref_root`` names SynRef's."""
    from salma.data.synref_video import GENERATOR_VERSION, generate_synref_video

    if preset not in VIDEO_DATA:
        raise ValueError(f"preset={preset!r} has no SynRef-Video size; accepted values: {', '.join(VIDEO_DATA)}")
    d, seed = VIDEO_DATA[preset], get_preset(preset).data.seed
    n = d["n_videos"]
    root = Path(data_root) if data_root else (
        REPO_ROOT / "data" / f"{GENERATOR_VERSION}-{d['scene_size']}px-{d['n_frames']}f-seed{seed}"
                             f"-{n['train']}-{n['valid_u']}")
    if not all((root / split / "meta_expressions.json").is_file() for split in n):
        if data_root:
            raise FileNotFoundError(f"{root} is not a SynRef-Video / MeViS-layout root (no <split>/meta_expressions.json "
                                    f"for splits {sorted(n)}); omit --data to generate the preset's SynRef-Video")
        generate_synref_video(root, seed=seed, scene_size=d["scene_size"], n_frames=d["n_frames"], n_videos=n,
                              workers=_generator_workers())
    return root


def video_config(preset: str, variant: str, seed: int = 0, steps: int | None = None) -> SalmaConfig:
    """``variant_config`` with the preset's video training recipe (encoder frozen, as Sa2VA trains)."""
    cfg = variant_config(preset, variant, seed)
    train_cfg = dataclasses.replace(cfg.train, **VIDEO_RECIPE[preset]["train"])
    return dataclasses.replace(cfg, train=dataclasses.replace(train_cfg, seed=seed, **({"steps": steps} if steps else {})))


def finetune_video(preset: str, variant: str = "salma", seed: int = 0, steps: int | None = None,
                   data_root: str | None = None, foundation: str | None = None,
                   runs_root: str | Path | None = None, progress: bool = True, eval_limit: int | None = None,
                   clip_frames: int | None = None, mllm_frames: int | None = None,
                   frame_sampling: str = "first") -> RunResult:
    """One video run: ``variant`` fine-tuned from the preset's image foundation on SynRef-Video (the
    ``video`` stage of ``salma.train``; cached by config hash), then J&F on ``valid_u`` in per_frame and
    released modes, written into the run's metrics.json (``jf`` = per_frame, ``jf_released``).

    The recipe (VIDEO_RECIPE) is sized from tiny measurements, see the comment above it. Batches: each
    micro-batch is ``batch_size`` clips of ``clip_frames`` frames (B x K decoder rows, B MLLM passes).
    """
    recipe = VIDEO_RECIPE.get(preset)
    if recipe is None:
        raise ValueError(f"preset={preset!r} has no video recipe; accepted values: {', '.join(VIDEO_RECIPE)}")
    cfg = video_config(preset, variant, seed, steps)
    runs_root = Path(runs_root or default_runs_root())
    found = Path(foundation) if foundation else ensure_foundation(preset, runs_root=runs_root, progress=progress)
    spec = RunSpec(stage="video", data_root=str(synref_video_root(preset, data_root)), init_from=str(found),
                   name=f"{preset}-video-{variant}-s{seed}", eval_limit=eval_limit or recipe["eval_limit"],
                   checkpoint_every=50, clip_frames=clip_frames or recipe["clip_frames"],
                   mllm_frames=mllm_frames or recipe["mllm_frames"], frame_sampling=frame_sampling)
    return train(cfg, spec, runs_root=runs_root, progress=progress)


# Foundation recipes per preset: stage 0 (SAM-2 class-agnostic) then stage 1 (Sa2VA baseline).
# "cpu" (the default on any device; it made the shipped foundation) keeps the SAM-2 image encoder frozen in
# stage 1, its features computed once and cached, which makes a 2-core CPU run feasible. "gpu" trains the
# whole model with batch 64 as the probe that grounded did (REFERENCE 9). Measured on one H100 (2026-11-23,
# SynRef with decoys): stage 0 reached point cIoU 0.82 and prior/union IoU 0.97 in 1500 steps (0.16 s/step),
# but stage 1 (3500 steps, 0.12 s/step) stayed at val cIoU 0.22 (0.218 / 0.215 / 0.213 at steps 1000-3000):
# it did not ground, so it is not the default.
PRETRAIN_RECIPES: dict[str, dict[str, dict]] = {
    "tiny": {
        "cpu": {"stage0_steps": 40, "stage1_steps": 40, "batch_size": 8, "lr0": 3e-4, "lr1": 3e-4,
                "batch_size1": 8, "freeze_encoder1": True, "eval_every1": 0, "category0": 0.5, "colour0": 0.5},
    },
    "small": {
        # Stage 0 trains SAM-2 with the object head (category + colour, ObjectHead) for 2400 steps; stage 1 trains
        # the Sa2VA baseline at lr 1e-4 for 9000 steps with the box and image-token read-outs of the MLLM (BoxHead,
        # ImageTokenHead). Each piece was measured against the one before (README, "The foundation"); the 0.421
        # foundation of 2026-11-23 had a 1200-step class-agnostic stage 0 and neither read-out. At lr1 3e-4 stage 1
        # sat at the largest-object floor (0.21) for 2000 steps. Stage 1 reads 20,000 training images
        # (train_images1; stage 0 and fine-tuning read the preset's 10,000): on 10,000 it fitted them (train cIoU
        # 0.70 vs val 0.59 at step 9000) and its val cIoU stayed at 0.58-0.59 from step 6000 on.
        "cpu": {"stage0_steps": 2400, "stage1_steps": 9000, "batch_size": 16, "lr0": 3e-4, "lr1": 1e-4,
                "batch_size1": 32, "freeze_encoder1": True, "eval_every1": 500, "category0": 0.5,
                "colour0": 0.5, "box1": 1.0, "tokens1": 1.0, "train_images1": 20000},
        # The gpu recipe has not been run with the object head, the read-outs or 20,000 stage-1 images (no GPU lent
        # since they exist). Its stage 1 sees 224,000 samples (the cpu recipe's: 288,000), so it reads the same
        # 20,000 images, against the overfitting measured on 10,000.
        "gpu": {"stage0_steps": 1500, "stage1_steps": 3500, "batch_size": 64, "lr0": 3e-4, "lr1": 3e-4,
                "batch_size1": 64, "freeze_encoder1": False, "eval_every1": 1000, "category0": 0.5,
                "colour0": 0.5, "box1": 1.0, "tokens1": 1.0, "train_images1": 20000},
    },
}
RECIPE_KINDS = ("auto", "cpu", "gpu")


def pretrain_recipe(preset: str, kind: str = "auto") -> tuple[str, dict]:
    """(resolved kind, recipe) of a preset; ``auto`` is ``cpu`` (see PRETRAIN_RECIPES)."""
    if preset not in PRETRAIN_RECIPES:
        raise ValueError(f"preset={preset!r} has no foundation recipe; accepted values: {', '.join(PRETRAIN_RECIPES)}")
    if kind not in RECIPE_KINDS:
        raise ValueError(f"recipe={kind!r}; accepted values: {', '.join(RECIPE_KINDS)}")
    recipes = PRETRAIN_RECIPES[preset]
    if kind == "auto":
        kind = "cpu"
    if kind not in recipes:
        raise ValueError(f"the {preset} preset has no {kind!r} recipe; accepted values: {', '.join(recipes)}")
    return kind, recipes[kind]


def pretrain(preset: str, data_root: str | None = None, runs_root: str | Path | None = None, out: str | None = None,
             stage0_steps: int | None = None, stage1_steps: int | None = None, progress: bool = True,
             recipe: str = "auto") -> Path:
    """Train the foundation (stage 0 then stage 1), then write it to ``foundation/<preset>/`` with a manifest."""
    kind, recipe_values = pretrain_recipe(preset, recipe)
    # Read before anything is trained or written: the code that trains is the checkout as it is now, and
    # rewriting the shipped foundation in place would otherwise make git_dirty always true.
    provenance = {"git_commit": git_commit(), "git_dirty": git_dirty()}
    runs_root = Path(runs_root or default_runs_root())
    root = synref_root(preset, data_root)
    base = get_preset(preset)
    start = time.time()
    s0 = stage0_steps or recipe_values["stage0_steps"]
    cfg0 = dataclasses.replace(base, mba=MBAConfig(enabled=False),
                               sam2=dataclasses.replace(base.sam2, freeze_encoder=False),
                               train=dataclasses.replace(base.train, lr=recipe_values["lr0"],
                                                         batch_size=recipe_values["batch_size"],
                                                         steps=s0, warmup_ratio=0.02))
    r0 = train(cfg0, RunSpec(stage="stage0", data_root=str(root), name=f"{preset}-stage0", checkpoint_every=100,
                             category_loss_weight=recipe_values.get("category0", 0.0),
                             colour_loss_weight=recipe_values.get("colour0", 0.0)),
               runs_root=runs_root, progress=progress)
    s1 = stage1_steps or recipe_values["stage1_steps"]
    cfg1 = dataclasses.replace(
        cfg0, loss=LossConfig(tmc_weight=0.0, boundary_weight=0.0),
        sam2=dataclasses.replace(base.sam2, freeze_encoder=recipe_values["freeze_encoder1"]),
        train=dataclasses.replace(cfg0.train, lr=recipe_values["lr1"], steps=s1, warmup_ratio=0.02,
                                  batch_size=recipe_values["batch_size1"],
                                  mllm_lr_scale=recipe_values.get("mllm_lr_scale1", 1.0)))
    # train_images1: stage 1 reads more training images than stage 0 and fine-tuning (a given data root wins).
    root1 = root if data_root or not recipe_values.get("train_images1") else synref_root(
        preset, train_images=recipe_values["train_images1"])
    r1 = train(cfg1, RunSpec(stage="stage1", data_root=str(root1), init_from=str(r0.final), name=f"{preset}-stage1",
                             eval_every=recipe_values["eval_every1"], eval_limit=400, checkpoint_every=100,
                             box_loss_weight=recipe_values.get("box1", 0.0),
                             token_loss_weight=recipe_values.get("tokens1", 0.0),
                             prior_loss_weight=0.2, seg_bce_weight=FOUNDATION_SEG_LOSS["bce_weight"],
                             seg_dice_weight=FOUNDATION_SEG_LOSS["dice_weight"]),
               runs_root=runs_root, progress=progress)
    target = Path(out) if out else foundation_dir(preset)
    if (target / "manifest.json").is_file() and (target / "model.safetensors").is_file():
        manifest = json.loads((target / "manifest.json").read_text())
        if manifest.get("stage1_run") == str(r1.run_dir):
            if not (target / "training_curve.png").is_file():
                write_training_curve(target)
            return target  # already written from this very run
    used = {**recipe_values, "stage0_steps": s0, "stage1_steps": s1}  # what ran, overrides included
    write_foundation(r1, r0, target, preset, root, time.time() - start, provenance, recipe=(kind, used),
                     stage1_data_root=root1)
    return target


FOUNDATION_CHECK_SAMPLES = 200


def val_only_root(preset: str) -> Path:
    """The preset's SynRef val split alone (a few seconds to generate): the same scenes, in the same order,
    as the val split of the full dataset, since every image is drawn from its own (seed, split, index)."""
    from salma.data.synref import GENERATOR_VERSION, generate_synref

    cfg = get_preset(preset).data
    root = REPO_ROOT / "data" / f"{GENERATOR_VERSION}-{cfg.scene_size}px-seed{cfg.seed}-val{cfg.val_images}"
    if not (root / "synref" / "instances.json").is_file():
        generate_synref(root, seed=cfg.seed, scene_size=cfg.scene_size, progress=False,
                        n_images={"train": 0, "val": cfg.val_images, "testA": 0, "testB": 0})
    return root


def foundation_check(directory: str | Path, preset: str, n: int = FOUNDATION_CHECK_SAMPLES) -> dict:
    """Re-measure a foundation on the first ``n`` val expressions (CPU, fp32): the number its manifest
    records and the test re-checks. Returns the RefMetrics rows and the overall cIoU."""
    from salma.data.refer import ReferDataset
    from salma.evaluate import evaluate_model
    from salma.model import SalmaModel

    model = SalmaModel.from_pretrained(directory)
    result = evaluate_model(model, ReferDataset(val_only_root(preset), "synref", split="val"), limit=n,
                            progress=False)
    rows = result.metrics.to_rows()
    return {"samples": n, "ciou": next(r["cIoU"] for r in rows if r["subset"] == "all"), "rows": rows}


def write_foundation(r1: RunResult, r0: RunResult, target: Path, preset: str, data_root: Path,
                     wall_seconds: float, provenance: dict, recipe: tuple[str, dict] | None = None,
                     stage1_data_root: Path | None = None) -> None:
    """Copy stage 1's final model (fp16 weights) to ``target`` with its manifest and training curve.
    ``provenance``: git_commit and git_dirty as read when the training started. ``data_root``: stage 0's
    data; ``stage1_data_root``: stage 1's where it differs."""
    from salma.model import SalmaModel
    from salma.train import _sha256, read_log

    model = SalmaModel.from_pretrained(r1.final)
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target, dtype=torch.float16)
    log0, log1 = read_log(r0.run_dir), read_log(r1.run_dir)
    manifest = {
        "what": f"SynRef foundation of the {preset} preset: stage 0 (SAM-2: class-agnostic masks, object head) + "
                "stage 1 (Sa2VA)",
        "command": f"python -m salma pretrain --preset {preset}" + (f" --recipe {recipe[0]}" if recipe else "")
        + "".join(f" --stage{i}-steps {recipe[1][f'stage{i}_steps']}" for i in (0, 1)
                  if recipe and recipe[1][f"stage{i}_steps"] != PRETRAIN_RECIPES[preset][recipe[0]][f"stage{i}_steps"]),
        "recipe": recipe[1] if recipe else None,
        "config_hash": model.cfg.hash(),
        "git_commit": provenance["git_commit"],
        "git_dirty": provenance["git_dirty"],
        "data": {"root": str(data_root), "seed": model.cfg.data.seed, "scene_size": model.cfg.data.scene_size,
                 **({"stage1_root": str(stage1_data_root)} if stage1_data_root and stage1_data_root != data_root
                    else {})},
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": round(wall_seconds, 1),
        "stage0_run": str(r0.run_dir),
        "stage1_run": str(r1.run_dir),
        # step_seconds: the optimizer steps' own time from the stage's log (evaluations left out); cached: the
        # stage was reused from the run cache, so wall_seconds above does not include its training.
        "stage0": {"steps": len(log0), "metrics": r0.metrics, "cached": r0.cached,
                   "step_seconds": round(sum(r["seconds"] for r in log0), 1)},
        "stage1": {"steps": len(log1), "metrics": r1.metrics, "cached": r1.cached,
                   "step_seconds": round(sum(r["seconds"] for r in log1), 1)},
        "sha256": {"model.safetensors": _sha256(target / "model.safetensors")},
        "licence": "CC0 (trained by the kit on generated data)",
    }
    manifest["val_check"] = foundation_check(target, preset)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, default=float))
    (target / "stage0_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log0))
    (target / "stage1_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log1))
    write_training_curve(target)


def write_training_curve(target: Path) -> Path:
    """``training_curve.png`` of a foundation folder, drawn from its stage logs."""
    import matplotlib.pyplot as plt

    from salma.viz import plot_foundation_curve

    logs = [[json.loads(line) for line in (target / f"stage{i}_log.jsonl").read_text().splitlines() if line]
            for i in (0, 1)]
    fig = plot_foundation_curve(*logs)
    path = target / "training_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
