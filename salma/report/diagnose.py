"""Where a referring model goes wrong on SynRef: which object its mask lands on, by expression kind and by
the attribute words the expression uses (``python -m salma diagnose``, ``salma.cli.diagnose``).

cIoU says how much a model misses, not why. On SynRef every object of an image is annotated, so each
prediction can be assigned to the object it overlaps best ("the pick"): the target, one of the target's
look-alike distractors, another object, or nothing (best IoU under ``MIN_IOU``). Grouping the picks by the
words an expression uses separates, say, a model that cannot read shapes ("the triangle" fails, "the red
one" works) from one that reads words but cannot localise.

Word groups come from SynRef's generator vocabulary (``salma.data.synref``): colour, shade ("dark",
"bright"), size ("small", "large", "big"), shape, and relation (spatial / superlative template words).
An expression's signature is the sorted set of groups it uses, e.g. "shape", "colour+shape",
"relation+shape".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from salma.data.synref_words import COLOURS, EXTREMES, SHAPES, SIZE_WORDS
from salma.eval.image import evaluate_model
from salma.report.measures import mask_iou
from salma.sam2_ext import preprocess_images
from salma.train.batches import _mask_tensor
from salma.train.heads import ObjectHead

MIN_IOU = 0.1  # below this best IoU with every object, the prediction picks "nothing"
PICKS: tuple[str, ...] = ("target", "distractor", "other object", "nothing")
WORD_GROUPS: dict[str, frozenset[str]] = {
    "colour": frozenset(COLOURS),
    "shade": frozenset({"dark", "bright"}),
    "size": frozenset(w for words in SIZE_WORDS.values() for w in words),
    "shape": frozenset(SHAPES),
    "relation": frozenset({"left", "right", "above", "below", "largest", "smallest", "larger", *EXTREMES}),
}
_WORD_RE = re.compile(r"[a-z]+")


def word_signature(expression: str) -> str:
    """The word groups an expression uses, sorted and joined by "+" ("none" when it uses none).

    >>> word_signature("the dark red triangle")
    'colour+shade+shape'
    """
    words = set(_WORD_RE.findall(expression.lower()))
    groups = sorted(g for g, vocabulary in WORD_GROUPS.items() if words & vocabulary)
    return "+".join(groups) or "none"


def pick_of(mask: np.ndarray, objects: Sequence[tuple[int, np.ndarray]], target_id: int,
            distractor_ids: Sequence[int], min_iou: float = MIN_IOU) -> tuple[str, float, float]:
    """(pick, IoU with the target, best IoU with any object) of one predicted (H, W) bool mask.

    objects: [(ann_id, (H, W) bool)] of every object in the image. Ties go to the target (then to a
    distractor): a mask that covers two objects equally is not counted as a drift."""

    ious = {ann_id: mask_iou(mask, m) for ann_id, m in objects}
    if target_id not in ious:
        raise ValueError(f"target annotation {target_id} is not among the image's objects {sorted(ious)}")
    best = max(ious.values())
    if best < min_iou:
        return "nothing", ious[target_id], best
    if ious[target_id] >= best:
        return "target", ious[target_id], best
    if any(ious.get(d, -1.0) >= best for d in distractor_ids):
        return "distractor", ious[target_id], best
    return "other object", ious[target_id], best


def pick_rows(model, dataset, limit: int | None = None, progress: bool = True, min_iou: float = MIN_IOU) -> list[dict]:
    """One row per expression (the first ``limit`` of ``dataset``, image by image as ``evaluate_model``):
    kind, word signature, pick, IoU with the target, best IoU with any object, and the expression."""

    result = evaluate_model(model, dataset, limit, progress, keep_masks=True)
    samples = {(s.ref_id, s.sent_id): s for s in dataset.samples}
    objects: dict[int, list[tuple[int, np.ndarray]]] = {}
    rows = []
    for r in result.per_sample:
        s = samples[(r["ref_id"], r["sent_id"])]
        if s.image_id not in objects:
            objects = {s.image_id: dataset.object_masks(s.image_id)}  # image-major order: keep one image
        pick, iou_target, best = pick_of(r["mask"], objects[s.image_id], s.ann_id, s.distractor_ann_ids, min_iou)
        rows.append({"ref_id": s.ref_id, "sent_id": s.sent_id, "kind": s.kind,
                     "signature": word_signature(s.expression), "pick": pick, "iou_target": iou_target,
                     "best_iou": best, "expression": s.expression})
    return rows


def pick_table(rows: Sequence[dict], by: str = "kind") -> pd.DataFrame:
    """Share of each pick (%) per group of ``by`` ("kind" or "signature"), with N, largest groups first;
    a last row "all"."""

    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("no rows: pick_rows returned nothing (empty dataset or limit=0)")
    if by not in df.columns:
        raise ValueError(f"by={by!r}; accepted values: kind, signature")
    out = []
    groups = list(df.groupby(by, sort=False)) + [("all", df)]
    for name, g in groups:
        row = {by: name, "N": len(g)}
        row.update({f"{p} (%)": 100 * float((g["pick"] == p).mean()) for p in PICKS})
        row["mean IoU with target (%)"] = 100 * float(g["iou_target"].mean())
        out.append(row)
    table = pd.DataFrame(out)
    head = table.iloc[:-1].sort_values(["N", by], ascending=[False, True])
    return pd.concat([head, table.iloc[-1:]], ignore_index=True)


# ============================================================================================ feature probes
# Annotation keys a probe may predict: COCO's category, and SynRef's own attributes where a dataset has them.
PROBE_KEYS: tuple[str, ...] = ("category_id", "colour", "size", "shade")
# SAM-2 feature levels the probes read: the embedding the decoder attends to, and the two high-res levels.
PROBE_LEVELS: tuple[str, ...] = ("image_embed", "high_res_1", "high_res_0")


def object_features(model, dataset, limit: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Every object of the first ``limit`` images of ``dataset``: each SAM-2 feature level averaged over the
    object's mask ({level: (N, C)}) and the object's annotated attributes ({key: [N values]}, the keys of
    ``PROBE_KEYS`` that the annotations hold)."""

    s = model.cfg.sam2.image_size
    features: dict[str, list] = {level: [] for level in PROBE_LEVELS}
    labels: dict[str, list] = {}
    for image_id in dataset.image_ids()[:limit]:
        with torch.no_grad():
            feats = model.sam.encode_image(preprocess_images(dataset.load_image(image_id), s).to(model.device))
        objects = dataset.object_masks(image_id)
        masks = _mask_tensor([m for _, m in objects], s).to(model.device)
        for level, t in zip(PROBE_LEVELS, (feats.image_embed, feats.high_res[1], feats.high_res[0])):
            features[level].append(ObjectHead.pool(t.expand(len(objects), -1, -1, -1), masks).cpu().numpy())
        for ann_id, _ in objects:
            ann = dataset.anns[ann_id]
            for key in PROBE_KEYS:
                if key in ann:
                    labels.setdefault(key, []).append(ann[key])
    return {level: np.concatenate(v) for level, v in features.items()}, labels


