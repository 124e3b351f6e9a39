"""Training losses: paper Sec. 3.3-3.4 (docs/method.md section 3.3).

    L_total = L_seg + w_aux * (lambda_tmc * L_tmc + lambda_bound * L_bound) (+ lambda_lm * L_lm)

- L_seg = 2.0 * sigmoid BCE + 0.5 * Dice (the released Sa2VA/SALMA config).
- L_tmc (text-mask contrast): symmetric InfoNCE over the batch between the pre-MBA visual features
  averaged over the ground-truth mask and the ``[SEG]`` embedding, temperature 0.15, L2-normalised.
- L_bound: L1 between 3x3 Sobel gradient magnitudes of sigmoid(prediction) and of the ground truth.
- w_aux is the auxiliary losses' linear warm-up (``salma.mba.linear_warmup``; paper 5%).

Two failures of the released code (docs/method.md section 3.5) are designed out: TMC resizes the mask to the
feature map instead of hitting a shape error that a try/except turned into a zero loss (item 4), and the
boundary loss normalises every sample by a fixed constant, not by the first sample's maximum (item 5).
All losses are computed in float32, whatever the autocast dtype of their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from salma.config import LossConfig

# Sobel magnitude of an ideal axis-aligned 0 -> 1 step edge: the kernel's column weights (1, 2, 1) sum
# to 4 on both pixels beside the edge. Dividing by it maps a hard edge to ~1 (a 45-degree edge peaks at
# ~1.06), independently of the other samples in the batch.
SOBEL_STEP_EDGE = 4.0

__all__ = [
    "SOBEL_STEP_EDGE",
    "boundary_loss",
    "dice_loss",
    "masked_average",
    "segmentation_loss",
    "sigmoid_bce_loss",
    "sobel_magnitude",
    "tmc_allowed_pairs",
    "tmc_loss",
    "total_loss",
]


def _check_mask_pair(logits: Tensor, target: Tensor, fn: str) -> None:
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"{fn}: logits must have shape (B, 1, H, W); got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"{fn}: target must have the logits' shape {tuple(logits.shape)}; "
                         f"got {tuple(target.shape)}")


def sigmoid_bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Sigmoid binary cross-entropy. logits, target: (B, 1, H, W); mean over pixels, then over the batch.

    Returns a scalar float32 tensor.
    """
    _check_mask_pair(logits, target, "sigmoid_bce_loss")
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return per_pixel.flatten(1).mean(1).mean()


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0, skip_empty: bool = False) -> Tensor:
    """Soft Dice loss on sigmoid(logits), per sample, then the batch mean.

    logits, target: (B, 1, H, W). Per sample: 1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps); eps
    makes an empty target with an empty prediction cost ~0. Returns a scalar float32 tensor.

    ``skip_empty`` (video frames where the target is absent): the mean runs over samples whose target is
    non-empty only. On an empty target the soft Dice is sum(p) / (sum(p) + eps), which saturates near 1 as
    soon as the prediction holds a few pixels of mass: a 5-pixel blob costs about as much as a full-frame
    mask and the gradient vanishes, so it says nothing useful; BCE (over every sample) is what pushes such
    frames to empty. With no non-empty target at all the loss is a zero that keeps the graph.
    """
    _check_mask_pair(logits, target, "dice_loss")
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2.0 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    if skip_empty:
        present = t.sum(1) > 0
        if not bool(present.any()):
            return 0.0 * p.sum()
        return (1.0 - dice[present]).mean()
    return (1.0 - dice).mean()


def segmentation_loss(logits: Tensor, target: Tensor, bce_weight: float = 2.0,
                      dice_weight: float = 0.5, skip_empty_dice: bool = False) -> dict[str, Tensor]:
    """L_seg = bce_weight * BCE + dice_weight * Dice. logits, target: (B, 1, H, W).

    ``skip_empty_dice``: Dice over the samples with a non-empty target only (see ``dice_loss``); BCE always
    over all samples. Returns {"bce", "dice", "seg"}: the unweighted parts and the weighted sum (scalars).
    """
    bce = sigmoid_bce_loss(logits, target)
    dice = dice_loss(logits, target, skip_empty=skip_empty_dice)
    return {"bce": bce, "dice": dice, "seg": bce_weight * bce + dice_weight * dice}


