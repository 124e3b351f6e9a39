"""The values each notebook parameter accepts, checked before any notebook runs.

A bad ``-p NAME VALUE`` (or a bad line in ``ci_parameters.yml``) would otherwise fail minutes later, deep in a
cell, with an error about something else. Every parameter a notebook's ``parameters`` cell defines must have
a rule here (the notebook lint says so when one is missing), and the notebooks' own defaults must pass them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from salma.config import PRESET_NAMES
from salma.device import DEVICE_CHOICES
from salma.train.recipes import VARIANTS
from salma.train.study import STUDY

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_positive_int(v: Any) -> bool:
    return _int(v) and v >= 1


def is_non_negative_int(v: Any) -> bool:
    return _int(v) and v >= 0


def is_positive_number(v: Any) -> bool:
    return _number(v) and v > 0


def is_non_negative_number(v: Any) -> bool:
    return _number(v) and v >= 0


def list_of(check: Callable[[Any], bool], empty: bool = False, unique: bool = False) -> Callable[[Any], bool]:
    """A checker for a list whose every item passes ``check`` (non-empty unless ``empty``; no repeats if
    ``unique``)."""
    def ok(v: Any) -> bool:
        return (isinstance(v, list) and (empty or bool(v)) and all(check(x) for x in v)
                and (not unique or len(set(map(repr, v))) == len(v)))
    return ok


def one_of(choices) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


# parameter -> (check, the accepted values in words)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "PRESET": (one_of(PRESET_NAMES), f"one of {', '.join(PRESET_NAMES)}"),
    "DEVICE": (lambda v: isinstance(v, str) and bool(DEVICE.match(v)), DEVICE_CHOICES),
    "SEED": (is_non_negative_int, "an integer >= 0"),
    "SEEDS": (list_of(is_non_negative_int, unique=True), "a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]"),
    "STEPS": (lambda v: v is None or is_positive_int(v), "null (the preset's length) or an integer >= 1"),
    "N_EVAL": (is_positive_int, "an integer >= 1"),
    "N_SHOW": (is_positive_int, "an integer >= 1"),
    "N_CASES": (is_positive_int, "an integer >= 1"),
    "EXAMPLE": (is_non_negative_int, "an integer >= 0 (an index)"),
    "EXTRA_VARIANTS": (list_of(one_of(VARIANTS), empty=True, unique=True),
                       f"a list of distinct variant names from {', '.join(VARIANTS)}"),
    "VARIANTS": (list_of(one_of(VARIANTS), unique=True),
                 f"a non-empty list of distinct variant names from {', '.join(VARIANTS)}"),
    "STUDY": (list_of(one_of(STUDY), unique=True),
              f"a non-empty list of distinct study configurations from {', '.join(STUDY)}"),
    "SIZE": (lambda v: _int(v) and v >= 16, "an integer >= 16 (pixels)"),
    "RADIUS": (is_positive_number, "a number > 0 (pixels)"),
    "SHIFTS": (list_of(is_non_negative_int), "a non-empty list of integers >= 0 (pixels)"),
    "BLURS": (list_of(is_non_negative_number), "a non-empty list of numbers >= 0"),
    "NOISES": (list_of(is_positive_number), "a non-empty list of numbers > 0"),
    "TEMPERATURES": (list_of(is_positive_number), "a non-empty list of numbers > 0"),
    "BATCH": (is_positive_int, "an integer >= 1"),
    "REPS": (is_positive_int, "an integer >= 1"),
    "MICRO_REPS": (is_positive_int, "an integer >= 1"),
    "WARMUP": (is_non_negative_int, "an integer >= 0"),
    "EXPRESSIONS": (is_positive_int, "an integer >= 1"),
    "FRAMES": (is_positive_int, "an integer >= 1"),
    "BENCH_FRAMES": (is_positive_int, "an integer >= 1"),
    "BENCH_REPS": (is_positive_int, "an integer >= 1"),
    "LONG_FRAMES": (is_positive_int, "an integer >= 1"),
}


def parameter_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not accepted for ``name`` (None when it is)."""
    if name not in RULES:
        return f"{name} has no rule in salma/cli/parameters.py RULES (add one: what values it accepts)"
    check, accepted = RULES[name]
    if check(value):
        return None
    return f"{name}={value!r} is not accepted; {name} takes {accepted}"


def check_parameters(values: dict[str, Any], source: str) -> None:
    """Raise ValueError listing every rejected value of ``values`` (``source`` says where they came from)."""
    problems = [p for name, value in values.items() if (p := parameter_problem(name, value))]
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
