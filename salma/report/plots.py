"""The notebooks' figures: mask overlays, heat maps and the plots of every notebook, and the inputs of the bar
and seed plots built from the notebooks' tables. Figures are returned (they show inline in JupyterLab); saving
is ``salma.report.store.save_figure``. No backend is forced here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb

from salma.report.stats import seed_values

TARGET_COLOR, DISTRACTOR_COLOR, PRED_COLOR = "tab:green", "tab:red", "tab:blue"


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def _to_hwc(image) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) image -> (H, W) or (H, W, C) float in [0, 1] for imshow."""
    img = _to_numpy(image).astype(np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.max(initial=0.0) > 1.0 or img.min(initial=0.0) < 0.0:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def show_mask_overlay(ax, image, mask, color: str | Iterable[float] = "tab:red", alpha: float = 0.45,
                      title: str | None = None):
    """Draw ``image`` with ``mask`` overlaid in ``color`` (filled at ``alpha`` plus a contour).

    image: (H, W), (H, W, 3) or (3, H, W), uint8 or float (numpy or torch). mask: (H, W) boolean, or
    probabilities/logits thresholded at 0.5 (probabilities) or 0 (when any value lies outside [0, 1]).
    Returns ``ax``.
    """

    img = _to_hwc(image)
    m = _to_numpy(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dtype != bool:
        m = m > (0.0 if (m.min(initial=0) < 0 or m.max(initial=0) > 1) else 0.5)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image size {img.shape[:2]}")
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    rgba = np.zeros((*m.shape, 4), dtype=np.float32)
    rgba[..., :3] = to_rgb(color) if isinstance(color, str) else tuple(color)[:3]
    rgba[..., 3] = m * alpha
    ax.imshow(rgba)
    if m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=[rgba[0, 0, :3]], linewidths=1.0)
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def _subplots(rows: int, cols: int, size: float = 2.2, **kw):
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, **kw)
    return fig, axes


def _contour(ax, mask, color: str, lw: float = 1.2) -> None:
    m = _to_numpy(mask).astype(float)
    if m.any() and not m.all():
        ax.contour(m, levels=[0.5], colors=[color], linewidths=lw)


def show_heatmap(ax, image, heat, title: str | None = None, contours: Sequence[tuple] = (),
                 cmap: str = "magma", alpha: float = 0.6, vmin: float | None = None, vmax: float | None = None):
    """``image`` (H, W, 3) with a map ``heat`` (h, w), any resolution, stretched over it (nearest cells, so a
    feature cell stays visible as a block), plus contours [(mask (H, W), colour)]. Returns the image artist."""
    img = _to_hwc(image)
    h, w = img.shape[:2]
    ax.imshow(img, vmin=0, vmax=1)
    art = ax.imshow(_to_numpy(heat), cmap=cmap, alpha=alpha, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                    interpolation="nearest", vmin=vmin, vmax=vmax)
    for mask, color in contours:
        _contour(ax, mask, color)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return art


