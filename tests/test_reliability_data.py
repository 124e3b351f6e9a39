"""Reliability issue 23, the data cases: what the refer / video loaders, the manifests and ``data verify`` must
refuse or report instead of silently using (case numbers of the issue in each test's name).

Case 3: duplicate ids. Case 4: refs pickles are read without running code from them, and not at all by
``verify`` once their checksum fails. Case 9: ``data manifest`` does not overwrite the tracked manifest.
Case 10: images decode completely (16-bit grayscale scaled, not clipped) and ``verify`` reports every broken
image and segmentation. Case 14: a data root that is a file is called a file.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import shutil
import struct

import numpy as np
import pytest
import yaml
from PIL import Image

from salma.cli import main
from salma.data.manifest import (
    dataset_stats,
    default_manifest_path,
    verify,
    video_dataset_stats,
    write_manifest,
)
from salma.data.refer import ReferDataset, load_refs_pickle
from salma.data.synref import generate_synref
from salma.data.synref_video import generate_synref_video
from salma.data.video_format import VideoReferDataset
from salma.io import sha256_file

INSTANCES, REFS = "synref/instances.json", "synref/refs(unc).p"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A SynRef of 6 val images at 32x32 and its manifest (well under a second); tests change copies of it."""
    root = tmp_path_factory.mktemp("reliability_synref") / "data"
    generate_synref(root, seed=0, scene_size=32, n_images={"train": 0, "val": 6, "testA": 0, "testB": 0},
                    progress=False)
    manifest = root.parent / "manifest.yaml"
    write_manifest(root, manifest)
    return root, manifest


@pytest.fixture()
def dataset(base, tmp_path):
    """A fresh copy of ``base``: (root, manifest of the unchanged data)."""
    root = shutil.copytree(base[0], tmp_path / "data")
    return root, base[1]


def _edit_instances(root, edit) -> None:
    path = root / INSTANCES
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_refs(root, edit) -> None:
    path = root / REFS
    refs = pickle.loads(path.read_bytes())
    edit(refs)
    path.write_bytes(pickle.dumps(refs, protocol=4))


def _manifest_for(root, manifest, tmp_path):
    """The manifest with the checksums of the annotation files as they are now (so ``verify`` reads them)."""
    data = yaml.safe_load(manifest.read_text())
    data["sha256"] = {rel: sha256_file(root / rel) for rel in data["sha256"]}
    out = tmp_path / "rehashed.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# ------------------------------------------------------------------------------------------ case 3: duplicate ids
DUPLICATES = {
    # a second entry under an existing id: a dict by id keeps the later one, so a ref meant for image 1 would
    # get another file, or a target's mask would become another object's
    "image id": (INSTANCES, lambda root: _edit_instances(
        root, lambda d: d["images"].append({**d["images"][0], "file_name": d["images"][1]["file_name"]}))),
    "annotation id": (INSTANCES, lambda root: _edit_instances(
        root, lambda d: d["annotations"].append({**d["annotations"][1], "id": d["annotations"][0]["id"]}))),
    "ref_id": (REFS, lambda root: _edit_refs(root, lambda refs: refs[1].update(ref_id=refs[0]["ref_id"]))),
    "sent_id": (REFS, lambda root: _edit_refs(
        root, lambda refs: refs[1]["sentences"][0].update(sent_id=refs[0]["sentences"][0]["sent_id"]))),
}


@pytest.mark.parametrize("what", list(DUPLICATES))
def test_case03_duplicate_id_is_refused(dataset, tmp_path, what):
    """Case 3: a repeated image / annotation id (instances.json) or ref_id / sent_id (refs pickle) is refused by
    the loader, by dataset_stats and by verify, naming the file, the id and how often it appears."""
    root, manifest = dataset
    rel, edit = DUPLICATES[what]
    edit(root)
    pattern = rf"{rel.split('/')[-1].replace('(', '.').replace(')', '.')}: {what} \d+ appears 2 times"
    with pytest.raises(ValueError, match=pattern):
        ReferDataset(root, "synref", split="val")
    with pytest.raises(ValueError, match=pattern):
        dataset_stats(root)
    problems = verify(root, _manifest_for(root, manifest, tmp_path))
    assert any(f"{what} " in p and "appears 2 times" in p and rel.split("/")[-1] in p for p in problems), problems


