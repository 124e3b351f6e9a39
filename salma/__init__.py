"""SALMA reproduction kit: Mask-Biased Attention for referring segmentation on Sa2VA (InternVL + SAM-2).

The package holds every piece of logic; the numbered notebooks in ``notebooks/`` only call it. Its public
API is re-exported here (``from salma import SalmaModel, get_preset, finetune, ...``); see docs/design.md
section "Package layers" for where each name lives. Names are imported on first use, so ``import salma``
(and the command line, which imports only the command it runs) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (method first, in data-flow order, then the machinery by layer)
_EXPORTS: dict[str, str] = {
    # salma.config
    "DataConfig": "salma.config",
    "LossConfig": "salma.config",
    "MBAConfig": "salma.config",
    "MLLMConfig": "salma.config",
    "PRESET_NAMES": "salma.config",
    "SAM2Config": "salma.config",
    "SalmaConfig": "salma.config",
    "TrainConfig": "salma.config",
    "get_preset": "salma.config",
    # salma.sam2_ext
    "LanguageSAM2": "salma.sam2_ext",
    "SAM2Features": "salma.sam2_ext",
    "structural_prior": "salma.sam2_ext",
    # salma.mba
    "MBAOutput": "salma.mba",
    "MaskBiasedAttention": "salma.mba",
    # salma.losses
    "boundary_loss": "salma.losses",
    "segmentation_loss": "salma.losses",
    "tmc_loss": "salma.losses",
    "total_loss": "salma.losses",
    # salma.batch
    "Batch": "salma.batch",
    "BatchCollator": "salma.batch",
    # salma.model
    "Prediction": "salma.model",
    "SalmaModel": "salma.model",
    # salma.video
    "predict_video": "salma.video",
    # salma.paths
    "figures_dir": "salma.paths",
    "foundation_dir": "salma.paths",
    "repo_root": "salma.paths",
    "runs_root": "salma.paths",
    # salma.device
    "resolve_device": "salma.device",
    # salma.bench.forward
    "prepare_benchmark": "salma.bench.forward",
    # salma.bench.image
    "check_prior_paths": "salma.bench.image",
    "conclusions": "salma.bench.image",
    "measure_latency": "salma.bench.image",
    "results_json": "salma.bench.image",
    "summarize": "salma.bench.image",
    # salma.bench.tables
    "compute_table": "salma.bench.tables",
    "display_table": "salma.bench.tables",
    "latency_table": "salma.bench.tables",
    "overhead_table": "salma.bench.tables",
    "plot_efficiency": "salma.bench.tables",
    # salma.bench.video
    "long_clip_memory": "salma.bench.video",
    "run_video_benchmark": "salma.bench.video",
    "video_conclusions": "salma.bench.video",
    # salma.data.refer
    "ReferDataset": "salma.data.refer",
    # salma.data.synref
    "generate_synref": "salma.data.synref",
    # salma.data.synref_video
    "generate_synref_video": "salma.data.synref_video",
    # salma.data.video_format
    "VideoReferDataset": "salma.data.video_format",
    # salma.eval.image
    "evaluate_model": "salma.eval.image",
    # salma.eval.metrics
    "RefMetrics": "salma.eval.metrics",
    "ciou": "salma.eval.metrics",
    "giou": "salma.eval.metrics",
    "j_and_f": "salma.eval.metrics",
    # salma.eval.video
    "evaluate_video": "salma.eval.video",
    # salma.report.cases
    "CASE_CATEGORIES": "salma.report.cases",
    "CaseRule": "salma.report.cases",
    "case_counts": "salma.report.cases",
    "case_panel": "salma.report.cases",
    "case_panels": "salma.report.cases",
    "chosen_cases": "salma.report.cases",
    "classify_cases": "salma.report.cases",
    "select_cases": "salma.report.cases",
    "shown_cases": "salma.report.cases",
    # salma.report.env
    "environment_report": "salma.report.env",
    "plot_smoke": "salma.report.env",
    "report_table": "salma.report.env",
    # salma.report.measures
    "MBA_MODES": "salma.report.measures",
    "PRIOR_KEYS": "salma.report.measures",
    "attention_rows": "salma.report.measures",
    "attention_rows_by_seed": "salma.report.measures",
    "attention_sums_to_one": "salma.report.measures",
    "distractor_mask": "salma.report.measures",
    "distractor_samples": "salma.report.measures",
    "mass_share": "salma.report.measures",
    "mba_mode_maps": "salma.report.measures",
    "mba_step_numbers": "salma.report.measures",
    "prediction_panel": "salma.report.measures",
    "prior_example_panel": "salma.report.measures",
    "prior_overlap_by_model": "salma.report.measures",
    "prior_overlap_rows": "salma.report.measures",
    "prior_summaries": "salma.report.measures",
    "spotlight_panel": "salma.report.measures",
    "summarise": "salma.report.measures",
    "trained_gammas": "salma.report.measures",
    "union_mask": "salma.report.measures",
    "video_example": "salma.report.measures",
    "video_floor_rows": "salma.report.measures",
    # salma.report.plots
    "NO_CASES": "salma.report.plots",
    "PRIOR_BARS": "salma.report.plots",
    "attention_bar_groups": "salma.report.plots",
    "floor_points": "salma.report.plots",
    "kind_bar_groups": "salma.report.plots",
    "plot_area_bins": "salma.report.plots",
    "plot_attention_heads": "salma.report.plots",
    "plot_cases": "salma.report.plots",
    "plot_edges": "salma.report.plots",
    "plot_grouped_bars": "salma.report.plots",
    "plot_lines": "salma.report.plots",
    "plot_map_grid": "salma.report.plots",
    "plot_mba_panel": "salma.report.plots",
    "plot_predictions": "salma.report.plots",
    "plot_prior_examples": "salma.report.plots",
    "plot_router": "salma.report.plots",
    "plot_seed_points": "salma.report.plots",
    "plot_training_log": "salma.report.plots",
    "plot_video_strip": "salma.report.plots",
    "prior_bar_groups": "salma.report.plots",
    "seed_points": "salma.report.plots",
    "show_mask_overlay": "salma.report.plots",
    "video_heat_rows": "salma.report.plots",
    "video_seed_points": "salma.report.plots",
    # salma.report.results_json
    "ablation_results": "salma.report.results_json",
    "attention_spotlight_results": "salma.report.results_json",
    "losses_results": "salma.report.results_json",
    "mba_gating_results": "salma.report.results_json",
    "prepass_prior_results": "salma.report.results_json",
    "qualitative_results": "salma.report.results_json",
    "saliency_bias_results": "salma.report.results_json",
    "training_run_results": "salma.report.results_json",
    "video_results": "salma.report.results_json",
    # salma.report.stats
    "ABLATION_STEPS": "salma.report.stats",
    "BIN_NAMES": "salma.report.stats",
    "TABLE2_VARIANTS": "salma.report.stats",
    "TABLE3_VARIANTS": "salma.report.stats",
    "ablation_comparisons": "salma.report.stats",
    "ablation_variants": "salma.report.stats",
    "area_bin_comparisons": "salma.report.stats",
    "area_bin_verdicts": "salma.report.stats",
    "compare": "salma.report.stats",
    "extra_variants": "salma.report.stats",
    "finetune_verdict": "salma.report.stats",
    "floor_verdict": "salma.report.stats",
    "per_seed_share": "salma.report.stats",
    "present_variants": "salma.report.stats",
    "prior_verdict": "salma.report.stats",
    "seed_values": "salma.report.stats",
    "sign_test_verdict": "salma.report.stats",
    "spotlight_comparisons": "salma.report.stats",
    "table2_variants": "salma.report.stats",
    "video_comparisons": "salma.report.stats",
    "video_floor_verdicts": "salma.report.stats",
    "video_verdicts": "salma.report.stats",
    # salma.report.store
    "load_json": "salma.report.store",
    "save_figure": "salma.report.store",
    "save_json": "salma.report.store",
    "save_table": "salma.report.store",
    # salma.report.tables
    "KIND_NAMES": "salma.report.tables",
    "TABLE4_SHOWN": "salma.report.tables",
    "VIDEO_KIND_NAMES": "salma.report.tables",
    "ablation_table": "salma.report.tables",
    "area_bin_table": "salma.report.tables",
    "attention_table": "salma.report.tables",
    "case_count_table": "salma.report.tables",
    "case_table": "salma.report.tables",
    "drop_mean_columns": "salma.report.tables",
    "example_score_table": "salma.report.tables",
    "foundation_metrics": "salma.report.tables",
    "kind_pivot": "salma.report.tables",
    "kind_table": "salma.report.tables",
    "log_summary": "salma.report.tables",
    "mode_table": "salma.report.tables",
    "per_seed_table": "salma.report.tables",
    "prior_overlap_table": "salma.report.tables",
    "run_rows": "salma.report.tables",
    "share_table": "salma.report.tables",
    "sweep_table": "salma.report.tables",
    "val_table": "salma.report.tables",
    "video_jf_table": "salma.report.tables",
    "video_kind_counts": "salma.report.tables",
    "video_per_seed_table": "salma.report.tables",
    "video_run_rows": "salma.report.tables",
    # salma.train.datasets
    "synref_root": "salma.train.datasets",
    "synref_video_root": "salma.train.datasets",
    # salma.train.experiments
    "finetune": "salma.train.experiments",
    "study_grid": "salma.train.experiments",
    "STUDY": "salma.train.study",
    "study_config": "salma.train.study",
    "study_table": "salma.report.study",
    "study_configurations": "salma.report.study",
    "study_summary": "salma.report.study",
    "study_logs": "salma.report.study",
    "study_verdicts": "salma.report.study",
    "study_results": "salma.report.study",
    "plot_mba_dynamics": "salma.report.study",
    "write_ratio": "salma.mba",
    "gates_zeroed": "salma.mba",
    "finetune_video": "salma.train.experiments",
    "run_grid": "salma.train.experiments",
    "variant_config": "salma.train.experiments",
    "video_config": "salma.train.experiments",
    "video_run_grid": "salma.train.experiments",
    # salma.train.foundation
    "ensure_foundation": "salma.train.foundation",
    "pretrain": "salma.train.foundation",
    # salma.train.identity
    "RunResult": "salma.train.identity",
    "RunSpec": "salma.train.identity",
    # salma.train.loop
    # salma.train.recipes
    "VARIANTS": "salma.train.recipes",
    "video_recipe": "salma.train.recipes",
    "finetune_recipe": "salma.train.recipes",
    "pretrain_recipe": "salma.train.recipes",
    # salma.train.tokenizer
    "synthetic_tokenizer": "salma.train.tokenizer",
}
# sub-modules the notebooks use as namespaces
_MODULES: dict[str, str] = {
    "paper": "salma.report.paper",
    "probe": "salma.eval.probe",
    "toys": "salma.report.toys",
}

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'salma' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