def plot_prior_examples(images: Sequence, unions: Sequence, models: dict[str, tuple]) -> Any:
    """Rows = images; columns = the image with the union of its objects outlined, then per model
    (label -> (prior logits (I, H, W), gates (I, h, w))) the prior logits (diverging, 0 = white) and the
    gate G in [0, 1]."""
    fig, axes = _subplots(len(images), 1 + 2 * len(models))
    for i, (image, union) in enumerate(zip(images, unions)):
        show_mask_overlay(axes[i, 0], image, union, color=TARGET_COLOR, alpha=0.0,
                          title="image, objects outlined" if i == 0 else None)
        axes[i, 0].title.set_fontsize(8)
        for j, (label, (priors, gates)) in enumerate(models.items()):
            lim = float(np.abs(priors[i]).max()) or 1.0
            ax = axes[i, 1 + 2 * j]
            ax.imshow(priors[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
            _contour(ax, union, "k", 0.8)
            ax.set_axis_off()
            show_heatmap(axes[i, 2 + 2 * j], image, gates[i], contours=[(union, "w")], cmap="viridis",
                         vmin=0, vmax=1, alpha=0.75)
            if i == 0:
                ax.set_title(f"{label}: prior logits M", fontsize=8)
                axes[i, 2 + 2 * j].set_title(f"{label}: gate G=σ(M/τ)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_grouped_bars(groups: dict[str, dict[str, float]], ylabel: str, title: str = "",
                      errors: dict[str, dict[str, float]] | None = None, ax=None, ylim=None):
    """Bars of {group label: {series label: value}} side by side (e.g. models x metrics), optional error
    bars with the same keys. Returns the Figure."""

    fig = ax.figure if ax is not None else plt.figure(figsize=(7, 3.2))
    ax = ax if ax is not None else fig.add_subplot(111)
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, s in enumerate(series):
        vals = [groups[g].get(s, np.nan) for g in groups]
        err = [(errors or {}).get(g, {}).get(s, np.nan) for g in groups] if errors else None
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=s,
               yerr=None if err is None else np.nan_to_num(err), capsize=3)
    ax.set_xticks(x, list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_router(steps: dict) -> Any:
    """Router scores s_i = MLP(t_i) of an expression's tokens; the top-K picks highlighted (``probe.mba_steps``)."""

    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(steps["tokens"])), 2.6))
    picked = {int(i) for i in steps["selected"] if i >= 0}
    colors = ["tab:orange" if i in picked else "tab:gray" for i in range(len(steps["tokens"]))]
    ax.bar(range(len(steps["tokens"])), steps["router_scores"], color=colors)
    ax.set_xticks(range(len(steps["tokens"])), steps["tokens"], rotation=30, fontsize=8)
    ax.set_ylabel("router score s_i")
    ax.set_title(f"router: top-{len(steps['selected'])} picks in orange: {', '.join(steps['selected_words'])}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def plot_attention_heads(image, steps: dict) -> Any:
    """The raw MBA softmax weights A[head, position, pick] as maps: rows = picked tokens, columns = heads.
    (Per position the weights sum to 1 over the picks, so a map is a token's share of each position.)"""
    attn = steps["attention"]  # (heads, K, h, w)
    heads, k = attn.shape[:2]
    fig, axes = _subplots(k, heads, size=1.6)
    for j in range(k):
        for hd in range(heads):
            show_heatmap(axes[j, hd], image, attn[hd, j], vmin=0, vmax=1, cmap="viridis",
                         title=f"'{steps['selected_words'][j]}' head {hd}")
    fig.tight_layout()
    return fig


def plot_mba_panel(image, expression: str, steps: dict, target=None) -> Any:
    """A Figure-3-style panel of one MBA pass: image -> prior gate G -> attention (mean over heads, top pick)
    -> ||O_attn|| -> ||G * O_attn|| -> ||F_v' - F_v|| = |gamma| ||G * O_attn||."""
    panels = [("gate G = σ(M/τ)", steps["gate"], (0, 1)),
              (f"attention to '{steps['selected_words'][0]}'", steps["attention"][:, 0].mean(0), (0, 1)),
              ("||O_attn||", steps["attn_norm"], None), ("||G · O_attn||", steps["gated_norm"], None),
              (f"||F_v' - F_v||, γ={steps['gamma']:+.3g}", steps["delta_norm"], None)]
    fig, axes = _subplots(1, 1 + len(panels), size=2.3)
    contours = [(target, TARGET_COLOR)] if target is not None else []
    show_mask_overlay(axes[0, 0], image, target if target is not None else np.zeros(_to_hwc(image).shape[:2], bool),
                      color=TARGET_COLOR, title=f"'{expression}'")
    axes[0, 0].title.set_fontsize(8)
    for ax, (title, m, lim) in zip(axes[0, 1:], panels):
        show_heatmap(ax, image, m, title=title, contours=contours, cmap="viridis",
                     vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1], alpha=0.75)
    fig.tight_layout()
    return fig


