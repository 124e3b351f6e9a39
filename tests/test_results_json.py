"""Tests for salma.report.results_json: each notebook's result dict, built from hand-made inputs through the same
package functions the notebook calls, has exactly the keys of the notebook's figures/NN_name.json (which
tests/test_notebooks.py and salma.report.results read) and carries the values through unchanged."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from salma.paths import FIGURES_ENV
from salma.report.cases import CASE_CATEGORIES, CaseRule, case_counts, chosen_cases
from salma.report.measures import MBA_MODES
from salma.report.results_json import (
    CASE_FIELDS,
    ablation_results,
    attention_spotlight_results,
    losses_results,
    mba_gating_results,
    prepass_prior_results,
    qualitative_results,
    saliency_bias_results,
    training_run_results,
    video_results,
)
from salma.report.stats import (
    ABLATION_STEPS,
    BIN_NAMES,
    ablation_comparisons,
    ablation_variants,
    area_bin_comparisons,
    spotlight_comparisons,
    table2_variants,
)
from salma.report.store import save_json
from salma.report.tables import (
    ablation_table,
    area_bin_table,
    attention_table,
    log_summary,
    mode_table,
)

# the top-level keys of each notebook's JSON (save_json adds "provenance")
KEYS = {
    "01_prepass_prior": {"foundation", "n_expressions", "preset", "random", "verdict"},
    "02_mba_gating": {"attention_sums_to_one", "eq2_error", "expression", "gamma", "gate_max", "gate_min", "preset",
                      "router_scores", "seed", "selected_words", "shares", "tokens"},
    "03_losses": {"blur", "boundary_batch_independent", "boundary_exact", "boundary_monotone_until_radius", "shift",
                  "tmc_chance", "tmc_matched_below_shuffled_low_noise", "tmc_noise", "tmc_temperature"},
    "04_training_run": {"cached", "ciou", "device", "final", "foundation_val", "preset", "run_dir", "seed", "steps",
                        "summary", "val", "verdict"},
    "05_ablation": {"comparisons", "preset", "rows", "seeds", "table2", "table3", "variants", "verdicts"},
    "06_saliency_bias": {"comparisons", "preset", "seeds", "table4", "verdicts"},
    "07_attention_spotlight": {"comparisons", "n_distractor_expressions", "preset", "seeds", "table", "verdicts"},
    "08_qualitative": {"counts", "n_expressions", "n_with_distractor", "preset", "rule", "seed", "shown", "verdict"},
    "10_video": {"cost", "eval_limit", "example", "floors", "long_clip", "preset", "rows", "seeds", "table2", "table3",
                 "variants", "verdicts"},
}


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """save_json the dict under a name and read it back (without provenance), as the notebook's JSON."""
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path))

    def roundtrip(obj: dict, name: str) -> dict:
        save_json(obj, name)
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data.pop("provenance")["notebook"] == name
        return data

    return roundtrip


def _rows(values: dict[str, list[float]], subsets=("all", "attribute", "distractor", "relation", "<1%", "<2%", "<5%")):
    """run_rows-shaped table: cIoU = value - 0.01 * (subset index) per variant and seed."""
    return pd.DataFrame([{"variant": v, "seed": seed, "subset": subset, "cIoU": x - 0.01 * k, "gIoU": x, "N": 10 * (k + 1)}
                         for v, per_seed in values.items() for seed, x in enumerate(per_seed)
                         for k, subset in enumerate(subsets)])


def test_prepass_prior_results(saved):
    s = {"iou_union": 0.6, "gate_share_union": 0.5, "union_ratio": 0.2}
    summary = {"random SAM-2": {**s, "iou_union": 0.1}, "foundation": s}
    rows = {"random SAM-2": [{}] * 3, "foundation": [{}] * 5}
    r = prepass_prior_results("tiny", rows, summary, "the verdict")
    assert set(r) == KEYS["01_prepass_prior"]
    assert r["n_expressions"] == 5 and r["random"] == summary["random SAM-2"] and r["foundation"] is summary["foundation"]
    assert saved(r, "01_prepass_prior")["random"]["iou_union"] == 0.1


