"""``python -m salma bench``: paper Table 5 and the latency of Sa2VA vs SALMA (image), or ms per frame and a
long clip's memory (``--video``); prints the tables and writes them to figures/.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from salma.bench.flops import CONVENTION
from salma.bench.image import conclusions, run_benchmark
from salma.bench.tables import display_table
from salma.bench.video import long_clip_memory, run_video_benchmark, video_conclusions
from salma.paths import figures_dir
from salma.report.store import save_json, save_table


# ============================================================================================ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", help="tiny, small or paper (default: paper, 1024x1024)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--reps", type=int, default=4, help="interleaved Sa2VA/SALMA forward pairs (default 4)")
    parser.add_argument("--micro-reps", type=int, default=3,
                        help="rounds of the pre-pass/MBA cases per repetition (default 3)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="extra untimed SALMA forwards (default 0: the first forward, which builds the "
                             "inputs, is the warm-up)")
    parser.add_argument("--expressions", type=int, default=3, help="expressions on one image (default 3)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the clip for the per-frame prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-only", action="store_true", help="only Table 5 (params and compute)")
    parser.add_argument("--video", action="store_true",
                        help="video mode (salma.bench.video): ms per frame of Sa2VA and SALMA on a --frames clip "
                             "through predict_video's per_frame and released modes, MLLM once per clip "
                             "(figures/table5_video.*)")
    parser.add_argument("--compile", default="none", choices=("none", "default", "max-autotune"),
                        help="with --video: also time SALMA's extras (pre-pass + MBA) under torch.compile(mode=...); "
                             "'default' runs on a CPU with a C compiler, 'max-autotune' is meant for GPUs")
    parser.add_argument("--mllm-frames", type=int, default=5, help="with --video: frames the MLLM reads (default 5)")
    parser.add_argument("--long", type=int, default=0, metavar="N",
                        help="with --video: instead of the timing table, run one N-frame clip in released mode with "
                             "and without sam2's offload and report the peak memory (figures/video_long_clip.*)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "video", False):

        return run_long(args) if getattr(args, "long", 0) else run_video(args)
    if getattr(args, "long", 0):
        print("error: --long applies to the video benchmark only: add --video", file=sys.stderr)
        return 2
    if getattr(args, "compile", "none") != "none":
        print("error: --compile applies to the video benchmark only: add --video", file=sys.stderr)
        return 2
    out = run_benchmark(args.preset, args.device, args.reps, args.micro_reps, args.warmup, args.expressions,
                        args.frames, args.seed, table_only=args.table_only)

    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        print(f"Table 5 at preset {args.preset!r} ({CONVENTION})")
        shown = display_table(out["table"])
        print(shown.to_string(index=False))
        save_table(shown, "table5_efficiency")
        if out["latency"] is not None:
            print(out["latency"].to_string(index=False))
            print(out["overheads"].drop(columns=["paper_pct"]).to_string(index=False))
            save_table(out["latency"], "table5_latency")
            save_table(out["overheads"], "table5_overhead")
    save_json(out["results"], "table5_efficiency")
    print("\n".join(conclusions(out["results"])))
    print(f"wrote table5_efficiency.csv/.md/.json{'' if args.table_only else ', table5_latency, table5_overhead'} "
          f"to {figures_dir()}")
    return 0


def run_video(args) -> int:
    """``python -m salma bench --video``: prints the table and writes figures/table5_video.csv/.md/.json."""

    out = run_video_benchmark(args.preset, args.device, args.frames, args.reps, args.compile, args.seed,
                              args.mllm_frames)

    with pd.option_context("display.max_columns", None, "display.width", 220, "display.max_colwidth", 70):
        print(f"Video benchmark at preset {args.preset!r}: {args.frames} frames of {out['bench'].image_size}px, "
              f"{args.reps} interleaved repetitions, --compile {args.compile}")
        print(out["table"].drop(columns=["key"]).to_string(index=False))
    save_table(out["table"], "table5_video")
    raw = {k: v for k, v in out["raw"].items() if k not in ("machine_before", "machine_after")}
    save_json({"summary": out["summary"], "raw": raw}, "table5_video")
    print("\n".join(video_conclusions(out["summary"])))
    print(f"wrote table5_video.csv/.md/.json to {figures_dir()}")
    return 0


def run_long(args) -> int:
    """``python -m salma bench --video --long N``: the long-clip memory table (figures/video_long_clip.*)."""

    rows = long_clip_memory(args.preset, args.long, args.device, args.seed)

    table = pd.DataFrame(rows).drop(columns=["masks_shape"])
    with pd.option_context("display.max_columns", None, "display.width", 220):
        print(f"Long clip at preset {args.preset!r}: {args.long} frames, released mode, SALMA (random weights)")
        print(table.round(2).to_string(index=False))
    save_table(table.round(3), "video_long_clip")
    save_json(rows, "video_long_clip")
    print(f"wrote video_long_clip.csv/.md/.json to {figures_dir()}")
    return 0
