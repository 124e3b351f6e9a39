"""Result analysis for the notebooks: paper Sec. 4, Tables 2-4, Fig. 4-5 (and the prior of Sec. 3.2).

- Runs: every notebook gets its fine-tuning runs through ``run_grid`` (``salma.experiments.finetune`` under
  the repository's ``runs/``), so notebooks 04-08 share the same cached runs.
- Tables 2-3 (ablation) and Table 4 (area bins): per-seed rows from the runs' val metrics, then mean and
  sample standard deviation over seeds, with the paper's numbers (``salma.paper``) in columns labelled
  "paper". Differences between two variants are paired by seed.
- Verdicts: a computed sentence stating what a measured difference supports (``Comparison.verdict``,
  ``sign_test_verdict``), so a notebook's conclusion is produced by a rule, not written after the fact.
- The structural prior (Sec. 3.2): how the dummy-prompt pre-pass overlaps the objects and the target.
- Fig. 5: the share of attention mass inside the target and the distractor masks (``mass_share``).
- Fig. 4: the rule that picks qualitative cases (``classify_cases``): a model "picks the distractor" on a
  sample when its mask's IoU with a distractor exceeds its IoU with the target.

Conventions: cIoU values from runs are fractions in [0, 1]; tables show them in percent ("points").
Standard deviations are sample standard deviations (ddof = 1) over seeds, NaN with one seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from salma import paper
from salma.metrics import AREA_BINS

if TYPE_CHECKING:
    import pandas as pd

KIND_NAMES: tuple[str, ...] = ("attribute", "distractor", "relation")
BIN_NAMES: tuple[str, ...] = tuple(name for name, _ in AREA_BINS) + ("all",)


# ------------------------------------------------------------------------------------------------ runs
def runs_root() -> Path:
    """Where the notebooks' runs live: ``salma.experiments.default_runs_root()`` (``$SALMA_RUNS_DIR`` if set,
    else the repository's ``runs/``, whatever the working directory); every notebook shares these runs."""
    from salma.experiments import default_runs_root

    return default_runs_root()


def _grid(run_one, variants: Sequence[str], seeds: Sequence[int]) -> dict[str, dict[int, object]]:
    """{variant: {seed: run_one(variant, seed)}} after checking the names (shared by the image and video grids)."""
    from salma.experiments import VARIANTS

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; accepted values: {', '.join(VARIANTS)}")
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. [0]")
    return {v: {int(s): run_one(v, int(s)) for s in seeds} for v in variants}


def run_grid(preset: str, variants: Sequence[str], seeds: Sequence[int], steps: int | None = None,
             progress: bool = True) -> dict[str, dict[int, object]]:
    """Fine-tune (or reuse from the run cache) every variant at every seed from the preset's foundation.

    Returns {variant: {seed: RunResult}}. The first call trains; later calls (other notebooks) reuse.
    """
    from salma.experiments import finetune

    return _grid(lambda v, s: finetune(preset, v, seed=s, steps=steps, runs_root=runs_root(), progress=progress),
                 variants, seeds)


def run_rows(runs: Mapping[str, Mapping[int, object]]) -> pd.DataFrame:
    """Long table of the runs' val metrics: one row per (variant, seed, subset) with cIoU, gIoU (fractions)
    and N. ``runs`` as returned by ``run_grid``."""
    import pandas as pd

    rows = [{"variant": v, "seed": s, **r} for v, by_seed in runs.items() for s, res in by_seed.items()
            for r in res.metrics["val"]]
    return pd.DataFrame(rows)


VIDEO_KIND_NAMES: tuple[str, ...] = ("appearance", "motion")


def video_run_grid(preset: str, variants: Sequence[str], seeds: Sequence[int], steps: int | None = None,
                   progress: bool = True) -> dict[str, dict[int, object]]:
    """``run_grid`` for video: every variant fine-tuned on SynRef-Video at every seed from the preset's image
    foundation (``salma.experiments.finetune_video``; cached). Returns {variant: {seed: RunResult}}."""
    from salma.experiments import finetune_video

    return _grid(lambda v, s: finetune_video(preset, v, seed=s, steps=steps, runs_root=runs_root(),
                                             progress=progress), variants, seeds)


