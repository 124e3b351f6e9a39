"""Mask-Biased Attention (MBA): paper Sec. 3.2, Eq. 1-2, Fig. 3 (docs/method.md section 3.2).

The SAM-2 features F_v the decoder will read are the queries; the top-K expression tokens chosen by a
router MLP are the keys and values; the structural prior M (the pre-pass mask logits, Sec. 3.1) decides
where the text may write:

    s_i    = MLP(t_i)                                   router score of text token i
    O_attn = proj(MHA(Q = LN(F_v), K = V = top-K tokens))                              (Eq. 1)
    G      = sigmoid(resize(M) / tau_gate)
    F_v'   = F_v + gamma * w * (O_attn * G)             gamma learnable, init 0; w = warm-up factor (Eq. 2)

Two variants of the paper are options of the same module: ``mode="bias"`` (logit(G) added to the attention
logits instead of gating the output) and ``film=True`` (Residual FiLM on top of the gate, paper Table 3).

Unlike the released SALMA code (docs/method.md section 3.5), the router here receives a gradient (item 3), top-K
routing only ever picks valid tokens and never attends to padding, and the module is what both the
training and the predict path call (item 1, enforced in ``salma.model``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salma.config import FILM_KINDS, MBA_MODES, MBAConfig

# logit(G) = M / tau is clamped to this magnitude before it enters the attention logits: SAM-2 logits can
# reach hundreds, and sigmoid(+-20) is already within 2e-9 of 0 or 1, so nothing is lost while bf16 sums
# keep their precision.
BIAS_CLAMP = 20.0

__all__ = ["BIAS_CLAMP", "MBAOutput", "MaskBiasedAttention", "gates_zeroed", "linear_warmup", "write_ratio"]


@dataclass
class MBAOutput:
    """What :class:`MaskBiasedAttention` returns (B batch, C channels, H x W feature map, N tokens).

    features:       (B, C, H, W) F_v' = F_v + gamma_eff * update (see the module for each mode's update).
    gate:           (B, 1, H, W) G = sigmoid(resize(prior) / tau_gate), in [0, 1].
    router_scores:  (B, N) router scores s_i = MLP(t_i), float32, -inf where ``text_mask`` is False.
    selected:       (B, K) indices of the top-K tokens, best first; -1 marks a pick that does not exist
                    (fewer than K valid tokens). K = cfg.top_k.
    attention:      (B, heads, H*W, K) softmax weights over the picks (K + 1 in bias mode, the last
                    column is the null key), float32; None unless ``return_attention=True``.
    attn_output:    (B, C, H, W) O_attn before gating (the notebooks' step-by-step figure).
    selected_valid: (B, K) bool, True where ``selected`` holds a real token (the attention's key mask).
    """

    features: Tensor
    gate: Tensor
    router_scores: Tensor
    selected: Tensor
    attention: Tensor | None
    attn_output: Tensor
    selected_valid: Tensor


def linear_warmup(step: int, total_steps: int, ratio: float) -> float:
    """Linear warm-up factor in [0, 1]: ``min(1, step / max(1, ratio * total_steps))``; ``ratio == 0`` -> 1.

    Used for gamma (MBAConfig.gamma_warmup_ratio, paper 5%) and for the auxiliary losses
    (LossConfig.aux_warmup_ratio, paper 5%).
    """
    if total_steps < 0 or ratio < 0:
        raise ValueError(f"linear_warmup needs total_steps >= 0 and ratio >= 0; got {total_steps}, {ratio}")
    if ratio == 0:
        return 1.0
    return float(min(1.0, max(0.0, step / max(1.0, ratio * total_steps))))


@contextlib.contextmanager
def gates_zeroed(mba: nn.Module | None) -> Iterator[None]:
    """Within the block, gamma (and FiLM's gamma_film) are 0: the model is its own baseline, with every other
    weight as trained (how much the branch changes the predictions). Restored afterwards; no-op for None."""
    names = [n for n in ("gamma", "gamma_film") if mba is not None and hasattr(mba, n)]
    saved = {n: getattr(mba, n).detach().clone() for n in names}
    try:
        with torch.no_grad():
            for n in names:
                getattr(mba, n).zero_()
        yield
    finally:
        with torch.no_grad():
            for n in names:
                getattr(mba, n).copy_(saved[n])


def write_ratio(before: Tensor, after: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """How much MBA writes into the features: r = ||F_v' - F_v|| / ||F_v|| per sample, averaged over the batch.

    before, after: (B, C, h, w) F_v and F_v'; masks: optional (B, 1, H, W) target masks (resized to h x w by
    area, so a partly covered cell counts by its coverage). Returns (r over the whole map, r inside the
    targets or None), float32 scalars without gradient; samples whose resized mask is empty are left out of
    the second. r is exactly 0 when gamma_eff is 0 (F_v' = F_v)."""
    with torch.no_grad():
        diff, base = (after - before).float(), before.float()
        overall = (diff.flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()
        if masks is None:
            return overall, None
        m = F.interpolate(masks.float(), size=before.shape[-2:], mode="area")
        inside = (diff * m).flatten(1).norm(dim=1), (base * m).flatten(1).norm(dim=1)
        seen = inside[1] > 0
        target = (inside[0][seen] / inside[1][seen]).mean() if bool(seen.any()) else torch.tensor(float("nan"))
        return overall, target


class MaskBiasedAttention(nn.Module):
    """Mask-Biased Attention (paper Eq. 1-2): text -> visual cross-attention written where the prior says.

    Router gradient. The released code used the router scores only to pick indices, so the router never
    learned (docs/method.md section 3.5, item 3). Here each selected token is multiplied by sigmoid(its score)
    before the key and value projections: the score scales the token's key (how strongly it is matched)
    and its value (how much it writes), so the loss reaches the router through every selected token.

    Padding. Only tokens with ``text_mask`` True can be picked. When fewer than K are valid, the missing
    picks are marked -1 in ``selected`` and masked out of the softmax: the module never attends to padding.
    A sample with no valid token is an error (an empty expression), not a silent zero.

    Modes (cfg.mode):

    - ``"gate"`` (paper default): F_v' = F_v + gamma_eff * (O_attn * G).
    - ``"bias"``: logit(G) = clamp(resize(M) / tau, +-BIAS_CLAMP) is added to the attention logits of the
      text keys. With visual queries and text keys a bias that depends only on the query position is the
      same for every key and would cancel in the softmax, so one null key is appended: a learned "sink"
      key (``sink_key``, per head) with a zero value vector whose logit gets no bias. The prior then
      decides how much each position attends to the text versus to nothing, which is what "bias" means
      here. "Zero value" holds in the output space: the output projection's bias is weighted by the
      attention mass on the text, so a position that attends only to the null key gets O_attn = 0.
      F_v' = F_v + gamma_eff * O_attn.
    - ``film=True`` (Residual FiLM, paper Table 3 where it hurts). (scale, shift) come from the mean of the
      selected, router-weighted tokens t. ``film_kind="residual"`` (the paper's and the released code's): a
      separate residual beside the gated attention, from a randomly initialised MLP of t with its own learnable
      gamma_film (init gamma_init, same warm-up): F_v' = F_v + gamma_eff * update + gamma_film_eff *
      (scale(t) * LN(F_v) + shift(t)). ``film_kind="gated"`` (the kit's earlier reading): (scale, shift) =
      Linear(t), zero-initialised, inside the gate; gate mode: F_v' = F_v + gamma_eff * G * (O_attn +
      scale * F_v + shift); bias mode: F_v' = F_v + gamma_eff * (O_attn + G * (scale * F_v + shift)). It equals
      plain MBA until its Linear learns, and with gamma ~ 0 it cannot learn, so it is a named option only.

    gamma is a learnable scalar (cfg.gamma_init, paper 0); gamma_eff = gamma * warmup_scale. With gamma
    at 0 the output equals the input exactly, and gamma still gets a gradient, so training can move it.

    ``sink_key`` exists in every mode so that the state dict does not depend on cfg.mode (which
    ``SalmaConfig.model_dict`` leaves out); in gate mode it is unused and gets no gradient.
    """

    def __init__(self, cfg: MBAConfig, dim: int) -> None:
        super().__init__()
        if cfg.mode not in MBA_MODES:
            raise ValueError(f"mba.mode={cfg.mode!r}; accepted values: {', '.join(MBA_MODES)}")
        if cfg.top_k < 1:
            raise ValueError(f"mba.top_k={cfg.top_k} must be >= 1")
        if cfg.num_heads < 1 or dim % cfg.num_heads:
            raise ValueError(f"dim={dim} is not divisible by mba.num_heads={cfg.num_heads}")
        if cfg.tau_gate <= 0:
            raise ValueError(f"mba.tau_gate={cfg.tau_gate} must be > 0")
        self.cfg = cfg
        self.dim = dim
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.top_k = cfg.top_k

        self.norm = nn.LayerNorm(dim)
        self.router = nn.Sequential(nn.Linear(dim, cfg.router_hidden), nn.GELU(), nn.Linear(cfg.router_hidden, 1))
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.sink_key = nn.Parameter(torch.zeros(cfg.num_heads, self.head_dim))
        if cfg.film_kind not in FILM_KINDS:
            raise ValueError(f"mba.film_kind={cfg.film_kind!r}; accepted values: {', '.join(FILM_KINDS)}")
        self.film: nn.Module | None = None
        if cfg.film and cfg.film_kind == "residual":
            # an MLP of the text, randomly initialised: its modulation is non-zero from step 0, and gamma_film
            # (init gamma_init, warmed up as gamma) decides how much of it is added
            self.film = nn.Sequential(nn.Linear(dim, cfg.router_hidden), nn.GELU(), nn.Linear(cfg.router_hidden, 2 * dim))
            self.film_norm = nn.LayerNorm(dim)
            self.gamma_film = nn.Parameter(torch.tensor(float(cfg.gamma_init)))
        elif cfg.film:
            self.film = nn.Linear(dim, 2 * dim)
            # Zero init: the gated FiLM starts as the identity modulation, i.e. as plain MBA.
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        if cfg.zero_init_output:
            # the branch writes nothing at step 0 whatever gamma is; gamma and the other weights get gradients
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)
        # only when asked for: a Dropout at p=0 would still be a module call in every step's trace
        self.attn_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.gamma = nn.Parameter(torch.tensor(float(cfg.gamma_init)))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.num_heads}, top_k={self.top_k}, mode={self.cfg.mode!r}, "
                f"film={self.cfg.film}, tau_gate={self.cfg.tau_gate}")

    def _check_inputs(self, visual: Tensor, text: Tensor, prior_logits: Tensor,
                      text_mask: Tensor | None, warmup_scale: float) -> Tensor:
        if visual.dim() != 4 or visual.shape[1] != self.dim:
            raise ValueError(f"visual must have shape (B, {self.dim}, H, W); got {tuple(visual.shape)}")
        b = visual.shape[0]
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != self.dim or text.shape[1] < 1:
            raise ValueError(f"text must have shape ({b}, N >= 1, {self.dim}); got {tuple(text.shape)}")
        if prior_logits.dim() != 4 or prior_logits.shape[:2] != (b, 1):
            raise ValueError(f"prior_logits must have shape ({b}, 1, h, w); got {tuple(prior_logits.shape)}")
        if not 0.0 <= float(warmup_scale) <= 1.0:
            raise ValueError(f"warmup_scale={warmup_scale} must lie in [0, 1]")
        n = text.shape[1]
        if text_mask is None:
            return torch.ones(b, n, dtype=torch.bool, device=text.device)
        if text_mask.shape != (b, n):
            raise ValueError(f"text_mask must have shape ({b}, {n}); got {tuple(text_mask.shape)}")
        text_mask = text_mask.to(device=text.device, dtype=torch.bool)
        empty = ~text_mask.any(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"text_mask has no valid token for batch rows {rows}: an empty expression "
                             "cannot be attended to; give every sample at least one token")
        return text_mask

    def route(self, text: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Score the tokens and keep the top K valid ones, router-weighted.

        text: (B, N, C); text_mask: (B, N) bool. Returns (scores (B, N) float32 with -inf at padding,
        selected (B, K) long with -1 for missing picks, pick_valid (B, K) bool,
        weighted tokens (B, K, C) = token * sigmoid(score), zero for missing picks).
        """
        b, n, c = text.shape
        raw = self.router(text).squeeze(-1)  # (B, N)
        scores = raw.float().masked_fill(~text_mask, float("-inf"))
        k_eff = min(self.top_k, n)
        top_vals, top_idx = scores.topk(k_eff, dim=1)
        pick_valid = torch.isfinite(top_vals)
        if k_eff < self.top_k:
            pad = self.top_k - k_eff
            top_idx = torch.cat([top_idx, top_idx.new_zeros(b, pad)], dim=1)
            pick_valid = torch.cat([pick_valid, pick_valid.new_zeros(b, pad)], dim=1)
        tokens = text.gather(1, top_idx.unsqueeze(-1).expand(-1, -1, c))
        # The sigmoid of the raw score (not of the -inf-filled one) is what carries the router's gradient;
        # missing picks get weight 0 and are also masked out of the softmax.
        weight = torch.where(pick_valid, torch.sigmoid(raw.gather(1, top_idx).float()), 0.0)
        # where(), not a product with 0, so that non-finite padding content cannot leak in as NaN.
        weighted = torch.where(pick_valid.unsqueeze(-1), tokens * weight.unsqueeze(-1).to(tokens.dtype), 0.0)
        selected = top_idx.masked_fill(~pick_valid, -1)
        return scores, selected, pick_valid, weighted

    def forward(self, visual: Tensor, text: Tensor, prior_logits: Tensor, text_mask: Tensor | None = None,
                warmup_scale: float = 1.0, return_attention: bool = False) -> MBAOutput:
        """Apply MBA.

        visual: (B, C, H, W) SAM-2 features the decoder will read (C = dim).
        text: (B, N, C) expression tokens projected to dim, N >= 1.
        prior_logits: (B, 1, h, w) raw pre-pass mask logits, any h, w (resized bilinearly to H, W).
        text_mask: (B, N) bool, True = valid token; None means all valid.
        warmup_scale: in [0, 1], the trainer's linear warm-up factor for gamma.
        return_attention: also return the (B, heads, H*W, K[+1]) softmax weights.
        """
        text_mask = self._check_inputs(visual, text, prior_logits, text_mask, warmup_scale)
        b, c, h, w = visual.shape
        heads, hd = self.num_heads, self.head_dim

        prior = prior_logits.float()
        if prior.shape[-2:] != (h, w):
            prior = F.interpolate(prior, size=(h, w), mode="bilinear", align_corners=False)
        prior_scaled = prior / self.cfg.tau_gate  # = logit(G)
        gate = torch.sigmoid(prior_scaled)

        scores, selected, pick_valid, weighted = self.route(text, text_mask)

        x = visual.flatten(2).transpose(1, 2)  # (B, HW, C)
        q = self.q_proj(self.norm(x)).reshape(b, h * w, heads, hd).transpose(1, 2)  # (B, h, HW, d)
        k = self.k_proj(weighted).reshape(b, self.top_k, heads, hd).transpose(1, 2)  # (B, h, K, d)
        v = self.v_proj(weighted).reshape(b, self.top_k, heads, hd).transpose(1, 2)

        scale = 1.0 / math.sqrt(hd)
        # Logits and softmax in float32: under bf16 autocast the masked -inf entries and the prior bias
        # need the range, and the returned weights should sum to 1 to float precision.
        logits = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # (B, h, HW, K)
        logits = logits.masked_fill(~pick_valid[:, None, None, :], float("-inf"))
        if self.cfg.mode == "bias":
            bias = prior_scaled.clamp(-BIAS_CLAMP, BIAS_CLAMP).flatten(2).unsqueeze(-1)  # (B, 1, HW, 1)
            sink = (q.float() * self.sink_key.float()[None, :, None, :]).sum(-1, keepdim=True) * scale
            logits = torch.cat([logits + bias, sink], dim=-1)  # (B, h, HW, K + 1)
        attn = torch.softmax(logits, dim=-1)
        text_attn = self.attn_dropout(attn[..., : self.top_k])
        o = torch.matmul(text_attn.to(v.dtype), v)  # (B, h, HW, d)
        # The null key's value is zero *after* the output projection: the projection's bias is weighted by
        # the attention mass on the text (mean over heads), so a position that attends only to the null
        # key receives nothing. In gate mode that mass is 1 and this is the plain Linear.
        text_mass = text_attn.sum(-1).mean(1).unsqueeze(-1)  # (B, HW, 1)
        o = F.linear(o.transpose(1, 2).reshape(b, h * w, c), self.out_proj.weight)
        o = o + self.out_proj.bias * text_mass
        attn_output = o.transpose(1, 2).reshape(b, c, h, w)

        film_term: Tensor | None = None
        residual_film: Tensor | None = None
        if self.film is not None:
            valid_f = pick_valid.unsqueeze(-1).to(weighted.dtype)
            pooled = (weighted * valid_f).sum(1) / valid_f.sum(1).clamp_min(1.0)  # (B, C)
            film_scale, film_shift = self.film(pooled).chunk(2, dim=-1)
            if self.cfg.film_kind == "residual":
                normed = self.film_norm(x).transpose(1, 2).reshape(b, c, h, w)  # LN over channels, per position
                residual_film = film_scale[..., None, None] * normed + film_shift[..., None, None]
            else:
                film_term = film_scale[..., None, None] * visual + film_shift[..., None, None]

        if self.cfg.mode == "gate":
            update = attn_output if film_term is None else attn_output + film_term
            update = update * gate
        else:
            update = attn_output if film_term is None else attn_output + gate * film_term

        gamma_eff = self.gamma * float(warmup_scale)
        features = visual + gamma_eff * update
        if residual_film is not None:
            features = features + self.gamma_film * float(warmup_scale) * residual_film
        features = features.to(visual.dtype)
        return MBAOutput(
            features=features,
            gate=gate,
            router_scores=scores,
            selected=selected,
            attention=attn if return_attention else None,
            attn_output=attn_output,
            selected_valid=pick_valid,
        )