def plot_map_grid(images: Sequence, maps: dict[str, Sequence], targets: Sequence | None = None,
                  distractors: Sequence | None = None, row_titles: Sequence[str] | None = None) -> Any:
    """Rows = examples; columns = the image, then one heat map per label (label -> maps (h, w) per row),
    target outlined in green and distractor in red; each map on its own colour scale."""
    fig, axes = _subplots(len(images), 1 + len(maps), size=2.2)
    for i, image in enumerate(images):
        contours = ([(targets[i], TARGET_COLOR)] if targets is not None else []) + \
                   ([(distractors[i], DISTRACTOR_COLOR)] if distractors is not None and distractors[i] is not None else [])
        show_heatmap(axes[i, 0], image, np.zeros((1, 1)), contours=contours, alpha=0.0,
                     title=row_titles[i] if row_titles else None)
        for j, (label, ms) in enumerate(maps.items()):
            show_heatmap(axes[i, 1 + j], image, ms[i], contours=contours, cmap="magma",
                         title=label if i == 0 else None, alpha=0.7)
    fig.tight_layout()
    return fig


def plot_edges(gt, cases: dict[str, tuple]) -> Any:
    """Rows = cases (label -> (logits (1, 1, H, W), gt edge map, pred edge map)); columns = sigmoid(pred)
    with the GT outlined, Sobel |∇GT|, Sobel |∇σ(pred)|, their absolute difference (what L_bound averages)."""
    fig, axes = _subplots(len(cases), 4, size=2.1)
    for i, (label, (logits, e_gt, e_pred)) in enumerate(cases.items()):
        prob = 1 / (1 + np.exp(-_to_numpy(logits)[0, 0]))
        for j, (m, title) in enumerate([(prob, f"{label}: σ(pred)"), (e_gt, "Sobel |∇ GT|"),
                                        (e_pred, "Sobel |∇ σ(pred)|"), (np.abs(e_pred - e_gt), "|difference|")]):
            axes[i, j].imshow(m, cmap="gray" if j == 0 else "inferno", vmin=0, vmax=1 if j == 0 else 1.1)
            _contour(axes[i, j], gt, TARGET_COLOR, 0.8)
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].set_axis_off()
    fig.tight_layout()
    return fig


def plot_lines(rows: Sequence[dict], x: str, ys: Sequence[str], ax=None, title: str = "", ylabel: str = "",
               logx: bool = False, styles: dict[str, str] | None = None) -> Any:
    """Line plot of columns ``ys`` against ``x`` from a list of dict rows (missing values skipped)."""

    fig = ax.figure if ax is not None else plt.figure(figsize=(4.5, 3))
    ax = ax if ax is not None else fig.add_subplot(111)
    for y in ys:
        pts = [(r[x], r[y]) for r in rows if y in r and r[y] is not None and np.isfinite(r[y])]
        if pts:
            ax.plot(*zip(*pts), (styles or {}).get(y, "-o"), label=y, markersize=3)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=7)
    return fig


def plot_training_log(log: Sequence[dict], losses: Sequence[str], schedules: Sequence[str]) -> Any:
    """Left: every loss component per step (log scale when all positive); right: the schedules (learning
    rate, gamma warm-up factor, auxiliary-loss warm-up factor) and the learnable gamma."""

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    plot_lines(log, "step", [k for k in losses if any(k in r for r in log)], ax=axes[0], title="loss components",
               styles={k: "-" for k in losses})
    if all(r[k] > 0 for r in log for k in losses if k in r):
        axes[0].set_yscale("log")
    present = [k for k in schedules if any(k in r for r in log)]
    lr_max = max((r.get("lr", 0) for r in log), default=1) or 1
    scaled = [{**r, "lr / max lr": r["lr"] / lr_max} if "lr" in r else r for r in log]
    keys = ["lr / max lr" if k == "lr" else k for k in present]
    plot_lines(scaled, "step", keys, ax=axes[1], title="schedules and gamma", styles={k: "-" for k in keys})
    fig.tight_layout()
    return fig


