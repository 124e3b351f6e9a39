"""Tests for salma.report.tables: statistics over seeds, the tables, attention-mass shares and the case rule, on
hand-built inputs whose answers are known."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from salma.report.cases import (
    CASE_CATEGORIES,
    CaseRule,
    case_counts,
    case_panel,
    classify_cases,
    distractor_ious,
    select_cases,
)
from salma.report.measures import cell_fraction, mask_iou, mass_share, summarise
from salma.report.stats import (
    compare,
    floor_verdict,
    format_pm,
    mean_std,
    prior_verdict,
    sign_test_p,
    sign_test_verdict,
)
from salma.report.tables import (
    VIDEO_KIND_NAMES,
    ablation_table,
    area_bin_table,
    attention_table,
    kind_table,
    log_summary,
    per_seed_share,
    share_table,
    video_jf_table,
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
