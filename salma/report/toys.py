"""Toy masks and features that show how SALMA's losses behave: paper Sec. 3.3-3.4 (docs/method.md section 3.3).

Notebook 03 feeds ``salma.losses`` inputs whose right answer is known:

- boundary loss: a GT disk against the same disk shifted by k pixels or blurred, so the loss can be
  read against the displacement; the Sobel edge maps are the ones the loss compares;
- TMC: a batch of feature maps in which each sample's object carries its own prototype vector and the
  ``[SEG]`` embeddings are those prototypes (plus noise): matched pairs should give a low InfoNCE loss,
  shuffled pairs (each embedding paired with another sample's mask) a high one; the chance level of a
  symmetric InfoNCE over B pairs is ln(B).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from salma.losses import SOBEL_STEP_EDGE, boundary_loss, segmentation_loss, sobel_magnitude, tmc_loss


def disk_mask(size: int, center: tuple[float, float], radius: float) -> np.ndarray:
    """(size, size) bool disk; center is (x, y) in pixels."""
    yy, xx = np.mgrid[:size, :size]
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius ** 2


def shift_mask(mask: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    """The mask moved by (dx, dy) pixels, zero-filled (nothing wraps around). (H, W) bool -> (H, W) bool."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def mask_to_logits(mask: np.ndarray, sharpness: float = 8.0, blur: float = 0.0) -> torch.Tensor:
    """A prediction's logits (1, 1, H, W) for a mask: +sharpness inside, -sharpness outside; ``blur`` > 0
    first smooths the 0/1 mask with a Gaussian of that sigma (a soft, uncertain boundary)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    if blur > 0:
        r = max(1, int(3 * blur))
        x = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-x ** 2 / (2 * blur ** 2))
        k = k / k.sum()
        m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return (2 * m - 1) * sharpness


def edge_maps(gt: np.ndarray, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The two maps the boundary loss compares, (H, W) each: Sobel magnitude of the GT and of
    sigmoid(logits), both divided by SOBEL_STEP_EDGE (a hard edge ~ 1)."""
    t = torch.as_tensor(np.asarray(gt, dtype=np.float32))[None, None]
    e_gt = sobel_magnitude(t) / SOBEL_STEP_EDGE
    e_pred = sobel_magnitude(torch.sigmoid(logits.float())) / SOBEL_STEP_EDGE
    return e_gt[0, 0].numpy(), e_pred[0, 0].numpy()


def mask_losses(gt: np.ndarray, logits: torch.Tensor) -> dict[str, float]:
    """bce, dice, seg (2.0 BCE + 0.5 Dice), boundary and the hard IoU of one prediction against a GT mask."""
    t = torch.as_tensor(np.asarray(gt, dtype=np.float32))[None, None]
    seg = {k: float(v) for k, v in segmentation_loss(logits, t).items()}
    pred = (logits[0, 0] > 0).numpy()
    inter, union = np.count_nonzero(pred & gt), np.count_nonzero(pred | gt)
    return {**seg, "boundary": float(boundary_loss(logits, t)), "iou": inter / union if union else 1.0}


def losses_vs_shift(gt: np.ndarray, shifts: Sequence[int], sharpness: float = 8.0) -> list[dict]:
    """``mask_losses`` of the GT shifted by each of ``shifts`` pixels (along x), one row per shift."""
    return [{"shift": int(s), **mask_losses(gt, mask_to_logits(shift_mask(gt, int(s)), sharpness))} for s in shifts]


def losses_vs_blur(gt: np.ndarray, blurs: Sequence[float], sharpness: float = 8.0) -> list[dict]:
    """``mask_losses`` of the GT with a boundary blurred by each Gaussian sigma (pixels), one row per sigma."""
    return [{"blur": float(b), **mask_losses(gt, mask_to_logits(gt, sharpness, blur=float(b)))} for b in blurs]


def with_iou_loss(rows: list[dict]) -> list[dict]:
    """The rows of ``losses_vs_shift`` / ``losses_vs_blur`` with "1 - IoU" added to each (in place; returned),
    the hard-mask error the losses are plotted against."""
    for r in rows:
        r["1 - IoU"] = 1 - r["iou"]
    return rows


def toy_tmc_batch(batch: int = 8, channels: int = 32, size: int = 16, noise: float = 0.5,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch where sample b's object carries prototype p_b and its ``[SEG]`` embedding is p_b + noise.

    Returns visual (B, C, size, size): background N(0, 1), object pixels p_b + N(0, noise^2); seg_embed
    (B, C) = p_b + N(0, noise^2); masks (B, 1, size, size) {0, 1}, one disk per sample at a random place.
    """
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(batch, channels, generator=g), dim=-1) * 3.0
    visual = torch.randn(batch, channels, size, size, generator=g)
    masks = torch.zeros(batch, 1, size, size)
    for b in range(batch):
        c = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        m = torch.as_tensor(disk_mask(size, (c[0], c[1]), size / 5))
        masks[b, 0] = m.float()
        obj = protos[b][:, None] + noise * torch.randn(channels, int(m.sum()), generator=g)
        visual[b][:, m] = obj
    seg = protos + noise * torch.randn(batch, channels, generator=g)
    return visual, seg, masks


def tmc_matched_vs_shuffled(noises: Sequence[float], batch: int = 8, temperature: float = 0.15,
                            seed: int = 0) -> list[dict]:
    """TMC loss of matched pairs and of shuffled pairs (embeddings rolled by one sample) per noise level;
    chance = ln(batch)."""
    rows = []
    for k, noise in enumerate(noises):
        visual, seg, masks = toy_tmc_batch(batch=batch, noise=float(noise), seed=seed + k)
        rows.append({"noise": float(noise), "matched": float(tmc_loss(visual, seg, masks, temperature)),
                     "shuffled": float(tmc_loss(visual, seg.roll(1, dims=0), masks, temperature)),
                     "chance": float(np.log(batch))})
    return rows


def tmc_vs_temperature(temperatures: Sequence[float], batch: int = 8, noise: float = 0.5,
                       seed: int = 0) -> list[dict]:
    """TMC loss of matched and shuffled pairs on one toy batch at each temperature."""
    visual, seg, masks = toy_tmc_batch(batch=batch, noise=noise, seed=seed)
    return [{"temperature": float(t), "matched": float(tmc_loss(visual, seg, masks, float(t))),
             "shuffled": float(tmc_loss(visual, seg.roll(1, dims=0), masks, float(t)))} for t in temperatures]
