"""Figures, tables and result files written by the notebooks (DESIGN.md "Conventions").

Everything lands in the repository's top-level ``figures/`` wherever the notebook runs from:
``$SALMA_FIGURES_DIR`` if set (the tests point it at a temporary folder), else ``<repo root>/figures``
found by walking up from the working directory to the folder that holds ``pyproject.toml`` and
``salma/``, else ``./figures``. Nothing here picks a matplotlib backend: figures show inline in
JupyterLab, and the tests set ``MPLBACKEND=agg`` from outside.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FIGURES_ENV = "SALMA_FIGURES_DIR"
DPI = 120


def repo_root(start: str | os.PathLike | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: cwd) holding ``pyproject.toml`` and ``salma/``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "salma").is_dir():
            return folder
    return None


def figures_dir() -> Path:
    """Where figures, tables and result JSON go (created if missing); see the module docstring."""
    env = os.environ.get(FIGURES_ENV)
    if env:
        out = Path(env)
    else:
        root = repo_root()
        out = root / "figures" if root is not None else Path("figures")
    out.mkdir(parents=True, exist_ok=True)
    return out


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
    import pandas as pd

    _check_name(name)
    df = df_or_rows if isinstance(df_or_rows, pd.DataFrame) else pd.DataFrame(df_or_rows)
    if any(n is not None for n in df.index.names):
        df = df.reset_index()
    out = figures_dir()
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    df.to_csv(csv_path, index=False)
    md_path.write_text(_markdown(df))
    return csv_path, md_path


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def _to_hwc(image) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) image -> (H, W) or (H, W, C) float in [0, 1] for imshow."""
    img = _to_numpy(image).astype(np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.max(initial=0.0) > 1.0 or img.min(initial=0.0) < 0.0:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def show_mask_overlay(ax, image, mask, color: str | Iterable[float] = "tab:red", alpha: float = 0.45,
                      title: str | None = None):
    """Draw ``image`` with ``mask`` overlaid in ``color`` (filled at ``alpha`` plus a contour).

    image: (H, W), (H, W, 3) or (3, H, W), uint8 or float (numpy or torch). mask: (H, W) boolean, or
    probabilities/logits thresholded at 0.5 (probabilities) or 0 (when any value lies outside [0, 1]).
    Returns ``ax``.
    """
    from matplotlib.colors import to_rgb

    img = _to_hwc(image)
    m = _to_numpy(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.dtype != bool:
        m = m > (0.0 if (m.min(initial=0) < 0 or m.max(initial=0) > 1) else 0.5)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image size {img.shape[:2]}")
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    rgba = np.zeros((*m.shape, 4), dtype=np.float32)
    rgba[..., :3] = to_rgb(color) if isinstance(color, str) else tuple(color)[:3]
    rgba[..., 3] = m * alpha
    ax.imshow(rgba)
    if m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=[rgba[0, 0, :3]], linewidths=1.0)
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax
