"""Command line: ``python -m salma <command>`` (DESIGN.md: reproduce, train, evaluate, bench, data verify).

Each command lives in its own module; this file only wires argparse to them so that ``--help`` lists
everything the kit can do.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, help). A module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
# "module:name" means ``add_<name>_arguments`` and ``run_<name>`` in that module.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("salma.data.cli", "generate or verify a dataset (SynRef, SynRef-Video) against its manifest"),
    "reproduce": ("salma.notebooks", "run every notebook in order with papermill"),
    "pretrain": ("salma.cli_model:pretrain", "train the SynRef foundation (stage 0 SAM-2, stage 1 Sa2VA)"),
    "train": ("salma.cli_model:train", "fine-tune one ablation variant from the foundation"),
    "evaluate": ("salma.cli_model:evaluate",
                 "evaluate a checkpoint on refer-format images (cIoU, gIoU) or on video data (J&F), beside the floors"),
    "diagnose": ("salma.diagnose", "which object a checkpoint's masks land on, by expression kind and by the words used"),
    "bench": ("salma.efficiency", "paper Table 5 (params, GMAC/GFLOP) and Sa2VA vs SALMA latency at paper scale"),
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


if __name__ == "__main__":
    sys.exit(main())
