"""Tests for salma.losses: BCE + Dice, TMC, boundary (paper Sec. 3.3-3.4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from salma.config import LossConfig
from salma.losses import (
    boundary_loss,
    dice_loss,
    masked_average,
    segmentation_loss,
    sigmoid_bce_loss,
    sobel_magnitude,
    tmc_loss,
    total_loss,
)


def square(b: int = 1, size: int = 32, lo: int = 10, hi: int = 20, shift: int = 0) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    m[..., lo + shift:hi + shift, lo + shift:hi + shift] = 1.0
    return m


def hard_logits(mask: torch.Tensor) -> torch.Tensor:
    return (mask * 2 - 1) * 50.0


# ---------------------------------------------------------------- BCE + Dice


def test_perfect_prediction_seg_losses():
    t = square(2)
    parts = segmentation_loss(hard_logits(t), t)
    assert parts["dice"] < 1e-6
    assert parts["bce"] < 1e-6
    assert torch.allclose(parts["seg"], 2.0 * parts["bce"] + 0.5 * parts["dice"])


def test_empty_target_empty_prediction_dice_is_zero():
    t = torch.zeros(2, 1, 16, 16)
    assert dice_loss(torch.full_like(t, -50.0), t) < 1e-6
    assert dice_loss(torch.full_like(t, 50.0), t) > 0.99


def test_bce_mean_over_pixels_then_batch():
    logits = torch.randn(3, 1, 8, 8)
    t = (torch.rand(3, 1, 8, 8) > 0.5).float()
    assert torch.allclose(sigmoid_bce_loss(logits, t), F.binary_cross_entropy_with_logits(logits, t))
    with pytest.raises(ValueError, match="target"):
        sigmoid_bce_loss(logits, t[:, :, :4])


# ---------------------------------------------------------------- TMC


def tmc_batch(b: int = 4, c: int = 8, feat: int = 8, mask_size: int = 32, seed: int = 0):
    """Features whose masked region holds each sample's own text embedding (plus noise elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(b, c, generator=g), dim=-1)
    visual = 0.1 * torch.randn(b, c, feat, feat, generator=g)
    masks = torch.zeros(b, 1, mask_size, mask_size)
    scale = mask_size // feat
    for i in range(b):
        y, x = 1 + i % 3, 2 + i % 4  # feature-cell coordinates of a 3x3 region
        visual[i, :, y:y + 3, x:x + 3] = emb[i, :, None, None]
        masks[i, :, y * scale:(y + 3) * scale, x * scale:(x + 3) * scale] = 1.0
    return visual, emb, masks


def test_tmc_matched_lower_than_shuffled_with_mask_larger_than_features():
    visual, emb, masks = tmc_batch()  # features 8x8, masks 32x32: the released code's failure
    matched = tmc_loss(visual, emb, masks)
    shuffled = tmc_loss(visual, emb[[1, 2, 3, 0]], masks)
    assert torch.isfinite(matched) and matched > 0
    assert matched < shuffled


def test_masked_average_resizes_mask():
    visual, emb, masks = tmc_batch()
    pooled, valid = masked_average(visual, masks)
    assert pooled.shape == (4, 8) and valid.all()
    assert torch.allclose(pooled, emb, atol=1e-5)
    # a mask smaller than the feature map is upsampled
    pooled_small, _ = masked_average(visual, F.interpolate(masks, size=(4, 4), mode="area"))
    assert torch.isfinite(pooled_small).all()
    with pytest.raises(ValueError, match="mask"):
        masked_average(visual, masks[:2])


def test_tmc_gradient_reaches_visual_and_seg_embed():
    visual, emb, masks = tmc_batch()
    visual.requires_grad_(True)
    emb = emb.clone().requires_grad_(True)
    tmc_loss(visual, emb, masks).backward()
    assert visual.grad.abs().sum() > 0 and torch.isfinite(visual.grad).all()
    assert emb.grad.abs().sum() > 0 and torch.isfinite(emb.grad).all()


def test_tmc_empty_masks():
    visual, emb, masks = tmc_batch()
    masks[1] = 0
    partial = tmc_loss(visual, emb, masks)
    assert torch.isfinite(partial) and partial > 0
    # the empty sample is excluded: same as the loss over the three others
    keep = [0, 2, 3]
    assert torch.allclose(partial, tmc_loss(visual[keep], emb[keep], masks[keep]))

    visual.requires_grad_(True)
    emb = emb.clone().requires_grad_(True)
    zero = tmc_loss(visual, emb, torch.zeros_like(masks))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.isfinite(emb.grad).all()


def test_tmc_shape_mismatch_raises():
    visual, emb, masks = tmc_batch()
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 8\).*\(3, 8\)"):
        tmc_loss(visual, emb[:3], masks)
    with pytest.raises(ValueError, match="seg_embed"):
        tmc_loss(visual, torch.randn(4, 16), masks)


# ---------------------------------------------------------------- boundary


def test_sobel_step_edge_is_four():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0
    mag = sobel_magnitude(x)
    assert mag.shape == x.shape
    assert mag.max().item() == pytest.approx(4.0, abs=1e-3)


def test_boundary_perfect_prediction_is_zero():
    t = square(2)
    assert boundary_loss(hard_logits(t), t) < 1e-4


def test_boundary_shifted_square_is_worse():
    t = square()
    exact = boundary_loss(hard_logits(t), t)
    shifted = boundary_loss(hard_logits(square(shift=3)), t)
    assert shifted > exact + 1e-3


def test_boundary_is_per_sample():
    t = torch.cat([square(), square(lo=4, hi=28)])
    pred = torch.cat([hard_logits(square(shift=3)), torch.randn(1, 1, 32, 32) * 5])
    both = boundary_loss(pred, t)
    alone = [boundary_loss(pred[i:i + 1], t[i:i + 1]) for i in range(2)]
    assert torch.allclose(both, (alone[0] + alone[1]) / 2)
    # the first sample's loss does not change when the second sample changes
    pred2 = pred.clone()
    pred2[1] *= 10
    t2 = t.clone()
    t2[1] = 0
    assert torch.allclose(boundary_loss(pred2[:1], t2[:1]), alone[0])


# ---------------------------------------------------------------- total


def test_total_loss_weights_and_missing_parts():
    cfg = LossConfig()
    parts = {"seg": torch.tensor(1.0), "tmc": torch.tensor(2.0), "boundary": torch.tensor(4.0)}
    assert total_loss(parts, cfg, 0.5).item() == pytest.approx(1.0 + 0.5 * (0.1 * 2.0 + 0.05 * 4.0))
    assert total_loss({**parts, "lm": torch.tensor(3.0)}, cfg, 0.0).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="tmc"):
        total_loss({"seg": torch.tensor(1.0), "boundary": torch.tensor(1.0)}, cfg, 1.0)
    off = LossConfig(tmc_weight=0.0, boundary_weight=0.0)
    assert total_loss({"seg": torch.tensor(1.0)}, off, 1.0).item() == 1.0


def test_tmc_is_the_sum_of_both_directions_as_eq3_writes_it():
    """Issue 24: TMC returned half of Eq. 3's sum (the mean of the two cross-entropies)."""
    visual, emb, masks = tmc_batch()
    z_v = F.normalize(masked_average(visual, masks)[0], dim=-1)
    z_t = F.normalize(emb, dim=-1)
    logits = z_v @ z_t.T / 0.15
    labels = torch.arange(4)
    expected = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
    assert torch.allclose(tmc_loss(visual, emb, masks, temperature=0.15), expected)
