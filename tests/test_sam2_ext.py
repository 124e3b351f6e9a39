"""SAM-2 with language and the pre-pass prior, against upstream sam2 (docs/method.md section 3.1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from salma.config import get_preset
from salma.sam2_ext import LanguageSAM2, build_sam2_model, preprocess_images, structural_prior


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return LanguageSAM2(build_sam2_model(get_preset("small").sam2))


def test_point_prompt_matches_sam2_image_predictor(sam):
    """Parity: our path with no language and a real point == sam2.SAM2ImagePredictor on the same model."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)
    predictor = SAM2ImagePredictor(sam.model)
    s = sam.image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]  # hard-coded for 1024
    predictor.set_image(image)
    point = np.array([[30.0, 50.0]])  # (x, y) in original pixels
    _, ious_ref, low_ref = predictor.predict(point_coords=point, point_labels=np.array([1]), multimask_output=True,
                                             return_logits=True)
    with torch.no_grad():
        feats = sam.encode_image(preprocess_images(image, s))
        coords = torch.tensor(point, dtype=torch.float32)[None] * torch.tensor([s / 80, s / 96])
        out = sam.decode(feats.image_embed, feats.high_res, coords, torch.ones(1, 1, dtype=torch.int32),
                         multimask=True)
    ours = out.low_res_logits[0].clamp(-32, 32).numpy()  # the predictor clamps its low-res logits
    assert np.allclose(ours, low_ref, atol=1e-4), np.abs(ours - low_ref).max()
    assert np.allclose(out.ious[0].numpy(), ious_ref, atol=1e-5)


def test_prior_is_raw_best_iou_logits_and_detached(sam):
    torch.manual_seed(1)
    images = torch.randn(2, 3, sam.image_size, sam.image_size, requires_grad=True)
    feats = sam.encode_image(images)
    prior = structural_prior(sam, feats.image_embed, feats.high_res)
    assert prior.shape == (2, 1, sam.image_size // 4, sam.image_size // 4)
    assert not prior.requires_grad
    with torch.no_grad():
        multi = sam.decode(feats.image_embed, feats.high_res, multimask=True)
    best = multi.ious.argmax(1)
    for b in range(2):
        assert torch.equal(prior[b, 0], multi.low_res_logits[b, best[b]])


def test_prior_keeps_raw_logits_when_sam2_says_no_object(sam):
    """Upstream overwrites masks with -1024 where the object score is <= 0 (SAM2Base._forward_sam_heads); the
    pre-pass must keep the raw logits. Only a negative object score can show it, so force one."""
    sam = copy.deepcopy(sam)  # the fixture is shared; its object-score head is overwritten below
    torch.manual_seed(1)
    feats = sam.encode_image(torch.randn(2, 3, sam.image_size, sam.image_size))
    head = sam.model.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-5.0)
        multi = sam.decode(feats.image_embed, feats.high_res, multimask=True)
    assert (multi.object_score_logits < 0).all(), "precondition: SAM-2 says there is no object"
    prior = structural_prior(sam, feats.image_embed, feats.high_res)
    best = multi.ious.argmax(1)
    for b in range(2):
        assert torch.equal(prior[b, 0], multi.low_res_logits[b, best[b]])
    assert prior.min() > -1000 and prior.std() > 0, "raw logits, not the -1024 no-object fill"


def test_language_tokens_change_the_mask_and_are_validated(sam):
    torch.manual_seed(2)
    feats = sam.encode_image(torch.randn(1, 3, sam.image_size, sam.image_size))
    plain = sam.decode(feats.image_embed, feats.high_res)
    lang = torch.randn(1, 1, sam.prompt_dim)
    with_lang = sam.decode(feats.image_embed, feats.high_res, language=lang)
    assert not torch.allclose(plain.low_res_logits, with_lang.low_res_logits)
    with pytest.raises(ValueError, match="language embedding must be"):
        sam.decode(feats.image_embed, feats.high_res, language=torch.randn(1, 1, sam.prompt_dim + 1))


def test_bad_images_and_missing_checkpoint():
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        preprocess_images(np.zeros((8, 8), np.uint8), 64)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_images(np.zeros((8, 8, 3), np.float32), 64)
    import dataclasses

    cfg = dataclasses.replace(get_preset("tiny").sam2, checkpoint="/nonexistent/sam2.pt")
    with pytest.raises(FileNotFoundError, match="/nonexistent/sam2.pt"):
        build_sam2_model(cfg)
