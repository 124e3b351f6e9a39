"""Refer-format loader for RefCOCO / RefCOCO+ / RefCOCOg and SynRef (docs/method.md section 5).

The refer format (Yu et al., the ``refer`` API used by LISA, Sa2VA and SALMA):

    <data_root>/<dataset>/instances.json     COCO instances: images, annotations (segmentation), categories
    <data_root>/<dataset>/refs(<splitBy>).p  pickle list of refs: ref_id, ann_id, image_id, split,
                                             sentences [{sent, tokens, sent_id, raw}], ...
    <image_root>/<file_name>                 images (default <data_root>/images, where SynRef writes them;
                                             for real COCO pass e.g. .../images/mscoco/images/train2014)

Conventions: "refcoco" and "refcoco+" use splitBy "unc" (splits train, val, testA, testB); "refcocog"
uses "umd" (train, val, test) or "google" (train, val); "synref" uses "unc" (train, val, testA, testB).
One sample per sentence (expression), as the paper's evaluation counts expressions (RefCOCOg umd val:
4896).

Segmentations: polygons (a list of lists of floats; what real RefCOCO stores) or a list of RLEs
(compressed ``counts`` str/bytes or uncompressed list counts) are the forms the original refer API's
``getMask`` reads. A bare RLE dict is also accepted here (pycocotools reads it; the original refer API
does not, so files meant for other tools should not use it).

Checks on reading (``load_refer_annotations``, shared with ``salma.data.manifest``): image and annotation ids
are unique in instances.json, ref_id and sent_id in the refs file (the refer API keys its lookups by them, so a
repeat would silently replace an entry); the refs pickle is read without running code (``salma.data.safe_pickle``).
Images are decoded completely (``read_image_rgb``: a truncated file fails, 16-bit grayscale is scaled to 8 bits)
and must have the size instances.json gives.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from salma.data.safe_pickle import load_plain_pickle

# dataset -> {splitBy: accepted split names}; the first splitBy is the default.
# Cumulative area bins of paper Table 4: (row name, upper bound on GT area / image area, exclusive).
AREA_BINS: tuple[tuple[str, float], ...] = (("<1%", 0.01), ("<2%", 0.02), ("<5%", 0.05))

DATASETS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
    "synref": {"unc": ("train", "val", "testA", "testB")},
}


@dataclass(frozen=True)
class ReferSample:
    """One referring expression (one sentence of one ref).

    ``area_ratio`` is the target annotation's area / image area (SynRef stores the exact mask area;
    for real data the COCO ``area`` field is used). ``kind`` is SynRef's expression kind
    (attribute / distractor / relation) or "plain" for real data.
    """

    ref_id: int
    ann_id: int
    image_id: int
    sent_id: int
    expression: str
    file_name: str
    kind: str = "plain"
    area_ratio: float = float("nan")
    distractor_ann_ids: tuple[int, ...] = ()
    split: str = ""
    category_id: int = 0
    height: int = 0
    width: int = 0


def _how_to_get(dataset: str) -> str:
    if dataset == "synref":
        return "generate it with `python -m salma data generate synref <data_root>`"
    return (
        f"download {dataset}.zip of the refer API (github.com/lichengunc/refer, data/README) and unzip it "
        f"into <data_root> so that <data_root>/{dataset}/instances.json exists"
    )


def load_refs_pickle(path: Path) -> list[dict]:
    """Read a refs(<splitBy>).p pickle (list of ref dicts) without running code from it; errors name the file.

    The file is read by ``salma.data.safe_pickle``, which builds plain containers and scalars only and
    refuses every global (a crafted ``__reduce__``), so a tampered file fails here instead of running.
    """
    refs = load_plain_pickle(path, "refs pickle")
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        got = type(refs).__name__ if not isinstance(refs, list) else "a list holding a non-dict"
        raise ValueError(f"refs file {path} does not hold a list of ref dicts (got {got})")
    return refs


def load_instances_json(path: Path) -> dict:
    """Read a COCO instances.json; errors name the file."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt JSON file {path}: {exc}; re-download or regenerate the file") from exc
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path} is not a COCO instances file (needs 'images' and 'annotations' keys)")
    return data


