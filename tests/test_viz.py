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
)
from salma.report.store import save_figure, save_json, save_table
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
