"""A run's identity: ``RunSpec`` (everything besides the model config), ``RunResult``, the versioned run hash
that keys the run cache, the data and weights fingerprints it covers, and the git provenance of a run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from salma.config import SalmaConfig
from salma.io import sha256_file
from salma.paths import repo_root
from salma.video import FRAME_SAMPLING

STAGES = ("stage0", "stage1", "finetune", "video")


# The version of the run hash: raised whenever what a run's hash covers, or how a run trains for the same
# inputs, changes, so that a run cached under the old rules is trained again rather than mistaken for the new
# one. Version 2 covers every field of the config and of the RunSpec; version 3 encodes frozen-encoder
# features one image at a time (the numbers move by about 1e-6, and resumed runs become bit-exact), records
# the final weights' sha256, and sums TMC's two directions as paper Eq. 3 does (twice the earlier mean).
RUN_HASH_VERSION = 3


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


# ---------------------------------------------------------------------------------------------- runs
def run_hash(cfg: SalmaConfig, spec: RunSpec) -> str:
    """Hash of the hash version, the whole model config, the whole run spec, the initial weights and the data's
    annotation files (the run cache key)."""
    blob = json.dumps({"version": RUN_HASH_VERSION, "cfg": cfg.to_dict(), "spec": asdict(spec),
                       "init": _file_sha(spec.init_from), "data": data_fingerprint(spec.data_root)},
                      sort_keys=True, default=str)
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

    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}:{_cachedsha256_file(str(p), st.st_mtime_ns, st.st_size)};".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _cachedsha256_file(path: str, mtime_ns: int, size: int) -> str:
    # keyed by mtime and size too, so a file rewritten in place is hashed again
    return sha256_file(Path(path))


def _file_sha(init_from: str | None) -> str | None:
    if init_from is None:
        return None
    path = Path(init_from) / "model.safetensors"
    return sha256_file(path) if path.is_file() else None


def _git(*args: str) -> str | None:
    """stdout of ``git args`` run in the kit's source folder, or None when that is not a git checkout
    (an installed package) or git is missing: the manifest then says so with null."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=repo_root()).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit() -> str | None:
    return _git("rev-parse", "HEAD")


def git_dirty() -> bool | None:
    """Whether tracked files differ from ``git_commit()`` (then that commit alone does not reproduce the run)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)