# -------------------------------------------------------------------------------- case 4: refs pickles run no code
class _Payload:
    """Unpickled by a full unpickler, this creates the file ``path``: what a crafted refs file could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _crafted_refs(sentinel) -> bytes:
    refs = [{"ref_id": 1, "ann_id": 1, "image_id": 1, "split": "val", "payload": _Payload(sentinel),
             "sentences": [{"sent_id": 1, "sent": "the red circle"}]}]
    return pickle.dumps(refs, protocol=2)


def test_case04_crafted_refs_pickle_is_refused_and_runs_nothing(dataset, tmp_path):
    """Case 4: a refs pickle asking for a global (here ``open``) is refused, naming the file and the global,
    and the file its payload would create is not created."""
    root, _ = dataset
    sentinel = tmp_path / "created_by_the_pickle"
    (root / REFS).write_bytes(_crafted_refs(sentinel))
    # the global's module is io in CPython 3.11 (builtins.open is io.open)
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p is not a plain refs pickle: it asks for the global "
                                         r"[\w.]*open,") as err:
        ReferDataset(root, "synref", split="val")
    assert str(root / REFS) in str(err.value)
    with pytest.raises(ValueError, match="not a plain refs pickle"):
        load_refs_pickle(root / REFS)
    assert not sentinel.exists()


def test_case04_verify_does_not_read_a_refs_pickle_whose_checksum_fails(dataset, tmp_path, capsys):
    """Case 4: ``data verify`` reports the checksum failure, skips the checks that need the file (saying so)
    and never opens it, so its payload does not run."""
    root, manifest = dataset
    sentinel = tmp_path / "created_by_the_pickle"
    (root / REFS).write_bytes(_crafted_refs(sentinel))
    problems = verify(root, manifest)
    assert not sentinel.exists()
    assert any(p.startswith("sha256 mismatch") and "refs(unc).p" in p for p in problems), problems
    assert any("skipped" in p and "not read" in p and REFS in p for p in problems), problems
    assert main(["data", "verify", "synref", str(root), "--manifest", str(manifest), "--no-progress"]) == 1
    assert "PROBLEM: sha256 mismatch" in capsys.readouterr().out
    assert not sentinel.exists()


def _py2_pickle(obj) -> bytes:
    """``obj`` as Python 2's ``cPickle.dump(obj, f, 2)`` writes it: bytes are Python 2 str (SHORT_BINSTRING /
    BINSTRING, raw bytes), str is Python 2 unicode (BINUNICODE, UTF-8), every container and string memoised."""
    out = [pickle.PROTO + b"\x02"]
    memo = [0]

    def put():
        n = memo[0]
        out.append(pickle.BINPUT + bytes([n]) if n < 256 else pickle.LONG_BINPUT + struct.pack("<I", n))
        memo[0] += 1

    def save(v):
        if v is None or isinstance(v, bool):
            out.append({None: pickle.NONE, True: pickle.NEWTRUE, False: pickle.NEWFALSE}[v])
        elif isinstance(v, int):
            out.append(pickle.BININT1 + bytes([v]) if 0 <= v < 256 else
                       pickle.BININT2 + struct.pack("<H", v) if 0 <= v < 65536 else pickle.BININT + struct.pack("<i", v))
        elif isinstance(v, float):
            out.append(pickle.BINFLOAT + struct.pack(">d", v))
        elif isinstance(v, bytes):
            out.append(pickle.SHORT_BINSTRING + bytes([len(v)]) + v if len(v) < 256
                       else pickle.BINSTRING + struct.pack("<i", len(v)) + v)
            put()
        elif isinstance(v, str):
            enc = v.encode("utf-8")
            out.append(pickle.BINUNICODE + struct.pack("<I", len(enc)) + enc)
            put()
        elif isinstance(v, list):
            out.append(pickle.EMPTY_LIST)
            put()
            if len(v) == 1:  # cPickle writes one item with APPEND, more between MARK and APPENDS
                save(v[0])
                out.append(pickle.APPEND)
            elif v:
                out.append(pickle.MARK)
                for x in v:
                    save(x)
                out.append(pickle.APPENDS)
        elif isinstance(v, dict):
            out.append(pickle.EMPTY_DICT)
            put()
            items = list(v.items())
            if len(items) == 1:
                save(items[0][0])
                save(items[0][1])
                out.append(pickle.SETITEM)
            elif items:
                out.append(pickle.MARK)
                for k, x in items:
                    save(k)
                    save(x)
                out.append(pickle.SETITEMS)
        else:
            raise TypeError(type(v))

    save(obj)
    out.append(pickle.STOP)
    return b"".join(out)


def _as_py2(v):
    """The refs as a Python 2 program held them: keys and most text as str (bytes; non-ASCII as latin1)."""
    if isinstance(v, dict):
        return {k.encode("latin1"): _as_py2(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_as_py2(x) for x in v]
    if isinstance(v, str):
        return v.encode("latin1")
    return v


def test_case04_python2_refs_pickle_still_loads(tmp_path, fixture_builders):
    """Case 4, good data unchanged: a Python-2 protocol-2 refs file (str as SHORT_BINSTRING with non-ASCII
    bytes, unicode raw sentences, ints of every width, floats, bools) loads through the restricted unpickler
    as the full one reads it with latin1, and ReferDataset serves its sentences."""
    fixture_builders.make_refcocog_fixture(tmp_path)
    path = tmp_path / "refcocog" / "refs(umd).p"
    refs = pickle.loads(path.read_bytes())
    py2 = _as_py2(refs)
    for r, r2 in zip(refs, py2):
        r2[b"sentences"][0][b"raw"] = r["sentences"][0]["raw"] + " \u00e9t\u00e9"  # Python 2 unicode
        r2[b"area_x"], r2[b"height"], r2[b"big"], r2[b"iscrowd"] = 0.25, 480, 70000, False
    py2[0][b"sentences"][0][b"sent"] = "the man in the caf\u00e9".encode("latin1")
    data = _py2_pickle(py2)
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"SHORT_BINSTRING", "BINUNICODE", "BININT1", "BININT2", "BININT", "BINFLOAT"} <= ops
    assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE"}
    path.write_bytes(data)
    loaded = load_refs_pickle(path)
    assert loaded == pickle.loads(data, encoding="latin1")
    assert loaded[0]["sentences"][0]["sent"] == "the man in the caf\u00e9" and loaded[0]["big"] == 70000
    ds = ReferDataset(tmp_path, "refcocog", "umd", "val")
    assert [s.expression for s in ds][:2] == ["the man in the caf\u00e9", "a person standing"]
    # a Python 3 protocol-2 refs file (str as BINUNICODE) loads too
    path.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_refs_pickle(path) == refs


# ---------------------------------------------------------------------------- case 9: the tracked manifest stays
def test_case09_data_manifest_without_out_leaves_the_tracked_manifest_alone(dataset, tmp_path, capsys):
    """Case 9: ``data manifest synref ROOT`` without --out is refused by the parser and data_manifests/synref.yaml
    stays byte-identical; with --out it writes there."""
    root, _ = dataset
    tracked = default_manifest_path("synref")
    before = tracked.read_bytes()
    try:
        try:
            code = main(["data", "manifest", "synref", str(root)])
        except SystemExit as exc:  # a plain argparse error exits; the kit's parser may return 2 instead
            code = exc.code
        assert code == 2 and "--out" in capsys.readouterr().err
        assert tracked.read_bytes() == before
    finally:
        if tracked.read_bytes() != before:  # the old behaviour: put the tracked file back
            tracked.write_bytes(before)
    out = tmp_path / "here.yaml"
    assert main(["data", "manifest", "synref", str(root), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["counts"]["images"] == {"val": 6}


# ------------------------------------------------------------------------------- case 10: images and annotations
def _png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_case10_16bit_grayscale_png_loads_as_8bit(tmp_path, fixture_builders):
    """Case 10: a 16-bit grayscale PNG (Pillow mode I;16) loads as its high bytes, not clipped to white; the
    same for a video frame."""
    fixture_builders.make_refcocog_fixture(tmp_path / "refer")
    # high byte k = 0..255 once each, low byte noise (which the 8-bit image drops)
    low = np.random.default_rng(0).integers(0, 256, 256)
    values = (np.arange(256) * 256 + low).astype(np.uint16).reshape(16, 16)
    png = _png_bytes(values)
    assert Image.open(io.BytesIO(png)).mode in ("I;16", "I")
    (tmp_path / "refer" / "images" / "COCO_train2014_000000000002.png").write_bytes(png)
    ds = ReferDataset(tmp_path / "refer", "refcocog", split="val")
    img = ds.load_image(ds[2])
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
    assert np.array_equal(img[..., 0], (values >> 8).astype(np.uint8)) and np.array_equal(img[..., 0], img[..., 2])
    assert len(np.unique(img)) == 256  # the old RGB conversion clipped every value above 255 to white

    fixture_builders.make_mevis_fixture(tmp_path / "video")
    (tmp_path / "video" / "valid_u" / "JPEGImages" / "vid_b" / "00001.png").write_bytes(png)
    vds = VideoReferDataset(tmp_path / "video", "valid_u")
    frames = vds.load_frames(vds.samples_for_video("vid_b")[0])
    assert np.array_equal(frames[1, ..., 1], (values >> 8).astype(np.uint8))


def test_case10_verify_decodes_every_image(dataset, capsys):
    """Case 10: verify reports each broken image by name (random bytes, truncated PNG, 1x1 where instances.json
    says 32x32, one of another size), not only the first, and ``data verify`` exits 1."""
    root, manifest = dataset
    assert verify(root, manifest) == []  # the good data passes
    files = sorted((root / "images").glob("*.png"))
    rng = np.random.default_rng(0)
    files[0].write_bytes(rng.bytes(400))
    files[1].write_bytes(files[1].read_bytes()[:60])
    files[2].write_bytes(_png_bytes(np.zeros((1, 1, 3), np.uint8)))
    files[3].write_bytes(_png_bytes(np.zeros((32, 48, 3), np.uint8)))
    problems = verify(root, manifest)
    for f, what in zip(files, ("cannot decode", "cannot decode", "is 1x1", "is 32x48")):
        assert any(f.name in p and what in p for p in problems), (f.name, problems)
    assert len(problems) == 4, problems
    assert main(["data", "verify", "synref", str(root), "--manifest", str(manifest), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert all(f"PROBLEM: cannot decode image {f}" in out for f in files[:2]) and files[2].name in out


def test_case10_verify_decodes_every_segmentation(dataset, tmp_path):
    """Case 10: verify reports each annotation that evaluate would reject (a polygon of 5 coordinates, an RLE
    of another size than its image) and a ref pointing to an absent annotation, naming them."""
    root, manifest = dataset
    bad = {}

    def edit(d):
        a, b = d["annotations"][0], d["annotations"][1]
        a["segmentation"] = [[1.0, 1.0, 5.0, 1.0, 5.0]]
        b["segmentation"] = {"size": [16, 16], "counts": [256]}
        bad.update(poly=a["id"], rle=b["id"])

    _edit_instances(root, edit)
    _edit_refs(root, lambda refs: refs[-1].update(ann_id=999999))
    problems = verify(root, _manifest_for(root, manifest, tmp_path))
    assert any(f"annotation {bad['poly']}: a polygon" in p and "instances.json" in p for p in problems), problems
    assert any(f"annotation {bad['rle']}: RLE size [16, 16]" in p for p in problems), problems
    assert any("points to annotation 999999" in p and "refs(unc).p" in p for p in problems), problems


def test_case10_verify_decodes_video_frames(tmp_path):
    """Case 10, video: verify reports a truncated frame and a frame of another size than its clip."""
    root = tmp_path / "video"
    generate_synref_video(root, seed=1, scene_size=32, n_frames=8, n_videos={"valid_u": 2}, progress=False)
    manifest = tmp_path / "video.yaml"
    write_manifest(root, manifest, "synref_video")
    assert verify(root, manifest, "synref_video") == []
    frames = sorted((root / "valid_u" / "JPEGImages").rglob("*.jpg"))
    frames[0].write_bytes(frames[0].read_bytes()[:200])
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(frames[3])
    problems = verify(root, manifest, "synref_video")
    assert any("cannot decode" in p and str(frames[0]) in p for p in problems), problems
    assert any(str(frames[3]) in p and "is 16x32" in p for p in problems), problems


# ----------------------------------------------------------------------------- case 14: a data root that is a file
def test_case14_data_root_that_is_a_file_is_called_a_file(tmp_path, base, cli_error):
    """Case 14: a file given as the data root is reported as a file, not as missing, with what to give instead."""
    f = tmp_path / "instances.json"
    f.write_text("{}")
    with pytest.raises(NotADirectoryError, match=r"instances\.json is a file, not a folder; give the folder that "
                                                 r"holds synref/instances\.json"):
        ReferDataset(f, "synref")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder.*meta_expressions.json"):
        VideoReferDataset(f, "valid_u")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        dataset_stats(f)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        video_dataset_stats(f)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        write_manifest(f, tmp_path / "m.yaml")
    problems = verify(f, base[1])
    assert len(problems) == 1 and "is a file, not a folder" in problems[0], problems
    assert "is a file, not a folder" in cli_error(["data", "trivial", "synref", f, "--no-progress"])
