"""The paper's tables from the kit's runs: rows per run, Tables 2-3 (ablation), Table 4 (target-area bins), per
kind, attention shares, video J&F, log summaries and the foundation's metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from salma.report import paper
from salma.report.measures import MBA_MODES, mass_share
from salma.report.stats import BIN_NAMES, compare, format_pm, mean_std, seed_values
from salma.train.recipes import VARIANTS

KIND_NAMES: tuple[str, ...] = ("attribute", "distractor", "relation")


def run_rows(runs: Mapping[str, Mapping[int, object]]) -> pd.DataFrame:
    """Long table of the runs' val metrics: one row per (variant, seed, subset) with cIoU, gIoU (fractions)
    and N. ``runs`` as returned by ``run_grid``."""

    rows = [{"variant": v, "seed": s, **r} for v, by_seed in runs.items() for s, res in by_seed.items()
            for r in res.metrics["val"]]
    return pd.DataFrame(rows)


VIDEO_KIND_NAMES: tuple[str, ...] = ("appearance", "motion")


def video_run_rows(runs: Mapping[str, Mapping[int, object]]) -> pd.DataFrame:
    """Long table of the video runs' J&F: one row per (variant, seed, mode, subset) with J, F, J&F (fractions)
    and N; ``mode`` is ``per_frame`` or ``released`` (``salma.video``). ``runs`` as from ``video_run_grid``."""

    rows = [{"variant": v, "seed": s, "mode": mode, **r} for v, by_seed in runs.items() for s, res in by_seed.items()
            for mode, mode_rows in res.metrics["video_val"].items() for r in mode_rows]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- Tables 2 and 3
def ablation_table(df: pd.DataFrame, variants: Sequence[str], table: str = "Table 2",
                   baseline: str = "baseline", metric: str = "cIoU", kinds: Sequence[str] = KIND_NAMES,
                   label: str = "SynRef val cIoU (%)", benchmark: str | None = None) -> pd.DataFrame:
    """One row per variant: ``label`` (``metric`` in %) mean ± std over seeds, the per-seed values, the paired
    difference to ``baseline`` (points; "-" for itself), the per-kind means, and the paper's numbers of ``table``
    ("Table 2" or "Table 3"; only its ``benchmark`` column when given) in columns labelled "paper".
    ``df``: ``run_rows``' (or ``video_run_rows``') table."""

    rows = []
    base = seed_values(df, baseline, metric=metric) if baseline in set(df["variant"]) else {}
    for v in variants:
        vals = seed_values(df, v, metric=metric)
        mean, std, n = mean_std(100 * x for x in vals.values())
        row = {"variant": v, "what": VARIANTS[v][0], "seeds": n, f"ours: {label}": format_pm(mean, std, n),
               "mean": mean, "std": std, "per seed": ", ".join(f"{100 * vals[s]:.1f}" for s in sorted(vals))}
        cmp_ = compare(base, vals, baseline, v) if base and v != baseline else None
        row[f"Δ vs {baseline} (points)"] = format_pm(cmp_.mean, cmp_.std, cmp_.n) if cmp_ else "-"
        for kind in kinds:
            row[f"{kind} (%)"] = mean_std(100 * x for x in seed_values(df, v, kind, metric).values())[0]
        row.update(paper.paper_columns(table, v, benchmark))
        rows.append(row)
    return pd.DataFrame(rows)


def kind_table(df: pd.DataFrame, variants: Sequence[str], metric: str = "cIoU",
               kinds: Sequence[str] = KIND_NAMES) -> pd.DataFrame:
    """Per-kind breakdown: one row per (variant, subset) over "all" and ``kinds``, ``metric`` (%) mean,
    std, n over seeds, and N (expressions per seed)."""

    rows = []
    for v in variants:
        for subset in ("all",) + tuple(kinds):
            sel = df[(df["variant"] == v) & (df["subset"] == subset)]
            mean, std, n = mean_std(100 * sel[metric])
            rows.append({"variant": v, "subset": subset, f"{metric} (%)": format_pm(mean, std, n), "mean": mean,
                         "std": std, "seeds": n, "N": int(sel["N"].iloc[0]) if len(sel) else 0})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- Table 4
def area_bin_table(df: pd.DataFrame, baseline: str = "baseline", model: str = "salma") -> pd.DataFrame:
    """Paper Table 4 on SynRef: cIoU (%) by cumulative GT-area bins (<1%, <2%, <5%, all), mean ± std over
    seeds for ``baseline`` and ``model``, their paired difference, N per bin, and the paper's numbers
    (RefCOCOg val) beside them."""

    rows = []
    for name in BIN_NAMES:
        a, b = seed_values(df, baseline, name), seed_values(df, model, name)
        sel = df[(df["variant"] == baseline) & (df["subset"] == name)]
        ma, sa, na = mean_std(100 * x for x in a.values())
        mb, sb, nb = mean_std(100 * x for x in b.values())
        c = compare(a, b, baseline, model) if a and b else None
        pa, pb = paper.table4_value("baseline", name), paper.table4_value("salma", name)
        rows.append({"area bin": name, "N (ours)": int(sel["N"].iloc[0]) if len(sel) else 0,
                     f"{baseline} (%)": format_pm(ma, sa, na), f"{model} (%)": format_pm(mb, sb, nb),
                     "Δ (points)": format_pm(c.mean, c.std, c.n) if c else "-",
                     "baseline mean": ma, "baseline std": sa, "model mean": mb, "model std": sb,
                     "Δ mean": c.mean if c else float("nan"), "Δ std": c.std if c else float("nan"),
                     "paper N": pa.n, "paper: baseline RefCOCOg val cIoU (%)": pa.value,
                     "paper: SALMA RefCOCOg val cIoU (%)": pb.value, "paper Δ (points)": round(pb.value - pa.value, 1)})
    return pd.DataFrame(rows)


def share_table(maps: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray | None]) -> pd.DataFrame:
    """Rows = maps (label -> (h, w) >= 0), columns = share of each map's mass inside each region (%), and
    the regions' area ratios (%) as the chance row."""

    rows = [{"map": k, **{f"share on {r} (%)": 100 * mass_share(m, reg) if reg is not None else float("nan")
                          for r, reg in regions.items()}} for k, m in maps.items()]
    rows.append({"map": "chance (area ratio)", **{f"share on {r} (%)": 100 * float(np.mean(reg))
                                                  if reg is not None else float("nan") for r, reg in regions.items()}})
    return pd.DataFrame(rows)


