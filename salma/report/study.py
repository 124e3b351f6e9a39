"""The MBA study's figure and table (notebook 11, docs/method.md section 11): does the branch open, and does
it change the predictions when it does?
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from salma.train.mba_stats import MBA_PARTS
from salma.train.store import read_log
from salma.train.study import ACTS_WRITE, STUDY

# the study table's columns, in order, and how each is shown (percent or plain)
TABLE_COLUMNS = ("configuration", "seed", "steps", "gamma", "r", "r_target", "sign_agreement", "ciou",
                 "ciou_distractor", "ciou_gamma0", "delta_gamma0", "changed_gamma0", "acts")
PERCENT = ("r", "r_target", "ciou", "ciou_distractor", "ciou_gamma0", "delta_gamma0", "changed_gamma0")


def study_configurations() -> pd.DataFrame:
    """The study's configurations: name, what it changes, how it departs from the paper."""
    return pd.DataFrame([{"configuration": c.name, "what": c.label, "departs from the paper": c.departs or "-"}
                         for c in STUDY.values()])


def study_table(rows: Sequence[dict]) -> pd.DataFrame:
    """One row per (configuration, seed): the measurements of ``salma.train.study.study_row``, the fractions in
    percent."""
    table = pd.DataFrame([{k: r[k] for k in TABLE_COLUMNS} for r in rows])
    for column in PERCENT:
        table[column] = 100 * table[column]
    return table.rename(columns={c: pct(c) for c in PERCENT})


def pct(column: str) -> str:
    """The name of a column shown in percent."""
    return f"{column} (%)"


def study_summary(rows: Sequence[dict]) -> pd.DataFrame:
    """Mean and std over seeds per configuration (std is NaN for a single seed)."""
    table = study_table(rows).drop(columns=["seed"])
    numeric = [c for c in table.columns if c not in ("configuration", "acts")]
    grouped = table.groupby("configuration", sort=False)
    out = grouped[numeric].mean()
    out["seeds"] = grouped.size()
    for column in (pct("ciou"), pct("delta_gamma0")):
        out[column.replace(" (%)", " std (%)")] = grouped[column].std()
    out["acts"] = grouped["acts"].all()
    return out.reset_index()


def _smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_mba_dynamics(logs: dict[str, Sequence[dict]]) -> Any:
    """Per configuration, against the step: gamma; |dL/dgamma|; the sign agreement of dL/dgamma over 20 steps;
    the MBA sub-modules' summed gradient norm; r overall and inside the targets (log scales where the values
    span decades; 10-step running means for the noisy ones)."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    panels = [("gamma", "gamma", False), ("|dL/dgamma|", "dgamma", True),
              ("sign agreement of dL/dgamma (20 steps)", "dgamma_sign_agreement", False),
              ("gradient norm of router + q/k/v/out", "grad_mba", True),
              ("r = ||F_v' - F_v|| / ||F_v||", "mba_write", True), ("r inside the targets", "mba_write_target", True)]
    for (title, key, log_scale), ax in zip(panels, axes.flat):
        for name, log in logs.items():
            rows = [r for r in log if "gamma" in r]
            if key == "grad_mba":
                values = [math.sqrt(sum(r.get(f"grad_{p}", 0.0) ** 2 for p in MBA_PARTS)) for r in rows]
            else:
                values = [abs(r[key]) if key == "dgamma" else r[key] for r in rows if key in r]
            values = np.asarray([v if v is not None and math.isfinite(v) else np.nan for v in values], float)
            if not len(values):
                continue
            smooth = key in ("dgamma", "grad_mba", "mba_write", "mba_write_target")
            shown = _smooth(values) if smooth else values
            ax.plot(np.arange(len(values) - len(shown) + 1, len(values) + 1), shown, label=name, lw=1)
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def study_logs(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """{configuration: its first seed's run log}, for ``plot_mba_dynamics``."""
    logs: dict[str, list[dict]] = {}
    for r in rows:
        if r["configuration"] not in logs:
            logs[r["configuration"]] = read_log(Path(r["run_dir"]))
    return logs


def study_verdicts(summary: pd.DataFrame) -> list[str]:
    """One computed sentence per configuration: does MBA act (r inside the targets >= 1% and predictions
    that change with gamma zeroed), and what zeroing gamma costs or gains in val cIoU."""
    out = []
    for r in summary.to_dict("records"):
        state = "acts" if r["acts"] else "does not act"
        out.append(f"{r['configuration']}: MBA {state} (final gamma {r['gamma']:.2g}, r inside the targets "
                   f"{r[pct('r_target')]:.2f}%, {r[pct('changed_gamma0')]:.1f}% of predictions change with gamma "
                   f"zeroed); val cIoU {r[pct('ciou')]:.1f}%, {r[pct('delta_gamma0')]:+.2f} points against gamma "
                   "zeroed")
    engaged = [r for r in summary.to_dict("records") if r["acts"]]
    if engaged:
        best = max(engaged, key=lambda r: r[pct("ciou")])
        out.append(f"engaged candidate: {best['configuration']} (the configuration where MBA acts with the "
                   "highest val cIoU)")
    else:
        out.append("no configuration of this study makes MBA act at this budget")
    return out


def study_results(preset: str, seeds: Sequence[int], rows: Sequence[dict], summary: pd.DataFrame) -> dict:
    """Notebook 11's result JSON: every run's row, the per-configuration summary and the verdicts."""
    return {"preset": preset, "seeds": list(seeds), "acts_rule": f"r inside the targets >= {ACTS_WRITE:.0%} and "
            "predictions that change with gamma zeroed", "rows": [dict(r) for r in rows],
            "summary": summary.to_dict("records"), "verdicts": study_verdicts(summary)}
