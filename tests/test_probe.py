"""Tests for salma.eval.probe: the instrumented forward of the notebooks is the model's own inference path, and
its attention maps and MBA updates are what they claim to be. Tiny preset, random weights, fixed seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from salma.config import get_preset
from salma.eval import probe
from salma.mllm import build_synthetic_tokenizer
from salma.model import SalmaModel

WORDS = ["the", "red", "green", "blue", "circle", "square", "small", "large", "left", "of"]
EXPRESSIONS = ["the red square", "the small blue circle left of the large green square"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_synthetic_tokenizer(WORDS)


def make(tokenizer, gamma: float = 0.5, enabled: bool = True, **mba) -> SalmaModel:
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, mba=dataclasses.replace(cfg.mba, enabled=enabled, **mba))
    model = SalmaModel(cfg, tokenizer=tokenizer)
    if model.mba is not None:
        with torch.no_grad():
            model.mba.gamma.fill_(gamma)  # non-zero so that MBA changes the features
    return model


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def salma(tokenizer):
    return make(tokenizer)


def test_trace_is_the_predict_path(salma):
    trace = probe.trace_forward(salma, image(), EXPRESSIONS)
    preds = salma.predict_image(image(), EXPRESSIONS)
    for b, p in enumerate(preds):
        assert np.array_equal(trace.masks[b], p.mask)
        # float32 noise only (the two paths batch the pre-pass differently): priors here are ~0.1
        assert np.allclose(trace.prior[b, 0].numpy(), p.prior, rtol=1e-5, atol=1e-6)
    assert trace.tokens == [e.split() for e in EXPRESSIONS]
    assert trace.mba.attention is not None and trace.text.shape[:2] == trace.text_mask.shape


def test_decoder_attention_is_a_distribution_over_positions(salma):
    trace = probe.trace_forward(salma, image(), EXPRESSIONS)
    b, heads, tokens, hw = trace.decoder_attention.shape
    h, w = trace.feature_size
    assert (b, hw) == (2, h * w) and tokens >= 3
    assert torch.allclose(trace.decoder_attention.sum(-1), torch.ones(b, heads, tokens), atol=1e-5)
    maps = probe.language_attention_map(trace)
    assert maps.shape == (2, h, w) and np.allclose(maps.sum((1, 2)), 1.0, atol=1e-5)
    # the hook is removed after the trace
    layer = salma.sam.model.sam_mask_decoder.transformer.final_attn_token_to_image
    assert not layer._forward_pre_hooks


def test_language_token_is_the_last_decoder_token(salma):
    # The decoder's tokens are its output tokens, then the sparse prompt: with language there is exactly one
    # more token than without, and it is the last one.
    trace = probe.trace_forward(salma, image(), EXPRESSIONS[:1])
    with probe.capture_decoder_attention(salma) as calls:
        salma.sam.decode(trace.features, trace.high_res)
    assert trace.decoder_attention.shape[2] == calls[-1].shape[2] + 1
    with probe.capture_decoder_attention(salma) as calls:
        salma.sam.decode(trace.features, trace.high_res, language=trace.language[:, None] * 0)
    assert not torch.allclose(calls[-1][0, :, -1], trace.decoder_attention[0, :, -1])


def test_mba_update_and_write_maps(salma):
    trace = probe.trace_forward(salma, image(), EXPRESSIONS)
    gated = probe.mba_update(salma, trace, gated=True)
    expected = (trace.mba.features - trace.features) / float(salma.mba.gamma.detach())
    assert torch.allclose(gated, expected, atol=1e-4)
    assert torch.allclose(gated, trace.mba.attn_output * trace.mba.gate, atol=1e-4)
    # gate forced to 1: the update is O_attn itself (gate mode)
    assert torch.allclose(probe.mba_update(salma, trace, gated=False), trace.mba.attn_output, atol=1e-4)
    assert float(salma.mba.gamma.detach()) == 0.5  # restored
    maps = probe.mba_write_map(salma, trace)
    assert maps.shape == (2, *trace.feature_size) and (maps >= 0).all()


def test_mba_steps_check_eq2(salma):
    trace = probe.trace_forward(salma, image(), EXPRESSIONS)
    steps = probe.mba_steps(salma, trace, b=1)
    k = salma.cfg.mba.top_k
    assert len(steps["tokens"]) == len(steps["router_scores"]) == len(EXPRESSIONS[1].split())
    assert steps["attention"].shape == (salma.cfg.mba.num_heads, k, *trace.feature_size)
    assert np.allclose(steps["attention"].sum(1), 1.0, atol=1e-5)
    assert steps["eq2_error"] < 1e-5 and steps["gamma"] == 0.5
    assert set(steps["selected_words"]) <= set(steps["tokens"])
    top = np.argsort(-steps["router_scores"])[:k]
    assert set(top) == {int(i) for i in steps["selected"]}


def test_baseline_has_no_mba_update(tokenizer):
    base = make(tokenizer, enabled=False)
    trace = probe.trace_forward(base, image(), EXPRESSIONS[:1])
    assert trace.prior is None and trace.mba is None
    assert probe.language_attention_map(trace).shape[0] == 1
    with pytest.raises(ValueError, match="needs a model with MBA"):
        probe.mba_update(base, trace)
    with pytest.raises(ValueError, match="needs a model with MBA"):
        probe.mba_steps(base, trace)


def test_prior_and_gate(salma):
    priors, gates = probe.prior_and_gate(salma, [image(0), image(1)])
    assert priors.shape == (2, 32, 32) and gates.shape == (2, 4, 4)
    assert (gates >= 0).all() and (gates <= 1).all()
    trace = probe.trace_forward(salma, image(1), EXPRESSIONS[:1])
    assert np.allclose(gates[1], trace.mba.gate[0, 0].numpy(), atol=1e-5)


def test_bias_mode_update_runs(tokenizer):
    model = make(tokenizer, mode="bias")
    trace = probe.trace_forward(model, image(), EXPRESSIONS[:1])
    gated, ungated = probe.mba_write_map(model, trace), probe.mba_write_map(model, trace, gated=False)
    assert gated.shape == ungated.shape and not np.allclose(gated, ungated)
