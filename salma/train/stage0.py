"""Stage 0 of the foundation: SAM-2 alone, class-agnostic (a point inside an object -> that object's mask; the
dummy (0,0)/-1 prompt -> the union of the objects, so that the pre-pass prior is an objectness map).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from salma.data.refer import ReferDataset
from salma.losses import dice_loss, segmentation_loss, sigmoid_bce_loss
from salma.model import SalmaModel
from salma.sam2_ext import preprocess_images, structural_prior
from salma.train.batches import TrainScenes, _mask_tensor, draw_points
from salma.train.heads import ObjectHead, mean_colour
from salma.train.identity import RunSpec


# ---------------------------------------------------------------------------------------------- losses
def union_loss(model: SalmaModel, feats, unions: torch.Tensor) -> torch.Tensor:
    """Dummy prompt, no language -> union of objects, on all multimask outputs + the IoU head (stage 0)."""
    out = model.sam.decode(feats.image_embed, feats.high_res, multimask=True)
    logits = F.interpolate(out.low_res_logits, size=unions.shape[-2:], mode="bilinear", align_corners=False)
    target = unions.expand_as(logits)
    flat_logits, flat_target = logits.flatten(0, 1)[:, None], target.flatten(0, 1)[:, None]
    loss = 0.5 * sigmoid_bce_loss(flat_logits, flat_target) + 2.0 * dice_loss(flat_logits, flat_target)
    with torch.no_grad():
        pred = (logits > 0).float()
        inter = (pred * target).flatten(2).sum(-1)
        union = ((pred + target) > 0).float().flatten(2).sum(-1)
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return loss + F.mse_loss(out.ious, iou)


def stage0_loss(model: SalmaModel, scenes: TrainScenes, rng: np.random.Generator, batch_size: int,
                device: torch.device, points_per_image: int = 4, object_head: ObjectHead | None = None,
                category_weight: float = 0.0, colour_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Point prompt -> object mask (single-mask output, the token the language pass also uses) and the
    dummy prompt -> union. Loss weights 0.5 BCE + 2.0 Dice: from scratch, Sa2VA's 2.0/0.5 collapses to
    empty masks on small targets (docs/method.md section 9). With an ``object_head``: plus ``category_weight`` times the
    cross-entropy of each prompted object's category and ``colour_weight`` times the squared error of its
    mean colour (``ObjectHead``)."""

    images, masks, points, owner, unions, categories = draw_points(scenes, rng, batch_size, points_per_image)
    s = model.cfg.sam2.image_size
    sam_in = torch.cat([preprocess_images(im, s) for im in images]).to(device)
    scale = torch.tensor([[s / images[o].shape[1], s / images[o].shape[0]] for o in owner], dtype=torch.float32)
    coords = (torch.from_numpy(points) * scale)[:, None].to(device)
    labels = torch.ones(len(owner), 1, dtype=torch.int32, device=device)
    target, union = _mask_tensor(masks, s).to(device), _mask_tensor(unions, s).to(device)
    feats = model.sam.encode_image(sam_in)
    per_point = feats.select(torch.from_numpy(owner).to(device))
    out = model.sam.decode(per_point.image_embed, per_point.high_res, coords, labels, multimask=False)
    logits = F.interpolate(out.low_res_logits, size=(s, s), mode="bilinear", align_corners=False)
    point = segmentation_loss(logits, target, 0.5, 2.0)["seg"]
    prior = union_loss(model, feats, union)
    parts = {"point": point, "prior": prior, "total": point + prior}
    if object_head is not None:
        pooled = object_head.pool(per_point.image_embed, target)
        parts["category"] = F.cross_entropy(object_head.classifier(pooled), object_head.classes(categories, device))
        parts["total"] = parts["total"] + category_weight * parts["category"]
        if object_head.colour is not None:
            colour = mean_colour(sam_in[torch.from_numpy(owner).to(device)], target)
            parts["colour"] = F.mse_loss(object_head.colour(pooled), colour)
            parts["total"] = parts["total"] + colour_weight * parts["colour"]
    return parts


@torch.no_grad()
def stage0_eval(core: SalmaModel, spec: RunSpec, n_images: int = 200, head: ObjectHead | None = None) -> dict:
    """Point-prompt cIoU (a point inside each object -> its mask) and the prior's IoU with the union; with
    stage 0's ``head``, also the share of val objects whose category it tells (``category_accuracy``)."""

    scenes = TrainScenes(ReferDataset(spec.data_root, dataset="synref", split="val"))
    s = core.cfg.sam2.image_size
    inter = union = p_inter = p_union = 0
    right = seen = 0
    rng = np.random.default_rng(0)
    for i in range(min(n_images, len(scenes))):
        image, objects, _ = scenes.get(i)
        h, w = image.shape[:2]
        feats = core.sam.encode_image(preprocess_images(image, s).to(core.device))
        if head is not None:
            masks = _mask_tensor(objects, s).to(core.device)
            guess = head(feats.image_embed.expand(len(objects), -1, -1, -1), masks).argmax(1)
            right += int((guess == head.classes(np.array(scenes.categories(i)), core.device)).sum())
            seen += len(objects)
        for mask in objects:
            ys, xs = np.nonzero(mask)
            k = int(rng.integers(0, len(ys)))
            coords = torch.tensor([[[(xs[k] + 0.5) * s / w, (ys[k] + 0.5) * s / h]]], device=core.device)
            out = core.sam.decode(feats.image_embed, feats.high_res, coords,
                                  torch.ones(1, 1, dtype=torch.int32, device=core.device))
            pred = F.interpolate(out.low_res_logits, size=(h, w), mode="bilinear")[0, 0].cpu().numpy() > 0
            inter += int((pred & mask).sum())
            union += int((pred | mask).sum())
        prior = structural_prior(core.sam, feats.image_embed, feats.high_res)
        pred = F.interpolate(prior, size=(h, w), mode="bilinear")[0, 0].cpu().numpy() > 0
        u = np.any(np.stack(objects), axis=0)
        p_inter += int((pred & u).sum())
        p_union += int((pred | u).sum())
    out = {"point_ciou": inter / max(1, union), "prior_union_iou": p_inter / max(1, p_union),
           "images": min(n_images, len(scenes))}
    if head is not None:
        out["category_accuracy"] = right / max(1, seen)
    return out
