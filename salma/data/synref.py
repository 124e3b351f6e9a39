"""SynRef: the kit's procedurally generated referring-segmentation benchmark, in the refer format.

DESIGN.md "The synthetic benchmark"; REFERENCE.md section 5 (refer format) and section 9 (the probe).
The paper's motivation (Sec. 1) is *attention drift*: a grounding model drifts to the most salient
object instead of the referred one, hurting small targets (Table 4). SynRef provokes that on purpose:

- ``attribute`` expressions ("the blue triangle", "the large dark red circle"): the target is unique by
  the words used; every object of the scene has a distinct (colour, shape) pair; targets are mostly of
  medium size, so this kind is not made easy by large targets;
- ``distractor`` expressions: the target is *small* and one or two *salient look-alikes* sit in the same
  scene: larger (mostly large) AND brighter, the first always of the same colour and shape, the second
  of the same class or sharing only the shape or only the colour. The expression names the target by
  what distinguishes it ("the small green square", "the dark red circle"), so a model that follows
  saliency picks the look-alike (``SynRefSpec.distractor_decoy_prob`` adds small decoys sharing the
  target's colour or shape; off by default);
- ``relation`` expressions: the target's description alone is ambiguous (2-3 objects share it) and a
  relation resolves it: "the circle to the left of the blue square", "the largest red shape",
  "the leftmost triangle", "the green diamond with a larger one to its left".

Word semantics are absolute and consistent across kinds, so that the language is learnable: "small",
"large"/"big" name size classes (area bands with gaps between them), "dark"/"bright" name shades;
"largest"/"smallest" need a 1.3x area margin; "left of"/"above"... need the two bounding boxes to be
separated along that axis.

Each object is a polygon (a 24-gon circle, square, triangle, diamond, cross), rasterised with pycocotools
(``frPyObjects`` + ``decode``); the image is painted from exactly that mask and objects never overlap
(one free pixel around each), so generator -> files -> loader -> masks round-trips exactly, and the
segmentation is stored as COCO polygons, as real RefCOCO stores it.

Files (``generate_synref``):
    <root>/images/synref_<split>_<image_id:06d>.png   RGB PNG, scene_size x scene_size
    <root>/synref/instances.json                      COCO instances (+ colour/shape/size/shade keys)
    <root>/synref/refs(unc).p                         refer-API refs (+ kind, area_ratio,
                                                       distractor_ann_ids), pickle protocol 4
The annotation files are byte-identical for the same seed and arguments.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pickle
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image
from tqdm.auto import tqdm

from salma.data.refer import decode_rle

# synref-1.1 (2026-11-23): distractor targets are named by a relation, and their look-alikes are named too
# (distractor_relation_prob, lookalike_expression_prob); synref-1.0 named the targets by size or shade,
# which made the distractor kind the baseline's easiest.
GENERATOR_VERSION = "synref-1.1"
SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB")
DEFAULT_N_IMAGES: dict[str, int] = {"train": 10000, "val": 400, "testA": 400, "testB": 400}  # the small preset's
KINDS: tuple[str, ...] = ("attribute", "distractor", "relation")
PICKLE_PROTOCOL = 4  # fixed so that the refs file's bytes do not depend on the Python version

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
# Normal-shade RGB of each colour name; "dark" and "bright" shades derive from these (SynRefSpec).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (230, 205, 35),
    "purple": (145, 60, 195),
    "orange": (240, 135, 25),
}
SIZE_CLASSES: tuple[str, ...] = ("small", "medium", "large")
SHADES: tuple[str, ...] = ("dark", "normal", "bright")
# Words per size class (medium has none: it is the unmarked size). "large" and "big" are synonyms.
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small",), "medium": (), "large": ("large", "big")}
SPATIAL_RELATIONS: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
EXTREMES: tuple[str, ...] = ("leftmost", "rightmost", "topmost", "bottommost")
RELATION_TEMPLATES: tuple[str, ...] = ("superlative", "extreme", "spatial", "larger_one")
# Fixed template words (anything not a colour / shape / size / shade word).
_TEMPLATE_WORDS = (
    "the", "shape", "to", "of", "left", "right", "above", "below", "largest", "smallest",
    "with", "a", "larger", "one", "its",
) + EXTREMES


@dataclass(frozen=True)
class SynRefSpec:
    """Every knob of the generator (probabilities, sizes, shades). Frozen: a spec is part of a dataset.

    Sizes are area ratios (object area / image area). Probability tuples are over the listed options.
    """

    min_objects: int = 3
    max_objects: int = 6
    # Kind of each image (all its expressions share it): attribute, distractor, relation.
    kind_probs: tuple[float, float, float] = (0.35, 0.35, 0.30)
    # Number of expressions of an attribute / relation image: 1, 2, 3.
    n_expr_probs: tuple[float, float, float] = (0.4, 0.4, 0.2)
    # Area bands of the size classes small / medium / large; gaps keep "small"/"large" unambiguous.
    size_bands: tuple[tuple[float, float], ...] = ((0.007, 0.02), (0.028, 0.05), (0.07, 0.12))
    # Size class probabilities (small, medium, large) per role.
    attribute_size_probs: tuple[float, float, float] = (0.2, 0.6, 0.2)
    relation_size_probs: tuple[float, float, float] = (0.3, 0.4, 0.3)
    filler_size_probs: tuple[float, float, float] = (0.3, 0.45, 0.25)
    # Shade probabilities (dark, normal, bright) of ordinary objects.
    shade_probs: tuple[float, float, float] = (0.15, 0.7, 0.15)
    # Distractor scenes: the target is small; dark with this probability (else normal).
    distractor_target_dark_prob: float = 0.4
    # Probability of a second salient look-alike; of it sharing colour AND shape (else one of them).
    second_lookalike_prob: float = 0.45
    second_lookalike_same_class_prob: float = 0.5
    # Look-alikes are large with this probability, else medium (always larger than the small target).
    lookalike_large_prob: float = 0.8
    # Every look-alike covers at least this many times the target's area (else the scene is redrawn).
    lookalike_min_area_factor: float = 2.0
    # Look-alikes are bright; when the target is dark, a look-alike is normal with this probability
    # (still brighter than the target).
    lookalike_normal_if_target_dark_prob: float = 0.15
    # Probability that a distractor image holds two (target, look-alikes) groups, i.e. 2 expressions.
    distractor_two_groups_prob: float = 0.3
    # Decoys: small objects beside each distractor target that share its colour (the first) or its shape
    # (the second) and its size class, each with this probability while the scene has room; then the target
    # is named by colour AND shape AND size/shade. Off in synref-1.0 (0.0 draws nothing, so the default
    # output is unchanged). Tried on 2026-11-23 at 0.7 with a baseline that did not ground (val cIoU 0.22):
    # the distractor kind still scored higher than the attribute kind (0.40 vs 0.22), so decoys alone do not
    # make the kind harder; kept as a knob for that investigation.
    distractor_decoy_prob: float = 0.0
    # Relation-named distractor targets: with this probability a distractor target is named by a spatial,
    # extreme or "with a larger one" relation over its colour/shape description, which the look-alike
    # shares ("the green square to the left of the blue circle"), instead of by its size or shade
    # ("the small green square"), when such a relation exists (else as before). Size and shade words are
    # what the small baseline reads best (`python -m salma diagnose`: 70-100% of expressions with them pick
    # the target, 16% with a shape word alone), so naming by them makes the distractor kind easy; a relation
    # makes the model find the target without the word that rules the salient look-alike out. Measured
    # 2026-11-23 with the shipped small foundation (trained without it) on the 400 val expressions at 1.0:
    # distractor-kind cIoU 0.46 -> 0.10 (attribute 0.34 and relation 0.28 unchanged: their scenes are the
    # same), and the masks land on the look-alike for 31% of distractor expressions (0% before). On (1.0)
    # from synref-1.1; 0.0 draws nothing and gives synref-1.0's scenes (SYNREF_1_0_SPEC).
    distractor_relation_prob: float = 1.0
    # Look-alike expressions: with this probability a distractor group also names its first look-alike (the
    # large, bright one) by an extreme or spatial relation, as a relation-kind expression of the same scene.
    # Without them every pair of objects sharing a description in a distractor scene has the small one as
    # its target, a shortcut the baseline learns: trained on synref-1.1 without them, its masks landed on the
    # look-alike for 0% of distractor expressions and on the target for 55% (attribute 36%), so the
    # distractor kind stayed the easier one. With them the look-alike pair is told apart only by the words.
    # On (1.0) from synref-1.1; 0.0 draws nothing.
    lookalike_expression_prob: float = 1.0
    # Relation images: how the ambiguous group (2-3 objects) shares a description.
    relation_group_probs: tuple[float, float, float] = (0.5, 0.3, 0.2)  # shape / colour+shape / colour
    # Relation template weights, in RELATION_TEMPLATES order (superlative, extreme, spatial, larger_one);
    # a template is drawn among those available for the target. Spatial and "larger one" are rarer
    # (they need a particular layout), so they weigh more.
    relation_template_weights: tuple[float, float, float, float] = (1.0, 1.0, 2.5, 2.5)
    # Margins that make relations unambiguous to the eye.
    superlative_margin: float = 1.3
    # Appearance: dark = rgb * dark_factor; bright = rgb scaled to max 255 then mixed with white.
    dark_factor: float = 0.55
    bright_white_mix: float = 0.35
    background_noise: float = 6.0
    background_texture: float = 10.0
    object_noise: float = 3.0
    # Placement: attempts per object and per scene before giving up (then the scene is redrawn).
    place_attempts: int = 60
    scene_attempts: int = 200
    max_total_area: float = 0.45


DEFAULT_SPEC = SynRefSpec()
# synref-1.0's spec (size/shade-named distractors). SynRef-Video keeps it for its image settings, so that its
# files, which record them, are unchanged by the image generator's 1.1.
SYNREF_1_0_SPEC = SynRefSpec(distractor_relation_prob=0.0, lookalike_expression_prob=0.0)


# ---------------------------------------------------------------------------------------------------
# Vocabulary and tokens
# ---------------------------------------------------------------------------------------------------

_PUNCT_RE = re.compile("[" + re.escape(string.punctuation) + "]")


def tokenize(sentence: str) -> list[str]:
    """Tokens of an expression: lower-cased, punctuation removed, split on whitespace."""
    return _PUNCT_RE.sub("", sentence.lower()).split()


def vocabulary() -> list[str]:
    """Every word the generator can emit (lower-case, sorted, unique): for a word-level tokenizer."""
    words = set(_TEMPLATE_WORDS) | set(SHAPES) | set(COLOURS) | {"dark", "bright"}
    for ws in SIZE_WORDS.values():
        words |= set(ws)
    for phrase in SPATIAL_RELATIONS.values():
        words |= set(phrase.split())
    return sorted(words)


# ---------------------------------------------------------------------------------------------------
# Shapes as polygons
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Scene model
# ---------------------------------------------------------------------------------------------------


@dataclass
class SynObject:
    """One object of a scene. ``mask`` is (H, W) bool; bbox is inclusive pixel bounds (x0, y0, x1, y1)."""

    shape: str
    colour: str
    size_class: str
    shade: str
    polygon: list[float]
    mask: np.ndarray
    area: int
    bbox: tuple[int, int, int, int]
    rgb: tuple[int, int, int]


@dataclass
class SynExpression:
    """One referring expression: target index into the scene's objects, kind, look-alike indices."""

    sentence: str
    target: int
    kind: str
    distractors: tuple[int, ...] = ()


