"""Statistics over seeds and the computed verdicts: mean +- std, paired comparisons with a two-standard-error
rule, sign tests, the verdicts against floors and random priors, and the comparisons each notebook makes
(which variants it runs, which pairs it compares).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from salma.data.refer import AREA_BINS
from salma.report import paper

# the subsets of the cumulative target-area bins (<1%, <2%, <5%) and "all", in Table 4's order
BIN_NAMES: tuple[str, ...] = tuple(name for name, _ in AREA_BINS) + ("all",)


# ------------------------------------------------------------------------------------------- statistics
def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with ddof=1, n) of finite values; std is NaN when n < 2 and both are
    NaN when n == 0."""
    v = np.array([x for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)


def format_pm(mean: float, std: float, n: int, digits: int = 1) -> str:
    """"78.2 ± 0.4 (n=3)"; "78.2 (n=1)" without a spread; "-" when there is no value."""
    if n == 0 or not math.isfinite(mean):
        return "-"
    if n < 2 or not math.isfinite(std):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


@dataclass
class Comparison:
    """A difference b - a paired by seed, in points (percent). diffs: per-seed differences; mean, std
    (ddof=1, NaN with one seed), n, se = std / sqrt(n)."""

    name_a: str
    name_b: str
    what: str
    diffs: dict[int, float]
    mean: float
    std: float
    n: int

    @property
    def se(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 and math.isfinite(self.std) else float("nan")

    @property
    def separated(self) -> bool:
        """True when |mean| exceeds two standard errors (needs at least 2 seeds and a non-zero spread)."""
        if self.n < 2 or not math.isfinite(self.se):
            return False
        return abs(self.mean) > 2 * self.se if self.se > 0 else self.mean != 0

    def verdict(self) -> str:
        """One sentence: the measured difference and whether it stands out of the seed-to-seed noise."""
        head = f"{self.name_b} - {self.name_a} on {self.what} = {self.mean:+.2f}"
        if self.n < 2:
            return (f"{head} points with 1 seed: no estimate of the seed-to-seed spread, so this measurement "
                    "cannot tell the difference from noise (run more seeds).")
        spread = f"{head} ± {self.std:.2f} points over {self.n} seeds (paired by seed; standard error {self.se:.2f})"
        if not self.separated:
            return f"{spread}: within noise (|difference| <= 2 standard errors); no effect is supported."
        better = self.name_b if self.mean > 0 else self.name_a
        if abs(self.mean) < NEGLIGIBLE_POINTS:
            # Runs from one foundation share most of their noise, so a tiny difference can clear 2 standard
            # errors; it is reported as consistent but too small to matter, not as one method being better.
            return (f"{spread}: larger than 2 standard errors but below {NEGLIGIBLE_POINTS} point, a consistent "
                    f"difference too small to matter ({better} higher); no practical effect is supported.")
        return f"{spread}: larger than 2 standard errors; {better} is better on this benchmark."


# A difference below this many points (cIoU or J&F, in %) is called negligible whatever its standard error.
NEGLIGIBLE_POINTS = 0.5


def compare(a: Mapping[int, float], b: Mapping[int, float], name_a: str, name_b: str, what: str = "cIoU",
            scale: float = 100.0) -> Comparison:
    """b - a, paired by the seeds both have, multiplied by ``scale`` (fractions -> points). Raises ValueError
    when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"{name_a} and {name_b} share no seed ({sorted(a)} vs {sorted(b)}): nothing to pair")
    diffs = {s: scale * (float(b[s]) - float(a[s])) for s in seeds}
    mean, std, n = mean_std(diffs.values())
    return Comparison(name_a, name_b, what, diffs, mean, std, n)


def seed_values(df: pd.DataFrame, variant: str, subset: str = "all", metric: str = "cIoU") -> dict[int, float]:
    """{seed: value} of one variant and subset from ``run_rows``' table."""
    sel = df[(df["variant"] == variant) & (df["subset"] == subset)]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[metric])}


def per_seed_share(rows: Sequence[dict], model: str, column: str) -> dict[int, float]:
    """{seed: mean of ``column``} over one model's expressions that have a distractor (fractions)."""
    vals: dict[int, list[float]] = {}
    for r in rows:
        if r["model"] == model and math.isfinite(r["chance_distractor"]) and math.isfinite(r[column]):
            vals.setdefault(int(r["seed"]), []).append(float(r[column]))
    return {s: float(np.mean(v)) for s, v in vals.items()}


