"""SalmaModel video prediction (salma.video): sam2's real video predictor with the clip's language embedding,
SALMA's per-frame prior + MBA inside its loop, the per-frame mode, and the evaluate CLI on video data.
Tiny preset, random weights, clips of 5-6 frames at 32-48 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salma import sam2_ext
from salma.config import get_preset
from salma.model import SalmaModel
from salma.train.tokenizer import synthetic_tokenizer
from salma.video import (
    build_video_predictor,
    clip_prompts,
    predict_per_frame,
    predict_released,
    sample_frames,
    video_predictor_for,
)

EXPRESSIONS = ["the red circle", "a small blue square"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer())
    with torch.no_grad():
        m.mba.gamma.fill_(0.7)  # gamma starts at 0; a non-zero gamma makes MBA change the masks
    return m


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (6, 40, 48, 3), dtype=np.uint8)


def test_sample_frames():
    assert sample_frames(8, 5) == [0, 1, 2, 3, 4]
    assert sample_frames(3, 5) == [0, 1, 2]
    assert sample_frames(9, 3, "uniform") == [0, 4, 8]
    with pytest.raises(ValueError, match="frame_sampling"):
        sample_frames(4, 2, "random")


def test_video_predictor_shares_the_models_sam2_weights(model):
    pred = video_predictor_for(model)
    own, theirs = model.sam.model.state_dict(), pred.state_dict()
    assert set(own) == set(theirs)  # same parameter names: the predictor is the same sam2 architecture
    assert all(torch.equal(own[k], theirs[k]) for k in own)
    # the same storage (no copy), and MBA did not become a submodule of the predictor
    assert own["sam_mask_decoder.iou_token.weight"].data_ptr() == theirs["sam_mask_decoder.iou_token.weight"].data_ptr()
    assert not any(k.startswith("_mba") for k in theirs)
    assert video_predictor_for(model) is pred  # cached


def _counting(monkeypatch, model, pred=None):
    """Wrap the prior function and MBA's forward; record (rows, frame) per call."""
    calls = {"prior": [], "mba": []}
    prior_fn, mba_fwd = sam2_ext.structural_prior, model.mba.forward

    def prior(sam, image_embed, *a, **k):
        calls["prior"].append((image_embed.shape[0], None if pred is None else pred._frame_idx))
        return prior_fn(sam, image_embed, *a, **k)

    def mba(visual, *a, **k):
        calls["mba"].append((visual.shape[0], None if pred is None else pred._frame_idx))
        return mba_fwd(visual, *a, **k)

    monkeypatch.setattr(sam2_ext, "structural_prior", prior)
    monkeypatch.setattr(model.mba, "forward", mba)
    return calls


@pytest.mark.parametrize("mode", ["released", "per_frame"])
def test_prior_and_mba_run_on_every_frame(model, frames, mode, monkeypatch):
    t, e = len(frames), len(EXPRESSIONS)
    pred = video_predictor_for(model) if mode == "released" else None
    calls = _counting(monkeypatch, model, pred)
    masks = model.predict_video(frames, EXPRESSIONS, mode=mode, mllm_frames=2)
    assert len(masks) == e and all(m.shape == frames.shape[:3] and m.dtype == bool for m in masks)
    # one prior per frame (shared by the expressions), MBA on every frame of every expression
    assert sum(n for n, _ in calls["prior"]) == t
    assert sum(n for n, _ in calls["mba"]) == t * e
    if mode == "released":  # inside sam2's loop: one call per frame (prior) and per frame and object (MBA)
        assert sorted(f for _, f in calls["prior"]) == list(range(t))
        assert sorted(f for _, f in calls["mba"]) == sorted(list(range(t)) * e)