@dataclass
class SynScene:
    """A generated scene: image (H, W, 3) uint8, objects, expressions."""

    image: np.ndarray
    objects: list[SynObject]
    expressions: list[SynExpression]
    kind: str


@dataclass(frozen=True)
class _Desc:
    """A description (any field None = not mentioned)."""

    size: str | None = None  # size class
    shade: str | None = None
    colour: str | None = None
    shape: str | None = None

    def matches(self, o: SynObject) -> bool:
        return (
            (self.size is None or o.size_class == self.size)
            and (self.shade is None or o.shade == self.shade)
            and (self.colour is None or o.colour == self.colour)
            and (self.shape is None or o.shape == self.shape)
        )

    def core(self) -> _Desc:
        return _Desc(colour=self.colour, shape=self.shape)

    def words(self, rng: np.random.Generator) -> list[str]:
        out: list[str] = []
        if self.size is not None:
            ws = SIZE_WORDS[self.size]
            out.append(ws[int(rng.integers(len(ws)))])
        if self.shade is not None:
            out.append(self.shade)
        if self.colour is not None:
            out.append(self.colour)
        out.append(self.shape if self.shape is not None else "shape")
        return out


def _descs(o: SynObject, with_size: bool = True) -> list[_Desc]:
    """All descriptions of ``o`` that name its colour or shape (a noun phrase needs one)."""
    sizes = [None] + ([o.size_class] if with_size and SIZE_WORDS[o.size_class] else [])
    shades = [None] + ([o.shade] if o.shade != "normal" else [])
    out = []
    for sz in sizes:
        for sh in shades:
            for c in (None, o.colour):
                for s in (None, o.shape):
                    if c is None and s is None:
                        continue
                    out.append(_Desc(sz, sh, c, s))
    return out


