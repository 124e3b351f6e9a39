"""``python -m salma diagnose``: which object a checkpoint's masks land on, by expression kind and by the words
used (``salma.report.diagnose``), optionally with linear probes of the frozen SAM-2 features.

Output: ``--out``, or ``<checkpoint>/diagnosis`` beside a checkpoint of the user's; for a checkpoint inside
the repository's tracked files (the default, ``foundation/<preset>``) ``<runs>/diagnosis/<checkpoint
name>-limit<N>`` instead (``salma.cli.args.check_output_folder``: never a tracked folder, checked writable
before the model runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from salma.cli.args import check_output_folder, positive_int, tracked_folder
from salma.data.refer import ReferDataset
from salma.model import SalmaModel
from salma.paths import foundation_dir, runs_root
from salma.report.diagnose import feature_probes, pick_rows, pick_table
from salma.train.datasets import synref_root, val_only_root


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="a SalmaModel directory (default: the preset's shipped foundation, foundation/<preset>)")
    p.add_argument("--preset", default="small", help="whose SynRef val split to read (default: small)")
    p.add_argument("--data", default=None, help="a SynRef root instead of the preset's val split")
    p.add_argument("--limit", type=positive_int, default=400,
                   help="the first N val expressions (N >= 1; default 400)")
    p.add_argument("--out", default=None,
                   help="folder for picks.csv and the two tables (default: <checkpoint>/diagnosis, or "
                        "<runs>/diagnosis/<checkpoint name>-limit<N> for a checkpoint tracked by git)")
    p.add_argument("--probes", action="store_true",
                   help="also fit linear probes of each object's category/colour/size/shade on the frozen SAM-2 "
                        "features (1,500 train and 300 val images; about 30 s on a CPU): probes.csv")


def default_out_dir(checkpoint: Path, limit: int) -> Path:
    """Beside the checkpoint, unless git tracks it (the shipped foundation must stay as committed)."""
    if tracked_folder(checkpoint) is None:
        return checkpoint / "diagnosis"
    return runs_root() / "diagnosis" / f"{checkpoint.resolve().name}-limit{limit}"


def run(args: argparse.Namespace) -> int:
    """Print the pick tables by kind and by word signature (and the probes), and write them."""

    checkpoint = Path(args.checkpoint) if args.checkpoint else foundation_dir(args.preset)
    out = check_output_folder(args.out or default_out_dir(checkpoint, args.limit))
    model = SalmaModel.from_pretrained(checkpoint)
    root = Path(args.data) if args.data else val_only_root(args.preset)
    dataset = ReferDataset(root, "synref", split="val")
    rows = pick_rows(model, dataset, limit=args.limit)
    by_kind, by_words = pick_table(rows, "kind"), pick_table(rows, "signature")
    probes = None
    if args.probes:  # a train split to fit on: the preset's full SynRef (generated on first use) or --data
        train = ReferDataset(Path(args.data) if args.data else synref_root(args.preset), "synref", split="train")
        probes = feature_probes(model, train, dataset)

    pd.DataFrame(rows).to_csv(out / "picks.csv", index=False)
    with pd.option_context("display.max_columns", None, "display.width", 200):
        for name, table in (("by_kind", by_kind), ("by_words", by_words)):
            table.round(2).to_csv(out / f"{name}.csv", index=False)
            print(f"\nWhich object the masks land on ({name.replace('_', ' ')}), {checkpoint}, {len(rows)} expressions:")
            print(table.round(1).to_string(index=False))
        if probes is not None:
            pd.DataFrame(probes).round(1).to_csv(out / "probes.csv", index=False)
            print(f"\nLinear probes of each object's attributes on {checkpoint}'s frozen SAM-2 features (val accuracy, %):")
            print(pd.DataFrame(probes).round(1).to_string(index=False))
    print(f"\nwrote picks.csv, by_kind.csv, by_words.csv{', probes.csv' if probes is not None else ''} to {out}")
    return 0
