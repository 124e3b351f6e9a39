"""The kit's runs by name: the SynRef data a preset uses, the ablation variants' configs, one fine-tuning run
(image or video) from the foundation, and grids of runs over variants and seeds. Every fine-tuning run
starts from the same foundation (docs/design.md section "Foundation, then fine-tuning") with the SAM-2
image encoder frozen, as Sa2VA and SALMA train, so differences between runs come from the method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from salma import paths
from salma.config import SalmaConfig, get_preset
from salma.train.datasets import synref_root, synref_video_root
from salma.train.foundation import ensure_foundation
from salma.train.identity import RunResult, RunSpec
from salma.train.loop import train
from salma.train.recipes import VARIANTS, finetune_recipe, video_recipe
from salma.train.study import study_config, study_row


def variant_config(preset: str, variant: str, seed: int = 0, steps: int | None = None) -> SalmaConfig:
    """The preset's fine-tuning config for one ablation variant and seed (encoder frozen)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not known; accepted values: {', '.join(VARIANTS)}")
    cfg = get_preset(preset)
    _, mba_changes, loss_changes = VARIANTS[variant]
    # The preset's TrainConfig is its fine-tuning recipe; the caller's seed and steps win.
    train_cfg = dataclasses.replace(cfg.train, seed=seed, **({"steps": steps} if steps is not None else {}))
    return dataclasses.replace(
        cfg,
        sam2=dataclasses.replace(cfg.sam2, freeze_encoder=True),
        mba=dataclasses.replace(cfg.mba, **mba_changes),
        loss=dataclasses.replace(cfg.loss, **loss_changes),
        train=train_cfg,
    )


def finetune(preset: str, variant: str, seed: int = 0, steps: int | None = None, data_root: str | None = None,
             foundation: str | None = None, runs_root: str | Path | None = None, progress: bool = True,
             eval_limit: int = 400, study: str | None = None) -> RunResult:
    """One ablation run: ``variant`` fine-tuned from the preset's foundation (cached by config hash).
    ``study``: a configuration of the MBA study (``salma.train.study.STUDY``) applied to the salma variant;
    "faithful" is the salma variant's own run."""
    cfg = variant_config(preset, variant, seed, steps)
    name = f"{preset}-{variant}-s{seed}"
    if study is not None:
        if variant != "salma":
            raise ValueError(f"study={study!r} changes the salma variant; got variant={variant!r}")
        cfg = study_config(cfg, study)
        name = name if study == "faithful" else f"{preset}-salma-{study}-s{seed}"
    recipe = finetune_recipe(preset)
    runs_root = Path(runs_root or paths.runs_root())
    data = synref_root(preset, data_root)  # a wrong --data is refused before a foundation is looked for or made
    found = Path(foundation) if foundation else ensure_foundation(preset, runs_root=runs_root, progress=progress)
    spec = RunSpec(stage="finetune", data_root=str(data), init_from=str(found),
                   name=name, eval_limit=eval_limit,
                   checkpoint_every=recipe.checkpoint_every, train_images=recipe.train_images)
    return train(cfg, spec, runs_root=runs_root, progress=progress)


def video_config(preset: str, variant: str, seed: int = 0, steps: int | None = None) -> SalmaConfig:
    """``variant_config`` with the preset's video training recipe (encoder frozen, as Sa2VA trains)."""
    cfg = variant_config(preset, variant, seed)
    r = video_recipe(preset)
    train_cfg = dataclasses.replace(cfg.train, lr=r.lr, batch_size=r.batch_size, grad_accum=r.grad_accum,
                                    steps=r.steps if steps is None else steps, warmup_ratio=r.warmup_ratio)
    return dataclasses.replace(cfg, train=train_cfg)


def finetune_video(preset: str, variant: str = "salma", seed: int = 0, steps: int | None = None,
                   data_root: str | None = None, foundation: str | None = None,
                   runs_root: str | Path | None = None, progress: bool = True, eval_limit: int | None = None,
                   clip_frames: int | None = None, mllm_frames: int | None = None,
                   frame_sampling: str = "first") -> RunResult:
    """One video run: ``variant`` fine-tuned from the preset's image foundation on SynRef-Video (the
    ``video`` stage of ``salma.train.loop``; cached by config hash), then J&F on ``valid_u`` in per_frame and
    released modes, written into the run's metrics.json (``jf`` = per_frame, ``jf_released``).

    The recipe is ``salma.train.recipes.VideoRecipe``. Batches: each micro-batch is ``batch_size`` clips of
    ``clip_frames`` frames (B x K decoder rows, B MLLM passes).
    """
    recipe = video_recipe(preset)
    cfg = video_config(preset, variant, seed, steps)
    runs_root = Path(runs_root or paths.runs_root())
    data = synref_video_root(preset, data_root)
    found = Path(foundation) if foundation else ensure_foundation(preset, runs_root=runs_root, progress=progress)
    spec = RunSpec(stage="video", data_root=str(data), init_from=str(found),
                   name=f"{preset}-video-{variant}-s{seed}", eval_limit=eval_limit or recipe.eval_limit,
                   checkpoint_every=recipe.checkpoint_every, clip_frames=clip_frames or recipe.clip_frames,
                   mllm_frames=mllm_frames or recipe.mllm_frames, frame_sampling=frame_sampling)
    return train(cfg, spec, runs_root=runs_root, progress=progress)




def _grid(run_one, variants: Sequence[str], seeds: Sequence[int]) -> dict[str, dict[int, object]]:
    """{variant: {seed: run_one(variant, seed)}} after checking the names (shared by the image and video grids)."""

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; accepted values: {', '.join(VARIANTS)}")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. [0]")
    return {v: {int(s): run_one(v, int(s)) for s in seeds} for v in variants}


def run_grid(preset: str, variants: Sequence[str], seeds: Sequence[int], steps: int | None = None,
             progress: bool = True) -> dict[str, dict[int, object]]:
    """Fine-tune (or reuse from the run cache) every variant at every seed from the preset's foundation.

    Returns {variant: {seed: RunResult}}. The first call trains; later calls (other notebooks) reuse.
    """

    return _grid(lambda v, s: finetune(preset, v, seed=s, steps=steps, runs_root=paths.runs_root(), progress=progress),
                 variants, seeds)


def video_run_grid(preset: str, variants: Sequence[str], seeds: Sequence[int], steps: int | None = None,
                   progress: bool = True) -> dict[str, dict[int, object]]:
    """``run_grid`` for video: every variant fine-tuned on SynRef-Video at every seed from the preset's image
    foundation (``salma.train.experiments.finetune_video``; cached). Returns {variant: {seed: RunResult}}."""

    return _grid(lambda v, s: finetune_video(preset, v, seed=s, steps=steps, runs_root=paths.runs_root(),
                                             progress=progress), variants, seeds)


def study_grid(preset: str, names: Sequence[str], seeds: Sequence[int] = (0,), progress: bool = True) -> list[dict]:
    """The MBA study's rows (``salma.train.study.study_row``), one per configuration and seed, each a cached
    fine-tuning run from the preset's foundation."""
    return [{**study_row(name, finetune(preset, "salma", seed=seed, runs_root=paths.runs_root(), progress=progress,
                                       study=name)), "seed": seed}
            for name in names for seed in seeds]
