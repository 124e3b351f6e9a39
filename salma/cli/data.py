"""``python -m salma data ...``: generate, verify and score trivial baselines on datasets.

The command line's data commands (docs/design.md section "Layout": data_manifests/). Subcommands::

    python -m salma data generate synref <root> [--seed 0 --scene-size 64 --train N --val N
                                                 --testA N --testB N --write-manifest PATH]
    python -m salma data generate synref_video <root> [--seed 0 --scene-size 64 --frames 12 --train N
                                                       --valid_u N --write-manifest PATH]
    python -m salma data verify {synref,synref_video} <root> [--manifest data_manifests/<dataset>.yaml
                                                             --no-progress]
    python -m salma data trivial {synref,refcoco,refcoco+,refcocog} <root> --split val
                                 [--split-by unc --image-root DIR --limit N]
    python -m salma data manifest {synref,synref_video} <root> --out PATH

``data manifest`` has no default output: the kit's own ``data_manifests/<dataset>.yaml`` is tracked and
describes the default dataset, so it is rewritten only when ``--out`` (or ``generate --write-manifest``)
names it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from salma.data import manifest as mf
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.data.synref_clip import SPLITS as VIDEO_SPLITS
from salma.data.synref_video import DEFAULT_N_VIDEOS, generate_synref_video
from salma.data.synref_words import DEFAULT_N_IMAGES, SPLITS
from salma.eval.floors import evaluate_trivial
from salma.eval.metrics import rows_to_markdown

# The synthetic datasets: name -> (default count per split, what a split counts).
GENERATED = {"synref": (DEFAULT_N_IMAGES, "images"), "synref_video": (DEFAULT_N_VIDEOS, "clips")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``data`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="data_command", required=True)

    g = sub.add_parser("generate", help="generate a synthetic dataset: SynRef (refer format) or SynRef-Video "
                                        "(Ref-YouTube-VOS / MeViS layout)")
    g.add_argument("dataset", choices=list(GENERATED))
    g.add_argument("root", type=Path, help="output folder (synref: images/ and synref/; synref_video: one "
                                           "folder per split)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scene-size", type=int, default=64)
    g.add_argument("--frames", type=int, default=None, metavar="T",
                   help="synref_video only: frames per clip, 8..24 (default 12)")
    # One flag per split of either dataset; its default depends on the dataset, so it is filled in later.
    for split in dict.fromkeys(SPLITS + VIDEO_SPLITS):
        defaults = [f"{name} {counts[split]} {unit}" for name, (counts, unit) in GENERATED.items()
                    if split in counts]
        g.add_argument(f"--{split}", type=int, default=None, metavar="N",
                       help=f"size of split {split} (default: {', '.join(defaults)})")
    g.add_argument("--write-manifest", type=Path, default=None, metavar="PATH",
                   help="also write the manifest of the generated data to PATH")
    g.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    g.add_argument("--no-progress", action="store_true")

    v = sub.add_parser("verify", help="check a dataset against its manifest (exit 1 on problems)")
    v.add_argument("dataset", choices=list(GENERATED))
    v.add_argument("root", type=Path)
    v.add_argument("--manifest", type=Path, default=None, help="default: data_manifests/<dataset>.yaml")
    v.add_argument("--no-progress", action="store_true")

    m = sub.add_parser("manifest", help="write the manifest of a dataset on disk")
    m.add_argument("dataset", choices=list(GENERATED))
    m.add_argument("root", type=Path)
    m.add_argument("--out", type=Path, required=True, metavar="PATH",
                   help="where to write the manifest (required: no default, so that the tracked "
                        "data_manifests/<dataset>.yaml is replaced only when named here)")

    t = sub.add_parser("trivial", help="cIoU/gIoU of trivial predictors (largest object, whole image)")
    t.add_argument("dataset", choices=["synref", "refcoco", "refcoco+", "refcocog"])
    t.add_argument("root", type=Path, help="data root holding <dataset>/instances.json")
    t.add_argument("--split", default="val")
    t.add_argument("--split-by", default=None)
    t.add_argument("--image-root", type=Path, default=None)
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run a ``data`` subcommand; returns the exit status (errors are printed by ``salma.cli.main``)."""
    if args.data_command == "generate":
        defaults, unit = GENERATED[args.dataset]
        # Split flags are shared by both datasets: refuse one the chosen dataset does not have.
        wrong = [f"--{s}" for s in dict.fromkeys(SPLITS + VIDEO_SPLITS) if s not in defaults
                 and getattr(args, s) is not None]
        if args.dataset != "synref_video" and args.frames is not None:
            wrong.append("--frames")
        if wrong:
            raise ValueError(f"{' '.join(wrong)}: not an option of {args.dataset} (its splits: "
                             f"{' '.join('--' + s for s in defaults)})")
        counts = {s: defaults[s] if getattr(args, s) is None else getattr(args, s) for s in defaults}
        t0 = time.time()
        if args.dataset == "synref_video":
            frames = {} if args.frames is None else {"n_frames": args.frames}
            generate_synref_video(args.root, seed=args.seed, scene_size=args.scene_size, n_videos=counts,
                                  progress=not args.no_progress, workers=args.workers, **frames)
            name = "SynRef-Video"
        else:
            generate_synref(args.root, seed=args.seed, scene_size=args.scene_size, n_images=counts,
                            progress=not args.no_progress, workers=args.workers)
            name = "SynRef"
        print(f"{name} written to {args.root} ({sum(counts.values())} {unit}, {time.time() - t0:.1f} s)")
        if args.write_manifest is not None:
            mf.write_manifest(args.root, args.write_manifest, args.dataset)
            print(f"manifest written to {args.write_manifest}")
        return 0
    if args.data_command == "verify":
        path = args.manifest or mf.default_manifest_path(args.dataset)
        problems = mf.verify(args.root, path, args.dataset, progress=not args.no_progress)
        if problems:
            for p in problems:
                print(f"PROBLEM: {p}")
            print(f"{len(problems)} problem(s): {args.root} does not match {path}")
            return 1
        print(f"OK: {args.root} matches {path}")
        return 0
    if args.data_command == "manifest":
        mf.write_manifest(args.root, args.out, args.dataset)
        print(f"manifest written to {args.out}")
        return 0
    if args.data_command == "trivial":
        ds = ReferDataset(args.root, args.dataset, args.split_by, args.split, args.image_root)
        results = evaluate_trivial(ds, limit=args.limit, progress=not args.no_progress)
        print(f"Trivial predictors on {ds.dataset} ({ds.split_by}) {ds.split}; cIoU = sum I / sum U, "
              "gIoU = mean IoU, area bins cumulative (GT area / image area)\n")
        for name, rows in results.items():
            print(rows_to_markdown(rows, title=name))
            print()
        return 0
    print(f"unknown data command {args.data_command!r}", file=sys.stderr)
    return 2
