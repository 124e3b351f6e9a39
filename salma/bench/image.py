"""The image benchmark (paper Table 5 and Sec. 4.4's latency): interleaved Sa2VA vs SALMA forwards, the
pre-pass and MBA timed inside them, per image, per expression (prior shared) and per frame (batched
pre-pass); summaries, result JSON and conclusions.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from salma.bench.flops import CONVENTION
from salma.bench.forward import (
    BenchInputs,
    frame_priors,
    image_forward,
    prepare_benchmark,
    shared_prior,
    upstream_prior,
)
from salma.bench.tables import (
    PAPER_FPS,
    PAPER_OVERHEAD,
    PAPER_TABLE5,
    PAPER_TARGET_PCT,
    _jsonable_table,
    compute_table,
    latency_table,
    overhead_table,
)
from salma.bench.timing import StageTimer, _time, autocast_for, machine_info, spread
from salma.sam2_ext import SAM2Features, structural_prior


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


def measure_latency(model, inputs: BenchInputs, reps: int = 4, micro_reps: int = 3, warmup: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Interleaved timing in one process.

    Each repetition runs the Sa2VA forward and the SALMA forward (alternating which goes first), with
    per-stage times (encoder, mllm, prior, mba, decoder), then ``micro_reps`` rounds of every case of
    ``micro_cases`` (alternating order). ``warmup`` untimed SALMA forwards come first (default 0:
    ``prepare_benchmark``'s forward already warmed up), then one untimed round of the cases. Returns raw
    records: forward [{rep, variant, total, <stage>...}], micro [{rep, case, seconds}], and the machine
    (device, threads, load averages) before and after."""

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