@pytest.mark.parametrize("mode", ["released", "per_frame"])
def test_gamma_zero_equals_the_baseline_on_every_frame(model, frames, mode):
    prompts, idx = clip_prompts(model, frames, EXPRESSIONS, mllm_frames=2)
    run = (lambda: predict_released(model, frames, prompts, idx, return_logits=True)) if mode == "released" \
        else (lambda: predict_per_frame(model, frames, prompts, return_logits=True))
    gamma, mba = model.mba.gamma.item(), model.mba
    try:
        with torch.no_grad():
            mba.gamma.fill_(0.0)
        salma_masks, salma_logits = run()
        model.mba = None  # the Sa2VA baseline with the same weights
        base_masks, base_logits = run()
    finally:
        model.mba = mba
        with torch.no_grad():
            mba.gamma.fill_(gamma)
    assert torch.equal(salma_logits, base_logits)
    assert all(np.array_equal(a, b) for a, b in zip(salma_masks, base_masks))


def test_per_frame_mode_equals_predict_image_with_the_clip_embedding(model, frames, monkeypatch):
    prompts, _ = clip_prompts(model, frames, EXPRESSIONS, mllm_frames=2)
    masks, low = predict_per_frame(model, frames, prompts, return_logits=True)
    assert np.array_equal(np.stack(masks), np.stack(model.predict_video(frames, EXPRESSIONS, mode="per_frame",
                                                                          mllm_frames=2)))
    # predict_image, frame by frame, reading the clip's MLLM output instead of its own
    clip_language = (torch.stack([p.language for p in prompts]), torch.stack([p.text for p in prompts]),
                     torch.stack([p.text_mask for p in prompts]), None)
    monkeypatch.setattr(model, "language", lambda batch: clip_language)
    h, w = frames.shape[1:3]
    for t in range(len(frames)):
        preds = model.predict_image(frames[t], EXPRESSIONS)
        for k, p in enumerate(preds):
            up = torch.nn.functional.interpolate(low[k, t][None], size=(h, w), mode="bilinear", align_corners=False)
            np.testing.assert_allclose(p.logits, up[0, 0].numpy(), atol=1e-4)
            decided = np.abs(p.logits) > 1e-3  # away from the threshold, the masks agree exactly
            assert np.array_equal(p.mask[decided], masks[k][t][decided])


def test_released_conditioning_frames_equal_the_per_frame_decode(model, frames):
    # sam2 decodes an initial conditioning frame without memory (no_mem_embed added to the frame's own
    # features); with the language token there and the same single-mask head, that is the per-frame decode.
    prompts, idx = clip_prompts(model, frames, EXPRESSIONS, mllm_frames=2)
    assert idx == [0, 1]
    _, released = predict_released(model, frames, prompts, idx, return_logits=True)
    _, per_frame = predict_per_frame(model, frames, prompts, return_logits=True)
    torch.testing.assert_close(released[:, idx], per_frame[:, idx], atol=1e-4, rtol=1e-4)
    # later frames come from memory attention and no language token: not the per-frame decode
    assert not torch.allclose(released[:, 2:], per_frame[:, 2:], atol=1e-3)


def test_offload_gives_the_same_masks(model, frames):
    prompts, idx = clip_prompts(model, frames[:4], EXPRESSIONS[:1], mllm_frames=2)
    a = predict_released(model, frames[:4], prompts, idx)
    b = predict_released(model, frames[:4], prompts, idx, offload=True)
    assert np.array_equal(a[0], b[0])


def test_build_video_predictor_is_a_fresh_copy_sharing_storage(model):
    pred = build_video_predictor(model)
    assert pred is not video_predictor_for(model)
    p = next(pred.parameters())
    assert p.data_ptr() == next(model.sam.model.parameters()).data_ptr()


def test_evaluate_cli_on_synref_video_with_a_checkpoint(tmp_path, capsys):
    from salma.__main__ import main
    from salma.data.synref_video import generate_synref_video

    root = generate_synref_video(tmp_path / "synvid", seed=3, scene_size=32, n_frames=8, n_videos={"valid_u": 2},
                                 progress=False)
    ckpt = tmp_path / "ckpt"
    torch.manual_seed(0)
    SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(ckpt)
    for mode in ("per_frame", "released"):
        assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root), "--limit", "2",
                     "--video-mode", mode, "--mllm-frames", "3"]) == 0
        out = capsys.readouterr().out
        assert f"({mode}): model" in out and "J&F (%)" in out and "| all |" in out and "first_frame_gt" in out