def check_data_root(root: Path, what: str, holds: str, how_to_get: str = "") -> None:
    """Refuse a data root that is missing or is a file.

    ``holds`` names what the folder should hold (said when a file is given); ``how_to_get`` is the hint for
    a missing folder.

    Raises:
        FileNotFoundError ("does not exist") or NotADirectoryError ("is a file, not a folder").
    """
    if root.is_file():
        raise NotADirectoryError(f"{what} {root} is a file, not a folder; give the folder that holds {holds}")
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {root} does not exist" + (f"; {how_to_get}" if how_to_get else ""))


def _refuse_duplicates(ids: list, what: str, path: Path) -> None:
    """ValueError naming ``path``, the first duplicated id and its count, when ``ids`` repeat an id."""
    dup = [(i, n) for i, n in Counter(ids).items() if n > 1]
    if dup:
        (first, n), more = dup[0], len(dup) - 1
        raise ValueError(f"{path}: {what} {first} appears {n} times" + (f" ({more} more ids repeat too)" if more
                         else "") + f"; each {what} must be unique (with a repeat, a lookup by id silently takes "
                         "one entry and drops the other): re-download or regenerate the file")


@dataclass(frozen=True)
class ReferAnnotations:
    """A refer dataset's two annotation files, read and indexed by id (every id checked unique)."""

    instances: dict
    refs: list[dict]
    images: dict[int, dict]
    anns: dict[int, dict]


