"""The kit's runs as named recipes: the SynRef data a preset uses, the foundation, the ablation variants.

Paper Table 2 rows and Table 3 variants become ``VARIANTS``; each is a change of the preset's config. Every
fine-tuning run starts from the same foundation (DESIGN.md "Foundation, then fine-tuning") with the SAM-2
image encoder frozen, as Sa2VA and SALMA train, so differences between runs come from the method.
"""

from __future__ import annotations


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