def masked_average(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Average features over a (soft) mask resized to the feature map.

    features: (B, C, h, w); mask: (B, 1, H, W), any H, W, bool or float in [0, 1]. The float mask is
    resized to (h, w), by area averaging when it shrinks (a target smaller than one feature cell keeps a
    fractional weight instead of vanishing) and bilinearly when it grows. The released code pooled 64x64
    features with 256x256 masks, hit a shape error, caught it and set TMC to 0 (docs/method.md section 3.5, item 4).

    Returns (pooled (B, C), valid (B,) bool): valid is False where the resized mask is empty; the pooled
    row of such a sample is zero.
    """
    if features.dim() != 4:
        raise ValueError(f"masked_average: features must have shape (B, C, h, w); got {tuple(features.shape)}")
    if mask.dim() != 4 or mask.shape[0] != features.shape[0] or mask.shape[1] != 1:
        raise ValueError(f"masked_average: mask must have shape ({features.shape[0]}, 1, H, W) to match "
                         f"features {tuple(features.shape)}; got {tuple(mask.shape)}")
    h, w = features.shape[-2:]
    m = mask.float()
    if m.shape[-2:] != (h, w):
        shrink = m.shape[-2] >= h and m.shape[-1] >= w
        m = F.interpolate(m, size=(h, w), mode="area") if shrink else F.interpolate(
            m, size=(h, w), mode="bilinear", align_corners=False)
    area = m.flatten(1).sum(1)  # (B,)
    valid = area > 1e-6
    pooled = (features.float() * m).flatten(2).sum(-1) / area.clamp_min(1e-6).unsqueeze(-1)
    return pooled, valid


def tmc_allowed_pairs(groups: Tensor) -> Tensor:
    """Which (visual row i, text row j) pairs may enter TMC's softmax: (N,) group ids -> (N, N) bool.

    True on the diagonal (the positive) and where the groups differ (a negative); False for two different
    rows of one group. Video training makes one row per (clip, frame with the target visible) and gives all
    rows showing the same target object (every frame of a clip, and any other clip of that object in the
    batch) one group: the same object in another frame is not a negative.
    """
    if groups.dim() != 1:
        raise ValueError(f"tmc_allowed_pairs: groups must be (N,); got {tuple(groups.shape)}")
    same = groups[:, None] == groups[None, :]
    return ~same | torch.eye(len(groups), dtype=torch.bool, device=groups.device)


def tmc_loss(visual: Tensor, seg_embed: Tensor, gt_mask: Tensor, temperature: float = 0.15,
             groups: Tensor | None = None) -> Tensor:
    """Text-mask contrast (TMC): symmetric InfoNCE between mask-pooled visual features and [SEG] embeddings.

    visual: (B, C, h, w) pre-MBA visual features; seg_embed: (B, C) ``[SEG]`` language embeddings;
    gt_mask: (B, 1, H, W) ground-truth masks, any H, W (resized to h, w by :func:`masked_average`).

    z_v = masked_average(visual, gt_mask), z_t = seg_embed, both L2-normalised; logits = z_v z_t^T / T;
    the loss is the sum of the cross-entropies along rows and along columns, as paper Eq. 3 writes it
    (positives on the diagonal, the other pairs of the batch are the negatives). Samples whose resized GT mask is empty have no z_v and
    are excluded (from the positives and from the negatives). With no valid sample the loss is a zero that
    still carries the graph; with one it is exactly 0 (a single pair has no negative). Returns a scalar
    float32 tensor. Never swallows an error: shapes that resizing cannot fix raise ValueError.

    groups: optional (B,) ids; rows of one group are never each other's negatives (``tmc_allowed_pairs``);
    a row whose only allowed pair is its positive contributes 0.
    """
    if visual.dim() != 4 or seg_embed.dim() != 2:
        raise ValueError(f"tmc_loss: visual must be (B, C, h, w) and seg_embed (B, C); got visual "
                         f"{tuple(visual.shape)} and seg_embed {tuple(seg_embed.shape)}")
    if visual.shape[:2] != seg_embed.shape:
        raise ValueError(f"tmc_loss: batch or channel mismatch between visual {tuple(visual.shape)} and "
                         f"seg_embed {tuple(seg_embed.shape)}; both need the same (B, C)")
    if temperature <= 0:
        raise ValueError(f"tmc_loss: temperature={temperature} must be > 0")
    z_v, valid = masked_average(visual, gt_mask)
    if int(valid.sum()) < 1:
        # Keeps the graph (and DDP's view of which parameters were used) without contributing.
        return 0.0 * (seg_embed.float().sum() + visual.float().sum())
    z_v = F.normalize(z_v[valid], dim=-1)
    z_t = F.normalize(seg_embed.float()[valid], dim=-1)
    logits = z_v @ z_t.T / temperature
    if groups is not None:
        if groups.shape != (visual.shape[0],):
            raise ValueError(f"tmc_loss: groups must be ({visual.shape[0]},); got {tuple(groups.shape)}")
        logits = logits.masked_fill(~tmc_allowed_pairs(groups.to(logits.device)[valid]), float("-inf"))
    labels = torch.arange(logits.shape[0], device=logits.device)
    # Eq. 3 sums the two directions (visual->text and text->visual); it does not average them.
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def sobel_magnitude(x: Tensor, eps: float = 1e-6) -> Tensor:
    """3x3 Sobel gradient magnitude sqrt(gx^2 + gy^2 + eps) with replicate padding.

    x: (B, 1, H, W) -> (B, 1, H, W), float32. eps keeps the square root differentiable on flat regions.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"sobel_magnitude: x must have shape (B, 1, H, W); got {tuple(x.shape)}")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernel = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): gx, gy
    g = F.conv2d(F.pad(x.float(), (1, 1, 1, 1), mode="replicate"), kernel)
    return torch.sqrt(g.pow(2).sum(1, keepdim=True) + eps)


