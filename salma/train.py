"""Training: the SynRef foundation (stage 0 + stage 1) and the fine-tuning runs of the ablation.

Paper Sec. 4.1 recipe: AdamW (0.9, 0.999), weight decay 0.05, linear warm-up then cosine, grad-norm clip 1.0,
gradient accumulation, bf16 autocast on GPU; gamma and the auxiliary losses warm up linearly
(MBAConfig.gamma_warmup_ratio, LossConfig.aux_warmup_ratio).

Stages (DESIGN.md "Foundation, then fine-tuning"):
- ``stage0``: SAM-2 alone, class-agnostic: a point inside an object -> that object's mask; the dummy
  (0,0)/-1 prompt -> the union of all objects (all three multimask outputs, plus the IoU head), so that the
  pre-pass prior is an objectness map as the real pretrained SAM-2's is.
- ``stage1``: the Sa2VA baseline on SynRef referring data until it grounds; the dummy-prompt union loss is
  kept as a small auxiliary term so the prior stays meaningful while the decoder learns language.
- ``finetune``: the ablation unit, from the foundation: baseline, +MBA, +TMC, +boundary, FiLM, bias.
- ``video``: fine-tuning on a video referring dataset (SynRef-Video / MeViS layout, ``data_root`` holding
  ``train/meta_expressions.json``) as Sa2VA trains on video: each sample is a contiguous window of
  ``clip_frames`` frames of one training expression; the MLLM reads ``mllm_frames`` of them (the first ones,
  or spread evenly) and gives ONE ``[SEG]`` embedding (+ MBA's text tokens) for the clip, which every frame's
  decoder pass receives. Sa2VA trains the decoder per frame without SAM-2's memory, so every frame goes
  through ``SalmaModel.segment`` (prior per frame, detached; MBA per frame), exactly the path of
  ``predict_video(mode="per_frame")``; losses per frame (``SalmaModel.forward``). The run ends with J&F on
  the ``valid_u`` split, in per-frame and released (SAM-2 memory) modes.

Accelerate places the model (CPU, one GPU, or several processes under ``accelerate launch``: each process
draws its own part of every batch). Batches are drawn from a generator seeded by (seed, step, micro-step,
process), so a run killed and resumed from its last checkpoint sees exactly the batches it would have seen.
Checkpoints are safetensors (model) + a torch file of optimizer/RNG state, written atomically; runs are
cached under ``runs/`` by a hash of their full config.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from salma.checkpoint import load_state_dict, save_state_dict
from salma.config import SalmaConfig
from salma.data.refer import ReferDataset
from salma.data.video_format import VideoReferDataset
from salma.losses import dice_loss, segmentation_loss, sigmoid_bce_loss
from salma.mba import linear_warmup
from salma.model import SalmaModel
from salma.sam2_ext import SAM2Features

STAGES = ("stage0", "stage1", "finetune", "video")
# RunSpec fields that only the video stage reads: left out of other stages' hashes, so adding them kept
# every image run's cache key.
VIDEO_FIELDS = ("clip_frames", "mllm_frames", "frame_sampling")
# RunSpec fields added later, left out of the hash while they hold their default (the behaviour from before
# they existed), so that every cached run made before them keeps its key.
LATER_SPEC_DEFAULTS = {"category_loss_weight": 0.0, "colour_loss_weight": 0.0, "box_loss_weight": 0.0,
                       "token_loss_weight": 0.0}


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run besides the model config (all of it goes into the run's hash)."""

    stage: str = "finetune"
    data_root: str = "data/synref"
    steps: int | None = None  # None: cfg.train.steps
    eval_every: int = 0  # 0: evaluate at the end only
    eval_limit: int = 200
    checkpoint_every: int = 100
    init_from: str | None = None  # a SalmaModel directory (the foundation) or None (random weights)
    prior_loss_weight: float = 0.0  # stage 1: keep the dummy-prompt -> union objective alive
    category_loss_weight: float = 0.0  # stage 0: weight of the object-category auxiliary (ObjectHead)
    colour_loss_weight: float = 0.0  # stage 0: weight of the object-colour auxiliary (ObjectHead)
    box_loss_weight: float = 0.0  # stage 1: weight of the target-box auxiliary on the [SEG] embedding (BoxHead)
    token_loss_weight: float = 0.0  # stage 1: weight of the image-token auxiliary of the MLLM (ImageTokenHead)
    train_images: int | None = None  # use only the first N training images (bounds the feature cache)
    seg_bce_weight: float | None = None  # override cfg.loss for this run (stage 1 from scratch: 0.5/2.0)
    seg_dice_weight: float | None = None
    name: str = "run"
    # video stage only: frames per training clip (a contiguous window), frames the MLLM reads, and which
    # ("first": Sa2VA; "uniform": spread over the window, Sa2VA-i). train_images then counts videos.
    clip_frames: int = 5
    mllm_frames: int = 5
    frame_sampling: str = "first"

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}; accepted values: {', '.join(STAGES)}")
        if self.stage == "video":
            from salma.video import FRAME_SAMPLING

            if self.clip_frames < 1 or self.mllm_frames < 1:
                raise ValueError(f"clip_frames={self.clip_frames} and mllm_frames={self.mllm_frames} must be >= 1")
            if self.frame_sampling not in FRAME_SAMPLING:
                raise ValueError(f"frame_sampling={self.frame_sampling!r}; accepted: {', '.join(FRAME_SAMPLING)}")
            if self.prior_loss_weight:
                raise ValueError("prior_loss_weight is a stage-1 objective on images; the video stage has none")
        for name in ("category_loss_weight", "colour_loss_weight"):
            if getattr(self, name) and self.stage != "stage0":
                raise ValueError(f"{name} is a stage-0 objective; stage {self.stage!r} has none")
        for name in ("box_loss_weight", "token_loss_weight"):
            if getattr(self, name) and self.stage != "stage1":
                raise ValueError(f"{name} is a stage-1 objective; stage {self.stage!r} has none")


