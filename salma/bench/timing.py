"""Timing and memory helpers of the benchmarks: stage timers, device synchronisation, spreads (median and
IQR), the machine's description, autocast per device, and a peak-RSS sampler.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import psutil
import torch


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (as Sa2VA and docs/method.md section 7's GPU runs); fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class StageTimer:
    """Wall time per named stage: CUDA events on a GPU (no synchronisation inside the forward), else
    ``time.perf_counter``. ``seconds()`` synchronises once and returns stage -> seconds (summed)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, Any, Any]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self.marks.append((name, start, end))

    def seconds(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.marks:
            dt = start.elapsed_time(end) / 1e3 if self.cuda else end - start
            out[name] = out.get(name, 0.0) + dt
        return out


def _null_stage(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


# ============================================================================================ latency
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def machine_info(device: torch.device) -> dict[str, Any]:
    """The device in words, threads, CPU count and the 1/5/15-minute load averages now."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {"device": str(device), "device_name": name, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in load],
            "torch": torch.__version__, "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (not Linux): fall back to what platform knows
        return __import__("platform").processor() or "cpu"

    return platform.processor() or "cpu"


def spread(values: Sequence[float]) -> dict[str, float]:
    """median, q25, q75, min, max and n of a sample."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def _fmt_spread(s: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
    return (f"{s['median'] * scale:.{digits}f} (IQR {s['q25'] * scale:.{digits}f}-{s['q75'] * scale:.{digits}f}, "
            f"min-max {s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}, n={s['n']})")


# ------------------------------------------------------------------------------------------ long clips
class PeakRSS:
    """Peak resident memory (MiB) of this process while the ``with`` block runs: a thread samples the RSS
    every ``interval`` s (``ru_maxrss`` is a lifetime maximum, useless after a larger earlier step). On CUDA
    the peak allocated GPU memory is read as well. Attributes after exit: before_mb, peak_mb, cuda_peak_mb."""

    def __init__(self, device: torch.device | None = None, interval: float = 0.005):
        self._proc, self._interval, self._device = psutil.Process(), interval, device
        self.before_mb = self.peak_mb = float("nan")
        self.cuda_peak_mb: float | None = None

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
            torch.cuda.reset_peak_memory_stats(self._device)
        self.before_mb = self.peak_mb = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(self._device) / 2**20
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss())
