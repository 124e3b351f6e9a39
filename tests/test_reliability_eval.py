"""Reliability issue 23, the evaluation cases: ``python -m salma evaluate`` keeps every result it wrote, says in
eval.json what was evaluated, checks its output folder before evaluating, never writes into the repository's
tracked folders, writes strict JSON (case 8); counts given on the command line are checked by argparse (case 11).

Every test fails on the code before the fix (4fb757d). The few imports of what the fix added are inside the
tests, so that on the old code each test fails on its own assertion or import, not the whole module.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import salma.cli.evaluate as evaluate_cli
import salma.paths
from salma.__main__ import main
from salma.config import get_preset
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.data.synref_video import generate_synref_video
from salma.data.video_format import VideoReferDataset
from salma.eval.floors import evaluate_video_with_floors
from salma.eval.video import write_video_result
from salma.io import sha256_file
from salma.model import SalmaModel
from salma.train.tokenizer import synthetic_tokenizer


@pytest.fixture(scope="module")
def synref(tmp_path_factory) -> Path:
    """A SynRef with 4 val images (about a dozen expressions) at 32x32."""
    root = tmp_path_factory.mktemp("synref_rel")
    generate_synref(root, seed=5, scene_size=32, n_images={"train": 1, "val": 4, "testA": 1, "testB": 1},
                    progress=False)
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny SalmaModel checkpoint (a few MB)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt_rel") / "model"
    SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def synvid(tmp_path_factory) -> Path:
    """A SynRef-Video with 3 clips of 8 frames at 32x32."""
    root = tmp_path_factory.mktemp("synvid_rel")
    generate_synref_video(root, seed=4, scene_size=32, n_frames=8, n_videos={"valid_u": 3}, progress=False)
    return root


def _strict(text: str):
    """``json.loads`` that refuses NaN / Infinity literals, as JavaScript's JSON.parse or jq do."""
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=reject)


def _count_calls(monkeypatch, name: str) -> dict:
    """Replace ``salma.cli.evaluate.<name>`` by a wrapper that counts its calls (and still evaluates)."""
    calls = {"n": 0}
    real = getattr(evaluate_cli, name)

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_cli, name, wrapper)
    return calls


def _no_evaluation(monkeypatch, name: str) -> None:
    """Make ``salma.cli.evaluate.<name>`` fail: a test that must be refused before evaluating never writes."""
    def refuse(*args, **kwargs):
        raise RuntimeError("the evaluation ran")

    monkeypatch.setattr(evaluate_cli, name, refuse)


# ---------------------------------------------------------------------------------------------- case 8
def test_case08_limited_run_does_not_replace_full_eval(synref, ckpt, tmp_path):
    ck = shutil.copytree(ckpt, tmp_path / "ck")
    n = len(ReferDataset(synref, "synref", split="val"))
    assert n > 2
    base = ["evaluate", "--checkpoint", str(ck), "--data", str(synref)]
    assert main(base) == 0
    assert main([*base, "--limit", "2"]) == 0
    # another data root (the same files copied) and other weights under the same path: folders of their own
    other = shutil.copytree(synref, tmp_path / "synref_copy")
    assert main(["evaluate", "--checkpoint", str(ck), "--data", str(other), "--limit", "2"]) == 0
    torch.manual_seed(1)
    SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(ck)
    assert main([*base, "--limit", "2"]) == 0

    written = sorted(ck.glob("eval-*/eval.json"))
    assert len(written) == 4, [p.parent.name for p in written]
    by_name = {p.parent.name: json.loads(p.read_text()) for p in written}
    full = [s for name, s in by_name.items() if "-all-" in name]
    assert len(full) == 1 and full[0]["model"][0]["N"] == n  # the full result is still there
    assert full[0]["provenance"]["n_expressions"] == n and full[0]["provenance"]["limit"] is None
    assert sum("-limit2-" in name for name in by_name) == 3
    assert all(name.startswith("eval-synref-val-") for name in by_name)


