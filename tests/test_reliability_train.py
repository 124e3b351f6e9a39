"""Reliability of training and its files (issue 23): a user's data is never written, corrupt weights are
refused, a diverging run stops uncached, torn logs and a second process are survived, a full disk is named,
resume is bit-exact after SIGKILL and Ctrl-C saves a checkpoint. Each test names the case it covers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from salma.checkpoint import load_state_dict
from salma.config import get_preset
from salma.data.refer import ReferDataset
from salma.data.synref import generate_synref
from salma.model import SalmaModel
from salma.paths import REPO_ROOT
from salma.train import batches
from salma.train.loop import train
from salma.train.tokenizer import synthetic_tokenizer

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from train_worker import run_config, run_spec  # the worker is a script beside the fixtures

WORKER = Path(__file__).parent / "fixtures" / "train_worker.py"
STEPS = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synref_reliability")
    generate_synref(root, seed=5, scene_size=32, n_images={"train": 16, "val": 4, "testA": 1, "testB": 1},
                    progress=False)
    return root


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The reference: the worker's run trained once, without interruption, in this process."""
    batches._FEATURE_STORES.clear()
    result = train(run_config(STEPS), run_spec(str(data)), runs_root=tmp_path_factory.mktemp("reference"),
                   progress=False)
    return load_state_dict(result.final / "model.safetensors")


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (folders as empty entries)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def worker(mode: str, data: Path, runs: Path, steps: int = STEPS, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SALMA_LOADER_WORKERS": "0"}
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(data), str(runs), str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def final_weights(runs: Path) -> dict[str, torch.Tensor]:
    (final,) = runs.glob("*/final/model.safetensors")
    return load_state_dict(final)


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), (k, float((value - b[k]).abs().max()))