def attention_table(rows: Sequence[dict], maps: Sequence[str] = ("decoder", "mba", "ungated")) -> pd.DataFrame:
    """Fig. 5's number: mean share of attention mass inside the target and inside the distractor, per model,
    map and seed over the expressions that have a distractor, then mean ± std over seeds (percent).

    rows: ``attention_rows`` output with a "seed" key added. Returns a DataFrame with one row per (model,
    map): target share, distractor share, their chance levels (the masks' mean area ratios), seeds, N.
    """

    df = pd.DataFrame(rows)
    df = df[df["chance_distractor"].notna()]
    out = []
    for (model, seed_rows) in df.groupby("model", sort=False):
        for m in maps:
            if f"{m}_target" not in seed_rows or seed_rows[f"{m}_target"].isna().all():
                continue
            per = seed_rows.groupby("seed")[[f"{m}_target", f"{m}_distractor"]].mean()
            t, d = mean_std(100 * per[f"{m}_target"]), mean_std(100 * per[f"{m}_distractor"])
            out.append({"model": model, "map": m, "target share (%)": format_pm(*t),
                        "distractor share (%)": format_pm(*d), "target mean": t[0], "target std": t[1],
                        "distractor mean": d[0], "distractor std": d[1],
                        "chance target (%)": 100 * seed_rows["chance_target"].mean(),
                        "chance distractor (%)": 100 * seed_rows["chance_distractor"].mean(),
                        "seeds": t[2], "N per seed": int(len(seed_rows) / max(1, t[2]))})
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ training log
def log_summary(log: Sequence[dict], keys: Sequence[str], frac: float = 0.1) -> list[dict]:
    """For each logged key: its mean over the first and over the last ``frac`` of the steps, and the change.
    (One step's value is noisy; a tenth of the run is not.)"""
    n = max(1, round(frac * len(log)))
    out = []
    for k in keys:
        vals = [float(r[k]) for r in log if k in r and r[k] is not None]
        if vals:
            first, last = float(np.mean(vals[:n])), float(np.mean(vals[-n:]))
            out.append({"quantity": k, "first steps": first, "last steps": last, "change": last - first})
    return out


def foundation_metrics(foundation: str | Path) -> list[dict]:
    """The foundation's stage-1 val rows (cIoU, gIoU fractions, N) from its manifest.json, [] if absent."""

    path = Path(foundation) / "manifest.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("stage1", {}).get("metrics", {}).get("val", [])


