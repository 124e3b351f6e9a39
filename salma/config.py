"""Frozen configuration dataclasses and the named presets (docs/design.md section "Presets").

Defaults are the paper's values (docs/method.md sections 2-3): MBA top-K 2, 8 heads, tau_gate 1.0, gamma
initialised at 0 with a 5% linear warm-up; L_seg = 2.0 BCE + 0.5 Dice; TMC 0.1 at temperature 0.15;
boundary 0.05; LoRA r=128, alpha=256, dropout 0.05. The paper preset keeps them all. The tiny and small
presets change more than sizes: they train the whole LLM and InternViT (no LoRA, vision encoder not frozen),
since their MLLM starts from the SynRef foundation rather than from pretrained weights; they fine-tune with
the foundation's segmentation-loss weights (``SYNREF_FINETUNE_LOSS``); and their TrainConfig is the CPU
fine-tuning recipe.

- ``tiny``: seconds per step on a 2-core CPU (tests, CI notebook run).
- ``small``: the embedded default: the SynRef foundation and the ablation runs on a CPU.
- ``paper``: InternViT-300M + Qwen2.5-0.5B dims, SAM-2.1 Hiera-L at 1024x1024; random weights unless
  local weights are given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

PRESET_NAMES = ("tiny", "small", "paper")
MBA_MODES = ("gate", "bias")
FILM_KINDS = ("residual", "gated")
TEXT_SOURCES = ("expression", "seg_only")


@dataclass(frozen=True)
class SAM2Config:
    """Which sam2 config to build and the Hydra overrides that shrink it.

    ``prompt_dim`` must equal the neck's ``d_model`` (SAM-2 ties the prompt dimension to it).
    """

    config_file: str = "configs/sam2.1/sam2.1_hiera_l.yaml"
    image_size: int = 1024
    prompt_dim: int = 256
    overrides: tuple[str, ...] = ()
    checkpoint: str | None = None  # local path to a SAM-2 .pt checkpoint; never fetched
    multimask_prior: bool = True  # pre-pass keeps the best-IoU of the 3 masks (docs/method.md section 3.1)
    # Final (language) decoder pass: False = one mask, what the kit's presets train and predict; True = the best
    # predicted IoU of 3 masks, as Sa2VA and the released SALMA decode (what real weights expect).
    multimask_output: bool = False
    freeze_encoder: bool = True  # Sa2VA/SALMA freeze SAM-2's image encoder; the embedded presets train it


@dataclass(frozen=True)
class MLLMConfig:
    """InternVL built from a config (vision tower + projector + Qwen2) or loaded from a local folder."""

    vision_hidden: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_intermediate: int = 4096
    vision_image_size: int = 448
    vision_patch: int = 14
    text_hidden: int = 896
    text_layers: int = 24
    text_heads: int = 14
    text_kv_heads: int = 2
    text_intermediate: int = 4864
    vocab_size: int = 151674
    downsample_ratio: float = 0.5
    max_tiles: int = 6  # InternVL dynamic 448 tiling (+ thumbnail); 1 = one resized image
    local_path: str | None = None  # a transformers InternVL folder on disk; never fetched from a hub
    lora: bool = True
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    freeze_vision: bool = True

    @property
    def image_tokens(self) -> int:
        """Image tokens per tile after pixel shuffle: (image/patch * ratio)^2."""
        side = int(self.vision_image_size // self.vision_patch * self.downsample_ratio)
        return side * side


@dataclass(frozen=True)
class MBAConfig:
    """Mask-Biased Attention (paper Eq. 1-2). ``enabled=False`` is the Sa2VA baseline."""

    enabled: bool = True
    num_heads: int = 8
    top_k: int = 2
    mode: str = "gate"  # "gate": G * O_attn; "bias": logit(G) added to the attention logits
    film: bool = False  # Residual FiLM beside the gated attention (paper Table 3)
    # "residual": F + gamma_film * (scale(t) * LN(F) + shift(t)) from an MLP of the text, with its own gamma_film
    # (the paper's and the released code's); "gated": the kit's earlier reading, (scale * F + shift) added to
    # the attention output inside the gate, zero-initialised (so it equals plain MBA until it learns)
    film_kind: str = "residual"
    tau_gate: float = 1.0
    router_hidden: int = 256
    text_source: str = "expression"  # "seg_only" reproduces the released code (N = 1)
    gamma_init: float = 0.0
    gamma_warmup_ratio: float = 0.05  # released config: 0.10
    # Zero-initialise the output projection (weights and bias) so that the branch starts as the identity even
    # with gamma_init > 0 and its weights get gradients from step 0 (the zero-init residual of ControlNet and
    # adapters). Not the paper's: there gamma = 0 keeps the branch shut at the start.
    zero_init_output: bool = False
    dropout: float = 0.0  # on the attention weights; the released config uses 0.1, the paper does not say


@dataclass(frozen=True)
class LossConfig:
    """L_total = L_seg + lambda_tmc L_tmc + lambda_bound L_bound (paper Sec. 3.3-3.4)."""

    bce_weight: float = 2.0
    dice_weight: float = 0.5
    lm_weight: float = 1.0  # next-token loss on the answer ("Sure, [SEG].") as in Sa2VA
    tmc_weight: float = 0.1  # 0 disables TMC
    tmc_temperature: float = 0.15
    boundary_weight: float = 0.05  # 0 disables the boundary loss
    aux_warmup_ratio: float = 0.05  # released config: 0.20


@dataclass(frozen=True)
class DataConfig:
    """SynRef scene size and how images reach each branch."""

    scene_size: int = 64  # SynRef images are scene_size x scene_size
    seed: int = 0
    train_images: int = 4000
    val_images: int = 400
    test_images: int = 400


@dataclass(frozen=True)
class TrainConfig:
    """The paper's recipe (Sec. 4.1) with learning rates the CPU measurements support (docs/method.md section 9)."""

    lr: float = 4e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    batch_size: int = 2
    grad_accum: int = 4
    steps: int = 1000
    seed: int = 0
    mixed_precision: str = "bf16"  # used on GPU only; CPU runs in fp32
    # Learning-rate multiplier of the MBA module's parameters (router, attention, gamma): new weights meet a
    # trained model in a short fine-tuning run. 1.0 is the paper's single learning rate; scaling it did not
    # give the branch a consistent gradient (docs/method.md section 11).
    mba_lr_scale: float = 1.0
    # Learning-rate multiplier of gamma alone (on top of mba_lr_scale): AdamW moves a parameter by about lr per
    # step, so a short run caps |gamma| near the sum of its learning rates (docs/method.md section 11).
    gamma_lr_scale: float = 1.0
    # Learning-rate multiplier of the MLLM and text_hidden_fcs: in the SynRef foundation's stage 1 the MLLM
    # is trained from scratch while SAM-2's decoder comes trained from stage 0. 1.0 is the paper's single rate.
    mllm_lr_scale: float = 1.0


