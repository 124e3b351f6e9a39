"""SynRef: the kit's procedurally generated referring-segmentation benchmark, in the refer format.

docs/design.md section "The synthetic benchmark"; docs/method.md section 5 (refer format) and section 9 (the probe).
The paper's motivation (Sec. 1) is *attention drift*: a grounding model drifts to the most salient
object instead of the referred one, hurting small targets (Table 4). SynRef provokes that on purpose:

- ``attribute`` expressions ("the blue triangle", "the large dark red circle"): the target is unique by
  the words used; every object of the scene has a distinct (colour, shape) pair; targets are mostly of
  medium size, so this kind is not made easy by large targets;
- ``distractor`` expressions: the target is *small* and one or two *salient look-alikes* sit in the same
  scene: larger (mostly large) AND brighter, the first always of the same colour and shape, the second
  of the same class or sharing only the shape or only the colour. The expression names the target by
  what distinguishes it ("the small green square", "the dark red circle"), so a model that follows
  saliency picks the look-alike (``SynRefSpec.distractor_decoy_prob`` adds small decoys sharing the
  target's colour or shape; off by default);
- ``relation`` expressions: the target's description alone is ambiguous (2-3 objects share it) and a
  relation resolves it: "the circle to the left of the blue square", "the largest red shape",
  "the leftmost triangle", "the green diamond with a larger one to its left".

Word semantics are absolute and consistent across kinds, so that the language is learnable: "small",
"large"/"big" name size classes (area bands with gaps between them), "dark"/"bright" name shades;
"largest"/"smallest" need a 1.3x area margin; "left of"/"above"... need the two bounding boxes to be
separated along that axis.

Each object is a polygon (a 24-gon circle, square, triangle, diamond, cross), rasterised with pycocotools
(``frPyObjects`` + ``decode``); the image is painted from exactly that mask and objects never overlap
(one free pixel around each), so generator -> files -> loader -> masks round-trips exactly, and the
segmentation is stored as COCO polygons, as real RefCOCO stores it.

Files (``generate_synref``):
    <root>/images/synref_<split>_<image_id:06d>.png   RGB PNG, scene_size x scene_size
    <root>/synref/instances.json                      COCO instances (+ colour/shape/size/shade keys)
    <root>/synref/refs(unc).p                         refer-API refs (+ kind, area_ratio,
                                                       distractor_ann_ids), pickle protocol 4
The annotation files are byte-identical for the same seed and arguments.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import pickle
from dataclasses import asdict
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from salma.data.synref_scene import make_scene
from salma.data.synref_words import (
    DEFAULT_N_IMAGES,
    DEFAULT_SPEC,
    GENERATOR_VERSION,
    PICKLE_PROTOCOL,
    SHAPES,
    SPLITS,
    SynRefSpec,
    tokenize,
)
from salma.io import atomic_write_bytes


def image_file_name(split: str, image_id: int) -> str:
    """File name of a SynRef image (under <root>/images)."""
    return f"synref_{split}_{image_id:06d}.png"


def _write_scene(job: tuple) -> tuple[str, list[dict], list[dict]]:
    """Worker: generate one scene, write its PNG, return (kind, object records, expression records)."""
    seed, split, index, image_id, scene_size, spec, img_dir = job
    scene = make_scene(seed, split, index, scene_size, spec)
    Image.fromarray(scene.image).save(Path(img_dir) / image_file_name(split, image_id), format="PNG",
                                      compress_level=1)
    objects = []
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        objects.append({
            "category_id": SHAPES.index(o.shape) + 1, "segmentation": [o.polygon], "area": float(o.area),
            "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)], "iscrowd": 0,
            "colour": o.colour, "shape": o.shape, "size": o.size_class, "shade": o.shade, "rgb": list(o.rgb),
        })
    exprs = [{"sentence": e.sentence, "target": e.target, "kind": e.kind, "distractors": list(e.distractors),
              "area_ratio": scene.objects[e.target].area / float(scene_size * scene_size)}
             for e in scene.expressions]
    return scene.kind, objects, exprs


def check_split_counts(counts: dict[str, int], splits: tuple[str, ...], what: str, arg: str,
                       workers: int) -> dict[str, int]:
    """Validate per-split counts (keys among ``splits``, each >= 0) and ``workers`` (>= 1) of a generator;
    ValueError naming ``arg`` and the value. Returns the counts as a new dict."""
    counts = dict(counts)
    unknown = set(counts) - set(splits)
    if unknown:
        raise ValueError(f"unknown {what} split(s) {sorted(unknown)}; expected keys among {splits}")
    for k, v in counts.items():
        if int(v) < 0:
            raise ValueError(f"{arg}[{k!r}] = {v} must be >= 0")
    if int(workers) < 1:
        raise ValueError(f"workers = {workers} must be >= 1")
    return counts


@contextlib.contextmanager
def ordered_results(fn, jobs: list, workers: int, chunksize: int):
    """Yield an iterator over ``fn(job)`` for every job, in job order: in this process when ``workers`` is
    1, else in a pool of that many processes (closed when the block ends, also on an error)."""
    if int(workers) == 1:
        yield (fn(job) for job in jobs)
        return

    pool = multiprocessing.get_context().Pool(int(workers))
    try:
        yield pool.imap(fn, jobs, chunksize=chunksize)  # imap keeps the job order
    finally:
        pool.close()
        pool.join()


def generate_synref(
    root: Path | str,
    *,
    seed: int = 0,
    scene_size: int = 64,
    n_images: dict[str, int] | None = None,
    progress: bool = True,
    spec: SynRefSpec = DEFAULT_SPEC,
    workers: int = 1,
) -> Path:
    """Generate SynRef into ``root`` (refer format) and return ``root``.

    Args:
        root: output folder; ``images/`` and ``synref/`` are created inside it.
        seed: dataset seed; the same seed and arguments give byte-identical annotation files.
        scene_size: image side in pixels (images are scene_size x scene_size RGB).
        n_images: images per split (keys among train/val/testA/testB); default 4000/400/200/200.
        progress: show a tqdm bar.
        spec: generator knobs.
        workers: processes generating scenes; every scene has its own random stream, so the output does
            not depend on it.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    counts = check_split_counts(DEFAULT_N_IMAGES if n_images is None else n_images, SPLITS, "SynRef", "n_images",
                                workers)
    make_scene(seed, SPLITS[0], 0, scene_size, spec)  # argument errors surface here, not in a worker
    img_dir = root / "images"
    ann_dir = root / "synref"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)

    # Image ids are global and sequential in split order, so a job knows its file name up front.
    jobs = []
    for split in SPLITS:
        for index in range(int(counts.get(split, 0))):
            jobs.append((int(seed), split, index, len(jobs) + 1, int(scene_size), spec, str(img_dir)))
    bar = tqdm(total=len(jobs), desc="SynRef", unit="img", disable=not progress)
    images, annotations, refs = [], [], []
    ann_id = ref_id = sent_id = 0
    with ordered_results(_write_scene, jobs, workers, chunksize=32) as results:
        for job, (kind, objects, exprs) in zip(jobs, results):
            _, split, index, image_id, _, _, _ = job
            fname = image_file_name(split, image_id)
            images.append({"id": image_id, "file_name": fname, "height": scene_size, "width": scene_size,
                           "split": split, "kind": kind, "index": index})
            obj_ann_ids = []
            for rec in objects:
                ann_id += 1
                obj_ann_ids.append(ann_id)
                annotations.append({"id": ann_id, "image_id": image_id, **rec})
            for e in exprs:
                ref_id += 1
                sent_id += 1
                refs.append({
                    "ref_id": ref_id, "ann_id": obj_ann_ids[e["target"]], "image_id": image_id,
                    "split": split, "category_id": objects[e["target"]]["category_id"], "file_name": fname,
                    "sent_ids": [sent_id],
                    "sentences": [{"sent": e["sentence"], "raw": e["sentence"],
                                   "tokens": tokenize(e["sentence"]), "sent_id": sent_id}],
                    "kind": e["kind"], "area_ratio": e["area_ratio"],
                    "distractor_ann_ids": [obj_ann_ids[k] for k in e["distractors"]],
                })
            bar.update(1)
    bar.close()

    instances = {
        "info": {
            "description": "SynRef: synthetic referring segmentation (SALMA reproduction kit)",
            "generator_version": GENERATOR_VERSION, "seed": int(seed), "scene_size": int(scene_size),
            "n_images": {s: int(counts.get(s, 0)) for s in SPLITS},
            "spec": _spec_dict(spec),
        },
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated data)"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)],
    }
    # Pickle memoises by object identity, which differs between worker and in-process runs; a JSON
    # round trip gives every value a fresh, canonical object so the bytes depend on the values only.
    refs = json.loads(json.dumps(refs))
    atomic_write_bytes(ann_dir / "refs(unc).p", pickle.dumps(refs, protocol=PICKLE_PROTOCOL))
    # instances.json last: its presence marks a complete dataset (callers test for it).
    atomic_write_bytes(ann_dir / "instances.json",
                        json.dumps(instances, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return root


def _spec_dict(spec: SynRefSpec) -> dict:
    def listify(v):
        if isinstance(v, tuple):
            return [listify(x) for x in v]
        return v

    # Knobs added after synref-1.0 are written only when switched on, so that synref-1.0 files (and their
    # checksums in data_manifests/) stay byte-identical.
    return {k: listify(v) for k, v in asdict(spec).items() if not (k in _LATER_KNOBS and v == _LATER_KNOBS[k])}


# knob -> its off value
_LATER_KNOBS = {"distractor_decoy_prob": 0.0, "distractor_relation_prob": 0.0, "lookalike_expression_prob": 0.0}
