"""Evaluation of video referring segmentation: J, F, J&F (docs/method.md section 5; paper Tables 1-3).

Protocol (MeViS's / ReVOS's evaluation script, as Sa2VA runs it, on the DAVIS-2017 ``db_eval_iou`` and
``db_eval_boundary`` of ``salma.eval.metrics``): per expression, the ground truth of every frame of the clip is
the union of its objects' masks; J is the mean over ALL the clip's frames of the region IoU and F the mean
of the boundary F-measure (bound_th 0.008); J&F = (mean J + mean F) / 2 over expressions. A frame where
prediction and ground truth are both empty counts J = 1 and F = 1 (DAVIS: IoU 1 when the union is empty;
P = R = 1 when both boundaries are empty), so predicting "nothing" where the target is absent is rewarded
and predicting anything there scores 0 on that frame. (The DAVIS-2017 *semi-supervised* script drops a
sequence's first and last frames because the first frame's mask is given; MeViS's script, and this
module, score every frame.)

A model encodes a clip's frames once, so a predictor sees one clip with all its expressions:
``predict_clip(frames (T, H, W, 3) uint8, expressions: list[str], info: ClipInfo) -> (E, T, H, W) bool``.
The trivial floors (``salma.eval.floors``) are reported beside every model, as on images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from salma.data.video_format import VideoReferDataset, VideoSample
from salma.eval.metrics import j_and_f, mean_j_and_f
from salma.io import atomic_write_strict_json, atomic_write_text

PROTOCOL = ("J = region IoU, F = DAVIS boundary F-measure (bound_th 0.008), each averaged over all frames of "
            "the clip (1 on a frame where prediction and ground truth are both empty); J&F = (J + F) / 2; "
            "averaged over expressions; in percent")


@dataclass(frozen=True)
class ClipInfo:
    """What a predictor gets besides frames and expressions: the video id, the clip's samples (one per
    expression, in the order of the expressions) and the dataset. A model may read ids and frame names
    only; the dataset (its ground truth) is there for the trivial floors, which are oracles in part."""

    video: str
    samples: tuple[VideoSample, ...]
    dataset: VideoReferDataset


PredictClip = Callable[[np.ndarray, list, ClipInfo], np.ndarray]


@dataclass
class VideoEvalResult:
    """rows: {"subset", "J", "F", "J&F", "N"} (fractions; "all", then one per expression kind);
    per_expression: one dict per expression (video, exp_id, kind, expression, J, F, J&F, n_frames,
    n_visible); trivial: the floors' rows by name; seconds: wall time of the pass (reading frames and
    masks, predicting, scoring); predict_seconds: the part spent inside the predictor."""

    rows: list[dict] = field(default_factory=list)
    per_expression: list[dict] = field(default_factory=list)
    trivial: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0
    predict_seconds: float = 0.0

    def summary(self) -> dict:
        overall = next((r["J&F"] for r in self.rows if r["subset"] == "all"), None)
        model = bool(self.rows)  # floors only: no model pass, so no model timing either
        return {"protocol": PROTOCOL, "model": self.rows or None, "trivial": self.trivial, "jf": overall,
                "seconds": self.seconds if model else None, "predict_seconds": self.predict_seconds if model else None}

    def to_markdown(self, title: str) -> str:
        """The model's table (when there is a model), then each floor's."""
        parts = [jf_rows_to_markdown(self.rows, title=f"{title}: model")] if self.rows else []
        for name, rows in self.trivial.items():
            parts.append(jf_rows_to_markdown(rows, title=f"{title}: trivial predictor `{name}`"))
        return "\n\n".join(parts + [f"({PROTOCOL}.)"])


def video_groups(dataset: VideoReferDataset, limit: int | None = None) -> list[tuple[str, list[VideoSample]]]:
    """[(video, [samples])] in dataset order, truncated so that at most ``limit`` expressions are kept."""
    groups: dict[str, list[VideoSample]] = {}
    for s in dataset.samples[:limit]:  # limit None: all
        groups.setdefault(s.video, []).append(s)
    return list(groups.items())


def check_clip_prediction(pred, video: str, n_expressions: int, frames_shape: Sequence[int]) -> np.ndarray:
    """The predictor's output as a bool (E, T, H, W) array, or a clear error naming the video.

    Args:
        pred: what ``predict_clip`` returned (numpy array or torch tensor).
        video: video id (for the message).
        n_expressions: E.
        frames_shape: (T, H, W, ...) of the clip's frames.
    """
    if hasattr(pred, "detach"):  # a torch tensor, possibly on a GPU
        pred = pred.detach().cpu().numpy()
    arr = np.asarray(pred)
    t, h, w = (int(v) for v in frames_shape[:3])
    expected = (n_expressions, t, h, w)
    if arr.shape != expected:
        raise ValueError(f"predict_clip returned shape {tuple(arr.shape)} for video {video!r}; expected (E, T, H, W) "
                         f"= {expected}: one mask per expression ({n_expressions}) and frame ({t}), at the "
                         f"frame size {h}x{w}")
    if arr.dtype != bool:
        raise TypeError(f"predict_clip returned dtype {arr.dtype} for video {video!r}; expected bool masks of "
                        f"shape (E, T, H, W) = {expected}: threshold the scores (e.g. logits > 0)")
    return arr


def jf_rows(records: Sequence[dict]) -> list[dict]:
    """Rows {"subset", "J", "F", "J&F", "N"}: "all", then one per kind (sorted) unless every expression
    has the default kind "plain" (a dataset without kinds); the per-kind N add up to the overall N."""
    def row(name: str, recs: list[dict]) -> dict:
        m = mean_j_and_f(recs)
        return {"subset": name, "J": m["J"], "F": m["F"], "J&F": m["JF"], "N": m["N"]}

    rows = [row("all", list(records))]
    kinds = sorted({r["kind"] for r in records})
    if kinds != ["plain"]:
        rows += [row(k, [r for r in records if r["kind"] == k]) for k in kinds]
    return rows


def jf_rows_to_markdown(rows: Sequence[dict], title: str | None = None) -> str:
    """Markdown table of ``jf_rows`` output; J, F, J&F in percent, '-' for NaN."""
    def pct(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"

    lines = [f"**{title}**\n"] if title else []
    lines += ["| subset | J (%) | F (%) | J&F (%) | N |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['subset']} | {pct(r['J'])} | {pct(r['F'])} | {pct(r['J&F'])} | {r['N']} |" for r in rows]
    return "\n".join(lines)


def evaluate_video(predict_clip: PredictClip, dataset: VideoReferDataset, limit: int | None = None,
                   progress: bool = True) -> VideoEvalResult:
    """Score ``predict_clip`` on a video dataset with J, F, J&F (one predictor call per clip).

    Args:
        predict_clip: (frames (T, H, W, 3) uint8, expressions [E str], ClipInfo) -> (E, T, H, W) bool.
        dataset: a ``VideoReferDataset`` with ground truth.
        limit: score only the first ``limit`` expressions (dataset order); None: all.
        progress: show a tqdm bar.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit = {limit}: evaluate at least one expression (or pass None for all)")
    groups = video_groups(dataset, limit)
    if not groups:
        raise ValueError(f"{dataset.meta_path} lists no expression: nothing to evaluate")
    records, predict_s, start = [], 0.0, time.perf_counter()
    with tqdm(total=sum(len(s) for _, s in groups), desc="evaluate video", unit="expr", disable=not progress,
              leave=False) as bar:
        for video, samples in groups:
            frames = dataset.load_frames(samples[0])
            t0 = time.perf_counter()
            pred = predict_clip(frames, [s.text for s in samples], ClipInfo(video, tuple(samples), dataset))
            predict_s += time.perf_counter() - t0
            pred = check_clip_prediction(pred, video, len(samples), frames.shape)
            for s, p in zip(samples, pred):
                gt = dataset.load_masks(s)
                m = j_and_f(p, gt)
                records.append({"video": video, "exp_id": s.exp_id, "kind": s.kind, "expression": s.text,
                                "J": m["J"], "F": m["F"], "J&F": m["JF"], "n_frames": int(gt.shape[0]),
                                "n_visible": int(gt.any(axis=(1, 2)).sum())})
            bar.update(len(samples))
    return VideoEvalResult(jf_rows(records), records, seconds=time.perf_counter() - start,
                           predict_seconds=predict_s)


def write_video_result(result: VideoEvalResult, out_dir: str | Path, title: str,
                       provenance: dict | None = None) -> tuple[Path, Path]:
    """Write ``eval.json`` (``"provenance"``, summary, per-expression records) and ``eval.md`` (tables) to
    ``out_dir``, atomically; eval.json is strict JSON (NaN, e.g. a kind without expressions, as null).

    ``"provenance"``: ``provenance`` (checkpoint, weights sha256, data root, split, limit, ... as the caller
    knows them) plus the number of expressions scored (by the model, else by the floors) and the date (UTC),
    as ``salma.eval.image.write_result`` writes it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    floors_n = next((r["N"] for rows in result.trivial.values() for r in rows if r["subset"] == "all"), 0)
    record = {**(provenance or {}), "n_expressions": len(result.per_expression) if result.rows else floors_n,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_strict_json(out / "eval.json", {"provenance": record, **result.summary(),
                                                 "per_expression": result.per_expression}, indent=1)
    atomic_write_text(out / "eval.md", result.to_markdown(title) + "\n")
    return out / "eval.json", out / "eval.md"
