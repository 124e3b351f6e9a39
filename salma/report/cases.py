"""Paper Fig. 4 by a stated rule: the distractor expressions where one model's mask drifts to the salient
look-alike and the other's does not, in both directions, with counts and the panel of selected cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from salma.report.measures import distractor_mask, mask_iou


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


def chosen_cases(cases: pd.DataFrame, n: int, categories: Sequence[str] = CASE_CATEGORIES[:2]) -> dict[str, pd.DataFrame]:
    """{category: ``select_cases``} of the first ``n`` cases of each category (default: the two directions
    of drift, baseline only and SALMA only)."""
    return {c: select_cases(cases, c, n) for c in categories}


def case_panels(dataset, chosen: Mapping[str, pd.DataFrame], evals: Mapping[str, object]) -> dict[str, dict | None]:
    """{category: ``case_panel``, or None when the category has no case} for ``chosen_cases``; ``evals``:
    {variant: ``evaluate_model(..., keep_masks=True)`` result}, whose ``per_sample`` rows hold the masks."""
    per_sample = {v: e.per_sample for v, e in evals.items()}
    return {c: case_panel(dataset, sel, per_sample) if len(sel) else None for c, sel in chosen.items()}


def shown_cases(cases: pd.DataFrame, chosen: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The chosen cases stacked, each with the category it is shown under (``shown_as``); ``cases`` itself
    (empty) when there is no case at all."""
    return pd.concat([sel.assign(shown_as=c) for c, sel in chosen.items()]) if len(cases) else cases
