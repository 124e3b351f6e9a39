"""The kit's recipes as typed, frozen dataclasses: the ablation variants, the foundation's two stages, image
and video fine-tuning, and the SynRef-Video sizes of each preset.

One source for each value. A fine-tuning run's learning rate, batch size, length and segmentation-loss weights
are the preset's own ``TrainConfig`` and ``LossConfig`` (salma/config.py); a recipe holds only what a preset
does not (the stages of the foundation, the video runs' clip settings, how many images a run reads). Each
default is the paper's value or the measured one, with its reason beside it; the measurements behind them are
in docs/foundation.md section "Fine-tuning recipe choices".
"""

from __future__ import annotations

from dataclasses import dataclass, field

# name -> (description, changes to MBAConfig, changes to LossConfig). Paper Table 2 rows and Table 3 variants.
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


@dataclass(frozen=True)
class Stage0Recipe:
    """Stage 0 of the foundation: SAM-2 alone, class-agnostic, with the object head (salma.train.heads)."""

    steps: int = 2400  # grounding came only after a converged stage 0 (docs/method.md section 9)
    lr: float = 3e-4  # 1e-3 is too high for SAM-2 from scratch, 3e-4 works (docs/method.md section 9)
    batch_size: int = 16
    warmup_ratio: float = 0.02
    category_weight: float = 0.5  # the object head's category term: without it the encoder hardly tells shape
    colour_weight: float = 0.5  # its colour term: with the category term alone the encoder lost colour
    checkpoint_every: int = 100


@dataclass(frozen=True)
class Stage1Recipe:
    """Stage 1 of the foundation: the Sa2VA baseline on SynRef until it grounds."""

    steps: int = 9000  # val cIoU was still rising two thirds of the way (docs/foundation.md section "History")
    lr: float = 1e-4  # at 3e-4 stage 1 sat at the largest-object floor for its first 2000 steps
    batch_size: int = 32
    warmup_ratio: float = 0.02
    freeze_encoder: bool = True  # SAM-2's encoder frozen and its features cached: what makes a CPU run feasible
    eval_every: int = 500
    eval_limit: int = 400
    box_weight: float = 1.0  # the target-box read-out of the [SEG] embedding (BoxHead)
    token_weight: float = 1.0  # the image-token read-out of the MLLM (ImageTokenHead)
    prior_weight: float = 0.2  # keeps the dummy-prompt -> union objective alive while the decoder learns language
    train_images: int | None = 20000  # on the preset's 10,000 images stage 1 overfitted them
    mllm_lr_scale: float = 1.0  # three times the MLLM's rate learnt no faster
    checkpoint_every: int = 100


@dataclass(frozen=True)
class FoundationRecipe:
    """Both stages of ``python -m salma pretrain`` for one preset and kind (cpu or gpu)."""

    stage0: Stage0Recipe = field(default_factory=Stage0Recipe)
    stage1: Stage1Recipe = field(default_factory=Stage1Recipe)


@dataclass(frozen=True)
class FinetuneRecipe:
    """What an image fine-tuning run reads besides the preset's TrainConfig and LossConfig."""

    # the first N training images: their frozen-encoder features are computed once per process and shared by
    # every run (a few minutes for 3000 images on a 2-core CPU); None: all of the preset's
    train_images: int | None = None
    checkpoint_every: int = 100


@dataclass(frozen=True)
class VideoRecipe:
    """Video fine-tuning from the image foundation (Sa2VA's per-frame decoder training), then J&F on valid_u."""

    lr: float = 1e-4
    batch_size: int = 4  # clips of clip_frames frames: batch_size x clip_frames decoder rows, batch_size MLLM passes
    grad_accum: int = 1
    steps: int = 200  # six times as many steps scored no better (docs/foundation.md section "Fine-tuning recipe choices")
    warmup_ratio: float = 0.05
    clip_frames: int = 5
    mllm_frames: int = 5  # Sa2VA's MLLM reads 5 frames of a clip
    eval_limit: int = 40
    checkpoint_every: int = 50


@dataclass(frozen=True)
class VideoData:
    """The SynRef-Video dataset of a preset (frames as large as the preset's SynRef scenes)."""

    scene_size: int = 64
    n_frames: int = 12
    n_videos: dict[str, int] = field(default_factory=lambda: {"train": 400, "valid_u": 60})


# Foundation recipes per preset and kind. "cpu" (the default on any device; it made the shipped foundation)
# keeps the SAM-2 image encoder frozen in stage 1. "gpu" trains the whole model with batch 64, as the from-scratch
# probe that grounded did; it has not been run with the object head and the read-outs (docs/foundation.md).
PRETRAIN_RECIPES: dict[str, dict[str, FoundationRecipe]] = {
    "tiny": {"cpu": FoundationRecipe(
        Stage0Recipe(steps=40, batch_size=8),
        Stage1Recipe(steps=40, lr=3e-4, batch_size=8, eval_every=0, box_weight=0.0, token_weight=0.0,
                     train_images=None))},
    "small": {
        "cpu": FoundationRecipe(),
        "gpu": FoundationRecipe(Stage0Recipe(steps=1500, batch_size=64),
                                Stage1Recipe(steps=3500, lr=3e-4, batch_size=64, freeze_encoder=False,
                                             eval_every=1000)),
    },
}
RECIPE_KINDS = ("auto", "cpu", "gpu")

FINETUNE_RECIPES: dict[str, FinetuneRecipe] = {"tiny": FinetuneRecipe(), "small": FinetuneRecipe(train_images=3000),
                                               "paper": FinetuneRecipe()}

VIDEO_RECIPES: dict[str, VideoRecipe] = {
    "tiny": VideoRecipe(lr=3e-4, batch_size=2, steps=10, warmup_ratio=0.1, clip_frames=4, eval_limit=6),
    "small": VideoRecipe(),
}

VIDEO_DATA: dict[str, VideoData] = {
    "tiny": VideoData(scene_size=32, n_frames=8, n_videos={"train": 24, "valid_u": 6}),
    "small": VideoData(),
}


def _pick(table: dict, preset: str, what: str):
    if preset not in table:
        raise ValueError(f"preset={preset!r} has no {what}; accepted values: {', '.join(table)}")
    return table[preset]


def pretrain_recipe(preset: str, kind: str = "auto") -> tuple[str, FoundationRecipe]:
    """(resolved kind, recipe) of a preset's foundation; ``auto`` is ``cpu`` (see PRETRAIN_RECIPES)."""
    recipes = _pick(PRETRAIN_RECIPES, preset, "foundation recipe")
    if kind not in RECIPE_KINDS:
        raise ValueError(f"recipe={kind!r}; accepted values: {', '.join(RECIPE_KINDS)}")
    kind = "cpu" if kind == "auto" else kind
    if kind not in recipes:
        raise ValueError(f"the {preset} preset has no {kind!r} recipe; accepted values: {', '.join(recipes)}")
    return kind, recipes[kind]


def finetune_recipe(preset: str) -> FinetuneRecipe:
    """The image fine-tuning recipe of a preset."""
    return _pick(FINETUNE_RECIPES, preset, "fine-tuning recipe")


def video_recipe(preset: str) -> VideoRecipe:
    """The video fine-tuning recipe of a preset."""
    return _pick(VIDEO_RECIPES, preset, "video recipe")


def video_data(preset: str) -> VideoData:
    """The SynRef-Video sizes of a preset."""
    return _pick(VIDEO_DATA, preset, "SynRef-Video size")
