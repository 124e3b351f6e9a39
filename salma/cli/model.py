"""Command-line entry points of the model side: ``train`` and ``pretrain``.

``python -m salma train --video [--data ROOT]`` fine-tunes the image foundation on video clips
(``salma.train.experiments.finetune_video``: SynRef-Video generated under data/ without --data; a --data holding
``train/meta_expressions.json`` is detected as video) and reports J&F in per_frame and released modes; without
``--video`` the command fine-tunes on SynRef images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from salma.cli.args import non_negative_int, positive_int
from salma.config import get_preset
from salma.train.experiments import finetune, finetune_video
from salma.train.foundation import pretrain
from salma.train.study import study_config, study_names


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="tiny, small or paper")
    p.add_argument("--variant", default="salma", help="a fine-tuning variant (see salma.train.recipes.VARIANTS)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help=f"a configuration of the MBA study, applied to the salma variant: {study_names()} "
                        "(salma.train.study)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default: the preset's)")
    p.add_argument("--data", default=None, help="SynRef root (default: generated under data/)")
    p.add_argument("--foundation", default=None, help="foundation directory (default: the shipped one)")
    p.add_argument("--runs", default=None, help="run cache folder (default $SALMA_RUNS_DIR or <repo>/runs)")
    p.add_argument("--video", action="store_true",
                   help="fine-tune on video clips (SynRef-Video, generated under data/ without --data; detected "
                        "when --data holds train/meta_expressions.json), then report J&F in per_frame and "
                        "released modes")
    p.add_argument("--clip-frames", type=positive_int, default=None, help="video: frames per training clip (recipe default)")
    p.add_argument("--mllm-frames", type=positive_int, default=None, help="video: frames the MLLM reads (Sa2VA: 5)")
    p.add_argument("--frame-sampling", default="first", choices=("first", "uniform"),
                   help="video: the MLLM reads the clip's first frames (Sa2VA) or frames spread evenly (Sa2VA-i)")


def run_train(args: argparse.Namespace) -> int:
    video = args.video or (args.data is not None and (Path(args.data) / "train" / "meta_expressions.json").is_file())
    if video:
        result = finetune_video(args.preset, args.variant, seed=args.seed, steps=args.steps, data_root=args.data,
                                foundation=args.foundation, runs_root=args.runs, clip_frames=args.clip_frames,
                                mllm_frames=args.mllm_frames, frame_sampling=args.frame_sampling)
        print(json.dumps({"run_dir": str(result.run_dir), "cached": result.cached,
                          "jf_per_frame": result.metrics.get("jf_per_frame"),
                          "jf_released": result.metrics.get("jf_released")}, indent=1))
        return 0
    if args.study is not None:
        study_config(get_preset(args.preset), args.study)  # an unknown name is refused before anything runs
    result = finetune(args.preset, args.variant, seed=args.seed, steps=args.steps, data_root=args.data,
                      foundation=args.foundation, runs_root=args.runs, study=args.study)
    print(json.dumps({"run_dir": str(result.run_dir), "cached": result.cached, "ciou": result.metrics.get("ciou"),
                      **({k: result.metrics[k] for k in ("ciou_gamma0", "changed_gamma0") if k in result.metrics})},
                     indent=1))
    return 0


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="tiny or small")
    p.add_argument("--data", default=None, help="SynRef root (default: generated under data/)")
    p.add_argument("--runs", default=None, help="run cache folder (default $SALMA_RUNS_DIR or <repo>/runs)")
    p.add_argument("--out", default=None, help="where to write the foundation (default foundation/<preset>)")
    p.add_argument("--stage0-steps", type=positive_int, default=None)
    p.add_argument("--stage1-steps", type=positive_int, default=None)
    p.add_argument("--recipe", default="auto", choices=("auto", "cpu", "gpu"),
                   help="cpu (= auto, on any device): encoder frozen in stage 1; gpu: whole model, batch 64 "
                        "(measured not to ground; see salma.train.recipes.PRETRAIN_RECIPES)")


def run_pretrain(args: argparse.Namespace) -> int:
    out = pretrain(args.preset, data_root=args.data, runs_root=args.runs, out=args.out,
                   stage0_steps=args.stage0_steps, stage1_steps=args.stage1_steps, recipe=args.recipe)
    print(f"foundation written to {out}")
    return 0
