"""Execute every notebook with papermill at the CI sizes (notebooks/ci_parameters.yml) and check the
results JSON each one writes. Kernel python3, MPLBACKEND=agg, an execution timeout per cell; executed
copies and figures go to a temporary folder (SALMA_FIGURES_DIR), so the tests never touch figures/.

A new notebook must add its check to CHECKS below (the test fails for a notebook without one).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from papermill import PapermillExecutionError

from salma.cli.notebooks import ANSI, list_notebooks, load_ci_parameters, parameters_for, run_notebook
from salma.config import PRESET_NAMES

pytestmark = pytest.mark.notebooks

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = list_notebooks(NOTEBOOK_DIR)
CELL_TIMEOUT = 900  # seconds per cell at the CI sizes


def _finite_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_00_environment(results: dict[str, Any], figures: Path) -> None:
    for name in ("torch", "transformers", "sam2", "peft", "accelerate"):
        assert results["versions"][name], f"{name} version missing"
    assert results["sam2_builds"] is True, results["sam2_error"]
    assert results["internvl_builds"] is True, results["internvl_error"]
    for part in ("sam2", "internvl"):
        for key in ("build_s", "forward_s"):
            assert _finite_positive(results[part][key]), (part, key, results[part][key])
        assert results[part]["params"] > 0
    assert results["device"] in ("cpu", "cuda", "cuda:0")
    # the kernel papermill started is this interpreter's environment (the venv), not another python
    assert Path(results["python_prefix"]).resolve() == Path(sys.prefix).resolve()
    assert (figures / "00_environment.png").stat().st_size > 0
    assert (figures / "00_environment.csv").exists() and (figures / "00_environment.md").exists()


def check_09_efficiency(results: dict[str, Any], figures: Path) -> None:
    rows = {r["key"]: r for r in results["table"]}
    for key in ("internvit", "hiera", "projector", "prepass", "mba", "extras", "llm", "decoder", "sa2va_total"):
        assert _finite_positive(rows[key]["GMAC"]), (key, rows[key])
        assert math.isclose(rows[key]["GFLOP"], 2 * rows[key]["GMAC"], rel_tol=1e-4), key
        assert rows[key]["GMAC_wo_attention"] <= rows[key]["GMAC"]
    assert rows["hiera"]["paper_params_M"] == 212.7 and rows["internvit"]["paper_G"] == 1614.1
    assert "GFLOP = 2 x GMAC" in results["convention"]
    pre = results["prepass"]
    assert pre["under_1G_as_GMAC"] == (pre["GMAC"] < 1.0) and pre["under_1G_as_GFLOP"] == (pre["GFLOP"] < 1.0)
    if results["preset"] == "paper":
        assert all(v["within_1pct"] for v in results["params_check"].values()), results["params_check"]
    assert results["prior_check"]["max_abs_diff_before_override"] < 1e-4
    lat = results["latency"]
    assert lat["b_paired"]["n"] >= 1 and _finite_positive(lat["b_paired"]["median"])
    assert _finite_positive(lat["a_paired"]["median"]) and _finite_positive(lat["prior_upstream_over_lean"])
    assert [o["change"] for o in lat["overheads"]] == ["1 before", "1 after", "1 after", "2 before", "2 after",
                                                       "3 before", "3 after"]
    assert lat["machine_before"]["device"] in ("cpu", "cuda", "cuda:0") and lat["machine_before"]["loadavg"]
    assert (figures / "09_efficiency.png").stat().st_size > 0
    for name in ("table5_efficiency", "table5_latency", "table5_overhead"):
        assert (figures / f"{name}.csv").exists() and (figures / f"{name}.md").exists(), name


def _fraction(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0


def _percent(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 100.0


def _files(figures: Path, *names: str) -> None:
    for name in names:
        path = figures / name
        assert path.exists() and path.stat().st_size > 0, f"{name} was not written"


def check_01_prepass_prior(results: dict[str, Any], figures: Path) -> None:
    assert results["n_expressions"] > 0
    for model in ("random", "foundation"):
        for key in ("iou_union", "iou_target", "target_recall", "gate_share_union", "gate_share_target",
                    "union_ratio", "area_ratio", "prior_area"):
            assert _fraction(results[model][key]), (model, key, results[model][key])
        # the target is one of the objects: its area cannot exceed the union's
        assert results[model]["area_ratio"] <= results[model]["union_ratio"] + 1e-9
    assert "prior" in results["verdict"]
    _files(figures, "01_prior_examples.png", "01_prior_overlap.png", "01_prior_overlap.csv", "01_prior_overlap.md")


def check_02_mba_gating(results: dict[str, Any], figures: Path) -> None:
    assert results["attention_sums_to_one"] is True
    assert results["eq2_error"] < 1e-4, "F_v' != F_v + gamma * G * O_attn"
    assert 0.0 <= results["gate_min"] <= results["gate_max"] <= 1.0
    assert len(results["selected_words"]) == 2 and set(results["selected_words"]) - {"-"} <= set(results["tokens"])
    assert len(results["router_scores"]) == len(results["tokens"])
    assert set(results["gamma"]) == {"salma", "bias", "film"}
    assert all(math.isfinite(g) for g in results["gamma"].values())
    assert set(results["shares"]) == {"gate (SALMA)", "gate forced to 1", "bias", "FiLM", "chance (area ratio)"}
    for row in results["shares"].values():
        assert _percent(row["share on target (%)"]) and _percent(row["share on distractor (%)"])
    _files(figures, "02_router.png", "02_attention_heads.png", "02_mba_panel.png", "02_modes.png", "02_modes.csv")


def check_03_losses(results: dict[str, Any], figures: Path) -> None:
    assert results["boundary_exact"] < 1e-3
    assert results["boundary_batch_independent"] is True
    assert results["boundary_monotone_until_radius"] is True
    assert results["tmc_matched_below_shuffled_low_noise"] is True
    small = [r["seg"] for r in results["shift"] if r["shift"] <= 4]
    assert small == sorted(small), f"L_seg must rise with small shifts: {small}"
    for rows in (results["shift"], results["blur"], results["tmc_noise"], results["tmc_temperature"]):
        assert rows and all(math.isfinite(v) for r in rows for v in r.values())
    assert results["tmc_chance"] > 0
    _files(figures, "03_sobel_edges.png", "03_mask_losses.png", "03_tmc.png", "03_mask_losses.csv", "03_tmc.md")


def _val_rows_ok(rows: list[dict]) -> None:
    subsets = {r["subset"] for r in rows}
    assert {"all", "<1%", "<2%", "<5%"} <= subsets, subsets
    for r in rows:
        assert r["N"] == 0 or _fraction(r["cIoU"]), r


def check_04_training_run(results: dict[str, Any], figures: Path) -> None:
    assert results["steps"] > 0
    for key in ("total", "seg", "bce", "dice", "tmc", "boundary", "gamma", "lr", "grad_norm"):
        assert math.isfinite(results["final"][key]), key
    assert results["final"]["gamma_scale"] == 1.0 and results["final"]["aux_scale"] == 1.0, "warm-ups did not end"
    assert _fraction(results["ciou"])
    _val_rows_ok(results["val"])
    assert results["verdict"]
    _files(figures, "04_training_curves.png", "04_predictions.png", "04_val.csv", "04_loss_summary.md")


def check_05_ablation(results: dict[str, Any], figures: Path) -> None:
    expected = {"baseline", "mba", "mba_tmc", "salma", "film"}
    assert expected <= set(results["variants"])
    table2 = {r["variant"]: r for r in results["table2"]}
    for v in ("baseline", "mba", "mba_tmc", "salma"):
        assert _percent(table2[v]["mean"]), table2[v]
        assert table2[v]["seeds"] == len(results["seeds"])
        assert math.isfinite(table2[v]["paper: RefCOCOg test cIoU (%)"]), "the paper's column is missing"
    assert table2["salma"]["paper: RefCOCOg test cIoU (%)"] == 78.42
    table3 = {r["variant"]: r for r in results["table3"]}
    assert set(table3) == {"salma", "film"} and table3["film"]["paper: Ref-DAVIS17 val J&F (%)"] == 68.13
    kinds = {(r["variant"], r["subset"]) for r in results["rows"]}
    for v in expected:
        for subset in ("all", "attribute", "distractor", "relation"):
            assert (v, subset) in kinds, (v, subset)
    assert len(results["verdicts"]) == len(results["comparisons"]) >= 6
    assert all(math.isfinite(c["mean"]) for c in results["comparisons"])
    _files(figures, "05_table2.csv", "05_table2.md", "05_table3.md", "05_per_seed.csv", "05_per_kind.png",
           "05_ablation.png")


def check_06_saliency_bias(results: dict[str, Any], figures: Path) -> None:
    rows = {r["area bin"]: r for r in results["table4"]}
    assert list(rows) == ["<1%", "<2%", "<5%", "all"]
    ns = [rows[b]["N (ours)"] for b in rows]
    assert ns == sorted(ns) and ns[-1] > 0, f"cumulative bins must have non-decreasing N: {ns}"
    assert [rows[b]["paper N"] for b in rows] == [35, 151, 1559, 4896]
    for r in rows.values():
        for key in ("baseline mean", "model mean"):
            assert r["N (ours)"] == 0 or _percent(r[key]), (r["area bin"], key, r[key])
    assert set(results["verdicts"]) == set(rows)
    _files(figures, "06_table4.csv", "06_table4.md", "06_area_bins.png")


def check_07_attention_spotlight(results: dict[str, Any], figures: Path) -> None:
    rows = {(r["model"], r["map"]): r for r in results["table"]}
    assert {("baseline", "decoder"), ("salma", "decoder"), ("salma", "mba"), ("salma", "ungated")} <= set(rows)
    assert ("baseline", "mba") not in rows, "the baseline has no MBA"
    for r in rows.values():
        for key in ("target mean", "distractor mean", "chance target (%)", "chance distractor (%)"):
            assert _percent(r[key]), (r["model"], r["map"], key, r[key])
    assert results["n_distractor_expressions"] > 0
    assert len(results["verdicts"]) == 3
    _files(figures, "07_attention_maps.png", "07_attention_share.png", "07_attention_share.csv")


def check_08_qualitative(results: dict[str, Any], figures: Path) -> None:
    counts = results["counts"]
    assert set(counts) == {"baseline drifts, SALMA does not", "SALMA drifts, baseline does not", "both drift",
                           "neither drifts"}
    assert sum(counts.values()) == results["n_with_distractor"] <= results["n_expressions"]
    assert results["n_with_distractor"] > 0
    assert "IoU" in results["rule"] and results["verdict"]
    _files(figures, "08_baseline_drifts.png", "08_salma_drifts.png", "08_counts.csv", "08_cases.csv")


# notebook stem -> check(results read from figures/<stem>.json, the figures folder)
def check_10_video(results: dict[str, Any], figures: Path) -> None:
    variants, seeds = results["variants"], results["seeds"]
    assert {"baseline", "salma"} <= set(variants)
    got = {(r["variant"], r["seed"], r["mode"], r["subset"]) for r in results["rows"]}
    for v in variants:
        for s in seeds:
            for mode in ("per_frame", "released"):
                for subset in ("all", "appearance", "motion"):
                    assert (v, s, mode, subset) in got, (v, s, mode, subset)
    assert all(0.0 <= r["J&F"] <= 1.0 and math.isclose(r["J&F"], (r["J"] + r["F"]) / 2, abs_tol=1e-9)
               for r in results["rows"] if r["N"] > 0)
    floors = {(r["floor"], r["subset"]) for r in results["floors"]}
    assert {("largest_object_per_frame", "all"), ("first_frame_gt", "all")} <= floors
    table2 = {r["variant"]: r for r in results["table2"]}
    assert table2["baseline"]["paper: Ref-DAVIS17 val J&F (%)"] == 68.52 and table2["salma"]["seeds"] == len(seeds)
    assert "paper: RefCOCOg test cIoU (%)" not in table2["salma"]  # the video table carries the video column only
    assert {r["variant"]: r for r in results["table3"]}["salma"]["paper: MeViS valu J&F (%)"] == 53.37
    assert sum("floor" in v for v in results["verdicts"]) == 2 * len(variants)
    assert set(results["example"]["scores"]) == {f"{m} ({mode})" for m in ("baseline", "salma")
                                                 for mode in ("per_frame", "released")}
    for mode in ("per_frame", "released"):
        cost = results["cost"]["modes"][mode]
        assert _finite_positive(cost["baseline"]["per_frame_s"]["median"]), mode
        assert _finite_positive(cost["salma"]["extras_per_frame_s"]["median"]), mode  # the extras ran on every frame
    long_clip = results["long_clip"]
    assert [r["offload"] for r in long_clip] == [False, True]
    assert all(r["rss_peak_mb"] >= r["rss_before_mb"] and r["ms_per_frame"] > 0 for r in long_clip)
    _files(figures, "10_walkthrough.png", "10_jf.md", "10_jf.png", "10_table2_davis.csv", "10_table3_mevis.md",
           "10_cost.csv", "10_long_clip.csv")


def check_11_mba_study(results: dict[str, Any], figures: Path) -> None:
    configurations = {r["configuration"] for r in results["rows"]}
    assert "faithful" in configurations and len(results["summary"]) == len(configurations)
    for r in results["rows"]:
        assert r["steps"] > 0 and math.isfinite(r["gamma"]) and 0.0 <= r["ciou"] <= 1.0
        assert 0.0 <= r["changed_gamma0"] <= 1.0 and r["r"] >= 0.0
    assert len(results["verdicts"]) == len(configurations) + 1 and "inside the targets" in results["acts_rule"]
    _files(figures, "11_mba_dynamics.png", "11_mba_study.csv")


CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "00_environment": check_00_environment,
    "01_prepass_prior": check_01_prepass_prior,
    "02_mba_gating": check_02_mba_gating,
    "03_losses": check_03_losses,
    "04_training_run": check_04_training_run,
    "05_ablation": check_05_ablation,
    "06_saliency_bias": check_06_saliency_bias,
    "07_attention_spotlight": check_07_attention_spotlight,
    "08_qualitative": check_08_qualitative,
    "09_efficiency": check_09_efficiency,
    "10_video": check_10_video,
    "11_mba_study": check_11_mba_study,
}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(figures, executed) shared by the notebooks of one session: later notebooks may read what
    earlier ones wrote, and they run in sorted order like the main job."""
    base = tmp_path_factory.mktemp("notebooks")
    return base / "figures", base / "executed"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """One run cache for the session's notebooks (05 trains, 06-08 reuse), outside the repository."""
    return tmp_path_factory.mktemp("runs")


