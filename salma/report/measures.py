"""Measurements that run models for the notebooks: the prior's overlap with objects and targets, MBA's steps and
write maps, attention mass inside targets and look-alikes, the video floors and a walk-through example; the
geometry they need, and the inputs of the figures that show them (the ``*_panel`` functions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from salma.eval.floors import evaluate_video_with_floors
from salma.eval.image import image_groups
from salma.eval.metrics import j_and_f
from salma.eval.probe import language_attention_map, mba_write_map, prior_and_gate, trace_forward
from salma.video import sample_frames


# ----------------------------------------------------------------------------------------- masks, maps
def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape; 0.0 when both are empty (nothing was matched)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def cell_fraction(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) fraction of each feature-map cell covered by ``mask`` (H, W) bool: area-average pooling, as
    the feature cell (i, j) sees the image region it was computed from (the whole image is resized)."""
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(m, size)[0, 0].numpy()


def mass_share(weights: np.ndarray, mask: np.ndarray) -> float:
    """Share of a non-negative map's mass inside a mask: sum(w * f) / sum(w), with f = ``cell_fraction`` of
    the mask on the map's grid. weights: (h, w) >= 0; mask: (H, W) bool, any size. A uniform map gives the
    mask's area ratio (the chance level). NaN when the map has no mass."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be a (h, w) map; got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative (an attention map or a norm map)")
    total = w.sum()
    if total <= 0:
        return float("nan")
    return float((w * cell_fraction(mask, w.shape)).sum() / total)


def union_mask(dataset, image_id: int) -> np.ndarray:
    """(H, W) bool union of every annotated object of an image (what the stage-0 prior is trained to mark)."""
    return np.any(np.stack([m for _, m in dataset.object_masks(image_id)]), axis=0)


def distractor_mask(dataset, sample) -> np.ndarray | None:
    """(H, W) bool union of a sample's look-alike distractors, or None when it has none."""
    if not sample.distractor_ann_ids:
        return None
    return np.any(np.stack([dataset.ann_mask(a) for a in sample.distractor_ann_ids]), axis=0)


# ------------------------------------------------------------------------------- the prior (Sec. 3.2)
def prior_overlap_rows(model, dataset, limit: int | None = None, batch_images: int = 16,
                       progress: bool = True) -> list[dict]:
    """What the language-free pre-pass highlights, per expression of the first ``limit`` expressions.

    Per row: iou_union = IoU(prior > 0, union of the image's objects); iou_target = IoU(prior > 0, target);
    target_recall = |prior > 0 ∩ target| / |target|; gate_share_union / gate_share_target = share of the
    gate G's mass inside the union / target (``mass_share``); union_ratio / area_ratio = their areas / image
    area (the chance levels of the shares); prior_area = fraction of the image with prior > 0.
    """

    groups = image_groups(dataset, limit)
    rows = []
    for start in tqdm(range(0, len(groups), batch_images), desc="prior", disable=not progress, leave=False):
        chunk = groups[start:start + batch_images]
        images = [dataset.load_image(image_id) for image_id, _ in chunk]
        priors, gates = prior_and_gate(model, images)
        for (image_id, samples), prior, gate in zip(chunk, priors, gates):
            union = union_mask(dataset, image_id)
            pos = prior > 0
            for s in samples:
                target = dataset.load_mask(s)
                rows.append({"image_id": image_id, "kind": s.kind, "area_ratio": s.area_ratio,
                             "iou_union": mask_iou(pos, union), "iou_target": mask_iou(pos, target),
                             "target_recall": float(np.count_nonzero(pos & target) / max(1, target.sum())),
                             "gate_share_union": mass_share(gate, union), "gate_share_target": mass_share(gate, target),
                             "union_ratio": float(union.mean()), "prior_area": float(pos.mean())})
    return rows


# the quantities of ``prior_overlap_rows`` that notebook 01 averages
PRIOR_KEYS: tuple[str, ...] = ("iou_union", "iou_target", "target_recall", "gate_share_union", "gate_share_target",
                               "union_ratio", "area_ratio", "prior_area")


def prior_overlap_by_model(models: Mapping[str, object], dataset, limit: int | None = None) -> dict[str, list[dict]]:
    """{label: ``prior_overlap_rows``} of each model on the first ``limit`` expressions."""
    return {name: prior_overlap_rows(model, dataset, limit=limit) for name, model in models.items()}


def prior_summaries(rows: Mapping[str, Sequence[dict]], keys: Sequence[str] = PRIOR_KEYS) -> dict[str, dict[str, float]]:
    """{label: {key: mean over the expressions}} of ``prior_overlap_by_model``'s rows (``summarise``)."""
    return {name: summarise(r, keys) for name, r in rows.items()}


