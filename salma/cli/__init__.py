"""The SALMA reproduction kit's command line: python -m salma <command>.

The cli layer (docs/design.md section "Package layers"). Each command lives in its own module; this file only wires argparse to them so that ``--help`` lists
everything the kit can do.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command name -> (module, help). A module exposes ``add_arguments(parser)`` and ``run(args) -> int``;
# "module:name" means ``add_<name>_arguments`` and ``run_<name>`` in that module.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("salma.cli.data", "generate or verify a dataset (SynRef, SynRef-Video) against its manifest"),
    "reproduce": ("salma.cli.notebooks", "run every notebook in order with papermill"),
    "pretrain": ("salma.cli.model:pretrain", "train the SynRef foundation (stage 0 SAM-2, stage 1 Sa2VA)"),
    "train": ("salma.cli.model:train", "fine-tune one ablation variant from the foundation"),
    "evaluate": ("salma.cli.evaluate",
                 "evaluate a checkpoint on refer-format images (cIoU, gIoU) or on video data (J&F), beside the floors"),
    "diagnose": ("salma.cli.diagnose", "which object a checkpoint's masks land on, by expression kind and by the words used"),
    "bench": ("salma.cli.bench", "paper Table 5 (params, GMAC/GFLOP) and Sa2VA vs SALMA latency at paper scale"),
    "results": ("salma.cli.results", "write RESULTS.md from the result JSON the notebooks wrote to figures/"),
}


class KitParser(argparse.ArgumentParser):
    """argparse with the command line's one error style: a bad or missing argument is one line on stderr
    (``error: python -m salma train: argument --steps: ...``) and exit status 2, not usage plus message."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, import just that command's module (a broken module elsewhere, or a slow
    import, then does not affect the command being run)."""
    parser = KitParser(prog="python -m salma", description=__doc__.splitlines()[0],
                                     epilog="--debug anywhere on the line: show the traceback of an error")
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
    """Run one command. Every failure ends the same way: one line on stderr naming the problem, exit status 2
    (``--debug``, anywhere on the line, shows the traceback instead); Ctrl-C exits with 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SALMA_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    only = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        args = build_parser(only).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already printed)
        return int(exc.code or 0)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the command line's one error style; --debug shows the rest
        if debug:
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2


# Errors that describe bad input (a path, a value, a file's content): their message is the whole story.
# Anything else is unexpected and is printed with its type and a pointer to --debug.
USER_ERRORS = (ValueError, OSError, KeyError, LookupError, RuntimeError)


def error_line(exc: BaseException) -> str:
    """``exc`` as the one line the command line prints (newlines folded, the type named for unexpected ones)."""
    # KeyError's str() is the repr of its key; its message is the key itself
    raw = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(raw.split()) or type(exc).__name__
    if isinstance(exc, USER_ERRORS):
        return text
    return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"
