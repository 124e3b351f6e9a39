"""Training data: random access to SynRef scenes and clips, the frozen-encoder feature store, and the seeded
batch streams (every batch drawn from (seed, step, micro-step, process), so a resumed run sees the batches
it would have seen).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from salma.data.refer import ReferDataset
from salma.data.video_format import VideoReferDataset
from salma.model import SalmaModel
from salma.sam2_ext import SAM2Features, preprocess_images
from salma.train.identity import RunSpec
from salma.video import sample_frames


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

        store = _FEATURE_STORES.setdefault((encoder_fingerprint(model), str(self.dataset.data_root),
                                            self.dataset.split), {})
        self._features = store
        missing = sorted({self.image_ids[i] for i in indices if self.image_ids[i] not in store})
        s = model.cfg.sam2.image_size
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        for image_id in missing:
            store[image_id] = _encode_one(model, preprocess_images(self.get(position[image_id])[0], s))
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


def _encode_one(model: SalmaModel, image: torch.Tensor) -> SAM2Features:
    """Frozen-encoder features of one preprocessed image (1, 3, S, S), kept as fp16 on the CPU.

    One image per call, not a batch of whatever images a step needed first: a convolution's result depends
    slightly (about 1e-6) on the batch it runs in, and a run resumed in a new process meets its images in
    other company, so batched features made resumed runs drift from uninterrupted ones."""
    with torch.no_grad():
        return model.sam.encode_image(image.to(model.device)).to("cpu", torch.float16)


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

        store = _FEATURE_STORES.setdefault(("video", encoder_fingerprint(model), str(self.dataset.root),
                                            self.dataset.split), {})
        missing = sorted({k for k in keys if k not in store})
        for v, f in missing:
            store[(v, f)] = _encode_one(model, preprocess_images(self.frames(v)[f], model.cfg.sam2.image_size))
        return SAM2Features.stack([store[k] for k in keys]).to(model.device, torch.float32)


def encoder_fingerprint(model: SalmaModel) -> str:
    """A hash of the SAM-2 image encoder's weights (and the decoder's conv_s0/s1 applied with it)."""

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
