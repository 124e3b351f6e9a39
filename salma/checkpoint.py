"""Checkpoint files: safetensors written atomically, read with clear errors (docs/design.md section "Conventions").

A checkpoint is never half-written: we write to a temporary file in the same directory and ``os.replace``
it, so a killed run leaves the previous checkpoint intact. Tied weights (InternVL's Qwen2 ties the LM head
to the token embeddings) are stored once; ``load_state_dict`` restores the alias names.

A folder of weights records their sha256 (``checksums.json``, or the ``sha256`` block of a foundation's
``manifest.json``) and ``verify_checksums`` compares before anything is loaded: a file with intact headers
but overwritten tensor bytes loads without complaint and gives a model that predicts nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from salma.io import atomic_write_json, sha256_file

ALIASES_KEY = "salma_aliases"
CHECKSUMS_FILE = "checksums.json"
MANIFEST_FILE = "manifest.json"  # a foundation's manifest; its "sha256" block lists the weights' hashes


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike, dtype: torch.dtype | None = None,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write ``state`` to ``path`` (safetensors) atomically; floating tensors cast to ``dtype`` if given."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        t = tensor.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        unique[name] = t.contiguous().clone()
    meta = dict(metadata or {})
    meta[ALIASES_KEY] = json.dumps(aliases)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(unique, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors checkpoint written by ``save_state_dict``.

    Raises FileNotFoundError for a missing file and ValueError naming the file for a corrupt or truncated one.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers / truncation
        raise ValueError(f"checkpoint file {path} is corrupt or truncated ({exc}); delete it and re-create it") from exc
    for alias, name in json.loads(meta.get(ALIASES_KEY, "{}")).items():
        state[alias] = state[name]
    return state


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header (config hash, model shape, ...)."""

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def write_checksums(directory: str | os.PathLike, names: list[str]) -> Path:
    """Record the sha256 of ``directory/<name>`` for each name in ``directory/checksums.json`` (atomically)."""
    directory = Path(directory)
    return atomic_write_json(directory / CHECKSUMS_FILE, {n: sha256_file(directory / n) for n in names}, indent=1)


def recorded_checksums(directory: str | os.PathLike) -> dict[str, tuple[str, Path]]:
    """{file name: (expected sha256, the file that records it)} from ``checksums.json`` and a manifest's
    ``sha256`` block; empty when the folder records none (folders written before checksums were kept)."""
    directory = Path(directory)
    out: dict[str, tuple[str, Path]] = {}
    for record in (directory / MANIFEST_FILE, directory / CHECKSUMS_FILE):
        if not record.is_file():
            continue
        try:
            data = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{record} is not valid JSON ({exc}); it records the checksums of the weights beside "
                             "it: restore it from where the folder came from") from exc
        table = data.get("sha256", {}) if record.name == MANIFEST_FILE and isinstance(data, dict) else data
        if not isinstance(table, dict):
            raise ValueError(f"{record}: the checksums are not a JSON object of file name -> sha256")
        out.update({str(name): (str(sha), record) for name, sha in table.items()})
    return out


def verify_checksums(directory: str | os.PathLike, names: list[str] | None = None) -> None:
    """Compare each recorded file (only ``names`` if given) with its recorded sha256.

    Raises ValueError naming the file, the record and the expected sha256 when they differ, and
    FileNotFoundError when a recorded file is missing."""
    directory = Path(directory)
    for name, (expected, record) in recorded_checksums(directory).items():
        if names is not None and name not in names:
            continue
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing ({record} records its sha256 {expected})")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{path} is corrupt: its sha256 is {actual} but {record} records {expected}; "
                             "restore the file (a shipped foundation: `git checkout -- <folder>`) or re-create it")