def video_run_rows(runs: Mapping[str, Mapping[int, object]]) -> pd.DataFrame:
    """Long table of the video runs' J&F: one row per (variant, seed, mode, subset) with J, F, J&F (fractions)
    and N; ``mode`` is ``per_frame`` or ``released`` (``salma.video``). ``runs`` as from ``video_run_grid``."""
    import pandas as pd

    rows = [{"variant": v, "seed": s, "mode": mode, **r} for v, by_seed in runs.items() for s, res in by_seed.items()
            for mode, mode_rows in res.metrics["video_val"].items() for r in mode_rows]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- statistics
def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with ddof=1, n) of finite values; std is NaN when n < 2 and both are
    NaN when n == 0."""
    v = np.array([x for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def format_pm(mean: float, std: float, n: int, digits: int = 1) -> str:
    """"78.2 ± 0.4 (n=3)"; "78.2 (n=1)" without a spread; "-" when there is no value."""
    if n == 0 or not math.isfinite(mean):
        return "-"
    if n < 2 or not math.isfinite(std):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


@dataclass
class Comparison:
    """A difference b - a paired by seed, in points (percent). diffs: per-seed differences; mean, std
    (ddof=1, NaN with one seed), n, se = std / sqrt(n)."""

    name_a: str
    name_b: str
    what: str
    diffs: dict[int, float]
    mean: float
    std: float
    n: int

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 and math.isfinite(self.std) else float("nan")

    @property
    def separated(self) -> bool:
        """True when |mean| exceeds two standard errors (needs at least 2 seeds and a non-zero spread)."""
        if self.n < 2 or not math.isfinite(self.se):
            return False
        return abs(self.mean) > 2 * self.se if self.se > 0 else self.mean != 0

    def verdict(self) -> str:
        """One sentence: the measured difference and whether it stands out of the seed-to-seed noise."""
        head = f"{self.name_b} - {self.name_a} on {self.what} = {self.mean:+.2f}"
        if self.n < 2:
            return (f"{head} points with 1 seed: no estimate of the seed-to-seed spread, so this measurement "
                    "cannot tell the difference from noise (run more seeds).")
        spread = f"{head} ± {self.std:.2f} points over {self.n} seeds (paired by seed; standard error {self.se:.2f})"
        if not self.separated:
            return f"{spread}: within noise (|difference| <= 2 standard errors); no effect is supported."
        better = self.name_b if self.mean > 0 else self.name_a
        if abs(self.mean) < NEGLIGIBLE_POINTS:
            # Runs from one foundation share most of their noise, so a tiny difference can clear 2 standard
            # errors; it is reported as consistent but too small to matter, not as one method being better.
            return (f"{spread}: larger than 2 standard errors but below {NEGLIGIBLE_POINTS} point, a consistent "
                    f"difference too small to matter ({better} higher); no practical effect is supported.")
        return f"{spread}: larger than 2 standard errors; {better} is better on this benchmark."


# A difference below this many points (cIoU or J&F, in %) is called negligible whatever its standard error.
NEGLIGIBLE_POINTS = 0.5


def compare(a: Mapping[int, float], b: Mapping[int, float], name_a: str, name_b: str, what: str = "cIoU",
            scale: float = 100.0) -> Comparison:
    """b - a, paired by the seeds both have, multiplied by ``scale`` (fractions -> points). Raises ValueError
    when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"{name_a} and {name_b} share no seed ({sorted(a)} vs {sorted(b)}): nothing to pair")
    diffs = {s: scale * (float(b[s]) - float(a[s])) for s in seeds}
    mean, std, n = mean_std(diffs.values())
    return Comparison(name_a, name_b, what, diffs, mean, std, n)


def per_seed(df: pd.DataFrame, variant: str, subset: str = "all", metric: str = "cIoU") -> dict[int, float]:
    """{seed: value} of one variant and subset from ``run_rows``' table."""
    sel = df[(df["variant"] == variant) & (df["subset"] == subset)]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[metric])}


