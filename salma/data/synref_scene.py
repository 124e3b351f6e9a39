"""SynRef's scenes: shape polygons, colours and shades, background, placement without overlap, painting, the
attribute / distractor / relation scene kinds, and ``make_scene`` (one image, deterministic per (seed,
split, index)).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pycocotools.mask as mask_utils

from salma.data.refer import decode_rle
from salma.data.synref_words import (
    COLOURS,
    DEFAULT_SPEC,
    KINDS,
    SHADES,
    SHAPES,
    SIZE_CLASSES,
    SPLITS,
    SynObject,
    SynRefSpec,
    SynScene,
    _choice,
    _expressions_for,
)


def _unit_polygons() -> dict[str, np.ndarray]:
    """Unit polygons centred at the origin, (N, 2) float64 (x, y), y pointing down."""
    ang = np.arange(24) * (2 * np.pi / 24)
    circle = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    triangle = np.array([[0, -1.0], [1.1, 0.9], [-1.1, 0.9]])
    diamond = np.array([[0, -1.25], [0.9, 0], [0, 1.25], [-0.9, 0]])
    a = 0.38  # half-width of the cross's arms
    cross = np.array(
        [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
         [-1, -a], [-a, -a]]
    )
    return {"circle": circle, "square": square, "triangle": triangle, "diamond": diamond, "cross": cross}


_UNIT = _unit_polygons()


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


_UNIT_AREA = {name: _polygon_area(p) for name, p in _UNIT.items()}


def polygon_to_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    """Rasterise one COCO polygon [x0, y0, x1, y1, ...] with pycocotools. Returns (H, W) bool."""
    rles = mask_utils.frPyObjects([polygon], height, width)
    return decode_rle(mask_utils.merge(rles))


@functools.lru_cache(maxsize=256)
def shade_rgb(colour: str, shade: str, spec: SynRefSpec = DEFAULT_SPEC) -> tuple[int, int, int]:
    """RGB of a colour name in a shade (dark / normal / bright)."""
    base = np.array(COLOURS[colour], dtype=np.float64)
    if shade == "dark":
        rgb = base * spec.dark_factor
    elif shade == "bright":
        rgb = base * (255.0 / base.max())
        rgb = rgb + (255.0 - rgb) * spec.bright_white_mix
    elif shade == "normal":
        rgb = base
    else:
        raise ValueError(f"unknown shade {shade!r}; expected one of {SHADES}")
    return tuple(round(v) for v in np.clip(rgb, 0, 255))


def _background(rng: np.random.Generator, size: int, spec: SynRefSpec) -> np.ndarray:
    """Noise-free textured background, (S, S, 3) float32: a grey-brown base and two soft gratings."""
    base = (rng.uniform(95, 150) + rng.uniform(-12, 12, size=3)).astype(np.float32)
    u = np.arange(size, dtype=np.float32) / size
    tex = np.zeros((size, size), dtype=np.float32)
    for _ in range(2):
        fx, fy = rng.uniform(1, 6, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        # sin(a + b) = sin a cos b + cos a sin b: a separable grating, computed as two outer products.
        ay = 2 * np.pi * fy * u + ph
        ax = 2 * np.pi * fx * u
        tex += np.outer(np.sin(ay), np.cos(ax)) + np.outer(np.cos(ay), np.sin(ax))
    return base[None, None, :] + np.float32(spec.background_texture * 0.5) * tex[:, :, None]


def _dilate1(mask: np.ndarray) -> np.ndarray:
    """8-neighbour dilation by one pixel (keeps a free pixel between objects)."""
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= out[:, :-1].copy()
    out[:, :-1] |= out[:, 1:].copy()
    return out


class _Placer:
    """Places non-overlapping polygons into a scene (rejection sampling)."""

    def __init__(self, rng: np.random.Generator, size: int, spec: SynRefSpec):
        self.rng, self.size, self.spec = rng, size, spec
        self.occupied = np.zeros((size, size), dtype=bool)
        self.blocked = np.zeros((size, size), dtype=bool)  # occupied, dilated by one pixel

    def _box_blocked(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """Whether any blocked pixel lies in the inclusive box."""
        return bool(self.blocked[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1].any())

    def area_for(self, size_class: str) -> float:
        lo, hi = self.spec.size_bands[SIZE_CLASSES.index(size_class)]
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))  # log-uniform: more tiny ones

    def place(self, shape: str, colour: str, size_class: str, shade: str) -> SynObject | None:
        s = self.size
        ratio = self.area_for(size_class)
        scale = math.sqrt(ratio * s * s / _UNIT_AREA[shape])
        unit = _UNIT[shape] * scale
        lo_xy = unit.min(axis=0)
        hi_xy = unit.max(axis=0)
        lo_band, hi_band = self.spec.size_bands[SIZE_CLASSES.index(size_class)]
        min_px, max_px = lo_band * s * s * 0.85, hi_band * s * s * 1.15
        if 1 - lo_xy[0] >= s - 1 - hi_xy[0] or 1 - lo_xy[1] >= s - 1 - hi_xy[1]:
            return None  # larger than the scene
        # All candidate centres in one draw (one RNG call instead of one per attempt).
        lo_c = np.array([1 - lo_xy[0], 1 - lo_xy[1]])
        span = np.array([s - 1 - hi_xy[0], s - 1 - hi_xy[1]]) - lo_c
        centres = (self.rng.random((self.spec.place_attempts, 2)) * span + lo_c).tolist()
        qx, qy = 0.25 * (hi_xy[0] - lo_xy[0]), 0.25 * (hi_xy[1] - lo_xy[1])
        for cx, cy in centres:
            # Cheap rejection before rasterising: the central half of the box must be free.
            if self._box_blocked(int(cx - qx), int(cy - qy), int(cx + qx), int(cy + qy)):
                continue
            pts = np.round(unit + np.array([cx, cy]), 2)
            polygon = pts.reshape(-1).tolist()
            mask = polygon_to_mask(polygon, s, s)
            area = int(np.count_nonzero(mask))
            # Rasterisation of tiny polygons can leave the band: keep the words' meaning exact.
            if not (0 < area and min_px <= area <= max_px):
                continue
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            # Work on the object's box (+1 px) only: the rest of the mask is empty.
            y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, s)
            x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, s)
            crop = mask[y0:y1, x0:x1]
            if (crop & self.blocked[y0:y1, x0:x1]).any():
                continue
            self.occupied[y0:y1, x0:x1] |= crop
            self.blocked[y0:y1, x0:x1] |= _dilate1(crop)
            return SynObject(
                shape=shape, colour=colour, size_class=size_class, shade=shade, polygon=polygon,
                mask=mask, area=area, bbox=(int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])),
                rgb=shade_rgb(colour, shade, self.spec),
            )
        return None


def _paint(background: np.ndarray, objects: list[SynObject], occupied: np.ndarray,
           rng: np.random.Generator, spec: SynRefSpec) -> np.ndarray:
    """Objects painted over the background (exactly their masks), then pixel noise: stronger on the
    background (texture) than on objects (flat colours). Returns (S, S, 3) uint8."""
    img = background.copy()
    for o in objects:
        img[o.mask] = np.asarray(o.rgb, dtype=np.float32)
    sigma = np.where(occupied, np.float32(spec.object_noise), np.float32(spec.background_noise))
    img += sigma[:, :, None] * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _all_pairs() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def _pick_free_pair(rng, used: set[tuple[str, str]], colour=None, shape=None) -> tuple[str, str] | None:
    pool = [p for p in _all_pairs() if p not in used and (colour is None or p[0] == colour)
            and (shape is None or p[1] == shape)]
    if not pool:
        return None
    return pool[int(rng.integers(len(pool)))]


def _scene_attribute(rng, placer: _Placer, spec: SynRefSpec):
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    used: set[tuple[str, str]] = set()
    plans = []
    for _ in range(n):
        c, s = _pick_free_pair(rng, used)
        used.add((c, s))
        plans.append((s, c, _choice(rng, SIZE_CLASSES, spec.attribute_size_probs),
                      _choice(rng, SHADES, spec.shade_probs)))
    return plans, {}


def _scene_distractor(rng, placer: _Placer, spec: SynRefSpec):
    """Plans (shape, colour, size, shade) with roles: group targets and their salient look-alikes."""
    n_groups = 2 if rng.random() < spec.distractor_two_groups_prob else 1
    used: set[tuple[str, str]] = set()
    plans: list[tuple[str, str, str, str]] = []
    groups: dict[int, list[int]] = {}  # target plan index -> look-alike plan indices
    for _ in range(n_groups):
        c, s = _pick_free_pair(rng, used)
        used.add((c, s))
        t_shade = "dark" if rng.random() < spec.distractor_target_dark_prob else "normal"
        t_idx = len(plans)
        plans.append((s, c, "small", t_shade))
        n_look = 2 if rng.random() < spec.second_lookalike_prob else 1
        looks = []
        for j in range(n_look):
            lc, ls = c, s
            if j == 1 and rng.random() >= spec.second_lookalike_same_class_prob:
                # Shares only the shape or only the colour: still salient and partly confusable.
                pair = (_pick_free_pair(rng, used, shape=s) if rng.random() < 0.5
                        else _pick_free_pair(rng, used, colour=c))
                if pair is not None:
                    lc, ls = pair
                    used.add(pair)
            size = "large" if rng.random() < spec.lookalike_large_prob else "medium"
            shade = "bright"
            if t_shade == "dark" and rng.random() < spec.lookalike_normal_if_target_dark_prob:
                shade = "normal"
            looks.append(len(plans))
            plans.append((ls, lc, size, shade))
        groups[t_idx] = looks
    for _t_idx in list(groups) if spec.distractor_decoy_prob > 0 else []:
        t_shape, t_colour, _, t_shade = plans[_t_idx]
        for shares in ("colour", "shape"):
            if len(plans) >= spec.max_objects or rng.random() >= spec.distractor_decoy_prob:
                continue
            pair = (_pick_free_pair(rng, used, colour=t_colour) if shares == "colour"
                    else _pick_free_pair(rng, used, shape=t_shape))
            if pair is not None:
                used.add(pair)
                plans.append((pair[1], pair[0], "small", t_shade))
    n_total = int(rng.integers(max(spec.min_objects, len(plans)), spec.max_objects + 1))
    while len(plans) < n_total:
        c, s = _pick_free_pair(rng, used)
        used.add((c, s))
        plans.append((s, c, _choice(rng, SIZE_CLASSES, spec.filler_size_probs),
                      _choice(rng, SHADES, spec.shade_probs)))
    return plans, groups


def _scene_relation(rng, placer: _Placer, spec: SynRefSpec):
    """A group of 2-3 objects sharing a description (so a relation is needed) plus other objects."""
    mode = _choice(rng, ("shape", "colour_shape", "colour"), spec.relation_group_probs)
    k = int(rng.integers(2, 4))
    c0 = _choice(rng, list(COLOURS))
    s0 = _choice(rng, SHAPES)
    plans = []
    for _ in range(k):
        c = c0 if mode in ("colour", "colour_shape") else _choice(rng, list(COLOURS))
        s = s0 if mode in ("shape", "colour_shape") else _choice(rng, SHAPES)
        plans.append((s, c, _choice(rng, SIZE_CLASSES, spec.relation_size_probs),
                      _choice(rng, SHADES, spec.shade_probs)))
    n_total = int(rng.integers(max(spec.min_objects, k + 1), spec.max_objects + 1))
    while len(plans) < n_total:
        plans.append((_choice(rng, SHAPES), _choice(rng, list(COLOURS)),
                      _choice(rng, SIZE_CLASSES, spec.filler_size_probs),
                      _choice(rng, SHADES, spec.shade_probs)))
    return plans, {}


def _rng_for(seed: int, split: str, index: int) -> np.random.Generator:
    # One independent stream per (seed, split, image index): an image does not change when other
    # splits or counts change.
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]))


def make_scene(seed: int, split: str, index: int, scene_size: int = 64,
               spec: SynRefSpec = DEFAULT_SPEC) -> SynScene:
    """Generate scene ``index`` of ``split`` deterministically (what ``generate_synref`` writes).

    Returns a SynScene: image (S, S, 3) uint8, objects with (S, S) bool masks, 1-3 expressions.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown SynRef split {split!r}; expected one of {SPLITS}")
    if scene_size < 24:
        raise ValueError(f"scene_size {scene_size} is too small to draw recognisable shapes; use >= 24")
    rng = _rng_for(seed, split, index)
    kind = _choice(rng, KINDS, spec.kind_probs)
    layout = {"attribute": _scene_attribute, "distractor": _scene_distractor,
              "relation": _scene_relation}[kind]
    for _ in range(spec.scene_attempts):
        placer = _Placer(rng, scene_size, spec)
        plans, groups = layout(rng, placer, spec)
        # Place large objects first (easier packing); keep the plan index to map roles.
        order = sorted(range(len(plans)), key=lambda k: SIZE_CLASSES.index(plans[k][2]), reverse=True)
        placed: dict[int, SynObject] = {}
        for k in order:
            o = placer.place(*plans[k])
            if o is None:
                break
            placed[k] = o
        if len(placed) != len(plans):
            continue
        if placer.occupied.mean() > spec.max_total_area:
            continue
        objs = [placed[k] for k in range(len(plans))]
        exprs = _expressions_for(rng, kind, objs, groups, spec)
        if not exprs:
            continue
        background = _background(rng, scene_size, spec)
        image = _paint(background, objs, placer.occupied, rng, spec)
        return SynScene(image=image, objects=objs, expressions=exprs, kind=kind)
    raise RuntimeError(
        f"SynRef could not lay out a {kind} scene ({split} #{index}, seed {seed}, size {scene_size}) "
        f"in {spec.scene_attempts} attempts: the SynRefSpec sizes are too large for this scene_size"
    )
