"""The benchmark's model and inputs at a preset (paper: 1024x1024, random weights) and the image forward it
times, stage by stage; the lean, shared and batched prior paths compared with SAM-2's own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from salma.bench.timing import StageTimer, _null_stage, autocast_for
from salma.config import get_preset
from salma.device import resolve_device
from salma.model import SalmaModel
from salma.sam2_ext import LanguageSAM2, SAM2Features, structural_prior
from salma.train.tokenizer import synthetic_tokenizer

BENCH_EXPRESSIONS = (
    "the small red circle to the left of the blue square",
    "the largest green triangle",
    "the dark blue diamond with a larger one to its left",
)


# ============================================================================================ inputs
@dataclass
class BenchInputs:
    """Everything the measurements read, built once.

    batch: one image + one expression (the full forward); feats: SAM-2 features of that image
    (image_embed (1, C, h, w)); language (1, C), text (1, N, C), text_mask (1, N): the MLLM's outputs;
    texts3 / masks3: text tokens for ``n_expressions`` expressions on the same image (E, N, C);
    frames: ``n_frames`` SAM2Features rows of a clip (T, C, h, w) (the image's features, perturbed);
    device: where it runs; preset: the preset name; build_s: model build time; first_forward_s: the first
    (warm-up) SALMA forward's time.
    """

    batch: Any
    feats: SAM2Features
    language: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    texts3: torch.Tensor
    masks3: torch.Tensor
    frames: SAM2Features
    device: torch.device
    preset: str
    build_s: float
    image_size: int
    first_forward_s: float = math.nan


def bench_image(size: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 RGB test image (size, size, 3): smooth colour blobs (content does not change
    the cost of any module measured here)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    image = np.zeros((size, size, 3), np.float32)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        image[blob] = rng.uniform(0, 255, 3)
    return image.astype(np.uint8)


def build_bench_model(preset: str, device: torch.device, seed: int = 0):
    """The preset's SalmaModel (MBA on) with random weights, in eval mode on ``device``.

    LoRA is left out: at inference the adapters are merged into the LLM (as in the released Sa2VA
    checkpoints), so the forward costs what the base LLM costs. Raises ValueError for an unknown preset.
    """

    cfg = get_preset(preset)
    cfg = replace(cfg, mllm=replace(cfg.mllm, lora=False), mba=replace(cfg.mba, enabled=True))
    torch.manual_seed(seed)
    model = SalmaModel(cfg, tokenizer=synthetic_tokenizer())
    # gamma = 0 at initialisation would make MBA an exact identity; a trained model has gamma != 0. The
    # cost is the same, but a non-zero gamma keeps the SALMA forward honest (it really changes F_v).
    with torch.no_grad():
        model.mba.gamma.fill_(0.5)
    return model.to(device).eval()


def prepare_benchmark(preset: str = "paper", device: str = "auto", seed: int = 0, n_expressions: int = 3,
                      n_frames: int = 8):
    """Build the model and the inputs of every measurement. Returns ``(model, BenchInputs)``.

    The image is ``sam2.image_size`` square (1024x1024 for the paper preset: InternVL's dynamic tiling
    gives 2x2 tiles + a thumbnail = 5 tiles of 448). The text tokens of the extra expressions and the
    frames of the clip are the measured image's tensors, perturbed (costs depend on shapes only).
    """

    dev = resolve_device(device)
    t0 = time.perf_counter()
    model = build_bench_model(preset, dev, seed)
    build_s = time.perf_counter() - t0
    size = model.cfg.sam2.image_size
    batch = model.make_batch([bench_image(size, seed)], [BENCH_EXPRESSIONS[0]]).to(dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # One full SALMA forward: it gives the tensors the measurements read and doubles as the warm-up.
    kept: dict[str, Any] = {}
    t0 = time.perf_counter()
    image_forward(model, batch, salma=True, keep=kept)
    first_s = time.perf_counter() - t0
    feats, language, text, text_mask = (kept[k] for k in ("feats", "language", "text", "text_mask"))

    def noisy(x: torch.Tensor, n: int) -> torch.Tensor:
        noise = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device, x.dtype)
        return x.expand(n, *x.shape[1:]) + 0.1 * noise

    frames = SAM2Features(noisy(feats.image_embed, n_frames), [noisy(f, n_frames) for f in feats.high_res])
    inputs = BenchInputs(
        batch=batch, feats=feats, language=language, text=text, text_mask=text_mask,
        texts3=noisy(text, n_expressions), masks3=text_mask.expand(n_expressions, -1).clone(), frames=frames,
        device=dev, preset=model.cfg.name, build_s=build_s, image_size=size, first_forward_s=first_s,
    )
    return model, inputs


# ============================================================================================ forward paths
def mllm_inference(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InternVL at inference: one forward over tiles + prompt; returns (e (B, C), F_t (B, N, C),
    text_mask (B, N)) exactly as ``SalmaModel.language`` does, but asks for the logits of the last
    position only (``logits_to_keep=1``, as a generation prefill): the LM head over every prompt position
    (151k x 896 x ~1.3k tokens at paper scale) is training work, not inference work."""
    out = model.mllm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     pixel_values=batch.pixel_values.to(model.mllm.dtype), output_hidden_states=True,
                     logits_to_keep=1)
    hidden = out.hidden_states[-1]
    rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)
    language = model.text_hidden_fcs(hidden[rows, batch.seg_positions])
    if model.cfg.mba.text_source == "seg_only":
        return language, language[:, None], torch.ones_like(batch.seg_positions, dtype=torch.bool)[:, None]
    gathered = hidden.gather(1, batch.expression_index[..., None].expand(-1, -1, hidden.shape[-1]))
    return language, model.text_hidden_fcs(gathered), batch.expression_valid


