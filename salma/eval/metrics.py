"""The paper's evaluation metrics (docs/method.md section 5; paper Sec. 4 and Table 4).

Image referring segmentation (RefCOCO/+/g protocol, as in LISA / Sa2VA):

- cIoU = (sum of intersections) / (sum of unions) over all expressions (cumulative IoU);
- gIoU = mean of the per-expression IoU, with IoU = 1 when the union is empty (both masks empty).

Video referring segmentation (Ref-DAVIS17, Ref-YouTube-VOS, MeViS, ReVOS; DAVIS-2017 evaluation code):

- J = region similarity: per frame IoU, 1 when prediction and GT are both empty; averaged over the frames;
- F = boundary F-measure per frame, averaged over the frames (``db_eval_boundary``);
- J&F = (mean J + mean F) / 2 over expressions.

The saliency-bias analysis of paper Table 4 partitions expressions by GT area / image area with
*cumulative* bins: < 1 %, < 2 %, < 5 %, all. ``RefMetrics`` produces that table plus one row per
expression kind (SynRef's attribute / distractor / relation).

Every mask here is a boolean numpy array; masks of one pair must have the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from salma.data.refer import AREA_BINS


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}: resize the "
            "prediction to the original image/frame size before scoring"
        )
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


# ---------------------------------------------------------------------------------------------------
# Image metrics: cIoU and gIoU
# ---------------------------------------------------------------------------------------------------


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Intersection and union pixel counts of two masks.

    Args:
        pred: predicted mask, shape (H, W) (or any shape), bool or 0/1.
        gt: ground-truth mask, same shape.

    Returns:
        (intersection, union) as Python ints.
    """
    p, g = _as_bool_pair(pred, gt)
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def iou_from_counts(intersection: int, union: int) -> float:
    """Per-expression IoU with the gIoU convention: 1.0 when the union is empty."""
    return 1.0 if union == 0 else intersection / union


def ciou(pairs: Iterable[tuple[int, int]]) -> float:
    """Cumulative IoU: sum of intersections / sum of unions.

    Args:
        pairs: (intersection, union) per expression, as returned by ``intersection_union``.

    Returns:
        cIoU in [0, 1]; NaN when there are no pairs; 1.0 when every union is empty (all masks empty,
        perfectly predicted), following the same convention as gIoU.
    """
    pairs = list(pairs)
    if not pairs:
        return float("nan")
    inter = sum(int(i) for i, _ in pairs)
    union = sum(int(u) for _, u in pairs)
    return 1.0 if union == 0 else inter / union


def giou(pairs: Iterable[tuple[int, int]]) -> float:
    """Generalised (mean) IoU: mean over expressions of I/U, with IoU = 1 when U = 0.

    Args:
        pairs: (intersection, union) per expression.

    Returns:
        gIoU in [0, 1]; NaN when there are no pairs.
    """
    ious = [iou_from_counts(int(i), int(u)) for i, u in pairs]
    return float(np.mean(ious)) if ious else float("nan")


# ---------------------------------------------------------------------------------------------------
# Video metrics: DAVIS-2017 J and F
# ---------------------------------------------------------------------------------------------------