def _matching(d: _Desc, objs: list[SynObject]) -> list[int]:
    return [k for k, o in enumerate(objs) if d.matches(o)]


def _left_of(a: SynObject, b: SynObject) -> bool:
    return a.bbox[2] < b.bbox[0]


def _above(a: SynObject, b: SynObject) -> bool:
    return a.bbox[3] < b.bbox[1]


def _centre(o: SynObject) -> tuple[float, float]:
    return (o.bbox[0] + o.bbox[2]) / 2.0, (o.bbox[1] + o.bbox[3]) / 2.0


# A relation *holds* for the target when the boxes are separated along the axis; it must *not even
# loosely hold* (box centres in that order) for any other candidate, so no borderline case is ambiguous.
_SPATIAL = {
    "left": lambda a, b: _left_of(a, b),
    "right": lambda a, b: _left_of(b, a),
    "above": lambda a, b: _above(a, b),
    "below": lambda a, b: _above(b, a),
}
_SPATIAL_LOOSE = {
    "left": lambda a, b: _centre(a)[0] < _centre(b)[0],
    "right": lambda a, b: _centre(a)[0] > _centre(b)[0],
    "above": lambda a, b: _centre(a)[1] < _centre(b)[1],
    "below": lambda a, b: _centre(a)[1] > _centre(b)[1],
}


