"""The SynRef foundation (docs/foundation.md): stage 0 then stage 1 (``pretrain``), written with its manifest,
logs and training curve (``write_foundation``), re-measured on the val split (``foundation_check``), and
looked up by the runs that fine-tune from it (``ensure_foundation``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from salma import paths
from salma.config import MBAConfig, get_preset
from salma.data.refer import ReferDataset
from salma.eval.image import evaluate_model
from salma.io import atomic_write_json, atomic_write_text, sha256_file
from salma.model import SalmaModel
from salma.paths import foundation_dir
from salma.train.datasets import synref_root, val_only_root
from salma.train.identity import RunResult, RunSpec, git_commit, git_dirty
from salma.train.loop import train
from salma.train.recipes import PRETRAIN_RECIPES, FoundationRecipe, pretrain_recipe
from salma.train.store import read_log


def ensure_foundation(preset: str, runs_root: str | Path | None = None, progress: bool = True) -> Path:
    """The preset's foundation directory. The shipped one (``foundation/<preset>/``) is used when present;
    the tiny preset's is trained on the spot when missing (about a minute on a CPU); for the small preset a
    missing foundation is an error that names the command that makes it."""
    shipped = foundation_dir(preset)
    if (shipped / "model.safetensors").is_file():
        return shipped
    if preset == "tiny":
        runs_root = Path(runs_root or paths.runs_root())
        return pretrain("tiny", runs_root=runs_root, out=str(runs_root / "foundation-tiny"), progress=progress)
    raise FileNotFoundError(
        f"the {preset} foundation is missing ({shipped}/model.safetensors). It ships with the kit; "
        f"re-create it with `python -m salma pretrain --preset {preset}` (about 2 hours on a 2-core CPU)."
    )


def pretrain(preset: str, data_root: str | None = None, runs_root: str | Path | None = None, out: str | None = None,
             stage0_steps: int | None = None, stage1_steps: int | None = None, progress: bool = True,
             recipe: str = "auto") -> Path:
    """Train the foundation (stage 0 then stage 1), then write it to ``foundation/<preset>/`` with a manifest."""
    kind, chosen = pretrain_recipe(preset, recipe)
    # what runs: the recipe with the caller's step counts (recorded in the manifest)
    steps0 = chosen.stage0.steps if stage0_steps is None else stage0_steps
    steps1 = chosen.stage1.steps if stage1_steps is None else stage1_steps
    for flag, n in (("stage0_steps", steps0), ("stage1_steps", steps1)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{flag} must be a positive integer (got {n!r})")
    chosen = dataclasses.replace(chosen, stage0=dataclasses.replace(chosen.stage0, steps=steps0),
                                 stage1=dataclasses.replace(chosen.stage1, steps=steps1))
    r0_, r1_ = chosen.stage0, chosen.stage1
    # Read before anything is trained or written: the code that trains is the checkout as it is now, and
    # rewriting the shipped foundation in place would otherwise make git_dirty always true.
    provenance = {"git_commit": git_commit(), "git_dirty": git_dirty()}
    runs_root = Path(runs_root or paths.runs_root())
    root = synref_root(preset, data_root)
    base = get_preset(preset)
    start = time.time()
    cfg0 = dataclasses.replace(base, mba=MBAConfig(enabled=False),
                               sam2=dataclasses.replace(base.sam2, freeze_encoder=False),
                               train=dataclasses.replace(base.train, lr=r0_.lr, batch_size=r0_.batch_size,
                                                         steps=r0_.steps, warmup_ratio=r0_.warmup_ratio))
    r0 = train(cfg0, RunSpec(stage="stage0", data_root=str(root), name=f"{preset}-stage0",
                             checkpoint_every=r0_.checkpoint_every, category_loss_weight=r0_.category_weight,
                             colour_loss_weight=r0_.colour_weight),
               runs_root=runs_root, progress=progress)
    cfg1 = dataclasses.replace(
        cfg0, loss=dataclasses.replace(base.loss, tmc_weight=0.0, boundary_weight=0.0),
        sam2=dataclasses.replace(base.sam2, freeze_encoder=r1_.freeze_encoder),
        train=dataclasses.replace(cfg0.train, lr=r1_.lr, steps=r1_.steps, warmup_ratio=r1_.warmup_ratio,
                                  batch_size=r1_.batch_size, mllm_lr_scale=r1_.mllm_lr_scale))
    # stage 1 may read more training images than stage 0 and fine-tuning (a given data root wins)
    root1 = root if data_root or not r1_.train_images else synref_root(preset, train_images=r1_.train_images)
    r1 = train(cfg1, RunSpec(stage="stage1", data_root=str(root1), init_from=str(r0.final), name=f"{preset}-stage1",
                             eval_every=r1_.eval_every, eval_limit=r1_.eval_limit,
                             checkpoint_every=r1_.checkpoint_every, box_loss_weight=r1_.box_weight,
                             token_loss_weight=r1_.token_weight, prior_loss_weight=r1_.prior_weight),
               runs_root=runs_root, progress=progress)
    target = Path(out) if out else foundation_dir(preset)
    if (target / "manifest.json").is_file() and (target / "model.safetensors").is_file():
        manifest = json.loads((target / "manifest.json").read_text())
        if manifest.get("stage1_run") == str(r1.run_dir):
            if not (target / "training_curve.png").is_file():
                write_training_curve(target)
            return target  # already written from this very run
    write_foundation(r1, r0, target, preset, root, time.time() - start, provenance, recipe=(kind, chosen),
                     stage1_data_root=root1)
    return target


FOUNDATION_CHECK_SAMPLES = 200


def foundation_check(directory: str | Path, preset: str, n: int = FOUNDATION_CHECK_SAMPLES) -> dict:
    """Re-measure a foundation on the first ``n`` val expressions (CPU, fp32): the number its manifest
    records and the test re-checks. Returns the RefMetrics rows and the overall cIoU."""

    model = SalmaModel.from_pretrained(directory)
    result = evaluate_model(model, ReferDataset(val_only_root(preset), "synref", split="val"), limit=n,
                            progress=False)
    rows = result.metrics.to_rows()
    return {"samples": n, "ciou": next(r["cIoU"] for r in rows if r["subset"] == "all"), "rows": rows}


def pretrain_command(preset: str, kind: str, recipe: FoundationRecipe) -> str:
    """The command that trains ``recipe``: its kind, and each stage's steps where they differ from the kind's."""
    default = PRETRAIN_RECIPES[preset][kind]
    steps = [(i, ran.steps) for i, (ran, ref) in enumerate(((recipe.stage0, default.stage0),
                                                             (recipe.stage1, default.stage1))) if ran.steps != ref.steps]
    return f"python -m salma pretrain --preset {preset} --recipe {kind}" + "".join(
        f" --stage{i}-steps {n}" for i, n in steps)


def write_foundation(r1: RunResult, r0: RunResult, target: Path, preset: str, data_root: Path,
                     wall_seconds: float, provenance: dict, recipe: tuple[str, FoundationRecipe] | None = None,
                     stage1_data_root: Path | None = None) -> None:
    """Copy stage 1's final model (fp16 weights) to ``target`` with its manifest and training curve.
    ``provenance``: git_commit and git_dirty as read when the training started. ``data_root``: stage 0's
    data; ``stage1_data_root``: stage 1's where it differs."""

    model = SalmaModel.from_pretrained(r1.final)
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target, dtype=torch.float16)
    log0, log1 = read_log(r0.run_dir), read_log(r1.run_dir)
    manifest = {
        "what": f"SynRef foundation of the {preset} preset: stage 0 (SAM-2: class-agnostic masks, object head) + "
                "stage 1 (Sa2VA)",
        "command": pretrain_command(preset, *recipe) if recipe else f"python -m salma pretrain --preset {preset}",
        "recipe": dataclasses.asdict(recipe[1]) if recipe else None,
        "preset": preset,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
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
        "sha256": {"model.safetensors": sha256_file(target / "model.safetensors")},
        "licence": "CC0 (trained by the kit on generated data)",
    }
    manifest["val_check"] = foundation_check(target, preset)
    atomic_write_json(target / "manifest.json", manifest, indent=1, default=float)
    atomic_write_text(target / "stage0_log.jsonl", "".join(json.dumps(r) + "\n" for r in log0))
    atomic_write_text(target / "stage1_log.jsonl", "".join(json.dumps(r) + "\n" for r in log1))
    write_training_curve(target)