@torch.no_grad()
def image_forward(model, batch, salma: bool, timer: StageTimer | None = None,
                  keep: dict[str, Any] | None = None) -> torch.Tensor:
    """The full image forward of one batch: SAM-2 encoder, InternVL, [pre-pass + MBA,] decoder with the
    language embedding. ``salma=False`` is the Sa2VA baseline on the same model. Stages are timed into
    ``timer`` (encoder, mllm, prior, mba, decoder); ``keep`` receives feats, language, text, text_mask.
    Returns the low-res mask logits (B, 1, 4h, 4w)."""
    stage = timer.stage if timer is not None else _null_stage
    with autocast_for(batch.sam_images.device):
        with stage("encoder"):
            feats = model.sam.encode_image(batch.sam_images)
        with stage("mllm"):
            language, text, text_mask = mllm_inference(model, batch)
        if keep is not None:
            keep.update(feats=feats, language=language, text=text, text_mask=text_mask)
        embed = feats.image_embed
        if salma:
            with stage("prior"):
                prior = model.prior(feats)
            with stage("mba"):
                embed = model.mba(embed, text, prior, text_mask=text_mask).features
        with stage("decoder"):
            return model.sam.decode(embed, feats.high_res, language=language[:, None]).low_res_logits


@torch.no_grad()
def upstream_prior(sam: LanguageSAM2, image_embed: torch.Tensor, high_res: list[torch.Tensor],
                   multimask: bool = True, override: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper-design prior through SAM-2's own ``SAM2Base._forward_sam_heads`` (dummy point, no
    language): returns (best low-res logits (B, 1, 4h, 4w), object score logits (B, 1)).

    Upstream also upsamples every mask to full resolution and computes the object pointer, and overwrites
    the masks with -1024 where the object score is <= 0; ``override=False`` switches that last step off
    (``pred_obj_scores`` is turned off for the call and restored), for comparing logits before it."""
    m = sam.model
    saved = m.pred_obj_scores
    try:
        if not override:
            m.pred_obj_scores = False
        out = m._forward_sam_heads(image_embed, point_inputs=None, mask_inputs=None, high_res_features=high_res,
                                   multimask_output=multimask)
    finally:
        m.pred_obj_scores = saved
    return out[3], out[6]


def shared_prior(sam: LanguageSAM2, image_feats: SAM2Features, image_index: torch.Tensor,
                 multimask: bool = True) -> torch.Tensor:
    """The prior once per image, reused by every expression on it (evaluation and multi-expression
    training). image_feats: one row per *image* (I, C, h, w); image_index: (B,) the image of each
    expression. Returns (B, 1, 4h, 4w), equal to ``structural_prior`` on ``image_feats.select(image_index)``
    at 1/(B/I) of its decoder work. ``SalmaModel.segment(..., prior=...)`` takes it."""
    prior = structural_prior(sam, image_feats.image_embed, image_feats.high_res, multimask)
    return prior[image_index.to(prior.device)]


def frame_priors(sam: LanguageSAM2, frames: SAM2Features, multimask: bool = True, batched: bool = True,
                 chunk: int | None = None) -> torch.Tensor:
    """The per-frame priors of a clip (frames: T rows (T, C, h, w)) -> (T, 1, 4h, 4w).

    ``batched=True`` runs the pre-passes as one decoder call (or calls of ``chunk`` frames, to bound
    memory); ``batched=False`` is one call per frame (the reference). Frames are independent: each row of
    the batched call equals that frame's own pre-pass (SAM-2's decoder has no cross-batch operation)."""
    t = frames.image_embed.shape[0]
    step = (chunk or t) if batched else 1
    out = [structural_prior(sam, frames.image_embed[i:i + step], [f[i:i + step] for f in frames.high_res],
                            multimask) for i in range(0, t, step)]
    return torch.cat(out)
