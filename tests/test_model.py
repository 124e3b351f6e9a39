"""SalmaModel: the behaviour the method depends on (issue: the model).

Every test builds the tiny preset (about 1 M parameters, a second to build) with a fixed seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from salma.config import MBAConfig, get_preset
from salma.mllm import build_synthetic_tokenizer
from salma.model import SalmaModel

WORDS = ["red", "green", "blue", "circle", "square", "triangle", "small", "large", "left", "right", "of", "with", "a", "to", "its"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_synthetic_tokenizer(WORDS)


def make_model(tokenizer, seed: int = 0, **mba_changes) -> SalmaModel:
    torch.manual_seed(seed)
    cfg = get_preset("tiny")
    if mba_changes:
        cfg = dataclasses.replace(cfg, mba=dataclasses.replace(cfg.mba, **mba_changes))
    return SalmaModel(cfg, tokenizer=tokenizer)


def scene(seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[4:12, 6:14] = True
    image[mask] = (230, 20, 20)
    return image, mask


def batch_for(model: SalmaModel, n: int = 4):
    scenes = [scene(i) for i in range(n)]
    exprs = ["the red square", "the small blue circle left of the large green triangle", "a red circle",
             "the green square with a large red circle to its left"][:n]
    return model.make_batch([s[0] for s in scenes], exprs, [s[1] for s in scenes])


def test_gamma_zero_equals_baseline_and_nonzero_differs(tokenizer):
    salma = make_model(tokenizer)
    baseline = make_model(tokenizer, seed=1, enabled=False)
    baseline.load_matching(salma.state_dict())  # same weights except MBA
    image, _ = scene(3)
    expr = "the small blue circle left of the large green triangle"
    assert salma.mba.gamma.item() == 0.0
    a, b = salma.predict(image, expr), baseline.predict(image, expr)
    assert np.array_equal(a.logits, b.logits) and np.array_equal(a.mask, b.mask)
    with torch.no_grad():
        salma.mba.gamma.fill_(2.0)
    c = salma.predict(image, expr)
    assert not np.allclose(c.logits, b.logits)


def test_gradients_reach_router_gamma_projections_not_prepass(tokenizer, monkeypatch):
    model = make_model(tokenizer)
    model.train()
    prior_requires_grad = []
    import salma.model as model_module

    real_prior = model_module.structural_prior

    def spy(*args, **kwargs):
        out = real_prior(*args, **kwargs)
        prior_requires_grad.append(out.requires_grad)
        return out

    monkeypatch.setattr(model_module, "structural_prior", spy)
    out = model(batch_for(model), gamma_scale=1.0, aux_scale=1.0)
    out.loss.backward()
    assert prior_requires_grad == [False], "the pre-pass must be detached"
    mba = model.mba
    assert mba.gamma.grad is not None and mba.gamma.grad.abs() > 0, "gamma starts at 0 but must be able to move"
    # with gamma = 0 the attention branch gets no gradient yet; take one more step with gamma != 0.
    model.zero_grad()
    with torch.no_grad():
        mba.gamma.fill_(0.5)
    model(batch_for(model)).loss.backward()
    named = dict(model.named_parameters())
    for prefix in ("mba.router", "mba.q_proj", "mba.k_proj", "mba.v_proj", "mba.out_proj"):
        grads = [p.grad for n, p in named.items() if n.startswith(prefix) and p.grad is not None]
        assert grads, f"no parameter under {prefix} got a gradient"
        assert any(g.abs().sum() > 0 for g in grads), f"{prefix} got an all-zero gradient"
    dec = [p.grad for n, p in named.items() if n.startswith("sam.model.sam_mask_decoder") and p.grad is not None]
    assert dec and any(g.abs().sum() > 0 for g in dec), "the decoder must learn from the final pass"
    fcs = named["text_hidden_fcs.0.weight"].grad
    assert fcs is not None and fcs.abs().sum() > 0


def test_predict_runs_mba_and_matches_training_forward(tokenizer, monkeypatch):
    model = make_model(tokenizer)
    with torch.no_grad():
        model.mba.gamma.fill_(1.0)
    calls = []
    real_forward = model.mba.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model.mba, "forward", counting)
    image, mask = scene(5)
    expr = "the red square"
    pred = model.predict(image, expr)
    assert calls == [1], "predict() must run Mask-Biased Attention"
    model.eval()
    with torch.no_grad():
        out = model(model.make_batch([image], [expr], [mask]))
    logits = torch.nn.functional.interpolate(out.segment.mask_logits, size=image.shape[:2], mode="bilinear",
                                             align_corners=False)[0, 0]
    assert torch.allclose(logits, torch.from_numpy(pred.logits), atol=1e-5)
    assert np.array_equal((logits.sigmoid() > 0.5).numpy(), pred.mask)


def test_predict_image_reuses_prior_for_several_expressions(tokenizer):
    model = make_model(tokenizer)
    with torch.no_grad():
        model.mba.gamma.fill_(1.0)
    image, _ = scene(6)
    exprs = ["the red square", "a red circle", "the small blue circle left of the large green triangle"]
    together = model.predict_image(image, exprs)
    alone = [model.predict(image, e) for e in exprs]
    for t, a in zip(together, alone):
        assert np.allclose(t.logits, a.logits, atol=1e-5)
        assert np.array_equal(t.prior, a.prior)


@pytest.mark.parametrize("mode,film", [("bias", False), ("gate", True)])
def test_bias_and_film_modes_run_and_differ_from_gate(tokenizer, mode, film):
    gate = make_model(tokenizer)
    other = make_model(tokenizer, mode=mode, film=film)
    other.load_matching(gate.state_dict())
    for m in (gate, other):
        with torch.no_grad():
            m.mba.gamma.fill_(1.0)
            if m.mba.film is not None:  # zero-initialised: give FiLM something to do
                torch.nn.init.normal_(m.mba.film.weight, std=0.5)
    image, _ = scene(7)
    a = gate.predict(image, "the red square")
    b = other.predict(image, "the red square")
    assert np.isfinite(b.logits).all()
    assert not np.allclose(a.logits, b.logits)


def test_seg_only_text_source_uses_one_token(tokenizer):
    model = make_model(tokenizer, text_source="seg_only")
    batch = batch_for(model, 2)
    language, text, _valid, _ = model.language(batch)
    assert text.shape == (2, 1, language.shape[1]) and torch.equal(text[:, 0], language)
    full = make_model(tokenizer)
    _, text_full, valid_full, _ = full.language(full.make_batch(*_two(full)))
    assert text_full.shape[1] > 1 and valid_full.sum(1).min() >= 3


def _two(model):
    s = [scene(0), scene(1)]
    return [x[0] for x in s], ["the red square", "the small blue circle"], [x[1] for x in s]


def test_language_embedding_read_at_seg_position(tokenizer):
    model = make_model(tokenizer)
    batch = batch_for(model, 2)
    seg_id = model.tokenizer.convert_tokens_to_ids("[SEG]")
    rows = torch.arange(2)
    assert (batch.input_ids[rows, batch.seg_positions] == seg_id).all()
    # changing a token *after* [SEG] must not change e (causal LM; e is read at [SEG]'s input position)
    language, *_ = model.language(batch)
    changed = batch.input_ids.clone()
    changed[rows, batch.seg_positions + 1] = model.tokenizer.convert_tokens_to_ids("red")
    batch2 = type(batch)(**{**batch.__dict__, "input_ids": changed})
    language2, *_ = model.language(batch2)
    assert torch.allclose(language, language2, atol=1e-6)


def test_bad_inputs_raise_clear_errors(tokenizer, tmp_path):
    model = make_model(tokenizer)
    image, _ = scene(0)
    with pytest.raises(ValueError, match=r"RGB array \(H, W, 3\)"):
        model.predict(image[..., 0], "the red square")
    with pytest.raises(ValueError, match=r"RGB array"):
        model.predict(np.zeros((32, 32, 4), np.uint8), "the red square")
    with pytest.raises(ValueError, match="uint8"):
        model.predict(image.astype(np.float32), "the red square")
    with pytest.raises(ValueError, match="expression is empty"):
        model.predict(image, "   ")
    with pytest.raises(ValueError, match=r"no \[SEG\] token"):
        model.predict(image, "the red square", answer="sure .")
    with pytest.raises(FileNotFoundError, match="not a SalmaModel checkpoint"):
        SalmaModel.from_pretrained(tmp_path / "nowhere")


def test_save_load_roundtrip_and_corrupt_checkpoint(tokenizer, tmp_path):
    model = make_model(tokenizer)
    with torch.no_grad():
        model.mba.gamma.fill_(0.7)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SalmaModel.from_pretrained(tmp_path / "ckpt")
    image, _ = scene(2)
    assert np.array_equal(model.predict(image, "the red square").logits, loaded.predict(image, "the red square").logits)
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors is corrupt: its sha256"):
        SalmaModel.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "checksums.json").unlink()  # a folder that records no checksums: the reader says it
    with pytest.raises(ValueError, match="corrupt or truncated"):
        SalmaModel.from_pretrained(tmp_path / "ckpt")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SalmaModel.from_pretrained(tmp_path / "ckpt")


def test_checkpoint_from_other_config_is_refused(tokenizer, tmp_path):
    model = make_model(tokenizer)
    model.save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="different model config"):
        SalmaModel.from_pretrained(tmp_path / "tiny", cfg=get_preset("small"))


def test_baseline_has_no_mba_and_trains(tokenizer):
    model = make_model(tokenizer, enabled=False)
    assert model.mba is None
    model.train()
    out = model(batch_for(model, 2))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.segment.prior is None


def test_config_validation_names_field():
    cfg = get_preset("tiny")
    bad = dataclasses.replace(cfg, mba=MBAConfig(mode="sideways"))
    with pytest.raises(ValueError, match="mba.mode='sideways'.*gate, bias"):
        SalmaModel(bad, tokenizer=build_synthetic_tokenizer(WORDS))
    with pytest.raises(ValueError, match="PRESET='huge'.*tiny, small, paper"):
        get_preset("huge")
