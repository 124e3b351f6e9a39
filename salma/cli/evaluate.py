"""``python -m salma evaluate``: a checkpoint on refer-format images (cIoU, gIoU) or on video data (J&F), beside
the trivial floors.

``python -m salma evaluate --checkpoint DIR --data ROOT --split val`` evaluates a SalmaModel directory on a
refer-format dataset and writes ``eval.json`` + ``eval.md`` with the trivial predictors beside the model.

On a video dataset (Ref-YouTube-VOS / MeViS layout: ``<data>/<split>/meta_expressions.json``, or ``--data``
naming the split folder itself; ``--video`` forces it) the command reports J, F, J&F
(``salma.eval.video``): with ``--checkpoint`` the model through ``SalmaModel.predict_video``
(``--video-mode released`` = Sa2VA's released SAM-2 memory propagation, ``per_frame`` = every frame decoded
on its own, as trained) beside the trivial floors; without it (or with ``--trivial-only``) the floors only.

Where the results go (the rule ``--out``'s help repeats):

- ``--out DIR``: there, unless DIR is in a folder of the repository's tracked files (``foundation/``,
  ``docs/``, ... as ``git ls-files`` says; ``salma.cli.args.tracked_folder``), which is refused.
- no ``--out``, image data: ``<checkpoint>/eval-<dataset>-<split>-<limitN|all>-<key>/`` beside the checkpoint;
  for a checkpoint inside the repository's tracked files (``--checkpoint foundation/small``), which must stay
  as committed, ``<runs>/eval/<checkpoint folder name>-<dataset>-<split>-<limitN|all>-<key>/`` instead
  (``<runs>`` = ``$SALMA_RUNS_DIR`` or ``runs/``). ``<key>`` is a short hash of the resolved checkpoint path,
  the sha256 of its ``model.safetensors``, the splitBy and the resolved data and image roots: a ``--limit 4``
  run, another data root or retrained weights get their own folder and never replace an earlier eval.json.
- no ``--out``, video data: nothing is written (the tables are printed).

The output folder is created and a probe file written and removed there before the model runs, so a read-only
or refused folder fails at once, not after the evaluation. eval.json is strict JSON (NaN written as null) and
opens with ``"provenance"``: checkpoint path and weights sha256, data and image roots, dataset, splitBy,
split, limit, key, number of expressions evaluated and the date.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from salma.cli.args import check_output_folder, positive_int, tracked_folder
from salma.data.refer import ReferDataset
from salma.data.video_format import VideoReferDataset
from salma.eval.floors import evaluate_video_with_floors
from salma.eval.image import evaluate_with_floors, write_result
from salma.eval.video import write_video_result
from salma.io import sha256_file
from salma.model import WEIGHTS_FILE, SalmaModel
from salma.paths import runs_root
from salma.video import clip_predictor

# provenance fields the folder key hashes (dataset, split and limit are spelled out in the folder name)
KEYED = ("checkpoint", "weights_sha256", "split_by", "data_root", "image_root")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="a SalmaModel directory (save_pretrained / a run's final/); required on image datasets")
    p.add_argument("--data", required=True,
                   help="image: data root holding <dataset>/instances.json and refs(<splitBy>).p; video: a root "
                        "holding <split>/meta_expressions.json, or that split folder itself")
    p.add_argument("--dataset", default=None,
                   help="image datasets: synref (default), refcoco, refcoco+ or refcocog; video: the tables' title")
    p.add_argument("--split-by", default=None, help="unc, umd or google (default: the dataset's usual one)")
    p.add_argument("--split", default=None, help="default: val (image), valid_u (video)")
    p.add_argument("--image-root", default=None, help="folder with the images (default <data>/images)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate only the first N expressions (N >= 1; default: all)")
    p.add_argument("--out", default=None,
                   help="output folder; never inside the repository's tracked folders (default, image data: "
                        "<checkpoint>/eval-<dataset>-<split>-<limitN|all>-<key>, or <runs>/eval/<checkpoint "
                        "name>-<dataset>-<split>-<limitN|all>-<key> for a checkpoint tracked by git such as "
                        "foundation/small; key = hash of checkpoint, weights, splitBy, data and image roots; "
                        "video: nothing is written without it)")
    p.add_argument("--video", action="store_true",
                   help="read --data as a video dataset (detected when <data>/<split>/meta_expressions.json exists)")
    p.add_argument("--trivial-only", action="store_true",
                   help="video: evaluate only the trivial floors (the default without --checkpoint)")
    p.add_argument("--video-mode", default="released", choices=("released", "per_frame"),
                   help="video: released = language prompt on the frames the MLLM read, then SAM-2 memory "
                        "propagation (Sa2VA's released inference); per_frame = every frame decoded from its own "
                        "features, no memory (how the decoder is trained; Sa2VA-i)")
    p.add_argument("--mllm-frames", type=positive_int, default=5, help="video: frames the MLLM reads (Sa2VA: 5)")
    p.add_argument("--frame-sampling", default="first", choices=("first", "uniform"),
                   help="video: which frames the MLLM reads: the first ones (Sa2VA) or spread evenly (Sa2VA-i)")
    p.add_argument("--offload", action="store_true",
                   help="video: keep frames and SAM-2's per-frame state on the CPU (long clips on a GPU)")


def _video_split(args: argparse.Namespace) -> tuple[Path, str] | None:
    """(root, split) when --data is a video dataset (or --video is given), else None (an image dataset)."""
    data = Path(args.data)
    if (data / "meta_expressions.json").is_file():  # the split folder itself
        if args.split is not None and args.split != data.name:
            raise ValueError(f"--data {data} is the split folder {data.name!r} but --split is {args.split!r}: give "
                             "the dataset root with --split, or the split folder without --split")
        return data.parent, data.name
    split = args.split or "valid_u"
    if args.video or (data / split / "meta_expressions.json").is_file():
        return data, split
    return None


def run(args: argparse.Namespace) -> int:
    video = _video_split(args)
    if video is not None:
        return _run_evaluate_video(args, *video)
    if args.trivial_only:
        raise ValueError(f"--trivial-only is for video datasets and {args.data} is not one (no "
                         "<split>/meta_expressions.json); the image floors: python -m salma data trivial ...")
    if args.checkpoint is None:
        raise ValueError(f"--checkpoint is required to evaluate on the image dataset at {args.data}; for a video "
                         "dataset give the folder holding <split>/meta_expressions.json (or add --video)")

    out = check_output_folder(args.out) if args.out is not None else None  # before loading anything
    dataset, split = args.dataset or "synref", args.split or "val"
    checkpoint = Path(args.checkpoint)
    model = SalmaModel.from_pretrained(checkpoint)
    ds = ReferDataset(args.data, dataset=dataset, split_by=args.split_by, split=split,
                      image_root=args.image_root)
    provenance = image_provenance(checkpoint, ds, args.limit)
    if out is None:
        out = check_output_folder(default_out_dir(checkpoint, provenance, len(ds)))
    print(f"evaluating {checkpoint} on {ds.data_root} ({dataset} {ds.split_by} {split}); results go to {out}")
    result = evaluate_with_floors(model, ds, limit=args.limit)
    js, md = write_result(result, out, f"{dataset} {split}", provenance)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


def image_provenance(checkpoint: Path, ds: ReferDataset, limit: int | None) -> dict:
    """What identifies an image evaluation (eval.json's ``"provenance"``, and the default folder's key)."""
    record = {"checkpoint": str(checkpoint.resolve()),
              "weights_sha256": sha256_file(checkpoint / WEIGHTS_FILE),
              "data_root": str(ds.data_root.resolve()), "image_root": str(ds.image_root.resolve()),
              "dataset": ds.dataset, "split_by": ds.split_by, "split": ds.split, "limit": limit}
    keyed = json.dumps({k: record[k] for k in KEYED}, sort_keys=True)
    return {**record, "key": hashlib.sha256(keyed.encode()).hexdigest()[:10]}


def default_out_dir(checkpoint: Path, provenance: dict, n_expressions: int) -> Path:
    """The folder of an image evaluation without --out (the rule in the module docstring). A limit that
    covers the whole split counts as "all": the same expressions, so the same folder."""
    limit = provenance["limit"]
    scope = "all" if limit is None or limit >= n_expressions else f"limit{limit}"
    name = f"{provenance['dataset']}-{provenance['split']}-{scope}-{provenance['key']}"
    if tracked_folder(checkpoint) is None:
        return checkpoint / f"eval-{name}"
    return runs_root() / "eval" / f"{checkpoint.resolve().name}-{name}"


def _run_evaluate_video(args: argparse.Namespace, root: Path, split: str) -> int:
    out = check_output_folder(args.out) if args.out is not None else None  # before loading anything
    ds = VideoReferDataset(root, split)
    predict_clip = None
    name = args.dataset or root.resolve().name
    title = f"{name} {split}"
    provenance = {"checkpoint": None, "weights_sha256": None, "data_root": str(ds.root.resolve()),
                  "dataset": name, "split": split, "limit": args.limit}
    if args.checkpoint is not None and not args.trivial_only:
        checkpoint = Path(args.checkpoint)
        model = SalmaModel.from_pretrained(checkpoint)
        predict_clip = clip_predictor(model, mode=args.video_mode, mllm_frames=args.mllm_frames,
                                      frame_sampling=args.frame_sampling, offload=args.offload)
        title += f" ({args.video_mode})"
        provenance.update(checkpoint=str(checkpoint.resolve()),
                          weights_sha256=sha256_file(checkpoint / WEIGHTS_FILE), video_mode=args.video_mode,
                          mllm_frames=args.mllm_frames, frame_sampling=args.frame_sampling)
    result = evaluate_video_with_floors(predict_clip, ds, limit=args.limit)
    if out is None:
        print(result.to_markdown(title))
        print("(no --out: nothing written)")
        return 0
    js, md = write_video_result(result, out, title, provenance)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0