@dataclass
class RunResult:
    """run_dir: the run's folder; final: its final SalmaModel directory; metrics: final val metrics rows;
    log: per-step rows; cached: True when a finished run was reused."""

    run_dir: Path
    final: Path
    metrics: dict
    log: list[dict] = field(default_factory=list)
    cached: bool = False


# ---------------------------------------------------------------------------------------------- data
class TrainScenes:
    """Random access to training images with all their objects and expressions (refer format on disk).

    Images, object masks and expressions are read once and kept in memory (SynRef at 64x64: ~3 KB/image).
    """

    def __init__(self, dataset: ReferDataset, max_images: int | None = None):
        self.dataset = dataset
        self.image_ids = list(dataset.image_ids())[:max_images]
        if not self.image_ids:
            raise ValueError(f"{dataset} has no images in split {dataset.split!r}")
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.image_ids)

    def features(self, indices: list[int], model: SalmaModel) -> SAM2Features:
        """SAM-2 features of these images from a *frozen* encoder, computed once and kept (fp16, CPU).

        Valid only while the encoder does not change (``cfg.sam2.freeze_encoder``). The store is shared by
        every run of this process that has the same encoder weights and data (the ablation's runs all
        start from one foundation), keyed by a fingerprint of those weights.
        """
        from salma.sam2_ext import preprocess_images

        store = _FEATURE_STORES.setdefault((encoder_fingerprint(model), str(self.dataset.data_root),
                                            self.dataset.split), {})
        self._features = store
        missing = sorted({self.image_ids[i] for i in indices if self.image_ids[i] not in store})
        s = model.cfg.sam2.image_size
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        for chunk in range(0, len(missing), 64):
            part = missing[chunk:chunk + 64]
            images = torch.cat([preprocess_images(self.get(position[i])[0], s) for i in part]).to(model.device)
            with torch.no_grad():
                feats = model.sam.encode_image(images)
            for row, image_id in enumerate(part):
                store[image_id] = feats.select(torch.tensor([row])).to("cpu", torch.float16)
        stacked = SAM2Features.stack([store[self.image_ids[i]] for i in indices])
        return stacked.to(model.device, torch.float32)

    def get(self, i: int) -> tuple[np.ndarray, list[np.ndarray], list[tuple[str, np.ndarray]]]:
        """-> (image (H, W, 3) uint8, object masks [(H, W) bool], [(expression, target mask)])."""
        image_id = self.image_ids[i]
        if image_id not in self._cache:
            samples = list(self.dataset.samples_for_image(image_id))
            image = self.dataset.load_image(samples[0])
            objects = [m for _, m in self.dataset.object_masks(image_id)]
            exprs = [(s.expression, self.dataset.load_mask(s)) for s in samples]
            self._cache[image_id] = (image, objects, exprs)
        return self._cache[image_id]

    def categories(self, i: int) -> list[int]:
        """COCO category ids of image ``i``'s objects, in the order of ``get(i)[1]`` (SynRef: the shape)."""
        return self.dataset.object_categories(self.image_ids[i])


# (encoder fingerprint, data root, split) -> {image_id: SAM2Features}; see TrainScenes.features.
_FEATURE_STORES: dict[tuple, dict] = {}