def prior_example_panel(dataset, models: Mapping[str, object], n: int) -> dict:
    """The keyword arguments of ``plot_prior_examples`` for the first ``n`` images: the images, the union of
    each one's objects, and per model (label -> model) the prior logits and gates (``prior_and_gate``)."""
    image_ids = dataset.image_ids()[:n]
    images = [dataset.load_image(i) for i in image_ids]
    return {"images": images, "unions": [union_mask(dataset, i) for i in image_ids],
            "models": {name: prior_and_gate(model, images) for name, model in models.items()}}


def summarise(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """{key: mean over rows} ignoring NaN (a NaN mean when no row has a finite value)."""
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if r.get(k) is not None and math.isfinite(float(r[k]))]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


# ---------------------------------------------------------------------------------- MBA (notebook 02)
# notebook 02's write maps: label -> (the variant that makes it, whether MBA's gate is applied)
MBA_MODES: dict[str, tuple[str, bool]] = {"gate (SALMA)": ("salma", True), "gate forced to 1": ("salma", False),
                                          "bias": ("bias", True), "FiLM": ("film", True)}


def distractor_samples(dataset) -> list:
    """The dataset's samples that have at least one look-alike distractor, in order."""
    return [s for s in dataset.samples if s.distractor_ann_ids]


def attention_sums_to_one(steps: Mapping, atol: float = 1e-5) -> bool:
    """Whether MBA's attention weights (``probe.mba_steps``' "attention") sum to 1 over the picks everywhere."""
    return bool(np.allclose(steps["attention"].sum(1), 1, atol=atol))


def mba_step_numbers(steps: Mapping, target: np.ndarray) -> dict[str, float]:
    """The numbers of one MBA forward (``probe.mba_steps``): γ, the gate's range, Eq. 2's error, the relative
    size of the update, and the share of the gate, the gated and the un-gated write on ``target`` (%)."""
    return {"gamma": steps["gamma"], "gate min": float(steps["gate"].min()), "gate max": float(steps["gate"].max()),
            "Eq. 2 max |error|": steps["eq2_error"],
            "mean ||F_v' - F_v|| / ||F_v||": float((steps["delta_norm"] / steps["feature_norm"]).mean()),
            "gate mass on target (%)": 100 * mass_share(steps["gate"], target),
            "gated write on target (%)": 100 * mass_share(steps["gated_norm"], target),
            "un-gated write on target (%)": 100 * mass_share(steps["attn_norm"], target),
            "target area (%)": 100 * float(target.mean())}


def trained_gammas(models: Mapping[str, object]) -> dict[str, float]:
    """{label: the trained γ of the model's MBA} (each model must have MBA)."""
    return {v: float(m.mba.gamma.detach()) for v, m in models.items()}


def mba_mode_maps(models: Mapping[str, object], image: np.ndarray, expression: str,
                  modes: Mapping[str, tuple[str, bool]] = MBA_MODES) -> dict[str, np.ndarray]:
    """{label: (h, w) MBA write map} of one expression, per ``modes`` (label -> (variant, gated)); ``models``
    maps the variants to their models, each traced once (``probe.trace_forward``)."""
    traces = {v: trace_forward(m, image, [expression]) for v, m in models.items()}
    return {label: mba_write_map(models[v], traces[v], gated=gated)[0] for label, (v, gated) in modes.items()}


def prediction_panel(dataset, samples: Sequence, models: Mapping[str, object]) -> dict:
    """The keyword arguments of ``plot_predictions``: the samples' images and targets, each model's
    (label -> model) predicted masks, and titles "<kind>: <expression>"."""
    images = [dataset.load_image(s) for s in samples]
    return {"images": images, "targets": [dataset.load_mask(s) for s in samples],
            "preds": {label: [m.predict(im, s.expression).mask for im, s in zip(images, samples)]
                      for label, m in models.items()},
            "titles": [f"{s.kind}: {s.expression}" for s in samples]}


