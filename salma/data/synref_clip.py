"""SynRef-Video's clips: the generator's spec, the moving, stopping, entering and leaving objects, their
appearance and motion expressions (true on the frames, checked from the masks), and ``make_clip`` (one
clip, deterministic per (seed, split, index)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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

SPLITS: tuple[str, ...] = ("train", "valid_u")

MIN_FRAMES, MAX_FRAMES = 8, 24

KINDS: tuple[str, ...] = ("appearance", "motion")


MOTIONS: tuple[str, ...] = ("move", "stops", "still")


# Image axes: x to the right, y down (so "up" is -y).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


# The motion label of an object in words: its direction (move), "stops" or "still".
MOTION_WORDS: tuple[str, ...] = tuple(DIRECTIONS) + ("stops", "still")


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
