"""The result JSON of each notebook: one function per notebook that assembles the dict it saves as
``figures/NN_name.json`` (``salma.report.store.save_json``, which turns numpy values, paths and NaN into JSON and
adds the ``provenance`` block). The keys are the ones tests/test_notebooks.py checks and ``salma.report.results``
prints in RESULTS.md; keep them when a notebook changes.

Notebooks 00 and 09 save ``salma.report.env.environment_report`` and ``salma.bench.image.results_json`` as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from salma.report.cases import CaseRule
from salma.report.measures import attention_sums_to_one
from salma.report.stats import Comparison

# the columns of each shown case that notebook 08 records
CASE_FIELDS: tuple[str, ...] = ("ref_id", "sent_id", "expression", "baseline_iou_target", "salma_iou_target")


def _comparison(c: Comparison, *fields: str) -> dict[str, Any]:
    """The seed statistics of a comparison: ``fields`` (e.g. "a", "b", "what"), then mean, std, n, separated."""
    names = {"a": c.name_a, "b": c.name_b, "what": c.what}
    return {**{f: names[f] for f in fields}, "mean": c.mean, "std": c.std, "n": c.n, "separated": c.separated}


def prepass_prior_results(preset: str, rows: Mapping[str, Sequence[dict]], summary: Mapping[str, Mapping[str, float]],
                          verdict: str, random: str = "random SAM-2", trained: str = "foundation") -> dict[str, Any]:
    """01_prepass_prior: the number of expressions measured, the ``random`` and ``trained`` SAM-2's summaries
    (``prior_summaries`` of ``prior_overlap_by_model``'s ``rows``) and ``prior_verdict``."""
    return {"preset": preset, "n_expressions": len(rows[trained]), "random": summary[random],
            "foundation": summary[trained], "verdict": verdict}


def mba_gating_results(preset: str, seed: int, expression: str, steps: Mapping, gammas: Mapping[str, float],
                       modes: pd.DataFrame) -> dict[str, Any]:
    """02_mba_gating: the expression, MBA's router and Eq. 2 checks from ``probe.mba_steps``, the gate's range,
    each variant's trained γ (``trained_gammas``) and the write shares of ``mode_table`` keyed by map."""
    return {"preset": preset, "seed": seed, "expression": expression, "tokens": steps["tokens"],
            "selected_words": steps["selected_words"], "router_scores": steps["router_scores"],
            "attention_sums_to_one": attention_sums_to_one(steps), "eq2_error": steps["eq2_error"],
            "gate_min": float(steps["gate"].min()), "gate_max": float(steps["gate"].max()), "gamma": dict(gammas),
            "shares": modes.set_index("map").to_dict(orient="index")}


def losses_results(shift_rows: Sequence[dict], blur_rows: Sequence[dict], noise_rows: Sequence[dict],
                   temp_rows: Sequence[dict], alone: float, in_batch: float, radius: float, batch: int) -> dict[str, Any]:
    """03_losses: the four sweeps (``salma.report.toys``) and the checks on them: L_bound is ~0 for the exact
    mask, the same alone (``alone``) and inside a batch (``in_batch``), rises with the shift up to one
    ``radius``; at the lowest noise the matched TMC pairs score below the shuffled ones; TMC's chance log(B)."""
    until_radius = [r["boundary"] for r in shift_rows if r["shift"] <= radius]
    return {"shift": shift_rows, "blur": blur_rows, "tmc_noise": noise_rows, "tmc_temperature": temp_rows,
            "boundary_exact": shift_rows[0]["boundary"], "boundary_batch_independent": abs(alone - in_batch) < 1e-5,
            "boundary_monotone_until_radius": bool(np.all(np.diff(until_radius) > 0)),
            "tmc_matched_below_shuffled_low_noise": noise_rows[0]["matched"] < noise_rows[0]["shuffled"],
            "tmc_chance": float(np.log(batch))}


def training_run_results(preset: str, seed: int, result, device: str, summary: pd.DataFrame,
                         foundation_val: Sequence[dict], verdict: str) -> dict[str, Any]:
    """04_training_run: the run (a ``RunResult``: steps, cache use, folder, last log row, val metrics), the
    device, ``log_summary``'s table, the foundation's val rows (``foundation_metrics``) and ``finetune_verdict``."""
    return {"preset": preset, "seed": seed, "steps": len(result.log), "device": device, "cached": result.cached,
            "run_dir": result.run_dir, "final": result.log[-1], "summary": summary.to_dict(orient="records"),
            "val": result.metrics["val"], "ciou": result.metrics["ciou"], "foundation_val": foundation_val,
            "verdict": verdict}


def ablation_results(preset: str, seeds: Sequence[int], variants: Sequence[str], df: pd.DataFrame,
                     table2: pd.DataFrame, table3: pd.DataFrame, comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """05_ablation: the runs' rows (``run_rows``), Tables 2 and 3 (``ablation_table``), and per comparison
    (``ablation_comparisons``) its pair, seed statistics and verdict."""
    return {"preset": preset, "seeds": seeds, "variants": variants, "rows": df.to_dict(orient="records"),
            "table2": table2.to_dict(orient="records"), "table3": table3.to_dict(orient="records"),
            "comparisons": [_comparison(c, "a", "b", "what") for c in comparisons],
            "verdicts": [c.verdict() for c in comparisons]}


def saliency_bias_results(preset: str, seeds: Sequence[int], table4: pd.DataFrame,
                          comparisons: Mapping[str, Comparison]) -> dict[str, Any]:
    """06_saliency_bias: Table 4 (``area_bin_table``) and per area bin the verdict and seed statistics of
    ``area_bin_comparisons``."""
    return {"preset": preset, "seeds": seeds, "table4": table4.to_dict(orient="records"),
            "verdicts": {b: c.verdict() for b, c in comparisons.items()},
            "comparisons": {b: _comparison(c) for b, c in comparisons.items()}}


def attention_spotlight_results(preset: str, seeds: Sequence[int], table: pd.DataFrame,
                                comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """07_attention_spotlight: ``attention_table``, the distractor expressions per seed, and per comparison
    (``spotlight_comparisons``) its verdict and seed statistics."""
    return {"preset": preset, "seeds": seeds, "table": table.to_dict(orient="records"),
            "verdicts": [c.verdict() for c in comparisons],
            "n_distractor_expressions": int(table["N per seed"].iloc[0]) if len(table) else 0,
            "comparisons": [_comparison(c, "what") for c in comparisons]}


def qualitative_results(preset: str, seed: int, evals: Mapping[str, object], cases: pd.DataFrame,
                        counts: Mapping[str, int], verdict: str, chosen: Mapping[str, pd.DataFrame],
                        model: str = "salma") -> dict[str, Any]:
    """08_qualitative: how many expressions were evaluated (``model``'s ``evaluate_model`` rows in ``evals``)
    and have a distractor (``classify_cases``), ``case_counts``, the rule, the sign-test verdict and the
    ``CASE_FIELDS`` of the cases shown per category (``chosen_cases``; {} without any case)."""
    shown = {c: sel[list(CASE_FIELDS)].to_dict(orient="records") for c, sel in chosen.items()} if len(cases) else {}
    return {"preset": preset, "seed": seed, "n_expressions": len(evals[model].per_sample),
            "n_with_distractor": len(cases), "counts": counts, "rule": CaseRule().describe(), "verdict": verdict,
            "shown": shown}


def video_results(preset: str, seeds: Sequence[int], variants: Sequence[str], eval_limit: int | None,
                  df: pd.DataFrame, floors: pd.DataFrame, example: Mapping, table2: pd.DataFrame,
                  table3: pd.DataFrame, verdicts: Sequence[str], bench: Mapping, long_clip: pd.DataFrame) -> dict[str, Any]:
    """10_video: the runs' rows (``video_run_rows``), the floors (``video_floor_rows``), the walk-through
    expression and its scores (``video_example``), the video Tables 2 and 3, ``video_verdicts``, the per-frame
    cost (``run_video_benchmark``'s summary) and the long-clip memory rows."""
    sample = example["sample"]
    return {"preset": preset, "seeds": seeds, "variants": variants, "eval_limit": eval_limit,
            "rows": df.to_dict(orient="records"), "floors": floors.to_dict(orient="records"),
            "example": {"video": sample.video, "exp_id": sample.exp_id, "expression": sample.text,
                        "scores": example["scores"]},
            "table2": table2.to_dict(orient="records"), "table3": table3.to_dict(orient="records"),
            "verdicts": verdicts, "cost": bench["summary"], "long_clip": long_clip.to_dict(orient="records")}