def boundary_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Boundary loss: L1 between Sobel magnitudes of sigmoid(logits) and of the target.

    logits, target: (B, 1, H, W). Both edge maps are divided by SOBEL_STEP_EDGE (the magnitude of an ideal
    step edge, so a hard edge maps to ~1): a fixed constant, so each sample's loss is independent of the
    rest of the batch (the released code divided by the first sample's maximum, docs/method.md section 3.5, item 5).
    Mean over pixels per sample, then over the batch; returns a scalar float32 tensor.
    """
    _check_mask_pair(logits, target, "boundary_loss")
    e_pred = sobel_magnitude(torch.sigmoid(logits.float())) / SOBEL_STEP_EDGE
    e_true = sobel_magnitude(target.float()) / SOBEL_STEP_EDGE
    return (e_pred - e_true).abs().flatten(1).mean(1).mean()


def total_loss(parts: Mapping[str, Tensor], cfg: LossConfig, aux_scale: float) -> Tensor:
    """L_total = seg (+ lm_weight * lm) + aux_scale * (tmc_weight * tmc + boundary_weight * boundary): the one
    definition, which ``SalmaModel.forward`` uses.

    parts: scalar losses keyed "seg" (required), "tmc", "boundary", "lm" (optional). A part whose weight
    is non-zero must be present (nothing is skipped silently); a part whose weight is 0 is ignored even if
    present. aux_scale: the auxiliary losses' warm-up factor in [0, 1]. The LM loss is not warmed up.
    """
    if "seg" not in parts:
        raise ValueError(f"total_loss: parts must contain 'seg'; got keys {sorted(parts)}")
    if not 0.0 <= float(aux_scale) <= 1.0:
        raise ValueError(f"total_loss: aux_scale={aux_scale} must lie in [0, 1]")
    loss = parts["seg"]
    if "lm" in parts and cfg.lm_weight != 0:
        loss = loss + cfg.lm_weight * parts["lm"]
    for key, weight in (("tmc", cfg.tmc_weight), ("boundary", cfg.boundary_weight)):
        if weight == 0:
            continue
        if key not in parts:
            raise ValueError(f"total_loss: LossConfig.{key}_weight={weight} but parts has no {key!r} "
                             f"(keys {sorted(parts)}); compute it or set the weight to 0")
        loss = loss + float(aux_scale) * weight * parts[key]
    return loss