def load_refer_annotations(instances_path: Path, refs_path: Path) -> ReferAnnotations:
    """Read instances.json and the refs pickle, index images and annotations by id; errors name the file.

    Ids are unique as the refer API assumes (its lookups are dicts keyed by id): image ids and annotation
    ids within instances.json, ref ids and sentence ids (across all refs) within the refs file.

    Raises:
        ValueError naming the file: corrupt content, a malformed entry, or an id that appears N times.
    """
    instances = load_instances_json(instances_path)
    refs = load_refs_pickle(refs_path)
    try:
        image_ids = [int(im["id"]) for im in instances["images"]]
        ann_ids = [int(a["id"]) for a in instances["annotations"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{instances_path}: malformed image or annotation entry ({exc})") from exc
    _refuse_duplicates(image_ids, "image id", instances_path)
    _refuse_duplicates(ann_ids, "annotation id", instances_path)
    try:
        ref_ids = [int(r["ref_id"]) for r in refs]
        sent_ids = [int(s["sent_id"]) for r in refs for s in r["sentences"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{refs_path}: malformed ref (bad or missing {exc}); a ref needs ref_id and "
                         "sentences [{sent_id, sent, ...}]") from exc
    _refuse_duplicates(ref_ids, "ref_id", refs_path)
    _refuse_duplicates(sent_ids, "sent_id", refs_path)
    return ReferAnnotations(instances, refs, dict(zip(image_ids, instances["images"])),
                            dict(zip(ann_ids, instances["annotations"])))


# Pillow modes that hold 8 bits per sample, for which convert("RGB") is exact (palette looked up, alpha dropped).
RGB_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
# Integer grayscale modes Pillow opens 16-bit grayscale PNG / TIFF as; convert("RGB") would clip them to white.
GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode an image file completely to uint8 (H, W, 3) RGB.

    8-bit modes (``RGB_MODES``: grayscale, palette, bilevel, alpha, CMYK) go through Pillow's RGB
    conversion. 16-bit grayscale (``GRAY16_MODES``) is scaled to 8 bits by keeping the high byte
    (v >> 8: 0 -> 0, 65535 -> 255), chosen over refusing such files because the scaled image is what a viewer
    shows; a 32-bit "I" image with values outside 0..65535 is refused, as is any other mode (float, ...).

    Raises:
        ValueError naming the file: not an image, truncated or damaged, or an unsupported mode.
    """
    try:
        with Image.open(path) as im:
            # open() reads the header only; load() decodes every pixel, so a truncated file fails here
            # (ImageFile.LOAD_TRUNCATED_IMAGES is left False: a half image is not a valid image).
            im.load()
            mode = im.mode
            arr = np.asarray(im.convert("RGB")) if mode in RGB_MODES else np.asarray(im)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image {path}: {exc}; the file is damaged, truncated or not an image: "
                         "re-download or regenerate it") from exc
    if mode in RGB_MODES:
        return arr
    if mode not in GRAY16_MODES:
        raise ValueError(f"image {path} has the Pillow mode {mode!r}, which is not an 8-bit photo (accepted: "
                         f"{sorted(RGB_MODES)} and 16-bit grayscale); convert it to 8-bit RGB")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 0xFFFF):
        raise ValueError(f"image {path} is a 32-bit integer image with values in [{int(arr.min())}, "
                         f"{int(arr.max())}], outside the 16-bit range; convert it to 8-bit RGB")
    gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def load_checked_image(path: Path, entry: dict, instances_path: Path) -> np.ndarray:
    """``read_image_rgb`` of an image whose size must match its ``images`` entry of instances.json.

    Raises:
        ValueError naming the file and both sizes when they differ (and the ``read_image_rgb`` errors).
    """
    arr = read_image_rgb(path)
    expected = (int(entry["height"]), int(entry["width"]))
    if arr.shape[:2] != expected:
        raise ValueError(f"image {path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but {instances_path} "
                         f"says {expected[0]}x{expected[1]}: wrong image_root or mismatched files")
    return arr


def decode_rle(rle: dict) -> np.ndarray:
    """Decode one compressed COCO RLE dict to a (H, W) bool mask with pycocotools.

    pycocotools' ``decode`` emits a numpy-2 DeprecationWarning on every call (its ``np.array(copy=False)``);
    it is harmless and silenced here so that real warnings stay visible.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def decode_segmentation(segm, height: int, width: int, ann_id: int | str = "?") -> np.ndarray:
    """Decode a COCO segmentation to a (height, width) bool mask with pycocotools.

    Accepted forms: polygons (list of lists of floats), a list of RLE dicts (``counts`` as a compressed
    str/bytes or an uncompressed list of ints), or a bare RLE dict (pycocotools reads it; the original
    refer API does not).

    Raises:
        ValueError naming ``ann_id`` when the form is none of these or an RLE's size differs from
        (height, width).
    """
    forms = ("polygons (a list of lists of floats) or a list of RLE dicts {'size': [h, w], 'counts': ...} "
             "(a bare RLE dict is accepted too)")
    if isinstance(segm, dict):
        segm = [segm]
    if not isinstance(segm, list) or not segm:
        raise ValueError(f"annotation {ann_id}: segmentation of unknown form ({type(segm).__name__}: "
                         f"{str(segm)[:60]}); expected {forms}")
    if all(isinstance(p, (list, tuple)) for p in segm):
        polys = [[float(v) for v in p] for p in segm]
        if any(len(p) < 6 or len(p) % 2 for p in polys):
            raise ValueError(f"annotation {ann_id}: a polygon needs an even number (>= 6) of coordinates")
        rles = mask_utils.frPyObjects(polys, height, width)
    elif all(isinstance(r, dict) and "counts" in r and "size" in r for r in segm):
        rles = [rle_for_pycocotools(r, height, width, f"annotation {ann_id}: RLE size {{size}} differs from "
                                    f"the image size [{height}, {width}]") for r in segm]
    else:
        raise ValueError(f"annotation {ann_id}: segmentation of unknown form (a list of "
                         f"{sorted({type(p).__name__ for p in segm})}); expected {forms}")
    return decode_rle(mask_utils.merge(rles))


def rle_for_pycocotools(rle: dict, height: int, width: int, size_error: str) -> dict:
    """A COCO RLE dict (compressed str/bytes or uncompressed list ``counts``) in the form pycocotools
    decodes, after checking its size is (height, width); ``size_error`` is the ValueError message when it is
    not (``{size}`` is filled in with the RLE's size)."""
    size = [int(v) for v in rle["size"]]
    if size != [height, width]:
        raise ValueError(size_error.format(size=size))
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    if isinstance(counts, (str, bytes)):
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    # bad file content, not a programming error: ValueError like the other malformed forms
    raise ValueError(f"RLE counts of unknown type {type(counts).__name__}; expected a str/bytes "
                     "(compressed) or a list of ints (uncompressed)")


class ReferDataset:
    """Referring-expression samples of one split of a refer-format dataset, one per sentence.

    Args:
        data_root: folder holding ``<dataset>/instances.json`` and ``<dataset>/refs(<splitBy>).p``.
        dataset: "refcoco", "refcoco+", "refcocog" or "synref".
        split_by: "unc" (refcoco, refcoco+, synref), "umd" or "google" (refcocog); None = default.
        split: split name (see ``DATASETS``).
        image_root: image folder; default ``<data_root>/images``.
    """

    def __init__(self, data_root: Path | str, dataset: str = "synref", split_by: str | None = None,
                 split: str = "val", image_root: Path | str | None = None):
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; accepted: {sorted(DATASETS)}")
        split_bys = DATASETS[dataset]
        split_by = split_by or next(iter(split_bys))
        if split_by not in split_bys:
            raise ValueError(f"unknown splitBy {split_by!r} for {dataset}; accepted: {sorted(split_bys)}")
        if split not in split_bys[split_by]:
            raise ValueError(f"unknown split {split!r} for {dataset} ({split_by}); accepted: "
                             f"{list(split_bys[split_by])}")
        self.data_root = Path(data_root)
        self.dataset, self.split_by, self.split = dataset, split_by, split
        check_data_root(self.data_root, "data root", f"{dataset}/instances.json", _how_to_get(dataset))
        self.image_root = Path(image_root) if image_root is not None else self.data_root / "images"
        ann_dir = self.data_root / dataset
        self.instances_path = ann_dir / "instances.json"
        self.refs_path = ann_dir / f"refs({split_by}).p"
        for p in (self.instances_path, self.refs_path):
            if not p.is_file():
                raise FileNotFoundError(f"expected {p} (missing); {_how_to_get(dataset)}")
        loaded = load_refer_annotations(self.instances_path, self.refs_path)
        instances, refs = loaded.instances, loaded.refs
        self.images: dict[int, dict] = loaded.images
        self.anns: dict[int, dict] = loaded.anns
        self._anns_by_image: dict[int, list[int]] = defaultdict(list)
        for a in instances["annotations"]:
            self._anns_by_image[int(a["image_id"])].append(int(a["id"]))
        self.info = instances.get("info", {})

        samples: list[ReferSample] = []
        splits_present = set()
        for ref in refs:
            try:
                splits_present.add(ref["split"])
                if ref["split"] != split:
                    continue
                ann_id, image_id = int(ref["ann_id"]), int(ref["image_id"])
                sentences = ref["sentences"]
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{self.refs_path}: malformed ref (missing {exc}); a ref needs split, "
                                 "ann_id, image_id and sentences") from exc
            if ann_id not in self.anns:
                raise ValueError(f"{self.refs_path}: ref {ref.get('ref_id')} points to annotation {ann_id}, "
                                 f"which {self.instances_path} does not hold")
            if image_id not in self.images:
                raise ValueError(f"{self.refs_path}: ref {ref.get('ref_id')} points to image {image_id}, "
                                 f"which {self.instances_path} does not hold")
            im = self.images[image_id]
            ann = self.anns[ann_id]
            h, w = int(im["height"]), int(im["width"])
            area_ratio = float(ref.get("area_ratio", float(ann.get("area", float("nan"))) / (h * w)))
            for sent in sentences:
                samples.append(ReferSample(
                    ref_id=int(ref["ref_id"]), ann_id=ann_id, image_id=image_id,
                    sent_id=int(sent["sent_id"]), expression=str(sent["sent"]),
                    file_name=str(im["file_name"]), kind=str(ref.get("kind", "plain")),
                    area_ratio=area_ratio,
                    distractor_ann_ids=tuple(int(k) for k in ref.get("distractor_ann_ids", ())),
                    split=split, category_id=int(ref.get("category_id", ann.get("category_id", 0))),
                    height=h, width=w,
                ))
        if not samples:
            raise ValueError(f"{self.refs_path} holds no expressions of split {split!r} (splits present: "
                             f"{sorted(splits_present)})")
        self.samples = samples
        self._by_image: dict[int, list[int]] = defaultdict(list)
        for k, s in enumerate(samples):
            self._by_image[s.image_id].append(k)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> ReferSample:
        return self.samples[i]

    def __repr__(self) -> str:
        return (f"ReferDataset({self.dataset}, {self.split_by}, {self.split}: {len(self)} expressions on "
                f"{len(self._by_image)} images)")

    def image_ids(self) -> list[int]:
        """Image ids of this split, in first-appearance order."""
        return list(self._by_image)

    def samples_for_image(self, image_id: int) -> list[ReferSample]:
        """The expressions of this split on one image (evaluation caches image features per image)."""
        if image_id not in self._by_image:
            raise KeyError(f"image {image_id} has no expressions in {self.dataset} {self.split}")
        return [self.samples[k] for k in self._by_image[image_id]]

    def image_path(self, sample_or_image_id: ReferSample | int) -> Path:
        """Path of the image file of a sample (or image id)."""
        image_id = (sample_or_image_id.image_id if isinstance(sample_or_image_id, ReferSample)
                    else int(sample_or_image_id))
        return self.image_root / self.images[image_id]["file_name"]

    def load_image(self, sample_or_image_id: ReferSample | int) -> np.ndarray:
        """The image as uint8 (H, W, 3) RGB (grayscale, palette and RGBA converted, 16-bit grayscale scaled to
        8 bits: ``read_image_rgb``).

        Raises:
            FileNotFoundError naming the file; ValueError naming it when it does not decode completely, has
            an unsupported mode, or its size disagrees with its ``images`` entry in instances.json.
        """
        path = self.image_path(sample_or_image_id)
        image_id = (sample_or_image_id.image_id if isinstance(sample_or_image_id, ReferSample)
                    else int(sample_or_image_id))
        if not path.is_file():
            raise FileNotFoundError(f"image {path} is missing (image_root {self.image_root}); pass "
                                    "image_root= the folder holding the images")
        return load_checked_image(path, self.images[image_id], self.instances_path)

    def ann_mask(self, ann_id: int) -> np.ndarray:
        """Mask of one annotation, (H, W) bool, at its image's size."""
        ann = self.anns[int(ann_id)]
        im = self.images[int(ann["image_id"])]
        return decode_segmentation(ann["segmentation"], int(im["height"]), int(im["width"]), ann_id)

    def load_mask(self, sample: ReferSample) -> np.ndarray:
        """Ground-truth mask of a sample's target, (H, W) bool."""
        return self.ann_mask(sample.ann_id)

    def object_masks(self, image_id: int) -> list[tuple[int, np.ndarray]]:
        """Every annotation of an image: [(ann_id, (H, W) bool mask)], in instances.json order."""
        return [(a, self.ann_mask(a)) for a in self._anns_by_image.get(int(image_id), [])]

    def object_categories(self, image_id: int) -> list[int]:
        """COCO ``category_id`` of every annotation of an image, in ``object_masks`` order (0 when absent)."""
        return [int(self.anns[a].get("category_id", 0)) for a in self._anns_by_image.get(int(image_id), [])]

    def categories(self) -> list[int]:
        """The sorted category ids of every annotation in instances.json (all splits)."""
        return sorted({int(a.get("category_id", 0)) for a in self.anns.values()})
