"""The foundation's auxiliary read-outs (docs/foundation.md section "How the foundation is made"): the object
head of stage 0, the box and image-token heads of stage 1. They stand in for the pretraining the real
InternVL and SAM-2 bring; fine-tuning runs have none.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from salma.model import SalmaModel
from salma.train.batches import TrainScenes
from salma.train.identity import RunSpec


class ObjectHead(nn.Module):
    """Stage 0's auxiliary read-out of an object from the SAM-2 image embedding averaged over its mask: its
    category (cross-entropy) and, optionally, its mean colour (regression on the normalised SAM-2 input).

    It stands in for what SAM-2's encoder brings from its own pretraining (Hiera, MAE on images) and a
    class-agnostic objective does not teach: which *kind* of object a region is. Linear probes of a
    class-agnostic stage 0's encoder told colour and size but hardly shape (SynRef's category); the category
    term teaches shape and the colour term keeps colour (docs/foundation.md section "What the measurements
    said"). Used only during stage 0; not part of the saved model.

    ``category_ids``: the dataset's category ids (``ReferDataset.categories()``), mapped to classes 0..K-1.
    """

    def __init__(self, channels: int, category_ids: list[int], colour: bool = False):
        super().__init__()
        self.category_ids = list(category_ids)
        self.classifier = nn.Linear(channels, len(self.category_ids))
        self.colour = nn.Linear(channels, 3) if colour else None

    def classes(self, category_ids: np.ndarray, device: torch.device) -> torch.Tensor:
        index = {c: k for k, c in enumerate(self.category_ids)}
        return torch.tensor([index[int(c)] for c in category_ids], dtype=torch.long, device=device)

    @staticmethod
    def pool(image_embed: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """image_embed: (N, C, h, w) one row per object; masks: (N, 1, S, S) {0, 1} -> (N, C) mask averages."""
        weights = F.adaptive_avg_pool2d(masks, image_embed.shape[-2:])
        return (image_embed * weights).sum((-2, -1)) / weights.sum((-2, -1)).clamp(min=1e-6)

    def forward(self, image_embed: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """-> category logits (N, K) (see ``pool`` for the shapes)."""
        return self.classifier(self.pool(image_embed, masks))


class BoxHead(nn.Module):
    """Stage 1's auxiliary read-out of the referred object's box from the ``[SEG]`` language embedding e: a
    linear map to (x0, y0, x1, y1) in [0, 1] of the image (sigmoid), trained with an L1 loss.

    It stands in for what InternVL brings from its own pretraining and a from-scratch MLLM lacks: InternVL2.5
    is trained on referring-expression comprehension, answering with the referred object's box. Here that
    skill is taught through e itself, so that the embedding the decoder reads says *where* the target is,
    a direct signal beside the mask loss, whose gradient reaches the MLLM only through the decoder. Used only
    during stage 1; not part of the saved model.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.box = nn.Linear(channels, 4)

    def forward(self, language: torch.Tensor) -> torch.Tensor:
        """language: (B, C) [SEG] embeddings -> (B, 4) boxes (x0, y0, x1, y1), fractions of the image."""
        return torch.sigmoid(self.box(language))


class ImageTokenHead(nn.Module):
    """Stage 1's auxiliary read-out of the MLLM's image tokens (the projector's outputs, what the LLM reads):
    for each token, the share of its image cell covered by background and by each object category (soft
    cross-entropy) and the mean colour of the object pixels there (squared error, weighted by their share).

    It stands in for InternVL's own pretraining (InternViT and its projector are pretrained on image-text
    data), which a from-scratch MLLM lacks: without it the [SEG] embedding hardly depended on the image, the
    LLM having learnt to leave all of the grounding to SAM-2's decoder (docs/foundation.md section "What the
    measurements said"). Used only during stage 1; not part of the saved model.
    """

    def __init__(self, hidden: int, category_ids: list[int]):
        super().__init__()
        self.category_ids = list(category_ids)
        self.classes = nn.Linear(hidden, 1 + len(self.category_ids))  # background first
        self.colour = nn.Linear(hidden, 3)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (B, T, h) -> class logits (B, T, 1 + K) and colours (B, T, 3)."""
        return self.classes(tokens), self.colour(tokens)

    def targets(self, image: np.ndarray, objects: list[np.ndarray], categories: list[int], grid: int):
        """One image (H, W, 3) uint8 and its objects -> per token of a grid x grid raster (InternVL's
        pixel-shuffle order: row-major): class shares (T, 1 + K), mean object colour in [0, 1] (T, 3) and the
        object share (T,)."""
        index = {c: k + 1 for k, c in enumerate(self.category_ids)}
        labels = np.zeros(image.shape[:2], dtype=np.int64)
        for mask, cat in zip(objects, categories):
            labels[mask] = index[int(cat)]
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels), 1 + len(self.category_ids)).float()
        shares = F.adaptive_avg_pool2d(one_hot.permute(2, 0, 1)[None], grid)[0]  # (1 + K, g, g)
        obj = torch.from_numpy(labels > 0).float()[None, None]
        rgb = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
        cover = F.adaptive_avg_pool2d(obj, grid)[0, 0]
        colour = F.adaptive_avg_pool2d(rgb * obj, grid)[0] / cover.clamp(min=1e-6)
        return shares.flatten(1).T, colour.flatten(1).T, cover.flatten()


def image_token_loss(core: SalmaModel, head: ImageTokenHead, batch, scenes: TrainScenes, indices: list[int],
                     device) -> torch.Tensor:
    """``ImageTokenHead``'s loss on a referring micro-batch (one MLLM tile per expression; the tokens come from
    a second pass of InternViT + projector, which is cheap beside the LLM, so the model's forward is unchanged)."""
    mllm_cfg = core.cfg.mllm
    if mllm_cfg.max_tiles != 1:
        raise ValueError("the image-token auxiliary needs one MLLM tile per image (MLLMConfig.max_tiles = 1)")
    grid = int(round(mllm_cfg.image_tokens ** 0.5))
    tokens = core.mllm.model.get_image_features(pixel_values=batch.pixel_values.to(device),
                                                vision_feature_layer=-1,
                                                vision_feature_select_strategy="default").pooler_output
    shares, colours, covers = zip(*(head.targets(*scenes.get(i)[:2], scenes.categories(i), grid) for i in indices))
    shares, colours, covers = (torch.stack(t).to(device) for t in (shares, colours, covers))
    logits, colour = head(tokens)
    classes = -(shares * F.log_softmax(logits, -1)).sum(-1).mean()
    colour_err = ((colour - colours) ** 2).mean(-1)
    return classes + (colour_err * covers).sum() / covers.sum().clamp(min=1e-6)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """masks: (B, 1, S, S) {0, 1}, each non-empty -> (B, 4) tight boxes (x0, y0, x1, y1) as fractions of S
    (x1, y1 are the far edges of the last pixels, so a one-pixel mask has a box of side 1/S)."""
    size = masks.shape[-1]
    rows, cols = masks[:, 0].amax(2) > 0, masks[:, 0].amax(1) > 0  # (B, S) each
    if not bool(rows.any(1).all()):
        raise ValueError("mask_boxes needs a non-empty mask in every row")
    index = torch.arange(size, device=masks.device)

    def span(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.where(hit, index, size).amin(1)
        hi = torch.where(hit, index, -1).amax(1) + 1
        return lo, hi

    (y0, y1), (x0, x1) = span(rows), span(cols)
    return torch.stack([x0, y0, x1, y1], 1).float() / size


def mean_colour(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """images: (N, 3, S, S), masks: (N, 1, S, S) {0, 1} -> (N, 3) the mean of each image under its mask."""
    return (images * masks).sum((-2, -1)) / masks.sum((-2, -1)).clamp(min=1e-6)


# ---------------------------------------------------------------------------------------------- checkpoints
def aux_head(spec: RunSpec, model: SalmaModel, scenes) -> nn.Module | None:
    """The run's auxiliary head, if its spec asks for one: stage 0's ``ObjectHead``; stage 1's ``BoxHead`` and
    ``ImageTokenHead`` (a ModuleDict).
    It trains beside the model with the run's learning rate and travels in the run's checkpoints, but is not
    part of the saved model."""
    if spec.stage == "stage0" and (spec.category_loss_weight > 0 or spec.colour_loss_weight > 0):
        return ObjectHead(model.cfg.sam2.prompt_dim, scenes.dataset.categories(), colour=spec.colour_loss_weight > 0)
    if spec.stage == "stage1" and (spec.box_loss_weight > 0 or spec.token_loss_weight > 0):
        heads = nn.ModuleDict()
        if spec.box_loss_weight > 0:
            heads["box"] = BoxHead(model.cfg.sam2.prompt_dim)
        if spec.token_loss_weight > 0:
            heads["tokens"] = ImageTokenHead(model.mllm.config.text_config.hidden_size, scenes.dataset.categories())
        return heads
    return None
