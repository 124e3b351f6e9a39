"""The model's inputs: ``Batch`` (tensors of one forward), ``BatchCollator`` (images, expressions and masks
to a ``Batch`` on the CPU) and the image checks (docs/design.md section "Data flow (one image, one expression)").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from salma.config import SalmaConfig
from salma.mllm import ANSWER, PromptBuilder, pad_prompts, preprocess_tiles, tiles_for_image
from salma.sam2_ext import SAM2Features, preprocess_images


@dataclass
class Batch:
    """A model batch of B expressions over I images (I <= B: several expressions may share an image).

    sam_images: (I, 3, S, S) SAM-2 input; image_index: (B,) which image each expression reads;
    pixel_values: (T, 3, s, s) InternViT tiles of all expressions in order; input_ids, attention_mask,
    labels: (B, L); seg_positions: (B,); expression_index / expression_valid: (B, N);
    gt_masks: (B, 1, S, S) float {0, 1} at SAM-2's input size, or None at inference;
    sizes: original (H, W) of each expression's image.

    Video training (``BatchCollator.clips``): the B expression rows are clips, the R = B x K frame rows are
    the "images" (image_index = arange(R)); clip_index: (R,) which clip (expression row) each frame row
    belongs to; target_group: (B,) equal ids for clips that show the same target object (TMC negatives);
    gt_masks: (R, 1, S, S), one per frame row (empty where the target is absent).
    """

    sam_images: torch.Tensor
    image_index: torch.Tensor
    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    seg_positions: torch.Tensor
    expression_index: torch.Tensor
    expression_valid: torch.Tensor
    gt_masks: torch.Tensor | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)
    features: SAM2Features | None = None  # precomputed SAM-2 features of sam_images (frozen encoder)
    clip_index: torch.Tensor | None = None
    target_group: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        if self.features is not None:
            moved["features"] = self.features.to(device)
        return Batch(**moved)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an RGB uint8 image (H, W, 3); raise ValueError naming what is wrong."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an RGB array (H, W, 3); got shape {image.shape}. "
                         "Convert grayscale with np.stack([g]*3, -1) and drop alpha channels.")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 in [0, 255]; got dtype {image.dtype}")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"{name} is too small: {image.shape[:2]}")
    return image


class BatchCollator:
    """Builds ``Batch``es on the CPU from images, expressions and masks. It holds the config, tokenizer and
    prompt builder but no weights, so DataLoader worker processes can run it (training prefetches batches)."""

    def __init__(self, cfg: SalmaConfig, tokenizer, prompts: PromptBuilder):
        self.cfg, self.tokenizer, self.prompts = cfg, tokenizer, prompts

    def __call__(self, images: list[np.ndarray], expressions: list[str], masks: list[np.ndarray] | None = None,
                 image_index: list[int] | None = None, answer: str = ANSWER) -> Batch:
        """Collate uint8 images (H, W, 3), expressions and optional bool GT masks (H, W) into a ``Batch``.

        ``image_index[b]`` says which of ``images`` expression b refers to (default: one image each).
        """
        if image_index is None:
            image_index = list(range(len(expressions)))
        if len(image_index) != len(expressions):
            raise ValueError(f"{len(expressions)} expressions but {len(image_index)} image indices")
        images = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        s = self.cfg.sam2.image_size
        sam_images = torch.cat([preprocess_images(im, s) for im in images])
        tiles, prompts = [], []
        for b, (idx, expr) in enumerate(zip(image_index, expressions)):
            t = tiles_for_image(images[idx], self.cfg.mllm)
            tiles.append(preprocess_tiles(t, self.cfg.mllm.vision_image_size))
            prompts.append(self.prompts.build(expr, n_tiles=len(t), answer=answer))
        ids = pad_prompts(prompts, self.tokenizer.pad_token_id)
        gt = None
        if masks is not None:
            if len(masks) != len(expressions):
                raise ValueError(f"{len(expressions)} expressions but {len(masks)} masks")
            gt_list = []
            for b, m in enumerate(masks):
                m = np.asarray(m)
                h, w = images[image_index[b]].shape[:2]
                if m.shape != (h, w):
                    raise ValueError(f"masks[{b}] has shape {m.shape} but its image is {(h, w)}")
                gt_list.append(torch.as_tensor(m.astype(np.float32))[None, None])
            gt = torch.cat([F.interpolate(g, size=(s, s), mode="nearest") for g in gt_list])
        return Batch(
            sam_images=sam_images, image_index=torch.tensor(image_index, dtype=torch.long),
            pixel_values=torch.cat(tiles), gt_masks=gt,
            sizes=[images[i].shape[:2] for i in image_index], **ids,
        )

    def clips(self, clips: list[np.ndarray], expressions: list[str], masks: list[np.ndarray],
              mllm_index: list[list[int]], target_group: list[int] | None = None,
              answer: str = ANSWER) -> Batch:
        """Collate B clips for video training (Sa2VA's video recipe) into one ``Batch``.

        clips[b]: (K_b, H, W, 3) uint8 frames; masks[b]: (K_b, H, W) bool, empty where the target is absent;
        mllm_index[b]: the frames (indices into clips[b]) the MLLM reads, one tile each, as
        ``salma.video.clip_prompts`` builds them at inference; target_group[b]: clips with equal ids show the
        same object (default: all different). Every frame becomes a row for SAM-2 (see ``Batch``).
        """
        if not (len(clips) == len(expressions) == len(masks) == len(mllm_index)):
            raise ValueError(f"{len(clips)} clips, {len(expressions)} expressions, {len(masks)} mask stacks and "
                             f"{len(mllm_index)} frame lists: one of each per clip")
        s = self.cfg.sam2.image_size
        tiles, prompts, clip_index, gt, sizes = [], [], [], [], []
        for b, (frames, expr, m, idx) in enumerate(zip(clips, expressions, masks, mllm_index)):
            frames, m = np.asarray(frames), np.asarray(m)
            check_image(frames[0], f"clips[{b}][0]")
            if frames.dtype != np.uint8 or frames.ndim != 4 or m.shape != frames.shape[:3]:
                raise ValueError(f"clips[{b}] must be uint8 (K, H, W, 3) with masks (K, H, W); got "
                                 f"{frames.dtype} {frames.shape} and masks {m.shape}")
            tiles.append(preprocess_tiles([frames[i] for i in idx], self.cfg.mllm.vision_image_size))
            prompts.append(self.prompts.build(expr, n_tiles=len(idx), answer=answer))
            clip_index += [b] * len(frames)
            gt.append(F.interpolate(torch.as_tensor(m.astype(np.float32))[:, None], size=(s, s), mode="nearest"))
            sizes += [frames.shape[1:3]] * len(frames)
        sam_images = torch.cat([preprocess_images(np.asarray(f), s) for f in clips])
        groups = list(range(len(clips))) if target_group is None else list(target_group)
        return Batch(
            sam_images=sam_images, image_index=torch.arange(len(clip_index)), pixel_values=torch.cat(tiles),
            gt_masks=torch.cat(gt), sizes=sizes, clip_index=torch.tensor(clip_index, dtype=torch.long),
            target_group=torch.tensor(groups, dtype=torch.long), **pad_prompts(prompts, self.tokenizer.pad_token_id),
        )