def test_case08_eval_json_records_what_was_evaluated(synref, ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(synref), "--limit", "3",
                 "--out", str(out)]) == 0
    assert f"wrote {out / 'eval.json'}" in capsys.readouterr().out
    record = json.loads((out / "eval.json").read_text())["provenance"]
    assert record["checkpoint"] == str(ckpt.resolve())
    assert record["weights_sha256"] == sha256_file(ckpt / "model.safetensors")
    assert record["data_root"] == str(synref.resolve())
    assert record["image_root"] == str((synref / "images").resolve())
    assert (record["dataset"], record["split_by"], record["split"]) == ("synref", "unc", "val")
    assert record["limit"] == 3 and record["n_expressions"] == 3
    assert record["date"][:2] == "20" and "T" in record["date"]
    assert isinstance(record["key"], str) and len(record["key"]) >= 8


def test_case08_eval_json_is_strict_json(synref, ckpt, synvid, tmp_path):
    # image: with 2 expressions some subsets (kinds, area bins) are empty, whose cIoU / gIoU are NaN
    out = tmp_path / "image"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(synref), "--limit", "2",
                 "--out", str(out)]) == 0
    summary = _strict((out / "eval.json").read_text())
    empty = [r for r in summary["model"] if r["N"] == 0]
    assert empty and all(r["cIoU"] is None and r["gIoU"] is None for r in empty)
    # video: a subset without expressions and an expression without a score come out as null too
    result = evaluate_video_with_floors(None, VideoReferDataset(synvid, "valid_u"), limit=2, progress=False)
    result.rows = [{"subset": "all", "J": 0.5, "F": 0.5, "J&F": 0.5, "N": 1},
                   {"subset": "motion", "J": math.nan, "F": math.nan, "J&F": math.nan, "N": 0}]
    result.per_expression = [{"video": "v", "exp_id": "0", "J": np.float64("nan"), "F": math.inf, "J&F": 0.5}]
    js, _ = write_video_result(result, tmp_path / "video", "t")
    saved = _strict(js.read_text())
    assert saved["model"][1]["J&F"] is None and saved["per_expression"][0]["J"] is None
    assert saved["per_expression"][0]["F"] is None and saved["model"][0]["J"] == 0.5
    # the command's video eval.json
    dest = tmp_path / "video_cli"
    assert main(["evaluate", "--data", str(synvid), "--limit", "2", "--out", str(dest)]) == 0
    record = _strict((dest / "eval.json").read_text())["provenance"]
    assert record["data_root"] == str(synvid.resolve()) and record["split"] == "valid_u"
    assert record["limit"] == 2 and record["n_expressions"] == 2 and record["checkpoint"] is None


def test_case08_unwritable_out_fails_before_evaluating(synref, ckpt, synvid, tmp_path, monkeypatch, cli_error):
    calls = _count_calls(monkeypatch, "evaluate_with_floors")
    video_calls = _count_calls(monkeypatch, "evaluate_video_with_floors")
    # a folder where a file is in the way (fails even for root)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for argv in (["--checkpoint", ckpt, "--data", synref], ["--data", synvid]):
        err = cli_error(["evaluate", *argv, "--limit", "2", "--out", blocker / "eval"])
        assert str(blocker / "eval") in err and "writable --out" in err, err
    # a read-only folder (simulated: root may write anywhere)
    read_only = tmp_path / "read_only"
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == read_only:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    read_only.mkdir()
    real_write = Path.write_text

    def write_text(self, *args, **kwargs):  # the old code's way of writing eval.json
        if self.parent == read_only:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    err = cli_error(["evaluate", "--checkpoint", ckpt, "--data", synref, "--limit", "2", "--out", read_only])
    assert str(read_only) in err and "Permission denied" in err and "writable --out" in err, err
    assert calls["n"] == 0 and video_calls["n"] == 0, "the evaluation ran before the output folder was checked"


