"""Checkpoint files: safetensors written atomically, read with clear errors (docs/design.md section "Conventions").

A checkpoint is never half-written: we write to a temporary file in the same directory and ``os.replace``
it, so a killed run leaves the previous checkpoint intact. Tied weights (InternVL's Qwen2 ties the LM head
to the token embeddings) are stored once; ``load_state_dict`` restores the alias names.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ALIASES_KEY = "salma_aliases"


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