def plot_predictions(images: Sequence, targets: Sequence, preds: dict[str, Sequence], titles: Sequence[str]) -> Any:
    """Rows = examples; columns = the GT on the image, then each model's predicted mask (label -> masks)."""
    fig, axes = _subplots(len(images), 1 + len(preds), size=2.2)
    for i, image in enumerate(images):
        show_mask_overlay(axes[i, 0], image, targets[i], color=TARGET_COLOR, title=titles[i])
        axes[i, 0].title.set_fontsize(7)
        for j, (label, masks) in enumerate(preds.items()):
            show_mask_overlay(axes[i, 1 + j], image, masks[i], color=PRED_COLOR, title=label if i == 0 else None)
            _contour(axes[i, 1 + j], targets[i], TARGET_COLOR, 0.8)
    fig.tight_layout()
    return fig


def _zoom(ax, values: Sequence[float]) -> None:
    # Differences of a point or two are the subject: both panels zoom the same way (and say so).
    v = [x for x in values if np.isfinite(x)]
    if v:
        lo, hi = min(v), max(v)
        pad = max(1.0, 0.5 * (hi - lo))
        ax.set_ylim(max(0.0, lo - 2 * pad), hi + pad)


def plot_seed_points(per_seed: dict[str, dict[int, float]], ylabel: str, paper: dict[str, float] | None = None,
                     paper_label: str = "paper", title: str = "", floors: dict[str, float] | None = None) -> Any:
    """Mean ± std over seeds (bars) with every seed as a dot, per label; ``floors`` ({name: value}, same
    scale) as dashed horizontal lines; the paper's numbers, on their own benchmark, in a second panel so that
    the two scales are never mixed on one axis."""

    n = 2 if paper else 1
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.4), squeeze=False)
    ax = axes[0, 0]
    for i, (label, vals) in enumerate(per_seed.items()):
        v = np.array(list(vals.values()), dtype=float)
        ax.bar(i, v.mean() if v.size else np.nan, yerr=v.std(ddof=1) if v.size > 1 else 0, capsize=4,
               color="tab:blue", alpha=0.5)
        ax.plot(np.full(v.size, i), v, "ko", markersize=3)
    ax.set_xticks(range(len(per_seed)), list(per_seed), rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "ours (bars: mean ± std over seeds; dots: seeds; zoomed axis)", fontsize=9)
    for (name, value), style in zip((floors or {}).items(), ("--", ":", "-.", (0, (1, 3)))):
        ax.axhline(value, color="tab:red", linestyle=style, linewidth=1, label=name)
    if floors:
        ax.legend(fontsize=7, loc="best")
    _zoom(ax, [x for vals in per_seed.values() for x in vals.values()] + list((floors or {}).values()))
    if paper:
        axes[0, 1].bar(range(len(paper)), list(paper.values()), color="tab:gray")
        axes[0, 1].set_xticks(range(len(paper)), list(paper), rotation=20, fontsize=8)
        _zoom(axes[0, 1], list(paper.values()))
        axes[0, 1].set_title(f"{paper_label} (zoomed axis)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_cases(images: Sequence, targets: Sequence, distractors: Sequence, preds: dict[str, Sequence],
               titles: Sequence[str], pred_titles: dict[str, Sequence[str]] | None = None) -> Any:
    """Figure-4 style: rows = cases; columns = the image with target (green) and distractor (red) outlined,
    then each model's mask (label -> masks) filled in blue over the same outlines; ``pred_titles`` (label ->
    one title per case) replaces the column label above each mask."""
    fig, axes = _subplots(max(1, len(images)), 1 + len(preds), size=2.3)
    for i, image in enumerate(images):
        show_heatmap(axes[i, 0], image, np.zeros((1, 1)), alpha=0.0, title=titles[i],
                     contours=[(targets[i], TARGET_COLOR), (distractors[i], DISTRACTOR_COLOR)])
        axes[i, 0].title.set_fontsize(7)
        for j, (label, masks) in enumerate(preds.items()):
            title = pred_titles[label][i] if pred_titles and label in pred_titles else label
            show_mask_overlay(axes[i, 1 + j], image, masks[i], color=PRED_COLOR, title=title)
            axes[i, 1 + j].title.set_fontsize(7)
            _contour(axes[i, 1 + j], targets[i], TARGET_COLOR, 0.8)
            _contour(axes[i, 1 + j], distractors[i], DISTRACTOR_COLOR, 0.8)
    if not images:
        axes[0, 0].text(0.5, 0.5, "no case of this kind", ha="center", va="center")
        for ax in axes.ravel():
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_area_bins(table, baseline: str = "baseline", model: str = "salma") -> Any:
    """Paper Table 4 as bars: ours (mean ± std over seeds) by area bin for the two models, and the paper's
    RefCOCOg val numbers in a second panel (a different benchmark, never on the same axis)."""

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    bins = [f"{b}\n(N={n})" for b, n in zip(table["area bin"], table["N (ours)"])]
    ours = {b: {baseline: m0, model: m1} for b, m0, m1 in zip(bins, table["baseline mean"], table["model mean"])}
    errs = {b: {baseline: s0, model: s1} for b, s0, s1 in zip(bins, table["baseline std"], table["model std"])}
    plot_grouped_bars(ours, "cIoU (%)", "ours: SynRef val (mean ± std over seeds)", errors=errs, ax=axes[0])
    pbins = [f"{b}\n(N={n})" for b, n in zip(table["area bin"], table["paper N"])]
    theirs = {b: {"Sa2VA-1B": p0, "SALMA": p1} for b, p0, p1 in
              zip(pbins, table["paper: baseline RefCOCOg val cIoU (%)"], table["paper: SALMA RefCOCOg val cIoU (%)"])}
    plot_grouped_bars(theirs, "cIoU (%)", "paper: RefCOCOg val (Table 4)", ax=axes[1])
    fig.tight_layout()
    return fig


