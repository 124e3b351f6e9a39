"""Why SALMA's MBA branch stays shut in a short fine-tuning run, and what opens it (docs/method.md section 11).

Each configuration is a named, labelled change to the ``salma`` variant, fine-tuned from the shipped
foundation and cached by its config hash like every run. ``faithful`` is the paper's recipe and stays the
default row; every other configuration says how it departs from the paper. Each run ends with the val cIoU
and the cIoU with gamma (and FiLM's gamma_film) set to 0 at test time, the branch's real effect on the
predictions:

    python -m salma train --preset small --study gamma_lr_100x --seed 0

MBA "acts" (``acts``) when the branch writes at least ``ACTS_WRITE`` of the features inside the targets
(r, the mean of the run's last ``SIGN_WINDOW`` logged steps) and zeroing gamma changes predictions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from salma.config import SalmaConfig
from salma.train.identity import RunResult
from salma.train.mba_stats import SIGN_WINDOW

ACTS_WRITE = 0.01  # r inside the targets at least 1%


@dataclass(frozen=True)
class StudyConfig:
    """One row of the study: ``changes`` maps a config section (mba, train, mllm) to field changes;
    ``steps_factor`` multiplies the preset's fine-tuning length; ``departs`` says how it leaves the paper's
    recipe (empty for the paper's own)."""

    name: str
    label: str
    departs: str = ""
    steps_factor: int = 1
    changes: dict[str, dict] = field(default_factory=dict)


STUDY: dict[str, StudyConfig] = {c.name: c for c in (
    StudyConfig("faithful", "SALMA as the paper trains it (gamma_0 = 0, 5% warm-up)"),
    StudyConfig("faithful_4x", "the same, 4x the steps", steps_factor=4),
    StudyConfig("faithful_8x", "the same, 8x the steps", steps_factor=8),
    StudyConfig("gamma_lr_10x", "gamma's learning rate x10", "gamma alone learns 10x faster",
                changes={"train": {"gamma_lr_scale": 10.0}}),
    StudyConfig("gamma_lr_100x", "gamma's learning rate x100", "gamma alone learns 100x faster",
                changes={"train": {"gamma_lr_scale": 100.0}}),
    StudyConfig("gamma0_0p1_zero_out", "gamma_0 = 0.1, output projection zero-initialised",
                "the branch starts as the identity through its zero output projection, not through gamma = 0",
                changes={"mba": {"gamma_init": 0.1, "zero_init_output": True}}),
    StudyConfig("gamma0_1_zero_out", "gamma_0 = 1, output projection zero-initialised",
                "the branch starts as the identity through its zero output projection, not through gamma = 0",
                changes={"mba": {"gamma_init": 1.0, "zero_init_output": True}}),
    StudyConfig("gamma0_1_zero_out_mba_lr_10x", "gamma_0 = 1, output projection zero-initialised, MBA lr x10",
                "the branch starts as the identity through its zero output projection, and its weights learn 10x "
                "faster than the rest", changes={"mba": {"gamma_init": 1.0, "zero_init_output": True},
                                                 "train": {"mba_lr_scale": 10.0}}),
    StudyConfig("gamma0_1_zero_out_mba_lr_100x", "gamma_0 = 1, output projection zero-initialised, MBA lr x100",
                "the branch starts as the identity through its zero output projection, and its weights learn "
                "100x faster than the rest", changes={"mba": {"gamma_init": 1.0, "zero_init_output": True},
                                                  "train": {"mba_lr_scale": 100.0}}),
    StudyConfig("lora_frozen_vision", "LoRA on the LLM, InternViT frozen: the paper's MLLM regime (the "
                "small preset trains the whole LLM and InternViT)",
                changes={"mllm": {"lora": True, "freeze_vision": True}}),
    StudyConfig("dropout_0p1", "MBA attention dropout 0.1 (the released config)",
                "the paper does not state MBA dropout; the released config uses 0.1",
                changes={"mba": {"dropout": 0.1}}),
)}


def study_names() -> str:
    return ", ".join(STUDY)


def study_config(cfg: SalmaConfig, name: str) -> SalmaConfig:
    """``cfg`` (the salma variant's fine-tuning config) changed as configuration ``name`` says."""
    if name not in STUDY:
        raise ValueError(f"study configuration {name!r} is not known; accepted values: {study_names()}")
    study = STUDY[name]
    sections = {section: dataclasses.replace(getattr(cfg, section), **fields)
                for section, fields in study.changes.items()}
    if study.steps_factor != 1:
        train = sections.get("train", cfg.train)
        sections["train"] = dataclasses.replace(train, steps=train.steps * study.steps_factor)
    return dataclasses.replace(cfg, **sections)


def study_row(name: str, result: RunResult) -> dict:
    """The study table's row of one finished run: final gamma, r (the last ``SIGN_WINDOW`` steps' mean,
    overall and inside the targets), val cIoU (all, distractor), cIoU with gamma zeroed, the share of
    expressions whose prediction changes with gamma zeroed, and whether MBA acts."""
    log, m = result.log, result.metrics
    tail = log[-SIGN_WINDOW:]

    def mean(key: str) -> float:
        values = [r[key] for r in tail if key in r and math.isfinite(r[key])]
        return sum(values) / len(values) if values else float("nan")

    rows = {r["subset"]: r for r in m["val"]}
    r_target = mean("mba_write_target")
    changed = m.get("changed_gamma0", float("nan"))
    return {"configuration": name, "label": STUDY[name].label, "departs": STUDY[name].departs or "-",
            "steps": len(log), "gamma": log[-1].get("gamma", float("nan")) if log else float("nan"),
            "r": mean("mba_write"), "r_target": r_target, "sign_agreement": mean("dgamma_sign_agreement"),
            "ciou": m["ciou"], "ciou_distractor": rows.get("distractor", {}).get("cIoU", float("nan")),
            "ciou_gamma0": m.get("ciou_gamma0", float("nan")),
            "delta_gamma0": m["ciou"] - m.get("ciou_gamma0", float("nan")), "changed_gamma0": changed,
            "acts": bool(r_target >= ACTS_WRITE and changed > 0), "run_dir": str(Path(result.run_dir))}