def test_mba_gating_results(saved):
    target = np.zeros((4, 4), bool)
    target[:2] = True
    gate = np.linspace(0.1, 0.9, 4).reshape(2, 2)
    steps = {"tokens": ["the", "cat"], "selected_words": ["cat", "-"], "router_scores": [0.2, 0.8],
             "attention": np.full((2, 2, 4), 0.5), "eq2_error": 1e-7, "gate": gate}
    gammas = {"salma": 0.1, "bias": 0.2, "film": -0.3}
    modes = mode_table({k: np.ones((2, 2)) for k in MBA_MODES}, {"target": target, "distractor": None}, gammas)
    r = mba_gating_results("tiny", 0, "the cat", steps, gammas, modes)
    assert set(r) == KEYS["02_mba_gating"]
    assert r["attention_sums_to_one"] is True and r["gate_min"] == pytest.approx(0.1) and r["gate_max"] == pytest.approx(0.9)
    assert r["gamma"] == gammas and set(r["shares"]) == {*MBA_MODES, "chance (area ratio)"}
    assert r["shares"]["bias"] == {"share on target (%)": 50.0, "share on distractor (%)": pytest.approx(math.nan, nan_ok=True),
                                   "γ (trained)": 0.2}
    data = saved(r, "02_mba_gating")
    assert data["shares"]["chance (area ratio)"]["γ (trained)"] is None  # NaN -> null
    assert data["tokens"] == ["the", "cat"]


def test_losses_results_checks():
    shift = [{"shift": 0, "boundary": 0.0}, {"shift": 2, "boundary": 0.1}, {"shift": 4, "boundary": 0.2},
             {"shift": 8, "boundary": 0.15}]
    noise = [{"matched": 0.1, "shuffled": 2.0}, {"matched": 2.0, "shuffled": 2.0}]
    r = losses_results(shift, [{"blur": 1.0}], noise, [{"temperature": 0.1}], 0.5, 0.5 + 1e-6, 4.0, 8)
    assert set(r) == KEYS["03_losses"]
    assert r["shift"] is shift and r["boundary_exact"] == 0.0 and r["boundary_batch_independent"] is True
    assert r["boundary_monotone_until_radius"] is True  # the shift of 8 lies beyond the radius
    assert r["tmc_matched_below_shuffled_low_noise"] is True and r["tmc_chance"] == pytest.approx(math.log(8))
    r = losses_results(shift, [], noise[::-1], [], 0.5, 0.6, 10.0, 4)
    assert not r["boundary_batch_independent"] and not r["boundary_monotone_until_radius"]
    assert not r["tmc_matched_below_shuffled_low_noise"]


def test_training_run_results(saved):
    log = [{"step": 1, "total": 2.0, "gamma": 0.0, "seconds": 1.0}, {"step": 2, "total": 1.0, "gamma": 0.1, "seconds": 1.0}]
    val = [{"subset": "all", "cIoU": 0.5, "gIoU": 0.4, "N": 40}]
    result = SimpleNamespace(log=log, cached=True, run_dir=Path("/runs/tiny-salma-s0"), metrics={"val": val, "ciou": 0.5})
    summary = pd.DataFrame(log_summary(log, ["total", "gamma"]))
    r = training_run_results("tiny", 0, result, "cpu", summary, [], "no foundation numbers to compare with")
    assert set(r) == KEYS["04_training_run"]
    assert r["steps"] == 2 and r["final"] == log[-1] and r["ciou"] == 0.5 and r["val"] is val
    assert [row["quantity"] for row in r["summary"]] == ["total", "gamma"]
    data = saved(r, "04_training_run")
    assert data["run_dir"] == "/runs/tiny-salma-s0" and data["cached"] is True and data["foundation_val"] == []


