"""Video-format loader (salma.data.video_format) on a hand-written MeViS-style fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from salma.data.video_format import VideoReferDataset


@pytest.fixture()
def mevis(tmp_path, fixture_builders):
    info = fixture_builders.make_mevis_fixture(tmp_path)
    return tmp_path, info


def test_samples_frames_and_masks(mevis):
    root, info = mevis
    ds = VideoReferDataset(root, "valid_u")
    assert len(ds) == 3
    assert [(s.video, s.exp_id) for s in ds] == [("vid_a", "0"), ("vid_a", "1"), ("vid_b", "0")]
    assert ds[0].text == "the square moving to the left"
    assert [s.kind for s in ds] == ["motion", "plain", "appearance"]
    assert ds[1].anno_ids == ("1", "2") and ds[0].frames == ("00000", "00001", "00002")
    assert ds.videos() == ["vid_a", "vid_b"]
    for s in ds:
        frames = ds.load_frames(s)  # vid_a is .jpg, vid_b is .png
        assert frames.shape == (3, 16, 16, 3) and frames.dtype == np.uint8
        masks = ds.load_masks(s)
        assert masks.shape == (3, 16, 16) and masks.dtype == bool
        assert np.array_equal(masks, info["expected"][(s.video, s.exp_id)])
    # the union of anno ids: 8 + 8 pixels where both objects are present, only the first when null
    both = ds.load_masks(ds[1])
    assert both.sum(axis=(1, 2)).tolist() == [32, 32, 16]


def test_error_missing_frame(mevis):
    root, info = mevis
    (info["split_dir"] / "JPEGImages" / "vid_a" / "00001.jpg").unlink()
    ds = VideoReferDataset(root, "valid_u")
    with pytest.raises(FileNotFoundError, match="video 'vid_a': frame '00001' is listed .* missing on disk"):
        ds.load_frames(ds[0])


def test_error_frames_of_different_sizes(mevis):
    root, info = mevis
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(info["split_dir"] / "JPEGImages" / "vid_b" / "00002.png")
    ds = VideoReferDataset(root, "valid_u")
    with pytest.raises(ValueError, match="video 'vid_b': frame '00002' is 12x16 but frame '00000' is 16x16"):
        ds.load_frames(ds[2])


def test_error_rle_size_differs_from_frame(mevis):
    root, info = mevis
    p = info["split_dir"] / "mask_dict.json"
    md = json.loads(p.read_text())
    md["3"][1]["size"] = [8, 8]
    p.write_text(json.dumps(md))
    ds = VideoReferDataset(root, "valid_u")
    with pytest.raises(ValueError, match=r"video 'vid_b' frame '00001': RLE of anno_id '3' has size \[8, 8\]"):
        ds.load_masks(ds[2])


def test_error_object_absent_from_mask_dict(mevis):
    root, info = mevis
    p = info["split_dir"] / "mask_dict.json"
    md = json.loads(p.read_text())
    del md["2"]
    p.write_text(json.dumps(md))
    ds = VideoReferDataset(root, "valid_u")
    ds.load_masks(ds[0])  # anno 1 is still there
    with pytest.raises(KeyError, match="video 'vid_a' expression '1': anno_id '2' is absent from .*mask_dict"):
        ds.load_masks(ds[1])


def test_error_clip_with_zero_frames(mevis):
    root, info = mevis
    p = info["split_dir"] / "meta_expressions.json"
    meta = json.loads(p.read_text())
    meta["videos"]["vid_b"]["frames"] = []
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="video 'vid_b' .* lists zero frames"):
        VideoReferDataset(root, "valid_u")


def test_error_missing_split_and_meta(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoReferDataset(tmp_path / "none", "valid_u")
    (tmp_path / "valid_u").mkdir()
    with pytest.raises(FileNotFoundError, match=r"meta_expressions\.json"):
        VideoReferDataset(tmp_path, "valid_u")
    with pytest.raises(FileNotFoundError, match=r"split folder .*train.* does not exist .*valid_u"):
        VideoReferDataset(tmp_path, "train")


def test_ref_youtube_vos_annotations_png(tmp_path):
    """Without mask_dict.json, masks come from Annotations/<video>/<frame>.png palette ids (obj_id)."""
    d = tmp_path / "train"
    (d / "JPEGImages" / "v").mkdir(parents=True)
    (d / "Annotations" / "v").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "JPEGImages" / "v" / f"{k:05d}.jpg")
        ann = np.zeros((8, 8), np.uint8)
        ann[1:3, 1:3] = 1
        ann[5:7, 5:7] = 2
        im = Image.fromarray(ann, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
        im.save(d / "Annotations" / "v" / f"{k:05d}.png")
    meta = {"videos": {"v": {"frames": ["00000", "00001"],
                             "expressions": {"0": {"exp": "the green thing", "obj_id": "2"}}}}}
    (d / "meta_expressions.json").write_text(json.dumps(meta))
    ds = VideoReferDataset(tmp_path, "train")
    m = ds.load_masks(ds[0])
    assert m.shape == (2, 8, 8) and m.sum() == 8 and m[:, 5:7, 5:7].all()