class TrainClips:
    """Random access to the training expressions of a video dataset: (frames, target masks, sample).

    Frames and masks are read once per video / expression and kept in memory (SynRef-Video at 64 px and
    12 frames: ~150 KB per clip). ``max_videos``: use only the first N videos (sorted ids).
    """

    def __init__(self, dataset: VideoReferDataset, max_videos: int | None = None):
        self.dataset = dataset
        keep = set(dataset.videos()[:max_videos])
        self.samples = [s for s in dataset.samples if s.video in keep]
        if not self.samples:
            raise ValueError(f"{dataset.meta_path} has no expression to train on")
        self._frames: dict[str, np.ndarray] = {}
        self._masks: dict[tuple[str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def frames(self, video: str) -> np.ndarray:
        if video not in self._frames:
            self._frames[video] = self.dataset.load_frames(next(s for s in self.samples if s.video == video))
        return self._frames[video]

    def get(self, i: int):
        """-> (frames (T, H, W, 3) uint8, target masks (T, H, W) bool, VideoSample)."""
        s = self.samples[i]
        key = (s.video, s.exp_id)
        if key not in self._masks:
            self._masks[key] = self.dataset.load_masks(s)
        return self.frames(s.video), self._masks[key], s

    def features(self, keys: list[tuple[str, int]], model: SalmaModel) -> SAM2Features:
        """Frozen-encoder SAM-2 features of frames ``keys`` = [(video, frame index)], computed once and kept
        (fp16, CPU), as ``TrainScenes.features`` does for images (same store, its own key)."""
        from salma.sam2_ext import preprocess_images

        store = _FEATURE_STORES.setdefault(("video", encoder_fingerprint(model), str(self.dataset.root),
                                            self.dataset.split), {})
        missing = sorted({k for k in keys if k not in store})
        for chunk in range(0, len(missing), 64):
            part = missing[chunk:chunk + 64]
            images = torch.cat([preprocess_images(self.frames(v)[f], model.cfg.sam2.image_size)
                                for v, f in part]).to(model.device)
            with torch.no_grad():
                feats = model.sam.encode_image(images)
            for row, key in enumerate(part):
                store[key] = feats.select(torch.tensor([row])).to("cpu", torch.float16)
        return SAM2Features.stack([store[k] for k in keys]).to(model.device, torch.float32)


def encoder_fingerprint(model: SalmaModel) -> str:
    """A hash of the SAM-2 image encoder's weights (and the decoder's conv_s0/s1 applied with it)."""
    import hashlib

    h = hashlib.sha256()
    parts = list(model.sam.model.image_encoder.state_dict().items())
    parts += [(f"conv_s{i}.{k}", v) for i, conv in enumerate((model.sam.model.sam_mask_decoder.conv_s0,
                                                               model.sam.model.sam_mask_decoder.conv_s1))
              for k, v in conv.state_dict().items()]
    for name, tensor in parts:
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def batch_rng(seed: int, step: int, micro: int, rank: int) -> np.random.Generator:
    """The generator that draws micro-batch ``micro`` of optimizer step ``step`` on process ``rank``."""
    return np.random.default_rng(np.random.SeedSequence([seed, step, micro, rank]))


def draw_referring(scenes: TrainScenes, rng: np.random.Generator, batch_size: int):
    """B random (image, expression, target mask, union of the image's objects) and the image indices."""
    images, exprs, masks, unions = [], [], [], []
    indices = [int(i) for i in rng.integers(0, len(scenes), batch_size)]
    for i in indices:
        image, objects, refs = scenes.get(int(i))
        text, mask = refs[int(rng.integers(0, len(refs)))]
        images.append(image)
        exprs.append(text)
        masks.append(mask)
        unions.append(np.any(np.stack(objects), axis=0))
    return images, exprs, masks, unions, indices


def draw_clips(clips: TrainClips, rng: np.random.Generator, batch_size: int, clip_frames: int,
               mllm_frames: int = 5, frame_sampling: str = "first"):
    """B random training expressions, each on a random contiguous window of ``clip_frames`` frames.

    Returns (clips [(K, H, W, 3)], expressions, masks [(K, H, W) bool], mllm_index [[frames the MLLM reads,
    indices into the window]], target_group [B] (equal for clips of the same target object: same video and
    objects, whatever the window), keys [(video, frame)] * (B * K) in row order).
    """
    from salma.video import sample_frames

    frames_out, exprs, masks, mllm_index, groups, keys = [], [], [], [], [], []
    targets: dict[tuple, int] = {}
    for i in rng.integers(0, len(clips), batch_size):
        frames, target, sample = clips.get(int(i))
        k = min(clip_frames, len(frames))
        start = int(rng.integers(0, len(frames) - k + 1))
        frames_out.append(frames[start:start + k])
        masks.append(target[start:start + k])
        exprs.append(sample.text)
        mllm_index.append(sample_frames(k, mllm_frames, frame_sampling))
        groups.append(targets.setdefault((sample.video, sample.anno_ids, sample.obj_ids), len(targets)))
        keys += [(sample.video, f) for f in range(start, start + k)]
    return frames_out, exprs, masks, mllm_index, groups, keys


def draw_points(scenes: TrainScenes, rng: np.random.Generator, batch_size: int, points_per_image: int = 4):
    """B random images, and for each ``points_per_image`` random objects with a point inside each.

    Returns images [B], object masks [B * P], points (B * P, 2) as (x, y) pixels, image index (B * P,),
    unions [B], category ids (B * P,) of the prompted objects. Several prompts per image cost one encoder
    pass (the decoder is ~15x cheaper).
    """
    images, masks, points, owner, unions, categories = [], [], [], [], [], []
    for b, i in enumerate(rng.integers(0, len(scenes), batch_size)):
        image, objects, _ = scenes.get(int(i))
        cats = scenes.categories(int(i))
        images.append(image)
        unions.append(np.any(np.stack(objects), axis=0))
        for k in rng.integers(0, len(objects), points_per_image):
            mask = objects[int(k)]
            ys, xs = np.nonzero(mask)
            j = int(rng.integers(0, len(ys)))
            masks.append(mask)
            points.append((xs[j] + 0.5, ys[j] + 0.5))
            owner.append(b)
            categories.append(cats[int(k)])
    return images, masks, np.array(points, dtype=np.float32), np.array(owner), unions, np.array(categories)


class ReferringBatches(torch.utils.data.IterableDataset):
    """The referring micro-batches of optimizer steps [start, total) of one process, ready to run.

    Each item is (step, [(Batch, unions (B, 1, S, S), image indices)] * grad_accum). Batches depend only on
    (seed, step, micro, rank), so they are identical whether made in this process or in DataLoader workers
    (worker w makes the steps start + w, start + w + n, ...; the loader returns them round-robin, in order).
    On a GPU the CPU-side collation (tokenising, resizing) would otherwise leave the accelerator idle.
    """

    def __init__(self, scenes: TrainScenes, collator, seed: int, start: int, total: int, grad_accum: int,
                 rank: int, batch_size: int, sam_size: int):
        super().__init__()
        self.scenes, self.collator, self.seed, self.start, self.total = scenes, collator, seed, start, total
        self.grad_accum, self.rank, self.batch_size, self.sam_size = grad_accum, rank, batch_size, sam_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k, step in enumerate(range(self.start, self.total)):
            if k % n_workers != worker:
                continue
            yield step, [self.micro_batch(batch_rng(self.seed, step, micro, self.rank))
                         for micro in range(self.grad_accum)]

    def micro_batch(self, rng: np.random.Generator):
        images, exprs, masks, unions, indices = draw_referring(self.scenes, rng, self.batch_size)
        return self.collator(images, exprs, masks), _mask_tensor(unions, self.sam_size), indices


class ClipBatches(ReferringBatches):
    """``ReferringBatches`` of the video stage: each micro-batch is (Batch of ``batch_size`` clips (see
    ``BatchCollator.clips``), None, frame keys), drawn by ``draw_clips`` from the same (seed, step, micro,
    rank) generator, so resume and DataLoader prefetching behave as for images."""

    def __init__(self, clips: TrainClips, collator, seed: int, start: int, total: int, grad_accum: int,
                 rank: int, batch_size: int, spec: RunSpec):
        super().__init__(clips, collator, seed, start, total, grad_accum, rank, batch_size, 0)
        self.spec = spec

    def micro_batch(self, rng: np.random.Generator):
        return make_clip_batch(self.scenes, self.collator, rng, self.batch_size, self.spec)


def make_clip_batch(clips: TrainClips, collator, rng: np.random.Generator, batch_size: int, spec: RunSpec):
    """(Batch, None, frame keys) of one video micro-batch (``draw_clips`` + ``BatchCollator.clips``)."""
    frames, exprs, masks, mllm_index, groups, keys = draw_clips(clips, rng, batch_size, spec.clip_frames,
                                                               spec.mllm_frames, spec.frame_sampling)
    return collator.clips(frames, exprs, masks, mllm_index, groups), None, keys


def loader_workers() -> int:
    """DataLoader worker processes for training batches: ``$SALMA_LOADER_WORKERS`` if set; else 0 on a CPU
    (the model needs every core) and up to 6 beside a GPU. Batches do not depend on it."""
    if os.environ.get("SALMA_LOADER_WORKERS"):
        return int(os.environ["SALMA_LOADER_WORKERS"])
    return min(6, max(0, (os.cpu_count() or 1) - 2)) if torch.cuda.is_available() else 0


def _as_is(item):
    return item


def _mask_tensor(masks: list[np.ndarray], size: int) -> torch.Tensor:
    t = torch.stack([torch.as_tensor(m.astype(np.float32)) for m in masks])[:, None]
    return F.interpolate(t, size=(size, size), mode="nearest")


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


class ObjectHead(nn.Module):
    """Stage 0's auxiliary read-out of an object from the SAM-2 image embedding averaged over its mask: its
    category (cross-entropy) and, optionally, its mean colour (regression on the normalised SAM-2 input).

    It stands in for what SAM-2's encoder brings from its own pretraining (Hiera, MAE on images) and a
    class-agnostic objective does not teach: which *kind* of object a region is. Measured (2026-12-01, linear
    probes on the embedding pooled over each object, 1,500 train / 300 val SynRef images): the shipped
    foundation's encoder (class-agnostic stage 0) told colour 99%, size 80%, but shape (SynRef's category)
    35% (chance 20%), and that baseline found a target named by its shape alone for 16% of such expressions.
    With the category term alone shape rose to 94% but colour fell to 80%: the colour term keeps it. Used
    only during stage 0; not part of the saved model.

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
    data), which a from-scratch MLLM lacks. Measured (2026-12-01, small preset with a 256 x 4 LLM, 1,300
    stage-1 steps): the [SEG] embedding of one expression moved by 3.5% of its norm between two different
    images, and a box read-out of it (BoxHead) stayed at the mean-box error (L1 0.18): the LLM had learnt to
    ignore the image, leaving all of the grounding to SAM-2's decoder. Used only during stage 1; not part of
    the saved model.
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


def stage0_loss(model: SalmaModel, scenes: TrainScenes, rng: np.random.Generator, batch_size: int,
                device: torch.device, points_per_image: int = 4, object_head: ObjectHead | None = None,
                category_weight: float = 0.0, colour_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Point prompt -> object mask (single-mask output, the token the language pass also uses) and the
    dummy prompt -> union. Loss weights 0.5 BCE + 2.0 Dice: from scratch, Sa2VA's 2.0/0.5 collapses to
    empty masks on small targets (REFERENCE 9). With an ``object_head``: plus ``category_weight`` times the
    cross-entropy of each prompted object's category and ``colour_weight`` times the squared error of its
    mean colour (``ObjectHead``)."""
    from salma.sam2_ext import preprocess_images

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


# ---------------------------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, base_lr: float, warmup_ratio: float) -> float:
    """Linear warm-up over ``warmup_ratio * total`` steps, then cosine decay to 0 (paper Sec. 4.1)."""
    warm = max(1, round(warmup_ratio * total))
    if step < warm:
        return base_lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------------------------- runs
def run_hash(cfg: SalmaConfig, spec: RunSpec) -> str:
    """Hash of the model config and the run spec (the run cache key)."""
    import hashlib

    fields = asdict(spec)
    if spec.stage != "video":
        for k in VIDEO_FIELDS:
            fields.pop(k)
    for k, default in LATER_SPEC_DEFAULTS.items():
        if fields[k] == default:
            fields.pop(k)
    blob = json.dumps({"cfg": cfg.to_dict(), "spec": fields, "init": _file_sha(spec.init_from),
                       "data": data_fingerprint(spec.data_root)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


ANNOTATION_SUFFIXES = (".json", ".p", ".pkl")


def data_fingerprint(data_root: str | None) -> str | None:
    """sha256 over a dataset's annotation files (``*.json``, ``*.p`` one or two folders down, the images
    left out), so that a dataset regenerated at the same path (a new generator version, a changed knob) is
    never mistaken for the runs cached from the old one. None when there is no data root."""
    if data_root is None:
        return None
    root = Path(data_root)
    files = sorted(p for pattern in ("*/*", "*") for p in root.glob(pattern)
                   if p.is_file() and p.suffix in ANNOTATION_SUFFIXES)
    if not files:
        return None  # nothing to read yet: the loader names the problem when the run starts
    import hashlib

    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}:{_cached_sha256(str(p), st.st_mtime_ns, st.st_size)};".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    # keyed by mtime and size too, so a file rewritten in place is hashed again
    return _sha256(Path(path))


def _file_sha(init_from: str | None) -> str | None:
    if init_from is None:
        return None
    path = Path(init_from) / "model.safetensors"
    return _sha256(path) if path.is_file() else None


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(*args: str) -> str | None:
    """stdout of ``git args`` run in the kit's source folder, or None when that is not a git checkout
    (an installed package) or git is missing: the manifest then says so with null."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def git_dirty() -> bool | None:
    """Whether tracked files differ from ``git_commit()`` (then that commit alone does not reproduce the run)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def build_model(cfg: SalmaConfig, spec: RunSpec) -> SalmaModel:
    """A fresh model, or the foundation's weights under ``cfg`` (MBA weights are new when it had none)."""
    if spec.init_from is None:
        return SalmaModel(cfg)
    init = Path(spec.init_from)
    if not (init / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the foundation {init} does not exist (no model.safetensors). Make it with "
            f"`python -m salma pretrain --preset {cfg.name}` or point init_from at a SalmaModel directory."
        )
    return SalmaModel.from_pretrained(init, cfg=cfg)


def param_groups(model: torch.nn.Module, params: list[torch.nn.Parameter], train_cfg) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not on biases, norms, gamma); the MBA module's parameters
    at ``lr_scale = train_cfg.mba_lr_scale`` and the MLLM's and text_hidden_fcs' at ``train_cfg.mllm_lr_scale``
    (every group carries its ``lr_scale``). At scale 1 (the defaults) there are the two groups, in the order,
    that runs and checkpoints have always had; the scaled groups follow the unscaled ones."""
    mllm = getattr(train_cfg, "mllm_lr_scale", 1.0)
    scales = {"mba.": train_cfg.mba_lr_scale, "mllm.": mllm, "text_hidden_fcs.": mllm}
    name = {id(p): n for n, p in model.named_parameters()}

    def scale_of(p: torch.nn.Parameter) -> float:
        return next((v for prefix, v in scales.items() if name.get(id(p), "").startswith(prefix)), 1.0)

    order = [1.0] + [v for v in dict.fromkeys(scales.values()) if v != 1.0]
    parts = [([p for p in params if scale_of(p) == v], v) for v in order]
    groups = []
    for chosen, scale in parts:
        for decays in (True, False):
            ps = [p for p in chosen if (p.ndim >= 2) == decays]
            if ps:
                groups.append({"params": ps, "weight_decay": train_cfg.weight_decay if decays else 0.0,
                               "lr_scale": scale})
    return groups


def train(cfg: SalmaConfig, spec: RunSpec, runs_root: str | Path = "runs", progress: bool = True,
          stop_after: int | None = None) -> RunResult:
    """Run (or reuse) one training run; see the module docstring. ``stop_after`` ends the process' work
    after that many optimizer steps without finishing the run (used to test resume)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    total = spec.steps or cfg.train.steps
    run_dir = Path(runs_root) / f"{spec.name}-{run_hash(cfg, spec)}"
    final = run_dir / "final"
    if (run_dir / "metrics.json").is_file() and (final / "model.safetensors").is_file():
        return RunResult(run_dir, final, json.loads((run_dir / "metrics.json").read_text()), read_log(run_dir),
                         cached=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps({"cfg": cfg.to_dict(), "spec": asdict(spec)}, indent=1))

    cuda = torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=not cuda, mixed_precision=cfg.train.mixed_precision if cuda else "no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    torch.manual_seed(cfg.train.seed)
    loss_cfg = cfg.loss
    if spec.seg_bce_weight is not None or spec.seg_dice_weight is not None:
        loss_cfg = replace(loss_cfg, bce_weight=spec.seg_bce_weight if spec.seg_bce_weight is not None
                           else loss_cfg.bce_weight, dice_weight=spec.seg_dice_weight
                           if spec.seg_dice_weight is not None else loss_cfg.dice_weight)
    model = build_model(replace(cfg, loss=loss_cfg), spec)
    if spec.stage == "video":
        scenes = TrainClips(VideoReferDataset(spec.data_root, split="train"), spec.train_images)
    else:
        scenes = TrainScenes(ReferDataset(spec.data_root, dataset="synref", split="train"), spec.train_images)
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.stage == "stage0":
        params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("sam.")]
    groups = param_groups(model, params, cfg.train)
    head = aux_head(spec, model, scenes)
    if head is not None:
        head = head.to(accelerator.device)
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0, "lr_scale": 1.0})
        params = params + list(head.parameters())
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, betas=cfg.train.betas)
    start = load_checkpoint(run_dir, model, optimizer, head)
    model, optimizer = accelerator.prepare(model, optimizer)
    core: SalmaModel = accelerator.unwrap_model(model)
    rank, world = accelerator.process_index, accelerator.num_processes
    per_process = max(1, cfg.train.batch_size // world)
    if start == 0:
        truncate_log(run_dir, 0)
    else:
        truncate_log(run_dir, start)

    model.train()
    bar = tqdm(range(start, total), desc=f"{spec.name} [{spec.stage}]", disable=not (progress and
                                                                                      accelerator.is_main_process),
               initial=start, total=total)
    items = _step_items(spec, scenes, core, cfg, start, total, rank, per_process)
    for step in bar:
        t0 = time.perf_counter()
        item_step, micro_batches = next(items) if items is not None else (step, None)
        if item_step != step:
            raise RuntimeError(f"batch stream out of order: got step {item_step}, expected {step}")
        lr = lr_at(step, total, cfg.train.lr, cfg.train.warmup_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints from before lr_scale lack it
        gamma_scale = linear_warmup(step, total, cfg.mba.gamma_warmup_ratio)
        aux_scale = linear_warmup(step, total, cfg.loss.aux_warmup_ratio)
        sums: dict[str, float] = {}
        for micro in range(cfg.train.grad_accum):
            rng = batch_rng(cfg.train.seed, step, micro, rank)
            sync = micro == cfg.train.grad_accum - 1
            with accelerator.no_sync(model) if not sync else _null():
                with accelerator.autocast():
                    parts = step_losses(model, core, spec, scenes, rng, per_process, accelerator.device,
                                        gamma_scale, aux_scale,
                                        micro_batches[micro] if micro_batches is not None else None, head)
                accelerator.backward(parts["total"] / cfg.train.grad_accum)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.train.grad_accum
        grad_norm = accelerator.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "lr": lr, "gamma_scale": gamma_scale, "aux_scale": aux_scale,
               "grad_norm": float(grad_norm), "seconds": time.perf_counter() - t0, **sums}
        if core.mba is not None:
            row["gamma"] = float(core.mba.gamma.detach())
        if spec.eval_every and (step + 1) % spec.eval_every == 0 and step + 1 < total:
            row.update(_quick_eval(core, spec, accelerator))
            model.train()
        if accelerator.is_main_process:
            append_log(run_dir, row)
            val = row.get("val_ciou", row.get("val_jf"))
            bar.set_postfix(loss=f"{sums['total']:.3f}", **({"val": f"{val:.3f}"} if val is not None else {}))
        done_here = step + 1 - start
        last = step + 1 == total
        if accelerator.is_main_process and ((step + 1) % spec.checkpoint_every == 0 or last):
            save_checkpoint(run_dir, core, optimizer, step + 1, head)
        if stop_after is not None and done_here >= stop_after and not last:
            accelerator.wait_for_everyone()
            return RunResult(run_dir, final, {}, read_log(run_dir))
    accelerator.wait_for_everyone()
    metrics = {}
    if accelerator.is_main_process:
        core.eval()
        metrics = _final_eval(core, spec) if spec.stage != "stage0" else stage0_eval(core, spec, head=head)
        core.save_pretrained(final)
        write_log_csv(run_dir)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    accelerator.wait_for_everyone()
    return RunResult(run_dir, final, metrics, read_log(run_dir))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _step_items(spec: RunSpec, scenes: TrainScenes, core: SalmaModel, cfg: SalmaConfig, start: int, total: int,
                rank: int, batch_size: int):
    """Iterator over (step, micro-batches) for referring stages (None for stage 0, drawn in the loop)."""
    if spec.stage == "stage0":
        return None
    if spec.stage == "video":
        stream = ClipBatches(scenes, core.collator, cfg.train.seed, start, total, cfg.train.grad_accum, rank,
                             batch_size, spec)
    else:
        stream = ReferringBatches(scenes, core.collator, cfg.train.seed, start, total, cfg.train.grad_accum, rank,
                                  batch_size, core.cfg.sam2.image_size)
    workers = loader_workers()
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer runs in forked workers
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                            prefetch_factor=4 if workers else None,
                                            persistent_workers=False))


