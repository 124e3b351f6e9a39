"""The datasets a preset's runs read: SynRef (images) and SynRef-Video, generated deterministically on first use
under the repository's ``data/`` folder, in folders named by the generator version and every argument (runs
are cached by their data root, so a new generator is never mistaken for the old one's data).
"""

from __future__ import annotations

import os
from pathlib import Path

from salma import paths
from salma.config import get_preset
from salma.data.synref import generate_synref
from salma.data.synref_video import GENERATOR_VERSION as VIDEO_GENERATOR_VERSION
from salma.data.synref_video import generate_synref_video
from salma.data.synref_words import GENERATOR_VERSION
from salma.train.recipes import video_data


def synref_root(preset: str, data_root: str | Path | None = None, train_images: int | None = None) -> Path:
    """The SynRef dataset of a preset, generated (deterministically) on first use under ``data/``.
    ``train_images``: that many training images instead of the preset's (the foundation's stage 1 may read
    more than fine-tuning does). Every image is drawn from its own (seed, split, index), so the first N
    training images and the whole val split are the same whatever the count."""

    cfg = get_preset(preset).data
    n_train = train_images or cfg.train_images
    # The generator version is in the folder name: runs are cached by their data root, so a new generator
    # must never be mistaken for the old one's data.
    root = Path(data_root) if data_root else (
        paths.data_root() / f"{GENERATOR_VERSION}-{cfg.scene_size}px-seed{cfg.seed}-{n_train}")
    if not (root / "synref" / "instances.json").is_file():
        generate_synref(root, seed=cfg.seed, scene_size=cfg.scene_size, workers=_generator_workers(),
                        n_images={"train": n_train, "val": cfg.val_images,
                                  "testA": cfg.test_images, "testB": cfg.test_images})
    return root


def _generator_workers() -> int:
    """Processes for generating SynRef: all cores but one (the output does not depend on it)."""

    return max(1, min(8, (os.cpu_count() or 1) - 1))


def synref_video_root(preset: str, data_root: str | Path | None = None) -> Path:
    """The SynRef-Video dataset of a preset, generated (deterministically) on first use under ``data/``; the
    folder is named by the generator version and every argument, as ``synref_root`` names SynRef's."""

    d, seed = video_data(preset), get_preset(preset).data.seed
    n = d.n_videos
    root = Path(data_root) if data_root else (
        paths.data_root() / f"{VIDEO_GENERATOR_VERSION}-{d.scene_size}px-{d.n_frames}f-seed{seed}"
                             f"-{n['train']}-{n['valid_u']}")
    if not all((root / split / "meta_expressions.json").is_file() for split in n):
        if data_root:
            raise FileNotFoundError(f"{root} is not a SynRef-Video / MeViS-layout root (no <split>/meta_expressions.json "
                                    f"for splits {sorted(n)}); omit --data to generate the preset's SynRef-Video")
        generate_synref_video(root, seed=seed, scene_size=d.scene_size, n_frames=d.n_frames, n_videos=n,
                              workers=_generator_workers())
    return root


def val_only_root(preset: str) -> Path:
    """The preset's SynRef val split alone (a few seconds to generate): the same scenes, in the same order,
    as the val split of the full dataset, since every image is drawn from its own (seed, split, index)."""

    cfg = get_preset(preset).data
    root = paths.data_root() / f"{GENERATOR_VERSION}-{cfg.scene_size}px-seed{cfg.seed}-val{cfg.val_images}"
    if not (root / "synref" / "instances.json").is_file():
        generate_synref(root, seed=cfg.seed, scene_size=cfg.scene_size, progress=False,
                        n_images={"train": 0, "val": cfg.val_images, "testA": 0, "testB": 0})
    return root
