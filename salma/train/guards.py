"""Guards of a training run: a non-finite loss stops it before the step is applied (``check_finite``), and
Ctrl-C lets the current step finish so that a checkpoint can be saved (``StopRequest``).
"""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path

from salma.train.identity import RunSpec


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient: the run stops before the step is applied, and is not cached."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: a checkpoint of the last whole step was saved; the same call resumes from it."""


def check_finite(spec: RunSpec, run_dir: Path, step: int, losses: dict[str, float], grad_norm: float,
                 scaled: bool = False) -> None:
    """Raise ``TrainingDiverged`` when the total loss or the gradient norm is not finite, before the step is
    applied (``losses`` may hold measurements besides the losses, such as MBA's write ratio, which may be
    undefined without making the step bad). ``scaled``: fp16 loss scaling is on, and its skipped steps (an
    infinite gradient) are expected."""
    if math.isfinite(losses["total"]) and (math.isfinite(grad_norm) or scaled):
        return
    bad = {k: v for k, v in losses.items() if not math.isfinite(v) and not k.startswith("mba_")}
    what = ", ".join(f"{k} loss {v}" for k, v in bad.items()) or f"gradient norm {grad_norm}"
    source = (f"the initial weights ({spec.init_from}) may be corrupt" if spec.init_from and step < 5
              else "the learning rate may be too high for this preset")
    raise TrainingDiverged(f"{spec.name}: {what} at step {step + 1}; the run stops unfinished (nothing cached, the "
                           f"last checkpoint in {run_dir} is kept); {source}")


class StopRequest:
    """While active, the first Ctrl-C (SIGINT) only sets ``requested``: the loop finishes its step, saves a
    checkpoint and stops. A second Ctrl-C interrupts at once. Inactive off the main thread (signals go
    there only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.release()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def release(self) -> None:
        """Give Ctrl-C back its usual effect."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
