"""Tests for salma.mba: Mask-Biased Attention (paper Eq. 1-2) and the linear warm-up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from salma.config import MBAConfig
from salma.mba import MaskBiasedAttention, linear_warmup

DIM, HEADS, B, N, H, W = 32, 8, 2, 5, 4, 4


def make(mode: str = "gate", film: bool = False, gamma: float = 0.5, seed: int = 0, **kw) -> MaskBiasedAttention:
    torch.manual_seed(seed)
    cfg = MBAConfig(num_heads=HEADS, router_hidden=16, mode=mode, film=film, gamma_init=gamma, **kw)
    return MaskBiasedAttention(cfg, DIM)


def inputs(seed: int = 1, n: int = N, prior_hw: tuple[int, int] = (H, W)):
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(B, DIM, H, W, generator=g)
    text = torch.randn(B, n, DIM, generator=g)
    prior = torch.randn(B, 1, *prior_hw, generator=g) * 3
    return visual, text, prior


def randomise_film(m: MaskBiasedAttention) -> None:
    # The residual FiLM's MLP is random already (gamma_film decides); the gated FiLM is zero-initialised
    # (starts as plain MBA): give it weights so that its effect is visible.
    if m.cfg.film_kind == "residual":
        return
    with torch.no_grad():
        m.film.weight.normal_(0, 0.2)
        m.film.bias.normal_(0, 0.2)


MODES = [("gate", False), ("bias", False), ("gate", True), ("bias", True)]


@pytest.mark.parametrize("mode,film", MODES)
def test_gamma_zero_is_identity_and_nonzero_changes(mode, film):
    visual, text, prior = inputs()
    m = make(mode, film, gamma=0.0)
    if film:
        randomise_film(m)
    assert torch.equal(m(visual, text, prior).features, visual)
    with torch.no_grad():
        m.gamma.fill_(0.5)
    assert not torch.allclose(m(visual, text, prior).features, visual)
    # warmup_scale = 0 is the identity even with gamma != 0
    assert torch.equal(m(visual, text, prior, warmup_scale=0.0).features, visual)


def test_gate_matches_sigmoid_of_prior():
    visual, text, prior = inputs()
    m = make(tau_gate=2.0)
    out = m(visual, text, prior)
    assert out.gate.shape == (B, 1, H, W)
    assert out.gate.min() >= 0 and out.gate.max() <= 1
    assert torch.equal(out.gate, torch.sigmoid(prior / 2.0))


def test_prior_of_other_size_is_resized():
    visual, text, prior = inputs(prior_hw=(16, 16))
    out = make()(visual, text, prior)
    assert out.gate.shape == (B, 1, H, W)
    assert out.features.shape == visual.shape


def test_gradients_reach_router_gamma_and_projections():
    visual, text, prior = inputs()
    m = make(gamma=0.5)
    m(visual, text, prior).features.square().sum().backward()
    named = {
        "router.0.weight": m.router[0].weight, "router.2.weight": m.router[2].weight,
        "q": m.q_proj.weight, "k": m.k_proj.weight, "v": m.v_proj.weight, "out": m.out_proj.weight,
        "gamma": m.gamma,
    }
    for name, p in named.items():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gamma_at_paper_init_gets_gradient():
    visual, text, prior = inputs()
    m = make(gamma=0.0)
    m(visual, text, prior).features.square().sum().backward()
    assert m.gamma.grad is not None and m.gamma.grad.abs() > 0


def test_bias_mode_gradient_reaches_sink_key():
    visual, text, prior = inputs()
    m = make("bias")
    m(visual, text, prior).features.square().sum().backward()
    assert m.sink_key.grad.abs().sum() > 0
    assert m.router[2].weight.grad.abs().sum() > 0


def test_bias_and_film_differ_from_gate():
    visual, text, prior = inputs()
    gate = make("gate")(visual, text, prior).features
    bias = make("bias")(visual, text, prior).features
    film_m = make("gate", film=True)
    randomise_film(film_m)
    film = film_m(visual, text, prior).features
    gated_m = make("gate", film=True, film_kind="gated")
    randomise_film(gated_m)
    gated = gated_m(visual, text, prior).features
    assert not torch.allclose(gate, bias)
    assert not torch.allclose(gate, film) and not torch.allclose(gate, gated) and not torch.allclose(film, gated)


def test_bias_mode_depends_on_prior():
    visual, text, prior = inputs()
    m = make("bias")
    a = m(visual, text, prior).features
    b = m(visual, text, -prior).features
    assert not torch.allclose(a, b)
    # a strongly negative prior sends the attention to the null key: almost no text is written
    out = m(visual, text, torch.full_like(prior, -100.0), return_attention=True)
    assert out.attention[..., :-1].max() < 1e-6
    assert torch.allclose(out.features, visual, atol=1e-5)


def test_large_prior_opens_and_closes_gate():
    visual, text, prior = inputs()
    m = make("gate")
    hi = m(visual, text, torch.full_like(prior, 1e4)).features
    lo = m(visual, text, torch.full_like(prior, -1e4)).features
    assert not torch.allclose(hi, lo)
    assert torch.equal(lo, visual)


class FirstFeature(nn.Module):
    """A router whose score is the token's first feature (to place a huge score on a padded token)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., :1]


