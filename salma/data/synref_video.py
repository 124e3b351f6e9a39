"""SynRef-Video: the kit's procedurally generated video referring-segmentation benchmark (MeViS layout).

docs/design.md section "The synthetic benchmark" (video scenes move objects and use motion expressions); docs/method.md section 5 (Ref-YouTube-VOS / MeViS layout, J&F). SynRef-Video is to MeViS what SynRef is to RefCOCO: a
small, deterministic stand-in written in the real file format, so that ``VideoReferDataset`` and the
J&F evaluation read it exactly as they read the real data.

A clip is T frames (default 12, 8..24) of scene_size x scene_size RGB holding 3-5 SynRef objects (same
shapes, colours, shades, size classes and polygon rasterisation, imported from ``salma.data.synref``)
over a static SynRef background. Each object has one motion:

- ``move``: constant speed to the left / right / up / down for the whole clip; it may enter or leave
  the frame (then its mask is empty in those frames);
- ``stops``: moves in one direction, then rests from a stop frame in [T/4, 3T/4] to the end; it stays in
  the frame, so the stop is seen;
- ``still``: never moves.

Objects never overlap in the middle frame; elsewhere they may, and a fixed depth order decides who hides
whom. Each object's mask is its VISIBLE part (amodal minus what lies in front); a frame where the object
is hidden or out of the frame has an empty mask, stored as null in ``mask_dict.json``.

Expressions (1-3 per clip), each tagged with a kind:

- ``appearance``: the target is unique by colour / shape / size / shade words, as in SynRef
  ("the red square", "the small blue circle");
- ``motion`` (MeViS-style): the clip holds a *look-alike group*, 2-3 objects of the same colour, shape,
  size and shade that differ only in how they move, and the expression names the motion: "the red square
  moving left", "the circle that stops", "the still triangle".

Words are checked, not assumed. A motion expression's words must be true of the target's visible masks
(moving left: the visible centroid decreases in x between every two visible frames; stops: it moves, then
its mask stays identical; still: one identical mask in every frame), and no other object of the clip may
fit them even loosely (an object that moves left and then stops also counts as "moving left"); an
appearance target is visible in at least half the frames.

Files (``generate_synref_video``), per split (``train``, ``valid_u`` as MeViS names its labelled split)::

    <root>/<split>/JPEGImages/<video>/<frame>.jpg    RGB JPEG (quality 95, no chroma subsampling)
    <root>/<split>/meta_expressions.json             {"info": {...}, "videos": {vid: {"expressions":
                                                      {eid: {"exp", "anno_id": [id], "obj_id": [k], "kind"}},
                                                      "frames": [names], "objects": [...]}}}
    <root>/<split>/mask_dict.json                    {anno_id: [per-frame COCO RLE dict, or null]}

Both JSON files are byte-identical for the same seed and arguments; every clip has its own random stream
from (seed, split, index), so a clip (frames, masks, expressions, anno ids) does not change when the
number of clips changes.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image
from tqdm.auto import tqdm

from salma.data.synref import _spec_dict, atomic_write_bytes, check_split_counts, ordered_results
from salma.data.synref_clip import DEFAULT_VIDEO_SPEC, SPLITS, SynRefVideoSpec, _check_args, make_clip

GENERATOR_VERSION = "synref-video-1.0"


# MeViS's labelled validation split is "valid_u", the default split of VideoReferDataset.


DEFAULT_N_VIDEOS: dict[str, int] = {"train": 400, "valid_u": 60}




def video_name(index: int) -> str:
    """Folder name of clip ``index`` (under <root>/<split>/JPEGImages)."""
    return f"sv_{index:06d}"


def frame_name(k: int) -> str:
    """Name (without extension) of frame ``k``, as in Ref-YouTube-VOS / MeViS."""
    return f"{k:05d}"


def encode_mask(mask: np.ndarray) -> dict | None:
    """(H, W) bool -> COCO RLE dict with a str ``counts`` (JSON-ready), or None when the mask is empty."""
    if not mask.any():
        return None
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _write_clip(job: tuple) -> tuple[list[str], list[dict], list[dict]]:
    """Worker: generate one clip, write its JPEG frames, return (frame names, object records, expressions)."""
    seed, split, index, scene_size, n_frames, spec, split_dir = job
    clip = make_clip(seed, split, index, scene_size, n_frames, spec)
    frame_dir = Path(split_dir) / "JPEGImages" / video_name(index)
    frame_dir.mkdir(parents=True, exist_ok=True)
    names = [frame_name(k) for k in range(n_frames)]
    for name, frame in zip(names, clip.frames):
        buf = io.BytesIO()
        # No chroma subsampling: small objects keep their colour, which the expressions name.
        Image.fromarray(frame).save(buf, format="JPEG", quality=spec.jpeg_quality, subsampling=0)
        atomic_write_bytes(frame_dir / f"{name}.jpg", buf.getvalue())
    objects = [{
        "colour": o.colour, "shape": o.shape, "size": o.size_class, "shade": o.shade, "motion": o.motion,
        "direction": o.direction, "stop_frame": o.stop_frame, "speed": round(o.speed, 4), "depth": o.depth,
        "masks": [encode_mask(m) for m in o.masks],
    } for o in clip.objects]
    exprs = [{"exp": e.sentence, "obj_id": e.target, "kind": e.kind, "lookalikes": list(e.lookalikes)}
             for e in clip.expressions]
    return names, objects, exprs


def _json_bytes(data) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def generate_synref_video(
    root: Path | str,
    *,
    seed: int = 0,
    scene_size: int = 64,
    n_frames: int = 12,
    n_videos: dict[str, int] | None = None,
    progress: bool = True,
    workers: int = 1,
    spec: SynRefVideoSpec = DEFAULT_VIDEO_SPEC,
) -> Path:
    """Generate SynRef-Video into ``root`` (Ref-YouTube-VOS / MeViS layout) and return ``root``.

    Args:
        root: output folder; ``<split>/`` folders are created inside it (only for splits with clips).
        seed: dataset seed; the same seed and arguments give byte-identical JSON files.
        scene_size: frame side in pixels (frames are scene_size x scene_size RGB).
        n_frames: frames per clip, 8..24.
        n_videos: clips per split (keys among train / valid_u); default ``DEFAULT_N_VIDEOS``.
        progress: show a tqdm bar.
        workers: processes generating clips; every clip has its own random stream, so the output does not
            depend on it.
        spec: generator knobs.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    counts = check_split_counts(DEFAULT_N_VIDEOS if n_videos is None else n_videos, SPLITS, "SynRef-Video",
                                "n_videos", workers)
    _check_args(SPLITS[0], int(scene_size), int(n_frames))  # argument errors surface here, not in a worker

    splits = [s for s in SPLITS if int(counts.get(s, 0)) > 0]
    jobs = [(int(seed), s, i, int(scene_size), int(n_frames), spec, str(root / s))
            for s in splits for i in range(int(counts[s]))]
    bar = tqdm(total=len(jobs), desc="SynRef-Video", unit="clip", disable=not progress)
    videos: dict[str, dict] = {s: {} for s in splits}
    mask_dicts: dict[str, dict] = {s: {} for s in splits}
    with ordered_results(_write_clip, jobs, workers, chunksize=8) as results:
        for job, (names, objects, exprs) in zip(jobs, results):
            _, split, index = job[:3]
            # anno ids run over the split in clip order, so earlier clips keep theirs when counts grow.
            md = mask_dicts[split]
            anno_ids = list(range(len(md), len(md) + len(objects)))
            obj_recs = []
            for aid, rec in zip(anno_ids, objects):
                md[str(aid)] = rec.pop("masks")
                obj_recs.append({"anno_id": aid, **rec})
            videos[split][video_name(index)] = {
                "frames": names,
                "objects": obj_recs,
                "expressions": {str(k): {"exp": e["exp"], "anno_id": [anno_ids[e["obj_id"]]],
                                         "obj_id": [e["obj_id"]], "kind": e["kind"],
                                         "lookalike_anno_ids": [anno_ids[j] for j in e["lookalikes"]]}
                                for k, e in enumerate(exprs)},
            }
            bar.update(1)
    bar.close()

    for split in splits:
        info = {
            "description": "SynRef-Video: synthetic video referring segmentation (SALMA reproduction kit)",
            "generator_version": GENERATOR_VERSION, "seed": int(seed), "scene_size": int(scene_size),
            "n_frames": int(n_frames), "split": split, "n_videos": int(counts[split]),
            "spec": {**{k: v for k, v in asdict(spec).items() if k != "image"}, "image": _spec_dict(spec.image)},
        }
        split_dir = root / split
        atomic_write_bytes(split_dir / "mask_dict.json", _json_bytes(mask_dicts[split]))
        # meta_expressions.json last: its presence marks a complete split.
        atomic_write_bytes(split_dir / "meta_expressions.json",
                            _json_bytes({"info": info, "videos": videos[split]}))
    return root
