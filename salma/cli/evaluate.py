"""``python -m salma evaluate``: a checkpoint on refer-format images (cIoU, gIoU) or on video data (J&F), beside
the trivial floors.

``python -m salma evaluate --checkpoint DIR --data ROOT --split val`` evaluates a SalmaModel directory on a
refer-format dataset and writes ``eval.json`` + ``eval.md`` with the trivial predictors beside the model.

On a video dataset (Ref-YouTube-VOS / MeViS layout: ``<data>/<split>/meta_expressions.json``, or ``--data``
naming the split folder itself; ``--video`` forces it) the command reports J, F, J&F
(``salma.eval.video``): with ``--checkpoint`` the model through ``SalmaModel.predict_video``
(``--video-mode released`` = Sa2VA's released SAM-2 memory propagation, ``per_frame`` = every frame decoded
on its own, as trained) beside the trivial floors; without it (or with ``--trivial-only``) the floors only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from salma.data.refer import ReferDataset
from salma.data.video_format import VideoReferDataset
from salma.eval.floors import evaluate_video_with_floors
from salma.eval.image import evaluate_with_floors, write_result
from salma.eval.video import write_video_result
from salma.model import SalmaModel
from salma.video import clip_predictor


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
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N expressions")
    p.add_argument("--out", default=None, help="output folder (image default <checkpoint>/eval-<dataset>-<split>; "
                                               "video: nothing is written without it)")
    p.add_argument("--video", action="store_true",
                   help="read --data as a video dataset (detected when <data>/<split>/meta_expressions.json exists)")
    p.add_argument("--trivial-only", action="store_true",
                   help="video: evaluate only the trivial floors (the default without --checkpoint)")
    p.add_argument("--video-mode", default="released", choices=("released", "per_frame"),
                   help="video: released = language prompt on the frames the MLLM read, then SAM-2 memory "
                        "propagation (Sa2VA's released inference); per_frame = every frame decoded from its own "
                        "features, no memory (how the decoder is trained; Sa2VA-i)")
    p.add_argument("--mllm-frames", type=int, default=5, help="video: frames the MLLM reads (Sa2VA: 5)")
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

    dataset, split = args.dataset or "synref", args.split or "val"
    model = SalmaModel.from_pretrained(args.checkpoint)
    ds = ReferDataset(args.data, dataset=dataset, split_by=args.split_by, split=split,
                      image_root=args.image_root)
    result = evaluate_with_floors(model, ds, limit=args.limit)
    out = Path(args.out or Path(args.checkpoint) / f"eval-{dataset}-{split}")
    js, md = write_result(result, out, f"{dataset} {split}")
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


def _run_evaluate_video(args: argparse.Namespace, root: Path, split: str) -> int:
    ds = VideoReferDataset(root, split)
    predict_clip = None
    title = f"{args.dataset or root.resolve().name} {split}"
    if args.checkpoint is not None and not args.trivial_only:
        model = SalmaModel.from_pretrained(args.checkpoint)
        predict_clip = clip_predictor(model, mode=args.video_mode, mllm_frames=args.mllm_frames,
                                      frame_sampling=args.frame_sampling, offload=args.offload)
        title += f" ({args.video_mode})"
    result = evaluate_video_with_floors(predict_clip, ds, limit=args.limit)
    if args.out is None:
        print(result.to_markdown(title))
        print("(no --out: nothing written)")
        return 0
    js, md = write_video_result(result, args.out, title)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0
