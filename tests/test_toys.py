"""Tests for salma.report.toys: the toy inputs of notebook 03 and the losses' expected behaviour on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salma.report import toys


def test_shift_mask_moves_without_wrapping():
    m = np.zeros((5, 5), bool)
    m[0, 4] = True
    assert not toys.shift_mask(m, 1).any()  # moved off the right edge, not wrapped
    assert toys.shift_mask(m, -2)[0, 2] and toys.shift_mask(m, 0, 3)[3, 4]
    assert np.array_equal(toys.shift_mask(m, 0), m)


def test_disk_and_logits():
    d = toys.disk_mask(21, (10, 10), 5)
    assert d[10, 10] and not d[0, 0] and d.sum() == pytest.approx(np.pi * 25, rel=0.1)
    logits = toys.mask_to_logits(d, 8.0)
    assert logits.shape == (1, 1, 21, 21) and float(logits.max()) == 8.0 and float(logits.min()) == -8.0
    soft = toys.mask_to_logits(d, 8.0, blur=2.0)
    assert soft.abs().max() <= 8.0 and (soft.abs() < 8.0).any()


def test_boundary_loss_zero_when_exact_and_rising_with_shift():
    gt = toys.disk_mask(32, (16, 16), 6)
    rows = toys.losses_vs_shift(gt, [0, 1, 2, 3])
    assert rows[0]["boundary"] < 1e-3 and rows[0]["iou"] == 1.0
    b = [r["boundary"] for r in rows]
    assert b == sorted(b) and b[-1] > 10 * b[0]
    e_gt, e_pred = toys.edge_maps(gt, toys.mask_to_logits(gt, 50.0))
    assert np.abs(e_gt - e_pred).max() < 1e-3 and 0.9 < e_gt.max() < 1.2  # a hard edge maps to ~1


def test_tmc_separates_matched_from_shuffled_pairs():
    visual, seg, masks = toys.toy_tmc_batch(batch=6, channels=16, size=12, noise=0.2)
    assert visual.shape == (6, 16, 12, 12) and seg.shape == (6, 16) and masks.shape == (6, 1, 12, 12)
    assert torch.all(masks.flatten(1).sum(1) > 0)
    row = toys.tmc_matched_vs_shuffled([0.2], batch=6)[0]
    assert row["matched"] < row["chance"] < row["shuffled"]
    temps = toys.tmc_vs_temperature([0.05, 1.0])
    assert temps[0]["matched"] < temps[1]["matched"]


def test_with_iou_loss_adds_one_minus_iou_in_place():
    gt = toys.disk_mask(32, (16, 16), 6)
    rows = toys.losses_vs_shift(gt, [0, 2])
    out = toys.with_iou_loss(rows)
    assert out is rows and [r["1 - IoU"] for r in rows] == pytest.approx([1 - r["iou"] for r in rows])
    assert rows[0]["1 - IoU"] == 0.0 and rows[1]["1 - IoU"] > 0
