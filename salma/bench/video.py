"""Video mode of the benchmark (``python -m salma bench --video``, issues #6 and #9): per-frame wall time of
Sa2VA and SALMA on a T-frame clip through ``salma.video`` (modes ``per_frame`` and ``released``), and SALMA's
extras (the structural-prior pre-pass + MBA, as the video paths call them per frame) eager and under
``torch.compile``.

What is timed. One synthetic clip (``bench_image``-style frames at the preset's ``sam2.image_size``), one
expression, random weights (costs depend on shapes only). The MLLM reads the clip once (``clip_prompts``: the
first ``mllm_frames`` frames, one tile each) and is timed separately, once per repetition: it is the same work
for Sa2VA and SALMA and runs once per clip, so the per-frame times leave it out and the table also gives the
FPS with it amortised over the clip. Per mode, each repetition runs every variant once on the whole clip
(preprocessing, SAM-2 encoder, [pre-pass + MBA,] decoder, memory in ``released``, masks at the frame size),
rotating which variant goes first, so drift and contention hit all alike:

``baseline``        Sa2VA: the same model with MBA switched off (no pre-pass, no MBA);
``salma``           SALMA, eager;
``salma_compiled``  SALMA with the pre-pass and MBA under ``torch.compile(mode=...)`` (``--compile``).

The extras are also timed inside each SALMA run (CUDA events on a GPU, no synchronisation inside the clip;
``StageTimer``), so the table gives eager vs compiled extras per frame in each mode, and their share of a
frame. The first call of each variant in each mode is untimed (warm-up); for the compiled variant it is the
compilation, reported separately ("first call"; inductor's on-disk cache, ``TORCHINDUCTOR_CACHE_DIR``, makes it
much shorter in a later process with the same shapes).

``--compile``: ``none`` (default), ``default`` (what a 2-core CPU can test: inductor's C++ backend needs a C
compiler) or ``max-autotune`` (meant for GPUs: Triton kernels and CUDA graphs, where the launch overhead of
the eager pre-pass's many small kernels is what it removes; docs/method.md section 7: 9.3 -> 1.2 ms on an H100). Shapes
are static (``dynamic=False``): ``per_frame`` calls the extras on the whole clip (T rows), ``released`` on one
frame at a time, so each mode compiles its own graphs. The compiled outputs are compared with the eager ones
(``compile_check``). On CUDA everything runs under bf16 autocast, as the image bench. GPU command::

    python -m salma bench --video --preset paper --frames 8 --reps 5 --compile max-autotune
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from salma.bench.forward import BENCH_EXPRESSIONS, bench_image, build_bench_model
from salma.bench.tables import PAPER_FPS
from salma.bench.timing import PeakRSS, StageTimer, _fmt_spread, _time, autocast_for, machine_info, spread
from salma.device import resolve_device
from salma.sam2_ext import preprocess_images, structural_prior
from salma.video import VIDEO_MODES, clip_prompts, predict_per_frame, predict_released

if TYPE_CHECKING:
    pass  # typing.Self needs Python 3.11; the kit supports 3.10


COMPILE_MODES = ("none", "default", "max-autotune")


VARIANTS = ("baseline", "salma", "salma_compiled")




def check_compile_mode(mode: str) -> str:
    """``mode`` if it is one of ``COMPILE_MODES``, else ValueError naming the accepted values."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"--compile {mode!r}: accepted values are {', '.join(COMPILE_MODES)}")
    return mode


