"""Video training (salma.train.loop stage "video"): Sa2VA's clip-level [SEG] injected into every frame's decoder
pass, per-frame losses, TMC negatives across clips only, resume parity. Tiny preset, a tiny generated
SynRef-Video (8 frames of 32 px; windows of 4 frames)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from salma.config import get_preset
from salma.data.synref_video import generate_synref_video
from salma.data.video_format import VideoReferDataset
from salma.losses import tmc_allowed_pairs, tmc_loss
from salma.model import SalmaModel
from salma.train.batches import TrainClips, batch_rng, draw_clips, make_clip_batch
from salma.train.identity import RunSpec, run_hash
from salma.train.loop import train
from salma.train.tokenizer import synthetic_tokenizer
from salma.video import clip_prompts

SPEC = RunSpec(stage="video", clip_frames=4, mllm_frames=3)


@pytest.fixture(scope="module")
def video_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synref_video_tiny")
    return generate_synref_video(root, scene_size=32, n_frames=8, n_videos={"train": 6, "valid_u": 2},
                                 progress=False)


@pytest.fixture(scope="module")
def clips(video_data):
    return TrainClips(VideoReferDataset(video_data, "train"))


def tiny_model(seed: int = 0) -> SalmaModel:
    torch.manual_seed(seed)
    m = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer())
    with torch.no_grad():
        m.mba.gamma.fill_(0.5)  # gamma starts at 0, which would hide MBA's attention path from the gradient
    return m.train()


def test_tmc_negatives_never_come_from_the_same_target():
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    allowed = tmc_allowed_pairs(groups)
    assert allowed.diagonal().all()
    for i in range(6):
        for j in range(6):
            if i != j:
                assert bool(allowed[i, j]) == bool(groups[i] != groups[j]), (i, j)
    # The loss equals a plain InfoNCE over the allowed pairs only: identical rows of one clip do not compete.
    torch.manual_seed(0)
    vis, emb = torch.randn(6, 8, 4, 4), torch.randn(3, 8)[groups]
    mask = torch.ones(6, 1, 4, 4)
    z_v = torch.nn.functional.normalize(vis.mean((2, 3)), dim=-1)
    z_t = torch.nn.functional.normalize(emb, dim=-1)
    logits = (z_v @ z_t.T / 0.15).masked_fill(~allowed, float("-inf"))
    labels = torch.arange(6)
    expected = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels))  # Eq. 3: the sum of both directions
    assert tmc_loss(vis, emb, mask, 0.15, groups=groups) == pytest.approx(float(expected), rel=1e-5)
    # A batch of one clip's frames has no negative at all: TMC is 0, not a push apart of the same object.
    assert float(tmc_loss(vis[:3], emb[:3], mask[:3], 0.15, groups=groups[:3])) == pytest.approx(0.0, abs=1e-6)


def test_draw_clips_windows_and_target_groups(clips):
    frames, exprs, masks, mllm_index, groups, keys = draw_clips(clips, batch_rng(0, 0, 0, 0), 12, 4, 3)
    assert len(frames) == len(exprs) == len(masks) == 12 and len(keys) == 48
    assert all(f.shape[0] == 4 and m.shape == f.shape[:3] for f, m in zip(frames, masks))
    assert all(idx == [0, 1, 2] for idx in mllm_index)
    starts = keys[::4]
    assert all(keys[4 * b + k] == (starts[b][0], starts[b][1] + k) for b in range(12) for k in range(4)), \
        "a window is contiguous"
    # equal groups <=> the same target object (same video and objects), whatever the window
    for a in range(12):
        for b in range(12):
            same = (keys[4 * a][0], exprs[a]) == (keys[4 * b][0], exprs[b])
            if same:
                assert groups[a] == groups[b]
    again = draw_clips(clips, batch_rng(0, 0, 0, 0), 12, 4, 3)
    assert again[5] == keys and again[4] == groups, "deterministic per (seed, step, micro, rank)"
    uniform = draw_clips(clips, batch_rng(0, 0, 0, 0), 2, 8, 3, "uniform")[3]
    assert uniform[0] == [0, 4, 7] or uniform[0] == [0, 3, 7]


def test_one_language_embedding_for_every_frame_of_a_clip(clips, monkeypatch):
    model = tiny_model()
    batch, _, _ = make_clip_batch(clips, model.collator, batch_rng(0, 1, 0, 0), 3, SPEC)
    seen = []
    decode = model.sam.decode

    def spy(image_embed, high_res, *args, language=None, **kw):
        if language is not None:
            seen.append(language.detach().clone())
        return decode(image_embed, high_res, *args, language=language, **kw)

    monkeypatch.setattr(model.sam, "decode", spy)
    model(batch)
    (lang,) = seen  # one language-conditioned decoder call, over all B x K frame rows
    assert lang.shape[0] == 12
    for b in range(3):
        rows = lang[batch.clip_index == b]
        assert torch.equal(rows, rows[:1].expand_as(rows)), "every frame of a clip gets the clip's one [SEG]"
    assert not torch.equal(lang[0], lang[4]), "different clips get different embeddings"


def test_training_language_matches_inference_clip_prompts(clips):
    """The MLLM input of a training clip is the one predict_video builds (same tiles, same prompt)."""
    model = tiny_model().eval()
    frames, exprs, masks, mllm_index, groups, _ = draw_clips(clips, batch_rng(0, 2, 0, 0), 2, 4, 3)
    batch = model.collator.clips(frames, exprs, masks, mllm_index, groups)
    with torch.no_grad():
        language = model.language(batch)[0]
    for b in range(2):
        prompt, idx = clip_prompts(model, frames[b], [exprs[b]], mllm_frames=3)
        assert idx == mllm_index[b]
        assert torch.allclose(prompt[0].language, language[b], atol=1e-5)


def test_empty_target_frames_give_finite_losses(clips):
    model = tiny_model()
    frames, exprs, masks, mllm_index, groups, _ = draw_clips(clips, batch_rng(0, 3, 0, 0), 2, 4, 3)
    masks = [m.copy() for m in masks]
    masks[0][:] = False  # the target is absent from every frame of clip 0
    masks[1][1:] = False  # and from all but the first frame of clip 1
    batch = model.collator.clips(frames, exprs, masks, mllm_index, groups)
    out = model(batch)
    assert all(torch.isfinite(v) for v in out.parts.values()), out.parts
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # all frames empty: Dice has nothing to measure (0), BCE still pushes the masks to empty
    masks[1][:] = False
    out = model(model.collator.clips(frames, exprs, masks, mllm_index, groups))
    parts = {k: float(v.detach()) for k, v in out.parts.items()}
    assert parts["dice"] == 0.0 and parts["bce"] > 0 and np.isfinite(parts["total"])


def test_video_steps_overfit_one_clip_batch(clips):
    model = tiny_model()
    batch, _, _ = make_clip_batch(clips, model.collator, batch_rng(0, 4, 0, 0), 2, SPEC)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    seg = []
    for step in range(30):
        out = model(batch)
        out.loss.backward()
        if step == 0:
            router = [p.grad for n, p in model.named_parameters() if n.startswith("mba.router")]
            decoder = [p.grad for n, p in model.named_parameters() if n.startswith("sam.model.sam_mask_decoder.")]
            assert router and all(g is not None for g in router) and any(g.abs().sum() > 0 for g in router), \
                "MBA's router gets a gradient"
            assert any(g is not None and g.abs().sum() > 0 for g in decoder), "the decoder gets a gradient"
        opt.step()
        opt.zero_grad(set_to_none=True)
        seg.append(float(out.parts["seg"].detach()))
    assert seg[-1] < 0.6 * seg[0], seg


def test_video_runs_resume_exactly_and_report_jf(video_data, kill_and_resume):
    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=4, batch_size=2, grad_accum=2,
                                                             warmup_ratio=0.25))
    spec = dataclasses.replace(SPEC, data_root=str(video_data), checkpoint_every=2, eval_limit=2, name="vid")
    full, resumed = kill_and_resume(cfg, spec, stop_after=2)
    assert [r["step"] for r in resumed.log] == [1, 2, 3, 4]
    assert [r["total"] for r in resumed.log] == pytest.approx([r["total"] for r in full.log], abs=1e-5)
    m = resumed.metrics
    assert set(m["video_val"]) == {"per_frame", "released"} and m["jf"] == m["jf_per_frame"]
    assert 0.0 <= m["jf_released"] <= 1.0
    assert m["jf"] == pytest.approx(full.metrics["jf"], abs=1e-6)
    assert {"bce", "dice", "tmc", "boundary"} <= set(resumed.log[0])


def test_video_fields_are_in_every_runs_hash():
    """Run hash version 2 covers every RunSpec field, the video stage's too, whatever the stage."""
    cfg = get_preset("tiny")
    image = RunSpec(stage="finetune")
    assert run_hash(cfg, image) != run_hash(cfg, dataclasses.replace(image, clip_frames=9))
    assert run_hash(cfg, SPEC) != run_hash(cfg, dataclasses.replace(SPEC, clip_frames=5))
    with pytest.raises(ValueError, match="frame_sampling"):
        RunSpec(stage="video", frame_sampling="random")


