"""A run folder's files: checkpoints (safetensors weights + optimizer/RNG state, written atomically) and the
per-step log (``log.jsonl``, ``log.csv``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from salma.checkpoint import load_state_dict, save_state_dict
from salma.model import SalmaModel


def save_checkpoint(run_dir: Path, model: SalmaModel, optimizer, step: int, head: nn.Module | None = None) -> Path:
    """Write ``ckpt-<step>/`` (model.safetensors + state.pt, with the run's auxiliary ``head`` if any) then point
    ``latest`` at it, atomically; older checkpoints are removed only after the new one is complete."""
    target = run_dir / f"ckpt-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".ckpt-"))
    save_state_dict(model.state_dict(), tmp / "model.safetensors")
    state = {"optimizer": optimizer.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
    if head is not None:
        state["head"] = head.state_dict()
    torch.save(state, tmp / "state.pt")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    pointer = run_dir / "latest.tmp"
    pointer.write_text(target.name)
    os.replace(pointer, run_dir / "latest")
    for old in run_dir.glob("ckpt-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(run_dir: Path, model: SalmaModel, optimizer, head: nn.Module | None = None) -> int:
    """Resume from ``latest`` if present (and the run's auxiliary ``head``); returns the step to start from (0 for a
    new run)."""
    pointer = run_dir / "latest"
    if not pointer.is_file():
        return 0
    ckpt = run_dir / pointer.read_text().strip()
    model.load_matching(load_state_dict(ckpt / "model.safetensors"), source=ckpt)
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which and how to recover
        raise ValueError(f"{ckpt / 'state.pt'} is corrupt ({exc}); delete {ckpt} to restart the run") from exc
    if head is not None:
        if "head" not in state:
            raise ValueError(f"{ckpt / 'state.pt'} has no auxiliary head but the run trains one; delete {ckpt} "
                             "to restart the run")
        head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


# ---------------------------------------------------------------------------------------------- logs
def append_log(run_dir: Path, row: dict) -> None:
    path = run_dir / "log.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(row, default=float) + "\n")


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(run_dir: Path, step: int) -> None:
    """Keep only rows up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    rows = [r for r in read_log(run_dir) if r["step"] <= step]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))


def write_log_csv(run_dir: Path) -> Path:
    rows = read_log(run_dir)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    path = Path(run_dir) / "log.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path
