"""FLOP and parameter counting for paper Table 5 with ``torch.utils.flop_counter`` (matrix products,
convolutions and attention; element-wise work left out), in GMAC and GFLOP = 2 x GMAC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

CONVENTION = ("torch.utils.flop_counter: matrix products, convolutions and attention, element-wise work left "
              "out; GFLOP = 2 x GMAC; 'GMAC w/o attention' leaves out the attention kernels (QK^T and AV), i.e. "
              "linear + conv layers; the paper's 'GFLOPs' column is compared with GMAC")


ATTENTION_OP_WORDS = ("scaled_dot_product", "flash_attention", "efficient_attention", "flex_attention")


# ============================================================================================ counting
def sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one fused attention call, 2*b*h*s_q*s_k*(d_q + d_v) (the counter's own formula), with h the
    *query* heads: with grouped-query attention (Qwen2's LLM) the key/value heads are fewer, which the
    counter's formula for the CUDA kernels rejects, while each query head still does the full work."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    extra: dict[Any, Callable[..., int]] = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_fused_attention_overrideable",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention"):
        op = getattr(aten, name, None)
        if op is not None:
            extra[op] = sdpa_flops
    return extra


@dataclass
class Count:
    """A compute count. flops: as ``torch.utils.flop_counter`` reports them (2 x MAC); by_op: op -> flops;
    fake: counted on fake tensors (shapes only)."""

    flops: int
    by_op: dict[str, int] = field(default_factory=dict)
    fake: bool = False

    @property
    def attention_flops(self) -> int:
        """FLOPs of the fused attention kernels (SDPA / flash / efficient / flex)."""
        return sum(v for k, v in self.by_op.items() if any(w in k for w in ATTENTION_OP_WORDS))

    @property
    def gmac_without_attention(self) -> float:
        """GMAC of everything but the fused attention kernels (linear and conv layers, plain matmuls)."""
        return (self.flops - self.attention_flops) / 2e9

    def __add__(self, other: Count) -> Count:
        ops = dict(self.by_op)
        for k, v in other.by_op.items():
            ops[k] = ops.get(k, 0) + v
        return Count(self.flops + other.flops, ops, self.fake and other.fake)

    @property
    def macs(self) -> float:
        return self.flops / 2

    @property
    def gmac(self) -> float:
        return self.flops / 2e9

    @property
    def gflop(self) -> float:
        return self.flops / 1e9


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` do not require grad inside the block (restored after)."""
    params = {id(p): p for m in modules for p in m.parameters()}
    saved = {k: p.requires_grad for k, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(False)
        yield
    finally:
        for k, p in params.items():
            p.requires_grad_(saved[k])


def count_flops(fn: Callable[[], Any], fake: bool = False, modules: Sequence[torch.nn.Module] = ()) -> Count:
    """Count the FLOPs of ``fn()`` with ``torch.utils.flop_counter.FlopCounterMode`` (plus the CPU SDPA
    kernel). ``fake=True`` runs ``fn`` under a ``FakeTensorMode`` that turns real parameters and inputs
    into fake tensors: same count, no arithmetic (for the large encoders; fails on data-dependent code).
    ``modules``: the modules ``fn`` runs; their parameters are frozen during the count, because a view of
    a trainable parameter (SAM-2's prompt encoder returns some) trips the counter's module tracker."""

    ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
    if fake:
        ctx = FakeTensorMode(allow_non_fake_inputs=True)
    with frozen(*modules), ctx, torch.no_grad(), \
            FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return Count(int(counter.get_total_flops()), by_op, fake)


def count_params(*modules: torch.nn.Module) -> int:
    """Total number of parameters of the given modules (shared parameters counted once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())
