"""SynRef generator (salma.data.synref), its manifest (salma.data.manifest), trivial predictors and CLI."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import yaml

from salma.__main__ import main
from salma.data.manifest import default_manifest_path, verify, write_manifest
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.data.synref_scene import make_scene
from salma.data.synref_words import (
    DEFAULT_N_IMAGES,
    DEFAULT_SPEC,
    GENERATOR_VERSION,
    KINDS,
    SHADES,
    tokenize,
    vocabulary,
)
from salma.eval.floors import evaluate_trivial, largest_object, whole_image

SMALL = {"train": 6, "val": 5, "testA": 2, "testB": 2}
ANN_FILES = ("synref/instances.json", "synref/refs(unc).p")


@pytest.fixture(scope="module")
def modest(tmp_path_factory):
    """300 images at 64x64 (a few seconds): enough for every kind and every area bin."""
    root = tmp_path_factory.mktemp("synref_modest")
    generate_synref(root, seed=3, scene_size=64, n_images={"train": 100, "val": 200}, progress=False)
    return root


def test_same_seed_is_byte_identical_and_matches_manifest(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synref(a, seed=0, scene_size=32, n_images=SMALL, progress=False)
    generate_synref(b, seed=0, scene_size=32, n_images=SMALL, progress=False)
    for rel in ANN_FILES:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    manifest = tmp_path / "m.yaml"
    write_manifest(a, manifest)
    assert verify(b, manifest) == []
    data = yaml.safe_load(manifest.read_text())
    assert data["generator"] == {"version": GENERATOR_VERSION, "seed": 0, "scene_size": 32,
                                 "command": data["generator"]["command"]}
    assert data["counts"]["images"] == {"testA": 2, "testB": 2, "train": 6, "val": 5}
    assert data["licence"] == "generated; CC0"
    # a different seed gives different files, which the manifest catches
    generate_synref(c, seed=1, scene_size=32, n_images=SMALL, progress=False)
    assert (a / ANN_FILES[0]).read_bytes() != (c / ANN_FILES[0]).read_bytes()
    problems = verify(c, manifest)
    assert any("sha256 mismatch" in p and "instances.json" in p for p in problems)


def test_workers_do_not_change_the_output(tmp_path):
    generate_synref(tmp_path / "w1", seed=4, scene_size=32, n_images=SMALL, progress=False, workers=1)
    generate_synref(tmp_path / "w2", seed=4, scene_size=32, n_images=SMALL, progress=False, workers=2)
    for rel in ANN_FILES:
        assert (tmp_path / "w1" / rel).read_bytes() == (tmp_path / "w2" / rel).read_bytes(), rel
    names = sorted(p.name for p in (tmp_path / "w2" / "images").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "w1" / "images").iterdir()) and len(names) == 15


def test_verify_reports_missing_files_and_images(tmp_path):
    root = tmp_path / "d"
    generate_synref(root, seed=0, scene_size=32, n_images=SMALL, progress=False)
    manifest = tmp_path / "m.yaml"
    write_manifest(root, manifest)
    next((root / "images").glob("*.png")).unlink()
    assert any("image(s) missing" in p for p in verify(root, manifest))
    (root / "synref" / "refs(unc).p").unlink()
    assert any(p.startswith("missing file") and "refs(unc).p" in p for p in verify(root, manifest))


def test_round_trip_generator_files_loader(tmp_path):
    root = generate_synref(tmp_path, seed=5, scene_size=48, n_images={"val": 6, "testB": 3}, progress=False)
    for split in ("val", "testB"):
        ds = ReferDataset(root, "synref", split=split)
        for image_id in ds.image_ids():
            samples = ds.samples_for_image(image_id)
            index = ds.images[image_id]["index"]
            scene = make_scene(5, split, index, 48)
            assert np.array_equal(ds.load_image(samples[0]), scene.image)
            objs = ds.object_masks(image_id)
            assert len(objs) == len(scene.objects)
            for (ann_id, m), o in zip(objs, scene.objects):
                assert np.array_equal(m, o.mask)
            assert [s.expression for s in samples] == [e.sentence for e in scene.expressions]
            for s, e in zip(samples, scene.expressions):
                assert np.array_equal(ds.load_mask(s), scene.objects[e.target].mask)
                assert s.kind == e.kind
                # a distractor scene also names its look-alike, as a relation (lookalike_expression_prob)
                assert e.kind == scene.kind or (scene.kind, e.kind) == ("distractor", "relation")
                assert s.area_ratio == scene.objects[e.target].area / 48**2


def test_annotations_are_coco_polygons(modest):
    import json

    inst = json.loads((modest / "synref" / "instances.json").read_text())
    for a in inst["annotations"][:50]:
        seg = a["segmentation"]
        assert isinstance(seg, list) and len(seg) == 1 and all(isinstance(v, float) for v in seg[0])
        assert a["iscrowd"] == 0 and {"colour", "shape", "size", "shade"} <= set(a)
    refs = pickle.loads((modest / "synref" / "refs(unc).p").read_bytes())
    r = refs[0]
    assert {"ref_id", "ann_id", "image_id", "split", "category_id", "file_name", "sent_ids", "sentences",
            "kind", "area_ratio", "distractor_ann_ids"} <= set(r)
    assert {"sent", "raw", "tokens", "sent_id"} <= set(r["sentences"][0])


def test_every_kind_and_area_bin_present(modest):
    ds = ReferDataset(modest, "synref", split="val")
    kinds = {s.kind for s in ds}
    assert kinds == set(KINDS)
    ratios = np.array([s.area_ratio for s in ds])
    assert (ratios < 0.01).sum() >= 5
    assert ((ratios >= 0.01) & (ratios < 0.02)).sum() >= 5
    assert ((ratios >= 0.02) & (ratios < 0.05)).sum() >= 5
    assert (ratios >= 0.05).sum() >= 5
    n_per_image = [len(ds.samples_for_image(i)) for i in ds.image_ids()]
    # up to 3 expressions per image; 4 in a distractor image with two groups and their look-alike expressions
    assert min(n_per_image) >= 1 and max(n_per_image) <= 4


def test_tokens_are_in_vocabulary(modest):
    vocab = vocabulary()
    assert vocab == sorted(set(vocab)) and all(w == w.lower() for w in vocab)
    refs = pickle.loads((modest / "synref" / "refs(unc).p").read_bytes())
    for r in refs:
        for s in r["sentences"]:
            assert s["tokens"] == tokenize(s["sent"])
            assert set(s["tokens"]) <= set(vocab), s["sent"]
    assert tokenize("The small, red Circle.") == ["the", "small", "red", "circle"]


def test_distractors_are_larger_brighter_look_alikes(modest):
    from salma.report.diagnose import word_signature

    ds = ReferDataset(modest, "synref", split="val")
    n = n_by_relation = 0
    for s in ds:
        if s.kind != "distractor":
            assert s.distractor_ann_ids == ()
            continue
        n += 1
        t = ds.anns[s.ann_id]
        assert t["size"] == "small"
        assert s.distractor_ann_ids, s
        first = ds.anns[s.distractor_ann_ids[0]]
        assert (first["colour"], first["shape"]) == (t["colour"], t["shape"])
        for d_id in s.distractor_ann_ids:
            d = ds.anns[d_id]
            assert d["area"] > 2 * t["area"]
            assert SHADES.index(d["shade"]) > SHADES.index(t["shade"])
            assert d["colour"] == t["colour"] or d["shape"] == t["shape"]
        # the expression names the target's colour or shape, which the look-alike shares, plus a relation
        # (synref-1.1) or, when the layout offers none, the size/shade modifier the look-alike lacks
        words = set(s.expression.split())
        assert t["colour"] in words or t["shape"] in words
        by_relation = "relation" in word_signature(s.expression)
        assert by_relation or words & {"small", "dark"}, s.expression
        n_by_relation += by_relation
    assert n >= 20 and n_by_relation >= n / 2, (n, n_by_relation)
    # attribute targets are mostly not small, so the attribute kind is not made easy or hard by size
    attr = [ds.anns[s.ann_id]["size"] for s in ds if s.kind == "attribute"]
    assert attr.count("small") / len(attr) < 0.4


def test_trivial_predictors(modest):
    m = np.zeros((4, 4), bool)
    big = np.ones((4, 4), bool)
    assert largest_object([(1, m), (2, big)]) is not None and largest_object([m, big]).all()
    assert whole_image((3, 5)).shape == (3, 5) and whole_image((3, 5)).all()
    with pytest.raises(ValueError, match="at least one object"):
        largest_object([])
    ds = ReferDataset(modest, "synref", split="val")
    res = evaluate_trivial(ds, limit=120, progress=False)
    rows = {r["subset"]: r for r in res["largest_object"]}
    assert rows["all"]["N"] == 120
    # the saliency predictor fails on distractor expressions by construction
    assert rows["distractor"]["cIoU"] < 0.05 < rows["attribute"]["cIoU"]
    whole = {r["subset"]: r for r in res["whole_image"]}
    assert 0 < whole["all"]["cIoU"] < 0.1


def test_cli_generate_verify_trivial(tmp_path, capsys):
    root = tmp_path / "cli"
    man = tmp_path / "cli.yaml"
    args = ["data", "generate", "synref", str(root), "--seed", "2", "--scene-size", "32", "--train", "3",
            "--val", "4", "--testA", "1", "--testB", "1", "--write-manifest", str(man), "--no-progress"]
    assert main(args) == 0
    assert main(["data", "verify", "synref", str(root), "--manifest", str(man)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "synref" / "instances.json").write_bytes(b"{}")
    assert main(["data", "verify", "synref", str(root), "--manifest", str(man)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out
    generate_synref(root, seed=2, scene_size=32, n_images={"train": 3, "val": 4, "testA": 1, "testB": 1},
                    progress=False)
    assert main(["data", "trivial", "synref", str(root), "--split", "val", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "**largest_object**" in out and "| all |" in out
    # user errors: a message naming the path, exit status 2, no traceback
    assert main(["data", "trivial", "synref", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown SynRef split"):
        generate_synref(tmp_path, n_images={"test": 3}, progress=False)
    with pytest.raises(ValueError, match="scene_size 8 is too small"):
        make_scene(0, "val", 0, 8)


def test_default_manifest_matches_generator():
    """data_manifests/synref.yaml describes the default dataset of this generator version."""
    path = default_manifest_path("synref")
    data = yaml.safe_load(path.read_text())
    assert data["generator"]["version"] == GENERATOR_VERSION, (
        "the generator changed: regenerate the default SynRef and its manifest "
        "(python -m salma data generate synref /tmp/synref_default --write-manifest data_manifests/synref.yaml)")
    assert data["generator"]["seed"] == 0 and data["generator"]["scene_size"] == 64
    assert data["counts"]["images"] == {k: DEFAULT_N_IMAGES[k] for k in sorted(DEFAULT_N_IMAGES)}


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SALMA_FULL_SYNREF"), reason="set SALMA_FULL_SYNREF=1: regenerates the "
                    "default SynRef of the small preset (~1 min) and checks it against data_manifests/synref.yaml")
def test_default_dataset_regenerates_to_manifest(tmp_path):
    root = generate_synref(tmp_path / "default", progress=False)
    assert verify(root, default_manifest_path("synref")) == []


def test_decoys_share_colour_or_shape_and_force_longer_descriptions():
    """distractor_decoy_prob=1: beside each distractor target sit small objects sharing its colour or its
    shape; the default (0) draws nothing, so synref-1.0 scenes are unchanged by the knob's existence."""
    from dataclasses import replace

    spec = replace(DEFAULT_SPEC, distractor_decoy_prob=1.0, distractor_two_groups_prob=0.0)
    n_checked = 0
    for index in range(60):
        if make_scene(7, "train", index, 64).kind != "distractor":
            continue
        scene = make_scene(7, "train", index, 64, spec)
        if scene.kind != "distractor":
            continue  # the kind is drawn first, from the same stream, so this does not happen
        e = scene.expressions[0]
        t = scene.objects[e.target]
        others = [o for k, o in enumerate(scene.objects) if k != e.target and k not in e.distractors]
        small = [o for o in others if o.size_class == "small"]
        share_colour = [o for o in small if o.colour == t.colour and o.shape != t.shape]
        share_shape = [o for o in small if o.shape == t.shape and o.colour != t.colour]
        if len(scene.objects) < DEFAULT_SPEC.max_objects:  # room for both decoys (placed before fillers)
            assert share_colour and share_shape, (index, e.sentence)
        assert share_colour or share_shape, (index, e.sentence)
        n_checked += 1
    assert n_checked >= 10


