"""Video referring-segmentation loader: Ref-YouTube-VOS / MeViS / ReVOS layout (docs/method.md section 5).

Layout read here (per split)::

    <root>/<split>/JPEGImages/<video>/<frame>.jpg     (.png also accepted)
    <root>/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {eid: {"exp": str, "obj_id" | "anno_id": ..., ["kind": str]}},
                          "frames": [frame names without extension]}}}
    <root>/<split>/mask_dict.json                      (MeViS / ReVOS)
        {anno_id: [per-frame COCO RLE dict or null]}
    <root>/<split>/Annotations/<video>/<frame>.png     (Ref-YouTube-VOS train: palette index = obj_id)

MeViS's ``anno_id`` is a list of ids whose masks are unioned (one expression may refer to several
objects); a null entry is an empty frame. Ground truth comes from ``mask_dict.json`` when the split has
one, else from ``Annotations/`` with the expression's ``obj_id``. Evaluation (J, F, J&F) lives in
``salma.eval.metrics``. The kit's synthetic video benchmark (``salma.data.synref_video``) writes this same layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from salma.data.refer import check_data_root, decode_rle, read_image_rgb, rle_for_pycocotools

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class VideoSample:
    """One expression on one clip. ``anno_ids`` (MeViS/ReVOS) or ``obj_ids`` (Ref-YouTube-VOS) name
    the referred objects; ``frames`` are frame names without extension, in order."""

    video: str
    exp_id: str
    text: str
    frames: tuple[str, ...]
    anno_ids: tuple[str, ...] = ()
    obj_ids: tuple[str, ...] = ()
    kind: str = "plain"


def _ids(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"expected {what} at {path} (missing)")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt JSON file {path}: {exc}") from exc


class VideoReferDataset:
    """Expressions of one split of a Ref-YouTube-VOS / MeViS / ReVOS-style dataset, one sample each.

    Args:
        root: dataset folder holding ``<split>/``.
        split: split folder name (e.g. "train", "valid_u", "valid").
    """

    def __init__(self, root: Path | str, split: str = "valid_u"):
        self.root = Path(root)
        self.split = split
        check_data_root(self.root, "video dataset root", "<split>/meta_expressions.json")
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise FileNotFoundError(f"split folder {self.split_dir} does not exist (folders present: {present})")
        self.meta_path = self.split_dir / "meta_expressions.json"
        meta = _read_json(self.meta_path, "meta_expressions.json")
        videos = meta.get("videos") if isinstance(meta, dict) else None
        if not isinstance(videos, dict):
            raise ValueError(f"{self.meta_path} has no 'videos' mapping")  # noqa: TRY004 (bad file content)
        self.mask_dict_path = self.split_dir / "mask_dict.json"
        self.annotations_dir = self.split_dir / "Annotations"
        self._mask_dict: dict | None = None
        # SynRef-Video lists every object of a clip (referred or not) under "objects"; real MeViS does not.
        self._listed_objects: dict[str, tuple[str, ...]] = {}
        samples = []
        for vid in sorted(videos):
            entry = videos[vid]
            objects = entry.get("objects") or []
            self._listed_objects[str(vid)] = tuple(str(o["anno_id"]) for o in objects
                                                   if isinstance(o, dict) and "anno_id" in o)
            frames = tuple(str(f) for f in entry.get("frames", ()))
            if not frames:
                raise ValueError(f"video {vid!r} in {self.meta_path} lists zero frames; a clip needs at least one: "
                                 "list its frame names under 'frames' or remove the video")
            exprs = entry.get("expressions", {})
            for eid in sorted(exprs, key=lambda k: (len(str(k)), str(k))):
                e = exprs[eid]
                if "exp" not in e:
                    raise ValueError(f"expression {eid!r} of video {vid!r} in {self.meta_path} has no 'exp'")
                samples.append(VideoSample(
                    video=str(vid), exp_id=str(eid), text=str(e["exp"]), frames=frames,
                    anno_ids=_ids(e.get("anno_id")), obj_ids=_ids(e.get("obj_id")),
                    kind=str(e.get("kind", "plain")),
                ))
        self.samples: list[VideoSample] = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> VideoSample:
        return self.samples[i]

    def videos(self) -> list[str]:
        """Video ids with at least one expression, sorted."""
        return sorted({s.video for s in self.samples})

    def samples_for_video(self, video: str) -> list[VideoSample]:
        """The video's expressions, in dataset order. Raises KeyError naming the video when it has none."""
        out = [s for s in self.samples if s.video == video]
        if not out:
            raise KeyError(f"video {video!r} has no expression in {self.meta_path}")
        return out

    def object_ids(self, video: str) -> tuple[str, ...]:
        """Ids of the clip's annotated objects.

        With mask_dict.json: the meta's ``objects`` list when the video has one (SynRef-Video: every object
        of the clip, referred or not), else the union of the anno_ids its expressions refer to. With
        Annotations/: the union of the obj_ids its expressions refer to. Order: listed / first mention.
        """
        if self.mask_dict_path.is_file() and self._listed_objects.get(video):
            return self._listed_objects[video]
        use_anno = self.mask_dict_path.is_file()
        ids = (i for s in self.samples_for_video(video) for i in (s.anno_ids if use_anno else s.obj_ids))
        return tuple(dict.fromkeys(ids))

    def object_masks(self, video: str) -> list[tuple[str, np.ndarray]]:
        """[(object id, (T, H, W) bool visible mask)] for every id of ``object_ids(video)``."""
        first = self.samples_for_video(video)[0]
        return [(i, self.load_masks(replace(first, anno_ids=(i,), obj_ids=(i,)))) for i in self.object_ids(video)]

    def frame_path(self, video: str, frame: str) -> Path:
        """Path of one frame (.jpg, .jpeg or .png). Raises FileNotFoundError naming video and frame."""
        base = self.split_dir / "JPEGImages" / video
        for ext in FRAME_EXTENSIONS:
            p = base / f"{frame}{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"video {video!r}: frame {frame!r} is listed in {self.meta_path} but missing "
                                f"on disk (looked for {base / frame}{{{','.join(FRAME_EXTENSIONS)}}}); restore the "
                                "frame (re-extract or regenerate the split) or remove it from the video's 'frames'")

    def load_frames(self, sample: VideoSample) -> np.ndarray:
        """All frames of the sample's clip, uint8 (T, H, W, 3) RGB.

        Raises an error naming video and frame for a missing frame or a frame whose size differs from
        the clip's first frame, and one naming the file for a frame that does not decode (``read_image_rgb``).
        """
        out = []
        for frame in sample.frames:
            path = self.frame_path(sample.video, frame)
            arr = read_image_rgb(path)  # decoded completely; 16-bit grayscale scaled, not clipped to white
            if out and arr.shape != out[0].shape:
                raise ValueError(f"video {sample.video!r}: frame {frame!r} is {arr.shape[0]}x{arr.shape[1]} but "
                                 f"frame {sample.frames[0]!r} is {out[0].shape[0]}x{out[0].shape[1]}; all "
                                 "frames of a clip must have one size: re-extract the clip's frames at one size")
            out.append(arr)
        return np.stack(out)

    def frame_size(self, sample: VideoSample) -> tuple[int, int]:
        """(H, W) of the clip's first frame (read from the file header only)."""
        with Image.open(self.frame_path(sample.video, sample.frames[0])) as im:
            return im.height, im.width

    @property
    def mask_dict(self) -> dict:
        """``mask_dict.json`` (loaded on first use: it is large for MeViS/ReVOS)."""
        if self._mask_dict is None:
            self._mask_dict = _read_json(self.mask_dict_path, "mask_dict.json (MeViS/ReVOS ground truth)")
        return self._mask_dict

    def has_ground_truth(self) -> bool:
        """Whether this split carries masks (mask_dict.json or Annotations/)."""
        return self.mask_dict_path.is_file() or self.annotations_dir.is_dir()

    def load_masks(self, sample: VideoSample) -> np.ndarray:
        """Ground-truth masks, bool (T, H, W): union over the expression's objects; null -> empty frame.

        Raises an error naming the video (and frame) when an object is absent from mask_dict.json, its
        frame count differs from the clip's, or an RLE's size differs from the frame size.
        """
        h, w = self.frame_size(sample)
        t = len(sample.frames)
        if self.mask_dict_path.is_file():
            if not sample.anno_ids:
                raise ValueError(f"video {sample.video!r} expression {sample.exp_id!r} has no 'anno_id' to "
                                 f"look up in {self.mask_dict_path}")
            out = np.zeros((t, h, w), dtype=bool)
            md = self.mask_dict
            for aid in sample.anno_ids:
                if aid not in md:
                    raise KeyError(f"video {sample.video!r} expression {sample.exp_id!r}: anno_id {aid!r} is "
                                   f"absent from {self.mask_dict_path}; meta_expressions.json and mask_dict.json "
                                   "must come from one release (re-download or regenerate the split)")
                per_frame = md[aid]
                if len(per_frame) != t:
                    raise ValueError(f"video {sample.video!r}: anno_id {aid!r} has {len(per_frame)} masks in "
                                     f"{self.mask_dict_path} but the clip has {t} frames")
                for k, rle in enumerate(per_frame):
                    if rle is None:
                        continue
                    r = rle_for_pycocotools(rle, h, w, f"video {sample.video!r} frame {sample.frames[k]!r}: RLE "
                                            f"of anno_id {aid!r} has size {{size}} but the frame is [{h}, {w}]; "
                                            "use the frames the masks were made for (same resolution)")
                    out[k] |= decode_rle(r)
            return out
        if self.annotations_dir.is_dir():
            if not sample.obj_ids:
                raise ValueError(f"video {sample.video!r} expression {sample.exp_id!r} has no 'obj_id' to "
                                 f"look up in {self.annotations_dir}")
            ids = np.array([int(o) for o in sample.obj_ids])
            out = np.zeros((t, h, w), dtype=bool)
            for k, frame in enumerate(sample.frames):
                p = self.annotations_dir / sample.video / f"{frame}.png"
                if not p.is_file():
                    raise FileNotFoundError(f"video {sample.video!r}: annotation of frame {frame!r} missing "
                                            f"({p})")
                with Image.open(p) as im:
                    arr = np.asarray(im)  # palette indices = object ids
                if arr.shape[:2] != (h, w):
                    raise ValueError(f"video {sample.video!r} frame {frame!r}: annotation is "
                                     f"{arr.shape[0]}x{arr.shape[1]} but the frame is {h}x{w}")
                out[k] = np.isin(arr, ids)
            return out
        raise FileNotFoundError(f"split {self.split_dir} has no ground truth (neither mask_dict.json nor "
                                "Annotations/); evaluate it with the benchmark's server instead")
