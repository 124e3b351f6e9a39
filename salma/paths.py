"""Where the kit's files live: the one place that resolves the repository root and the folders under it.

Everything the kit writes or reads by default sits under the repository that holds the package (figures/,
runs/, data/, foundation/, data_manifests/), whatever the working directory (notebooks run in
``notebooks/``). Two environment variables move the outputs elsewhere: ``SALMA_FIGURES_DIR`` (figures,
tables and result JSON) and ``SALMA_RUNS_DIR`` (the run cache); the tests point both at temporary folders.
"""

from __future__ import annotations

import os
from pathlib import Path

FIGURES_ENV = "SALMA_FIGURES_DIR"
RUNS_ENV = "SALMA_RUNS_DIR"

# The checkout (or source tree) that holds this package: salma/paths.py -> salma/ -> the repository.
REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The repository root: the folder above the ``salma`` package (holds pyproject.toml, notebooks/, ...)."""
    return REPO_ROOT


def figures_dir() -> Path:
    """Where figures, tables and result JSON go: ``$SALMA_FIGURES_DIR`` if set, else ``<repo>/figures``
    (created if missing)."""
    out = Path(os.environ.get(FIGURES_ENV) or REPO_ROOT / "figures")
    out.mkdir(parents=True, exist_ok=True)
    return out


def runs_root() -> Path:
    """Where runs are cached: ``$SALMA_RUNS_DIR`` if set, else ``<repo>/runs`` (git-ignored)."""
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs")


def data_root() -> Path:
    """Where generated datasets go by default: ``<repo>/data`` (git-ignored)."""
    return REPO_ROOT / "data"


def foundation_root() -> Path:
    """The folder of the shipped foundations, one sub-folder per preset."""
    return REPO_ROOT / "foundation"


def foundation_dir(preset: str) -> Path:
    """The foundation of ``preset`` (``foundation/<preset>``; it may not exist yet)."""
    return foundation_root() / preset


def manifests_dir() -> Path:
    """The tracked dataset and checkpoint manifests (``data_manifests/``)."""
    return REPO_ROOT / "data_manifests"


def notebooks_dir() -> Path:
    """The numbered notebooks (``notebooks/``)."""
    return REPO_ROOT / "notebooks"
