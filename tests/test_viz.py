"""Tests for salma.report.store: where figures, tables and result files land, and that every plot of the notebooks
draws from inputs of the shapes the notebooks pass (matplotlib's agg backend, set by conftest)."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from salma.paths import FIGURES_ENV
from salma.report.plots import (
    NO_CASES,
    PRIOR_BARS,
    attention_bar_groups,
    floor_points,
    kind_bar_groups,
    plot_area_bins,
    plot_attention_heads,
    plot_cases,
    plot_edges,
    plot_grouped_bars,
    plot_lines,
    plot_map_grid,
    plot_mba_panel,
    plot_predictions,
    plot_prior_examples,
    plot_router,
    plot_seed_points,
    plot_training_log,
    prior_bar_groups,
    seed_points,
    video_heat_rows,
    video_seed_points,
)
from salma.report.store import save_figure, save_json, save_table
from salma.report.tables import kind_table
from salma.train.foundation import plot_foundation_curve


@pytest.fixture(autouse=True)
def figures(tmp_path, monkeypatch):
    monkeypatch.setenv(FIGURES_ENV, str(tmp_path))
    yield tmp_path
    plt.close("all")


def test_save_figure_table_json(figures):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert save_figure(fig, "01_x") == figures / "01_x.png" and (figures / "01_x.png").stat().st_size > 0
    csv, md = save_table([{"a": 1.5, "b": "x|y"}], "01_t")
    assert pd.read_csv(csv)["a"].tolist() == [1.5] and "x\\|y" in md.read_text()
    save_json({"v": np.float32(0.5), "nan": float("nan"), "arr": np.arange(2)}, "01_r")
    saved = json.loads((figures / "01_r.json").read_text())
    provenance = saved.pop("provenance")
    assert saved == {"v": 0.5, "nan": None, "arr": [0, 1]}
    assert set(provenance) == {"date", "git_commit", "git_dirty", "machine", "device", "preset", "command", "notebook"}
    assert provenance["notebook"] == "01_r" and provenance["preset"] is None and provenance["date"].startswith("20")
    with pytest.raises(ValueError, match="plain file stem"):
        save_figure(fig, "../x")


def _image(size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)


def _mask(size: int = 16, left: bool = True) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[4:8, 2:6] = left
    m[8:12, 10:14] = not left
    return m


def test_map_plots_draw():
    steps = {"tokens": ["the", "red", "square"], "router_scores": np.array([0.1, 0.5, 0.3]),
             "selected": np.array([1, 2]), "selected_words": ["red", "square"],
             "attention": np.full((2, 2, 4, 4), 0.5), "gate": np.random.rand(4, 4), "attn_norm": np.random.rand(4, 4),
             "gated_norm": np.random.rand(4, 4), "delta_norm": np.random.rand(4, 4), "gamma": 0.01}
    figs = [plot_router(steps), plot_attention_heads(_image(), steps),
            plot_mba_panel(_image(), "the red square", steps, _mask()),
            plot_map_grid([_image()] * 2, {"a": [np.random.rand(4, 4)] * 2}, [_mask()] * 2, [_mask(left=False), None],
                              ["x", "y"]),
            plot_prior_examples([_image()], [_mask()], {"m": (np.random.randn(1, 16, 16), np.random.rand(1, 4, 4))})]
    assert all(len(f.axes) > 0 for f in figs)


def test_curve_and_bar_plots_draw():
    rows = [{"shift": s, "seg": s * 0.1, "boundary": min(s, 3) * 0.01} for s in range(6)]
    assert plot_lines(rows, "shift", ["seg", "boundary", "absent"]).axes
    log = [{"step": i + 1, "total": 3.0 - 0.1 * i, "seg": 1.0, "lr": 1e-4, "gamma_scale": min(1, i / 2),
            "aux_scale": 1.0, "gamma": 0.001 * i} for i in range(8)]
    assert len(plot_training_log(log, ["total", "seg", "tmc"], ["lr", "gamma_scale", "gamma"]).axes) == 2
    # the foundation's curve: stage 0 logs "total", stage 1 "seg" and, every few steps, "val_ciou"
    log0 = [{"step": i + 1, "total": 4.0 - 0.01 * i} for i in range(60)]
    log1 = [{"step": i + 1, "seg": 1.7 - 0.01 * i, **({"val_ciou": 0.1 + i / 100} if i % 20 == 19 else {})}
            for i in range(60)]
    fig = plot_foundation_curve(log0, log1)
    assert len(fig.axes) == 3  # two stages, stage 1 with a val cIoU axis
    ciou_line = fig.axes[2].lines[0]
    assert list(ciou_line.get_xdata()) == [20, 40, 60] and list(ciou_line.get_ydata()) == pytest.approx([0.29, 0.49, 0.69])
    fig = plot_grouped_bars({"all": {"a": 1.0, "b": 2.0}, "x": {"a": 3.0}}, "%", errors={"all": {"a": 0.1}})
    assert fig.axes
    fig = plot_seed_points({"baseline": {0: 50.0, 1: 52.0}, "salma": {0: 55.0}}, "cIoU", paper={"b": 77.4})
    assert len(fig.axes) == 2
    table = pd.DataFrame({"area bin": ["<1%", "all"], "N (ours)": [3, 10], "baseline mean": [10.0, 50.0],
                          "model mean": [12.0, 51.0], "baseline std": [1.0, math.nan], "model std": [1.0, 0.5],
                          "paper N": [35, 4896], "paper: baseline RefCOCOg val cIoU (%)": [37.1, 77.8],
                          "paper: SALMA RefCOCOg val cIoU (%)": [33.2, 78.0]})
    assert len(plot_area_bins(table).axes) == 2


def test_mask_plots_draw():
    import torch

    logits = torch.randn(1, 1, 16, 16)
    e = np.random.rand(16, 16)
    assert len(plot_edges(_mask(), {"a": (logits, e, e)}).axes) == 4
    assert len(plot_predictions([_image()], [_mask()], {"m": [_mask(left=False)]}, ["t"]).axes) == 2
    fig = plot_cases([_image()], [_mask()], [_mask(left=False)], {"baseline": [_mask(left=False)]}, ["expr"],
                         {"baseline": ["baseline: t 0.00 / d 1.00"]})
    assert fig.axes[1].get_title() == "baseline: t 0.00 / d 1.00"
    assert plot_cases(**NO_CASES).axes[0].texts  # "no case of this kind"


# ------------------------------------------------------------------------------------- plot inputs
def test_prior_bar_groups_add_chance_to_the_gate_shares():
    s = {k: 0.5 for k in ("iou_union", "iou_target", "target_recall", "gate_share_union", "gate_share_target")}
    summary = {"random SAM-2": {**s, "union_ratio": 0.9, "area_ratio": 0.9},
               "foundation": {**s, "iou_union": 0.75, "union_ratio": 0.3, "area_ratio": 0.1}}
    groups = prior_bar_groups(summary)
    assert list(groups) == list(PRIOR_BARS)
    assert groups["IoU(M>0, union)"] == {"random SAM-2": 50.0, "foundation": 75.0}
    assert groups["gate mass on objects"]["chance (area)"] == pytest.approx(30.0)  # the foundation's areas
    assert groups["gate mass on target"]["chance (area)"] == pytest.approx(10.0)
    assert "chance (area)" not in groups["target recall"]
    assert plot_grouped_bars(groups, "%").axes


def _kind_rows() -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "seed": s, "subset": k, "cIoU": x + 0.1 * s, "N": 10}
                         for v, x in (("baseline", 0.5), ("salma", 0.6)) for s in (0, 1)
                         for k in ("all", "attribute", "distractor", "relation")])


def test_kind_bar_groups_hold_the_means_and_stds_of_kind_table():
    kinds = kind_table(_kind_rows(), ["baseline", "salma"])
    groups, errors = kind_bar_groups(kinds, ["salma", "baseline"])
    assert list(groups) == ["all", "attribute", "distractor", "relation"] and list(groups["all"]) == ["salma", "baseline"]
    assert groups["distractor"]["salma"] == pytest.approx(65.0)
    assert errors["all"]["baseline"] == pytest.approx(100 * np.std([0.5, 0.6], ddof=1))
    assert list(kind_bar_groups(kinds, ["salma"], subsets=["relation"])[0]) == ["relation"]


def test_attention_bar_groups_one_bar_pair_per_model_and_map_then_chance():
    table = pd.DataFrame([{"model": "baseline", "map": "decoder", "target mean": 20.0, "target std": 1.0,
                           "distractor mean": 30.0, "distractor std": 2.0, "chance target (%)": 5.0,
                           "chance distractor (%)": 6.0},
                          {"model": "salma", "map": "mba", "target mean": 40.0, "target std": 3.0,
                           "distractor mean": 10.0, "distractor std": 4.0, "chance target (%)": 5.0,
                           "chance distractor (%)": 6.0}])
    groups, errors = attention_bar_groups(table)
    assert list(groups) == ["baseline: decoder", "salma: mba", "chance (area)"]
    assert groups["salma: mba"] == {"target": 40.0, "distractor": 10.0}
    assert groups["chance (area)"] == {"target": 5.0, "distractor": 6.0} and "chance (area)" not in errors
    assert errors["baseline: decoder"] == {"target": 1.0, "distractor": 2.0}


def test_seed_and_floor_points_are_in_percent():
    df = _kind_rows()
    assert seed_points(df, ["salma", "baseline"]) == {"salma": pytest.approx({0: 60.0, 1: 70.0}),
                                                      "baseline": pytest.approx({0: 50.0, 1: 60.0})}
    video = pd.DataFrame([{"variant": v, "seed": 0, "mode": m, "subset": "all", "J&F": x}
                          for v in ("baseline", "salma") for m, x in (("per_frame", 0.4), ("released", 0.3))])
    points = video_seed_points(video, ["baseline", "salma"])
    assert list(points) == ["baseline (per_frame)", "salma (per_frame)", "baseline (released)", "salma (released)"]
    assert points["salma (released)"] == pytest.approx({0: 30.0})
    floors = pd.DataFrame([{"floor": f, "subset": s, "J&F": x} for f, x in (("largest", 0.25), ("first", 0.5))
                           for s in ("all", "motion")])
    assert floor_points(floors) == {"largest": 25.0, "first": 50.0}
    assert plot_seed_points(points, "J&F (%)", floors=floor_points(floors)).axes


def test_video_heat_rows_only_with_a_prior():
    prior, gate = np.zeros((2, 8, 8)), np.ones((2, 4, 4))
    assert video_heat_rows({"prior": None, "gate": None}) == {}
    rows = video_heat_rows({"prior": prior, "gate": gate})
    assert list(rows) == ["prior M", "gate σ(M/τ)"] and rows["gate σ(M/τ)"] is gate