def wait_for_log_rows(runs: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        logs = list(runs.glob("*/log.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no {n} log rows after {timeout} s")


# ------------------------------------------------------------------------------------------------ case 1
def test_case01_train_never_writes_into_a_user_folder(tmp_path, cli_error):
    found = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(tmp_path / "found")
    refcoco = tmp_path / "refcoco_like"
    (refcoco / "images").mkdir(parents=True)
    (refcoco / "images" / "COCO_1.jpg").write_bytes(b"not really a jpeg")
    (refcoco / "refcoco").mkdir()
    (refcoco / "refcoco" / "instances.json").write_text("{}")
    lost = tmp_path / "synref_without_instances"
    generate_synref(lost, seed=0, scene_size=32, n_images={"train": 2, "val": 1, "testA": 0, "testB": 0},
                    progress=False)
    (lost / "synref" / "instances.json").unlink()
    before = {p: tree_digest(p) for p in (refcoco, lost)}
    args = ["train", "--preset", "tiny", "--steps", "1", "--foundation", found, "--runs", tmp_path / "runs"]
    assert "does not exist" in cli_error([*args, "--data", tmp_path / "typo"])
    assert not (tmp_path / "typo").exists(), "a mistyped path must not become a new dataset"
    for root in (refcoco, lost):
        assert "is not a SynRef root" in cli_error([*args, "--data", root])
        assert tree_digest(root) == before[root], f"{root} was written to"
    (tmp_path / "a_file").write_text("x")
    assert "is a file, not a folder" in cli_error([*args, "--data", tmp_path / "a_file"])


# ------------------------------------------------------------------------------------------------ case 2
@pytest.fixture
def corrupt_foundation(tmp_path) -> Path:
    """A copy of the shipped small foundation with a quarter of its tensor bytes overwritten (header intact)."""
    copy = tmp_path / "foundation_copy"
    shutil.copytree(REPO_ROOT / "foundation" / "small", copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    n = (len(data) - header) // 4
    data[header:header + n] = bytes(n)
    weights.write_bytes(bytes(data))
    return copy


def test_case02_corrupt_copy_of_the_shipped_foundation_is_refused(corrupt_foundation, data, cli_error):
    expected = json.loads((corrupt_foundation / "manifest.json").read_text())["sha256"]["model.safetensors"]
    with pytest.raises(ValueError) as info:
        SalmaModel.from_pretrained(corrupt_foundation)
    assert str(corrupt_foundation / "model.safetensors") in str(info.value) and expected in str(info.value)
    line = cli_error(["evaluate", "--checkpoint", corrupt_foundation, "--data", data, "--limit", "2"])
    assert expected in line and "model.safetensors" in line


def test_case02_non_finite_loss_stops_the_run_uncached(data, tmp_path):
    from salma.train.guards import TrainingDiverged

    model = SalmaModel(run_config(2), tokenizer=synthetic_tokenizer())
    with torch.no_grad():
        for p in model.sam.parameters():
            p.fill_(float("nan"))
    bad = model.save_pretrained(tmp_path / "nan_weights")
    spec = run_spec(str(data))
    spec = type(spec)(**{**spec.__dict__, "init_from": str(bad), "stage": "finetune"})
    with pytest.raises(TrainingDiverged, match=r"loss nan at step 1.*nothing cached"):
        train(run_config(2), spec, runs_root=tmp_path / "runs", progress=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "final").exists()


def test_case02_finished_run_with_damaged_weights_is_not_reused(data, tmp_path):
    cfg, spec = run_config(2), run_spec(str(data))
    done = train(cfg, spec, runs_root=tmp_path, progress=False)
    weights = done.final / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="is damaged.*model.safetensors is corrupt.*delete"):
        train(cfg, spec, runs_root=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------ case 5
def test_case05_torn_last_log_line_is_survived(data, tmp_path, uninterrupted):
    cfg, spec = run_config(STEPS), run_spec(str(data))
    killed = train(cfg, spec, runs_root=tmp_path, progress=False, stop_after=3)
    with open(killed.run_dir / "log.jsonl", "a") as f:
        f.write('{"step": 4, "lr": 0.0')  # a full disk in mid-write
    batches._FEATURE_STORES.clear()
    with pytest.warns(UserWarning, match="torn"):
        resumed = train(cfg, spec, runs_root=tmp_path, progress=False)
    assert [r["step"] for r in resumed.log] == list(range(1, STEPS + 1))
    assert_bit_identical(uninterrupted, load_state_dict(resumed.final / "model.safetensors"))


def test_case05_empty_metrics_json_is_named(data, tmp_path):
    cfg, spec = run_config(2), run_spec(str(data))
    done = train(cfg, spec, runs_root=tmp_path, progress=False)
    (done.run_dir / "metrics.json").write_text("")
    with pytest.raises(ValueError, match=r"metrics.json"):
        train(cfg, spec, runs_root=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------------ case 6
def test_case06_a_second_process_is_refused_and_the_first_run_is_intact(data, tmp_path, uninterrupted):
    go = tmp_path / "go"
    first = worker(f"hold:{go}", data, tmp_path / "runs")
    wait_for_log_rows(tmp_path / "runs", 1, first)
    second = worker("plain", data, tmp_path / "runs")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 3, err
    assert f"pid {first.pid}" in err and "being trained by another process" in err
    go.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    rows = [json.loads(line) for line in next((tmp_path / "runs").glob("*/log.jsonl")).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "one log row per step"
    assert_bit_identical(uninterrupted, final_weights(tmp_path / "runs"))


def test_case06_a_stale_lock_of_a_dead_process_is_taken_over(data, tmp_path):
    from salma.train.identity import run_hash

    cfg, spec = run_config(2), run_spec(str(data))
    run_dir = tmp_path / f"{spec.name}-{run_hash(cfg, spec)}"
    run_dir.mkdir()
    (run_dir / "lock").write_text(json.dumps({"pid": 2**22 + 1, "host": "gone"}))  # no process holds it
    assert train(cfg, spec, runs_root=tmp_path, progress=False).metrics


# ------------------------------------------------------------------------------------------------ case 7
def test_case07_full_disk_during_a_checkpoint_names_the_path_and_leaves_no_partial(data, tmp_path, monkeypatch):
    from salma.train import store

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(store.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"ckpt-0000002.*failed.*free space there and rerun") as info:
        train(run_config(4), run_spec(str(data)), runs_root=tmp_path, progress=False)
    assert "MiB free" in str(info.value)
    (run_dir,) = tmp_path.iterdir()
    assert not list(run_dir.glob(".ckpt-*")) and not list(run_dir.glob("ckpt-*"))


def test_case07_sigkill_during_a_checkpoint_then_restart_is_clean_and_bit_exact(data, tmp_path, uninterrupted):
    killed = worker("kill-in-save:4", data, tmp_path)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    (run_dir,) = tmp_path.iterdir()
    assert list(run_dir.glob(".ckpt-*")), "the kill left a partial checkpoint (else the test tests nothing)"
    assert (run_dir / "latest").read_text() == "ckpt-0000002"
    resumed = worker("plain", data, tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert not list(run_dir.glob(".ckpt-*")), "the partial checkpoint is removed on restart"
    assert_bit_identical(uninterrupted, final_weights(tmp_path))


# ----------------------------------------------------------------------------------------------- case 11
@pytest.mark.parametrize("steps", ["0", "-5"])
def test_case11_steps_below_one_are_refused(steps, tmp_path, cli_error):
    line = cli_error(["train", "--preset", "tiny", "--steps", steps, "--runs", tmp_path])
    assert "--steps" in line and steps in line


def test_case11_library_steps_zero_is_not_the_default(data, tmp_path):
    from salma.train.loop import run_length

    spec = run_spec(str(data))
    with pytest.raises(ValueError, match="positive integer"):
        run_length(run_config(5), type(spec)(**{**spec.__dict__, "steps": 0}))
    assert run_length(run_config(5), spec) == 5


# ----------------------------------------------------------------------------------------------- case 13
def test_case13_frozen_features_do_not_depend_on_the_company_they_are_encoded_in(data):
    model = SalmaModel(get_preset("small"), tokenizer=synthetic_tokenizer()).eval()
    scenes = batches.TrainScenes(ReferDataset(data, "synref", split="train"))
    batches._FEATURE_STORES.clear()
    alone = scenes.features([5], model)
    batches._FEATURE_STORES.clear()
    together = scenes.features([0, 1, 2, 3, 4, 5, 6, 7], model)
    for name, value in vars(alone).items():
        if torch.is_tensor(value):
            assert torch.equal(value[0], getattr(together, name)[5]), name


def test_case13_ctrl_c_saves_a_checkpoint_and_the_resumed_run_is_bit_exact(data, tmp_path, uninterrupted):
    proc = worker("slow", data, tmp_path)
    wait_for_log_rows(tmp_path, 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted after step" in lines[0] and "rerun the same command" in lines[0], err
    (run_dir,) = tmp_path.iterdir()
    stopped_at = int(lines[0].split("after step ")[1].split("/")[0])
    assert (run_dir / "latest").read_text() == f"ckpt-{stopped_at:07d}", "the step it stopped at is saved"
    resumed = worker("plain", data, tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert_bit_identical(uninterrupted, final_weights(tmp_path))


def test_case13_cli_reports_an_interrupt_in_one_line(monkeypatch, capsys):
    from salma.cli import main
    from salma.cli import model as cli_model
    from salma.train.guards import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("tiny-salma-s0 interrupted after step 3/20; checkpoint X; rerun the same command")

    monkeypatch.setattr(cli_model, "finetune", interrupted)
    assert main(["train", "--preset", "tiny", "--data", "unused"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted: tiny-salma-s0 interrupted after step 3/20; checkpoint X; rerun the same command"]


# ----------------------------------------------------------------------------------------------- case 14
def test_case14_a_config_that_is_a_json_list_is_named(tmp_path):
    folder = SalmaModel(get_preset("tiny"), tokenizer=synthetic_tokenizer()).save_pretrained(tmp_path / "m")
    (folder / "salma_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"salma_config.json is not a valid SALMA config .*JSON object"):
        SalmaModel.from_pretrained(folder)


def test_case14_a_torn_checkpoint_says_what_restores_the_run(data, tmp_path):
    cfg, spec = run_config(4), run_spec(str(data))
    killed = train(cfg, spec, runs_root=tmp_path, progress=False, stop_after=2)
    state = killed.run_dir / "ckpt-0000002" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="delete .*latest") as info:
        train(cfg, spec, runs_root=tmp_path, progress=False)
    assert "state.pt" in str(info.value)
    (killed.run_dir / "latest").unlink()  # what the message says to do
    assert train(cfg, spec, runs_root=tmp_path, progress=False).metrics, "the advice leaves a run that finishes"


def test_case14_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, cli_error):
    from salma.cli import main
    from salma.cli import model as cli_model

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(cli_model, "finetune", broken)
    line = cli_error(["train", "--preset", "tiny", "--data", "unused"])
    assert line.startswith("error: AttributeError: ") and "--debug" in line
    with pytest.raises(AttributeError):
        main(["train", "--preset", "tiny", "--data", "unused", "--debug"])
