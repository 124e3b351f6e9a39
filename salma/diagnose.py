"""Where a referring model goes wrong on SynRef: which object its mask lands on, by expression kind and by
the attribute words the expression uses (the foundation issue's diagnosis, ``python -m salma diagnose``).

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
from typing import TYPE_CHECKING

import numpy as np

from salma.data.synref import COLOURS, EXTREMES, SHAPES, SIZE_WORDS

if TYPE_CHECKING:
    import pandas as pd

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
    from salma.analysis import mask_iou

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
    from salma.evaluate import evaluate_model

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
    import pandas as pd

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


# ============================================================================================ command line
def add_arguments(p) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="a SalmaModel directory (default: the preset's shipped foundation, foundation/<preset>)")
    p.add_argument("--preset", default="small", help="whose SynRef val split to read (default: small)")
    p.add_argument("--data", default=None, help="a SynRef root instead of the preset's val split")
    p.add_argument("--limit", type=int, default=400, help="the first N val expressions (default 400)")
    p.add_argument("--out", default=None, help="folder for picks.csv and the two tables (default: the checkpoint's)")


def run(args) -> int:
    """``python -m salma diagnose``: print the pick tables by kind and by word signature, write them."""
    import sys
    from pathlib import Path

    from salma.data.refer import ReferDataset
    from salma.experiments import foundation_dir, val_only_root
    from salma.model import SalmaModel

    checkpoint = Path(args.checkpoint) if args.checkpoint else foundation_dir(args.preset)
    try:
        model = SalmaModel.from_pretrained(checkpoint)
        root = Path(args.data) if args.data else val_only_root(args.preset)
        dataset = ReferDataset(root, "synref", split="val")
        rows = pick_rows(model, dataset, limit=args.limit)
        by_kind, by_words = pick_table(rows, "kind"), pick_table(rows, "signature")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    out = Path(args.out) if args.out else checkpoint / "diagnosis"
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "picks.csv", index=False)
    with pd.option_context("display.max_columns", None, "display.width", 200):
        for name, table in (("by_kind", by_kind), ("by_words", by_words)):
            table.round(2).to_csv(out / f"{name}.csv", index=False)
            print(f"\nWhich object the masks land on ({name.replace('_', ' ')}), {checkpoint}, {len(rows)} expressions:")
            print(table.round(1).to_string(index=False))
    print(f"\nwrote picks.csv, by_kind.csv, by_words.csv to {out}")
    return 0