def test_clip_collator_rejects_mismatched_masks(clips):
    model = tiny_model()
    frames, exprs, masks, mllm_index, _, _ = draw_clips(clips, batch_rng(0, 5, 0, 0), 1, 4, 3)
    with pytest.raises(ValueError, match="masks"):
        model.collator.clips(frames, exprs, [masks[0][:2]], mllm_index)
    assert np.asarray(frames[0]).dtype == np.uint8


def test_train_cli_video_finetunes_a_foundation_and_writes_jf(video_data, tmp_path, capsys):
    """`python -m salma train --video --data <SynRef-Video>` runs finetune_video from a foundation directory
    (here random tiny weights, saved as a foundation would be) and writes J&F rows into metrics.json."""
    import json

    from salma.__main__ import main

    found = tiny_model().save_pretrained(tmp_path / "foundation")
    assert main(["train", "--video", "--preset", "tiny", "--steps", "2", "--data", str(video_data),
                 "--foundation", str(found), "--runs", str(tmp_path / "runs"), "--clip-frames", "3"]) == 0
    out = capsys.readouterr().out
    assert '"jf_per_frame"' in out and '"jf_released"' in out
    metrics_files = list((tmp_path / "runs").glob("tiny-video-salma-s0-*/metrics.json"))
    assert len(metrics_files) == 1, out
    metrics = json.loads(metrics_files[0].read_text())
    assert {r["subset"] for r in metrics["video_val"]["per_frame"]} >= {"all"}
    assert {"jf", "jf_per_frame", "jf_released"} <= set(metrics)
    spec = json.loads((metrics_files[0].parent / "spec.json").read_text())["spec"]
    assert spec["stage"] == "video" and spec["clip_frames"] == 3 and spec["init_from"] == str(found)


def test_video_batches_prefetched_by_loader_workers_train_the_same(video_data, tmp_path, monkeypatch):
    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2, batch_size=2))
    spec = dataclasses.replace(SPEC, data_root=str(video_data), eval_limit=1, name="w")
    monkeypatch.setenv("SALMA_LOADER_WORKERS", "0")
    here = train(cfg, spec, runs_root=tmp_path / "a", progress=False)
    monkeypatch.setenv("SALMA_LOADER_WORKERS", "2")
    workers = train(cfg, spec, runs_root=tmp_path / "b", progress=False)
    assert [r["total"] for r in workers.log] == pytest.approx([r["total"] for r in here.log], abs=1e-6)
