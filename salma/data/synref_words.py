"""SynRef's vocabulary and expressions: object attributes (shape, colour, size, shade), the generator's spec,
the descriptions that tell objects apart, and the attribute, distractor and relation expressions.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import numpy as np

# synref-1.1: distractor targets are named by a relation, and their look-alikes are named too
# (distractor_relation_prob, lookalike_expression_prob); synref-1.0 named the targets by size or shade,
# which made the distractor kind the baseline's easiest (docs/foundation.md section "History").
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
    # is named by colour AND shape AND size/shade. Off (0.0 draws nothing, so the default output is
    # unchanged): decoys alone did not make the distractor kind harder (docs/foundation.md section
    # "History"); kept as a knob for that investigation.
    distractor_decoy_prob: float = 0.0
    # Relation-named distractor targets: with this probability a distractor target is named by a spatial,
    # extreme or "with a larger one" relation over its colour/shape description, which the look-alike
    # shares ("the green square to the left of the blue circle"), instead of by its size or shade
    # ("the small green square"), when such a relation exists (else as before). Size and shade words are
    # what a small baseline reads best (`python -m salma diagnose`), so naming by them makes the distractor
    # kind easy; a relation makes the model find the target without the word that rules the salient
    # look-alike out, and it drew an earlier foundation's masks to the look-alike (docs/foundation.md
    # section "History"). On (1.0) from synref-1.1; 0.0 draws nothing and gives synref-1.0's scenes
    # (SYNREF_1_0_SPEC).
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