def test_ablation_results_hold_the_table2_steps_in_order(saved):
    df = _rows({"baseline": [0.50, 0.52], "mba": [0.51, 0.54], "mba_tmc": [0.53, 0.54], "salma": [0.55, 0.58],
                "film": [0.52, 0.52], "bias": [0.5, 0.5]})
    variants = ablation_variants(["bias"])
    table2 = ablation_table(df, table2_variants(variants))
    table3 = ablation_table(df, ["salma", "film"], table="Table 3", baseline="salma")
    comparisons = ablation_comparisons(df, variants)
    r = ablation_results("tiny", [0, 1], variants, df, table2, table3, comparisons)
    assert set(r) == KEYS["05_ablation"]
    assert [(c["a"], c["b"]) for c in r["comparisons"]] == [(a, b) for a, b, _ in ABLATION_STEPS] + [("salma", "bias")]
    assert all(set(c) == {"a", "b", "what", "mean", "std", "n", "separated"} for c in r["comparisons"])
    whole = r["comparisons"][3]
    assert whole["what"] == "SynRef val all cIoU" and whole["mean"] == pytest.approx(5.5) and whole["n"] == 2
    assert r["verdicts"] == [c.verdict() for c in comparisons]
    assert [row["variant"] for row in r["table2"]] == ["baseline", "mba", "mba_tmc", "salma", "bias"]
    assert len(r["rows"]) == len(df) and r["variants"] == variants
    data = saved(r, "05_ablation")
    assert data["table2"][3]["paper: RefCOCOg test cIoU (%)"] == 78.42
    assert {row["variant"] for row in data["table3"]} == {"salma", "film"}


def test_saliency_bias_results(saved):
    df = _rows({"baseline": [0.50, 0.52], "salma": [0.56, 0.58]})
    table4 = area_bin_table(df)
    comparisons = area_bin_comparisons(df)
    r = saliency_bias_results("tiny", [0, 1], table4, comparisons)
    assert set(r) == KEYS["06_saliency_bias"]
    assert list(r["verdicts"]) == list(r["comparisons"]) == list(BIN_NAMES)
    assert r["verdicts"]["all"] == comparisons["all"].verdict()
    assert r["comparisons"]["<1%"] == {"mean": pytest.approx(6.0), "std": pytest.approx(0.0), "n": 2,
                                       "separated": True}
    assert [row["area bin"] for row in saved(r, "06_saliency_bias")["table4"]] == list(BIN_NAMES)


def test_attention_spotlight_results(saved):
    rows = [{"model": m, "seed": s, "chance_target": 0.05, "chance_distractor": 0.2, "decoder_target": t + 0.01 * s,
             "decoder_distractor": 0.3, "mba_target": 0.5, "mba_distractor": 0.1, "ungated_target": 0.4,
             "ungated_distractor": 0.2} for s in (0, 1) for m, t in (("baseline", 0.2), ("salma", 0.4))
            for _ in range(3)]
    for r in rows:
        if r["model"] == "baseline":
            r["mba_target"] = r["mba_distractor"] = r["ungated_target"] = r["ungated_distractor"] = float("nan")
    table = attention_table(rows)
    comparisons = spotlight_comparisons(rows)
    r = attention_spotlight_results("tiny", [0, 1], table, comparisons)
    assert set(r) == KEYS["07_attention_spotlight"]
    assert r["n_distractor_expressions"] == 3 and len(r["verdicts"]) == 3
    assert [c["what"] for c in r["comparisons"]] == [c.what for c in comparisons]
    assert all(set(c) == {"what", "mean", "std", "n", "separated"} for c in r["comparisons"])
    assert r["comparisons"][0]["mean"] == pytest.approx(20.0)
    assert {(row["model"], row["map"]) for row in saved(r, "07_attention_spotlight")["table"]} == {
        ("baseline", "decoder"), ("salma", "decoder"), ("salma", "mba"), ("salma", "ungated")}
    empty = attention_spotlight_results("tiny", [0], pd.DataFrame(columns=["N per seed"]), comparisons)
    assert empty["n_distractor_expressions"] == 0


