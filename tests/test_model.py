"""SalmaModel: the behaviour the method depends on (issue: the model).

Every test builds the tiny preset (about 1 M parameters, a second to build) with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import re

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


@pytest.mark.parametrize("mode,film,kind", [("bias", False, "residual"), ("gate", True, "residual"),
                                            ("gate", True, "gated")])
def test_bias_and_film_modes_run_and_differ_from_gate(tokenizer, mode, film, kind):
    gate = make_model(tokenizer)
    other = make_model(tokenizer, mode=mode, film=film, film_kind=kind)
    other.load_matching(gate.state_dict(), new_mba=film)  # FiLM's weights are new to a plain MBA state
    for m in (gate, other):
        with torch.no_grad():
            m.mba.gamma.fill_(1.0)
            if hasattr(m.mba, "gamma_film"):
                m.mba.gamma_film.fill_(1.0)
            elif m.mba.film is not None:  # the gated FiLM is zero-initialised: give it something to do
                torch.nn.init.normal_(m.mba.film.weight, std=0.5)
    image, _ = scene(7)
    a = gate.predict(image, "the red square")
    b = other.predict(image, "the red square")
    assert np.isfinite(b.logits).all()
    assert not np.allclose(a.logits, b.logits)


def test_residual_film_is_a_separate_residual_with_its_own_gamma(tokenizer):
    """Issue 24: FiLM as the paper and the released code describe it: F + gamma_film * (scale(t) * LN(F) +
    shift(t)) from a randomly initialised MLP, beside the gated attention. With gamma = 0 and gamma_film != 0
    the branch still writes (the earlier, gated reading could not: it sat inside gamma's product)."""
    model = make_model(tokenizer, film=True)
    mba = model.mba
    assert isinstance(mba.film, torch.nn.Sequential) and float(mba.gamma_film.detach()) == 0.0
    assert any(float(p.abs().sum()) > 0 for p in mba.film.parameters()), "randomly initialised, not zeros"
    torch.manual_seed(3)
    visual, text = torch.randn(2, mba.dim, 4, 4), torch.randn(2, 5, mba.dim)
    prior = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(mba(visual, text, prior).features, visual), "gamma = gamma_film = 0: the identity"
        mba.gamma_film.fill_(0.5)
        out = mba(visual, text, prior).features
    assert not torch.allclose(out, visual), "gamma = 0 but gamma_film != 0: FiLM writes on its own"


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
    # ... and changing [SEG] itself must change e. Under causal attention the state before [SEG] does not see
    # it, so this pins the position exactly: a reader one token early passes the check above, not this one.
    with torch.no_grad():
        model.mllm.get_input_embeddings().weight[seg_id] += 1.0
    language3, *_ = model.language(batch)
    assert not torch.allclose(language, language3, atol=1e-3)


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


def test_an_mba_model_refuses_a_checkpoint_without_mba_weights(tokenizer, tmp_path):
    """Issue 24: a SALMA model silently became the baseline when its checkpoint had no mba.* weights."""
    baseline = make_model(tokenizer, enabled=False).save_pretrained(tmp_path / "baseline")
    salma_cfg = make_model(tokenizer).cfg
    with pytest.raises(ValueError, match="has no MBA weights.*new_mba=True"):
        SalmaModel.from_pretrained(baseline, cfg=salma_cfg)
    fresh = SalmaModel.from_pretrained(baseline, cfg=salma_cfg, new_mba=True)  # fine-tuning SALMA from it
    assert fresh.mba is not None and float(fresh.mba.gamma) == 0.0
    # a SALMA checkpoint read as the baseline drops its branch on purpose (cfg says no MBA)
    salma = make_model(tokenizer).save_pretrained(tmp_path / "salma")
    assert SalmaModel.from_pretrained(salma, cfg=make_model(tokenizer, enabled=False).cfg).mba is None


def test_forward_total_is_losses_total_loss_with_tmc_and_boundary_weighted(tokenizer, monkeypatch):
    """Issue 24: one definition of L_total (losses.total_loss), used by the model; TMC and the boundary term
    are non-zero and enter with 0.1 and 0.05."""
    import salma.model as model_module

    model = make_model(tokenizer)
    assert (model.cfg.loss.tmc_weight, model.cfg.loss.boundary_weight) == (0.1, 0.05)
    calls = []
    real = model_module.total_loss
    monkeypatch.setattr(model_module, "total_loss", lambda parts, cfg, aux: calls.append(aux) or real(parts, cfg, aux))
    model.train()
    out = model(batch_for(model, 4), aux_scale=0.5)
    assert calls == [0.5]
    p = out.parts
    assert float(p["tmc"]) > 0 and float(p["boundary"]) > 0
    expected = p["seg"] + model.cfg.loss.lm_weight * p["lm"] + 0.5 * (0.1 * p["tmc"] + 0.05 * p["boundary"])
    assert torch.allclose(out.loss, expected)


def test_final_pass_can_keep_the_best_of_three_masks(tokenizer):
    """Issue 24: Sa2VA and the released SALMA keep the best predicted IoU of 3 masks in the final pass;
    ``cfg.sam2.multimask_output`` makes that an option (the presets keep the single mask they train)."""
    model = make_model(tokenizer)
    assert model.cfg.sam2.multimask_output is False
    cfg = dataclasses.replace(model.cfg, sam2=dataclasses.replace(model.cfg.sam2, multimask_output=True))
    multi = SalmaModel(cfg, tokenizer=tokenizer)
    multi.load_state_dict(model.state_dict())
    multi.eval()
    batch = batch_for(multi, 2)
    with torch.no_grad():
        feats = multi.sam.encode_image(batch.sam_images).select(batch.image_index)
        language, text, text_mask, _ = multi.language(batch)
        seg = multi.segment(feats, language, text, text_mask)
        image_embed = multi.mba(feats.image_embed, text, seg.prior, text_mask=text_mask).features
        three = multi.sam.decode(image_embed, feats.high_res, language=language[:, None], multimask=True)
    assert three.low_res_logits.shape[1] == 3
    best = three.ious.argmax(1)
    for b in range(2):
        assert torch.equal(seg.mask_logits[b, 0], three.low_res_logits[b, best[b]])


@pytest.mark.parametrize(("section", "field", "value", "message"), [
    ("mba", "gamma_init", -0.1, "gamma_init=-0.1 must be >= 0"),
    ("train", "gamma_lr_scale", 0.0, "gamma_lr_scale=0.0 must be > 0"),
    ("train", "mba_lr_scale", -1.0, "mba_lr_scale=-1.0 must be > 0"),
    ("mba", "film_kind", "both", "film_kind='both'; accepted values: residual, gated"),
    ("mba", "dropout", 1.0, "dropout=1.0 must lie in"),
])
def test_mba_study_knobs_refuse_bad_values(tokenizer, section, field, value, message):
    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{field: value})})
    with pytest.raises(ValueError, match=re.escape(message)):
        SalmaModel(cfg, tokenizer=tokenizer)


def test_zero_init_output_starts_as_the_identity_with_gamma_above_zero(tokenizer):
    model = make_model(tokenizer, gamma_init=1.0, zero_init_output=True)
    assert float(model.mba.gamma.detach()) == 1.0
    batch = batch_for(model, 2)
    model.train()
    out = model(batch)
    assert torch.equal(out.segment.mba.features, out.features.image_embed), "nothing written at step 0"
    out.loss.backward()
    assert model.mba.out_proj.weight.grad.abs().sum() > 0, "the zero-initialised projection learns from step 0"
