"""Refer-format loader (salma.data.refer): the hand-written RefCOCOg fixture and every user error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from salma.data.refer import DATASETS, ReferDataset, ReferSample, decode_segmentation


@pytest.fixture()
def refcocog(tmp_path, fixture_builders):
    expected = fixture_builders.make_refcocog_fixture(tmp_path)
    return tmp_path, expected


def test_fixture_loads_one_sample_per_sentence(refcocog):
    root, expected = refcocog
    ds = ReferDataset(root, "refcocog", "umd", "val")
    assert len(ds) == expected["n_val"] == 4
    assert [s.sent_id for s in ds] == [11, 12, 21, 41]
    s = ds[0]
    assert isinstance(s, ReferSample)
    assert (s.ref_id, s.ann_id, s.image_id, s.expression) == (1, 101, 1, "the man in the middle")
    assert s.kind == "plain" and s.distractor_ann_ids == ()
    assert s.file_name == "COCO_train2014_000000000001.jpg"  # the image's name, not the ref's
    assert s.area_ratio == pytest.approx(48 / (12 * 16))
    assert len(ReferDataset(root, "refcocog", "umd", "test")) == expected["n_test"]
    assert ds.image_ids() == [1, 2]
    assert [x.sent_id for x in ds.samples_for_image(2)] == [21, 41]


def test_fixture_images_and_masks(refcocog):
    root, expected = refcocog
    ds = ReferDataset(root, "refcocog", split="val")  # umd is the default splitBy
    img1 = ds.load_image(ds[0])
    assert img1.shape == (12, 16, 3) and img1.dtype == np.uint8
    img2 = ds.load_image(ds[2])  # grayscale PNG -> RGB
    assert img2.shape == (16, 16, 3)
    assert np.array_equal(img2[..., 0], img2[..., 1])
    for s in ds:
        m = ds.load_mask(s)
        assert m.dtype == bool
        assert np.array_equal(m, expected["masks"][s.ann_id]), s.ann_id
    # the uncompressed list-of-RLE annotation (test split) and object_masks of an image
    objs = dict(ds.object_masks(2))
    assert sorted(objs) == [102, 103, 104]
    for ann_id, m in objs.items():
        assert np.array_equal(m, expected["masks"][ann_id])


def test_decode_segmentation_forms():
    m = np.zeros((6, 5), bool)
    m[1:3, 2:4] = True
    poly = [[2.0, 1.0, 4.0, 1.0, 4.0, 3.0, 2.0, 3.0]]
    assert np.array_equal(decode_segmentation(poly, 6, 5), m)
    # uncompressed counts, column-major: 2*6+1 zeros, 2 ones, 4 zeros, 2 ones, rest zeros
    counts = [13, 2, 4, 2, 30 - 21]
    assert np.array_equal(decode_segmentation([{"size": [6, 5], "counts": counts}], 6, 5), m)
    assert np.array_equal(decode_segmentation({"size": [6, 5], "counts": counts}, 6, 5), m)
    with pytest.raises(ValueError, match="annotation 7: segmentation of unknown form"):
        decode_segmentation("not a mask", 6, 5, ann_id=7)
    with pytest.raises(ValueError, match="annotation 8: segmentation of unknown form"):
        decode_segmentation([1.0, 2.0, 3.0], 6, 5, ann_id=8)
    with pytest.raises(ValueError, match="annotation 9: RLE size"):
        decode_segmentation([{"size": [5, 5], "counts": [25]}], 6, 5, ann_id=9)


def test_errors_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root .*nowhere.* does not exist"):
        ReferDataset(tmp_path / "nowhere", "synref")
    with pytest.raises(FileNotFoundError, match=r"instances\.json.*python -m salma data generate synref"):
        ReferDataset(tmp_path, "synref")
    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco" / "instances.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\)\.p .*refer"):
        ReferDataset(tmp_path, "refcoco", split="val")


def test_errors_corrupt_files(refcocog):
    root, _ = refcocog
    inst = root / "refcocog" / "instances.json"
    good = inst.read_bytes()
    inst.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"corrupt JSON file .*instances\.json"):
        ReferDataset(root, "refcocog", split="val")
    inst.write_bytes(good)
    refs = root / "refcocog" / "refs(umd).p"
    refs.write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(ValueError, match=r"corrupt refs pickle .*refs\(umd\)\.p"):
        ReferDataset(root, "refcocog", split="val")


def test_errors_unknown_names(refcocog):
    root, _ = refcocog
    with pytest.raises(ValueError, match=r"unknown dataset 'refclef'.*refcoco\+.*synref"):
        ReferDataset(root, "refclef")
    with pytest.raises(ValueError, match=r"unknown split 'testA' for refcocog \(umd\); accepted: .*'test'"):
        ReferDataset(root, "refcocog", split="testA")
    with pytest.raises(ValueError, match=r"unknown splitBy 'unc' for refcocog"):
        ReferDataset(root, "refcocog", "unc", "val")
    assert set(DATASETS["refcocog"]) == {"umd", "google"}


def test_error_image_size_mismatch(refcocog):
    root, _ = refcocog
    ds = ReferDataset(root, "refcocog", split="val")
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(root / "images" / "COCO_train2014_000000000001.jpg")
    with pytest.raises(ValueError, match=r"COCO_train2014_000000000001\.jpg is 10x16 .* says 12x16"):
        ds.load_image(ds[0])
    (root / "images" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_train2014_000000000001\.jpg is missing"):
        ds.load_image(ds[0])


def test_error_unknown_segmentation_names_ann(refcocog):
    root, _ = refcocog
    inst = root / "refcocog" / "instances.json"
    data = json.loads(inst.read_text())
    data["annotations"][0]["segmentation"] = {"polygon": [1, 2, 3]}
    inst.write_text(json.dumps(data))
    ds = ReferDataset(root, "refcocog", split="val")
    with pytest.raises(ValueError, match="annotation 101: segmentation of unknown form.*polygons"):
        ds.load_mask(ds[0])


def test_object_categories_follow_object_masks(tmp_path):
    """``object_categories`` lists each annotation's category in ``object_masks`` order (SynRef: the shape)."""
    from salma.data.synref import generate_synref
    from salma.data.synref_words import SHAPES

    generate_synref(tmp_path, seed=2, scene_size=32, n_images={"train": 0, "val": 3, "testA": 0, "testB": 0},
                    progress=False)
    ds = ReferDataset(tmp_path, "synref", split="val")
    assert ds.categories() == sorted({SHAPES.index(a["shape"]) + 1 for a in ds.anns.values()})
    for image_id in ds.image_ids():
        ids = [a for a, _ in ds.object_masks(image_id)]
        assert ds.object_categories(image_id) == [SHAPES.index(ds.anns[a]["shape"]) + 1 for a in ids]
