"""Trivial predictors: floors that any grounding model must beat (REFERENCE.md section 9).

- ``largest_object``: the largest annotated object of the image, whatever the expression says. It is
  the pure saliency predictor: on SynRef's distractor expressions it picks the salient look-alike, so it
  scores low there by construction (paper Sec. 1, attention drift; Table 4 small targets).
- ``whole_image``: every pixel; its cIoU is the mean target area fraction.

Scored with the paper's cIoU / gIoU per kind and per cumulative area bin (``salma.metrics.RefMetrics``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from salma.metrics import RefMetrics

PREDICTORS = ("largest_object", "whole_image")


def largest_object(object_masks: Sequence[np.ndarray | tuple[int, np.ndarray]]) -> np.ndarray:
    """The largest of the image's object masks (ties: the first).

    Args:
        object_masks: (H, W) bool masks, or (ann_id, mask) pairs as ``ReferDataset.object_masks`` gives.

    Returns:
        (H, W) bool.
    """
    masks = [m[1] if isinstance(m, tuple) else m for m in object_masks]
    if not masks:
        raise ValueError("largest_object needs at least one object mask (the image has no annotations)")
    areas = [int(np.count_nonzero(m)) for m in masks]
    return np.asarray(masks[int(np.argmax(areas))]).astype(bool)


def whole_image(shape: Sequence[int]) -> np.ndarray:
    """A mask covering the whole image. ``shape`` is (H, W) (extra trailing dims are ignored)."""
    return np.ones((int(shape[0]), int(shape[1])), dtype=bool)


def evaluate_trivial(ds, predictor_names: Sequence[str] = PREDICTORS, limit: int | None = None,
                     progress: bool = True) -> dict[str, list[dict]]:
    """Score trivial predictors on a ``ReferDataset``.

    Args:
        ds: a ``salma.data.refer.ReferDataset``.
        predictor_names: any of ``PREDICTORS``.
        limit: score only the first ``limit`` expressions, in image order (None: all).
        progress: show a tqdm bar.

    Returns:
        {name: RefMetrics rows} (rows: subset, cIoU, gIoU, N; fractions).
    """
    unknown = [n for n in predictor_names if n not in PREDICTORS]
    if unknown:
        raise ValueError(f"unknown trivial predictor(s) {unknown}; accepted: {list(PREDICTORS)}")
    metrics = {n: RefMetrics() for n in predictor_names}
    n = len(ds) if limit is None else min(int(limit), len(ds))
    done = 0
    bar = tqdm(total=n, desc="trivial predictors", unit="expr", disable=not progress)
    for image_id in ds.image_ids():  # per image: the object masks are decoded once
        if done >= n:
            break
        samples = ds.samples_for_image(image_id)[: n - done]
        objects = ds.object_masks(image_id)
        preds = {}
        for name in predictor_names:
            if name == "largest_object":
                preds[name] = largest_object(objects)
            else:
                preds[name] = whole_image(objects[0][1].shape if objects else (samples[0].height,
                                                                               samples[0].width))
        masks = dict(objects)
        for s in samples:
            gt = masks[s.ann_id] if s.ann_id in masks else ds.load_mask(s)
            for name in predictor_names:
                metrics[name].update(preds[name], gt, s.kind, s.area_ratio)
        done += len(samples)
        bar.update(len(samples))
    bar.close()
    return {name: m.to_rows() for name, m in metrics.items()}