def video_jf_table(df: pd.DataFrame, floors: pd.DataFrame, variants: Sequence[str],
                modes: Sequence[str] = ("per_frame", "released")) -> pd.DataFrame:
    """J&F (%) of each variant in each inference mode (mean ± std over seeds, per kind), then the floors as
    extra rows on the same expressions. ``df``: ``video_run_rows``; ``floors``: ``video_floor_rows``."""

    rows = []
    for mode in modes:
        sel = df[df["mode"] == mode]
        for v in variants:
            row = {"model": v, "mode": mode}
            for subset in ("all",) + VIDEO_KIND_NAMES:
                mean, std, n = mean_std(100 * x for x in seed_values(sel, v, subset, "J&F").values())
                row[f"{subset} J&F (%)"] = format_pm(mean, std, n)
                row[f"{subset} mean"] = mean
            rows.append(row)
    for name in dict.fromkeys(floors["floor"]):
        row = {"model": f"floor: {name}", "mode": "-"}
        for subset in ("all",) + VIDEO_KIND_NAMES:
            value = 100 * float(floors[(floors["floor"] == name) & (floors["subset"] == subset)]["J&F"].iloc[0])
            row[f"{subset} J&F (%)"], row[f"{subset} mean"] = f"{value:.1f}", value
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- the notebooks' tables
def prior_overlap_table(summary: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Notebook 01: one row per SAM-2 ({label: ``summarise``d ``prior_overlap_rows``}), every quantity in %."""
    return pd.DataFrame([{"SAM-2": name, **{k: 100 * v for k, v in s.items()}} for name, s in summary.items()])


def mode_table(maps: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray | None],
               gammas: Mapping[str, float], modes: Mapping[str, tuple[str, bool]] = MBA_MODES) -> pd.DataFrame:
    """Notebook 02: ``share_table`` of the MBA write maps plus a "γ (trained)" column, the trained γ of the
    variant each map comes from (``modes``: map label -> (variant, gated), as ``measures.MBA_MODES``; NaN on
    the chance row)."""
    table = share_table(maps, regions)
    table["γ (trained)"] = [gammas[modes[k][0]] for k in maps] + [np.nan]
    return table


def sweep_table(sweeps: Mapping[str, Sequence[dict]], column: str) -> pd.DataFrame:
    """Notebook 03: the rows of several sweeps stacked, each labelled with its name in ``column`` (e.g.
    {"shift": rows, "blur": rows} under "perturbation"); the index restarts with every sweep."""
    return pd.concat([pd.DataFrame(rows).assign(**{column: name}) for name, rows in sweeps.items()])


def val_table(val: Sequence[Mapping], foundation_val: Sequence[Mapping] = ()) -> pd.DataFrame:
    """Notebook 04: per subset (the index) N, the fine-tuned run's cIoU and gIoU (%) and, when the
    foundation's rows (``foundation_metrics``) are given, its cIoU (%) as the second column."""
    after = pd.DataFrame(val).set_index("subset")
    table = pd.DataFrame({"N": after["N"], "SALMA cIoU (%)": 100 * after["cIoU"], "SALMA gIoU (%)": 100 * after["gIoU"]})
    if foundation_val:
        table.insert(1, "foundation cIoU (%)", 100 * pd.DataFrame(foundation_val).set_index("subset")["cIoU"])
    return table


def per_seed_table(df: pd.DataFrame, variants: Sequence[str], metric: str = "cIoU") -> pd.DataFrame:
    """Notebook 05: ``metric`` (%) on the "all" subset, one row per variant (in ``variants``' order), one
    column per seed ("seed <s> <metric> (%)"). ``df``: ``run_rows``' table."""
    table = df[df["subset"] == "all"].pivot(index="variant", columns="seed", values=metric).loc[list(variants)] * 100
    table.columns = [f"seed {s} {metric} (%)" for s in table.columns]
    return table


def video_per_seed_table(df: pd.DataFrame, metric: str = "J&F") -> pd.DataFrame:
    """Notebook 10: ``metric`` (%) on the "all" subset, one row per (variant, mode), one column per seed
    ("seed <s> <metric> (%)"). ``df``: ``video_run_rows``' table."""
    table = df[df["subset"] == "all"].pivot_table(index=["variant", "mode"], columns="seed", values=metric) * 100
    table.columns = [f"seed {s} {metric} (%)" for s in table.columns]
    return table


def kind_pivot(kinds: pd.DataFrame, variants: Sequence[str], metric: str = "cIoU") -> pd.DataFrame:
    """Notebook 05: ``kind_table``'s "mean ± std" strings as variant rows (in ``variants``' order) x subset."""
    return kinds.pivot(index="variant", columns="subset", values=f"{metric} (%)").loc[list(variants)]


# the columns of ``area_bin_table`` that notebook 06 shows (ours, then the paper's)
TABLE4_SHOWN: tuple[str, ...] = (
    "area bin", "N (ours)", "baseline (%)", "salma (%)", "Δ (points)", "paper N", "paper: baseline RefCOCOg val cIoU (%)",
    "paper: SALMA RefCOCOg val cIoU (%)", "paper Δ (points)")


def case_count_table(counts: Mapping[str, int]) -> pd.DataFrame:
    """Notebook 08: ``case_counts`` as rows (category, expressions)."""
    return pd.DataFrame([{"category": k, "expressions": n} for k, n in counts.items()])


def case_table(shown: pd.DataFrame) -> pd.DataFrame:
    """Notebook 08: the shown cases (``shown_cases``) rounded to 4 digits, or an empty table with a "category"
    column when there is none."""
    return shown.round(4) if len(shown) else pd.DataFrame(columns=["category"])


def video_kind_counts(dataset, limit: int | None = None) -> pd.Series:
    """Notebook 10: how many of the first ``limit`` expressions of a ``VideoReferDataset`` are of each kind."""
    return pd.Series([s.kind for s in dataset.samples[:limit]]).value_counts().rename("expressions evaluated")


def example_score_table(scores: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Notebook 10: ``video_example``'s scores (fractions) as rows = "<model> (<mode>)", columns J, F, J&F (%)."""
    return pd.DataFrame(scores).T.mul(100)


def drop_mean_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The table without its numeric "... mean" columns (what ``video_jf_table`` keeps for plots)."""
    return table[[c for c in table.columns if not c.endswith("mean")]]
