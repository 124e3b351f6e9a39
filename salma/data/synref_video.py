"""SynRef-Video: the kit's procedurally generated video referring-segmentation benchmark (MeViS layout).

DESIGN.md "The synthetic benchmark" (video scenes move objects and use motion expressions); REFERENCE.md
section 5 (Ref-YouTube-VOS / MeViS layout, J&F). SynRef-Video is to MeViS what SynRef is to RefCOCO: a
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
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image
from tqdm.auto import tqdm

from salma.data.synref import _atomic_write_bytes, _spec_dict, check_split_counts, ordered_results
from salma.data.synref_scene import (
    _UNIT,
    _UNIT_AREA,
    _background,
    _dilate1,
    _paint,
    _pick_free_pair,
    polygon_to_mask,
    shade_rgb,
)
from salma.data.synref_words import (
    SHADES,
    SIZE_CLASSES,
    SYNREF_1_0_SPEC,
    SynRefSpec,
    _choice,
    _descs,
    _matching,
    _phrase,
)
from salma.data.synref_words import vocabulary as _image_vocabulary

GENERATOR_VERSION = "synref-video-1.0"
# MeViS's labelled validation split is "valid_u", the default split of VideoReferDataset.
SPLITS: tuple[str, ...] = ("train", "valid_u")
DEFAULT_N_VIDEOS: dict[str, int] = {"train": 400, "valid_u": 60}
KINDS: tuple[str, ...] = ("appearance", "motion")
MOTIONS: tuple[str, ...] = ("move", "stops", "still")
# Image axes: x to the right, y down (so "up" is -y).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# The motion label of an object in words: its direction (move), "stops" or "still".
MOTION_WORDS: tuple[str, ...] = tuple(DIRECTIONS) + ("stops", "still")
MIN_FRAMES, MAX_FRAMES = 8, 24
_STREAM_TAG = 2  # keeps every clip's stream apart from SynRef's image streams of the same seed


@dataclass(frozen=True)
class SynRefVideoSpec:
    """Every knob of the video generator. Frozen: a spec is part of a dataset.

    Appearance (size bands, shades, colours, background, noise) comes from ``image``, a ``SynRefSpec``, so
    that "small", "dark"... mean what they mean in SynRef.
    """

    min_objects: int = 3
    max_objects: int = 5
    # Probability that a clip holds a look-alike group (then it gets motion expressions).
    lookalike_clip_prob: float = 0.6
    # Look-alike group of 2 or 3 objects.
    group_size_probs: tuple[float, float] = (0.7, 0.3)
    # Motion of objects outside the group: move / stops / still.
    motion_probs: tuple[float, float, float] = (0.5, 0.2, 0.3)
    # Speed in scene widths per frame; at least 1 px per frame, so that every step moves the mask.
    speed_range: tuple[float, float] = (0.02, 0.045)
    # Size class probabilities (small, medium, large).
    size_probs: tuple[float, float, float] = (0.25, 0.5, 0.25)
    # Number of expressions of a clip: 1, 2, 3.
    n_expr_probs: tuple[float, float, float] = (0.4, 0.4, 0.2)
    # An appearance target is visible in at least this fraction of the frames.
    min_visible_fraction: float = 0.5
    # A "moving <dir>" target is visible in at least this many frames (a direction needs a few).
    min_moving_frames: int = 3
    place_attempts: int = 60
    clip_attempts: int = 200
    jpeg_quality: int = 95
    image: SynRefSpec = field(default=SYNREF_1_0_SPEC)


DEFAULT_VIDEO_SPEC = SynRefVideoSpec()


def vocabulary() -> list[str]:
    """Every word the generator can emit (SynRef's words + the motion words), sorted and unique."""
    return sorted(set(_image_vocabulary()) | set(DIRECTIONS) | {"moving", "that", "stops", "still"})


# ---------------------------------------------------------------------------------------------------
# Scene model
# ---------------------------------------------------------------------------------------------------


@dataclass
class VideoObject:
    """One object of a clip.

    ``centres`` is (T, 2) float (x, y) of the polygon's centre per frame; ``full`` is (T, S, S) bool, the
    in-frame part of the object ignoring occluders; ``masks`` is (T, S, S) bool, its visible part.
    ``depth`` 0 is the back. ``direction`` is None for a still object; ``stop_frame`` is the first frame
    at rest of a "stops" object, else None.
    """

    shape: str
    colour: str
    size_class: str
    shade: str
    rgb: tuple[int, int, int]
    motion: str
    direction: str | None
    speed: float
    stop_frame: int | None
    centres: np.ndarray
    full: np.ndarray
    masks: np.ndarray | None = None  # set by _occlude, once the depth order is known
    depth: int = 0

    @property
    def motion_word(self) -> str:
        """The words' label of the motion: the direction of a mover, "stops" or "still"."""
        return self.direction if self.motion == "move" else self.motion


@dataclass
class VideoExpression:
    """One expression: target index into the clip's objects, kind, indices of its look-alikes."""

    sentence: str
    target: int
    kind: str
    lookalikes: tuple[int, ...] = ()


@dataclass
class SynVideoClip:
    """A generated clip: frames (T, S, S, 3) uint8, objects, expressions."""

    frames: np.ndarray
    objects: list[VideoObject]
    expressions: list[VideoExpression]


@dataclass
class _Layer:
    """What ``synref._paint`` reads of an object (it paints ``mask`` with ``rgb``), for one frame."""

    mask: np.ndarray
    rgb: tuple[int, int, int]


# ---------------------------------------------------------------------------------------------------
# Words: what fits an object, and what its visible masks show
# ---------------------------------------------------------------------------------------------------


def motion_fits(o: VideoObject, word: str) -> bool:
    """Whether a viewer could apply the motion ``word`` (a direction, "stops", "still") to ``o``.

    Loose on purpose: an object that moves left and then stops is also "moving left", and once at rest it
    looks "still", so an expression is unambiguous only when no other candidate fits it even partly.
    """
    if word in DIRECTIONS:
        return o.motion in ("move", "stops") and o.direction == word
    if word == "still":
        return o.motion in ("still", "stops")
    return o.motion == word


def _centroids(masks: np.ndarray) -> np.ndarray:
    """(T, S, S) bool -> (T, 2) float (x, y) centroid per frame; NaN where the mask is empty."""
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.arange(masks.shape[1]), np.arange(masks.shape[2])
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks.sum(axis=1) * xs).sum(axis=1) / area
        cy = (masks.sum(axis=2) * ys).sum(axis=1) / area
    return np.stack([cx, cy], axis=1)