def _phrase(words: list[str]) -> str:
    return " ".join(words)


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------


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


def _choice(rng: np.random.Generator, options, probs=None):
    """One option, uniform or with the given (unnormalised) probabilities."""
    if probs is None:
        return options[int(rng.integers(len(options)))]
    u = rng.random() * float(sum(probs))
    acc = 0.0
    for option, p in zip(options, probs):
        acc += p
        if u < acc:
            return option
    return options[len(options) - 1]


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


# ---------------------------------------------------------------------------------------------------
# Scene layouts per kind
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Expressions per kind
# ---------------------------------------------------------------------------------------------------


def _attribute_expressions(rng, objs: list[SynObject], t: int) -> list[str]:
    out = []
    for d in _descs(objs[t]):
        if _matching(d, objs) == [t]:
            out.append(_phrase(["the"] + d.words(rng)))
    return out


def _distractor_expressions(rng, objs: list[SynObject], t: int, looks: list[int]) -> list[str]:
    """Unique descriptions of t whose colour/shape core also fits a salient look-alike."""
    out = []
    for d in _descs(objs[t]):
        if _matching(d, objs) != [t]:
            continue
        if not any(d.core().matches(objs[k]) for k in looks):
            continue
        out.append(_phrase(["the"] + d.words(rng)))
    return out


def _shortest_unique_desc(rng, objs: list[SynObject], a: int) -> list[str] | None:
    cands = [d for d in _descs(objs[a]) if _matching(d, objs) == [a]]
    if not cands:
        return None
    n_min = min(len(d.words(rng)) for d in cands)
    short = [d for d in cands if len(d.words(rng)) == n_min]
    return short[int(rng.integers(len(short)))].words(rng)