def test_qualitative_results(saved):
    cases = pd.DataFrame({"order": [0, 1, 2], "ref_id": [10, 11, 12], "sent_id": [0, 0, 1],
                          "expression": ["a", "b", "c"], "baseline_iou_target": [0.0, 0.9, 0.1],
                          "salma_iou_target": [0.8, 0.0, 0.1], "baseline_iou_distractor": [0.9, 0.0, 0.0],
                          "salma_iou_distractor": [0.0, 0.9, 0.0], "category": [CASE_CATEGORIES[0], CASE_CATEGORIES[1],
                                                                                  CASE_CATEGORIES[3]]})
    counts = case_counts(cases)
    chosen = chosen_cases(cases, 2)
    evals = {"baseline": SimpleNamespace(per_sample=[{}] * 9), "salma": SimpleNamespace(per_sample=[{}] * 9)}
    r = qualitative_results("tiny", 0, evals, cases, counts, "the verdict", chosen)
    assert set(r) == KEYS["08_qualitative"]
    assert r["n_expressions"] == 9 and r["n_with_distractor"] == 3 and r["rule"] == CaseRule().describe()
    assert list(r["shown"]) == list(CASE_CATEGORIES[:2])
    assert r["shown"][CASE_CATEGORIES[0]] == [{"ref_id": 10, "sent_id": 0, "expression": "a",
                                              "baseline_iou_target": 0.0, "salma_iou_target": 0.8}]
    assert all(list(row) == list(CASE_FIELDS) for rows in r["shown"].values() for row in rows)
    assert sum(saved(r, "08_qualitative")["counts"].values()) == 3
    none = cases.iloc[0:0]
    assert qualitative_results("tiny", 0, evals, none, case_counts(none), "v", chosen_cases(none, 2))["shown"] == {}


def test_video_results(saved):
    df = pd.DataFrame([{"variant": v, "seed": 0, "mode": m, "subset": "all", "J": 0.4, "F": 0.4, "J&F": 0.4, "N": 4}
                       for v in ("baseline", "salma") for m in ("per_frame", "released")])
    floors = pd.DataFrame([{"floor": "largest_object_per_frame", "subset": "all", "J": 0.2, "F": 0.2, "J&F": 0.2, "N": 4}])
    sample = SimpleNamespace(video="v001", exp_id="3", text="the fast car", kind="motion")
    example = {"sample": sample, "scores": {"salma (per_frame)": {"J": 0.5, "F": 0.5, "J&F": 0.5}}, "frames": np.zeros(3)}
    bench = {"summary": {"modes": {"per_frame": {}}}, "table": pd.DataFrame()}
    long_clip = pd.DataFrame([{"offload": False, "ms_per_frame": 3.0}, {"offload": True, "ms_per_frame": 4.0}])
    table2 = pd.DataFrame([{"variant": "baseline"}])
    r = video_results("tiny", [0], ["baseline", "salma"], 6, df, floors, example, table2, table2, ["v1", "v2"], bench,
                      long_clip)
    assert set(r) == KEYS["10_video"]
    assert r["example"] == {"video": "v001", "exp_id": "3", "expression": "the fast car", "scores": example["scores"]}
    assert r["cost"] is bench["summary"] and r["verdicts"] == ["v1", "v2"] and r["eval_limit"] == 6
    assert [row["offload"] for row in r["long_clip"]] == [False, True] and len(r["rows"]) == 4
    data = saved(r, "10_video")
    assert data["floors"][0]["floor"] == "largest_object_per_frame" and data["table3"] == [{"variant": "baseline"}]