def write_training_curve(target: Path) -> Path:
    """``training_curve.png`` of a foundation folder, drawn from its stage logs."""

    logs = [[json.loads(line) for line in (target / f"stage{i}_log.jsonl").read_text().splitlines() if line]
            for i in (0, 1)]
    fig = plot_foundation_curve(*logs)
    path = target / "training_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_foundation_curve(log0: Sequence[dict], log1: Sequence[dict]) -> Any:
    """The foundation's two stages side by side: stage 0's loss per step (SAM-2 alone), stage 1's
    segmentation loss per step (a 50-step running mean beside the raw values) and its val cIoU."""

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, log, title in ((axes[0], log0, "stage 0: SAM-2 (points -> object, dummy -> union)"),
                           (axes[1], log1, "stage 1: Sa2VA baseline")):
        key = "seg" if any("seg" in r for r in log) else "total"  # stage 0 logs no segmentation loss
        steps = np.array([r["step"] for r in log if key in r])
        values = np.array([r[key] for r in log if key in r], dtype=float)
        ax.plot(steps, values, color="0.75", lw=0.6, label=f"{key} loss")
        if len(values) >= 50:
            ax.plot(steps[49:], np.convolve(values, np.ones(50) / 50, mode="valid"), color="tab:blue",
                    label=f"{key} loss, 50-step mean")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title, fontsize=9)
        evals = [(r["step"], r["val_ciou"]) for r in log if r.get("val_ciou") is not None]
        if evals:
            twin = ax.twinx()
            twin.plot(*zip(*evals), "-o", color="tab:red", markersize=3, label="val cIoU")
            twin.set_ylabel("val cIoU", color="tab:red")
            twin.legend(fontsize=7, loc="upper right")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