# ``plot_cases(**NO_CASES)`` draws the "no case of this kind" panel (a category can be empty).
NO_CASES: dict[str, Any] = {"images": [], "targets": [], "distractors": [], "preds": {}, "titles": []}


def plot_video_strip(frames: Sequence, expression: str, gt: Sequence, heat_rows: dict[str, Sequence] | None = None,
                     mask_rows: dict[str, Sequence] | None = None, frame_ids: Sequence[int] | None = None,
                     conditioning: Sequence[int] = ()) -> Any:
    """A clip as a frame strip: one column per frame (``frame_ids``, default all), rows = the frames with the
    ground truth outlined (green), then one row per map in ``heat_rows`` ({label: [(h, w) map per frame]},
    e.g. the per-frame prior and gate) and one per prediction in ``mask_rows`` ({label: (T, H, W) bool}),
    red overlay with the ground truth in green. Frames the MLLM read (``conditioning``) are marked "cond"."""
    heat_rows, mask_rows = dict(heat_rows or {}), dict(mask_rows or {})
    ids = list(frame_ids) if frame_ids is not None else list(range(len(frames)))
    n_rows = 1 + len(heat_rows) + len(mask_rows)
    fig, axes = _subplots(n_rows, len(ids), size=1.35)
    for c, t in enumerate(ids):
        show_mask_overlay(axes[0, c], frames[t], np.zeros(np.asarray(gt[t]).shape, bool))
        _contour(axes[0, c], gt[t], "lime")
        axes[0, c].set_title(f"t={t}" + (" cond" if t in conditioning else ""), fontsize=7)
        for r, (label, maps) in enumerate(heat_rows.items(), start=1):
            show_heatmap(axes[r, c], frames[t], maps[t], contours=[(gt[t], "lime")])
        for r, (label, masks) in enumerate(mask_rows.items(), start=1 + len(heat_rows)):
            show_mask_overlay(axes[r, c], frames[t], masks[t])
            _contour(axes[r, c], gt[t], "lime", lw=0.8)
    for r, label in enumerate(["frames + GT"] + list(heat_rows) + list(mask_rows)):
        axes[r, 0].set_axis_on()
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f'"{expression}"', fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- plot inputs
# notebook 01's bars: label -> the ``prior_overlap_rows`` quantity shown; the two gate shares get a chance bar
PRIOR_BARS: dict[str, str] = {"IoU(M>0, union)": "iou_union", "IoU(M>0, target)": "iou_target",
                              "target recall": "target_recall", "gate mass on objects": "gate_share_union",
                              "gate mass on target": "gate_share_target"}


