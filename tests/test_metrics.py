"""Metrics (salma.eval.metrics) pinned to hand-computed values (docs/method.md section 5)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from salma.eval.metrics import (
    RefMetrics,
    boundary_tolerance,
    ciou,
    db_eval_boundary,
    db_eval_iou,
    disk_dilate,
    giou,
    intersection_union,
    j_and_f,
    mean_j_and_f,
    rows_to_markdown,
    seg2bmap,
)


def _square(h, w, r0, c0, side):
    m = np.zeros((h, w), bool)
    m[r0:r0 + side, c0:c0 + side] = True
    return m


def test_ciou_vs_giou_hand_computed():
    # Three expressions on 4x4 masks: (I, U) = (1, 4), (9, 10), (0, 0).
    p1 = np.zeros((4, 4), bool); p1[0, :] = True            # 4 pixels
    g1 = np.zeros((4, 4), bool); g1[0, 0] = True            # 1 pixel inside p1 -> I=1, U=4
    p2 = np.zeros((4, 4), bool); p2.flat[:9] = True          # 9 pixels
    g2 = np.zeros((4, 4), bool); g2.flat[:10] = True         # 10 pixels -> I=9, U=10
    p3 = g3 = np.zeros((4, 4), bool)                         # both empty -> I=0, U=0
    pairs = [intersection_union(p1, g1), intersection_union(p2, g2), intersection_union(p3, g3)]
    assert pairs == [(1, 4), (9, 10), (0, 0)]
    # cIoU = (1 + 9 + 0) / (4 + 10 + 0) = 10/14 = 5/7
    assert ciou(pairs) == pytest.approx(float(Fraction(5, 7)))
    # gIoU = (1/4 + 9/10 + 1) / 3 = (5/20 + 18/20 + 20/20) / 3 = 43/60 (empty union counts as IoU 1)
    assert giou(pairs) == pytest.approx(float(Fraction(43, 60)))


def test_giou_union_zero_is_one():
    assert giou([(0, 0)]) == 1.0
    assert giou([(0, 0), (0, 5)]) == 0.5
    assert np.isnan(giou([])) and np.isnan(ciou([]))


def test_j_four_empty_cases():
    e = np.zeros((8, 8), bool)
    f = _square(8, 8, 2, 2, 3)
    assert db_eval_iou(e, e) == 1.0  # both empty
    assert db_eval_iou(e, f) == 0.0  # prediction empty, GT not
    assert db_eval_iou(f, e) == 0.0  # GT empty, prediction not
    assert db_eval_iou(f, f) == 1.0
    assert db_eval_iou(np.stack([e, f]), np.stack([e, e])).tolist() == [1.0, 0.0]


def test_f_four_empty_cases():
    e = np.zeros((8, 8), bool)
    f = _square(8, 8, 2, 2, 3)
    assert db_eval_boundary(e, e) == 1.0  # P = R = 1
    assert db_eval_boundary(e, f) == 0.0  # prediction empty: P = 1, R = 0 -> F = 0
    assert db_eval_boundary(f, e) == 0.0  # GT empty: P = 0, R = 1 -> F = 0
    assert db_eval_boundary(f, f) == 1.0


def test_seg2bmap_of_a_3x3_square_by_hand():
    # Square rows 2..4, cols 2..4 in 8x8. Background pixels whose E/S/SE neighbour is inside: row 1
    # cols 1..4 and col 1 rows 2..4 (7 pixels); inside pixels with an outside E/S/SE neighbour: col 4
    # rows 2..4 and row 4 cols 2..3 (5 pixels).
    b = seg2bmap(_square(8, 8, 2, 2, 3))
    expected = {(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (3, 1), (4, 1), (2, 4), (3, 4), (4, 4), (4, 2), (4, 3)}
    assert set(zip(*np.nonzero(b))) == expected


def test_one_pixel_shift_f_by_hand():
    gt = _square(8, 8, 2, 2, 3)
    pred = _square(8, 8, 2, 3, 3)  # shifted one column right
    # tolerance 0 (bound_th = 0): 6 of the 12 boundary pixels coincide each way -> P = R = 1/2, F = 1/2
    assert boundary_tolerance(gt.shape, 0.0) == 0
    assert db_eval_boundary(pred, gt, bound_th=0.0) == pytest.approx(0.5)
    # default bound_th 0.008 on 8x8: ceil(0.008 * 11.31) = 1 px; every shifted boundary pixel has an
    # original one as a 4-neighbour -> P = R = 1, F = 1
    assert boundary_tolerance(gt.shape) == 1
    assert db_eval_boundary(pred, gt) == 1.0
    # J of the shift: I = 3 * 2 = 6, U = 12
    assert db_eval_iou(pred, gt) == pytest.approx(0.5)
    r = j_and_f(pred[None], gt[None])
    assert r == pytest.approx({"J": 0.5, "F": 1.0, "JF": 0.75})


def test_boundary_tolerance_large_and_small_images():
    assert boundary_tolerance((1000, 1000)) == 12  # ceil(0.008 * 1414.2) = ceil(11.31)
    assert boundary_tolerance((64, 64)) == 1  # ceil(0.008 * 90.5) = ceil(0.72)
    assert boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.6) = ceil(7.84)
    assert boundary_tolerance((64, 64), bound_th=3) == 3  # >= 1 means pixels


def test_large_image_shift_within_tolerance():
    # A 400x400 square shifted by 12 px in 1000x1000 stays within the 12-px tolerance; 13 px does not.
    gt = _square(1000, 1000, 300, 300, 400)
    assert db_eval_boundary(_square(1000, 1000, 300, 312, 400), gt) == 1.0
    assert db_eval_boundary(_square(1000, 1000, 300, 313, 400), gt) < 1.0


def test_disk_dilate_matches_brute_force():
    rng = np.random.default_rng(0)
    m = rng.random((40, 37)) < 0.02
    for r in (0, 1, 2, 5, 12):
        brute = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx <= r * r:
                    yy, xx = ys + dy, xs + dx
                    ok = (yy >= 0) & (yy < 40) & (xx >= 0) & (xx < 37)
                    brute[yy[ok], xx[ok]] = True
        assert np.array_equal(disk_dilate(m, r), brute), r
    one = np.zeros((9, 9), bool)
    one[4, 4] = True
    assert disk_dilate(one, 2).sum() == 13  # lattice points with dx^2 + dy^2 <= 4


def test_mean_j_and_f():
    res = [{"J": 0.5, "F": 1.0, "JF": 0.75}, {"J": 1.0, "F": 0.0, "JF": 0.5}]
    assert mean_j_and_f(res) == pytest.approx({"J": 0.75, "F": 0.5, "JF": 0.625, "N": 2})
    with pytest.raises(ValueError):
        mean_j_and_f([])


def test_refmetrics_rows_kinds_and_cumulative_bins():
    m = RefMetrics()
    g = np.zeros((10, 10), bool)
    g[0, 0] = True
    m.update(g, g, "distractor", 0.005)  # IoU 1, in <1%, <2%, <5%
    p = np.zeros((10, 10), bool)
    p[0, :2] = True
    m.update(p, g, "attribute", 0.015)  # I=1, U=2, in <2%, <5%
    big = np.ones((10, 10), bool)
    m.update(np.zeros((10, 10), bool), big, "attribute")  # I=0, U=100, area ratio 1.0 from gt
    rows = {r["subset"]: r for r in m.to_rows()}
    assert list(rows) == ["all", "attribute", "distractor", "<1%", "<2%", "<5%"]
    assert rows["all"]["N"] == 3 and rows["all"]["cIoU"] == pytest.approx(2 / 103)
    assert rows["all"]["gIoU"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert rows["attribute"]["cIoU"] == pytest.approx(1 / 102) and rows["attribute"]["N"] == 2
    assert rows["<1%"]["N"] == 1 and rows["<2%"]["N"] == 2 and rows["<5%"]["N"] == 2
    assert rows["<2%"]["cIoU"] == pytest.approx(2 / 3)
    md = m.to_markdown()
    assert "| <2% | 66.7 | 75.0 | 2 |" in md and md.startswith("| subset | cIoU (%)")
    assert "| - | - | 0 |" in rows_to_markdown([{"subset": "x", "cIoU": float("nan"), "gIoU": float("nan"), "N": 0}])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="prediction shape"):
        intersection_union(np.zeros((4, 4)), np.zeros((4, 5)))