# ------------------------------------------------------------------------------- attention (Fig. 5)
def attention_rows(model, dataset, limit: int | None = None, label: str = "model",
                   progress: bool = True, only_distractor: bool = False) -> list[dict]:
    """Share of attention mass inside the target and inside the distractors, per expression.

    decoder_target / decoder_distractor: ``mass_share`` of the decoder's language-token attention
    (``salma.eval.probe.language_attention_map``; any model). For models with MBA also mba_target /
    mba_distractor (the gated write map ||G * O_attn||) and ungated_target / ungated_distractor (the same
    module with the gate forced to 1). chance_target / chance_distractor: the masks' area ratios (what a
    uniform map gets). Distractor columns are NaN for expressions without a distractor (the union of an
    expression's look-alikes is used when it has two). ``only_distractor``: trace only the expressions that
    have a distractor among the first ``limit`` (the same rows Fig. 5's table keeps, for a quarter of the work).
    """

    rows = []
    groups = image_groups(dataset, limit)
    if only_distractor:
        groups = [(i, kept) for i, samples in groups if (kept := [s for s in samples if s.distractor_ann_ids])]
    for image_id, samples in tqdm(groups, desc=f"attention ({label})", disable=not progress, leave=False):
        trace = trace_forward(model, dataset.load_image(image_id), [s.expression for s in samples])
        maps = {"decoder": language_attention_map(trace)}
        if model.mba is not None:
            maps["mba"] = mba_write_map(model, trace, gated=True)
            maps["ungated"] = mba_write_map(model, trace, gated=False)
        for b, s in enumerate(samples):
            target, dis = dataset.load_mask(s), distractor_mask(dataset, s)
            row = {"model": label, "image_id": image_id, "ref_id": s.ref_id, "sent_id": s.sent_id, "kind": s.kind,
                   "chance_target": float(target.mean()),
                   "chance_distractor": float(dis.mean()) if dis is not None else float("nan")}
            for name, m in maps.items():
                row[f"{name}_target"] = mass_share(m[b], target)
                row[f"{name}_distractor"] = mass_share(m[b], dis) if dis is not None else float("nan")
            rows.append(row)
    return rows


def attention_rows_by_seed(models: Mapping[tuple[str, int], object], dataset, limit: int | None = None,
                           only_distractor: bool = True) -> list[dict]:
    """``attention_rows`` of every model ((variant, seed) -> model), labelled with the variant and with a
    "seed" key added: the rows ``attention_table`` and ``per_seed_share`` take."""
    return [{**r, "seed": s} for (v, s), m in models.items()
            for r in attention_rows(m, dataset, limit=limit, label=v, only_distractor=only_distractor)]


def spotlight_panel(dataset, samples: Sequence, baseline, model) -> dict:
    """The keyword arguments of ``plot_map_grid`` for Fig. 5's examples: per sample the baseline's and the
    model's decoder attention, the model's MBA write map gated and with the gate forced to 1, the target and
    distractor masks and the expressions."""
    images = [dataset.load_image(s) for s in samples]
    tb = [trace_forward(baseline, im, [s.expression]) for im, s in zip(images, samples)]
    ts = [trace_forward(model, im, [s.expression]) for im, s in zip(images, samples)]
    maps = {"baseline: decoder": [language_attention_map(t)[0] for t in tb],
            "SALMA: decoder": [language_attention_map(t)[0] for t in ts],
            "SALMA: MBA write": [mba_write_map(model, t)[0] for t in ts],
            "SALMA: gate forced to 1": [mba_write_map(model, t, gated=False)[0] for t in ts]}
    return {"images": images, "maps": maps, "targets": [dataset.load_mask(s) for s in samples],
            "distractors": [distractor_mask(dataset, s) for s in samples],
            "row_titles": [s.expression for s in samples]}


# ------------------------------------------------------------------------------------ video (notebook 10)
def video_floor_rows(dataset, limit: int | None = None, progress: bool = False) -> pd.DataFrame:
    """The trivial video predictors (``salma.eval.floors``) on the first ``limit`` expressions (the
    runs' evaluation set): one row per (floor, subset) with J, F, J&F (fractions) and N."""

    result = evaluate_video_with_floors(None, dataset, limit, progress)
    return pd.DataFrame([{"floor": name, **r} for name, rows in result.trivial.items() for r in rows])


def video_example(dataset, models: Mapping[str, object], index: int, modes: Sequence[str] = ("per_frame", "released"),
                  mllm_frames: int = 5) -> dict:
    """The walk-through of one valid expression: its frames (T, H, W, 3), ground truth (T, H, W), SALMA's
    per-frame prior logits (T, H, W) and gate (T, h, w) (from the first model that has MBA, computed on each
    frame independently, as training and inference do), each model's masks in each mode, their J, F, J&F,
    and the frames the MLLM read."""

    if not 0 <= index < len(dataset.samples):
        raise ValueError(f"EXAMPLE={index}: the dataset has {len(dataset.samples)} expressions (0..{len(dataset.samples) - 1})")
    sample = dataset.samples[index]
    frames, gt = dataset.load_frames(sample), dataset.load_masks(sample)
    with_mba = [m for m in models.values() if m.mba is not None]
    prior, gate = prior_and_gate(with_mba[0], list(frames)) if with_mba else (None, None)
    preds, scores = {}, {}
    for name, model in models.items():
        for mode in modes:
            mask = model.predict_video(frames, [sample.text], mode=mode, mllm_frames=mllm_frames)[0]
            preds[f"{name} ({mode})"] = mask
            m = j_and_f(mask, gt)
            scores[f"{name} ({mode})"] = {"J": m["J"], "F": m["F"], "J&F": m["JF"]}
    return {"sample": sample, "frames": frames, "gt": gt, "prior": prior, "gate": gate, "preds": preds,
            "scores": scores, "conditioning": sample_frames(len(frames), mllm_frames)}