def _env(monkeypatch, figures: Path, runs: Path | None = None) -> None:
    monkeypatch.setenv("SALMA_FIGURES_DIR", str(figures))
    monkeypatch.setenv("MPLBACKEND", "agg")
    if runs is not None:
        monkeypatch.setenv("SALMA_RUNS_DIR", str(runs))


def test_notebooks_found():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_ci_sizes(path, run_dirs, runs_dir, monkeypatch):
    figures, executed = run_dirs
    _env(monkeypatch, figures, runs_dir)
    params = parameters_for(path, load_ci_parameters(NOTEBOOK_DIR))
    try:
        run_notebook(path, executed, params, timeout=CELL_TIMEOUT, log_output=False)
    except PapermillExecutionError as exc:  # the notebook's own error, not papermill's internals
        pytest.fail(f"{path.name} failed with {params}:\n{ANSI.sub('', str(exc))}", pytrace=False)
    assert path.stem in CHECKS, f"add a check for {path.name} to CHECKS in {Path(__file__).name}"
    results_file = figures / f"{path.stem}.json"
    assert results_file.exists(), f"{path.name} did not write {results_file.name}"
    CHECKS[path.stem](json.loads(results_file.read_text()), figures)


def test_bad_parameter_names_the_parameter_and_accepted_values(tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path / "figures")
    with pytest.raises(PapermillExecutionError) as info:
        run_notebook(NOTEBOOK_DIR / "00_environment.ipynb", tmp_path, {"PRESET": "nope"},
                     timeout=CELL_TIMEOUT, log_output=False)
    message = str(info.value)
    assert "PRESET" in message and "'nope'" in message
    assert ", ".join(PRESET_NAMES) in message
