"""The result store: figures, tables (CSV + Markdown) and result JSON under figures/ (``save_figure``,
``save_table``, ``save_json``, ``load_json``). Every JSON carries a ``provenance`` block (date, commit,
machine, device, preset, command) from which RESULTS.md is generated.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from salma.bench.timing import cpu_name
from salma.io import atomic_write_json, atomic_write_text, json_safe
from salma.paths import figures_dir
from salma.train.identity import git_commit, git_dirty

# the command that made a result: the notebook runner sets it for the kernels it starts
COMMAND_ENV = "SALMA_COMMAND"

DPI = 120


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a plain file stem such as '00_environment'")
    return name


def save_figure(fig, name: str, formats: Sequence[str] = ("png",)) -> Path:
    """Write ``fig`` to ``figures/<name>.<fmt>`` for each format (dpi 120, tight bbox) and return the
    path of the first. The figure is neither closed nor re-rendered elsewhere, so it still shows inline."""
    _check_name(name)
    if not formats:
        raise ValueError("formats must name at least one file format, e.g. ('png',)")
    paths = [figures_dir() / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return paths[0]


def provenance(name: str, preset: str | None = None) -> dict[str, Any]:
    """Where a result came from: date (UTC, ISO 8601), git commit and whether tracked files differed from it,
    the machine and device, the preset, and the command (``$SALMA_COMMAND``, which the notebook runner sets;
    otherwise the notebook run by hand). RESULTS.md prints it beside every section."""
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()})",
        "device": device,
        "preset": preset,
        "command": os.environ.get(COMMAND_ENV) or f"{name}.ipynb run by hand",
        "notebook": name,
    }


def save_json(obj: Any, name: str) -> Path:
    """Write ``obj`` (dicts/lists of numbers, strings, numpy or torch values) to ``figures/<name>.json``
    atomically; the notebook tests and ``python -m salma results`` read these files. Non-finite floats become
    null. A dict gets a ``provenance`` key (see :func:`provenance`; its ``preset`` from ``obj["preset"]``)."""
    data = json_safe(obj)  # numpy / torch values, paths and tuples appear in results; NaN becomes null
    if isinstance(data, dict):
        data["provenance"] = provenance(name, data.get("preset"))
    return atomic_write_json(figures_dir() / f"{_check_name(name)}.json", data, indent=2, sort_keys=True)


def load_json(name: str) -> Any:
    """Read back ``figures/<name>.json`` written by :func:`save_json`."""
    return json.loads((figures_dir() / f"{_check_name(name)}.json").read_text())


def _markdown(df) -> str:
    # pandas' to_markdown needs the optional 'tabulate' package; a pipe table is all we need.
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(df_or_rows, name: str) -> tuple[Path, Path]:
    """Write a table to ``figures/<name>.csv`` and ``figures/<name>.md``.

    ``df_or_rows`` is a pandas DataFrame or anything ``pandas.DataFrame`` accepts (a list of dicts,
    a dict of columns). The index is written only when it is named (e.g. after ``set_index``).
    """

    _check_name(name)
    df = df_or_rows if isinstance(df_or_rows, pd.DataFrame) else pd.DataFrame(df_or_rows)
    if any(n is not None for n in df.index.names):
        df = df.reset_index()
    out = figures_dir()
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    atomic_write_text(csv_path, df.to_csv(index=False))
    atomic_write_text(md_path, _markdown(df))
    return csv_path, md_path