def _relation_expressions(rng, objs: list[SynObject], t: int, margin: float) -> dict[str, list[str]]:
    """Relation expressions for target t, grouped by template (chosen template-first, then phrasing)."""
    out: dict[str, list[str]] = {"superlative": [], "extreme": [], "spatial": [], "larger_one": []}
    tgt = objs[t]
    for d in _descs(tgt, with_size=False):
        group = _matching(d, objs)
        if len(group) < 2:
            continue  # the description alone must be ambiguous, otherwise no relation is needed
        others = [objs[k] for k in group if k != t]
        words = d.words(rng)
        # Superlatives of area, with a visible margin.
        if tgt.area >= margin * max(o.area for o in others):
            out["superlative"].append(_phrase(["the", "largest"] + words))
        if tgt.area * margin <= min(o.area for o in others):
            out["superlative"].append(_phrase(["the", "smallest"] + words))
        # Extremes of position: the target's box is separated from every other member's box.
        if all(_left_of(tgt, o) for o in others):
            out["extreme"].append(_phrase(["the", "leftmost"] + words))
        if all(_left_of(o, tgt) for o in others):
            out["extreme"].append(_phrase(["the", "rightmost"] + words))
        if all(_above(tgt, o) for o in others):
            out["extreme"].append(_phrase(["the", "topmost"] + words))
        if all(_above(o, tgt) for o in others):
            out["extreme"].append(_phrase(["the", "bottommost"] + words))
        # Spatial relation to a uniquely described anchor outside the group.
        for a, anchor in enumerate(objs):
            if a in group:
                continue
            anchor_words = None
            for rel, fn in _SPATIAL.items():
                loose = _SPATIAL_LOOSE[rel]
                if fn(tgt, anchor) and [k for k in group if loose(objs[k], anchor)] == [t]:
                    if anchor_words is None:
                        anchor_words = _shortest_unique_desc(rng, objs, a)
                        if anchor_words is None:
                            break
                    out["spatial"].append(
                        _phrase(["the"] + words + SPATIAL_RELATIONS[rel].split() + ["the"] + anchor_words)
                    )
        # "the X with a larger one to its left/right": a larger member of the group on that side.
        for side in ("left", "right"):
            fn, loose = _SPATIAL[side], _SPATIAL_LOOSE[side]
            holds = any(j != t and objs[j].area >= margin * tgt.area and fn(objs[j], tgt) for j in group)
            loose_hits = [
                k for k in group
                if any(j != k and objs[j].area > objs[k].area and loose(objs[j], objs[k]) for j in group)
            ]
            if holds and loose_hits == [t]:
                out["larger_one"].append(
                    _phrase(["the"] + words + ["with", "a", "larger", "one", "to", "its", side])
                )
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------------
# One scene
# ---------------------------------------------------------------------------------------------------


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


def _pick_template(rng, by_template: dict[str, list[str]], spec: SynRefSpec) -> list[str]:
    """The phrasings of one relation template, drawn by ``spec.relation_template_weights`` among those present."""
    templates = [k for k in RELATION_TEMPLATES if k in by_template]
    weights = [spec.relation_template_weights[RELATION_TEMPLATES.index(k)] for k in templates]
    return by_template[_choice(rng, templates, weights)]