def bench_clip(size: int, n_frames: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 clip (T, size, size, 3) of ``bench_image`` frames."""
    if n_frames < 1:
        raise ValueError(f"--frames must be >= 1; got {n_frames}")
    return np.stack([bench_image(size, seed + t) for t in range(n_frames)])


@dataclass
class CompiledExtras:
    """SALMA's extras under ``torch.compile``: prior (the pre-pass, ``structural_prior``'s signature) and mba
    (an ``OptimizedModule`` over the model's MBA, same parameters). mode: the compile mode."""

    prior: Callable[..., torch.Tensor]
    mba: torch.nn.Module
    mode: str


def compiled_extras(model, mode: str) -> CompiledExtras:
    """``torch.compile(mode=mode, dynamic=False)`` of the pre-pass and of the model's MBA (lazy: compiles on
    the first call). Raises ValueError for an unknown mode or ``none``, RuntimeError without torch.compile."""
    check_compile_mode(mode)
    if mode == "none":
        raise ValueError("--compile none: nothing to compile")
    if not hasattr(torch, "compile"):
        raise RuntimeError(f"--compile {mode}: this torch ({torch.__version__}) has no torch.compile")
    prior = torch.compile(structural_prior, mode=mode, dynamic=False)

    def prior_step(*args, **kwargs):
        # max-autotune on CUDA replays CUDA graphs whose outputs are overwritten by the next replay: one
        # frame's pre-pass starts a new step (the previous frame's prior and MBA output are consumed by then).
        if torch.cuda.is_available() and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        return prior(*args, **kwargs)

    return CompiledExtras(prior=prior_step, mba=torch.compile(model.mba, mode=mode, dynamic=False), mode=mode)


class _Timed(torch.nn.Module):
    """A module that times every call of ``inner`` into ``timer`` under ``name`` (not a submodule: the
    model's state dict is unchanged while it is installed)."""

    def __init__(self, inner: Callable[..., Any], timer: StageTimer, name: str):
        super().__init__()
        object.__setattr__(self, "inner", inner)
        self.timer, self.name = timer, name

    def forward(self, *args, **kwargs):
        with self.timer.stage(self.name):
            return self.inner(*args, **kwargs)


def _timed_fn(fn: Callable[..., Any], timer: StageTimer, name: str) -> Callable[..., Any]:
    def call(*args, **kwargs):
        with timer.stage(name):
            return fn(*args, **kwargs)
    return call


@contextlib.contextmanager
def variant(model, name: str, compiled: CompiledExtras | None = None, timer: StageTimer | None = None) -> Iterator[None]:
    """Within the block the video paths run ``name``: ``baseline`` (MBA off: no pre-pass, no MBA), ``salma``
    (eager extras) or ``salma_compiled`` (``compiled``'s extras). With ``timer`` the pre-pass and MBA calls
    are timed into it as stages "prior" and "mba". Restores the model after."""
    if name not in VARIANTS:
        raise ValueError(f"variant {name!r}; accepted: {', '.join(VARIANTS)}")
    if name == "salma_compiled" and compiled is None:
        raise ValueError("variant 'salma_compiled' needs compiled extras (--compile default|max-autotune)")
    mba = model.mba
    if mba is None:
        raise ValueError("the benchmark model needs MBA enabled (build_bench_model)")
    saved_prior = model.__dict__.get("prior_fn")
    try:
        if name == "baseline":
            model.mba = None
        else:
            prior, m = (compiled.prior, compiled.mba) if name == "salma_compiled" else (structural_prior, mba)
            if timer is not None:
                prior, m = _timed_fn(prior, timer, "prior"), _Timed(m, timer, "mba")
            model.__dict__["prior_fn"] = prior
            model._modules["mba"] = m
        yield
    finally:
        model._modules["mba"] = mba
        if saved_prior is None:
            model.__dict__.pop("prior_fn", None)
        else:
            model.__dict__["prior_fn"] = saved_prior


@dataclass
class VideoBench:
    """Inputs of the video benchmark: frames (T, S, S, 3) uint8, the expression's ClipPrompt list, the
    conditioning (MLLM-read) frame indices, device, preset, image size, mllm_frames and model build time."""

    frames: np.ndarray
    prompts: list
    cond_frames: list[int]
    device: torch.device
    preset: str
    image_size: int
    mllm_frames: int
    build_s: float


def prepare_video_bench(preset: str = "paper", device: str = "auto", n_frames: int = 8, seed: int = 0,
                        mllm_frames: int = 5):
    """Build the model (random weights, MBA on) and the clip. Returns ``(model, VideoBench)``."""

    dev = resolve_device(device)
    t0 = time.perf_counter()
    model = build_bench_model(preset, dev, seed)
    build_s = time.perf_counter() - t0
    size = model.cfg.sam2.image_size
    frames = bench_clip(size, n_frames, seed)
    with torch.no_grad(), autocast_for(dev):
        prompts, idx = clip_prompts(model, frames, [BENCH_EXPRESSIONS[0]], mllm_frames)
    return model, VideoBench(frames, prompts, idx, dev, model.cfg.name, size, mllm_frames, build_s)


def _run_mode(model, vb: VideoBench, mode: str, return_logits: bool = False):
    with torch.no_grad(), autocast_for(vb.device):
        if mode == "per_frame":
            return predict_per_frame(model, vb.frames, vb.prompts, return_logits=return_logits)
        return predict_released(model, vb.frames, vb.prompts, vb.cond_frames, return_logits=return_logits)


def _mllm(model, vb: VideoBench) -> None:
    with torch.no_grad(), autocast_for(vb.device):
        clip_prompts(model, vb.frames, [BENCH_EXPRESSIONS[0]], vb.mllm_frames)


def compare_compiled(model, vb: VideoBench, compiled: CompiledExtras, modes=VIDEO_MODES) -> dict[str, Any]:
    """Eager vs compiled SALMA on the clip, per mode: max |difference| of the low-res logits (E, T, 1, 4h, 4w),
    the largest |logit| (for scale) and whether the thresholded masks agree; plus the pre-pass and MBA of
    the first frame called directly."""
    out: dict[str, Any] = {}
    for mode in modes:
        with variant(model, "salma"):
            m_e, lo_e = _run_mode(model, vb, mode, return_logits=True)
        with variant(model, "salma_compiled", compiled):
            m_c, lo_c = _run_mode(model, vb, mode, return_logits=True)
        out[mode] = {"max_abs_diff_logits": (lo_e - lo_c).abs().max().item(), "max_abs_logit": lo_e.abs().max().item(),
                     "mask_agreement": float(np.mean([np.mean(a == b) for a, b in zip(m_e, m_c)]))}

    mm = model.cfg.sam2.multimask_prior
    p = vb.prompts[0]
    with torch.no_grad(), autocast_for(vb.device):
        feats = model.sam.encode_image(preprocess_images(vb.frames[:1], vb.image_size).to(vb.device))
        prior_e = structural_prior(model.sam, feats.image_embed, feats.high_res, mm)
        prior_c = compiled.prior(model.sam, feats.image_embed, feats.high_res, mm).clone()  # CUDA-graph output
        args = (feats.image_embed, p.text[None], prior_e)
        f_e = model.mba(*args, text_mask=p.text_mask[None]).features
        f_c = compiled.mba(*args, text_mask=p.text_mask[None]).features.clone()
    out["direct"] = {"prior_max_abs_diff": (prior_e.float() - prior_c.float()).abs().max().item(),
                     "mba_max_abs_diff": (f_e.float() - f_c.float()).abs().max().item(),
                     "mba_max_abs": f_e.float().abs().max().item()}
    return out


def measure_video(model, vb: VideoBench, reps: int = 4, compile_mode: str = "none", modes=VIDEO_MODES,
                  progress: bool = True) -> dict[str, Any]:
    """Interleaved timing in one process. Per mode: one untimed first call per variant (the compiled
    variant's is its compilation, recorded as ``first_call``), then ``reps`` rounds of every variant on the
    whole clip, the first runner rotating; the MLLM once per round. Returns raw records: clip [{rep, mode,
    variant, total, prior, mba}], mllm [seconds], first_call {mode: {variant: seconds}}, compile_check, the
    machine before and after."""

    check_compile_mode(compile_mode)
    if reps < 1:
        raise ValueError(f"reps={reps} must be >= 1")
    for mode in modes:
        if mode not in VIDEO_MODES:
            raise ValueError(f"mode={mode!r}; accepted: {', '.join(VIDEO_MODES)}")
    dev = vb.device
    compiled = compiled_extras(model, compile_mode) if compile_mode != "none" else None
    names = [v for v in VARIANTS if v != "salma_compiled" or compiled is not None]
    before = machine_info(dev)
    t_start = time.perf_counter()
    first: dict[str, dict[str, float]] = {}
    for mode in modes:
        first[mode] = {}
        for name in names:
            with variant(model, name, compiled):
                try:
                    first[mode][name] = _time(lambda m=mode: _run_mode(model, vb, m), dev)
                except Exception as exc:
                    if name != "salma_compiled":
                        raise
                    raise RuntimeError(
                        f"--compile {compile_mode}: torch.compile failed on this machine ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); run with --compile none, or on a machine "
                        "with a working C compiler (CPU) / Triton (GPU)") from exc
    _mllm(model, vb)  # warm-up
    check = compare_compiled(model, vb, compiled, modes) if compiled is not None else None
    clip, mllm = [], []
    for r in tqdm(range(reps), desc="interleaved video repetitions", disable=not progress, file=sys.stdout):
        mllm.append(_time(lambda: _mllm(model, vb), dev))
        for mode in modes:
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                timer = StageTimer(dev)
                with variant(model, name, compiled, timer):
                    total = _time(lambda m=mode: _run_mode(model, vb, m), dev)
                st = timer.seconds()
                clip.append({"rep": r, "mode": mode, "variant": name, "total": total,
                             "prior": st.get("prior", 0.0), "mba": st.get("mba", 0.0)})
    return {"clip": clip, "mllm": mllm, "first_call": first, "compile_check": check, "compile_mode": compile_mode,
            "modes": list(modes), "variants": names, "reps": reps, "n_frames": len(vb.frames),
            "mllm_frames": vb.mllm_frames, "image_size": vb.image_size, "preset": vb.preset,
            "machine_before": before, "machine_after": machine_info(dev), "seconds": time.perf_counter() - t_start}


def summarize_video(raw: dict[str, Any]) -> dict[str, Any]:
    """Per mode and variant: seconds per frame (spread), FPS (without and with the MLLM amortised over the
    clip), SALMA / baseline ratio (of medians, and paired per repetition), the extras per frame (spread)
    and their share of the variant's frame and of the baseline frame, the first-call time."""
    t = raw["n_frames"]
    mllm = spread(raw["mllm"])
    out: dict[str, Any] = {"mllm_per_clip": mllm, "mllm_per_frame_amortised_s": mllm["median"] / t, "modes": {}}
    for mode in raw["modes"]:
        recs = [r for r in raw["clip"] if r["mode"] == mode]
        by = {v: {r["rep"]: r for r in recs if r["variant"] == v} for v in raw["variants"]}
        base = by["baseline"]
        res: dict[str, Any] = {}
        base_med = spread([r["total"] / t for r in base.values()])["median"]
        for v, rows in by.items():
            per_frame = spread([r["total"] / t for r in rows.values()])
            extras = spread([(r["prior"] + r["mba"]) / t for r in rows.values()])
            med = per_frame["median"]
            res[v] = {
                "per_frame_s": per_frame, "fps": 1.0 / med, "fps_with_mllm": 1.0 / (med + mllm["median"] / t),
                "ratio_vs_baseline": med / base_med,
                "ratio_paired": spread([rows[k]["total"] / base[k]["total"] for k in rows if k in base]),
                "extras_per_frame_s": extras if v != "baseline" else None,
                "extras_pct_of_frame": 100 * extras["median"] / med if v != "baseline" else None,
                "extras_pct_of_baseline_frame": 100 * extras["median"] / base_med if v != "baseline" else None,
                "first_call_s": raw["first_call"][mode][v],
            }
        out["modes"][mode] = res
    for k in ("compile_mode", "compile_check", "n_frames", "reps", "mllm_frames", "image_size", "preset",
              "machine_before", "machine_after", "seconds"):
        out[k] = raw[k]
    out["paper_fps"] = PAPER_FPS
    return out


VARIANT_LABELS = {"baseline": "Sa2VA", "salma": "SALMA (eager extras)", "salma_compiled": "SALMA (compiled extras)"}


def video_table(summary: dict[str, Any]):
    """One row per (mode, variant) plus the MLLM row: ms per frame (median, IQR, min-max), FPS without and
    with the MLLM amortised, SALMA / Sa2VA (ratio of medians, paired median), extras ms per frame and their
    share of the frame, the first call (compilation for the compiled variant). Returns a DataFrame."""

    rows = []
    for mode, res in summary["modes"].items():
        for v, s in res.items():
            pf, ex = s["per_frame_s"], s["extras_per_frame_s"]
            rows.append({
                "mode": mode, "variant": VARIANT_LABELS[v], "key": v,
                "ms_per_frame": round(1e3 * pf["median"], 3),
                "ms_per_frame_spread": _fmt_spread(pf, 1e3, 2),
                "FPS": round(s["fps"], 3), "FPS_with_MLLM": round(s["fps_with_mllm"], 3),
                "ratio_vs_Sa2VA": round(s["ratio_vs_baseline"], 4),
                "ratio_paired_median": round(s["ratio_paired"]["median"], 4),
                "extras_ms_per_frame": None if ex is None else round(1e3 * ex["median"], 3),
                "extras_pct_of_frame": None if ex is None else round(s["extras_pct_of_frame"], 3),
                "first_call_s": round(s["first_call_s"], 3),
            })
    m = summary["mllm_per_clip"]
    rows.append({"mode": "clip", "variant": f"MLLM, once per clip ({summary['mllm_frames']} frames read)",
                 "key": "mllm", "ms_per_frame": round(1e3 * summary["mllm_per_frame_amortised_s"], 3),
                 "ms_per_frame_spread": f"per clip: {_fmt_spread(m, 1e3, 2)}"})
    return pd.DataFrame(rows)


def video_conclusions(summary: dict[str, Any]) -> list[str]:
    """Sentences with the measured numbers (printed by the CLI)."""
    t, lines = summary["n_frames"], []
    for mode, res in summary["modes"].items():
        b = res["baseline"]
        for v in ("salma", "salma_compiled"):
            if v not in res:
                continue
            s = res[v]
            lines.append(f"[{mode}] {VARIANT_LABELS[v]}: {1e3 * s['per_frame_s']['median']:.2f} vs Sa2VA "
                         f"{1e3 * b['per_frame_s']['median']:.2f} ms per frame ({s['ratio_vs_baseline']:.4f}x, "
                         f"{s['fps']:.3g} vs {b['fps']:.3g} FPS); extras {1e3 * s['extras_per_frame_s']['median']:.3f} "
                         f"ms per frame = {s['extras_pct_of_frame']:.2f}% of the frame")
        if "salma_compiled" in res:
            e, c = res["salma"]["extras_per_frame_s"]["median"], res["salma_compiled"]["extras_per_frame_s"]["median"]
            lines.append(f"[{mode}] extras per frame eager {1e3 * e:.3f} ms -> compiled "
                         f"({summary['compile_mode']}) {1e3 * c:.3f} ms ({e / c:.2f}x); first compiled call "
                         f"{res['salma_compiled']['first_call_s']:.1f} s (eager first call "
                         f"{res['salma']['first_call_s']:.2f} s)")
    ck = summary["compile_check"]
    if ck:
        lines.append("compiled vs eager: " + "; ".join(
            f"{m} max |logit diff| {ck[m]['max_abs_diff_logits']:.2e} (|logit| <= {ck[m]['max_abs_logit']:.3g}), "
            f"masks agree {100 * ck[m]['mask_agreement']:.3f}%" for m in summary["modes"]))
    lines.append(f"MLLM once per clip: {1e3 * summary['mllm_per_clip']['median']:.1f} ms "
                 f"({1e3 * summary['mllm_per_frame_amortised_s']:.2f} ms per frame over {t} frames); paper FPS "
                 f"Sa2VA {PAPER_FPS['sa2va']} / SALMA {PAPER_FPS['salma']} (RTX 5090, DAVIS)")
    mb = summary["machine_before"]
    lines.append(f"machine: {mb['device_name']}, {mb['torch_threads']} threads, load {mb['loadavg']} -> "
                 f"{summary['machine_after']['loadavg']}")
    return lines


def run_video_benchmark(preset: str = "paper", device: str = "auto", n_frames: int = 8, reps: int = 4,
                        compile_mode: str = "none", seed: int = 0, mllm_frames: int = 5,
                        progress: bool = True) -> dict[str, Any]:
    """Build, measure and summarise. Returns {"summary", "table" (DataFrame), "raw", "model", "bench"}."""
    check_compile_mode(compile_mode)
    model, vb = prepare_video_bench(preset, device, n_frames, seed, mllm_frames)
    raw = measure_video(model, vb, reps, compile_mode, progress=progress)
    summary = summarize_video(raw)
    summary["build_s"] = vb.build_s
    return {"summary": summary, "table": video_table(summary), "raw": raw, "model": model, "bench": vb}


def long_clip_memory(preset: str = "small", n_frames: int = 500, device: str = "auto", seed: int = 0,
                     offload: Sequence[bool] = (False, True), progress: bool = True) -> list[dict[str, Any]]:
    """SALMA (random weights, MBA on) in ``released`` mode on one ``n_frames`` clip, once per ``offload``
    setting (sam2's ``offload_video_to_cpu`` + ``offload_state_to_cpu``): wall time, ms per frame, the
    process' RSS before and at its peak (and the peak GPU memory on CUDA).

    What lives per frame (``released``): the preprocessed frames (T x 3 x S x S float32, on the device unless
    offloaded) and sam2's per-frame outputs (memory features and low-res masks, on the storage device);
    image features are computed frame by frame and only the current frame's are cached, the prior likewise
    (``LanguageVideoPredictor.prior_cache``). Offloading moves both onto the CPU, which is what keeps a
    500-frame clip off a GPU's memory; on a CPU-only machine both settings hold the same data.
    """
    model, vb = prepare_video_bench(preset, device, n_frames, seed)
    rows = []
    for off in tqdm(list(offload), desc="long clip", disable=not progress, leave=False):
        gc.collect()
        with torch.no_grad(), autocast_for(vb.device), PeakRSS(vb.device) as mem:
            t0 = time.perf_counter()
            masks = predict_released(model, vb.frames, vb.prompts, vb.cond_frames, offload=off)
            seconds = time.perf_counter() - t0
        rows.append({"preset": preset, "frames": n_frames, "size": vb.image_size, "device": str(vb.device),
                     "offload": off, "seconds": seconds, "ms_per_frame": 1000 * seconds / n_frames,
                     "rss_before_mb": mem.before_mb, "rss_peak_mb": mem.peak_mb,
                     "rss_growth_mb": mem.peak_mb - mem.before_mb, "cuda_peak_mb": mem.cuda_peak_mb,
                     "frames_uint8_mb": vb.frames.nbytes / 2**20,
                     "frames_float_mb": n_frames * 3 * vb.image_size**2 * 4 / 2**20, "masks_shape": list(np.stack(masks).shape)})
        del masks
    return rows