def _moves_steadily(masks: np.ndarray, direction: str) -> bool:
    """Whether the visible centroid advances in ``direction`` between every two consecutive visible frames."""
    vis = masks.any(axis=(1, 2))
    c = _centroids(masks[vis])
    axis = 0 if DIRECTIONS[direction][0] else 1
    sign = DIRECTIONS[direction][axis]
    return len(c) >= 2 and bool((np.diff(c[:, axis]) * sign > 0).all())


def visibly_true(o: VideoObject, word: str, min_moving_frames: int = 2) -> bool:
    """Whether the motion ``word`` shows in ``o``'s visible masks (occlusion can hide or fake a motion)."""
    m = o.masks
    if word in DIRECTIONS:
        return int(m.any(axis=(1, 2)).sum()) >= min_moving_frames and _moves_steadily(m, word)
    if not m.any(axis=(1, 2)).all():
        return False  # "stops" and "still" need the object in view the whole clip
    if word == "still":
        return bool((m == m[0]).all())
    k = o.stop_frame
    return bool((m[k:] == m[k]).all()) and _moves_steadily(m[:k + 1], o.direction)


def _motion_phrase(desc: list[str], word: str) -> list[str]:
    if word in DIRECTIONS:
        return ["the"] + desc + ["moving", word]
    if word == "stops":
        return ["the"] + desc + ["that", "stops"]
    return ["the", "still"] + desc