def _expressions_for(rng, kind: str, objs: list[SynObject], groups: dict[int, list[int]],
                     spec: SynRefSpec) -> list[SynExpression]:
    out: list[SynExpression] = []
    if kind == "distractor":
        for t, looks in groups.items():
            if any(objs[k].area < spec.lookalike_min_area_factor * objs[t].area for k in looks):
                return []  # a look-alike must be clearly larger: redraw the scene
            cands = _distractor_expressions(rng, objs, t, looks)
            if not cands:
                return []  # the layout failed its purpose: redraw the scene
            if spec.distractor_relation_prob > 0 and rng.random() < spec.distractor_relation_prob:
                by_template = {k: v for k, v in _relation_expressions(rng, objs, t, spec.superlative_margin).items()
                               if k != "superlative"}  # "the smallest ..." would name the size again
                if by_template:
                    cands = _pick_template(rng, by_template, spec)
            out.append(SynExpression(cands[int(rng.integers(len(cands)))], t, kind, tuple(looks)))
            if spec.lookalike_expression_prob > 0 and rng.random() < spec.lookalike_expression_prob:
                big = looks[0]
                by_template = {k: v for k, v in _relation_expressions(rng, objs, big, spec.superlative_margin).items()
                               if k in ("extreme", "spatial")}  # no size word: "largest" would name it outright
                if by_template:
                    cands = _pick_template(rng, by_template, spec)
                    out.append(SynExpression(cands[int(rng.integers(len(cands)))], big, "relation", ()))
        return out
    n_expr = int(_choice(rng, (1, 2, 3), spec.n_expr_probs))
    for t in rng.permutation(len(objs)).tolist():
        if len(out) >= n_expr:
            break
        if kind == "attribute":
            cands = _attribute_expressions(rng, objs, t)
        else:
            by_template = _relation_expressions(rng, objs, t, spec.superlative_margin)
            if not by_template:
                continue
            cands = _pick_template(rng, by_template, spec)
        if cands:
            out.append(SynExpression(cands[int(rng.integers(len(cands)))], t, kind, ()))
    return out


# ---------------------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------------------


def image_file_name(split: str, image_id: int) -> str:
    """File name of a SynRef image (under <root>/images)."""
    return f"synref_{split}_{image_id:06d}.png"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_scene(job: tuple) -> tuple[str, list[dict], list[dict]]:
    """Worker: generate one scene, write its PNG, return (kind, object records, expression records)."""
    seed, split, index, image_id, scene_size, spec, img_dir = job
    scene = make_scene(seed, split, index, scene_size, spec)
    Image.fromarray(scene.image).save(Path(img_dir) / image_file_name(split, image_id), format="PNG",
                                      compress_level=1)
    objects = []
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        objects.append({
            "category_id": SHAPES.index(o.shape) + 1, "segmentation": [o.polygon], "area": float(o.area),
            "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)], "iscrowd": 0,
            "colour": o.colour, "shape": o.shape, "size": o.size_class, "shade": o.shade, "rgb": list(o.rgb),
        })
    exprs = [{"sentence": e.sentence, "target": e.target, "kind": e.kind, "distractors": list(e.distractors),
              "area_ratio": scene.objects[e.target].area / float(scene_size * scene_size)}
             for e in scene.expressions]
    return scene.kind, objects, exprs


def check_split_counts(counts: dict[str, int], splits: tuple[str, ...], what: str, arg: str,
                       workers: int) -> dict[str, int]:
    """Validate per-split counts (keys among ``splits``, each >= 0) and ``workers`` (>= 1) of a generator;
    ValueError naming ``arg`` and the value. Returns the counts as a new dict."""
    counts = dict(counts)
    unknown = set(counts) - set(splits)
    if unknown:
        raise ValueError(f"unknown {what} split(s) {sorted(unknown)}; expected keys among {splits}")
    for k, v in counts.items():
        if int(v) < 0:
            raise ValueError(f"{arg}[{k!r}] = {v} must be >= 0")
    if int(workers) < 1:
        raise ValueError(f"workers = {workers} must be >= 1")
    return counts


@contextlib.contextmanager
def ordered_results(fn, jobs: list, workers: int, chunksize: int):
    """Yield an iterator over ``fn(job)`` for every job, in job order: in this process when ``workers`` is
    1, else in a pool of that many processes (closed when the block ends, also on an error)."""
    if int(workers) == 1:
        yield (fn(job) for job in jobs)
        return
    import multiprocessing

    pool = multiprocessing.get_context().Pool(int(workers))
    try:
        yield pool.imap(fn, jobs, chunksize=chunksize)  # imap keeps the job order
    finally:
        pool.close()
        pool.join()


