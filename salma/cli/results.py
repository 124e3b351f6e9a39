"""``python -m salma results``: write RESULTS.md from the notebooks' result JSON (or ``--check`` that it is up
to date).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from salma.paths import figures_dir, foundation_dir, repo_root
from salma.report.results import COMMAND, SECTIONS, _status, load_result, render_results, write_results


# ============================================================================================ command line
def _defaults() -> tuple[Path, Path, Path | None]:
    """(figures folder, RESULTS.md, the foundation's manifest or None when it is absent) of this checkout."""
    manifest = foundation_dir("small") / "manifest.json"
    return figures_dir(), repo_root() / "RESULTS.md", manifest if manifest.is_file() else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m salma results`` options: --figures, --out, --foundation, --check."""
    parser.add_argument("--figures", type=Path, default=None, metavar="DIR",
                        help="folder of the notebooks' result JSON (default: $SALMA_FIGURES_DIR or the repo's "
                             "figures/)")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH",
                        help="the Markdown file to write (default: RESULTS.md at the repository root)")
    parser.add_argument("--foundation", type=Path, default=None, metavar="PATH",
                        help="the foundation's manifest.json (default: foundation/small/manifest.json if present)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when PATH differs from what would be generated")


def run(args: argparse.Namespace) -> int:
    """Write (or with --check compare) RESULTS.md; prints one line per section's status."""
    figures, out, manifest = _defaults()
    figures = args.figures or figures
    out = args.out or out
    manifest = args.foundation or manifest
    if getattr(args, "check", False):
        text = render_results(figures, manifest)
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            print(f"{out} is not up to date with {figures}: run `{COMMAND}`")
            return 1
        print(f"{out} is up to date")
        return 0
    path = write_results(figures, out, manifest)
    loaded = {}
    for name, section in SECTIONS.items():
        src = manifest if section.source == "manifest" else figures / f"{name}.json"
        loaded[name] = load_result(src) if src is not None else None
    for name, data in loaded.items():
        print(f"  {name}: {_status(name, data)}")
    print(f"wrote {path}")
    return 0