def _motion_expressions(rng, objs: list[VideoObject], t: int, spec: SynRefVideoSpec) -> list[str]:
    """Motion expressions of target t: descriptions shared by a look-alike + the target's motion words."""
    o = objs[t]
    word = o.motion_word
    if not visibly_true(o, word, spec.min_moving_frames):
        return []
    out = []
    for d in _descs(o):
        same = _matching(d, objs)
        if len(same) < 2:
            continue  # the description alone is unique: no motion words needed, not a motion expression
        if [k for k in same if motion_fits(objs[k], word)] == [t]:
            out.append(_phrase(_motion_phrase(d.words(rng), word)))
    return out


def _appearance_expressions(rng, objs: list[VideoObject], t: int, spec: SynRefVideoSpec) -> list[str]:
    n_frames = objs[t].masks.shape[0]
    if objs[t].masks.any(axis=(1, 2)).sum() < spec.min_visible_fraction * n_frames:
        return []  # mostly out of view: naming it by looks alone would refer to an absent object
    return [_phrase(["the"] + d.words(rng)) for d in _descs(objs[t]) if _matching(d, objs) == [t]]


# ---------------------------------------------------------------------------------------------------
# Planning and placing the objects
# ---------------------------------------------------------------------------------------------------


def _plan(rng, spec: SynRefVideoSpec) -> tuple[list[tuple[str, str, str, str, str, str | None]], list[int]]:
    """Object plans (shape, colour, size, shade, motion, direction) and the look-alike group's indices."""
    used: set[tuple[str, str]] = set()
    plans = []
    group: list[int] = []
    if rng.random() < spec.lookalike_clip_prob:
        k = int(_choice(rng, (2, 3), spec.group_size_probs))
        c, s = _pick_free_pair(rng, used)
        used.add((c, s))
        size = _choice(rng, SIZE_CLASSES, spec.size_probs)
        shade = _choice(rng, SHADES, spec.image.shade_probs)
        # Distinct motion words, so that each member differs from the others in how it moves; a member
        # that stops heads where no mover of the group goes, so that "moving <dir>" stays unique.
        words = [MOTION_WORDS[i] for i in rng.permutation(len(MOTION_WORDS))[:k]]
        free_dirs = [d for d in DIRECTIONS if d not in words]
        for w in words:
            if w in DIRECTIONS:
                plans.append((s, c, size, shade, "move", w))
            elif w == "stops":
                plans.append((s, c, size, shade, "stops", _choice(rng, free_dirs)))
            else:
                plans.append((s, c, size, shade, "still", None))
        group = list(range(k))
    n = int(rng.integers(max(spec.min_objects, len(plans) + 1), spec.max_objects + 1))
    while len(plans) < n:
        c, s = _pick_free_pair(rng, used)
        used.add((c, s))
        motion = _choice(rng, MOTIONS, spec.motion_probs)
        direction = None if motion == "still" else _choice(rng, tuple(DIRECTIONS))
        plans.append((s, c, _choice(rng, SIZE_CLASSES, spec.size_probs),
                      _choice(rng, SHADES, spec.image.shade_probs), motion, direction))
    return plans, group


