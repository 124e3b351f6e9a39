"""The SALMA reproduction kit's command line: python -m salma <command>.

The cli layer (docs/design.md section "Package layers"). Each command lives in its own module; this file only wires argparse to them so that ``--help`` lists
everything the kit can do.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, help). A module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
# "module:name" means ``add_<name>_arguments`` and ``run_<name>`` in that module.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("salma.cli.data", "generate or verify a dataset (SynRef, SynRef-Video) against its manifest"),
    "reproduce": ("salma.cli.notebooks", "run every notebook in order with papermill"),
    "pretrain": ("salma.cli.model:pretrain", "train the SynRef foundation (stage 0 SAM-2, stage 1 Sa2VA)"),
    "train": ("salma.cli.model:train", "fine-tune one ablation variant from the foundation"),
    "evaluate": ("salma.cli.model:evaluate",
                 "evaluate a checkpoint on refer-format images (cIoU, gIoU) or on video data (J&F), beside the floors"),
    "diagnose": ("salma.report.diagnose", "which object a checkpoint's masks land on, by expression kind and by the words used"),
    "bench": ("salma.cli.bench", "paper Table 5 (params, GMAC/GFLOP) and Sa2VA vs SALMA latency at paper scale"),
    "results": ("salma.cli.results", "write RESULTS.md from the result JSON the notebooks wrote to figures/"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, import just that command's module (a broken module elsewhere, or a slow
    import, then does not affect the command being run)."""
    parser = argparse.ArgumentParser(prog="python -m salma", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (target, help_text) in COMMANDS.items():
        if only is not None and name != only:
            continue
        module_name, _, command = target.partition(":")
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{command}_arguments" if command else "add_arguments")(p)
        p.set_defaults(_run=getattr(module, f"run_{command}" if command else "run"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    return int(args._run(args) or 0)


