"""What the run log records about the MBA branch each step (docs/method.md section 11): is it opening?

- ``dgamma``: dL/dgamma of the step (before clipping); ``dgamma_sign_agreement``: |mean sign| of dL/dgamma
  over the last ``SIGN_WINDOW`` steps, 1 when they all agree (gamma is pushed one way) and near 0 when
  gamma random-walks;
- ``grad_<part>``: the gradient norm of each MBA sub-module (router, q/k/v and output projections), which is
  proportional to gamma: at gamma ~ 0 they are below Adam's eps and those weights barely move;
- ``mba_write`` / ``mba_write_target``: r = ||F_v' - F_v|| / ||F_v||, over the whole map and inside the
  target masks (``salma.mba.write_ratio``), logged by ``salma.train.loop.step_losses``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

SIGN_WINDOW = 20
MBA_PARTS = ("router", "q_proj", "k_proj", "v_proj", "out_proj")


def mba_gradients(mba: nn.Module) -> dict[str, float]:
    """{"dgamma": dL/dgamma, "grad_<part>": gradient norm of each of ``MBA_PARTS``}, read after backward and
    before clipping (0.0 where a gradient is absent)."""
    grad = mba.gamma.grad
    row = {"dgamma": float(grad) if grad is not None else 0.0}
    for part in MBA_PARTS:
        grads = [p.grad.detach().float() for p in getattr(mba, part).parameters() if p.grad is not None]
        row[f"grad_{part}"] = math.sqrt(sum(float((g * g).sum()) for g in grads))
    return row


def sign_agreement(values: Sequence[float]) -> float:
    """|mean of sign(v)| over ``values``: 1 when every value has the same sign, about 0 for a random walk
    (zeros count as no vote). NaN for no values."""
    if not values:
        return float("nan")
    return abs(sum((v > 0) - (v < 0) for v in values)) / len(values)
