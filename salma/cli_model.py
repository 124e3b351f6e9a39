"""Command-line entry points of the model side: ``train``, ``pretrain`` and ``evaluate``.

``python -m salma evaluate --checkpoint DIR --data ROOT --split val`` evaluates a SalmaModel directory on a
refer-format dataset and writes ``eval.json`` + ``eval.md`` with the trivial predictors beside the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a SalmaModel directory (save_pretrained / a run's final/)")
    p.add_argument("--data", required=True, help="data root holding <dataset>/instances.json and refs(<splitBy>).p")
    p.add_argument("--dataset", default="synref", help="synref, refcoco, refcoco+ or refcocog")
    p.add_argument("--split-by", default=None, help="unc, umd or google (default: the dataset's usual one)")
    p.add_argument("--split", default="val")
    p.add_argument("--image-root", default=None, help="folder with the images (default <data>/images)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N expressions")
    p.add_argument("--out", default=None, help="output folder (default <checkpoint>/eval-<dataset>-<split>)")


def run_evaluate(args: argparse.Namespace) -> int:
    from salma.data.refer import ReferDataset
    from salma.evaluate import evaluate_with_floors, write_result
    from salma.model import SalmaModel

    model = SalmaModel.from_pretrained(args.checkpoint)
    ds = ReferDataset(args.data, dataset=args.dataset, split_by=args.split_by, split=args.split,
                      image_root=args.image_root)
    result = evaluate_with_floors(model, ds, limit=args.limit)
    out = Path(args.out or Path(args.checkpoint) / f"eval-{args.dataset}-{args.split}")
    js, md = write_result(result, out, f"{args.dataset} {args.split}")
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="tiny, small or paper")
    p.add_argument("--variant", default="salma", help="a fine-tuning variant (see salma.experiments.VARIANTS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--data", default=None, help="SynRef root (default: generated under data/)")
    p.add_argument("--foundation", default=None, help="foundation directory (default: the shipped one)")
    p.add_argument("--runs", default=None, help="run cache folder (default $SALMA_RUNS_DIR or <repo>/runs)")


def run_train(args: argparse.Namespace) -> int:
    from salma.experiments import finetune

    result = finetune(args.preset, args.variant, seed=args.seed, steps=args.steps, data_root=args.data,
                      foundation=args.foundation, runs_root=args.runs)
    print(json.dumps({"run_dir": str(result.run_dir), "cached": result.cached,
                      "ciou": result.metrics.get("ciou")}, indent=1))
    return 0


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="tiny or small")
    p.add_argument("--data", default=None, help="SynRef root (default: generated under data/)")
    p.add_argument("--runs", default=None, help="run cache folder (default $SALMA_RUNS_DIR or <repo>/runs)")
    p.add_argument("--out", default=None, help="where to write the foundation (default foundation/<preset>)")
    p.add_argument("--stage0-steps", type=int, default=None)
    p.add_argument("--stage1-steps", type=int, default=None)
    p.add_argument("--recipe", default="auto", choices=("auto", "cpu", "gpu"),
                   help="cpu (= auto, on any device): encoder frozen in stage 1; gpu: whole model, batch 64 "
                        "(measured not to ground; see salma.experiments.PRETRAIN_RECIPES)")


def run_pretrain(args: argparse.Namespace) -> int:
    from salma.experiments import pretrain

    out = pretrain(args.preset, data_root=args.data, runs_root=args.runs, out=args.out,
                   stage0_steps=args.stage0_steps, stage1_steps=args.stage1_steps, recipe=args.recipe)
    print(f"foundation written to {out}")
    return 0
