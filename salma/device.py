"""The torch device a run uses: ``"auto"`` picks CUDA when there is a GPU, else the CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N (cuda only on a machine with a GPU)"


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> cuda if available else cpu; otherwise the named device (checked to exist)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"DEVICE={device!r} is not a device; accepted values: {DEVICE_CHOICES}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={device!r} but CUDA is not available here; accepted values: {DEVICE_CHOICES}")
    return dev
