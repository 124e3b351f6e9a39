"""J&F evaluation of video referring segmentation (salma.eval.video) and its trivial floors
(salma.eval.floors), on a tiny SynRef-Video and the hand-made MeViS fixture; the CLI on video data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from salma.__main__ import main
from salma.data.synref_video import generate_synref_video
from salma.data.video_format import VideoReferDataset
from salma.eval.floors import (
    VIDEO_PREDICTORS,
    evaluate_video_with_floors,
    first_frame_gt,
    largest_object_per_frame,
)
from salma.eval.video import ClipInfo, evaluate_video, jf_rows_to_markdown, write_video_result

T = 8  # frames per clip of the fixture


@pytest.fixture(scope="module")
def synvid(tmp_path_factory):
    """12 clips of 8 frames at 32x32 (a quarter of a second): 22 expressions of both kinds, 4 motion
    expressions on "still" targets, 2 targets absent from some frames."""
    root = tmp_path_factory.mktemp("synref_video_eval")
    generate_synref_video(root, seed=4, scene_size=32, n_frames=T, n_videos={"valid_u": 12}, progress=False)
    return root


@pytest.fixture()
def mevis(tmp_path, fixture_builders):
    info = fixture_builders.make_mevis_fixture(tmp_path)
    return tmp_path, info


def _oracle(frames, expressions, info: ClipInfo) -> np.ndarray:
    return np.stack([info.dataset.load_masks(s) for s in info.samples])


def _empty(frames, expressions, info: ClipInfo) -> np.ndarray:
    return np.zeros((len(expressions), *frames.shape[:3]), dtype=bool)


def _objects(root) -> dict[tuple[str, str], dict]:
    """(video, anno_id) -> the meta's object record."""
    meta = json.loads((root / "valid_u" / "meta_expressions.json").read_text())["videos"]
    return {(v, str(o["anno_id"])): o for v, e in meta.items() for o in e["objects"]}


def test_perfect_predictor_is_one_on_every_subset_and_kind_counts_add_up(synvid):
    ds = VideoReferDataset(synvid, "valid_u")
    result = evaluate_video(_oracle, ds, progress=False)
    assert [r["subset"] for r in result.rows] == ["all", "appearance", "motion"]
    for r in result.rows:
        assert (r["J"], r["F"], r["J&F"]) == (1.0, 1.0, 1.0), r
    assert result.rows[0]["N"] == len(ds) == len(result.per_expression)
    assert result.rows[1]["N"] + result.rows[2]["N"] == result.rows[0]["N"]
    assert result.rows[1]["N"] > 0 and result.rows[2]["N"] > 0
    assert result.seconds >= result.predict_seconds > 0


def test_empty_predictor_scores_the_frames_where_the_target_is_absent(synvid):
    # DAVIS / MeViS: a frame with empty prediction and empty ground truth counts J = F = 1; a frame with
    # a visible target and an empty prediction counts J = 0 (IoU) and F = 0 (P = 1, R = 0).
    ds = VideoReferDataset(synvid, "valid_u")
    result = evaluate_video(_empty, ds, progress=False)
    recs = result.per_expression
    for r in recs:
        absent = (r["n_frames"] - r["n_visible"]) / r["n_frames"]
        assert r["J"] == pytest.approx(absent) and r["F"] == pytest.approx(absent), r
    assert any(r["n_visible"] == T and r["J&F"] == 0.0 for r in recs)
    assert any(0 < r["n_visible"] < T and r["J&F"] > 0.0 for r in recs), "the fixture should hide some targets"
    expected = np.mean([(r["n_frames"] - r["n_visible"]) / r["n_frames"] for r in recs])
    assert result.rows[0]["J&F"] == pytest.approx(expected)


def test_limit_truncates_inside_a_clip(synvid):
    ds = VideoReferDataset(synvid, "valid_u")
    first_video = ds[0].video
    n_first = sum(s.video == first_video for s in ds)
    result = evaluate_video(_oracle, ds, limit=n_first + 1, progress=False)
    assert result.rows[0]["N"] == n_first + 1
    assert [r["video"] for r in result.per_expression].count(first_video) == n_first
    with pytest.raises(ValueError, match="at least one expression"):
        evaluate_video(_oracle, ds, limit=0, progress=False)


def test_largest_object_per_frame_takes_the_largest_visible_object_of_the_clip(synvid):
    ds = VideoReferDataset(synvid, "valid_u")
    objects = _objects(synvid)
    for video in ds.videos():
        samples = tuple(ds.samples_for_video(video))
        # every object of the clip, referred to or not, comes from the meta's objects list
        assert set(ds.object_ids(video)) == {a for v, a in objects if v == video}
        masks = np.stack([m for _, m in ds.object_masks(video)])  # (K, T, H, W)
        frames = ds.load_frames(samples[0])
        pred = largest_object_per_frame(frames, [s.text for s in samples], ClipInfo(video, samples, ds))
        assert pred.shape == (len(samples), T, 32, 32) and pred.dtype == bool
        assert (pred == pred[0]).all(), "the same masks for every expression"
        areas = masks.sum(axis=(2, 3))
        for t in range(T):
            assert pred[0, t].sum() == areas[:, t].max()
            assert any(np.array_equal(pred[0, t], m) for m in masks[:, t])


def test_first_frame_gt_is_exact_on_targets_that_never_change(synvid):
    ds = VideoReferDataset(synvid, "valid_u")
    objects = _objects(synvid)
    result = evaluate_video(first_frame_gt, ds, progress=False)
    by_key = {(r["video"], r["exp_id"]): r for r in result.per_expression}
    n_still = 0
    for s in ds:
        gt = ds.load_masks(s)
        r = by_key[(s.video, s.exp_id)]
        if (gt == gt[0]).all():
            assert (r["J"], r["F"]) == (1.0, 1.0), r
        # a "still" motion target's visible mask is identical in every frame (the generator checks it)
        if s.kind == "motion" and objects[(s.video, s.anno_ids[0])]["motion"] == "still":
            n_still += 1
            assert r["J"] == 1.0
    assert n_still > 0, "the fixture should hold motion expressions on still targets"