def sign_test_p(k: int, n: int) -> float:
    """Exact two-sided binomial (sign) test p-value for k successes out of n at p = 0.5 (1.0 when n = 0)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def sign_test_verdict(only_a: int, only_b: int, name_a: str, name_b: str, event: str) -> str:
    """Sentence on discordant samples: ``only_a`` samples where only ``name_a`` shows ``event``, ``only_b``
    where only ``name_b`` does; an exact sign test on the discordant pairs (McNemar's exact form)."""
    n = only_a + only_b
    p = sign_test_p(only_a, n)
    head = f"{event}: {name_a} only on {only_a}, {name_b} only on {only_b} of {n} discordant samples"
    if n == 0:
        return f"{head}: no discordant sample, nothing to compare."
    if p >= 0.05:
        return f"{head} (exact sign test p = {p:.2f}): not significant at 0.05; no difference is supported."
    fewer = name_a if only_a < only_b else name_b
    return f"{head} (exact sign test p = {p:.3f}): {fewer} {event} significantly less often on these samples."


# ---------------------------------------------------------------------------------------- Tables 2 and 3
def ablation_table(df: pd.DataFrame, variants: Sequence[str], table: str = "Table 2",
                   baseline: str = "baseline", metric: str = "cIoU", kinds: Sequence[str] = KIND_NAMES,
                   label: str = "SynRef val cIoU (%)", benchmark: str | None = None) -> pd.DataFrame:
    """One row per variant: ``label`` (``metric`` in %) mean ± std over seeds, the per-seed values, the paired
    difference to ``baseline`` (points; "-" for itself), the per-kind means, and the paper's numbers of ``table``
    ("Table 2" or "Table 3"; only its ``benchmark`` column when given) in columns labelled "paper".
    ``df``: ``run_rows``' (or ``video_run_rows``') table."""
    import pandas as pd

    from salma.experiments import VARIANTS

    rows = []
    base = per_seed(df, baseline, metric=metric) if baseline in set(df["variant"]) else {}
    for v in variants:
        vals = per_seed(df, v, metric=metric)
        mean, std, n = mean_std(100 * x for x in vals.values())
        row = {"variant": v, "what": VARIANTS[v][0], "seeds": n, f"ours: {label}": format_pm(mean, std, n),
               "mean": mean, "std": std, "per seed": ", ".join(f"{100 * vals[s]:.1f}" for s in sorted(vals))}
        cmp_ = compare(base, vals, baseline, v) if base and v != baseline else None
        row[f"Δ vs {baseline} (points)"] = format_pm(cmp_.mean, cmp_.std, cmp_.n) if cmp_ else "-"
        for kind in kinds:
            row[f"{kind} (%)"] = mean_std(100 * x for x in per_seed(df, v, kind, metric).values())[0]
        row.update(paper.paper_columns(table, v, benchmark))
        rows.append(row)
    return pd.DataFrame(rows)


def kind_table(df: pd.DataFrame, variants: Sequence[str], metric: str = "cIoU",
               kinds: Sequence[str] = KIND_NAMES) -> pd.DataFrame:
    """Per-kind breakdown: one row per (variant, subset) over "all" and ``kinds``, ``metric`` (%) mean,
    std, n over seeds, and N (expressions per seed)."""
    import pandas as pd

    rows = []
    for v in variants:
        for subset in ("all",) + tuple(kinds):
            sel = df[(df["variant"] == v) & (df["subset"] == subset)]
            mean, std, n = mean_std(100 * sel[metric])
            rows.append({"variant": v, "subset": subset, f"{metric} (%)": format_pm(mean, std, n), "mean": mean,
                         "std": std, "seeds": n, "N": int(sel["N"].iloc[0]) if len(sel) else 0})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- Table 4
def area_bin_table(df: pd.DataFrame, baseline: str = "baseline", model: str = "salma") -> pd.DataFrame:
    """Paper Table 4 on SynRef: cIoU (%) by cumulative GT-area bins (<1%, <2%, <5%, all), mean ± std over
    seeds for ``baseline`` and ``model``, their paired difference, N per bin, and the paper's numbers
    (RefCOCOg val) beside them."""
    import pandas as pd

    rows = []
    for name in BIN_NAMES:
        a, b = per_seed(df, baseline, name), per_seed(df, model, name)
        sel = df[(df["variant"] == baseline) & (df["subset"] == name)]
        ma, sa, na = mean_std(100 * x for x in a.values())
        mb, sb, nb = mean_std(100 * x for x in b.values())
        c = compare(a, b, baseline, model) if a and b else None
        pa, pb = paper.table4_value("baseline", name), paper.table4_value("salma", name)
        rows.append({"area bin": name, "N (ours)": int(sel["N"].iloc[0]) if len(sel) else 0,
                     f"{baseline} (%)": format_pm(ma, sa, na), f"{model} (%)": format_pm(mb, sb, nb),
                     "Δ (points)": format_pm(c.mean, c.std, c.n) if c else "-",
                     "baseline mean": ma, "baseline std": sa, "model mean": mb, "model std": sb,
                     "Δ mean": c.mean if c else float("nan"), "Δ std": c.std if c else float("nan"),
                     "paper N": pa.n, "paper: baseline RefCOCOg val cIoU (%)": pa.value,
                     "paper: SALMA RefCOCOg val cIoU (%)": pb.value, "paper Δ (points)": round(pb.value - pa.value, 1)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- masks, maps
def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape; 0.0 when both are empty (nothing was matched)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def cell_fraction(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) fraction of each feature-map cell covered by ``mask`` (H, W) bool: area-average pooling, as
    the feature cell (i, j) sees the image region it was computed from (the whole image is resized)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(m, size)[0, 0].numpy()


def mass_share(weights: np.ndarray, mask: np.ndarray) -> float:
    """Share of a non-negative map's mass inside a mask: sum(w * f) / sum(w), with f = ``cell_fraction`` of
    the mask on the map's grid. weights: (h, w) >= 0; mask: (H, W) bool, any size. A uniform map gives the
    mask's area ratio (the chance level). NaN when the map has no mass."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be a (h, w) map; got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative (an attention map or a norm map)")
    total = w.sum()
    if total <= 0:
        return float("nan")
    return float((w * cell_fraction(mask, w.shape)).sum() / total)


def union_mask(dataset, image_id: int) -> np.ndarray:
    """(H, W) bool union of every annotated object of an image (what the stage-0 prior is trained to mark)."""
    return np.any(np.stack([m for _, m in dataset.object_masks(image_id)]), axis=0)


def distractor_mask(dataset, sample) -> np.ndarray | None:
    """(H, W) bool union of a sample's look-alike distractors, or None when it has none."""
    if not sample.distractor_ann_ids:
        return None
    return np.any(np.stack([dataset.ann_mask(a) for a in sample.distractor_ann_ids]), axis=0)


def share_table(maps: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray | None]) -> pd.DataFrame:
    """Rows = maps (label -> (h, w) >= 0), columns = share of each map's mass inside each region (%), and
    the regions' area ratios (%) as the chance row."""
    import pandas as pd

    rows = [{"map": k, **{f"share on {r} (%)": 100 * mass_share(m, reg) if reg is not None else float("nan")
                          for r, reg in regions.items()}} for k, m in maps.items()]
    rows.append({"map": "chance (area ratio)", **{f"share on {r} (%)": 100 * float(np.mean(reg))
                                                  if reg is not None else float("nan") for r, reg in regions.items()}})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- the prior (Sec. 3.2)
def prior_overlap_rows(model, dataset, limit: int | None = None, batch_images: int = 16,
                       progress: bool = True) -> list[dict]:
    """What the language-free pre-pass highlights, per expression of the first ``limit`` expressions.

    Per row: iou_union = IoU(prior > 0, union of the image's objects); iou_target = IoU(prior > 0, target);
    target_recall = |prior > 0 ∩ target| / |target|; gate_share_union / gate_share_target = share of the
    gate G's mass inside the union / target (``mass_share``); union_ratio / area_ratio = their areas / image
    area (the chance levels of the shares); prior_area = fraction of the image with prior > 0.
    """
    from tqdm.auto import tqdm

    from salma.evaluate import image_groups
    from salma.probe import prior_and_gate

    groups = image_groups(dataset, limit)
    rows = []
    for start in tqdm(range(0, len(groups), batch_images), desc="prior", disable=not progress, leave=False):
        chunk = groups[start:start + batch_images]
        images = [dataset.load_image(image_id) for image_id, _ in chunk]
        priors, gates = prior_and_gate(model, images)
        for (image_id, samples), prior, gate in zip(chunk, priors, gates):
            union = union_mask(dataset, image_id)
            pos = prior > 0
            for s in samples:
                target = dataset.load_mask(s)
                rows.append({"image_id": image_id, "kind": s.kind, "area_ratio": s.area_ratio,
                             "iou_union": mask_iou(pos, union), "iou_target": mask_iou(pos, target),
                             "target_recall": float(np.count_nonzero(pos & target) / max(1, target.sum())),
                             "gate_share_union": mass_share(gate, union), "gate_share_target": mass_share(gate, target),
                             "union_ratio": float(union.mean()), "prior_area": float(pos.mean())})
    return rows


def summarise(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """{key: mean over rows} ignoring NaN (a NaN mean when no row has a finite value)."""
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if r.get(k) is not None and math.isfinite(float(r[k]))]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


# ------------------------------------------------------------------------------- attention (Fig. 5)
def attention_rows(model, dataset, limit: int | None = None, label: str = "model",
                   progress: bool = True, only_distractor: bool = False) -> list[dict]:
    """Share of attention mass inside the target and inside the distractors, per expression.

    decoder_target / decoder_distractor: ``mass_share`` of the decoder's language-token attention
    (``salma.probe.language_attention_map``; any model). For models with MBA also mba_target /
    mba_distractor (the gated write map ||G * O_attn||) and ungated_target / ungated_distractor (the same
    module with the gate forced to 1). chance_target / chance_distractor: the masks' area ratios (what a
    uniform map gets). Distractor columns are NaN for expressions without a distractor (the union of an
    expression's look-alikes is used when it has two). ``only_distractor``: trace only the expressions that
    have a distractor among the first ``limit`` (the same rows Fig. 5's table keeps, for a quarter of the work).
    """
    from tqdm.auto import tqdm

    from salma.evaluate import image_groups
    from salma.probe import language_attention_map, mba_write_map, trace_forward

    rows = []
    groups = image_groups(dataset, limit)
    if only_distractor:
        groups = [(i, kept) for i, samples in groups if (kept := [s for s in samples if s.distractor_ann_ids])]
    for image_id, samples in tqdm(groups, desc=f"attention ({label})", disable=not progress, leave=False):
        trace = trace_forward(model, dataset.load_image(image_id), [s.expression for s in samples])
        maps = {"decoder": language_attention_map(trace)}
        if model.mba is not None:
            maps["mba"] = mba_write_map(model, trace, gated=True)
            maps["ungated"] = mba_write_map(model, trace, gated=False)
        for b, s in enumerate(samples):
            target, dis = dataset.load_mask(s), distractor_mask(dataset, s)
            row = {"model": label, "image_id": image_id, "ref_id": s.ref_id, "sent_id": s.sent_id, "kind": s.kind,
                   "chance_target": float(target.mean()),
                   "chance_distractor": float(dis.mean()) if dis is not None else float("nan")}
            for name, m in maps.items():
                row[f"{name}_target"] = mass_share(m[b], target)
                row[f"{name}_distractor"] = mass_share(m[b], dis) if dis is not None else float("nan")
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------ qualitative (Fig. 4)
@dataclass(frozen=True)
class CaseRule:
    """The rule that classifies a prediction on an expression with look-alike distractors.

    A model *picks the distractor* when max over distractors of IoU(pred, distractor) > IoU(pred, target)
    (strictly; an empty prediction has both IoUs 0 and picks nothing). Cases are ranked by the IoU gap
    between the two models on the target, largest first, ties by sample order.
    """

    def picks_distractor(self, iou_target: float, iou_distractor: float) -> bool:
        return iou_distractor > iou_target

    def describe(self) -> str:
        return ("a model picks the distractor on an expression when its mask's IoU with a look-alike "
                "distractor exceeds its IoU with the target; cases are ranked by the difference of the two "
                "models' IoU with the target")


CASE_CATEGORIES: tuple[str, ...] = ("baseline drifts, SALMA does not", "SALMA drifts, baseline does not",
                                    "both drift", "neither drifts")


def distractor_ious(pred: np.ndarray, target: np.ndarray,
                    distractors: Sequence[np.ndarray]) -> tuple[float, float]:
    """(IoU with the target, max IoU with any distractor) of a predicted mask; masks (H, W) bool."""
    return mask_iou(pred, target), max((mask_iou(pred, d) for d in distractors), default=0.0)


def classify_cases(dataset, base_rows: Sequence[dict], model_rows: Sequence[dict],
                   rule: CaseRule = CaseRule()) -> pd.DataFrame:
    """One row per expression that has distractors, from two ``evaluate_model(..., keep_masks=True)`` runs on
    the same samples: each model's IoU with the target and with the distractor, whether it picks the
    distractor (``rule``) and the category (``CASE_CATEGORIES``). Rows are matched by (ref_id, sent_id)."""
    import pandas as pd

    samples = {(s.ref_id, s.sent_id): s for s in dataset.samples}
    other = {(r["ref_id"], r["sent_id"]): r for r in model_rows}
    rows = []
    for order, rb in enumerate(base_rows):
        key = (rb["ref_id"], rb["sent_id"])
        s = samples[key]
        if not s.distractor_ann_ids or key not in other:
            continue
        target, dis = dataset.load_mask(s), [dataset.ann_mask(a) for a in s.distractor_ann_ids]
        bt, bd = distractor_ious(rb["mask"], target, dis)
        mt, md = distractor_ious(other[key]["mask"], target, dis)
        b_drift, m_drift = rule.picks_distractor(bt, bd), rule.picks_distractor(mt, md)
        cat = CASE_CATEGORIES[0 if b_drift and not m_drift else 1 if m_drift and not b_drift else 2 if b_drift else 3]
        rows.append({"order": order, "ref_id": key[0], "sent_id": key[1], "image_id": s.image_id,
                     "expression": s.expression, "baseline_iou_target": bt, "baseline_iou_distractor": bd,
                     "salma_iou_target": mt, "salma_iou_distractor": md, "baseline_drifts": b_drift,
                     "salma_drifts": m_drift, "category": cat})
    return pd.DataFrame(rows)


def select_cases(cases: pd.DataFrame, category: str, n: int) -> pd.DataFrame:
    """The first ``n`` cases of a category, ranked by |SALMA - baseline| IoU with the target (largest
    first), ties broken by sample order: a rule, not a hand pick."""
    if category not in CASE_CATEGORIES:
        raise ValueError(f"category={category!r}; accepted values: {', '.join(CASE_CATEGORIES)}")
    if len(cases) == 0:
        return cases
    sel = cases[cases["category"] == category].copy()
    sel["gap"] = (sel["salma_iou_target"] - sel["baseline_iou_target"]).abs()
    return sel.sort_values(["gap", "order"], ascending=[False, True], kind="mergesort").head(n)


def case_counts(cases: pd.DataFrame) -> dict[str, int]:
    """How many expressions fall in each of ``CASE_CATEGORIES`` (0 for an empty one)."""
    counts = {c: 0 for c in CASE_CATEGORIES}
    if len(cases):
        for c, k in cases["category"].value_counts().items():
            counts[c] = int(k)
    return counts


def attention_table(rows: Sequence[dict], maps: Sequence[str] = ("decoder", "mba", "ungated")) -> pd.DataFrame:
    """Fig. 5's number: mean share of attention mass inside the target and inside the distractor, per model,
    map and seed over the expressions that have a distractor, then mean ± std over seeds (percent).

    rows: ``attention_rows`` output with a "seed" key added. Returns a DataFrame with one row per (model,
    map): target share, distractor share, their chance levels (the masks' mean area ratios), seeds, N.
    """
    import pandas as pd

    df = pd.DataFrame(rows)
    df = df[df["chance_distractor"].notna()]
    out = []
    for (model, seed_rows) in df.groupby("model", sort=False):
        for m in maps:
            if f"{m}_target" not in seed_rows or seed_rows[f"{m}_target"].isna().all():
                continue
            per = seed_rows.groupby("seed")[[f"{m}_target", f"{m}_distractor"]].mean()
            t, d = mean_std(100 * per[f"{m}_target"]), mean_std(100 * per[f"{m}_distractor"])
            out.append({"model": model, "map": m, "target share (%)": format_pm(*t),
                        "distractor share (%)": format_pm(*d), "target mean": t[0], "target std": t[1],
                        "distractor mean": d[0], "distractor std": d[1],
                        "chance target (%)": 100 * seed_rows["chance_target"].mean(),
                        "chance distractor (%)": 100 * seed_rows["chance_distractor"].mean(),
                        "seeds": t[2], "N per seed": int(len(seed_rows) / max(1, t[2]))})
    return pd.DataFrame(out)


def per_seed_share(rows: Sequence[dict], model: str, column: str) -> dict[int, float]:
    """{seed: mean of ``column``} over one model's expressions that have a distractor (fractions)."""
    vals: dict[int, list[float]] = {}
    for r in rows:
        if r["model"] == model and math.isfinite(r["chance_distractor"]) and math.isfinite(r[column]):
            vals.setdefault(int(r["seed"]), []).append(float(r[column]))
    return {s: float(np.mean(v)) for s, v in vals.items()}


# ------------------------------------------------------------------------------------------ training log
def log_summary(log: Sequence[dict], keys: Sequence[str], frac: float = 0.1) -> list[dict]:
    """For each logged key: its mean over the first and over the last ``frac`` of the steps, and the change.
    (One step's value is noisy; a tenth of the run is not.)"""
    n = max(1, round(frac * len(log)))
    out = []
    for k in keys:
        vals = [float(r[k]) for r in log if k in r and r[k] is not None]
        if vals:
            first, last = float(np.mean(vals[:n])), float(np.mean(vals[-n:]))
            out.append({"quantity": k, "first steps": first, "last steps": last, "change": last - first})
    return out


def foundation_metrics(foundation: str | Path) -> list[dict]:
    """The foundation's stage-1 val rows (cIoU, gIoU fractions, N) from its manifest.json, [] if absent."""
    import json

    path = Path(foundation) / "manifest.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("stage1", {}).get("metrics", {}).get("val", [])


# -------------------------------------------------------------------------------------- short verdicts
def prior_verdict(random_summary: Mapping[str, float], trained_summary: Mapping[str, float]) -> str:
    """What the pre-pass prior does before and after stage-0 training, in one sentence, from
    ``summarise(prior_overlap_rows(...))`` of a random and a trained SAM-2."""
    r, t = random_summary, trained_summary
    lift = t["gate_share_union"] / t["union_ratio"] if t["union_ratio"] > 0 else float("nan")
    better = t["iou_union"] > r["iou_union"]
    return (f"IoU(prior > 0, union of objects): random SAM-2 {100 * r['iou_union']:.1f}%, trained "
            f"{100 * t['iou_union']:.1f}% ({'higher' if better else 'not higher'} after training); the trained "
            f"gate puts {100 * t['gate_share_union']:.1f}% of its mass on objects covering "
            f"{100 * t['union_ratio']:.1f}% of the image ({lift:.2f}x chance) and {100 * t['gate_share_target']:.1f}% "
            f"on the target; IoU with the target alone is {100 * t['iou_target']:.1f}%: the prior is language-free "
            "and marks objects, not the referred one.")


def case_panel(dataset, selected: pd.DataFrame, per_sample: Mapping[str, Sequence[dict]]) -> dict:
    """The keyword arguments of ``viz.plot_cases`` for the rows of ``select_cases``: images, target and
    distractor masks, each model's predicted mask (label -> the ``evaluate_model(keep_masks=True)`` rows)
    and per-panel titles with the IoU with the target (t) and the distractor (d)."""
    samples = {(s.ref_id, s.sent_id): s for s in dataset.samples}
    keys = list(zip(selected["ref_id"], selected["sent_id"]))
    masks = {v: {(r["ref_id"], r["sent_id"]): r["mask"] for r in rows} for v, rows in per_sample.items()}
    return {"images": [dataset.load_image(samples[k]) for k in keys],
            "targets": [dataset.load_mask(samples[k]) for k in keys],
            "distractors": [distractor_mask(dataset, samples[k]) for k in keys],
            "preds": {v: [m[k] for k in keys] for v, m in masks.items()},
            "titles": [samples[k].expression for k in keys],
            "pred_titles": {v: [f"{v}: t {t:.2f} / d {d:.2f}" for t, d in
                                zip(selected[f"{v}_iou_target"], selected[f"{v}_iou_distractor"])] for v in per_sample}}


# ------------------------------------------------------------------------------------ video (notebook 10)
def video_floor_rows(dataset, limit: int | None = None, progress: bool = False) -> pd.DataFrame:
    """The trivial video predictors (``salma.data.trivial_video``) on the first ``limit`` expressions (the
    runs' evaluation set): one row per (floor, subset) with J, F, J&F (fractions) and N."""
    import pandas as pd

    from salma.evaluate_video import evaluate_video_with_floors

    result = evaluate_video_with_floors(None, dataset, limit, progress)
    return pd.DataFrame([{"floor": name, **r} for name, rows in result.trivial.items() for r in rows])


def video_jf_table(df: pd.DataFrame, floors: pd.DataFrame, variants: Sequence[str],
                modes: Sequence[str] = ("per_frame", "released")) -> pd.DataFrame:
    """J&F (%) of each variant in each inference mode (mean ± std over seeds, per kind), then the floors as
    extra rows on the same expressions. ``df``: ``video_run_rows``; ``floors``: ``video_floor_rows``."""
    import pandas as pd

    rows = []
    for mode in modes:
        sel = df[df["mode"] == mode]
        for v in variants:
            row = {"model": v, "mode": mode}
            for subset in ("all",) + VIDEO_KIND_NAMES:
                mean, std, n = mean_std(100 * x for x in per_seed(sel, v, subset, "J&F").values())
                row[f"{subset} J&F (%)"] = format_pm(mean, std, n)
                row[f"{subset} mean"] = mean
            rows.append(row)
    for name in dict.fromkeys(floors["floor"]):
        row = {"model": f"floor: {name}", "mode": "-"}
        for subset in ("all",) + VIDEO_KIND_NAMES:
            value = 100 * float(floors[(floors["floor"] == name) & (floors["subset"] == subset)]["J&F"].iloc[0])
            row[f"{subset} J&F (%)"], row[f"{subset} mean"] = f"{value:.1f}", value
        rows.append(row)
    return pd.DataFrame(rows)


def floor_verdict(values: Mapping[int, float], floor: float, name: str, floor_name: str, what: str = "J&F") -> str:
    """Does a model beat a floor on every seed? ``values``: {seed: fraction}; ``floor``: fraction."""
    vals = [100 * v for v in values.values()]
    mean, std, n = mean_std(vals)
    margin = min(vals) - 100 * floor if vals else float("nan")
    if n == 0:
        return f"{name}: no run to compare with {floor_name}"
    head = f"{name} {what} {format_pm(mean, std, n)} vs {floor_name} {100 * floor:.1f}"
    if margin > 0:
        return f"{head}: above it on every seed (the lowest seed by {margin:.1f} points)"
    if mean > 100 * floor:
        return f"{head}: above it on average but not on every seed (lowest seed {margin:+.1f} points)"
    return f"{head}: does not beat it ({mean - 100 * floor:+.1f} points on average)"


def video_example(dataset, models: Mapping[str, object], index: int, modes: Sequence[str] = ("per_frame", "released"),
                  mllm_frames: int = 5) -> dict:
    """The walk-through of one valid expression: its frames (T, H, W, 3), ground truth (T, H, W), SALMA's
    per-frame prior logits (T, H, W) and gate (T, h, w) (from the first model that has MBA, computed on each
    frame independently, as training and inference do), each model's masks in each mode, their J, F, J&F,
    and the frames the MLLM read."""
    from salma.metrics import j_and_f
    from salma.probe import prior_and_gate
    from salma.video import sample_frames

    if not 0 <= index < len(dataset.samples):
        raise ValueError(f"EXAMPLE={index}: the dataset has {len(dataset.samples)} expressions (0..{len(dataset.samples) - 1})")
    sample = dataset.samples[index]
    frames, gt = dataset.load_frames(sample), dataset.load_masks(sample)
    with_mba = [m for m in models.values() if m.mba is not None]
    prior, gate = prior_and_gate(with_mba[0], list(frames)) if with_mba else (None, None)
    preds, scores = {}, {}
    for name, model in models.items():
        for mode in modes:
            mask = model.predict_video(frames, [sample.text], mode=mode, mllm_frames=mllm_frames)[0]
            preds[f"{name} ({mode})"] = mask
            m = j_and_f(mask, gt)
            scores[f"{name} ({mode})"] = {"J": m["J"], "F": m["F"], "J&F": m["JF"]}
    return {"sample": sample, "frames": frames, "gt": gt, "prior": prior, "gate": gate, "preds": preds,
            "scores": scores, "conditioning": sample_frames(len(frames), mllm_frames)}
