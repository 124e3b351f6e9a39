"""SynRef-Video generator (salma.data.synref_video), read back by VideoReferDataset; its manifest and CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from salma.__main__ import main
from salma.data.manifest import default_manifest_path, verify, write_manifest
from salma.data.synref_clip import KINDS, make_clip, vocabulary
from salma.data.synref_video import DEFAULT_N_VIDEOS, GENERATOR_VERSION, generate_synref_video, video_name
from salma.data.synref_words import COLOURS, SHAPES, tokenize
from salma.data.video_format import VideoReferDataset

SPLITS = ("train", "valid_u")
JSON_FILES = ("meta_expressions.json", "mask_dict.json")
DIRS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}  # word -> (axis x=0/y=1, sign)


@pytest.fixture(scope="module")
def modest(tmp_path_factory):
    """30 clips at 48x48, 12 frames (about a second): every motion word, both kinds, absent frames."""
    root = tmp_path_factory.mktemp("synref_video_modest")
    generate_synref_video(root, seed=3, scene_size=48, n_frames=12, n_videos={"train": 6, "valid_u": 24},
                          progress=False)
    return root


def _meta(root, split="valid_u") -> dict:
    return json.loads((root / split / "meta_expressions.json").read_text())


def _tiny(root, **kw):
    """Two 32x32 clips of 8 frames in valid_u (tens of milliseconds)."""
    return generate_synref_video(root, seed=kw.pop("seed", 1), scene_size=32, n_frames=8,
                                 n_videos=kw.pop("n_videos", {"valid_u": 2}), progress=False, **kw)


def _centroids(masks: np.ndarray) -> np.ndarray:
    """(T, H, W) bool, every frame non-empty -> (T, 2) (x, y)."""
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def test_same_seed_is_byte_identical_and_counts_leave_clips_unchanged(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    counts = {"train": 3, "valid_u": 2}
    generate_synref_video(a, seed=1, scene_size=32, n_frames=8, n_videos=counts, progress=False)
    generate_synref_video(b, seed=1, scene_size=32, n_frames=8, n_videos=counts, progress=False, workers=2)
    for split in SPLITS:
        for name in JSON_FILES:
            assert (a / split / name).read_bytes() == (b / split / name).read_bytes(), (split, name)
    # more train clips: the first three (frames, masks, expressions, anno ids) and valid_u are unchanged
    generate_synref_video(c, seed=1, scene_size=32, n_frames=8, n_videos={"train": 5, "valid_u": 2},
                          progress=False)
    for name in JSON_FILES:
        assert (a / "valid_u" / name).read_bytes() == (c / "valid_u" / name).read_bytes()
    meta_a, meta_c = _meta(a, "train"), _meta(c, "train")
    assert meta_a["info"]["n_videos"] == 3 and meta_c["info"]["n_videos"] == 5
    md_a = json.loads((a / "train" / "mask_dict.json").read_text())
    md_c = json.loads((c / "train" / "mask_dict.json").read_text())
    for vid, entry in meta_a["videos"].items():
        assert meta_c["videos"][vid] == entry
        for obj in entry["objects"]:
            assert md_c[str(obj["anno_id"])] == md_a[str(obj["anno_id"])]
        for f in entry["frames"]:
            rel = f"train/JPEGImages/{vid}/{f}.jpg"
            assert (a / rel).read_bytes() == (c / rel).read_bytes()
    assert len(meta_c["videos"]) == 5 and len(md_c) > len(md_a)
    # the manifest machinery of SynRef checks SynRef-Video too; another seed breaks the checksums
    manifest = tmp_path / "m.yaml"
    write_manifest(a, manifest, "synref_video")
    assert verify(b, manifest, "synref_video") == []
    data = yaml.safe_load(manifest.read_text())
    assert data["generator"]["version"] == GENERATOR_VERSION and data["generator"]["n_frames"] == 8
    assert data["counts"]["videos"] == counts and data["counts"]["frames"] == {"train": 24, "valid_u": 16}
    generate_synref_video(tmp_path / "d", seed=2, scene_size=32, n_frames=8, n_videos=counts, progress=False)
    assert any("sha256 mismatch" in p and "meta_expressions.json" in p
               for p in verify(tmp_path / "d", manifest, "synref_video"))
    (b / "train" / "JPEGImages" / video_name(1) / "00004.jpg").unlink()
    assert any("frame(s) missing" in p for p in verify(b, manifest, "synref_video"))


def test_round_trip_generator_files_loader(modest):
    n_null = 0
    for split, n in (("train", 6), ("valid_u", 24)):
        ds = VideoReferDataset(modest, split)
        by_video = {}
        for s in ds:
            by_video.setdefault(s.video, []).append(s)
        assert sorted(by_video) == [video_name(i) for i in range(n)]
        md = ds.mask_dict
        meta = _meta(modest, split)
        for index in range(n):
            clip = make_clip(3, split, index, 48, 12)
            samples = by_video[video_name(index)]
            assert [s.text for s in samples] == [e.sentence for e in clip.expressions]
            frames = ds.load_frames(samples[0])
            assert frames.shape == clip.frames.shape == (12, 48, 48, 3)
            # JPEG (quality 95, no chroma subsampling) is close to the generated frames, not equal: about
            # 3 grey levels on average, mostly the pixel noise it smooths, on objects as elsewhere
            err = np.abs(frames.astype(int) - clip.frames.astype(int)).mean(axis=-1)
            on_objects = np.any([o.full for o in clip.objects], axis=0)
            assert err.mean() < 5 and err[on_objects].mean() < 5
            for s, e in zip(samples, clip.expressions):
                assert s.kind == e.kind
                assert np.array_equal(ds.load_masks(s), clip.objects[e.target].masks)
            # every object, frame by frame: null exactly where the visible mask is empty
            objects = meta["videos"][video_name(index)]["objects"]
            assert len(objects) == len(clip.objects)
            for rec, o in zip(objects, clip.objects):
                per_frame = md[str(rec["anno_id"])]
                assert [m is None for m in per_frame] == [not m.any() for m in o.masks]
                n_null += sum(m is None for m in per_frame)
    assert n_null > 0  # some objects leave the frame or hide behind others


def test_motion_words_are_true_to_the_masks(modest):
    seen = set()
    for split in SPLITS:
        ds = VideoReferDataset(modest, split)
        for s in ds:
            if s.kind != "motion":
                continue
            words = s.text.split()
            m = ds.load_masks(s)
            visible = m.any(axis=(1, 2))
            if "moving" in words:
                word = words[words.index("moving") + 1]
                axis, sign = DIRS[word]
                c = _centroids(m[visible])
                assert visible.sum() >= 3, s
                assert (np.diff(c[:, axis]) * sign > 0).all(), (s.text, c)
            elif words[-1] == "stops":
                word = "stops"
                late = m[-(len(m) // 4):]
                assert visible.all() and (late == late[0]).all(), s.text  # late frames stay put
                first, last = _centroids(m[[0, -1]])
                assert np.abs(last - first).max() >= 2, s.text  # it did move before stopping
            else:
                assert words[1] == "still", s.text
                word = "still"
                assert visible.all() and (m == m[0]).all(), s.text
            seen.add(word)
    assert seen == {"left", "right", "up", "down", "stops", "still"}


def _fits(obj: dict, words: list[str]) -> bool:
    """An independent reading of an expression: attribute words, then motion words read loosely."""
    size = {"small": "small", "large": "large", "big": "large"}
    for w in words:
        if (w in COLOURS and obj["colour"] != w) or (w in SHAPES and obj["shape"] != w):
            return False
        if (w in size and obj["size"] != size[w]) or (w in ("dark", "bright") and obj["shade"] != w):
            return False
    if "moving" in words:  # something that moves that way, even if it stops later
        return obj["motion"] in ("move", "stops") and obj["direction"] == words[words.index("moving") + 1]
    if "stops" in words:
        return obj["motion"] == "stops"
    if "still" in words:  # at rest, at least once it has stopped
        return obj["motion"] in ("still", "stops")
    return True


def test_each_expression_fits_exactly_its_target(modest):
    motion_words = {"moving", "left", "right", "up", "down", "that", "stops", "still"}
    n = 0
    for split in SPLITS:
        for vid, entry in _meta(modest, split)["videos"].items():
            objs = entry["objects"]
            for e in entry["expressions"].values():
                words = e["exp"].split()
                fits = [o["anno_id"] for o in objs if _fits(o, words)]
                assert fits == e["anno_id"], (vid, e["exp"], fits)
                if e["kind"] == "motion":
                    # MeViS-style: without its motion words the expression names the look-alikes too
                    plain = [w for w in words if w not in motion_words]
                    same = [o["anno_id"] for o in objs if _fits(o, plain)]
                    assert len(same) >= 2 and set(e["lookalike_anno_ids"]) <= set(same), (vid, e["exp"])
                    t = next(o for o in objs if o["anno_id"] == e["anno_id"][0])
                    for la in e["lookalike_anno_ids"]:
                        o = next(o for o in objs if o["anno_id"] == la)
                        assert [o[k] for k in ("colour", "shape", "size", "shade")] == \
                               [t[k] for k in ("colour", "shape", "size", "shade")]
                        assert (o["motion"], o["direction"]) != (t["motion"], t["direction"])
                else:
                    assert not set(words) & motion_words and e["lookalike_anno_ids"] == []
                n += 1
    assert n > 40


def test_kinds_counts_and_vocabulary(modest):
    vocab = set(vocabulary())
    kinds = []
    for split in SPLITS:
        for entry in _meta(modest, split)["videos"].values():
            assert 3 <= len(entry["objects"]) <= 5 and 1 <= len(entry["expressions"]) <= 3
            assert entry["frames"] == [f"{k:05d}" for k in range(12)]
            for e in entry["expressions"].values():
                kinds.append(e["kind"])
                assert set(tokenize(e["exp"])) <= vocab, e["exp"]
    assert set(kinds) == set(KINDS)
    assert min(kinds.count(k) for k in KINDS) >= 0.3 * len(kinds)


# Bad inputs: each error names the video (and frame) and says what to do.


def test_error_frame_missing_on_disk(tmp_path):
    root = _tiny(tmp_path)
    (root / "valid_u" / "JPEGImages" / "sv_000000" / "00003.jpg").unlink()
    ds = VideoReferDataset(root)
    with pytest.raises(FileNotFoundError, match="video 'sv_000000': frame '00003' is listed .* missing on "
                                                "disk .*restore the frame"):
        ds.load_frames(ds[0])


def test_error_frames_of_different_sizes(tmp_path):
    root = _tiny(tmp_path)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "valid_u" / "JPEGImages" / "sv_000000" / "00002.jpg")
    ds = VideoReferDataset(root)
    with pytest.raises(ValueError, match="video 'sv_000000': frame '00002' is 24x32 but frame '00000' is 32x32; "
                                         ".*re-extract"):
        ds.load_frames(ds[0])


def test_error_rle_size_differs_from_frame(tmp_path):
    root = _tiny(tmp_path)
    ds = VideoReferDataset(root)
    aid = ds[0].anno_ids[0]
    p = root / "valid_u" / "mask_dict.json"
    md = json.loads(p.read_text())
    k = next(k for k, m in enumerate(md[aid]) if m is not None)
    md[aid][k]["size"] = [16, 16]
    p.write_text(json.dumps(md))
    with pytest.raises(ValueError, match=rf"video 'sv_000000' frame '{k:05d}': RLE of anno_id '{aid}' has size "
                                         r"\[16, 16\] but the frame is \[32, 32\]; use the frames"):
        VideoReferDataset(root).load_masks(ds[0])


def test_error_object_absent_from_mask_dict(tmp_path):
    root = _tiny(tmp_path)
    ds = VideoReferDataset(root)
    aid = ds[0].anno_ids[0]
    p = root / "valid_u" / "mask_dict.json"
    md = json.loads(p.read_text())
    del md[aid]
    p.write_text(json.dumps(md))
    with pytest.raises(KeyError, match=f"video 'sv_000000' expression '0': anno_id '{aid}' is absent from "
                                       ".*mask_dict.json; .*one release"):
        VideoReferDataset(root).load_masks(ds[0])


def test_error_clip_with_zero_frames(tmp_path):
    root = _tiny(tmp_path)
    p = root / "valid_u" / "meta_expressions.json"
    meta = json.loads(p.read_text())
    meta["videos"]["sv_000001"]["frames"] = []
    p.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="video 'sv_000001' .* lists zero frames; .*remove the video"):
        VideoReferDataset(root)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown SynRef-Video split"):
        generate_synref_video(tmp_path, n_videos={"val": 3}, progress=False)
    with pytest.raises(ValueError, match="n_frames 6 is outside 8..24"):
        generate_synref_video(tmp_path, n_frames=6, n_videos={"valid_u": 1}, progress=False)
    with pytest.raises(ValueError, match="scene_size 16 is too small"):
        make_clip(0, "valid_u", 0, 16)


def test_cli_generate_manifest_verify(tmp_path, capsys):
    root, man = tmp_path / "cli", tmp_path / "cli.yaml"
    args = ["data", "generate", "synref_video", str(root), "--seed", "1", "--scene-size", "32", "--frames", "8",
            "--train", "2", "--valid_u", "1", "--write-manifest", str(man), "--no-progress"]
    assert main(args) == 0
    assert "SynRef-Video written" in capsys.readouterr().out
    assert [len(VideoReferDataset(root, s).videos()) for s in SPLITS] == [2, 1]
    assert main(["data", "verify", "synref_video", str(root), "--manifest", str(man)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "valid_u" / "mask_dict.json").write_bytes(b"{}")
    assert main(["data", "verify", "synref_video", str(root), "--manifest", str(man)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out
    # a SynRef split (or --frames for SynRef) is a user error: exit 2 with a message, no traceback
    assert main(["data", "generate", "synref_video", str(root), "--val", "3", "--no-progress"]) == 2
    assert "--val: not an option of synref_video" in capsys.readouterr().err
    assert main(["data", "generate", "synref", str(root), "--frames", "8", "--no-progress"]) == 2
    assert "--frames: not an option of synref" in capsys.readouterr().err


def test_default_manifest_matches_generator():
    """data_manifests/synref_video.yaml describes the default dataset of this generator version."""
    data = yaml.safe_load(default_manifest_path("synref_video").read_text())
    assert data["generator"]["version"] == GENERATOR_VERSION, (
        "the generator changed: regenerate the default SynRef-Video and its manifest (python -m salma data "
        "generate synref_video /tmp/synref_video_default --write-manifest data_manifests/synref_video.yaml)")
    assert (data["generator"]["seed"], data["generator"]["scene_size"], data["generator"]["n_frames"]) == (0, 64, 12)
    assert data["counts"]["videos"] == DEFAULT_N_VIDEOS


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SALMA_FULL_SYNREF"), reason="set SALMA_FULL_SYNREF=1: regenerates the "
                    "default SynRef-Video (~10 s) and checks it against data_manifests/synref_video.yaml")
def test_default_dataset_regenerates_to_manifest(tmp_path):
    root = generate_synref_video(tmp_path / "default", progress=False)
    assert verify(root, default_manifest_path("synref_video"), "synref_video") == []