def test_floors_beside_a_model_and_without_one(synvid, tmp_path):
    ds = VideoReferDataset(synvid, "valid_u")
    with_model = evaluate_video_with_floors(_oracle, ds, limit=5, progress=False)
    floors = evaluate_video_with_floors(None, ds, limit=5, progress=False)
    assert list(with_model.trivial) == list(floors.trivial) == list(VIDEO_PREDICTORS)
    assert with_model.trivial == floors.trivial
    assert floors.rows == [] and floors.summary()["model"] is None
    assert with_model.summary()["jf"] == 1.0
    for rows in floors.trivial.values():
        assert rows[0]["subset"] == "all" and rows[0]["N"] == 5
        assert all(0.0 <= r["J&F"] <= 1.0 for r in rows)
    js, md = write_video_result(with_model, tmp_path / "out", "tiny")
    saved = json.loads(js.read_text())
    assert len(saved["per_expression"]) == 5 and set(saved["trivial"]) == set(VIDEO_PREDICTORS)
    text = md.read_text()
    assert "tiny: model" in text and "first_frame_gt" in text and "| subset | J (%) | F (%) | J&F (%) | N |" in text


def test_bad_predictor_output_raises_a_clear_error(synvid):
    ds = VideoReferDataset(synvid, "valid_u")
    video = ds[0].video
    n = len(ds.samples_for_video(video))
    with pytest.raises(ValueError, match=rf"shape \({n + 1}, 8, 32, 32\) for video '{video}'; expected "
                                         rf"\(E, T, H, W\) = \({n}, 8, 32, 32\)"):
        evaluate_video(lambda f, e, i: np.zeros((len(e) + 1, *f.shape[:3]), bool), ds, progress=False)
    with pytest.raises(TypeError, match=rf"dtype float32 for video '{video}'; expected bool"):
        evaluate_video(lambda f, e, i: np.zeros((len(e), *f.shape[:3]), np.float32), ds, progress=False)


def test_dataset_without_kinds_or_object_list(mevis):
    # A general MeViS-style split: expressions without "kind", clips without an "objects" list.
    root, info = mevis
    meta_path = info["split_dir"] / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    mixed = evaluate_video(_oracle, VideoReferDataset(root, "valid_u"), progress=False)
    assert [(r["subset"], r["N"]) for r in mixed.rows] == [("all", 3), ("appearance", 1), ("motion", 1),
                                                            ("plain", 1)]
    for v in meta["videos"].values():
        for e in v["expressions"].values():
            e.pop("kind", None)
    meta_path.write_text(json.dumps(meta))
    ds = VideoReferDataset(root, "valid_u")
    result = evaluate_video(_empty, ds, progress=False)
    assert [(r["subset"], r["N"]) for r in result.rows] == [("all", 3)]
    assert result.rows[0]["J&F"] == 0.0  # every target is visible in every frame
    # the objects are the union of the anno ids the clip's expressions refer to
    assert ds.object_ids("vid_a") == ("1", "2") and ds.object_ids("vid_b") == ("3",)
    samples = tuple(ds.samples_for_video("vid_a"))
    pred = largest_object_per_frame(ds.load_frames(samples[0]), ["a", "b"], ClipInfo("vid_a", samples, ds))
    # anno 1 and 2 are both 4x4; ties go to the first, and anno 2 is absent from the last frame anyway
    assert np.array_equal(pred[0], info["expected"][("vid_a", "0")])


def test_markdown_table():
    md = jf_rows_to_markdown([{"subset": "all", "J": 0.5, "F": 0.25, "J&F": 0.375, "N": 4},
                              {"subset": "motion", "J": float("nan"), "F": float("nan"), "J&F": float("nan"),
                               "N": 0}], title="t")
    assert "| all | 50.0 | 25.0 | 37.5 | 4 |" in md and "| motion | - | - | - | 0 |" in md and "**t**" in md


def test_cli_prints_the_floors_on_video_data(synvid, tmp_path, capsys):
    assert main(["evaluate", "--data", str(synvid), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "`largest_object_per_frame`" in out and "`first_frame_gt`" in out and "J&F (%)" in out
    assert "| all |" in out and "nothing written" in out
    # the split folder itself, --trivial-only beside a checkpoint, --out
    dest = tmp_path / "eval"
    assert main(["evaluate", "--data", str(synvid / "valid_u"), "--checkpoint", str(tmp_path), "--trivial-only",
                 "--limit", "3", "--out", str(dest)]) == 0
    saved = json.loads((dest / "eval.json").read_text())
    assert saved["model"] is None and saved["trivial"]["first_frame_gt"][0]["N"] == 3
    assert "eval.json" in capsys.readouterr().out


def test_cli_errors_on_video_data(synvid, tmp_path, cli_error):
    assert "not a SalmaModel checkpoint directory" in cli_error(["evaluate", "--data", synvid, "--checkpoint",
                                                                 tmp_path])
    assert "split folder 'valid_u' but --split is 'train'" in cli_error(["evaluate", "--data", synvid / "valid_u",
                                                                          "--split", "train"])
    assert "split folder" in cli_error(["evaluate", "--data", tmp_path, "--video"])
    # an image dataset still needs a checkpoint
    assert "--checkpoint is required" in cli_error(["evaluate", "--data", tmp_path])
