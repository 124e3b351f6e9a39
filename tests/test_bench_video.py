"""salma.bench.video (``python -m salma bench --video``): the video benchmark at the tiny preset, eager vs
``torch.compile``d SALMA extras, and the ``--compile`` option's errors."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest
import torch

from salma.bench import video as bv
from salma.bench.timing import StageTimer
from salma.cli.bench import add_arguments, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_video_bench_writes_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SALMA_FIGURES_DIR", str(tmp_path))
    args = _parser().parse_args(["--video", "--preset", "tiny", "--device", "cpu", "--frames", "3", "--reps", "1"])
    assert run(args) == 0
    table = pd.read_csv(tmp_path / "table5_video.csv")
    assert (tmp_path / "table5_video.md").exists() and (tmp_path / "table5_video.json").exists()
    assert list(zip(table["mode"], table["key"])) == [("released", "baseline"), ("released", "salma"),
                                                     ("per_frame", "baseline"), ("per_frame", "salma"),
                                                     ("clip", "mllm")]
    salma = table[table["key"] == "salma"]
    assert (salma["extras_ms_per_frame"] > 0).all() and (table["ms_per_frame"] > 0).all()
    assert table[table["key"] == "baseline"]["extras_ms_per_frame"].isna().all()
    assert "ms per frame" in capsys.readouterr().out


def test_variants_restore_the_model_and_the_baseline_skips_the_extras():
    model, vb = bv.prepare_video_bench("tiny", "cpu", n_frames=2, mllm_frames=1)
    mba = model.mba
    timer = StageTimer(vb.device)
    with bv.variant(model, "baseline", timer=timer):
        assert model.mba is None
        base = bv._run_mode(model, vb, "per_frame", return_logits=True)[1]
    with bv.variant(model, "salma", timer=timer):
        salma = bv._run_mode(model, vb, "per_frame", return_logits=True)[1]
    assert model.mba is mba and "prior_fn" not in model.__dict__
    assert set(timer.seconds()) == {"prior", "mba"}  # only the SALMA run called the extras
    assert not torch.allclose(base, salma)  # gamma != 0: MBA changes the logits
    with pytest.raises(ValueError, match="--compile"), bv.variant(model, "salma_compiled"):
        pass


@pytest.mark.slow  # inductor's C++ compilation: ~60 s with a cold cache on 2 busy cores, ~9 s warm
def test_compiled_extras_equal_eager_extras():
    model, vb = bv.prepare_video_bench("tiny", "cpu", n_frames=1, mllm_frames=1)
    compiled = bv.compiled_extras(model, "default")
    try:
        check = bv.compare_compiled(model, vb, compiled, modes=("per_frame",))
    except Exception as exc:  # no C compiler, unsupported platform, ...
        if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise  # a bug of ours, not the machine's compiler
        pytest.skip(f"torch.compile(mode='default') is not usable on this machine: {type(exc).__name__}: {exc}")
    d = check["direct"]
    assert d["prior_max_abs_diff"] < 1e-4 and d["mba_max_abs_diff"] < 1e-4 * max(1.0, d["mba_max_abs"])
    assert check["per_frame"]["max_abs_diff_logits"] < 1e-4 and check["per_frame"]["mask_agreement"] == 1.0
    assert model.mba is not compiled.mba and model.mba is compiled.mba._orig_mod  # eager model untouched


def test_bad_compile_value_names_the_accepted_values(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--video", "--compile", "fast"])
    err = capsys.readouterr().err
    assert "--compile" in err and all(m in err for m in bv.COMPILE_MODES)
    with pytest.raises(ValueError, match="none, default, max-autotune"):
        bv.check_compile_mode("fast")
    assert run(_parser().parse_args(["--preset", "tiny", "--compile", "default"])) == 2
    assert "--video" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_video_bench_on_cuda_with_max_autotune():
    # The GPU command's path at the tiny preset: CUDA, bf16 autocast, max-autotune (CUDA graphs).
    out = bv.run_video_benchmark("tiny", "cuda", n_frames=3, reps=1, compile_mode="max-autotune", progress=False)
    keys = list(out["table"]["key"])
    assert keys.count("salma_compiled") == 2 and keys[-1] == "mllm"
    for mode in ("per_frame", "released"):
        assert out["summary"]["compile_check"][mode]["mask_agreement"] > 0.99  # bf16: not bit-equal


def test_long_clip_reports_time_and_peak_memory(tmp_path, monkeypatch, capsys):
    rows = bv.long_clip_memory("tiny", n_frames=6, device="cpu", progress=False)
    assert [r["offload"] for r in rows] == [False, True]
    for r in rows:
        assert r["frames"] == 6 and r["masks_shape"] == [1, 6, r["size"], r["size"]]
        assert r["rss_peak_mb"] >= r["rss_before_mb"] > 0 and r["ms_per_frame"] > 0 and r["cuda_peak_mb"] is None
    monkeypatch.setenv("SALMA_FIGURES_DIR", str(tmp_path))
    assert run(_parser().parse_args(["--video", "--preset", "tiny", "--device", "cpu", "--long", "3"])) == 0
    assert (tmp_path / "video_long_clip.csv").exists() and "Long clip" in capsys.readouterr().out
    assert run(_parser().parse_args(["--preset", "tiny", "--long", "3"])) == 2
    assert "--video" in capsys.readouterr().err


def test_peak_rss_sees_a_temporary_allocation():
    import numpy as np

    with bv.PeakRSS(interval=0.001) as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        import time

        time.sleep(0.05)
        del block
    assert mem.peak_mb - mem.before_mb > 40
