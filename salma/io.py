"""File writing that never leaves a half-written file, and file hashes.

Every file the kit writes whole (annotations, manifests, configs, result JSON, logs' CSV) goes through
``atomic_write_bytes``: the data goes to a temporary file in the same folder, which then replaces the
target with ``os.replace``, so a killed process leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then ``os.replace``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """``obj`` as JSON (``json.dumps(obj, **dumps_kwargs)`` plus a final newline), written atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON data: every non-finite float (NaN, inf) replaced by None, numpy / torch values made
    plain Python (``.tolist()``), tuples and sets as lists, keys as str, paths as str and anything else by its
    ``str``, recursively. Strict JSON readers (JavaScript, jq, most non-Python parsers) reject the ``NaN`` /
    ``Infinity`` literals ``json.dumps`` writes by default."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays, torch tensors
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def atomic_write_strict_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """``atomic_write_json`` of ``json_safe(obj)`` with ``allow_nan=False``: strict JSON, NaN and inf as null."""
    return atomic_write_json(path, json_safe(obj), allow_nan=False, **dumps_kwargs)
