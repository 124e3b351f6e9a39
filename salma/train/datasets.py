"""The datasets a preset's runs read: SynRef (images) and SynRef-Video, generated deterministically on first use
under the repository's ``data/`` folder, in folders named by the generator version and every argument (runs
are cached by their data root, so a new generator is never mistaken for the old one's data).

Generation happens only there: a root the user names (``--data``) is read, never written, and one that is
not a dataset of the expected layout is refused before anything touches it.
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
    training images and the whole val split are the same whatever the count. A ``data_root`` given by the
    caller is checked and returned, never written (``check_user_root``)."""

    cfg = get_preset(preset).data
    n_train = train_images or cfg.train_images
    if data_root:
        return check_user_root(Path(data_root), ("synref/instances.json", "synref/refs(unc).p"),
                               "a SynRef root (synref/instances.json and synref/refs(unc).p; images/)")
    # The generator version is in the folder name: runs are cached by their data root, so a new generator
    # must never be mistaken for the old one's data.
    root = paths.data_root() / f"{GENERATOR_VERSION}-{cfg.scene_size}px-seed{cfg.seed}-{n_train}"
    if not (root / "synref" / "instances.json").is_file():
        generate_synref(root, seed=cfg.seed, scene_size=cfg.scene_size, workers=_generator_workers(),
                        n_images={"train": n_train, "val": cfg.val_images,
                                  "testA": cfg.test_images, "testB": cfg.test_images})
    return root


def check_user_root(root: Path, required: tuple[str, ...], what: str) -> Path:
    """``root`` when it holds every ``required`` file; otherwise FileNotFoundError (NotADirectoryError for a
    file) saying what is missing. Nothing is written: the kit generates data only under its own folder."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"data root {root} is a file, not a folder; give {what}")
    missing = [rel for rel in required if not (root / rel).is_file()]
    if missing:
        state = "does not exist" if not root.exists() else f"lacks {', '.join(missing)}"
        raise FileNotFoundError(f"data root {root} {state}: it is not {what}. The kit writes generated data only "
                                f"under {paths.data_root()}: omit --data to use (and on first use generate) the "
                                "preset's dataset, or generate one with `python -m salma data generate ...`")
    return root


def _generator_workers() -> int:
    """Processes for generating SynRef: all cores but one (the output does not depend on it)."""

    return max(1, min(8, (os.cpu_count() or 1) - 1))


def synref_video_root(preset: str, data_root: str | Path | None = None) -> Path:
    """The SynRef-Video dataset of a preset, generated (deterministically) on first use under ``data/``; the
    folder is named by the generator version and every argument, as ``synref_root`` names SynRef's."""

    d, seed = video_data(preset), get_preset(preset).data.seed
    n = d.n_videos
    if data_root:
        return check_user_root(Path(data_root), tuple(f"{split}/meta_expressions.json" for split in n),
                               "a SynRef-Video / MeViS-layout root (<split>/meta_expressions.json)")
    root = paths.data_root() / (f"{VIDEO_GENERATOR_VERSION}-{d.scene_size}px-{d.n_frames}f-seed{seed}"
                                f"-{n['train']}-{n['valid_u']}")
    if not all((root / split / "meta_expressions.json").is_file() for split in n):
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
