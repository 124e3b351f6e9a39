"""Evaluation on refer-format image datasets (docs/method.md section 5): cIoU, gIoU, by kind and area bin.

Several expressions on one image cost one SAM-2 encoder pass and one pre-pass prior
(``SalmaModel.predict_image``). The trivial predictors (largest object, whole image) are always reported
beside the model, so a number never stands without its floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from salma.data.refer import ReferDataset
from salma.eval.floors import evaluate_trivial
from salma.eval.metrics import RefMetrics, intersection_union, rows_to_markdown
from salma.io import atomic_write_strict_json, atomic_write_text


@dataclass
class EvalResult:
    """metrics: the model's table; per_sample: one dict per expression (ids, kind, area, I, U, IoU);
    trivial: the trivial predictors' tables; seconds: wall time of the model's pass."""

    metrics: RefMetrics
    per_sample: list[dict] = field(default_factory=list)
    trivial: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        rows = self.metrics.to_rows()
        return {"model": rows, "trivial": self.trivial, "seconds": self.seconds,
                "ciou": next(r["cIoU"] for r in rows if r["subset"] == "all")}


def image_groups(dataset: ReferDataset, limit: int | None = None) -> list[tuple[int, list]]:
    """[(image_id, [samples])] in a fixed order, truncated so that at most ``limit`` samples are kept."""
    groups, count = [], 0
    for image_id in dataset.image_ids():
        samples = list(dataset.samples_for_image(image_id))
        if limit is not None and count + len(samples) > limit:
            samples = samples[: limit - count]
        if samples:
            groups.append((image_id, samples))
            count += len(samples)
        if limit is not None and count >= limit:
            break
    return groups


def evaluate_model(model, dataset: ReferDataset, limit: int | None = None, progress: bool = True,
                   keep_masks: bool = False) -> EvalResult:
    """Run ``model.predict_image`` over the dataset (image by image) and accumulate the paper's metrics."""

    if limit is not None and limit < 1:  # 0 would give empty tables that read like a result
        raise ValueError(f"limit = {limit}: evaluate at least one expression (or pass None for all)")
    metrics, per_sample = RefMetrics(), []
    groups = image_groups(dataset, limit)
    start = time.perf_counter()
    total = sum(len(s) for _, s in groups)
    with tqdm(total=total, desc="evaluate", disable=not progress, leave=False) as bar:
        for image_id, samples in groups:
            image = dataset.load_image(samples[0])
            preds = model.predict_image(image, [s.expression for s in samples])
            for s, p in zip(samples, preds):
                gt = dataset.load_mask(s)
                metrics.update(p.mask, gt, s.kind, s.area_ratio)
                inter, union = intersection_union(p.mask, gt)
                row = {"ref_id": s.ref_id, "sent_id": s.sent_id, "image_id": image_id, "kind": s.kind,
                       "area_ratio": s.area_ratio, "intersection": inter, "union": union,
                       "iou": 1.0 if union == 0 else inter / union, "expression": s.expression}
                if keep_masks:
                    row["mask"] = p.mask
                per_sample.append(row)
            bar.update(len(samples))
    return EvalResult(metrics, per_sample, seconds=time.perf_counter() - start)


def evaluate_with_floors(model, dataset: ReferDataset, limit: int | None = None,
                         progress: bool = True) -> EvalResult:
    """``evaluate_model`` plus the trivial predictors on the same samples."""

    result = evaluate_model(model, dataset, limit=limit, progress=progress)
    result.trivial = evaluate_trivial(dataset, limit=limit)
    return result


def write_result(result: EvalResult, out_dir: str | Path, title: str,
                 provenance: dict | None = None) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` (model table, then each trivial predictor's) to ``out_dir``.

    eval.json is strict JSON (an empty subset's NaN is written as null) and starts with ``"provenance"``:
    ``provenance`` (checkpoint, weights sha256, data root, split, limit, ... as the caller knows them) plus
    the number of expressions scored and the date (UTC), so a file read later tells which run it came from.
    Both files are written atomically: an interrupted write leaves the previous result, never a torn file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    record = {**(provenance or {}), "n_expressions": len(result.per_sample),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_strict_json(out / "eval.json", {
        "provenance": record, **summary,
        "per_sample": [{k: v for k, v in r.items() if k != "mask"} for r in result.per_sample]}, indent=1)
    parts = [rows_to_markdown(summary["model"], title=f"{title}: model")]
    for name, rows in result.trivial.items():
        parts.append(rows_to_markdown(rows, title=f"{title}: trivial predictor `{name}`"))
    atomic_write_text(out / "eval.md", "\n\n".join(parts) + "\n")
    return out / "eval.json", out / "eval.md"


def mean_iou_of(result: EvalResult) -> float:
    """gIoU of the whole set (convenience for logs)."""
    return float(np.mean([r["iou"] for r in result.per_sample])) if result.per_sample else float("nan")