def generate_synref(
    root: Path | str,
    *,
    seed: int = 0,
    scene_size: int = 64,
    n_images: dict[str, int] | None = None,
    progress: bool = True,
    spec: SynRefSpec = DEFAULT_SPEC,
    workers: int = 1,
) -> Path:
    """Generate SynRef into ``root`` (refer format) and return ``root``.

    Args:
        root: output folder; ``images/`` and ``synref/`` are created inside it.
        seed: dataset seed; the same seed and arguments give byte-identical annotation files.
        scene_size: image side in pixels (images are scene_size x scene_size RGB).
        n_images: images per split (keys among train/val/testA/testB); default 4000/400/200/200.
        progress: show a tqdm bar.
        spec: generator knobs.
        workers: processes generating scenes; every scene has its own random stream, so the output does
            not depend on it.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    counts = check_split_counts(DEFAULT_N_IMAGES if n_images is None else n_images, SPLITS, "SynRef", "n_images",
                                workers)
    make_scene(seed, SPLITS[0], 0, scene_size, spec)  # argument errors surface here, not in a worker
    img_dir = root / "images"
    ann_dir = root / "synref"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)

    # Image ids are global and sequential in split order, so a job knows its file name up front.
    jobs = []
    for split in SPLITS:
        for index in range(int(counts.get(split, 0))):
            jobs.append((int(seed), split, index, len(jobs) + 1, int(scene_size), spec, str(img_dir)))
    bar = tqdm(total=len(jobs), desc="SynRef", unit="img", disable=not progress)
    images, annotations, refs = [], [], []
    ann_id = ref_id = sent_id = 0
    with ordered_results(_write_scene, jobs, workers, chunksize=32) as results:
        for job, (kind, objects, exprs) in zip(jobs, results):
            _, split, index, image_id, _, _, _ = job
            fname = image_file_name(split, image_id)
            images.append({"id": image_id, "file_name": fname, "height": scene_size, "width": scene_size,
                           "split": split, "kind": kind, "index": index})
            obj_ann_ids = []
            for rec in objects:
                ann_id += 1
                obj_ann_ids.append(ann_id)
                annotations.append({"id": ann_id, "image_id": image_id, **rec})
            for e in exprs:
                ref_id += 1
                sent_id += 1
                refs.append({
                    "ref_id": ref_id, "ann_id": obj_ann_ids[e["target"]], "image_id": image_id,
                    "split": split, "category_id": objects[e["target"]]["category_id"], "file_name": fname,
                    "sent_ids": [sent_id],
                    "sentences": [{"sent": e["sentence"], "raw": e["sentence"],
                                   "tokens": tokenize(e["sentence"]), "sent_id": sent_id}],
                    "kind": e["kind"], "area_ratio": e["area_ratio"],
                    "distractor_ann_ids": [obj_ann_ids[k] for k in e["distractors"]],
                })
            bar.update(1)
    bar.close()

    instances = {
        "info": {
            "description": "SynRef: synthetic referring segmentation (SALMA reproduction kit)",
            "generator_version": GENERATOR_VERSION, "seed": int(seed), "scene_size": int(scene_size),
            "n_images": {s: int(counts.get(s, 0)) for s in SPLITS},
            "spec": _spec_dict(spec),
        },
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated data)"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)],
    }
    # Pickle memoises by object identity, which differs between worker and in-process runs; a JSON
    # round trip gives every value a fresh, canonical object so the bytes depend on the values only.
    refs = json.loads(json.dumps(refs))
    _atomic_write_bytes(ann_dir / "refs(unc).p", pickle.dumps(refs, protocol=PICKLE_PROTOCOL))
    # instances.json last: its presence marks a complete dataset (callers test for it).
    _atomic_write_bytes(ann_dir / "instances.json",
                        json.dumps(instances, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return root


def _spec_dict(spec: SynRefSpec) -> dict:
    from dataclasses import asdict

    def listify(v):
        if isinstance(v, tuple):
            return [listify(x) for x in v]
        return v

    # Knobs added after synref-1.0 are written only when switched on, so that synref-1.0 files (and their
    # checksums in data_manifests/) stay byte-identical.
    return {k: listify(v) for k, v in asdict(spec).items() if not (k in _LATER_KNOBS and v == _LATER_KNOBS[k])}


# knob -> its off value
_LATER_KNOBS = {"distractor_decoy_prob": 0.0, "distractor_relation_prob": 0.0, "lookalike_expression_prob": 0.0}