def step_losses(model, core: SalmaModel, spec: RunSpec, scenes: TrainScenes, rng, batch_size: int,
                device, gamma_scale: float, aux_scale: float, prepared=None,
                aux_head: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One micro-batch's losses for the run's stage. ``model`` may be DDP-wrapped; ``core`` is not.

    ``prepared``: (Batch, unions (B, 1, S, S), image indices) made by ``ReferringBatches``, or (Batch, None,
    frame keys) made by ``ClipBatches`` (video: ``batch_size`` clips); drawn from ``rng`` here when None.
    ``aux_head``: the stage's auxiliary read-outs when the spec asks for them (stage 0: ``ObjectHead``; stage 1:
    a ModuleDict of ``BoxHead`` "box" and ``ImageTokenHead`` "tokens"), else None."""
    if spec.stage == "stage0":
        return stage0_loss(core, scenes, rng, batch_size, device, object_head=aux_head,
                           category_weight=spec.category_loss_weight, colour_weight=spec.colour_loss_weight)
    if spec.stage == "video":
        batch, _, keys = prepared if prepared is not None else make_clip_batch(scenes, core.collator, rng,
                                                                                batch_size, spec)
        if core.cfg.sam2.freeze_encoder:
            batch.features = scenes.features(keys, core)
        return dict(model(batch.to(device), gamma_scale=gamma_scale, aux_scale=aux_scale).parts)
    if prepared is None:
        images, exprs, masks, unions, indices = draw_referring(scenes, rng, batch_size)
        batch, union_t = core.make_batch(images, exprs, masks), _mask_tensor(unions, core.cfg.sam2.image_size)
    else:
        batch, union_t, indices = prepared
    if core.cfg.sam2.freeze_encoder:
        batch.features = scenes.features(indices, core)
    batch = batch.to(device)
    out = model(batch, gamma_scale=gamma_scale, aux_scale=aux_scale)
    parts = dict(out.parts)
    if spec.prior_loss_weight > 0:
        target = union_t.to(device)
        parts["prior"] = union_loss(core, out.features, target)
        parts["total"] = parts["total"] + spec.prior_loss_weight * parts["prior"]
    if aux_head is not None and "box" in aux_head:
        parts["box"] = F.l1_loss(aux_head["box"](out.segment.language), mask_boxes(batch.gt_masks))
        parts["total"] = parts["total"] + spec.box_loss_weight * parts["box"]
    if aux_head is not None and "tokens" in aux_head:
        parts["tokens"] = image_token_loss(core, aux_head["tokens"], batch, scenes, indices, device)
        parts["total"] = parts["total"] + spec.token_loss_weight * parts["tokens"]
    return parts


def _quick_eval(core: SalmaModel, spec: RunSpec, accelerator) -> dict:
    if not accelerator.is_main_process:
        return {}
    if spec.stage == "video":
        rows = video_eval(core, spec, modes=("per_frame",))["video_val"]["per_frame"]
        return {"val_jf": next(r["J&F"] for r in rows if r["subset"] == "all")}
    from salma.evaluate import evaluate_model

    ds = ReferDataset(spec.data_root, dataset="synref", split="val")
    res = evaluate_model(core, ds, limit=spec.eval_limit, progress=False)
    rows = {r["subset"]: r for r in res.metrics.to_rows()}
    return {"val_ciou": rows["all"]["cIoU"], "val_giou": rows["all"]["gIoU"]}


def video_eval(core: SalmaModel, spec: RunSpec, modes: tuple[str, ...] = ("per_frame", "released")) -> dict:
    """J, F, J&F (``evaluate_video``) on the first ``spec.eval_limit`` expressions of ``valid_u`` in each
    mode (per_frame: how the decoder is trained; released: Sa2VA's SAM-2 memory propagation). Returns
    {"video_val": {mode: rows}, "val_limit", "jf": the first mode's overall J&F, "jf_<mode>": each}."""
    from salma.evaluate_video import evaluate_video
    from salma.video import clip_predictor

    ds = VideoReferDataset(spec.data_root, split="valid_u")
    out: dict = {"video_val": {}, "val_limit": spec.eval_limit}
    for mode in modes:
        predict = clip_predictor(core, mode=mode, mllm_frames=spec.mllm_frames, frame_sampling=spec.frame_sampling)
        rows = evaluate_video(predict, ds, limit=spec.eval_limit, progress=False).rows
        out["video_val"][mode] = rows
        out[f"jf_{mode}"] = next(r["J&F"] for r in rows if r["subset"] == "all")
    out["jf"] = out[f"jf_{modes[0]}"]
    return out


def _final_eval(core: SalmaModel, spec: RunSpec) -> dict:
    from salma.evaluate import evaluate_model

    if spec.stage == "video":
        return video_eval(core, spec)

    ds = ReferDataset(spec.data_root, dataset="synref", split="val")
    res = evaluate_model(core, ds, limit=spec.eval_limit, progress=False)
    return {"val": res.metrics.to_rows(), "val_limit": spec.eval_limit,
            "ciou": next(r["cIoU"] for r in res.metrics.to_rows() if r["subset"] == "all")}


@torch.no_grad()
def stage0_eval(core: SalmaModel, spec: RunSpec, n_images: int = 200, head: ObjectHead | None = None) -> dict:
    """Point-prompt cIoU (a point inside each object -> its mask) and the prior's IoU with the union; with
    stage 0's ``head``, also the share of val objects whose category it tells (``category_accuracy``)."""
    from salma.sam2_ext import preprocess_images, structural_prior

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


def save_checkpoint(run_dir: Path, model: SalmaModel, optimizer, step: int, head: nn.Module | None = None) -> Path:
    """Write ``ckpt-<step>/`` (model.safetensors + state.pt, with the run's auxiliary ``head`` if any) then point
    ``latest`` at it, atomically; older checkpoints are removed only after the new one is complete."""
    target = run_dir / f"ckpt-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".ckpt-"))
    save_state_dict(model.state_dict(), tmp / "model.safetensors")
    state = {"optimizer": optimizer.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
    if head is not None:
        state["head"] = head.state_dict()
    torch.save(state, tmp / "state.pt")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    pointer = run_dir / "latest.tmp"
    pointer.write_text(target.name)
    os.replace(pointer, run_dir / "latest")
    for old in run_dir.glob("ckpt-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(run_dir: Path, model: SalmaModel, optimizer, head: nn.Module | None = None) -> int:
    """Resume from ``latest`` if present (and the run's auxiliary ``head``); returns the step to start from (0 for a
    new run)."""
    pointer = run_dir / "latest"
    if not pointer.is_file():
        return 0
    ckpt = run_dir / pointer.read_text().strip()
    model.load_matching(load_state_dict(ckpt / "model.safetensors"), source=ckpt)
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which and how to recover
        raise ValueError(f"{ckpt / 'state.pt'} is corrupt ({exc}); delete {ckpt} to restart the run") from exc
    if head is not None:
        if "head" not in state:
            raise ValueError(f"{ckpt / 'state.pt'} has no auxiliary head but the run trains one; delete {ckpt} "
                             "to restart the run")
        head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


# ---------------------------------------------------------------------------------------------- logs
def append_log(run_dir: Path, row: dict) -> None:
    path = run_dir / "log.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(row, default=float) + "\n")


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(run_dir: Path, step: int) -> None:
    """Keep only rows up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    rows = [r for r in read_log(run_dir) if r["step"] <= step]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))


def write_log_csv(run_dir: Path) -> Path:
    rows = read_log(run_dir)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    path = Path(run_dir) / "log.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `python -m salma train` or `python -m salma pretrain`")