def _git(*args) -> str:
    return subprocess.run(["git", *map(str, args)], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_case08_tracked_checkpoint_writes_under_runs_not_into_the_repository(synref, ckpt, tmp_path,
                                                                              monkeypatch):
    repo = tmp_path / "repo"
    tracked = shutil.copytree(ckpt, repo / "foundation" / "tiny")
    _git("init", "-q", repo)
    _git("-C", repo, "add", "-A")
    _git("-C", repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "tracked")
    monkeypatch.setattr(salma.paths, "REPO_ROOT", repo)
    monkeypatch.setenv("SALMA_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["evaluate", "--checkpoint", str(tracked), "--data", str(synref), "--limit", "2"]) == 0
    assert _git("-C", repo, "status", "--porcelain", "--untracked-files=all") == ""
    written = list((tmp_path / "runs" / "eval").glob("tiny-synref-val-limit2-*/eval.json"))
    assert len(written) == 1
    # without git (not installed, or not a checkout), foundation/ still counts as tracked
    monkeypatch.setenv("PATH", str(tmp_path / "no_binaries"))
    assert main(["evaluate", "--checkpoint", str(tracked), "--data", str(synref), "--limit", "3"]) == 0
    monkeypatch.undo()
    assert _git("-C", repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_case08_out_inside_a_tracked_folder_is_refused(synref, ckpt, synvid, monkeypatch, cli_error, tmp_path):
    _no_evaluation(monkeypatch, "evaluate_with_floors")
    _no_evaluation(monkeypatch, "evaluate_video_with_floors")
    repo = salma.paths.REPO_ROOT
    for out in (repo / "foundation" / "small" / "eval-x", repo / "docs" / "eval-x", repo):
        existed = out.exists()
        err = cli_error(["evaluate", "--checkpoint", ckpt, "--data", synref, "--out", out])
        assert "tracked by git" in err and str(out) in err, err
        assert out.exists() == existed
    err = cli_error(["evaluate", "--data", synvid, "--out", repo / "salma" / "eval-x"])
    assert "tracked by git" in err and not (repo / "salma" / "eval-x").exists()
    from salma.cli.args import tracked_folder  # new in the fix; here so that the old code fails the test only

    assert tracked_folder(repo / "foundation" / "small") == repo / "foundation"
    assert tracked_folder(repo / "runs" / "eval" / "x") is None and tracked_folder(tmp_path) is None


# ---------------------------------------------------------------------------------------------- case 11
def _argparse_error(capsys, argv) -> str:
    """The last error line the command prints for ``argv``, after checking it exits with status 2 (argparse's
    error, whether or not the command line folds argparse's usage + message into one line)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own exit, where the command line lets it through
        code = exc.code
    assert code == 2, f"{argv}: exit status {code}"
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_case11_limit_must_be_a_positive_integer(synref, ckpt, synvid, tmp_path, capsys):
    image = ["evaluate", "--checkpoint", ckpt, "--data", synref, "--out", tmp_path / "eval"]
    for value in ("0", "-3"):
        for argv in (image, ["evaluate", "--data", synvid],
                     ["diagnose", "--checkpoint", ckpt, "--data", synref, "--out", tmp_path / "diag"]):
            line = _argparse_error(capsys, [*argv, "--limit", value])
            assert "argument --limit" in line and ">= 1" in line, line
    line = _argparse_error(capsys, [*image, "--limit", "abc"])
    assert "argument --limit" in line and "'abc'" in line, line


def test_case11_mllm_frames_must_be_at_least_one(synvid, capsys):
    line = _argparse_error(capsys, ["evaluate", "--data", synvid, "--limit", "2", "--mllm-frames", "0"])
    assert "argument --mllm-frames" in line and ">= 1" in line, line
    from salma.cli.args import non_negative_int, positive_int  # new in the fix

    assert positive_int("3") == 3 and non_negative_int("0") == 0