def linear_probe(x_train: np.ndarray, y_train: list, x_val: np.ndarray, y_val: list, steps: int = 500,
                 seed: int = 0) -> float:
    """Accuracy on (x_val, y_val) of a softmax regression fitted on standardised (x_train, y_train) with Adam.
    Val labels never seen in training count as wrong."""

    classes = {c: k for k, c in enumerate(sorted(set(y_train), key=str))}
    xt, xv = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(x_val, dtype=torch.float32)
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mean) / std, (xv - mean) / std
    yt = torch.tensor([classes[c] for c in y_train])
    yv = torch.tensor([classes.get(c, -1) for c in y_val])
    torch.manual_seed(seed)
    probe = torch.nn.Linear(xt.shape[1], len(classes))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(probe(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        return float((probe(xv).argmax(1) == yv).float().mean())


def feature_probes(model, train, val, n_train: int = 1500, n_val: int = 300) -> list[dict]:
    """What a checkpoint's frozen SAM-2 encoder tells about each object: one row per feature level with the
    val accuracy (%) of a linear probe per annotated attribute (``PROBE_KEYS``), the channels, the object
    counts, and the majority-class share of val as the chance row."""
    x_tr, y_tr = object_features(model, train, n_train)
    x_va, y_va = object_features(model, val, n_val)
    keys = [k for k in PROBE_KEYS if k in y_tr and k in y_va]
    rows = [{"features": level, "channels": x_tr[level].shape[1], "objects (train/val)": f"{len(x_tr[level])}/"
             f"{len(x_va[level])}", **{k: 100 * linear_probe(x_tr[level], y_tr[k], x_va[level], y_va[k]) for k in keys}}
            for level in PROBE_LEVELS]
    majority = {k: 100 * max(y_va[k].count(c) for c in set(y_va[k])) / len(y_va[k]) for k in keys}
    return rows + [{"features": "chance (majority class)", "channels": 0, "objects (train/val)": "", **majority}]