@dataclass(frozen=True)
class SalmaConfig:
    """The whole model + recipe. ``name`` is the preset it came from."""

    name: str = "paper"
    sam2: SAM2Config = field(default_factory=SAM2Config)
    mllm: MLLMConfig = field(default_factory=MLLMConfig)
    mba: MBAConfig = field(default_factory=MBAConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """A short, stable hash of the full config (run cache key, checkpoint compatibility)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def model_dict(self) -> dict[str, Any]:
        """The part of the config that fixes the weights' names and shapes (checked when loading).

        Freezing, LoRA dropout, MBA mode/top-K/warm-up, losses and the recipe may differ between a
        checkpoint and the run that loads it (a foundation is fine-tuned under other settings).
        """
        d = self.to_dict()
        sam_keys = ("config_file", "image_size", "prompt_dim", "overrides")
        mllm_skip = ("local_path", "freeze_vision", "lora_dropout", "max_tiles")
        return {"sam2": {k: d["sam2"][k] for k in sam_keys},
                "mllm": {k: v for k, v in d["mllm"].items() if k not in mllm_skip},
                "mba": {k: d["mba"][k] for k in ("enabled", "num_heads", "router_hidden", "film")}}

    def weights_compatible(self, other: SalmaConfig) -> bool:
        """Can weights saved under ``other`` load into a model built from this config? MBA shapes matter
        only when both have MBA (a baseline foundation gives SALMA a fresh MBA)."""
        a, b = self.model_dict(), other.model_dict()
        if a["sam2"] != b["sam2"] or a["mllm"] != b["mllm"]:
            return False
        return not (a["mba"]["enabled"] and b["mba"]["enabled"]) or a["mba"] == b["mba"]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SalmaConfig:
        """The config ``to_dict`` wrote. Raises TypeError when ``d`` (or one of its sections) is not a mapping
        and KeyError naming a missing section."""
        if not isinstance(d, dict):
            raise TypeError(f"a SALMA config is a JSON object with sections sam2, mllm, mba, loss, data, train; "
                            f"got a {type(d).__name__}")

        def tuples(x: dict[str, Any]) -> dict[str, Any]:
            if not isinstance(x, dict):
                raise TypeError(f"a config section is a JSON object; got a {type(x).__name__}")
            return {k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}

        return SalmaConfig(
            name=d.get("name", "custom"),
            sam2=SAM2Config(**tuples(d["sam2"])),
            mllm=MLLMConfig(**tuples(d["mllm"])),
            mba=MBAConfig(**tuples(d["mba"])),
            loss=LossConfig(**tuples(d["loss"])),
            data=DataConfig(**tuples(d["data"])),
            train=TrainConfig(**tuples(d["train"])),
        )


def _tiny_sam2_overrides(image_size: int, embed: int, d_model: int, feat: int) -> tuple[str, ...]:
    """Hydra overrides that shrink ``sam2.1_hiera_t`` (docs/method.md section 9). Global attention sits on block 3,
    which is not a pooling block (a pooling block with global attention divides by zero in Hiera)."""
    return (
        f"++model.image_size={image_size}",
        f"++model.image_encoder.trunk.embed_dim={embed}",
        "++model.image_encoder.trunk.num_heads=1",
        "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        "++model.image_encoder.trunk.window_spec=[4,4,4,4]",
        "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
        f"++model.image_encoder.neck.d_model={d_model}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={d_model}",
        f"++model.image_encoder.neck.backbone_channel_list=[{embed * 8},{embed * 4},{embed * 2},{embed}]",
        f"++model.memory_attention.d_model={d_model}",
        "++model.memory_attention.num_layers=1",
        f"++model.memory_attention.layer.d_model={d_model}",
        f"++model.memory_attention.layer.dim_feedforward={4 * d_model}",
        f"++model.memory_attention.layer.self_attention.embedding_dim={d_model}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.embedding_dim={d_model}",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.kv_in_dim={d_model}",
        f"++model.memory_encoder.in_dim={d_model}",
        f"++model.memory_encoder.out_dim={d_model}",
        f"++model.memory_encoder.position_encoding.num_pos_feats={d_model}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={d_model}",
        f"++model.memory_encoder.fuser.layer.dim={d_model}",
        "++model.num_maskmem=2",
    )


# The segmentation-loss weights of the presets that fine-tune from a SynRef foundation: the weights its stage 1
# was trained with (0.5 BCE + 2.0 Dice); Sa2VA's 2.0 BCE + 0.5 Dice collapses to empty masks from scratch and,
# used for fine-tuning, undid part of the foundation (docs/foundation.md section "Fine-tuning recipe choices").
# The paper preset keeps Sa2VA's weights.
SYNREF_FINETUNE_LOSS = LossConfig(bce_weight=0.5, dice_weight=2.0)


def _tiny() -> SalmaConfig:
    """The small preset's departures from the paper (see ``_small``) at test sizes."""
    return SalmaConfig(
        name="tiny",
        sam2=SAM2Config(
            config_file="configs/sam2.1/sam2.1_hiera_t.yaml",
            image_size=64,
            prompt_dim=32,
            overrides=_tiny_sam2_overrides(64, 16, 32, 4),
            freeze_encoder=False,
        ),
        mllm=MLLMConfig(
            vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64,
            vision_image_size=32, vision_patch=8, text_hidden=64, text_layers=1, text_heads=2,
            text_kv_heads=1, text_intermediate=128, vocab_size=0, max_tiles=1, lora=False, lora_r=8, lora_alpha=16,
            freeze_vision=False,
        ),
        mba=MBAConfig(num_heads=4, router_hidden=32),
        loss=SYNREF_FINETUNE_LOSS,
        data=DataConfig(scene_size=32, train_images=200, val_images=40, test_images=40),
        # fine-tuning from the tiny foundation (the foundation's stages set their own, salma.train.recipes)
        train=TrainConfig(lr=3e-4, batch_size=8, grad_accum=1, steps=20, warmup_ratio=0.1),
    )


def _small() -> SalmaConfig:
    """Departs from the paper in more than sizes: the whole LLM and InternViT are trained (``lora=False``,
    ``freeze_vision=False``; the paper trains LoRA on the LLM with a frozen vision encoder), the final decoder
    pass is single-mask (``multimask_output=False``; Sa2VA keeps the best of 3), and fine-tuning uses the
    foundation's loss weights (``SYNREF_FINETUNE_LOSS``) and a CPU-length recipe."""
    return SalmaConfig(
        name="small",
        sam2=SAM2Config(
            config_file="configs/sam2.1/sam2.1_hiera_t.yaml",
            image_size=128,
            prompt_dim=64,
            overrides=_tiny_sam2_overrides(128, 32, 64, 8),
            freeze_encoder=False,
        ),
        mllm=MLLMConfig(
            vision_hidden=64, vision_layers=2, vision_heads=4, vision_intermediate=128,
            vision_image_size=64, vision_patch=8, text_hidden=256, text_layers=4, text_heads=4,
            text_kv_heads=2, text_intermediate=512, vocab_size=0, max_tiles=1, lora=False, lora_r=16, lora_alpha=32,
            freeze_vision=False,
        ),
        mba=MBAConfig(num_heads=8, router_hidden=64),
        loss=SYNREF_FINETUNE_LOSS,
        data=DataConfig(scene_size=64, train_images=10000, val_images=400, test_images=400),
        # fine-tuning an ablation run from the shipped foundation, short enough for a CPU run per variant and
        # seed (docs/foundation.md section "Fine-tuning recipe choices"); the foundation's stages set their own
        train=TrainConfig(lr=1e-4, batch_size=16, grad_accum=1, steps=250, warmup_ratio=0.05),
    )


def _paper() -> SalmaConfig:
    return SalmaConfig(name="paper", data=DataConfig(scene_size=1024))


_PRESETS = {"tiny": _tiny, "small": _small, "paper": _paper}


def get_preset(name: str, **overrides: Any) -> SalmaConfig:
    """Return the named preset; ``overrides`` replace top-level sections (e.g. ``mba=MBAConfig(...)``).

    Raises ValueError naming the accepted presets for an unknown name.
    """
    if name not in _PRESETS:
        raise ValueError(f"PRESET={name!r} is not a known preset; accepted values: {', '.join(PRESET_NAMES)}")
    cfg = _PRESETS[name]()
    return replace(cfg, **overrides) if overrides else cfg


def validate(cfg: SalmaConfig) -> SalmaConfig:
    """Check the values that are easy to get wrong; raise ValueError naming the field and the choices."""
    if cfg.mba.mode not in MBA_MODES:
        raise ValueError(f"mba.mode={cfg.mba.mode!r}; accepted values: {', '.join(MBA_MODES)}")
    if cfg.mba.text_source not in TEXT_SOURCES:
        raise ValueError(f"mba.text_source={cfg.mba.text_source!r}; accepted values: {', '.join(TEXT_SOURCES)}")
    if cfg.mba.top_k < 1:
        raise ValueError(f"mba.top_k={cfg.mba.top_k} must be >= 1")
    if cfg.mba.film_kind not in FILM_KINDS:
        raise ValueError(f"mba.film_kind={cfg.mba.film_kind!r}; accepted values: {', '.join(FILM_KINDS)}")
    if cfg.mba.gamma_init < 0:
        raise ValueError(f"mba.gamma_init={cfg.mba.gamma_init} must be >= 0 (0 is the paper's: the branch starts shut)")
    if not 0.0 <= cfg.mba.dropout < 1.0:
        raise ValueError(f"mba.dropout={cfg.mba.dropout} must lie in [0, 1)")
    for name in ("mba_lr_scale", "gamma_lr_scale", "mllm_lr_scale"):
        if getattr(cfg.train, name) <= 0:
            raise ValueError(f"train.{name}={getattr(cfg.train, name)} must be > 0 (1.0 is the paper's single "
                             "learning rate)")
    if cfg.sam2.prompt_dim % cfg.mba.num_heads:
        raise ValueError(f"sam2.prompt_dim={cfg.sam2.prompt_dim} is not divisible by mba.num_heads={cfg.mba.num_heads}")
    return cfg