def test_relation_named_distractors_drop_size_and_shade_words_and_keep_the_default():
    """distractor_relation_prob=1 (synref-1.1's default): a distractor target is named by a relation (no size or
    shade word) when one exists; the expression still fits only the target. Other kinds' scenes are the same
    as synref-1.0's (the knob at 0), and the 1.0 spec names no distractor target by a relation."""
    from salma.data.synref_words import SYNREF_1_0_SPEC
    from salma.report.diagnose import word_signature

    spec = DEFAULT_SPEC
    assert spec.distractor_relation_prob == 1.0 and SYNREF_1_0_SPEC.distractor_relation_prob == 0.0
    n_relation = n_base_relation = 0
    for index in range(80):
        base = make_scene(3, "val", index, 64, SYNREF_1_0_SPEC)
        n_base_relation += sum(e.kind == "distractor" and "relation" in word_signature(e.sentence)
                               for e in base.expressions)
        scene = make_scene(3, "val", index, 64, spec)
        assert scene.kind == base.kind
        if base.kind != "distractor":
            assert [e.sentence for e in scene.expressions] == [e.sentence for e in base.expressions]
            assert np.array_equal(scene.image, base.image)
            continue
        for e in scene.expressions:
            if e.kind == "relation":
                continue  # a look-alike expression (lookalike_expression_prob, the next test)
            assert e.kind == "distractor" and e.distractors
            if "relation" in word_signature(e.sentence):
                n_relation += 1
                words = e.sentence.split()
                cut = min([words.index(w) for w in ("to", "above", "below", "with") if w in words] or [len(words)])
                target_words = set(words[:cut])  # the anchor after the relation may carry a size word
                assert not {"small", "large", "big", "dark", "bright", "smallest", "largest"} & target_words, e.sentence
    assert n_relation >= 5 and n_base_relation == 0


def test_lookalike_expressions_break_the_small_target_shortcut():
    """lookalike_expression_prob=1 (synref-1.1): a distractor scene also names its large look-alike, by an extreme
    or spatial relation with no size word, as a relation-kind expression; so "the small one of a pair sharing a
    description" is not always the answer. The 1.0 spec draws none."""
    from salma.data.synref_words import SYNREF_1_0_SPEC

    n_lookalike = 0
    for index in range(60):
        scene = make_scene(5, "val", index, 64)
        if scene.kind != "distractor":
            continue
        looks = {e.distractors[0] for e in scene.expressions if e.kind == "distractor"}
        for e in scene.expressions:
            if e.kind == "relation":
                assert e.target in looks and not e.distractors, e
                words = e.sentence.split()
                cut = min([words.index(w) for w in ("to", "above", "below") if w in words] or [len(words)])
                # the anchor after a spatial relation may carry a size word; the look-alike's own words do not
                assert not {"small", "large", "big", "smallest", "largest", "larger"} & set(words[:cut]), e
                n_lookalike += 1
        old = make_scene(5, "val", index, 64, SYNREF_1_0_SPEC)
        assert all(e.kind == "distractor" for e in old.expressions)
    assert n_lookalike >= 10
