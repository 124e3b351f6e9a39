"""SAM-2 with a language embedding in the sparse prompt, and SALMA's structural-prior pre-pass.

Implements docs/method.md section 2 (Sa2VA: the ``[SEG]`` language embedding is concatenated to SAM-2's
sparse prompt embeddings before the mask decoder) and section 3.1 / paper Sec. 3.2, Alg. 1 stage 2 (the
pre-pass: the *shared* mask decoder run on the image features alone with the dummy (0,0)/label -1 point,
no language, no gradient, raw low-resolution logits, the best-IoU mask of the multimask output).

Everything is the real ``sam2`` package: the model is built with ``sam2.build_sam.build_sam2`` from its
configs (with Hydra overrides for the tiny/small presets) and we call its own image encoder, prompt
encoder and mask decoder. We call the prompt encoder and mask decoder directly instead of
``SAM2Base._forward_sam_heads`` because (a) that function has no place for extra sparse tokens,
(b) it overwrites the masks with -1024 where the object score is <= 0, which SALMA's pre-pass must not do
(the gate would be 0 everywhere), and (c) it upsamples every mask to full resolution, which the prior does
not need (measured 1.10x faster without it, docs/method.md section 7).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from sam2.build_sam import build_sam2
from torch import nn

from salma.config import SAM2Config

# SAM-2's input normalisation (sam2.utils.transforms.SAM2Transforms uses these ImageNet statistics).
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


def build_sam2_model(cfg: SAM2Config, device: str | torch.device = "cpu") -> nn.Module:
    """Build the real SAM-2 (``SAM2Base``) from a sam2 config, random weights unless ``cfg.checkpoint``.

    Post-processing (dynamic multimask fallback) is off: training and the pre-pass need the plain decoder.
    Raises FileNotFoundError naming the checkpoint path when a local checkpoint is missing.
    """

    if cfg.checkpoint is not None and not os.path.isfile(cfg.checkpoint):
        raise FileNotFoundError(
            f"SAM-2 checkpoint {cfg.checkpoint!r} does not exist. Point SAM2Config.checkpoint at a local "
            "sam2.1_hiera_*.pt file (nothing is downloaded), or set it to None for random weights."
        )
    model = build_sam2(
        cfg.config_file,
        cfg.checkpoint,
        device=str(device),
        mode="eval",
        hydra_overrides_extra=list(cfg.overrides),
        apply_postprocessing=False,
    )
    if model.image_size != cfg.image_size or model.sam_prompt_embed_dim != cfg.prompt_dim:
        raise ValueError(
            f"SAM2Config says image_size={cfg.image_size}, prompt_dim={cfg.prompt_dim} but the built model has "
            f"image_size={model.image_size}, prompt_dim={model.sam_prompt_embed_dim}: fix the overrides."
        )
    return model


def preprocess_images(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (B, H, W, 3) or (H, W, 3) -> SAM-2 input (B, 3, size, size), float32, normalised.

    Same arithmetic as ``SAM2Transforms`` (ToTensor -> Resize(size, size) with antialias -> Normalize).
    """
    x = torch.as_tensor(np.array(images, copy=True)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3) or (H, W, 3) RGB; got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 in [0, 255]; got dtype {x.dtype}")
    x = x.permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(SAM2_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SAM2_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class SAM2Features:
    """Image features as the mask decoder reads them.

    image_embed: (B, C, h, w), lowest resolution, no_mem_embed already added (as SAM2ImagePredictor does);
    high_res: [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] after the decoder's conv_s0/conv_s1.
    """

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]

    def select(self, index: torch.Tensor) -> SAM2Features:
        """Features of the given batch rows (e.g. one image's features for several expressions)."""
        return SAM2Features(self.image_embed[index], [f[index] for f in self.high_res])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> SAM2Features:
        return SAM2Features(self.image_embed.to(device, dtype), [f.to(device, dtype) for f in self.high_res])

    @staticmethod
    def stack(items: list[SAM2Features]) -> SAM2Features:
        """Concatenate along the batch dimension."""
        return SAM2Features(torch.cat([i.image_embed for i in items]),
                            [torch.cat([i.high_res[k] for i in items]) for k in range(len(items[0].high_res))])


