"""A run folder's files: checkpoints (safetensors weights + optimizer/RNG state, written atomically, with their
sha256) and the per-step log (``log.jsonl``, ``log.csv``).

Nothing here loses a step that was saved: a checkpoint is written to a hidden ``.ckpt-*`` folder and renamed
into place, and a failed write (a full disk) removes that folder and says which path and why; partial files
that a killed process left are removed by ``remove_partial_files`` when the run starts again; a log line
torn by a crash is dropped (the steps after the checkpoint are trained and logged again).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from salma.checkpoint import load_state_dict, save_state_dict, verify_checksums, write_checksums
from salma.io import atomic_write_text
from salma.model import SalmaModel

WEIGHTS, STATE = "model.safetensors", "state.pt"


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Remove what an interrupted write leaves in ``run_dir``: ``.ckpt-*`` folders, ``latest.tmp`` and the
    ``*.tmp`` files of atomic writes. Call it only while holding the run's lock. Returns what was removed."""
    removed = [p for p in run_dir.glob(".ckpt-*") if p.is_dir()] + list(run_dir.glob("*.tmp"))
    for p in removed:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return removed


def _write_error(exc: BaseException, path: Path, what: str) -> OSError:
    """An OSError for a failed write of ``what`` to ``path`` that says whether the disk is full and what to do
    (torch.save reports a full disk as a RuntimeError from its zip writer that names no path)."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    cause = "no space left on the device" if full else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return OSError(errno.ENOSPC if full else errno.EIO,
                   f"writing {what} {path} failed ({cause}; its disk has {free}); free space there and "
                   "rerun the same command: the run resumes from its last complete checkpoint")


def save_checkpoint(run_dir: Path, model: SalmaModel, optimizer, step: int, head: nn.Module | None = None) -> Path:
    """Write ``ckpt-<step>/`` (model.safetensors + state.pt, with the run's auxiliary ``head`` if any, and their
    sha256 in checksums.json) then point ``latest`` at it, atomically; older checkpoints are removed only
    after the new one is complete. A failed write leaves the previous checkpoint and no partial folder."""
    target = run_dir / f"ckpt-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".ckpt-"))
    try:
        save_state_dict(model.state_dict(), tmp / WEIGHTS)
        state = {"optimizer": optimizer.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if head is not None:
            state["head"] = head.state_dict()
        torch.save(state, tmp / STATE)
        write_checksums(tmp, [WEIGHTS, STATE])
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        atomic_write_text(run_dir / "latest", target.name)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(exc, target, "the checkpoint") from exc
    for old in run_dir.glob("ckpt-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(run_dir: Path, model: SalmaModel, optimizer, head: nn.Module | None = None) -> int:
    """Resume from ``latest`` if present (and the run's auxiliary ``head``), after checking the checkpoint's
    files against their sha256; returns the step to start from (0 for a new run)."""
    pointer = run_dir / "latest"
    if not pointer.is_file():
        return 0
    ckpt = run_dir / pointer.read_text().strip()
    restart = (f"to train this run again from step 0, delete {pointer} (its checkpoints and log are then "
               "replaced as the run goes)")
    try:
        if not ckpt.is_dir():
            raise FileNotFoundError(f"{pointer} points at {ckpt}, which does not exist")
        verify_checksums(ckpt, [WEIGHTS, STATE])
        weights = load_state_dict(ckpt / WEIGHTS)
        state = torch.load(ckpt / STATE, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError) as exc:  # torn, foreign or missing: say how to recover
        raise ValueError(f"cannot resume {run_dir} from {ckpt.name}: {' '.join(str(exc).split())}; {restart}") from exc
    model.load_matching(weights, source=ckpt)
    if head is not None:
        if "head" not in state:
            raise ValueError(f"{ckpt / STATE} has no auxiliary head but the run trains one; {restart}")
        head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


# ---------------------------------------------------------------------------------------------- logs
def append_log(run_dir: Path, row: dict) -> None:
    """Append one step's row to ``log.jsonl``."""
    path = run_dir / "log.jsonl"
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
    except OSError as exc:
        raise _write_error(exc, path, "the log") from exc


def read_log(run_dir: Path) -> list[dict]:
    """The rows of ``log.jsonl``. A torn last line (a crash or a full disk in mid-write) is dropped with a
    warning; a bad line anywhere else raises ValueError naming the file and the line."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    lines = [(k, line) for k, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    rows = []
    for pos, (k, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if pos == len(lines) - 1:
                warnings.warn(f"{path}: line {k} is torn (an interrupted write) and is ignored", stacklevel=2)
                break
            raise ValueError(f"{path}: line {k} is not JSON ({exc}); the log is damaged in the middle: restore "
                             "it or delete the run folder") from exc
    return rows


def truncate_log(run_dir: Path, step: int) -> None:
    """Keep only rows up to ``step`` (a resumed run rewrites what came after its checkpoint), atomically."""
    rows = [r for r in read_log(run_dir) if r["step"] <= step]
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r, default=float) + "\n" for r in rows))


def write_log_csv(run_dir: Path) -> Path:
    """``log.csv``: the log's rows with every column any row has (atomically)."""
    rows = read_log(run_dir)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(Path(run_dir) / "log.csv", buffer.getvalue())
