"""The result store: figures, tables (CSV + Markdown) and result JSON under figures/ (``save_figure``,
``save_table``, ``save_json``, ``load_json``). Every JSON carries a ``provenance`` block (date, commit,
machine, device, preset, command) from which RESULTS.md is generated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from salma.paths import figures_dir

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


def _jsonable(obj: Any) -> Any:
    # numpy / torch scalars and arrays, paths and tuples appear in results; JSON has no NaN, so use null.
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def save_json(obj: Any, name: str) -> Path:
    """Write ``obj`` (dicts/lists of numbers, strings, numpy or torch values) to ``figures/<name>.json``;
    the notebook tests read these files. Non-finite floats become null."""
    path = figures_dir() / f"{_check_name(name)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


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
    df.to_csv(csv_path, index=False)
    md_path.write_text(_markdown(df))
    return csv_path, md_path