@dataclass
class DecoderOutput:
    """low_res_logits: (B, M, 4h, 4w) raw mask logits (M = 3 multimask, else 1), never replaced by the
    no-object score; ious: (B, M); object_score_logits: (B, 1); tokens: (B, M, C) SAM output tokens."""

    low_res_logits: torch.Tensor
    ious: torch.Tensor
    object_score_logits: torch.Tensor
    tokens: torch.Tensor

    def best(self) -> torch.Tensor:
        """(B, 1, 4h, 4w): the mask with the highest predicted IoU (identity when M = 1)."""
        if self.low_res_logits.shape[1] == 1:
            return self.low_res_logits
        idx = self.ious.argmax(dim=1)
        return self.low_res_logits[torch.arange(idx.shape[0], device=idx.device), idx].unsqueeze(1)

    def best_only(self) -> DecoderOutput:
        """This output reduced to the best predicted-IoU mask (M = 1): logits, IoU and output token."""
        if self.low_res_logits.shape[1] == 1:
            return self
        idx = self.ious.argmax(dim=1)
        rows = torch.arange(idx.shape[0], device=idx.device)
        return DecoderOutput(self.low_res_logits[rows, idx][:, None], self.ious[rows, idx][:, None],
                             self.object_score_logits, self.tokens[rows, idx][:, None])


class LanguageSAM2(nn.Module):
    """A thin wrapper over ``SAM2Base`` that adds language tokens to the sparse prompt.

    ``self.model`` is the unmodified sam2 model: its state dict keys are sam2's own, so real SAM-2
    checkpoints load into it.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def prompt_dim(self) -> int:
        return self.model.sam_prompt_embed_dim

    def freeze_image_encoder(self) -> None:
        """Freeze the Hiera trunk + FPN neck (as Sa2VA and SALMA do); the decoder stays trainable.

        The decoder's conv_s0/conv_s1 run inside ``forward_image`` on the high-res levels; under a frozen
        encoder they get no gradient in Sa2VA either (docs/method.md section 7), so they are frozen with it. That also
        makes the image features a fixed function of the image, which the trainer caches.
        """
        for p in self.model.image_encoder.parameters():
            p.requires_grad = False
        for conv in (self.model.sam_mask_decoder.conv_s0, self.model.sam_mask_decoder.conv_s1):
            for p in conv.parameters():
                p.requires_grad = False

    def encode_image(self, images: torch.Tensor) -> SAM2Features:
        """images: (B, 3, S, S) normalised (see ``preprocess_images``) -> ``SAM2Features``.

        Mirrors ``SAM2ImagePredictor.set_image``: backbone -> FPN levels -> no_mem_embed on the lowest level.
        """
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.image_size:
            raise ValueError(
                f"SAM-2 expects images (B, 3, {self.image_size}, {self.image_size}); got {tuple(images.shape)}"
            )
        backbone_out = self.model.forward_image(images)
        _, vision_feats, _, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        b = images.shape[0]
        maps = [f.permute(1, 2, 0).reshape(b, -1, *s) for f, s in zip(vision_feats, feat_sizes)]
        return SAM2Features(image_embed=maps[-1], high_res=maps[:-1])

    def decode(
        self,
        image_embed: torch.Tensor,
        high_res: list[torch.Tensor],
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        language: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> DecoderOutput:
        """One mask-decoder pass.

        image_embed: (B, C, h, w) (possibly MBA-modulated); high_res: see ``SAM2Features``;
        point_coords: (B, P, 2) in input-pixel units (x, y), point_labels: (B, P) int; when None, the dummy
        (0, 0)/-1 point SAM-2 itself uses for "no prompt"; language: (B, N, C) tokens concatenated to the
        sparse prompt embeddings (Sa2VA), or None.
        """
        b = image_embed.shape[0]
        device = image_embed.device
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 2, device=device)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        sparse, dense = self.model.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
        if language is not None:
            if language.ndim != 3 or language.shape[0] != b or language.shape[2] != sparse.shape[2]:
                raise ValueError(
                    f"language embedding must be (B={b}, N, C={sparse.shape[2]}); got {tuple(language.shape)}"
                )
            sparse = torch.cat([sparse, language.to(sparse.dtype)], dim=1)
        logits, ious, tokens, obj_scores = self.model.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=high_res,
        )
        return DecoderOutput(logits.float(), ious.float(), obj_scores.float(), tokens)


def structural_prior(sam: LanguageSAM2, image_embed: torch.Tensor, high_res: list[torch.Tensor],
                     multimask: bool = True) -> torch.Tensor:
    """SALMA's pre-pass (paper Alg. 1 stage 2): the shared decoder on the image features alone.

    A plain function of the features (no model state besides the decoder's weights), so that it can be
    ``torch.compile``d on a GPU. Returns the raw low-res logits (B, 1, 4h, 4w), detached: no gradient
    flows through the pre-pass; the same decoder weights are trained by the language-conditioned pass.
    """
    with torch.no_grad():
        out = sam.decode(image_embed.detach(), [f.detach() for f in high_res], multimask=multimask)
        return out.best().detach()
