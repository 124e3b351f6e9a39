"""InternVL via transformers, [SEG], LoRA via peft, tiling (docs/method.md section 2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from salma.config import get_preset
from salma.mllm import (
    ANSWER,
    PromptBuilder,
    apply_lora,
    build_internvl,
    build_synthetic_tokenizer,
    dynamic_tiles,
    pad_prompts,
)

WORDS = ["red", "green", "blue", "circle", "square", "small", "large", "left", "of"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_synthetic_tokenizer(WORDS)


def test_prompt_positions(tokenizer):
    builder = PromptBuilder(tokenizer, image_tokens_per_tile=4)
    p = builder.build("the small red circle", n_tiles=2)
    ids = p.input_ids
    assert ids[p.seg_position] == tokenizer.convert_tokens_to_ids("[SEG]")
    assert tokenizer.convert_ids_to_tokens([ids[i] for i in p.expression_positions]) == ["the", "small", "red",
                                                                                        "circle"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 8
    # labels cover exactly the answer (+ eos): the LM learns to say "sure , [SEG] ."
    answer = [i for i, lab in zip(ids, p.labels) if lab != -100]
    assert tokenizer.decode(answer[:-1]) .replace(" ", "") == ANSWER.replace(" ", "")
    batch = pad_prompts([p, builder.build("blue square")], tokenizer.pad_token_id)
    assert batch["expression_valid"].sum(1).tolist() == [4, 2]
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()


def test_unknown_words_map_to_unk(tokenizer):
    ids = tokenizer("the purple zebra", add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.unk_token_id) == 2


def test_lora_path_on_tiny_model_trains_only_adapters(tokenizer):
    cfg = dataclasses.replace(get_preset("tiny").mllm, lora=True, lora_r=4, lora_alpha=8)
    torch.manual_seed(0)
    model, tok = build_internvl(cfg, tokenizer)
    apply_lora(model, cfg)
    names = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert any("q_proj" in n for n in names) and any("down_proj" in n for n in names)
    frozen = [n for n, p in model.model.language_model.named_parameters() if not p.requires_grad]
    assert any(n.endswith("q_proj.base_layer.weight") for n in frozen)
    builder = PromptBuilder(tok, cfg.image_tokens)
    batch = pad_prompts([builder.build("red circle")], tok.pad_token_id)
    pixels = torch.randn(1, 3, cfg.vision_image_size, cfg.vision_image_size)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # lora_B starts at zero, so lora_A moves only from the second step on
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels,
                    labels=batch["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)
    assert not any(n.endswith("base_layer.weight") for n in changed), "LoRA must leave base weights frozen"


def test_local_internvl_folder_loads(tokenizer, tmp_path):
    cfg = get_preset("tiny").mllm
    torch.manual_seed(0)
    model, tok = build_internvl(cfg, tokenizer)
    model.save_pretrained(tmp_path / "internvl")
    tok.save_pretrained(tmp_path / "internvl")
    local = dataclasses.replace(cfg, local_path=str(tmp_path / "internvl"))
    loaded, tok2 = build_internvl(local)
    assert len(tok2) == len(tok)
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_internvl(dataclasses.replace(cfg, local_path=str(tmp_path / "missing")))


def test_dynamic_tiles_paper_resolution():
    image = np.zeros((1024, 1024, 3), np.uint8)
    tiles = dynamic_tiles(image, 448, 6)
    assert len(tiles) == 5 and all(t.shape == (448, 448, 3) for t in tiles)  # 2x2 + thumbnail
    wide = dynamic_tiles(np.zeros((448, 1344, 3), np.uint8), 448, 6)
    assert len(wide) == 4  # 3x1 + thumbnail
    assert len(dynamic_tiles(np.zeros((300, 300, 3), np.uint8), 448, 6)) == 1