def _rasterise(unit: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """In-frame part of the polygon ``unit + centre`` as (S, S) bool.

    Rasterised on a canvas padded by the polygon's reach and cropped, so that a polygon partly or wholly
    outside the frame is cut exactly (pycocotools' rasteriser is shift-invariant for integer shifts).
    """
    pad = math.ceil(np.abs(unit).max()) + 2
    pts = np.round(unit + centre, 2) + pad
    canvas = size + 2 * pad
    if (pts.max(axis=0) < 0).any() or (pts.min(axis=0) > canvas).any():
        return np.zeros((size, size), dtype=bool)  # far outside: nothing in the frame
    return polygon_to_mask(pts.reshape(-1).tolist(), canvas, canvas)[pad:pad + size, pad:pad + size]


def _place(rng, plan, size: int, n_frames: int, blocked: np.ndarray,
           spec: SynRefVideoSpec) -> VideoObject | None:
    """Draw a trajectory for one plan whose middle-frame mask avoids ``blocked``; None if none fits.

    A mover is wholly inside the frame in one random frame (its size is checked there), a "stops" or
    "still" object in every frame.
    """
    shape, colour, size_class, shade, motion, direction = plan
    lo_band, hi_band = spec.image.size_bands[SIZE_CLASSES.index(size_class)]
    ratio = float(np.exp(rng.uniform(np.log(lo_band), np.log(hi_band))))  # log-uniform, as SynRef
    unit = _UNIT[shape] * math.sqrt(ratio * size * size / _UNIT_AREA[shape])
    # Centres that keep the whole polygon inside the frame with a one-pixel margin.
    lo_c = 1 - unit.min(axis=0)
    hi_c = size - 1 - unit.max(axis=0)
    if (hi_c <= lo_c).any():
        return None
    speed = max(1.0, float(rng.uniform(*spec.speed_range)) * size)
    v = speed * np.asarray(DIRECTIONS[direction] if direction else (0, 0), dtype=np.float64)
    t = np.arange(n_frames, dtype=np.float64)[:, None]
    mid = n_frames // 2
    stop = None
    if motion == "stops":
        stop = int(rng.integers(math.ceil(n_frames / 4), n_frames * 3 // 4 + 1))
    for _ in range(spec.place_attempts):
        anchor = mid
        if motion == "move":
            # Wholly inside in one frame drawn at random; before and after it, it may enter or leave.
            anchor = int(rng.integers(n_frames))
            centres = lo_c + rng.random(2) * (hi_c - lo_c) + v * (t - anchor)
        else:
            # Inside the whole clip: drawn where it rests, then walked back to where it starts.
            rest = lo_c + rng.random(2) * (hi_c - lo_c)
            centres = rest - v * (stop - np.minimum(t, stop)) if stop is not None else rest + 0 * t
            if (centres[0] < lo_c).any() or (centres[0] > hi_c).any():
                continue
        # The two frames that decide acceptance first; the others only for an accepted trajectory.
        masks = {anchor: _rasterise(unit, centres[anchor], size)}
        area = int(masks[anchor].sum())
        # Rasterisation of tiny polygons can leave the band: keep the size words exact (as SynRef).
        if not (0.85 * lo_band * size * size <= area <= 1.15 * hi_band * size * size):
            continue
        masks.setdefault(mid, _rasterise(unit, centres[mid], size))
        if (masks[mid] & blocked).any():
            continue
        full = np.stack([masks[k] if k in masks else _rasterise(unit, centres[k], size)
                         for k in range(n_frames)])
        return VideoObject(shape=shape, colour=colour, size_class=size_class, shade=shade,
                           rgb=shade_rgb(colour, shade, spec.image), motion=motion, direction=direction,
                           speed=speed if direction else 0.0, stop_frame=stop, centres=centres, full=full)
    return None


def _occlude(objs: list[VideoObject], rng) -> None:
    """Draw a depth order and set each object's visible masks (front objects hide those behind)."""
    order = rng.permutation(len(objs))  # order[k] = depth of object k
    covered = np.zeros_like(objs[0].full)
    for k in sorted(range(len(objs)), key=lambda i: -order[i]):  # front to back
        o = objs[k]
        o.depth = int(order[k])
        o.masks = o.full & ~covered
        covered |= o.full


# ---------------------------------------------------------------------------------------------------
# One clip
# ---------------------------------------------------------------------------------------------------


def _rng_for(seed: int, split: str, index: int) -> np.random.Generator:
    # One independent stream per (seed, split, clip index): a clip does not change when counts change.
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM_TAG, SPLITS.index(split), int(index)]))


