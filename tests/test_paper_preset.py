"""The paper preset builds on a CPU with random weights: the real InternVL2.5-1B / SAM-2.1 Hiera-L shapes."""

from __future__ import annotations

import pytest

from salma.config import get_preset
from salma.mllm import build_synthetic_tokenizer


@pytest.mark.slow
def test_paper_preset_builds_with_paper_dimensions():
    from salma.model import SalmaModel

    model = SalmaModel(get_preset("paper"), tokenizer=build_synthetic_tokenizer(["red", "circle"]))

    def millions(module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert millions(model.mllm.model.vision_tower) == pytest.approx(304.0, rel=0.01)  # paper Table 5
    assert millions(model.sam.model.image_encoder) == pytest.approx(212.7, rel=0.01)  # paper Table 5
    assert millions(model.mllm.model.multi_modal_projector) == pytest.approx(4.5, rel=0.01)
    assert model.mllm.config.text_config.hidden_size == 896 and model.sam.image_size == 1024
    # Paper recipe: frozen InternViT and SAM-2 encoder, LoRA r=128 on the LLM, trainable decoder and MBA.
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert {"sam", "text_hidden_fcs", "mba", "mllm"} <= trainable
    assert not any(p.requires_grad for p in model.mllm.model.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.sam.model.image_encoder.parameters())
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) / 1e6
    assert lora == pytest.approx(70.4, rel=0.02)  # docs/method.md section 7: LoRA 70.4 M at r=128
