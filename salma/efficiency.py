"""Efficiency: paper Table 5 (parameters and compute at 1024x1024) and the latency claim of Sec. 4
("17.84 vs 17.97 FPS, about 0.7%"), measured on the real architectures with random weights.

Parameter counts, compute and latency *ratios* do not depend on the weights, so the kit checks the paper's
efficiency claims on the real modules (InternViT-300M, the MLP projector, Qwen2.5-0.5B, SAM-2.1 Hiera-L,
SAM-2's prompt encoder + mask decoder, MBA) built from configs (REFERENCE.md sections 6-7).

Compute. ``torch.utils.flop_counter`` counts matrix products, convolutions and attention (it leaves out
element-wise work: norms, activations, softmax, interpolation) and reports FLOPs = 2 x multiply-accumulates.
We report GMAC, GFLOP (= 2 x GMAC) and GMAC without the attention products (QK^T, AV: linear and conv
layers only); the paper's column ("GFLOPs") is compared with the GMAC columns (REFERENCE 7: its numbers are
multiply-accumulates). PyTorch's CPU flash-attention kernel is missing from the counter's registry, so we
register it with the counter's own SDPA formula (causal attention is counted as full, the counter's
convention). The large encoders are counted on fake tensors (shapes only, no arithmetic): same count.

Latency. The "full image forward" is Sa2VA's: InternVL (dynamic 448 tiles + the prompt, one forward, logits
for the last position only, as a generation prefill) + the SAM-2 image encoder + the mask decoder with the
language embedding. SALMA adds the pre-pass prior and MBA. Both run on the *same* model (the baseline skips
the two), interleaved in one process in alternating order, so drift and contention hit both alike.

Making the prior cheaper than the paper's design, and measuring each change:

1. the lean prior path (``salma.sam2_ext.structural_prior``) computes only what the gate reads, the
   low-resolution logits, instead of SAM-2's ``_forward_sam_heads`` (which also upsamples every mask to
   full resolution, computes the object pointer, and overwrites no-object masks);
2. the prior is computed once per image and reused by every expression on it (``shared_prior``);
3. the per-frame pre-passes of a clip run as one batched decoder call (``frame_priors``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from salma.config import get_preset
from salma.sam2_ext import LanguageSAM2, SAM2Features, structural_prior

# Paper Table 5 (1024x1024). The paper prints "GFLOPs"; its numbers are multiply-accumulates (REFERENCE 7).
PAPER_TABLE5: dict[str, dict[str, Any]] = {
    "internvit": {"params_m": 304.0, "g": 1614.1},
    "hiera": {"params_m": 212.7, "g": 810.5},
    "projector": {"params_m": 4.5, "g": 1.2},
    "salma_extras": {"params_m": 12.0, "g": "< 1.0"},
}
# Paper Sec. 4: DAVIS val, batch 1, RTX 5090.
PAPER_FPS = {"sa2va": 17.97, "salma": 17.84}
PAPER_OVERHEAD = 1.0 - PAPER_FPS["salma"] / PAPER_FPS["sa2va"]  # 0.72% fewer frames per second
PAPER_TARGET_PCT = 0.7

BENCH_EXPRESSIONS = (
    "the small red circle to the left of the blue square",
    "the largest green triangle",
    "the dark blue diamond with a larger one to its left",
)
CONVENTION = ("torch.utils.flop_counter: matrix products, convolutions and attention, element-wise work left "
              "out; GFLOP = 2 x GMAC; 'GMAC w/o attention' leaves out the attention kernels (QK^T and AV), i.e. "
              "linear + conv layers; the paper's 'GFLOPs' column is compared with GMAC")
ATTENTION_OP_WORDS = ("scaled_dot_product", "flash_attention", "efficient_attention", "flex_attention")

__all__ = [
    "CONVENTION",
    "PAPER_FPS",
    "PAPER_TABLE5",
    "BenchInputs",
    "Count",
    "StageTimer",
    "add_arguments",
    "autocast_for",
    "bench_image",
    "build_bench_model",
    "check_prior_paths",
    "compute_table",
    "conclusions",
    "count_flops",
    "count_params",
    "display_table",
    "frame_priors",
    "frozen",
    "image_forward",
    "latency_table",
    "machine_info",
    "measure_latency",
    "micro_cases",
    "mllm_inference",
    "overhead_table",
    "plot_efficiency",
    "prepare_benchmark",
    "results_json",
    "run",
    "run_benchmark",
    "shared_prior",
    "spread",
    "summarize",
    "upstream_prior",
]


# ============================================================================================ counting
def sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one fused attention call, 2*b*h*s_q*s_k*(d_q + d_v) (the counter's own formula), with h the
    *query* heads: with grouped-query attention (Qwen2's LLM) the key/value heads are fewer, which the
    counter's formula for the CUDA kernels rejects, while each query head still does the full work."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    extra: dict[Any, Callable[..., int]] = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_fused_attention_overrideable",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention"):
        op = getattr(aten, name, None)
        if op is not None:
            extra[op] = sdpa_flops
    return extra


@dataclass
class Count:
    """A compute count. flops: as ``torch.utils.flop_counter`` reports them (2 x MAC); by_op: op -> flops;
    fake: counted on fake tensors (shapes only)."""

    flops: int
    by_op: dict[str, int] = field(default_factory=dict)
    fake: bool = False

    @property
    def attention_flops(self) -> int:
        """FLOPs of the fused attention kernels (SDPA / flash / efficient / flex)."""
        return sum(v for k, v in self.by_op.items() if any(w in k for w in ATTENTION_OP_WORDS))

    @property
    def gmac_without_attention(self) -> float:
        """GMAC of everything but the fused attention kernels (linear and conv layers, plain matmuls)."""
        return (self.flops - self.attention_flops) / 2e9

    def __add__(self, other: Count) -> Count:
        ops = dict(self.by_op)
        for k, v in other.by_op.items():
            ops[k] = ops.get(k, 0) + v
        return Count(self.flops + other.flops, ops, self.fake and other.fake)

    @property
    def macs(self) -> float:
        return self.flops / 2

    @property
    def gmac(self) -> float:
        return self.flops / 2e9

    @property
    def gflop(self) -> float:
        return self.flops / 1e9


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` do not require grad inside the block (restored after)."""
    params = {id(p): p for m in modules for p in m.parameters()}
    saved = {k: p.requires_grad for k, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(saved[k])


def count_flops(fn: Callable[[], Any], fake: bool = False, modules: Sequence[torch.nn.Module] = ()) -> Count:
    """Count the FLOPs of ``fn()`` with ``torch.utils.flop_counter.FlopCounterMode`` (plus the CPU SDPA
    kernel). ``fake=True`` runs ``fn`` under a ``FakeTensorMode`` that turns real parameters and inputs
    into fake tensors: same count, no arithmetic (for the large encoders; fails on data-dependent code).
    ``modules``: the modules ``fn`` runs; their parameters are frozen during the count, because a view of
    a trainable parameter (SAM-2's prompt encoder returns some) trips the counter's module tracker."""
    from torch.utils.flop_counter import FlopCounterMode

    ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        ctx = FakeTensorMode(allow_non_fake_inputs=True)
    with frozen(*modules), ctx, torch.no_grad(), \
            FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return Count(int(counter.get_total_flops()), by_op, fake)


def count_params(*modules: torch.nn.Module) -> int:
    """Total number of parameters of the given modules (shared parameters counted once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


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


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (as Sa2VA and REFERENCE 7's GPU runs); fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_bench_model(preset: str, device: torch.device, seed: int = 0):
    """The preset's SalmaModel (MBA on) with random weights, in eval mode on ``device``.

    LoRA is left out: at inference the adapters are merged into the LLM (as in the released Sa2VA
    checkpoints), so the forward costs what the base LLM costs. Raises ValueError for an unknown preset.
    """
    from salma.model import SalmaModel

    cfg = get_preset(preset)
    cfg = replace(cfg, mllm=replace(cfg.mllm, lora=False), mba=replace(cfg.mba, enabled=True))
    torch.manual_seed(seed)
    model = SalmaModel(cfg)
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
    from salma.env_report import resolve_device

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


class StageTimer:
    """Wall time per named stage: CUDA events on a GPU (no synchronisation inside the forward), else
    ``time.perf_counter``. ``seconds()`` synchronises once and returns stage -> seconds (summed)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, Any, Any]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self.marks.append((name, start, end))

    def seconds(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.marks:
            dt = start.elapsed_time(end) / 1e3 if self.cuda else end - start
            out[name] = out.get(name, 0.0) + dt
        return out


def _null_stage(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


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
                prior = structural_prior(model.sam, feats.image_embed, feats.high_res,
                                         model.cfg.sam2.multimask_prior)
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


# ============================================================================================ Table 5
def _row(key: str, component: str, params: int | None, count: Count | None, paper: dict[str, Any] | None,
         note: str, in_paper: bool = True, counted_on: str | None = None) -> dict[str, Any]:
    if counted_on is None and count is not None:
        counted_on = "fake tensors" if count.fake else "real tensors"
    return {
        "key": key,
        "component": component,
        "params_M": None if params is None else float(f"{params / 1e6:.6g}"),
        "GMAC": None if count is None else float(f"{count.gmac:.6g}"),
        "GFLOP": None if count is None else float(f"{count.gflop:.6g}"),
        "GMAC_wo_attention": None if count is None else float(f"{count.gmac_without_attention:.6g}"),
        "paper_params_M": None if paper is None else paper["params_m"],
        "paper_G": None if paper is None else paper["g"],
        "in_paper": in_paper,
        "counted_on": counted_on,
        "note": note,
    }


def compute_table(model, inputs: BenchInputs):
    """Paper Table 5 on the real modules: params (M), GMAC and GFLOP (= 2 x GMAC) per component, beside the
    paper's column ("GFLOPs" as printed, which matches GMAC). Rows (``key``): internvit (all tiles of the
    image), hiera (image encoder), projector, prepass (SALMA's pre-pass), mba, extras (pre-pass + MBA, the
    paper's "gating + decoder" row), then rows the paper does not list: llm (prefill), decoder (the language
    pass), sa2va_total, extras_pct. Returns a pandas DataFrame."""
    # Under the device's autocast, as the forward that made ``inputs`` ran (bf16 tensors on CUDA); the
    # counts depend on shapes only.
    with frozen(model), autocast_for(inputs.device):
        return _compute_table(model, inputs)


def _compute_table(model, inputs: BenchInputs):
    import pandas as pd

    mllm, sam, batch, dev = model.mllm, model.sam, inputs.batch, inputs.device
    vl = mllm.model
    tiles = batch.pixel_values.to(mllm.dtype)
    n_tiles, seq = tiles.shape[0], batch.input_ids.shape[1]
    vit = count_flops(lambda: vl.vision_tower(pixel_values=tiles), fake=True)
    tokens = model.cfg.mllm.image_tokens
    proj_in = torch.zeros(n_tiles, tokens, vl.multi_modal_projector.layer_norm.normalized_shape[0], device=dev)
    proj = count_flops(lambda: vl.multi_modal_projector(proj_in), fake=True)
    hidden = mllm.config.text_config.hidden_size
    embeds = torch.zeros(1, seq, hidden, device=dev)

    def llm() -> None:
        h = vl.language_model(inputs_embeds=embeds).last_hidden_state
        mllm.lm_head(h[:, -1:])

    llm_count = count_flops(llm, fake=True)
    image = batch.sam_images
    hiera = count_flops(lambda: sam.model.image_encoder(image), fake=True)
    f = inputs.feats
    mm = model.cfg.sam2.multimask_prior
    prior = count_flops(lambda: structural_prior(sam, f.image_embed, f.high_res, mm))
    prior_t = structural_prior(sam, f.image_embed, f.high_res, mm)
    mba = count_flops(lambda: model.mba(f.image_embed, inputs.text, prior_t, text_mask=inputs.text_mask))
    dec = count_flops(lambda: sam.decode(f.image_embed, f.high_res, language=inputs.language[:, None]))
    heads = (sam.model.sam_prompt_encoder, sam.model.sam_mask_decoder)
    extras = prior + mba
    base_total = vit + proj + llm_count + hiera + dec
    p = PAPER_TABLE5
    paper = model.cfg.name == "paper"
    px = model.cfg.mllm.vision_image_size
    tile_word = "tile" if n_tiles == 1 else "tiles"
    rows = [
        _row("internvit", f"InternViT{'-300M' if paper else ''} vision encoder ({n_tiles} {tile_word} of {px}px)",
             count_params(vl.vision_tower), vit, p["internvit"], f"{vit.gmac / n_tiles:.3g} GMAC per tile"),
        _row("hiera", f"SAM-2{'.1 Hiera-L' if paper else ' Hiera'} image encoder (trunk + FPN neck)",
             count_params(sam.model.image_encoder), hiera, p["hiera"],
             f"{model.cfg.sam2.image_size}x{model.cfg.sam2.image_size} input"),
        _row("projector", f"projector (mlp1; {n_tiles} {tile_word} x {tokens} tokens)",
             count_params(vl.multi_modal_projector), proj, p["projector"],
             f"{proj.gmac / n_tiles:.3g} GMAC per tile"),
        _row("prepass", "SALMA pre-pass: prompt encoder + mask decoder, dummy point (lean path)",
             count_params(*heads), prior, None, "the decoder's own weights: 0 new parameters"),
        _row("mba", "SALMA MBA: router + cross-attention + gate", count_params(model.mba), mba, None,
             f"{inputs.text.shape[1]} text tokens, top-{model.cfg.mba.top_k}"),
        _row("extras", "SALMA pre-pass + MBA (paper: 'gating + decoder')", count_params(model.mba, *heads), extras,
             p["salma_extras"], f"new parameters: MBA only ({count_params(model.mba) / 1e6:.2f} M)",
             counted_on="real tensors"),
        _row("llm", f"LLM prefill ({seq} tokens, logits at the last position)",
             count_params(vl.language_model, mllm.lm_head), llm_count, None,
             "not in the paper's table; causal attention counted as full", in_paper=False),
        _row("decoder", "SAM-2 mask decoder, language pass (Sa2VA's)", count_params(*heads), dec, None,
             "not in the paper's table", in_paper=False),
        _row("sa2va_total", "Sa2VA forward: InternViT + projector + LLM + image encoder + decoder",
             count_params(mllm, sam, model.text_hidden_fcs), base_total, None,
             "compute: sum of the rows; params: the whole Sa2VA model (SAM-2's memory modules included)",
             in_paper=False,
             counted_on="sum"),
        _row("extras_pct", "SALMA pre-pass + MBA, % of the Sa2VA forward's compute", None, None, None,
             f"{100 * extras.flops / base_total.flops:.3f}%", in_paper=False),
    ]
    return pd.DataFrame(rows)


def _fmt(value: Any, params: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    v = float(value)
    if params:
        return f"{v:.2f}" if v >= 1 else f"{v:.4g}"
    return f"{v:.1f}" if v >= 100 else (f"{v:.3f}" if v >= 1 else f"{v:.4g}")


def display_table(table):
    """Table 5 for people (the Markdown/CSV files): numbers as text with sensible digits, the paper's
    numbers exactly as printed, empty cells where there is no value."""
    out = table.drop(columns=["in_paper"]).copy()
    for col in ("params_M", "paper_params_M"):
        out[col] = [_fmt(v, params=col == "params_M") if col == "params_M" else _fmt_paper(v) for v in out[col]]
    for col in ("GMAC", "GFLOP", "GMAC_wo_attention"):
        out[col] = [_fmt(v) for v in out[col]]
    out["paper_G"] = [_fmt_paper(v) for v in out["paper_G"]]
    out["counted_on"] = [_fmt(v) for v in out["counted_on"]]
    return out.rename(columns={"GMAC_wo_attention": "GMAC w/o attention", "paper_params_M": "paper params_M",
                               "paper_G": "paper G (printed 'GFLOPs')"})


def _fmt_paper(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def check_prior_paths(model, feats: SAM2Features) -> dict[str, Any]:
    """Does the lean prior equal upstream's ``_forward_sam_heads`` logits? Compared (1) before upstream's
    no-object override, everywhere, and (2) with the override, where the object score is > 0.
    Returns max |difference| for both, the number of rows with an object, and the row count."""
    sam, mm = model.sam, model.cfg.sam2.multimask_prior
    with autocast_for(feats.image_embed.device):
        lean = structural_prior(sam, feats.image_embed, feats.high_res, mm).float()
        raw, _ = upstream_prior(sam, feats.image_embed, feats.high_res, mm, override=False)
        up, score = upstream_prior(sam, feats.image_embed, feats.high_res, mm)
    present = (score.flatten() > 0)
    diff_present = (lean - up.float())[present].abs().max().item() if bool(present.any()) else None
    return {"max_abs_diff_before_override": (lean - raw.float()).abs().max().item(),
            "max_abs_diff_where_object": diff_present, "rows_with_object": int(present.sum()),
            "rows": int(present.numel()), "max_abs_logit": lean.abs().max().item()}


# ============================================================================================ latency
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def micro_cases(model, inputs: BenchInputs) -> dict[str, Callable[[], Any]]:
    """The SALMA-only work, one callable per measured case (all under no_grad and the device's autocast).

    prior_lean / prior_upstream: one image's prior via the lean path / ``_forward_sam_heads``;
    mba: MBA for one expression; expr_prior_each / expr_prior_once: prior + MBA for E expressions on one
    image, the prior per expression (E decoder rows) or once per image; frames_loop / frames_batched: the
    priors of a T-frame clip, one decoder call per frame or one batched call (MBA per frame is ``mba``)."""
    sam, mba, mm, f = model.sam, model.mba, model.cfg.sam2.multimask_prior, inputs.feats
    e = inputs.texts3.shape[0]
    index = torch.zeros(e, dtype=torch.long, device=inputs.device)
    rows = f.select(index)

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad(), autocast_for(inputs.device):
                return fn()
        return run

    with torch.no_grad(), autocast_for(inputs.device):
        prior_one = structural_prior(sam, f.image_embed, f.high_res, mm)
    return {
        "prior_lean": wrap(lambda: structural_prior(sam, f.image_embed, f.high_res, mm)),
        "prior_upstream": wrap(lambda: upstream_prior(sam, f.image_embed, f.high_res, mm)),
        "mba": wrap(lambda: mba(f.image_embed, inputs.text, prior_one, text_mask=inputs.text_mask)),
        "expr_prior_each": wrap(lambda: mba(rows.image_embed, inputs.texts3,
                                            structural_prior(sam, rows.image_embed, rows.high_res, mm),
                                            text_mask=inputs.masks3)),
        "expr_prior_once": wrap(lambda: mba(rows.image_embed, inputs.texts3, shared_prior(sam, f, index, mm),
                                            text_mask=inputs.masks3)),
        "frames_loop": wrap(lambda: frame_priors(sam, inputs.frames, mm, batched=False)),
        "frames_batched": wrap(lambda: frame_priors(sam, inputs.frames, mm, batched=True)),
    }


def machine_info(device: torch.device) -> dict[str, Any]:
    """The device in words, threads, CPU count and the 1/5/15-minute load averages now."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"device": str(device), "device_name": name, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in load],
            "torch": torch.__version__, "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (not Linux): fall back to what platform knows
        return __import__("platform").processor() or "cpu"
    import platform

    return platform.processor() or "cpu"


def measure_latency(model, inputs: BenchInputs, reps: int = 4, micro_reps: int = 3, warmup: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Interleaved timing in one process.

    Each repetition runs the Sa2VA forward and the SALMA forward (alternating which goes first), with
    per-stage times (encoder, mllm, prior, mba, decoder), then ``micro_reps`` rounds of every case of
    ``micro_cases`` (alternating order). ``warmup`` untimed SALMA forwards come first (default 0:
    ``prepare_benchmark``'s forward already warmed up), then one untimed round of the cases. Returns raw
    records: forward [{rep, variant, total, <stage>...}], micro [{rep, case, seconds}], and the machine
    (device, threads, load averages) before and after."""
    from tqdm.auto import tqdm

    if reps < 1 or micro_reps < 1:
        raise ValueError(f"reps={reps} and micro_reps={micro_reps} must both be >= 1")
    dev, batch = inputs.device, inputs.batch
    cases = micro_cases(model, inputs)
    before = machine_info(dev)
    t_start = time.perf_counter()
    for _ in range(warmup):
        image_forward(model, batch, salma=True)
    for fn in cases.values():  # first calls pay one-off allocation costs
        fn()
    forward, micro = [], []
    for r in tqdm(range(reps), desc="interleaved repetitions", disable=not progress, file=sys.stdout):
        for variant in (("baseline", "salma") if r % 2 == 0 else ("salma", "baseline")):
            timer = StageTimer(dev)
            total = _time(lambda v=variant, t=timer: image_forward(model, batch, v == "salma", t), dev)
            forward.append({"rep": r, "variant": variant, "total": total, **timer.seconds()})
        names = list(cases) if r % 2 == 0 else list(reversed(cases))
        for _ in range(micro_reps):
            for name in names:
                micro.append({"rep": r, "case": name, "seconds": _time(cases[name], dev)})
    return {"forward": forward, "micro": micro, "machine_before": before, "machine_after": machine_info(dev),
            "seconds": time.perf_counter() - t_start, "reps": reps, "micro_reps": micro_reps, "warmup": warmup,
            "n_expressions": int(inputs.texts3.shape[0]), "n_frames": int(inputs.frames.image_embed.shape[0])}


def spread(values: Sequence[float]) -> dict[str, float]:
    """median, q25, q75, min, max and n of a sample."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians and spreads from ``measure_latency``'s records.

    (a) SALMA-only components (pre-pass + MBA, timed inside each SALMA forward) over the baseline forward:
        per repetition extras_r / baseline_r, and median(extras) / median(baseline);
    (b) end-to-end SALMA / baseline, paired per repetition, and the ratio of medians;
    the lean vs upstream prior ratio; and the per-image, per-expression and per-frame overheads before and
    after each change (``overheads``), with their denominators."""
    fw = raw["forward"]
    base = {r["rep"]: r for r in fw if r["variant"] == "baseline"}
    sal = {r["rep"]: r for r in fw if r["variant"] == "salma"}
    reps = sorted(set(base) & set(sal))
    b_tot = [base[r]["total"] for r in reps]
    s_tot = [sal[r]["total"] for r in reps]
    extras = [sal[r]["prior"] + sal[r]["mba"] for r in reps]
    stages = {f"baseline_{k}": spread([base[r][k] for r in reps]) for k in ("encoder", "mllm", "decoder")}
    stages.update({f"salma_{k}": spread([sal[r][k] for r in reps]) for k in ("encoder", "mllm", "prior", "mba",
                                                                           "decoder")})
    micro: dict[str, list[float]] = {}
    for rec in raw["micro"]:
        micro.setdefault(rec["case"], []).append(rec["seconds"])
    m = {k: spread(v) for k, v in micro.items()}
    med = {k: v["median"] for k, v in m.items()}
    b_med = statistics.median(b_tot)
    out: dict[str, Any] = {
        "baseline_total": spread(b_tot), "salma_total": spread(s_tot), "extras_in_forward": spread(extras),
        "stages": stages, "micro": m,
        "a_paired": spread([e / b for e, b in zip(extras, b_tot)]),
        "a_of_medians": statistics.median(extras) / b_med,
        "b_paired": spread([s / b for s, b in zip(s_tot, b_tot)]),
        "b_of_medians": statistics.median(s_tot) / b_med,
        "fps": {"baseline": 1.0 / b_med, "salma": 1.0 / statistics.median(s_tot)},
        "prior_upstream_over_lean": med["prior_upstream"] / med["prior_lean"],
        "prior_upstream_over_lean_paired": spread([u / l for u, l in zip(micro["prior_upstream"],
                                                                          micro["prior_lean"])]),
    }
    enc, mllm, dec = (stages[f"baseline_{k}"]["median"] for k in ("encoder", "mllm", "decoder"))
    e, t = raw["n_expressions"], raw["n_frames"]
    base_e = enc + e * (mllm + dec)  # Sa2VA on an image with E expressions: one encoder pass, E MLLM + decoder
    base_frame = enc + dec  # per video frame: the MLLM runs once per clip (left out: conservative)

    def item(case: str, short: str, change: str, seconds: dict[str, float], per: int, denom: float,
             denom_what: str) -> dict:
        return {"case": case, "short": short, "change": change, "extras_ms": 1e3 * seconds["median"] / per,
                "extras_q25_ms": 1e3 * seconds["q25"] / per, "extras_q75_ms": 1e3 * seconds["q75"] / per,
                "baseline_ms": 1e3 * denom / per, "baseline": denom_what,
                "overhead_pct": 100 * seconds["median"] / denom, "paper_pct": PAPER_TARGET_PCT}

    def plus(a: str, b: str, times_b: int = 1) -> dict[str, float]:
        return {q: m[a][q] + times_b * m[b][q] for q in ("median", "q25", "q75")}

    image_what = "Sa2VA image forward, 1 expression"
    frame_what = "SAM-2 encoder + decoder per frame (MLLM once per clip and memory attention left out)"
    expr_what = f"Sa2VA, {e} expressions on one image (1 encoder, {e} x (MLLM + decoder))"
    out["overheads"] = [
        item("per image: prior via _forward_sam_heads + MBA", "image: _forward_sam_heads", "1 before",
             plus("prior_upstream", "mba"), 1, b_med, image_what),
        item("per image: lean prior + MBA", "image: lean prior", "1 after", plus("prior_lean", "mba"), 1, b_med,
             image_what),
        item("per image: lean prior + MBA, inside the SALMA forward (a)", "image: lean, in forward (a)", "1 after",
             out["extras_in_forward"], 1, b_med, image_what),
        item(f"per expression ({e} on one image): prior per expression + MBA", f"{e} expr.: prior each",
             "2 before", m["expr_prior_each"], e, base_e, expr_what),
        item(f"per expression ({e} on one image): prior once per image + MBA", f"{e} expr.: prior once",
             "2 after", m["expr_prior_once"], e, base_e, expr_what),
        item(f"per frame ({t}-frame clip): one pre-pass call per frame + MBA", f"{t} frames: call per frame",
             "3 before", plus("frames_loop", "mba", t), t, t * base_frame, frame_what),
        item(f"per frame ({t}-frame clip): one batched pre-pass call + MBA", f"{t} frames: one batched call",
             "3 after", plus("frames_batched", "mba", t), t, t * base_frame, frame_what),
    ]
    out["machine_before"], out["machine_after"] = raw["machine_before"], raw["machine_after"]
    out["seconds"], out["reps"], out["micro_reps"] = raw["seconds"], raw["reps"], raw["micro_reps"]
    return out


def _fmt_spread(s: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
    return (f"{s['median'] * scale:.{digits}f} (IQR {s['q25'] * scale:.{digits}f}-{s['q75'] * scale:.{digits}f}, "
            f"min-max {s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}, n={s['n']})")


def latency_table(summary: dict[str, Any]):
    """The latency result as a two-column DataFrame (quantity, value): forward medians with spread, stage
    medians, FPS, (a), (b), the lean-vs-upstream prior ratio, beside the paper's FPS and 0.7%."""
    import pandas as pd

    s, st = summary, summary["stages"]
    mb, ma = s["machine_before"], s["machine_after"]
    rows = [
        ("device", f"{mb['device_name']} ({mb['device']}, {mb['torch_threads']} threads)"),
        ("load average (1, 5, 15 min) before / after", f"{mb['loadavg']} / {ma['loadavg']}"),
        ("Sa2VA forward, ms", _fmt_spread(s["baseline_total"], 1e3)),
        ("SALMA forward, ms", _fmt_spread(s["salma_total"], 1e3)),
        ("Sa2VA stages (encoder / MLLM / decoder), median ms",
         " / ".join(f"{st[f'baseline_{k}']['median'] * 1e3:.1f}" for k in ("encoder", "mllm", "decoder"))),
        ("SALMA extras inside the forward (pre-pass / MBA), median ms",
         " / ".join(f"{st[f'salma_{k}']['median'] * 1e3:.2f}" for k in ("prior", "mba"))),
        ("FPS Sa2VA / SALMA (paper: 17.97 / 17.84 on an RTX 5090)",
         f"{s['fps']['baseline']:.4g} / {s['fps']['salma']:.4g}"),
        ("(a) extras / Sa2VA forward, % per repetition (paper: 0.7%)", _fmt_spread(s["a_paired"], 100, 3)),
        ("(a) median extras / median Sa2VA forward, %", f"{100 * s['a_of_medians']:.3f}"),
        ("(b) SALMA / Sa2VA forward, paired per repetition", _fmt_spread(s["b_paired"], 1, 4)),
        ("(b) median SALMA / median Sa2VA", f"{s['b_of_medians']:.4f}"),
        ("prior: _forward_sam_heads / lean path, time ratio (median)", f"{s['prior_upstream_over_lean']:.3f}"),
        ("prior ratio, paired per round", _fmt_spread(s["prior_upstream_over_lean_paired"], 1, 3)),
        ("measurement wall time, s", f"{s['seconds']:.0f}"),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"])


def overhead_table(summary: dict[str, Any]):
    """Per-image, per-expression and per-frame overhead of SALMA's extras before and after each change,
    as a DataFrame (extras ms median + IQR, the baseline denominator, overhead %, the paper's 0.7%)."""
    import pandas as pd

    df = pd.DataFrame(summary["overheads"])
    for col in ("extras_ms", "extras_q25_ms", "extras_q75_ms", "baseline_ms"):
        df[col] = df[col].round(2)
    df["overhead_pct"] = df["overhead_pct"].round(4)
    return df


def _paper_g(value: Any) -> float:
    # The paper prints "< 1.0" for the pre-pass: drawn at its bound.
    if isinstance(value, str):
        return float(value.strip("< "))
    return math.nan if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


SHORT_LABELS = {"internvit": "InternViT", "hiera": "Hiera image encoder", "projector": "projector",
                "prepass": "pre-pass", "mba": "MBA", "extras": "pre-pass + MBA"}


def plot_efficiency(table, summary: dict[str, Any] | None = None):
    """Figure: (left) compute per component, ours (GMAC, and without attention) beside the paper's column,
    log scale; (middle) forward times of Sa2VA and SALMA (median, min-max); (right) overhead % of SALMA's
    extras before/after each change with the paper's 0.7%. Without ``summary`` only the left panel.
    Returns the matplotlib Figure (not closed, so it shows inline)."""
    import matplotlib.pyplot as plt

    n = 1 if summary is None else 3
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1.2, 0.6, 1.2][:n]})
    ax = axes[0, 0]
    rows = table[table["key"].isin(list(SHORT_LABELS))]
    y = np.arange(len(rows))
    ax.barh(y - 0.27, rows["GMAC"], height=0.27, label="ours, GMAC", color="tab:blue")
    ax.barh(y, rows["GMAC_wo_attention"], height=0.27, label="ours, GMAC w/o attention", color="tab:cyan")
    ax.barh(y + 0.27, [_paper_g(v) for v in rows["paper_G"]], height=0.27,
            label="paper ('GFLOPs'; '< 1.0' drawn at 1)", color="tab:gray")
    ax.set_yticks(y, [SHORT_LABELS[k] for k in rows["key"]], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("G multiply-accumulates (log)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_title("Table 5: compute per component", fontsize=10)
    if summary is not None:
        ax = axes[0, 1]
        for i, key in enumerate(("baseline_total", "salma_total")):
            st = summary[key]
            ax.errorbar([i], [st["median"]], yerr=[[st["median"] - st["min"]], [st["max"] - st["median"]]],
                        fmt="o", capsize=6, color=("tab:gray", "tab:green")[i])
        ax.set_xticks([0, 1], ["Sa2VA", "SALMA"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylabel("image forward, s (median, min-max)")
        ax.set_title(f"(b) ratio {summary['b_of_medians']:.4f}\n(a) extras {100 * summary['a_of_medians']:.3f}%",
                     fontsize=10)
        ax = axes[0, 2]
        ov = summary["overheads"]
        ax.barh(np.arange(len(ov)), [o["overhead_pct"] for o in ov],
                color=["tab:orange" if "before" in o["change"] else "tab:green" for o in ov])
        ax.axvline(PAPER_TARGET_PCT, color="k", ls="--", lw=1, label="paper 0.7%")
        ax.set_yticks(np.arange(len(ov)), [o["short"] for o in ov], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("% of the matching Sa2VA work")
        ax.legend(fontsize=7)
        ax.set_title("SALMA's extras: before (orange) / after (green)", fontsize=10)
    fig.tight_layout()
    return fig


# ============================================================================================ results
def _jsonable_table(table) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def results_json(table, summary: dict[str, Any] | None, check: dict[str, Any] | None,
                 inputs: BenchInputs, elapsed_s: float | None = None) -> dict[str, Any]:
    """Everything the notebook's tests and the closing note read: the compute table, the acceptance
    checks (params within 1% of the paper for InternViT and Hiera; pre-pass under 1 G in either
    convention), the latency summary and the prior-path check."""
    rows = {r["key"]: r for r in _jsonable_table(table)}
    within = {}
    for key in ("internvit", "hiera"):
        r = rows[key]
        within[key] = {"params_M": r["params_M"], "paper_params_M": r["paper_params_M"],
                       "rel_diff": r["params_M"] / r["paper_params_M"] - 1,
                       "within_1pct": abs(r["params_M"] / r["paper_params_M"] - 1) <= 0.01}
    pre, both = rows["prepass"], rows["extras"]
    return {
        "preset": inputs.preset, "image_size": inputs.image_size, "convention": CONVENTION,
        "table": list(rows.values()), "params_check": within,
        "prepass": {"GMAC": pre["GMAC"], "GFLOP": pre["GFLOP"], "GMAC_wo_attention": pre["GMAC_wo_attention"],
                    "under_1G_as_GMAC": pre["GMAC"] < 1.0, "under_1G_as_GFLOP": pre["GFLOP"] < 1.0,
                    "under_1G_as_GMAC_wo_attention": pre["GMAC_wo_attention"] < 1.0,
                    "with_mba_GMAC": both["GMAC"], "with_mba_GFLOP": both["GFLOP"]},
        "extras_pct_of_sa2va_compute": 100 * both["GMAC"] / rows["sa2va_total"]["GMAC"],
        "latency": summary, "prior_check": check, "build_s": inputs.build_s,
        "first_forward_s": inputs.first_forward_s, "elapsed_s": elapsed_s,
        "paper": {"table5": PAPER_TABLE5, "fps": PAPER_FPS, "overhead_pct": 100 * PAPER_OVERHEAD},
    }


def run_benchmark(preset: str = "paper", device: str = "auto", reps: int = 4, micro_reps: int = 3,
                  warmup: int = 0, n_expressions: int = 3, n_frames: int = 8, seed: int = 0,
                  table_only: bool = False, progress: bool = True) -> dict[str, Any]:
    """The whole benchmark: build, Table 5, the prior-path check and (unless ``table_only``) the
    interleaved latency. Returns {"table", "latency", "overheads" (DataFrames or None), "summary",
    "check", "results" (JSON-able), "model", "inputs"}."""
    t0 = time.perf_counter()
    model, inputs = prepare_benchmark(preset, device, seed, n_expressions, n_frames)
    table = compute_table(model, inputs)
    check = check_prior_paths(model, inputs.feats)
    summary = None
    if not table_only:
        summary = summarize(measure_latency(model, inputs, reps, micro_reps, warmup, progress))
    results = results_json(table, summary, check, inputs, time.perf_counter() - t0)
    return {"table": table, "summary": summary, "check": check, "results": results, "model": model,
            "inputs": inputs, "latency": None if summary is None else latency_table(summary),
            "overheads": None if summary is None else overhead_table(summary)}


def conclusions(results: dict[str, Any]) -> list[str]:
    """The closing statements, as sentences with the measured numbers (printed by the CLI and notebook)."""
    pc, pre = results["params_check"], results["prepass"]
    lines = [
        "params: " + "; ".join(f"{k} {v['params_M']:.2f} M vs paper {v['paper_params_M']} M "
                               f"({100 * v['rel_diff']:+.2f}%, within 1%: {v['within_1pct']})" for k, v in pc.items()),
        (f"pre-pass: {pre['GMAC']:.3f} GMAC = {pre['GFLOP']:.3f} GFLOP ({pre['GMAC_wo_attention']:.3f} GMAC "
         f"without attention) -> under 1 G as GMAC: {pre['under_1G_as_GMAC']}, as GFLOP: "
         f"{pre['under_1G_as_GFLOP']}, as GMAC without attention: {pre['under_1G_as_GMAC_wo_attention']} "
         f"(paper: '< 1.0 G'); with MBA {pre['with_mba_GMAC']:.3f} GMAC = "
         f"{results['extras_pct_of_sa2va_compute']:.3f}% of the Sa2VA forward's compute"),
    ]
    ck = results["prior_check"]
    if ck:
        lines.append(f"lean prior vs _forward_sam_heads: max |diff| {ck['max_abs_diff_before_override']:.2e} "
                     f"before upstream's no-object override; {ck['rows_with_object']}/{ck['rows']} rows with an "
                     f"object score > 0")
    s = results["latency"]
    if s:
        a, b = s["a_paired"], s["b_paired"]
        lines += [
            (f"(a) pre-pass + MBA / Sa2VA forward: {100 * a['median']:.3f}% median per repetition "
             f"(min-max {100 * a['min']:.3f}-{100 * a['max']:.3f}%, n={a['n']}); paper 0.7%"),
            (f"(b) SALMA / Sa2VA end to end: {b['median']:.4f} median paired ratio "
             f"(min-max {b['min']:.4f}-{b['max']:.4f}); ratio of medians {s['b_of_medians']:.4f}"),
            f"lean prior is {s['prior_upstream_over_lean']:.2f}x faster than _forward_sam_heads (median times)",
            (f"machine: {s['machine_before']['device_name']}, {s['machine_before']['torch_threads']} threads, "
             f"load {s['machine_before']['loadavg']} -> {s['machine_after']['loadavg']}"),
        ]
        lines += [f"[{o['change']}] {o['case']}: {o['extras_ms']:.2f} ms = {o['overhead_pct']:.3f}%"
                  for o in s["overheads"]]
    return lines


# ============================================================================================ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", help="tiny, small or paper (default: paper, 1024x1024)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--reps", type=int, default=4, help="interleaved Sa2VA/SALMA forward pairs (default 4)")
    parser.add_argument("--micro-reps", type=int, default=3,
                        help="rounds of the pre-pass/MBA cases per repetition (default 3)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="extra untimed SALMA forwards (default 0: the first forward, which builds the "
                             "inputs, is the warm-up)")
    parser.add_argument("--expressions", type=int, default=3, help="expressions on one image (default 3)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the clip for the per-frame prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-only", action="store_true", help="only Table 5 (params and compute)")
    parser.add_argument("--video", action="store_true",
                        help="video mode (salma.bench_video): ms per frame of Sa2VA and SALMA on a --frames clip "
                             "through predict_video's per_frame and released modes, MLLM once per clip "
                             "(figures/table5_video.*)")
    parser.add_argument("--compile", default="none", choices=("none", "default", "max-autotune"),
                        help="with --video: also time SALMA's extras (pre-pass + MBA) under torch.compile(mode=...); "
                             "'default' runs on a CPU with a C compiler, 'max-autotune' is meant for GPUs")
    parser.add_argument("--mllm-frames", type=int, default=5, help="with --video: frames the MLLM reads (default 5)")
    parser.add_argument("--long", type=int, default=0, metavar="N",
                        help="with --video: instead of the timing table, run one N-frame clip in released mode with "
                             "and without sam2's offload and report the peak memory (figures/video_long_clip.*)")


def run(args: argparse.Namespace) -> int:
    from salma.viz import figures_dir, save_json, save_table

    if getattr(args, "video", False):
        from salma.bench_video import run_long, run_video

        return run_long(args) if getattr(args, "long", 0) else run_video(args)
    if getattr(args, "long", 0):
        print("error: --long applies to the video benchmark only: add --video", file=sys.stderr)
        return 2
    if getattr(args, "compile", "none") != "none":
        print("error: --compile applies to the video benchmark only: add --video", file=sys.stderr)
        return 2
    try:
        out = run_benchmark(args.preset, args.device, args.reps, args.micro_reps, args.warmup, args.expressions,
                            args.frames, args.seed, table_only=args.table_only)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        print(f"Table 5 at preset {args.preset!r} ({CONVENTION})")
        shown = display_table(out["table"])
        print(shown.to_string(index=False))
        save_table(shown, "table5_efficiency")
        if out["latency"] is not None:
            print(out["latency"].to_string(index=False))
            print(out["overheads"].drop(columns=["paper_pct"]).to_string(index=False))
            save_table(out["latency"], "table5_latency")
            save_table(out["overheads"], "table5_overhead")
    save_json(out["results"], "table5_efficiency")
    print("\n".join(conclusions(out["results"])))
    print(f"wrote table5_efficiency.csv/.md/.json{'' if args.table_only else ', table5_latency, table5_overhead'} "
          f"to {figures_dir()}")
    return 0
