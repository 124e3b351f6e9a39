"""Tests for salma.report.tables: statistics over seeds, the tables, attention-mass shares and the case rule, on
hand-built inputs whose answers are known."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from salma.report import measures
from salma.report.cases import (
    CASE_CATEGORIES,
    CaseRule,
    case_counts,
    case_panel,
    case_panels,
    chosen_cases,
    classify_cases,
    distractor_ious,
    select_cases,
    shown_cases,
)
from salma.report.measures import (
    MBA_MODES,
    PRIOR_KEYS,
    attention_rows_by_seed,
    attention_sums_to_one,
    cell_fraction,
    distractor_samples,
    mask_iou,
    mass_share,
    mba_mode_maps,
    mba_step_numbers,
    prediction_panel,
    prior_example_panel,
    prior_summaries,
    spotlight_panel,
    summarise,
    trained_gammas,
)
from salma.report.stats import (
    ABLATION_STEPS,
    BIN_NAMES,
    TABLE2_VARIANTS,
    TABLE3_VARIANTS,
    ablation_comparisons,
    ablation_variants,
    area_bin_comparisons,
    area_bin_verdicts,
    compare,
    extra_variants,
    finetune_verdict,
    floor_verdict,
    format_pm,
    mean_std,
    per_seed_share,
    present_variants,
    prior_verdict,
    sign_test_p,
    sign_test_verdict,
    spotlight_comparisons,
    table2_variants,
    video_comparisons,
    video_floor_verdicts,
    video_verdicts,
)
from salma.report.tables import (
    TABLE4_SHOWN,
    VIDEO_KIND_NAMES,
    ablation_table,
    area_bin_table,
    attention_table,
    case_count_table,
    case_table,
    drop_mean_columns,
    example_score_table,
    kind_pivot,
    kind_table,
    log_summary,
    mode_table,
    per_seed_table,
    prior_overlap_table,
    share_table,
    sweep_table,
    val_table,
    video_jf_table,
    video_kind_counts,
    video_per_seed_table,
    video_run_rows,
)
from salma.train.experiments import run_grid, video_run_grid


# --------------------------------------------------------------------------------------------- statistics
def test_mean_std_over_seeds():
    mean, std, n = mean_std([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)  # sample std (ddof = 1)
    mean, std, n = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std) and n == 1
    mean, std, n = mean_std([])
    assert math.isnan(mean) and math.isnan(std) and n == 0
    assert mean_std([1.0, float("nan"), 3.0, None])[:3:2] == (2.0, 2)


def test_format_pm():
    assert format_pm(78.24, 0.44, 3) == "78.2 ± 0.4 (n=3)"
    assert format_pm(78.0, float("nan"), 1) == "78.0 (n=1)"
    assert format_pm(float("nan"), float("nan"), 0) == "-"


def test_compare_pairs_by_seed_and_gives_verdicts():
    a = {0: 0.50, 1: 0.52, 2: 0.54, 3: 0.9}
    b = {0: 0.55, 1: 0.56, 2: 0.60}
    c = compare(a, b, "baseline", "salma")
    assert c.diffs == pytest.approx({0: 5.0, 1: 4.0, 2: 6.0})  # seed 3 has no pair
    assert c.mean == pytest.approx(5.0) and c.std == pytest.approx(1.0) and c.n == 3
    assert c.separated and "larger than 2 standard errors; salma is better" in c.verdict()
    noisy = compare({0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.55, 1: 0.45, 2: 0.51}, "a", "b")
    assert not noisy.separated and "within noise" in noisy.verdict()
    worse = compare({0: 0.6, 1: 0.6, 2: 0.6}, {0: 0.5, 1: 0.5, 2: 0.5}, "a", "b")
    assert worse.separated and "a is better" in worse.verdict()  # zero spread, clear sign
    tiny = compare({0: 0.500, 1: 0.510, 2: 0.520}, {0: 0.501, 1: 0.511, 2: 0.521}, "a", "b")
    assert tiny.separated and "too small to matter" in tiny.verdict() and "is better" not in tiny.verdict()
    one = compare({0: 0.5}, {0: 0.6}, "a", "b")
    assert not one.separated and "1 seed" in one.verdict() and "cannot tell" in one.verdict()
    with pytest.raises(ValueError, match="share no seed"):
        compare({0: 0.5}, {1: 0.5}, "a", "b")


def test_sign_test():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert sign_test_p(5, 5) == pytest.approx(2 / 32)
    assert sign_test_p(5, 10) == 1.0
    assert sign_test_p(1, 10) == pytest.approx(2 * 11 / 1024)
    assert "not significant" in sign_test_verdict(3, 4, "baseline", "salma", "drifts")
    assert "salma drifts significantly less often" in sign_test_verdict(10, 0, "baseline", "salma", "drifts")
    assert "no discordant" in sign_test_verdict(0, 0, "a", "b", "drifts")


# ------------------------------------------------------------------------------------------------ tables
def _rows(values: dict[str, list[float]], subsets=("all", "attribute", "distractor", "relation", "<1%", "<2%", "<5%")):
    rows = []
    for v, per_seed in values.items():
        for seed, x in enumerate(per_seed):
            for k, subset in enumerate(subsets):
                rows.append({"variant": v, "seed": seed, "subset": subset, "cIoU": x - 0.01 * k, "gIoU": x,
                             "N": 10 * (k + 1)})
    return pd.DataFrame(rows)


def test_ablation_table_mean_std_and_paper_columns():
    df = _rows({"baseline": [0.50, 0.52, 0.54], "salma": [0.55, 0.56, 0.60], "bias": [0.5, 0.5, 0.5]})
    t = ablation_table(df, ["baseline", "salma", "bias"]).set_index("variant")
    assert t.loc["baseline", "mean"] == pytest.approx(52.0) and t.loc["baseline", "std"] == pytest.approx(2.0)
    assert t.loc["salma", "Δ vs baseline (points)"] == "5.0 ± 1.0 (n=3)"
    assert t.loc["baseline", "Δ vs baseline (points)"] == "-"
    assert t.loc["salma", "per seed"] == "55.0, 56.0, 60.0"
    assert t.loc["salma", "distractor (%)"] == pytest.approx(100 * np.mean([0.53, 0.54, 0.58]))
    assert t.loc["salma", "paper: RefCOCOg test cIoU (%)"] == 78.42
    assert t.loc["baseline", "paper: Ref-DAVIS17 val J&F (%)"] == 68.52
    assert math.isnan(t.loc["bias", "paper: RefCOCOg test cIoU (%)"])  # not a row of the paper's Table 2
    t3 = ablation_table(_rows({"salma": [0.5], "film": [0.4]}), ["salma", "film"], "Table 3", "salma")
    assert list(t3["paper: MeViS valu J&F (%)"]) == [53.37, 47.46]
    assert t3.loc[1, "Δ vs salma (points)"] == "-10.0 (n=1)"


def test_kind_and_area_bin_tables():
    df = _rows({"baseline": [0.50, 0.52], "salma": [0.56, 0.58]})
    kinds = kind_table(df, ["baseline", "salma"])
    assert len(kinds) == 8 and set(kinds["subset"]) == {"all", "attribute", "distractor", "relation"}
    bins = area_bin_table(df).set_index("area bin")
    assert list(bins.index) == ["<1%", "<2%", "<5%", "all"]
    assert bins.loc["all", "Δ mean"] == pytest.approx(6.0) and bins.loc["all", "Δ std"] == pytest.approx(0.0)
    assert bins.loc["<1%", "N (ours)"] == 50 and bins.loc["<1%", "paper N"] == 35
    assert bins.loc["<1%", "paper Δ (points)"] == pytest.approx(-3.9)


# ------------------------------------------------------------------------------------ attention shares
def test_mass_share_on_a_hand_built_attention_map():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # the top-left quarter of the image = the top-left 2 x 2 cells of a 4 x 4 map
    attn = np.zeros((4, 4))
    attn[:2, :2] = 0.25
    assert mass_share(attn, mask) == pytest.approx(1.0)
    assert mass_share(np.full((4, 4), 1 / 16), mask) == pytest.approx(0.25)  # uniform = area ratio
    attn2 = np.zeros((4, 4))
    attn2[0, 0], attn2[3, 3] = 0.5, 0.5
    assert mass_share(attn2, mask) == pytest.approx(0.5)
    half = np.zeros((8, 8), bool)
    half[:1, :2] = True  # covers half of cell (0, 0)
    assert mass_share(attn2, half) == pytest.approx(0.25)
    assert math.isnan(mass_share(np.zeros((4, 4)), mask))
    with pytest.raises(ValueError, match="non-negative"):
        mass_share(-attn, mask)


def test_cell_fraction_handles_non_divisible_sizes():
    f = cell_fraction(np.ones((5, 7), bool), (4, 4))
    assert f.shape == (4, 4) and np.allclose(f, 1.0)


def test_attention_table_and_per_seed_share():
    rows = []
    for seed in (0, 1):
        for model, t in (("baseline", 0.2), ("salma", 0.4 + 0.1 * seed)):
            rows.append({"model": model, "seed": seed, "chance_target": 0.05, "chance_distractor": 0.2,
                         "decoder_target": t, "decoder_distractor": 0.3})
            rows.append({"model": model, "seed": seed, "chance_target": 0.05, "chance_distractor": float("nan"),
                         "decoder_target": 0.9, "decoder_distractor": float("nan")})  # no distractor: left out
    table = attention_table(rows).set_index("model")
    assert table.loc["salma", "target mean"] == pytest.approx(45.0)
    assert table.loc["salma", "target std"] == pytest.approx(100 * np.std([0.4, 0.5], ddof=1))
    assert table.loc["baseline", "N per seed"] == 1 and table.loc["baseline", "chance distractor (%)"] == pytest.approx(20)
    assert per_seed_share(rows, "salma", "decoder_target") == pytest.approx({0: 0.4, 1: 0.5})


def test_share_table_has_a_chance_row():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    t = share_table({"peaked": np.eye(4)}, {"target": mask, "none": None}).set_index("map")
    assert t.loc["peaked", "share on target (%)"] == pytest.approx(25.0)
    assert t.loc["chance (area ratio)", "share on target (%)"] == pytest.approx(100 / 16)
    assert math.isnan(t.loc["peaked", "share on none (%)"])


# ----------------------------------------------------------------------------------------- case rule
@dataclass(frozen=True)
class _Sample:
    ref_id: int
    sent_id: int
    image_id: int
    expression: str
    distractor_ann_ids: tuple[int, ...]
    ann_id: int


class _Dataset:
    """Two objects per image: the target (left square, ann 2k) and a look-alike (right square, ann 2k+1)."""

    def __init__(self, n: int):
        self.samples = [_Sample(k, k, k, f"expr {k}", (2 * k + 1,) if k < n - 1 else (), 2 * k) for k in range(n)]

    @staticmethod
    def _square(left: bool) -> np.ndarray:
        m = np.zeros((8, 8), bool)
        m[2:6, 0:3] = left
        m[2:6, 5:8] = not left
        return m

    def load_mask(self, s):
        return self._square(True)

    def ann_mask(self, ann_id):
        return self._square(ann_id % 2 == 0)


def _rows_for(preds: list[np.ndarray]) -> list[dict]:
    return [{"ref_id": k, "sent_id": k, "mask": p} for k, p in enumerate(preds)]


def test_case_rule_on_hand_built_masks():
    ds = _Dataset(6)
    t, d, empty = ds._square(True), ds._square(False), np.zeros((8, 8), bool)
    partial = t.copy()
    partial[2:4] = False  # half of the target: IoU 0.5 with it, 0 with the distractor
    base = _rows_for([d, t, t, d, empty, d])
    salma = _rows_for([t, d, partial, d, empty, t])
    cases = classify_cases(ds, base, salma)
    assert len(cases) == 5  # sample 5 has no distractor
    cats = dict(zip(cases["ref_id"], cases["category"]))
    assert cats == {0: CASE_CATEGORIES[0], 1: CASE_CATEGORIES[1], 2: CASE_CATEGORIES[3], 3: CASE_CATEGORIES[2],
                    4: CASE_CATEGORIES[3]}  # an empty mask picks nothing
    row = cases.set_index("ref_id").loc[2]
    assert row["baseline_iou_target"] == 1.0 and row["salma_iou_target"] == pytest.approx(0.5)
    assert case_counts(cases) == {CASE_CATEGORIES[0]: 1, CASE_CATEGORIES[1]: 1, CASE_CATEGORIES[2]: 1,
                                           CASE_CATEGORIES[3]: 2}
    rule = CaseRule()
    assert rule.picks_distractor(0.1, 0.2) and not rule.picks_distractor(0.0, 0.0)


def test_select_cases_ranks_by_iou_gap_then_order():
    cases = pd.DataFrame({"order": [0, 1, 2, 3], "category": [CASE_CATEGORIES[0]] * 3 + [CASE_CATEGORIES[1]],
                          "baseline_iou_target": [0.0, 0.0, 0.1, 0.9], "salma_iou_target": [0.5, 0.9, 0.6, 0.0]})
    sel = select_cases(cases, CASE_CATEGORIES[0], 2)
    assert list(sel["order"]) == [1, 0]  # gap 0.9, then 0.5 tied with order 2 -> order 0 first
    assert len(select_cases(cases, CASE_CATEGORIES[2], 3)) == 0
    with pytest.raises(ValueError, match="accepted values"):
        select_cases(cases, "nope", 1)


def test_case_panel_assembles_plot_inputs():
    ds = _Dataset(3)
    ds.load_image = lambda s: np.zeros((8, 8, 3), np.uint8)
    t, d = ds._square(True), ds._square(False)
    per_sample = {"baseline": _rows_for([d, t, t]), "salma": _rows_for([t, t, t])}
    cases = classify_cases(ds, per_sample["baseline"], per_sample["salma"])
    panel = case_panel(ds, select_cases(cases, CASE_CATEGORIES[0], 3), per_sample)
    assert len(panel["images"]) == 1 and panel["titles"] == ["expr 0"]
    assert np.array_equal(panel["preds"]["baseline"][0], d) and panel["pred_titles"]["salma"] == ["salma: t 1.00 / d 0.00"]


def test_mask_iou_and_distractor_ious():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert mask_iou(a, a) == 1.0 and mask_iou(a, ~a) == 0.0
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 0.0
    assert distractor_ious(a, a, []) == (1.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(a, np.zeros((3, 3), bool))


# ------------------------------------------------------------------------------------------ other helpers
def test_log_summary_and_summarise():
    log = [{"step": i, "seg": float(10 - i), "gamma": 0.01 * i} for i in range(10)]
    s = {r["quantity"]: r for r in log_summary(log, ["seg", "gamma", "absent"])}
    assert set(s) == {"seg", "gamma"} and s["seg"]["first steps"] == 10.0 and s["seg"]["last steps"] == 1.0
    assert summarise([{"x": 1.0}, {"x": float("nan")}, {"x": 3.0}], ["x"]) == {"x": 2.0}


def test_prior_verdict_mentions_the_numbers():
    r = {"iou_union": 0.1, "gate_share_union": 0.2, "union_ratio": 0.2, "gate_share_target": 0.05, "iou_target": 0.02}
    t = {"iou_union": 0.6, "gate_share_union": 0.5, "union_ratio": 0.2, "gate_share_target": 0.1, "iou_target": 0.1}
    v = prior_verdict(r, t)
    assert "10.0%" in v and "60.0%" in v and "higher after training" in v and "2.50x chance" in v


def test_run_grid_rejects_unknown_variants_and_empty_seeds():
    with pytest.raises(ValueError, match="unknown variant"):
        run_grid("tiny", ["nope"], [0])
    with pytest.raises(ValueError, match="seeds is empty"):
        run_grid("tiny", ["salma"], [])


# ------------------------------------------------------------------------------------------- video (10)
def _video_rows(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """values: {variant: {mode: [J&F per seed]}}; appearance = value + 0.1, motion = value - 0.1."""
    rows = []
    for v, by_mode in values.items():
        for mode, per_seed in by_mode.items():
            for seed, x in enumerate(per_seed):
                for subset, y in (("all", x), ("appearance", x + 0.1), ("motion", x - 0.1)):
                    rows.append({"variant": v, "seed": seed, "mode": mode, "subset": subset, "J": y, "F": y,
                                 "J&F": y, "N": 40})
    return pd.DataFrame(rows)


def test_video_tables_use_jf_per_mode_with_floors_and_the_papers_video_columns():
    df = _video_rows({"baseline": {"per_frame": [0.40, 0.42, 0.44], "released": [0.2, 0.2, 0.2]},
                      "salma": {"per_frame": [0.41, 0.44, 0.47], "released": [0.3, 0.3, 0.3]},
                      "film": {"per_frame": [0.30, 0.30, 0.30], "released": [0.1, 0.1, 0.1]}})
    per_frame = df[df["mode"] == "per_frame"]
    t2 = ablation_table(per_frame, ["baseline", "salma"], metric="J&F", kinds=VIDEO_KIND_NAMES,
                                 label="J&F (%)", benchmark="Ref-DAVIS17 val").set_index("variant")
    assert t2.loc["salma", "ours: J&F (%)"] == "44.0 ± 3.0 (n=3)"
    assert t2.loc["salma", "Δ vs baseline (points)"] == "2.0 ± 1.0 (n=3)"
    assert t2.loc["salma", "motion (%)"] == pytest.approx(34.0)
    assert t2.loc["salma", "paper: Ref-DAVIS17 val J&F (%)"] == 71.87
    assert "paper: RefCOCOg test cIoU (%)" not in t2.columns  # only the asked benchmark's column
    t3 = ablation_table(per_frame, ["salma", "film"], "Table 3", "salma", metric="J&F",
                                 kinds=VIDEO_KIND_NAMES, benchmark="MeViS valu")
    assert list(t3["paper: MeViS valu J&F (%)"]) == [53.37, 47.46] and "paper: Ref-DAVIS17 val J&F (%)" not in t3
    with pytest.raises(ValueError, match="MeViS valu"):
        ablation_table(per_frame, ["salma"], "Table 3", "salma", metric="J&F", benchmark="MeViS")
    floors = pd.DataFrame([{"floor": "largest", "subset": s, "J": 0.25, "F": 0.25, "J&F": 0.25, "N": 40}
                           for s in ("all",) + VIDEO_KIND_NAMES])
    jf = video_jf_table(df, floors, ["baseline", "salma"])
    assert list(jf["model"]) == ["baseline", "salma", "baseline", "salma", "floor: largest"]
    assert list(jf["mode"]) == ["per_frame", "per_frame", "released", "released", "-"]
    assert jf.iloc[2]["all mean"] == pytest.approx(20.0) and jf.iloc[4]["motion J&F (%)"] == "25.0"


def test_floor_verdict_needs_every_seed_above_the_floor():
    assert "above it on every seed (the lowest seed by 5.0 points)" in floor_verdict(
        {0: 0.30, 1: 0.35}, 0.25, "baseline", "largest object")
    assert "not on every seed" in floor_verdict({0: 0.20, 1: 0.40}, 0.25, "baseline", "largest object")
    assert "does not beat it (-5.0 points" in floor_verdict({0: 0.20, 1: 0.20}, 0.25, "b", "f")
    assert "no run" in floor_verdict({}, 0.25, "b", "f")


def test_video_run_rows_flattens_both_modes():
    @dataclass
    class Fake:
        metrics: dict

    rows = [{"subset": "all", "J": 0.3, "F": 0.5, "J&F": 0.4, "N": 2}]
    runs = {"baseline": {0: Fake({"video_val": {"per_frame": rows, "released": rows}})}}
    df = video_run_rows(runs)
    assert list(df["mode"]) == ["per_frame", "released"] and list(df["J&F"]) == [0.4, 0.4]
    with pytest.raises(ValueError, match="accepted values"):
        video_run_grid("tiny", ["nope"], [0])


# ----------------------------------------------------------------------- the notebooks' comparisons (05-07, 10)
_ABLATION = {"baseline": [0.50, 0.52, 0.54], "mba": [0.51, 0.54, 0.55], "mba_tmc": [0.53, 0.54, 0.56],
             "salma": [0.55, 0.56, 0.60], "film": [0.52, 0.52, 0.52], "bias": [0.50, 0.50, 0.53]}


def test_ablation_variants_put_the_tables_rows_first_then_the_extras():
    assert TABLE2_VARIANTS == ("baseline", "mba", "mba_tmc", "salma") and TABLE3_VARIANTS == ("salma", "film")
    assert ablation_variants([]) == ["baseline", "mba", "mba_tmc", "salma", "film"]
    variants = ablation_variants(["salma", "bias", "film", "released"])  # rows of the tables are not repeated
    assert variants == ["baseline", "mba", "mba_tmc", "salma", "film", "bias", "released"]
    assert extra_variants(variants) == ["bias", "released"]
    assert table2_variants(variants) == ["baseline", "mba", "mba_tmc", "salma", "bias", "released"]
    assert present_variants(TABLE2_VARIANTS, ["salma", "film", "baseline"]) == ["baseline", "salma"]
    assert present_variants(TABLE3_VARIANTS, ["baseline"]) == []


def test_ablation_comparisons_are_the_table2_steps_in_order_with_their_values():
    df = _rows(_ABLATION)
    variants = ablation_variants(["bias"])
    comparisons = ablation_comparisons(df, variants)
    pairs = [(c.name_a, c.name_b, c.what) for c in comparisons]
    assert pairs == [(a, b, f"SynRef val {k} cIoU") for a, b, k in ABLATION_STEPS] + [("salma", "bias", "SynRef val all cIoU")]
    assert pairs[:6] == [("baseline", "mba", "SynRef val all cIoU"), ("mba", "mba_tmc", "SynRef val all cIoU"),
                         ("mba_tmc", "salma", "SynRef val all cIoU"), ("baseline", "salma", "SynRef val all cIoU"),
                         ("baseline", "salma", "SynRef val distractor cIoU"), ("salma", "film", "SynRef val all cIoU")]
    by = {(c.name_a, c.name_b, c.what): c for c in comparisons}
    step = by[("baseline", "mba", "SynRef val all cIoU")]
    assert step.diffs == pytest.approx({0: 1.0, 1: 2.0, 2: 1.0}) and step.mean == pytest.approx(4 / 3) and step.n == 3
    whole = by[("baseline", "salma", "SynRef val all cIoU")]
    assert whole.mean == pytest.approx(5.0) and whole.std == pytest.approx(1.0) and whole.separated
    # the distractor subset is its own column of the rows (offset by 0.02 in _rows, the same for both variants)
    assert by[("baseline", "salma", "SynRef val distractor cIoU")].mean == pytest.approx(5.0)
    assert by[("salma", "film", "SynRef val all cIoU")].mean == pytest.approx(-5.0)
    assert len(ablation_comparisons(df, ablation_variants())) == len(ABLATION_STEPS)


def test_area_bin_comparisons_cover_every_bin_and_verdict_lines_carry_n():
    df = _rows({"baseline": [0.50, 0.52], "salma": [0.56, 0.59]})
    comparisons = area_bin_comparisons(df)
    assert list(comparisons) == list(BIN_NAMES) == ["<1%", "<2%", "<5%", "all"]
    assert all(c.mean == pytest.approx(6.5) and c.n == 2 for c in comparisons.values())
    assert comparisons["<1%"].what == "SynRef val cIoU, target area <1%"
    lines = area_bin_verdicts(comparisons, [5, 9, 20, 40])
    assert len(lines) == 4 and lines[0].startswith("<1% (N=5): salma - baseline on SynRef val cIoU, target area <1% = +6.50")
    assert lines[3] == f"all (N=40): {comparisons['all'].verdict()}"


def test_spotlight_comparisons_pair_the_decoder_shares_then_the_gate():
    rows = []
    for seed in (0, 1):
        rows.append({"model": "baseline", "seed": seed, "chance_distractor": 0.2, "decoder_target": 0.2,
                     "decoder_distractor": 0.4})
        rows.append({"model": "salma", "seed": seed, "chance_distractor": 0.2, "decoder_target": 0.3 + 0.1 * seed,
                     "decoder_distractor": 0.3, "mba_target": 0.6, "ungated_target": 0.4})
        rows.append({"model": "salma", "seed": seed, "chance_distractor": float("nan"), "decoder_target": 0.9,
                     "decoder_distractor": float("nan"), "mba_target": 0.0, "ungated_target": 0.9})  # left out
    target, distractor, gate = spotlight_comparisons(rows)
    assert (target.name_a, target.name_b) == ("baseline", "salma") and "on the target" in target.what
    assert target.diffs == pytest.approx({0: 10.0, 1: 20.0})
    assert "on the distractor" in distractor.what and distractor.mean == pytest.approx(-10.0)
    assert (gate.name_a, gate.name_b) == ("gate forced to 1", "gated MBA") and gate.mean == pytest.approx(20.0)


def test_finetune_verdict_compares_with_the_foundations_all_row():
    assert finetune_verdict([], 0.6, 0) == "no foundation numbers to compare with"
    val = [{"subset": "<1%", "cIoU": 0.1, "N": 3}, {"subset": "all", "cIoU": 0.50, "N": 40}]
    v = finetune_verdict(val, 0.55, 0)
    assert v.startswith("SALMA fine-tuned - foundation on cIoU = +5.00 points with 1 seed")


def test_video_verdicts_are_the_floor_verdicts_then_the_comparisons():
    df = _video_rows({"baseline": {"per_frame": [0.40, 0.42, 0.44], "released": [0.2, 0.2, 0.2]},
                      "salma": {"per_frame": [0.41, 0.44, 0.47], "released": [0.3, 0.3, 0.3]},
                      "film": {"per_frame": [0.30, 0.30, 0.30], "released": [0.1, 0.1, 0.1]}})
    floors = pd.DataFrame([{"floor": f, "subset": s, "J": 0.25, "F": 0.25, "J&F": value, "N": 40}
                           for f, value in (("largest", 0.25), ("first_gt", 0.35)) for s in ("all",) + VIDEO_KIND_NAMES])
    variants = ["baseline", "salma", "film"]
    floor = video_floor_verdicts(df, floors, variants)
    assert len(floor) == 6 and floor[0].startswith("baseline (per_frame) J&F 42.0 ± 2.0 (n=3) vs floor 'largest' 25.0")
    assert "floor 'first_gt'" in floor[1] and "does not beat it" in floor[5]  # film 30.0 < 35.0
    comparisons = video_comparisons(df, variants)
    assert [(c.name_a, c.name_b) for c in comparisons] == [
        ("baseline appearance", "baseline motion"), ("salma appearance", "salma motion"),
        ("film appearance", "film motion"), ("baseline", "salma"), ("baseline", "film"), ("salma", "film"),
        ("baseline per_frame", "baseline released"), ("salma per_frame", "salma released"),
        ("film per_frame", "film released")]
    assert comparisons[0].mean == pytest.approx(-20.0)  # motion = all - 0.1, appearance = all + 0.1
    assert comparisons[3].mean == pytest.approx(2.0) and comparisons[6].mean == pytest.approx(-22.0)
    assert video_verdicts(df, floors, variants) == floor + [c.verdict() for c in comparisons]
    assert len(video_comparisons(df, ["baseline", "salma"])) == 2 + 1 + 2  # no film: no salma -> film pair


# ------------------------------------------------------------------------------- the notebooks' tables
def test_prior_overlap_table_is_in_percent_per_model():
    t = prior_overlap_table({"random": {"iou_union": 0.1, "area_ratio": 0.05}, "trained": {"iou_union": 0.6,
                                                                                          "area_ratio": 0.05}})
    assert list(t.columns) == ["SAM-2", "iou_union", "area_ratio"] and list(t["SAM-2"]) == ["random", "trained"]
    assert t["iou_union"].tolist() == pytest.approx([10.0, 60.0])


def test_mode_table_adds_the_trained_gamma_of_each_maps_variant():
    target = np.zeros((4, 4), bool)
    target[:2] = True
    maps = {label: np.full((2, 2), 1.0) for label in MBA_MODES}
    t = mode_table(maps, {"target": target, "distractor": None}, {"salma": 0.5, "bias": -0.1, "film": 0.2})
    assert list(t["map"]) == [*MBA_MODES, "chance (area ratio)"]
    assert t["γ (trained)"].tolist()[:4] == [0.5, 0.5, -0.1, 0.2] and math.isnan(t["γ (trained)"].iloc[4])
    assert t["share on target (%)"].tolist() == pytest.approx([50.0] * 5)


def test_sweep_table_stacks_the_sweeps_with_their_names():
    t = sweep_table({"shift": [{"shift": 0, "x": 1.0}, {"shift": 2, "x": 2.0}], "blur": [{"blur": 0.5, "x": 3.0}]},
                    "perturbation")
    assert t["perturbation"].tolist() == ["shift", "shift", "blur"] and t["x"].tolist() == [1.0, 2.0, 3.0]
    assert list(t.index) == [0, 1, 0] and math.isnan(t["blur"].iloc[0])


def test_val_table_with_and_without_the_foundation():
    val = [{"subset": "all", "cIoU": 0.5, "gIoU": 0.4, "N": 40}, {"subset": "<1%", "cIoU": 0.1, "gIoU": 0.2, "N": 4}]
    t = val_table(val)
    assert list(t.columns) == ["N", "SALMA cIoU (%)", "SALMA gIoU (%)"] and t.loc["all", "SALMA cIoU (%)"] == 50.0
    start = [{"subset": "<1%", "cIoU": 0.05, "gIoU": 0.0, "N": 4}, {"subset": "all", "cIoU": 0.3, "gIoU": 0.0, "N": 40}]
    t = val_table(val, start)
    assert list(t.columns) == ["N", "foundation cIoU (%)", "SALMA cIoU (%)", "SALMA gIoU (%)"]
    assert t.loc["all", "foundation cIoU (%)"] == pytest.approx(30.0) and t.loc["<1%", "foundation cIoU (%)"] == 5.0


def test_per_seed_tables_and_the_kind_pivot():
    df = _rows({"baseline": [0.50, 0.52], "salma": [0.56, 0.58]})
    t = per_seed_table(df, ["salma", "baseline"])
    assert list(t.index) == ["salma", "baseline"] and list(t.columns) == ["seed 0 cIoU (%)", "seed 1 cIoU (%)"]
    assert t.loc["salma"].tolist() == pytest.approx([56.0, 58.0])
    kinds = kind_table(df, ["baseline", "salma"])
    pivot = kind_pivot(kinds, ["salma", "baseline"])
    assert list(pivot.index) == ["salma", "baseline"] and set(pivot.columns) == {"all", "attribute", "distractor", "relation"}
    assert pivot.loc["salma", "all"] == "57.0 ± 1.4 (n=2)"
    video = _video_rows({"baseline": {"per_frame": [0.4, 0.5], "released": [0.2, 0.3]}})
    vt = video_per_seed_table(video)
    assert list(vt.index) == [("baseline", "per_frame"), ("baseline", "released")]
    assert list(vt.columns) == ["seed 0 J&F (%)", "seed 1 J&F (%)"] and vt.iloc[1].tolist() == pytest.approx([20.0, 30.0])


def test_small_display_tables():
    df = _rows({"baseline": [0.50], "salma": [0.56]})
    assert set(TABLE4_SHOWN) <= set(area_bin_table(df).columns)
    counts = case_count_table({CASE_CATEGORIES[0]: 2, CASE_CATEGORIES[1]: 0})
    assert counts.to_dict(orient="records") == [{"category": CASE_CATEGORIES[0], "expressions": 2},
                                                {"category": CASE_CATEGORIES[1], "expressions": 0}]
    assert list(case_table(pd.DataFrame()).columns) == ["category"]
    assert case_table(pd.DataFrame({"x": [0.123456]}))["x"].item() == 0.1235
    scores = example_score_table({"baseline (per_frame)": {"J": 0.5, "F": 0.7, "J&F": 0.6}})
    assert list(scores.index) == ["baseline (per_frame)"] and scores.loc["baseline (per_frame)", "J&F"] == 60.0
    jf = pd.DataFrame({"model": ["a"], "all J&F (%)": ["1.0"], "all mean": [1.0]})
    assert list(drop_mean_columns(jf).columns) == ["model", "all J&F (%)"]

    clips = SimpleNamespace(samples=[SimpleNamespace(kind=k) for k in ("motion", "motion", "appearance", "appearance")])
    k = video_kind_counts(clips, 3)
    assert k.name == "expressions evaluated" and k.to_dict() == {"motion": 2, "appearance": 1}
    assert video_kind_counts(clips).to_dict() == {"motion": 2, "appearance": 2}


# --------------------------------------------------------------------------- the notebooks' cases (08)
def test_chosen_cases_panels_and_the_shown_table():
    ds = _Dataset(4)
    ds.load_image = lambda s: np.zeros((8, 8, 3), np.uint8)
    t, d = ds._square(True), ds._square(False)

    @dataclass
    class Eval:
        per_sample: list

    evals = {"baseline": Eval(_rows_for([d, t, d, t])), "salma": Eval(_rows_for([t, t, t, t]))}
    cases = classify_cases(ds, evals["baseline"].per_sample, evals["salma"].per_sample)
    chosen = chosen_cases(cases, 1)
    assert list(chosen) == list(CASE_CATEGORIES[:2])
    assert list(chosen[CASE_CATEGORIES[0]]["ref_id"]) == [0] and len(chosen[CASE_CATEGORIES[1]]) == 0
    panels = case_panels(ds, chosen, evals)
    assert panels[CASE_CATEGORIES[1]] is None and panels[CASE_CATEGORIES[0]]["titles"] == ["expr 0"]
    assert np.array_equal(panels[CASE_CATEGORIES[0]]["preds"]["baseline"][0], d)
    shown = shown_cases(cases, chosen)
    assert list(shown["shown_as"]) == [CASE_CATEGORIES[0]] and list(shown["ref_id"]) == [0]
    empty = cases.iloc[0:0]
    assert shown_cases(empty, chosen_cases(empty, 2)) is empty


# -------------------------------------------------------------------------- the notebooks' measurements
def test_prior_summaries_average_every_prior_key():
    rows = {"a": [{k: 0.2 for k in PRIOR_KEYS}, {k: 0.4 for k in PRIOR_KEYS}], "b": [{k: 1.0 for k in PRIOR_KEYS}]}
    s = prior_summaries(rows)
    assert list(s) == ["a", "b"] and list(s["a"]) == list(PRIOR_KEYS)
    assert s["a"]["iou_union"] == pytest.approx(0.3) and s["b"]["prior_area"] == 1.0


def test_mba_step_numbers_and_the_attention_check():
    target = np.zeros((4, 4), bool)
    target[:2, :2] = True
    gate = np.zeros((2, 2))
    gate[0, 0] = 1.0
    steps = {"gamma": 0.1, "gate": gate, "eq2_error": 1e-7, "delta_norm": np.full((2, 2), 2.0),
             "feature_norm": np.full((2, 2), 4.0), "gated_norm": gate, "attn_norm": np.ones((2, 2)),
             "attention": np.full((3, 2, 5), 0.5)}
    n = mba_step_numbers(steps, target)
    assert n["gate min"] == 0.0 and n["gate max"] == 1.0 and n["mean ||F_v' - F_v|| / ||F_v||"] == 0.5
    assert n["gate mass on target (%)"] == 100.0 and n["un-gated write on target (%)"] == 25.0
    assert n["target area (%)"] == 25.0
    assert attention_sums_to_one(steps) and not attention_sums_to_one({"attention": np.full((3, 2, 5), 0.4)})


@dataclass
class _FakeModel:
    """A stand-in model: its predictions are (its name, the expression); ``mba`` holds a trained gamma."""

    name: str
    mba: object = None

    def predict(self, image, expression):
        return SimpleNamespace(mask=(self.name, expression))


def test_trained_gammas_distractor_samples_and_the_prediction_panel():
    gammas = trained_gammas({"salma": _FakeModel("s", SimpleNamespace(gamma=torch.tensor(0.25))),
                             "film": _FakeModel("f", SimpleNamespace(gamma=torch.tensor(-0.5, requires_grad=True)))})
    assert gammas == {"salma": 0.25, "film": -0.5} and all(type(g) is float for g in gammas.values())
    ds = _Dataset(3)
    ds.load_image = lambda s: np.zeros((8, 8, 3), np.uint8)
    assert [s.ref_id for s in distractor_samples(ds)] == [0, 1]  # the last sample has no distractor
    samples = [SimpleNamespace(kind="relation", expression=f"expr {k}") for k in range(2)]
    panel = prediction_panel(ds, samples, {"a": _FakeModel("a"), "b": _FakeModel("b")})
    assert set(panel) == {"images", "targets", "preds", "titles"} and len(panel["images"]) == 2
    assert panel["preds"]["b"] == [("b", "expr 0"), ("b", "expr 1")] and panel["titles"] == ["relation: expr 0",
                                                                                            "relation: expr 1"]


def test_map_panels_trace_each_model_and_pick_the_modes(monkeypatch):
    traced = []
    monkeypatch.setattr(measures, "trace_forward", lambda m, im, ex: traced.append((m.name, ex[0])) or m.name)
    monkeypatch.setattr(measures, "mba_write_map", lambda m, t, gated=True: [(t, "gated" if gated else "ungated")])
    monkeypatch.setattr(measures, "language_attention_map", lambda t: [(t, "decoder")])
    models = {v: _FakeModel(v) for v in ("salma", "bias", "film")}
    maps = mba_mode_maps(models, np.zeros((8, 8, 3)), "the cat")
    assert traced == [("salma", "the cat"), ("bias", "the cat"), ("film", "the cat")]
    assert maps == {"gate (SALMA)": ("salma", "gated"), "gate forced to 1": ("salma", "ungated"),
                    "bias": ("bias", "gated"), "FiLM": ("film", "gated")}
    ds = _Dataset(3)
    ds.load_image = lambda s: np.zeros((8, 8, 3), np.uint8)
    panel = spotlight_panel(ds, distractor_samples(ds), _FakeModel("base"), _FakeModel("ours"))
    assert panel["maps"] == {"baseline: decoder": [("base", "decoder")] * 2, "SALMA: decoder": [("ours", "decoder")] * 2,
                             "SALMA: MBA write": [("ours", "gated")] * 2, "SALMA: gate forced to 1": [("ours", "ungated")] * 2}
    assert panel["row_titles"] == ["expr 0", "expr 1"] and len(panel["distractors"]) == 2


def test_attention_rows_by_seed_and_prior_example_panel(monkeypatch):
    monkeypatch.setattr(measures, "attention_rows", lambda m, ds, limit=None, label="model", only_distractor=False:
                        [{"model": label, "limit": limit, "only": only_distractor, "name": m.name}])
    rows = attention_rows_by_seed({("baseline", 0): _FakeModel("b0"), ("salma", 1): _FakeModel("s1")}, None, limit=7)
    assert rows == [{"model": "baseline", "limit": 7, "only": True, "name": "b0", "seed": 0},
                    {"model": "salma", "limit": 7, "only": True, "name": "s1", "seed": 1}]
    monkeypatch.setattr(measures, "prior_and_gate", lambda m, images: (m.name, len(images)))
    monkeypatch.setattr(measures, "union_mask", lambda ds, i: f"union {i}")

    class Images:
        def image_ids(self):
            return [5, 6, 7]

        def load_image(self, i):
            return f"image {i}"

    panel = prior_example_panel(Images(), {"random": _FakeModel("r"), "trained": _FakeModel("t")}, 2)
    assert panel == {"images": ["image 5", "image 6"], "unions": ["union 5", "union 6"],
                     "models": {"random": ("r", 2), "trained": ("t", 2)}}
