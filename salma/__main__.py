"""Command line: ``python -m salma <command>`` (DESIGN.md: reproduce, train, evaluate, bench, data verify).

Each command lives in its own module; this file only wires argparse to them so that ``--help`` lists
everything the kit can do.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, help). Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("salma.data.cli", "generate or verify a dataset (SynRef) against its manifest"),
    "reproduce": ("salma.notebooks", "run every notebook in order with papermill"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m salma", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