def test_topk_respects_text_mask():
    visual, text, prior = inputs()
    m = make()
    m.router = FirstFeature()
    text = text.clone()
    text[:, :, 0] = torch.arange(N, dtype=torch.float32)  # scores 0..4: tokens 4 then 3 would win
    text[:, 4, 0] = 1e6  # the padded token has a huge score
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[:, 4] = False
    out = m(visual, text, prior, text_mask=mask)
    assert out.selected.tolist() == [[3, 2], [3, 2]]
    assert torch.isinf(out.router_scores[:, 4]).all() and (out.router_scores[:, 4] < 0).all()
    # the padded token's content does not reach the output
    text2 = text.clone()
    text2[:, 4, 1:] = 1e3
    assert torch.equal(m(visual, text2, prior, text_mask=mask).features, out.features)


def test_fewer_valid_tokens_than_k_never_attends_to_padding():
    visual, text, prior = inputs(n=3)
    m = make(top_k=2)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    out = m(visual, text, prior, text_mask=mask, return_attention=True)
    assert out.selected[0].tolist() == [0, -1]
    assert out.selected_valid.tolist()[0] == [True, False]
    assert torch.equal(out.attention[0, ..., 1], torch.zeros_like(out.attention[0, ..., 1]))
    assert torch.allclose(out.attention[0, ..., 0], torch.ones(()))
    # padded tokens' content does not matter
    text2 = text.clone()
    text2[0, 1:] = float("nan")  # garbage padding cannot leak in
    assert torch.equal(m(visual, text2, prior, text_mask=mask).features[0], out.features[0])


@pytest.mark.parametrize("mode", ["gate", "bias"])
def test_single_token_input(mode):
    visual, text, prior = inputs(n=1)
    m = make(mode)
    out = m(visual, text, prior, return_attention=True)
    assert out.selected.tolist() == [[0, -1], [0, -1]]
    assert torch.isfinite(out.features).all()
    assert torch.all(out.attention[..., 1] == 0)


@pytest.mark.parametrize("mode,extra", [("gate", 0), ("bias", 1)])
def test_attention_sums_to_one(mode, extra):
    visual, text, prior = inputs()
    out = make(mode)(visual, text, prior, return_attention=True)
    assert out.attention.shape == (B, HEADS, H * W, 2 + extra)
    assert torch.allclose(out.attention.sum(-1), torch.ones(()), atol=1e-6)
    assert out.attn_output.shape == (B, DIM, H, W)
    assert out.router_scores.shape == (B, N) and out.selected.shape == (B, 2)
    assert make(mode)(visual, text, prior).attention is None


@pytest.mark.parametrize("mode,film", MODES)
def test_bf16_autocast(mode, film):
    visual, text, prior = inputs()
    m = make(mode, film)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(visual, text, prior, return_attention=True)
    assert out.features.dtype == visual.dtype
    assert torch.isfinite(out.features).all()
    assert torch.allclose(out.attention.sum(-1), torch.ones(()), atol=1e-5)
    out.features.sum().backward()
    assert torch.isfinite(m.gamma.grad)


def test_bad_inputs_raise():
    visual, text, prior = inputs()
    m = make()
    with pytest.raises(ValueError, match="visual"):
        m(visual[:, :16], text, prior)
    with pytest.raises(ValueError, match="text"):
        m(visual, text[:1], prior)
    with pytest.raises(ValueError, match="text"):
        m(visual, text[:, :0], prior)
    with pytest.raises(ValueError, match="prior_logits"):
        m(visual, text, prior[:, 0])
    with pytest.raises(ValueError, match="text_mask"):
        m(visual, text, prior, text_mask=torch.ones(B, N + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="no valid token"):
        m(visual, text, prior, text_mask=torch.zeros(B, N, dtype=torch.bool))
    with pytest.raises(ValueError, match="warmup_scale"):
        m(visual, text, prior, warmup_scale=1.5)
    with pytest.raises(ValueError, match="divisible"):
        MaskBiasedAttention(MBAConfig(num_heads=3), DIM)
    with pytest.raises(ValueError, match="mode"):
        MaskBiasedAttention(MBAConfig(num_heads=HEADS, mode="add"), DIM)


def test_state_dict_does_not_depend_on_mode():
    assert make("gate").state_dict().keys() == make("bias").state_dict().keys()


def test_linear_warmup():
    assert linear_warmup(0, 1000, 0.05) == 0.0
    assert linear_warmup(25, 1000, 0.05) == pytest.approx(0.5)
    assert linear_warmup(50, 1000, 0.05) == 1.0
    assert linear_warmup(999, 1000, 0.05) == 1.0
    assert linear_warmup(0, 1000, 0.0) == 1.0
    assert linear_warmup(0, 0, 0.1) == 0.0  # max(1, ...) avoids a division by zero
    with pytest.raises(ValueError):
        linear_warmup(0, 100, -0.1)