def _check_args(split: str, scene_size: int, n_frames: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown SynRef-Video split {split!r}; expected one of {SPLITS}")
    if scene_size < 24:
        raise ValueError(f"scene_size {scene_size} is too small to draw recognisable shapes; use >= 24")
    if not MIN_FRAMES <= n_frames <= MAX_FRAMES:
        raise ValueError(f"n_frames {n_frames} is outside {MIN_FRAMES}..{MAX_FRAMES}; SynRef-Video clips have "
                         f"{MIN_FRAMES} to {MAX_FRAMES} frames")


def make_clip(seed: int, split: str, index: int, scene_size: int = 64, n_frames: int = 12,
              spec: SynRefVideoSpec = DEFAULT_VIDEO_SPEC) -> SynVideoClip:
    """Generate clip ``index`` of ``split`` deterministically (what ``generate_synref_video`` writes).

    Returns a SynVideoClip: frames (T, S, S, 3) uint8; objects with (T, S, S) bool visible masks;
    1-3 expressions (motion ones on the look-alike group first, then appearance ones).
    """
    _check_args(split, scene_size, n_frames)
    rng = _rng_for(seed, split, index)
    for _ in range(spec.clip_attempts):
        plans, group = _plan(rng, spec)
        blocked = np.zeros((scene_size, scene_size), dtype=bool)
        placed: dict[int, VideoObject] = {}
        # Large objects first (easier packing); the middle frame is free of overlaps, like a SynRef scene.
        for k in sorted(range(len(plans)), key=lambda i: SIZE_CLASSES.index(plans[i][2]), reverse=True):
            o = _place(rng, plans[k], scene_size, n_frames, blocked, spec)
            if o is None:
                break
            placed[k] = o
            blocked |= _dilate1(o.full[n_frames // 2])
        if len(placed) != len(plans):
            continue
        objs = [placed[k] for k in range(len(plans))]
        _occlude(objs, rng)
        exprs = _expressions_for(rng, objs, group, spec)
        if not exprs:
            continue
        return SynVideoClip(frames=_paint_frames(rng, objs, scene_size, spec), objects=objs, expressions=exprs)
    raise RuntimeError(f"SynRef-Video could not lay out clip {split} #{index} (seed {seed}, size {scene_size}, "
                       f"{n_frames} frames) in {spec.clip_attempts} attempts: the sizes are too large for "
                       "this scene_size")


def _expressions_for(rng, objs: list[VideoObject], group: list[int],
                     spec: SynRefVideoSpec) -> list[VideoExpression]:
    n_expr = int(_choice(rng, (1, 2, 3), spec.n_expr_probs))
    others = [k for k in rng.permutation(len(objs)).tolist() if k not in group]
    out: list[VideoExpression] = []
    for t in [group[k] for k in rng.permutation(len(group))] + others:
        if len(out) >= n_expr:
            break
        if t in group:
            kind, cands = "motion", _motion_expressions(rng, objs, t, spec)
        else:
            kind, cands = "appearance", _appearance_expressions(rng, objs, t, spec)
        if cands:
            looks = tuple(k for k in group if k != t) if kind == "motion" else ()
            out.append(VideoExpression(cands[int(rng.integers(len(cands)))], t, kind, looks))
    if group and not any(e.kind == "motion" for e in out):
        return []  # the group failed its purpose (occlusion hid every motion): redraw the clip
    return out


def _paint_frames(rng, objs: list[VideoObject], size: int, spec: SynRefVideoSpec) -> np.ndarray:
    """Frames (T, S, S, 3) uint8: one static background, objects painted back to front, fresh noise."""
    background = _background(rng, size, spec.image)
    back_to_front = sorted(objs, key=lambda o: o.depth)
    frames = []
    for k in range(objs[0].full.shape[0]):
        layers = [_Layer(o.full[k], o.rgb) for o in back_to_front]
        occupied = np.any([o.full[k] for o in objs], axis=0)
        frames.append(_paint(background, layers, occupied, rng, spec.image))
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------------


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
        _atomic_write_bytes(frame_dir / f"{name}.jpg", buf.getvalue())
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
        _atomic_write_bytes(split_dir / "mask_dict.json", _json_bytes(mask_dicts[split]))
        # meta_expressions.json last: its presence marks a complete split.
        _atomic_write_bytes(split_dir / "meta_expressions.json",
                            _json_bytes({"info": info, "videos": videos[split]}))
    return root