def sign_test_p(k: int, n: int) -> float:
    """Exact two-sided binomial (sign) test p-value for k successes out of n at p = 0.5 (1.0 when n = 0)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def sign_test_verdict(only_a: int, only_b: int, name_a: str, name_b: str, event: str) -> str:
    """Sentence on discordant samples: ``only_a`` samples where only ``name_a`` shows ``event``, ``only_b``
    where only ``name_b`` does; an exact sign test on the discordant pairs (McNemar's exact form)."""
    n = only_a + only_b
    p = sign_test_p(only_a, n)
    head = f"{event}: {name_a} only on {only_a}, {name_b} only on {only_b} of {n} discordant samples"
    if n == 0:
        return f"{head}: no discordant sample, nothing to compare."
    if p >= 0.05:
        return f"{head} (exact sign test p = {p:.2f}): not significant at 0.05; no difference is supported."
    fewer = name_a if only_a < only_b else name_b
    return f"{head} (exact sign test p = {p:.3f}): {fewer} {event} significantly less often on these samples."


# -------------------------------------------------------------------------------------- short verdicts
def prior_verdict(random_summary: Mapping[str, float], trained_summary: Mapping[str, float]) -> str:
    """What the pre-pass prior does before and after stage-0 training, in one sentence, from
    ``summarise(prior_overlap_rows(...))`` of a random and a trained SAM-2."""
    r, t = random_summary, trained_summary
    lift = t["gate_share_union"] / t["union_ratio"] if t["union_ratio"] > 0 else float("nan")
    better = t["iou_union"] > r["iou_union"]
    return (f"IoU(prior > 0, union of objects): random SAM-2 {100 * r['iou_union']:.1f}%, trained "
            f"{100 * t['iou_union']:.1f}% ({'higher' if better else 'not higher'} after training); the trained "
            f"gate puts {100 * t['gate_share_union']:.1f}% of its mass on objects covering "
            f"{100 * t['union_ratio']:.1f}% of the image ({lift:.2f}x chance) and {100 * t['gate_share_target']:.1f}% "
            f"on the target; IoU with the target alone is {100 * t['iou_target']:.1f}%: the prior is language-free "
            "and marks objects, not the referred one.")


def floor_verdict(values: Mapping[int, float], floor: float, name: str, floor_name: str, what: str = "J&F") -> str:
    """Does a model beat a floor on every seed? ``values``: {seed: fraction}; ``floor``: fraction."""
    vals = [100 * v for v in values.values()]
    mean, std, n = mean_std(vals)
    margin = min(vals) - 100 * floor if vals else float("nan")
    if n == 0:
        return f"{name}: no run to compare with {floor_name}"
    head = f"{name} {what} {format_pm(mean, std, n)} vs {floor_name} {100 * floor:.1f}"
    if margin > 0:
        return f"{head}: above it on every seed (the lowest seed by {margin:.1f} points)"
    if mean > 100 * floor:
        return f"{head}: above it on average but not on every seed (lowest seed {margin:+.1f} points)"
    return f"{head}: does not beat it ({mean - 100 * floor:+.1f} points on average)"


# ------------------------------------------------------------------------------ the notebooks' comparisons
# The runs of the paper's Tables 2 and 3 in the tables' row order (kit variant names; salma.report.paper maps
# them to the paper's rows).
TABLE2_VARIANTS: tuple[str, ...] = tuple(paper.TABLE2_ROWS)
TABLE3_VARIANTS: tuple[str, ...] = tuple(paper.TABLE3_ROWS)

# Notebook 05's paired comparisons (a, b, subset), each b - a: Table 2's steps one at a time, the whole step,
# the whole step on the distractor expressions, and Table 3's FiLM swap (``ablation_comparisons`` adds one
# comparison with salma per extra variant).
ABLATION_STEPS: tuple[tuple[str, str, str], ...] = (
    ("baseline", "mba", "all"), ("mba", "mba_tmc", "all"), ("mba_tmc", "salma", "all"), ("baseline", "salma", "all"),
    ("baseline", "salma", "distractor"), ("salma", "film", "all"))


def extra_variants(variants: Sequence[str]) -> list[str]:
    """The variants that are no row of Table 2 or Table 3 (e.g. "bias", "released"), in their order."""
    return [v for v in variants if v not in TABLE2_VARIANTS + TABLE3_VARIANTS]


def ablation_variants(extra: Sequence[str] = ()) -> list[str]:
    """Notebook 05's runs: Table 2's rows, then Table 3's FiLM, then the ``extra`` variants that are neither."""
    return [*TABLE2_VARIANTS, *(v for v in TABLE3_VARIANTS if v not in TABLE2_VARIANTS), *extra_variants(extra)]


def table2_variants(variants: Sequence[str]) -> list[str]:
    """The rows of notebook 05's Table 2: the paper's Table 2 rows, then the extra variants of ``variants``."""
    return [*TABLE2_VARIANTS, *extra_variants(variants)]


def present_variants(order: Sequence[str], variants: Sequence[str]) -> list[str]:
    """The variants of ``order`` (a table's rows, e.g. ``TABLE2_VARIANTS``) that were run, in ``order``'s order."""
    return [v for v in order if v in variants]


def ablation_comparisons(df: pd.DataFrame, variants: Sequence[str]) -> list[Comparison]:
    """Notebook 05's comparisons, paired by seed on SynRef val cIoU: the ``ABLATION_STEPS`` in order, then
    salma -> each extra variant of ``variants`` (``extra_variants``). ``df``: ``run_rows``' table."""
    steps = [*ABLATION_STEPS, *(("salma", v, "all") for v in extra_variants(variants))]
    return [compare(seed_values(df, a, k), seed_values(df, b, k), a, b, f"SynRef val {k} cIoU") for a, b, k in steps]


def area_bin_comparisons(df: pd.DataFrame, baseline: str = "baseline", model: str = "salma",
                         bins: Sequence[str] = BIN_NAMES) -> dict[str, Comparison]:
    """Notebook 06's comparisons: {area bin: ``model`` - ``baseline`` cIoU paired by seed} over ``bins``."""
    return {b: compare(seed_values(df, baseline, b), seed_values(df, model, b), baseline, model,
                       f"SynRef val cIoU, target area {b}") for b in bins}


def area_bin_verdicts(comparisons: Mapping[str, Comparison], ns: Iterable[int]) -> list[str]:
    """One line per area bin, "<bin> (N=<n>): <verdict>", pairing the bins in order with ``ns`` (Table 4's
    "N (ours)" column)."""
    return [f"{b} (N={n}): {c.verdict()}" for (b, c), n in zip(comparisons.items(), ns)]


def spotlight_comparisons(rows: Sequence[dict], baseline: str = "baseline", model: str = "salma") -> list[Comparison]:
    """Notebook 07's comparisons over the distractor expressions, paired by seed (``per_seed_share``): the
    decoder's attention share on the target, then on the distractor (``model`` - ``baseline``), then the
    model's MBA write share on the target, gated minus gate forced to 1. ``rows``: ``attention_rows`` + seed."""
    out = [compare(per_seed_share(rows, baseline, f"decoder_{r}"), per_seed_share(rows, model, f"decoder_{r}"),
                   baseline, model, f"decoder attention share on the {r} (distractor expressions)")
           for r in ("target", "distractor")]
    out.append(compare(per_seed_share(rows, model, "ungated_target"), per_seed_share(rows, model, "mba_target"),
                       "gate forced to 1", "gated MBA", "SALMA's MBA write share on the target"))
    return out


def finetune_verdict(foundation_val: Sequence[Mapping], ciou: float, seed: int) -> str:
    """Notebook 04's verdict: the fine-tuned run's cIoU (``ciou``, fraction) against the foundation's on the
    "all" subset (``foundation_metrics`` rows), as a one-seed comparison; a fixed sentence without them."""
    if not foundation_val:
        return "no foundation numbers to compare with"
    start = {r["subset"]: r for r in foundation_val}["all"]
    return compare({seed: float(start["cIoU"])}, {seed: ciou}, "foundation", "SALMA fine-tuned").verdict()


def video_floor_verdicts(df: pd.DataFrame, floors: pd.DataFrame, variants: Sequence[str]) -> list[str]:
    """Notebook 10: does each variant's per-frame J&F beat each floor (on the "all" subset) on every seed?
    ``df``: ``video_run_rows``; ``floors``: ``video_floor_rows``. One sentence per (variant, floor)."""
    per_frame = df[df["mode"] == "per_frame"]
    all_floor = {r["floor"]: r["J&F"] for r in floors[floors["subset"] == "all"].to_dict("records")}
    return [floor_verdict(seed_values(per_frame, v, metric="J&F"), value, f"{v} (per_frame)", f"floor '{name}'")
            for v in variants for name, value in all_floor.items()]


def video_comparisons(df: pd.DataFrame, variants: Sequence[str]) -> list[Comparison]:
    """Notebook 10's comparisons of J&F paired by seed: appearance vs motion expressions per variant (per
    frame), baseline -> every other variant and salma -> film when both ran (per frame), then per_frame ->
    released inference per variant. ``df``: ``video_run_rows``' table."""
    per_frame, released = df[df["mode"] == "per_frame"], df[df["mode"] == "released"]
    pairs = [("baseline", v) for v in variants if v != "baseline"]
    pairs += [("salma", "film")] if {"salma", "film"} <= set(variants) else []
    out = [compare(seed_values(per_frame, v, "appearance", "J&F"), seed_values(per_frame, v, "motion", "J&F"),
                   f"{v} appearance", f"{v} motion", "SynRef-Video J&F (per_frame)") for v in variants]
    out += [compare(seed_values(per_frame, a, metric="J&F"), seed_values(per_frame, b, metric="J&F"), a, b,
                    "SynRef-Video J&F (per_frame)") for a, b in pairs]
    out += [compare(seed_values(per_frame, v, metric="J&F"), seed_values(released, v, metric="J&F"),
                    f"{v} per_frame", f"{v} released", "SynRef-Video J&F") for v in variants]
    return out


def video_verdicts(df: pd.DataFrame, floors: pd.DataFrame, variants: Sequence[str]) -> list[str]:
    """Notebook 10's verdicts: the floor verdicts (``video_floor_verdicts``), then those of
    ``video_comparisons``."""
    return video_floor_verdicts(df, floors, variants) + [c.verdict() for c in video_comparisons(df, variants)]