def db_eval_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """DAVIS region similarity J per frame.

    Args:
        pred: predicted masks, shape (T, H, W) or (H, W), bool.
        gt: ground-truth masks, same shape.

    Returns:
        float64 array of shape (T,) (or a 0-d array for one frame): IoU per frame, 1.0 where both the
        prediction and the GT are empty.
    """
    p, g = _as_bool_pair(pred, gt)
    inter = np.count_nonzero(p & g, axis=(-2, -1)).astype(np.float64)
    union = np.count_nonzero(p | g, axis=(-2, -1)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def boundary_tolerance(shape: Sequence[int], bound_th: float = 0.008) -> int:
    """Boundary tolerance in pixels used by DAVIS's F-measure.

    ``bound_th`` >= 1 is a pixel count; below 1 it is a fraction of the image diagonal, rounded up:
    ceil(bound_th * sqrt(H^2 + W^2)). 64x64 -> 1 px; 480x854 -> 8 px; 1000x1000 -> 12 px.
    """
    if bound_th >= 1:
        return round(bound_th)
    h, w = int(shape[-2]), int(shape[-1])
    return math.ceil(bound_th * math.hypot(h, w))


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask, as DAVIS's ``_seg2bmap`` (without resizing).

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour (pixels
    outside the image count as background); the last row compares only eastwards, the last column only
    southwards, and the bottom-right pixel is never a boundary pixel.

    Args:
        mask: (H, W) bool.

    Returns:
        (H, W) bool boundary map.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects a (H, W) mask, got shape {seg.shape}")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x] = a[y - dy, x - dx], zero outside (no wrap-around)."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys_dst = slice(max(dy, 0), h + min(dy, 0))
    ys_src = slice(max(-dy, 0), h + min(-dy, 0))
    xs_dst = slice(max(dx, 0), w + min(dx, 0))
    xs_src = slice(max(-dx, 0), w + min(-dx, 0))
    out[ys_dst, xs_dst] = a[ys_src, xs_src]
    return out


def disk_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a disk structuring element {(dy, dx): dy^2 + dx^2 <= radius^2}.

    Same element as ``skimage.morphology.disk(radius)`` used by DAVIS (with OpenCV's ``dilate``, whose
    border adds nothing). Written with numpy (no scipy/OpenCV dependency): the disk is a stack of
    horizontal runs, so the dilation is, for each row offset dy, a horizontal run-dilation of half-width
    floor(sqrt(r^2 - dy^2)) (cumulative sums) shifted by dy; cost O((2r+1) * H * W).

    Args:
        mask: (H, W) bool.
        radius: disk radius in pixels, >= 0.

    Returns:
        (H, W) bool.
    """
    m = np.asarray(mask).astype(bool)
    r = int(radius)
    if r < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    if r == 0 or not m.any():
        return m.copy()
    h, w = m.shape
    # Padded cumulative sum along x: run_dilate(half)[y, x] = any(m[y, x-half : x+half+1]).
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(m, axis=1, out=csum[:, 1:])
    cols = np.arange(w)
    cache: dict[int, np.ndarray] = {}

    def run_dilate(half: int) -> np.ndarray:
        if half not in cache:
            hi = np.minimum(cols + half + 1, w)
            lo = np.maximum(cols - half, 0)
            cache[half] = (csum[:, hi] - csum[:, lo]) > 0
        return cache[half]

    out = np.zeros_like(m)
    for dy in range(-r, r + 1):
        half = math.isqrt(r * r - dy * dy)
        out |= _shift(run_dilate(half), dy, 0)
    return out


def db_eval_boundary(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """DAVIS boundary F-measure per frame.

    Boundaries come from ``seg2bmap``; a predicted boundary pixel is matched when it lies within the
    tolerance (``boundary_tolerance``; a disk dilation of the other boundary) of a GT boundary pixel,
    and conversely. Conventions (as DAVIS): prediction empty and GT not -> P=1, R=0; GT empty and
    prediction not -> P=0, R=1; both empty -> P=R=1; F = 0 when P + R = 0, else 2PR / (P + R).

    Args:
        pred: (T, H, W) or (H, W) bool.
        gt: same shape.
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1).

    Returns:
        float64 array (T,) (0-d for a single frame).
    """
    p, g = _as_bool_pair(pred, gt)
    single = p.ndim == 2
    if single:
        p, g = p[None], g[None]
    if p.ndim != 3:
        raise ValueError(f"db_eval_boundary expects (T, H, W) or (H, W) masks, got shape {p.shape}")
    radius = boundary_tolerance(p.shape, bound_th)
    out = np.empty(p.shape[0], dtype=np.float64)
    for t in range(p.shape[0]):
        fg_b = seg2bmap(p[t])
        gt_b = seg2bmap(g[t])
        n_fg = int(fg_b.sum())
        n_gt = int(gt_b.sum())
        if n_fg == 0 and n_gt > 0:
            precision, recall = 1.0, 0.0
        elif n_fg > 0 and n_gt == 0:
            precision, recall = 0.0, 1.0
        elif n_fg == 0 and n_gt == 0:
            precision, recall = 1.0, 1.0
        else:
            precision = np.count_nonzero(fg_b & disk_dilate(gt_b, radius)) / n_fg
            recall = np.count_nonzero(gt_b & disk_dilate(fg_b, radius)) / n_gt
        out[t] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out[0] if single else out


def j_and_f(preds: np.ndarray, gts: np.ndarray, bound_th: float = 0.008) -> dict[str, float]:
    """J, F and J&F of one expression (one clip).

    Args:
        preds: (T, H, W) bool predicted masks, one per frame.
        gts: (T, H, W) bool ground-truth masks.

    Returns:
        {"J": mean J over frames, "F": mean F over frames, "JF": (J + F) / 2}.
    """
    p, g = _as_bool_pair(preds, gts)
    if p.ndim != 3 or p.shape[0] == 0:
        raise ValueError(f"j_and_f expects (T, H, W) masks with T >= 1, got shape {p.shape}")
    j = float(np.mean(db_eval_iou(p, g)))
    f = float(np.mean(db_eval_boundary(p, g, bound_th)))
    return {"J": j, "F": f, "JF": (j + f) / 2}


def mean_j_and_f(results: Iterable[dict[str, float]]) -> dict[str, float]:
    """Average per-expression ``j_and_f`` results: J&F = (mean J + mean F) / 2, plus N."""
    results = list(results)
    if not results:
        raise ValueError("mean_j_and_f needs at least one expression's result")
    j = float(np.mean([r["J"] for r in results]))
    f = float(np.mean([r["F"] for r in results]))
    return {"J": j, "F": f, "JF": (j + f) / 2, "N": len(results)}


# ---------------------------------------------------------------------------------------------------
# Streaming accumulator for image benchmarks (overall, per kind, per cumulative area bin)
# ---------------------------------------------------------------------------------------------------


@dataclass
class RefMetrics:
    """Accumulates per-expression (intersection, union) and reports cIoU / gIoU tables.

    Rows (in order): "all"; one per expression kind seen (SynRef: attribute, distractor, relation;
    real data: plain); then the cumulative area bins of paper Table 4 ("<1%", "<2%", "<5%"), where a
    sample belongs to every bin whose bound exceeds its GT area / image area.
    Values in ``to_rows`` are fractions in [0, 1] (NaN for an empty row); ``to_markdown`` prints
    percentages.
    """

    inters: list[int] = field(default_factory=list)
    unions: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    area_ratios: list[float] = field(default_factory=list)

    def update(
        self, pred: np.ndarray, gt: np.ndarray, kind: str = "plain", area_ratio: float | None = None
    ) -> float:
        """Add one expression.

        Args:
            pred: (H, W) bool predicted mask.
            gt: (H, W) bool ground-truth mask.
            kind: expression kind (row name).
            area_ratio: GT area / image area; computed from ``gt`` when None or NaN.

        Returns:
            this sample's IoU (1.0 when the union is empty).
        """
        i, u = intersection_union(pred, gt)
        if area_ratio is None or not math.isfinite(float(area_ratio)):
            g = np.asarray(gt).astype(bool)
            area_ratio = float(np.count_nonzero(g)) / float(g.size)
        self.add_counts(i, u, kind, float(area_ratio))
        return iou_from_counts(i, u)

    def add_counts(self, intersection: int, union: int, kind: str, area_ratio: float) -> None:
        """Add one expression from precomputed counts (e.g. from another process)."""
        if intersection > union or intersection < 0:
            raise ValueError(f"invalid counts: intersection {intersection} > union {union} or negative")
        self.inters.append(int(intersection))
        self.unions.append(int(union))
        self.kinds.append(str(kind))
        self.area_ratios.append(float(area_ratio))

    def merge(self, other: RefMetrics) -> None:
        """Append another accumulator's samples (for sharded evaluation)."""
        self.inters += other.inters
        self.unions += other.unions
        self.kinds += other.kinds
        self.area_ratios += other.area_ratios

    def __len__(self) -> int:
        return len(self.inters)

    def _row(self, name: str, idx: list[int]) -> dict[str, float | int | str]:
        pairs = [(self.inters[k], self.unions[k]) for k in idx]
        return {"subset": name, "cIoU": ciou(pairs), "gIoU": giou(pairs), "N": len(idx)}

    def to_rows(self) -> list[dict[str, float | int | str]]:
        """Table rows: dicts with keys subset, cIoU, gIoU (fractions), N."""
        n = len(self.inters)
        rows = [self._row("all", list(range(n)))]
        for kind in sorted(set(self.kinds)):
            rows.append(self._row(kind, [k for k in range(n) if self.kinds[k] == kind]))
        for name, bound in AREA_BINS:
            rows.append(self._row(name, [k for k in range(n) if self.area_ratios[k] < bound]))
        return rows

    def to_markdown(self) -> str:
        """The table as Markdown (cIoU and gIoU in percent)."""
        return rows_to_markdown(self.to_rows())


def rows_to_markdown(rows: Sequence[dict], title: str | None = None) -> str:
    """Markdown table of ``RefMetrics.to_rows()`` output; cIoU/gIoU shown in percent, '-' for empty."""

    def pct(v: float) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"

    lines = []
    if title:
        lines.append(f"**{title}**\n")
    lines.append("| subset | cIoU (%) | gIoU (%) | N |")
    lines.append("|---|---:|---:|---:|")
    for r in rows:
        lines.append(f"| {r['subset']} | {pct(r['cIoU'])} | {pct(r['gIoU'])} | {r['N']} |")
    return "\n".join(lines)
