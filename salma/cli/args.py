"""Checks the commands share for their arguments: argparse types for counts, and where an output folder may go.

``positive_int`` / ``non_negative_int`` are argparse ``type=`` callables: a bad value (``--limit 0``,
``--limit -3``, ``--limit abc``) stops the command before it loads anything, with argparse's own error line
naming the option and exit status 2, instead of running on and printing empty tables.

``check_output_folder`` is what a command calls before a long computation whose results go to a folder: it
refuses a folder of the repository's tracked files (results there show up as changes to the checkout, and a
``git add -A`` commits them), then creates the folder and writes and removes a probe file, so that a read-only
or mistyped ``--out`` fails in a second, not after an hour of evaluation.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import tempfile
from pathlib import Path

from salma import paths

# Where the repository keeps tracked files, for when git cannot say (no git, or not a checkout): the folders
# an output must never go into.
TRACKED_FALLBACK = ("foundation", "notebooks", "salma", "tests", "docs", "data_manifests")


def _int(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {what}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give {what}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--limit 0`` or ``-3`` is an error, not an empty table)."""
    return _int(text, 1, "a whole number >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _int(text, 0, "a whole number >= 0")


def _git_tracks(repo: Path, name: str) -> bool | None:
    """Whether git tracks a file at or under ``repo/name``; None when git cannot say (no git, no checkout)."""
    try:
        done = subprocess.run(["git", "--literal-pathspecs", "-C", str(repo), "ls-files", "-z", "--", name],
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):  # git not installed, or hanging
        return None
    return bool(done.stdout) if done.returncode == 0 else None


def tracked_folder(path: str | os.PathLike) -> Path | None:
    """The folder of the repository's tracked files that ``path`` is or lies inside, or None.

    A folder counts as tracked when git tracks a file in it or below it; the repository root itself counts,
    but not as a parent (``runs/``, ``data/`` and any other git-ignored or new top-level folder are fine).
    Since every tracked folder inside the root lies in a tracked top-level folder, asking git about
    ``path``'s top-level folder answers for all of its parents. Without git the folders of
    ``TRACKED_FALLBACK`` count as tracked.
    """
    repo = paths.repo_root().resolve()
    target = Path(path).expanduser().resolve()
    if target == repo:
        return repo
    if repo not in target.parents:
        return None
    top = target.relative_to(repo).parts[0]
    tracked = _git_tracks(repo, top)
    if tracked is None:
        tracked = top in TRACKED_FALLBACK
    return repo / top if tracked else None


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``path`` (with its parents) and make sure a file can be written in it; return it.

    Raises:
        ValueError: ``path`` is inside a folder of the repository's tracked files (``tracked_folder``).
        PermissionError: the folder cannot be created or written (read-only, no permission).
        OSError: another reason it cannot be a folder (a file is in the way), naming the folder.
    """
    out = Path(path).expanduser()
    tracked = tracked_folder(out)
    if tracked is not None:
        raise ValueError(f"{flag} {out} is in {tracked}, which holds files tracked by git: results written "
                         f"there would show up as changes to the repository {paths.repo_root()}; pass an {flag} "
                         f"outside its tracked folders (e.g. under {paths.runs_root()})")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        denied = isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        cls = PermissionError if denied else type(exc)
        raise cls(f"cannot write to the output folder {out} ({exc.strerror or exc}): pass a writable "
                  f"{flag}") from exc
    return out