def prior_bar_groups(summary: dict[str, dict[str, float]], chance_from: str = "foundation") -> dict[str, dict[str, float]]:
    """``plot_grouped_bars``' groups for notebook 01: per ``PRIOR_BARS`` label, each model's value (%), and
    beside the gate shares their chance level (the objects' and the target's area, from ``chance_from``)."""
    groups = {label: {name: 100 * s[key] for name, s in summary.items()} for label, key in PRIOR_BARS.items()}
    groups["gate mass on objects"]["chance (area)"] = 100 * summary[chance_from]["union_ratio"]
    groups["gate mass on target"]["chance (area)"] = 100 * summary[chance_from]["area_ratio"]
    return groups


def kind_bar_groups(kinds, variants: Sequence[str], subsets: Sequence[str] | None = None
                    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``plot_grouped_bars``' (groups, errors) from ``kind_table``: per subset (``subsets``, default the
    table's, in its order: "all" then the kinds) each variant's mean and std over seeds (%)."""
    subsets = list(dict.fromkeys(kinds["subset"])) if subsets is None else list(subsets)

    def cell(variant: str, subset: str, column: str) -> float:
        return kinds[(kinds.variant == variant) & (kinds.subset == subset)][column].item()

    return ({k: {v: cell(v, k, "mean") for v in variants} for k in subsets},
            {k: {v: cell(v, k, "std") for v in variants} for k in subsets})


def attention_bar_groups(table) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``plot_grouped_bars``' (groups, errors) from ``attention_table``: per "<model>: <map>" the target and
    distractor shares (mean, std over seeds, %), then the chance levels (the masks' area) without error bar."""
    # r["map"], not r.map: on a row (a Series) the attribute is Series.map, the method
    groups = {f"{r['model']}: {r['map']}": {"target": r["target mean"], "distractor": r["distractor mean"]}
              for _, r in table.iterrows()}
    errors = {f"{r['model']}: {r['map']}": {"target": r["target std"], "distractor": r["distractor std"]}
              for _, r in table.iterrows()}
    groups["chance (area)"] = {"target": table["chance target (%)"].iloc[0],
                               "distractor": table["chance distractor (%)"].iloc[0]}
    return groups, errors


def seed_points(df, variants: Sequence[str], metric: str = "cIoU", subset: str = "all") -> dict[str, dict[int, float]]:
    """``plot_seed_points``' input: {variant: {seed: ``metric`` in %}} from ``run_rows``' table."""
    return {v: {s: 100 * x for s, x in seed_values(df, v, subset, metric).items()} for v in variants}


def video_seed_points(df, variants: Sequence[str], modes: Sequence[str] = ("per_frame", "released"),
                      metric: str = "J&F") -> dict[str, dict[int, float]]:
    """``plot_seed_points``' input for notebook 10: {"<variant> (<mode>)": {seed: ``metric`` in %}}, mode by
    mode. ``df``: ``video_run_rows``' table."""
    return {f"{v} ({m})": seed_points(df[df["mode"] == m], [v], metric)[v] for m in modes for v in variants}


def floor_points(floors, subset: str = "all", metric: str = "J&F") -> dict[str, float]:
    """``plot_seed_points``' ``floors``: {floor: ``metric`` in %} on one subset of ``video_floor_rows``."""
    return {r["floor"]: 100 * r[metric] for r in floors[floors["subset"] == subset].to_dict("records")}


def video_heat_rows(example: dict) -> dict[str, Any]:
    """``plot_video_strip``'s ``heat_rows`` for ``video_example``: the prior and the gate ({} without MBA)."""
    return {"prior M": example["prior"], "gate σ(M/τ)": example["gate"]} if example["prior"] is not None else {}
