"""Environment report for notebook 00: library versions, the device, and a smoke build of the two real
model classes the kit stands on (SAM-2 and InternVL, docs/method.md section 2) at a preset's sizes.

Both models are built from configs with random weights (never fetched from a hub); the report records
their parameter counts and one forward's wall time so that a reader can see the installation works.
"""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from sam2.build_sam import build_sam2
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

from salma.config import MLLMConfig, SAM2Config, get_preset
from salma.device import resolve_device

# vocab_size 0 in the tiny/small presets means "the synthetic tokenizer's size"; the smoke build only
# needs a vocabulary that holds the image token, so any small size works.
SMOKE_VOCAB_SIZE = 64
PACKAGES = ("torch", "torchvision", "transformers", "sam2", "peft", "accelerate", "numpy", "pandas",
            "matplotlib", "papermill")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None for a package that is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_sam2_smoke(cfg: SAM2Config, device: torch.device) -> dict[str, Any]:
    """Build SAM-2 from ``cfg`` (random weights) and time one ``forward_image`` on a random
    (1, 3, image_size, image_size) image. Returns params, build/forward seconds and the feature shapes."""

    t0 = time.perf_counter()
    model = build_sam2(cfg.config_file, cfg.checkpoint, device=str(device), mode="eval",
                       hydra_overrides_extra=list(cfg.overrides), apply_postprocessing=False)
    build_s = time.perf_counter() - t0
    image = torch.randn(1, 3, cfg.image_size, cfg.image_size, device=device)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.forward_image(image)
        forward_s = time.perf_counter() - t0
    return {"params": _count(model), "build_s": build_s, "forward_s": forward_s,
            "features": [list(f.shape) for f in out["backbone_fpn"]]}


def internvl_config(cfg: MLLMConfig, vocab_size: int | None = None):
    """A transformers ``InternVLConfig`` (InternViT + MLP projector + Qwen2) at ``cfg``'s sizes.

    The image token is the last id of the vocabulary; ``vocab_size=None`` uses ``cfg.vocab_size`` or,
    when that is 0 (tiny/small presets), ``SMOKE_VOCAB_SIZE``.
    """

    vocab = vocab_size or cfg.vocab_size or SMOKE_VOCAB_SIZE
    vision = InternVLVisionConfig(
        hidden_size=cfg.vision_hidden, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads, intermediate_size=cfg.vision_intermediate,
        image_size=(cfg.vision_image_size, cfg.vision_image_size),
        patch_size=(cfg.vision_patch, cfg.vision_patch))
    text = Qwen2Config(
        hidden_size=cfg.text_hidden, num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
        intermediate_size=cfg.text_intermediate, vocab_size=vocab)
    return InternVLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                          image_token_id=vocab - 1, image_seq_length=cfg.image_tokens,
                          downsample_ratio=cfg.downsample_ratio)


def build_internvl_smoke(cfg: MLLMConfig, device: torch.device) -> dict[str, Any]:
    """Build ``InternVLForConditionalGeneration`` from ``cfg`` (random weights) and time one forward on
    one image (1, 3, S, S) and a prompt of ``image_tokens`` image tokens plus 4 text tokens.
    Returns params, build/forward seconds and the logits shape (1, L, vocab)."""

    config = internvl_config(cfg)
    t0 = time.perf_counter()
    model = InternVLForConditionalGeneration(config).to(device).eval()
    build_s = time.perf_counter() - t0
    vocab = config.text_config.vocab_size
    text = torch.arange(1, 5, device=device)
    image_ids = torch.full((cfg.image_tokens,), config.image_token_id, device=device)
    input_ids = torch.cat([text[:1], image_ids, text[1:]])[None]
    pixels = torch.randn(1, 3, cfg.vision_image_size, cfg.vision_image_size, device=device)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, pixel_values=pixels)
        forward_s = time.perf_counter() - t0
    return {"params": _count(model), "build_s": build_s, "forward_s": forward_s,
            "vocab_size": vocab, "logits": list(out.logits.shape)}


def _try(fn, *args) -> tuple[bool, dict[str, Any], str | None]:
    # A failed build is a result to report (the notebook and tests assert on it), not a crash.
    try:
        return True, fn(*args), None
    except Exception as exc:  # noqa: BLE001
        return False, {}, f"{type(exc).__name__}: {exc}"


def environment_report(preset: str, device: str = "auto") -> dict[str, Any]:
    """Versions, device, and whether SAM-2 and InternVL build and run one forward at ``preset``'s sizes.

    Raises ValueError naming PRESET and the accepted values for an unknown preset name.
    """
    cfg = get_preset(preset)
    dev = resolve_device(device)
    sam2_ok, sam2_info, sam2_err = _try(build_sam2_smoke, cfg.sam2, dev)
    vl_ok, vl_info, vl_err = _try(build_internvl_smoke, cfg.mllm, dev)
    return {
        "preset": cfg.name,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "python_prefix": sys.prefix,
        "platform": platform.platform(),
        "versions": package_versions(),
        "device": str(dev),
        "gpu_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "sam2_builds": sam2_ok, "sam2": sam2_info, "sam2_error": sam2_err,
        "internvl_builds": vl_ok, "internvl": vl_info, "internvl_error": vl_err,
    }


def plot_smoke(report: dict[str, Any]):
    """A two-panel bar chart of the smoke builds: parameters (millions) and one forward (ms) for SAM-2
    and InternVL. Returns the matplotlib Figure (not closed, so it shows inline)."""

    names = [n for n in ("sam2", "internvl") if report.get(f"{n}_builds")]
    labels = {"sam2": "SAM-2", "internvl": "InternVL"}
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    panels = ((lambda n: report[n]["params"] / 1e6, "parameters (M)"),
              (lambda n: report[n]["forward_s"] * 1e3, "one forward (ms)"))
    for ax, (value, title) in zip(axes, panels):
        ax.bar([labels[n] for n in names], [value(n) for n in names], color="tab:blue")
        ax.set_title(title)
    fig.suptitle(f"Smoke builds at preset {report['preset']!r} on {report['device']} (random weights)")
    fig.tight_layout()
    return fig


def report_table(report: dict[str, Any]):
    """The report flattened to a two-column pandas DataFrame (item, value) for display."""

    rows: list[tuple[str, Any]] = []
    for key, value in report.items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            rows.append((key, value))
    return pd.DataFrame([(k, str(v)) for k, v in rows], columns=["item", "value"])
