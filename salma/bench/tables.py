"""Paper Table 5 as tables and a figure: parameters and compute per component, latency and the pre-pass
overhead, each beside the paper's numbers.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from salma.bench.flops import Count, count_flops, count_params, frozen
from salma.bench.forward import BenchInputs
from salma.bench.timing import _fmt_spread, autocast_for
from salma.sam2_ext import structural_prior

# Paper Table 5 (1024x1024). The paper prints "GFLOPs"; its numbers are multiply-accumulates (docs/method.md section 7).
PAPER_TABLE5: dict[str, dict[str, Any]] = {
    "internvit": {"params_m": 304.0, "g": 1614.1},
    "hiera": {"params_m": 212.7, "g": 810.5},
    "projector": {"params_m": 4.5, "g": 1.2},
    "salma_extras": {"params_m": 12.0, "g": "< 1.0"},
}


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


def latency_table(summary: dict[str, Any]):
    """The latency result as a two-column DataFrame (quantity, value): forward medians with spread, stage
    medians, FPS, (a), (b), the lean-vs-upstream prior ratio, beside the paper's FPS and 0.7%."""

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


# Paper Sec. 4: DAVIS val, batch 1, RTX 5090.
PAPER_FPS = {"sa2va": 17.97, "salma": 17.84}


PAPER_OVERHEAD = 1.0 - PAPER_FPS["salma"] / PAPER_FPS["sa2va"]  # 0.72% fewer frames per second


PAPER_TARGET_PCT = 0.7
