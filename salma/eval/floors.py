"""The trivial predictors that every score is shown beside (floors): the largest object and the whole image for
images; the largest object in every frame and the first frame's ground truth copied for video.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from salma.data.video_format import VideoReferDataset
from salma.eval.metrics import RefMetrics
from salma.eval.video import ClipInfo, PredictClip, VideoEvalResult, evaluate_video

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



def _check(frames: np.ndarray, expressions: list, info: ClipInfo) -> tuple[int, int, int, int]:
    if len(expressions) != len(info.samples):
        raise ValueError(f"video {info.video!r}: {len(expressions)} expressions but {len(info.samples)} samples "
                         "in its ClipInfo; they must correspond one to one")
    t, h, w = frames.shape[:3]
    return len(expressions), int(t), int(h), int(w)


def largest_object_per_frame(frames: np.ndarray, expressions: list, info: ClipInfo) -> np.ndarray:
    """Per frame, the largest visible annotated object (ties: the first listed); empty where none is visible.

    Returns:
        (E, T, H, W) bool, the same masks for every expression.
    """
    e, t, _, _ = _check(frames, expressions, info)
    objects = info.dataset.object_masks(info.video)
    if not objects:
        raise ValueError(f"video {info.video!r} has no annotated object: largest_object_per_frame needs one")
    stack = np.stack([m for _, m in objects])  # (K, T, H, W)
    best = stack.sum(axis=(2, 3)).argmax(axis=0)  # (T,); a frame with no visible object picks an empty mask
    per_frame = stack[best, np.arange(t)]
    return np.repeat(per_frame[None], e, axis=0)


def first_frame_gt(frames: np.ndarray, expressions: list, info: ClipInfo) -> np.ndarray:
    """Each expression's ground truth in its first visible frame, in every frame (empty if never visible).

    Returns:
        (E, T, H, W) bool.
    """
    e, t, h, w = _check(frames, expressions, info)
    out = np.zeros((e, t, h, w), dtype=bool)
    for i, sample in enumerate(info.samples):
        gt = info.dataset.load_masks(sample)
        visible = np.flatnonzero(gt.any(axis=(1, 2)))
        if visible.size:
            out[i] = gt[visible[0]]
    return out


# name -> predictor, in the order the tables list them.
VIDEO_PREDICTORS = {"largest_object_per_frame": largest_object_per_frame, "first_frame_gt": first_frame_gt}


def evaluate_video_with_floors(predict_clip: PredictClip | None, dataset: VideoReferDataset,
                               limit: int | None = None, progress: bool = True) -> VideoEvalResult:
    """``evaluate_video`` of the model (skipped when ``predict_clip`` is None) plus the trivial floors
    (``salma.eval.floors.VIDEO_PREDICTORS``) on the same expressions."""

    result = VideoEvalResult() if predict_clip is None else evaluate_video(predict_clip, dataset, limit, progress)
    result.trivial = {name: evaluate_video(fn, dataset, limit, progress).rows for name, fn in VIDEO_PREDICTORS.items()}
    return result
