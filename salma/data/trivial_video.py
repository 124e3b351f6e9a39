"""Trivial video predictors: the J&F floors a video grounding model must beat (REFERENCE.md section 5).

Each is a ``predict_clip`` for ``salma.evaluate_video.evaluate_video``:
(frames (T, H, W, 3) uint8, expressions [E], ClipInfo) -> (E, T, H, W) bool.

- ``largest_object_per_frame``: in every frame, the largest visible object among the clip's annotated
  objects (``VideoReferDataset.object_ids``: SynRef-Video's full object list, else the objects the clip's
  expressions refer to), whatever the expression says: the pure saliency predictor, frame by frame.
- ``first_frame_gt``: the expression's ground truth in the first frame where its target is visible, copied
  to every frame. An oracle-ish floor: it knows which object is meant and where it first is, but not how it
  moves; it is exact on targets whose visible mask never changes (SynRef-Video's "still" targets) and it
  loses on every frame where the target moved, left the view, or was not yet visible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from salma.evaluate_video import ClipInfo


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
