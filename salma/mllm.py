"""The MLLM half of Sa2VA: InternVL via transformers, the ``[SEG]`` token, LoRA via peft (docs/method.md section 2).

- ``build_internvl``: ``transformers.InternVLForConditionalGeneration`` built from a config (random
  weights: tiny/small presets, and the paper preset's dimensions) or loaded from a *local* folder.
- ``build_synthetic_tokenizer``: a word-level ``tokenizers`` tokenizer over the SynRef vocabulary with the
  InternVL image tokens and ``[SEG]``, wrapped as a ``PreTrainedTokenizerFast``.
- ``PromptBuilder``: question + answer -> input ids, LM labels on the answer, the position whose *input*
  token is ``[SEG]`` (Sa2VA reads the last-layer hidden state there) and the positions of the expression's
  tokens (SALMA's MBA reads those as text keys/values, docs/method.md section 3.2).
- ``apply_lora``: peft LoRA (paper: r=128, alpha=256, dropout 0.05) on the LLM, base weights frozen.
- ``text_hidden_fcs``: Linear(h, h) -> ReLU -> Linear(h, prompt_dim) -> Dropout(0), as Sa2VA.
- ``dynamic_tiles``: InternVL's dynamic 448 tiling (+ thumbnail) for the paper preset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from peft import LoraConfig, inject_adapter_in_model
from PIL import Image
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from torch import nn
from transformers import (
    AutoTokenizer,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from salma.config import MLLMConfig

SEG_TOKEN = "[SEG]"
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", IMG_START, IMG_END, IMG_CONTEXT, SEG_TOKEN]
QUESTION_TEMPLATE = "please segment the {expression} in this image ."
ANSWER = "sure , [SEG] ."
# Words of the prompt template, added to the synthetic vocabulary.
TEMPLATE_WORDS = ["please", "segment", "the", "in", "this", "image", "sure", ",", ".", "?"]
# InternViT's input normalisation (ImageNet statistics, as InternVL's preprocessing).
INTERNVL_MEAN = (0.485, 0.456, 0.406)
INTERNVL_STD = (0.229, 0.224, 0.225)


def build_synthetic_tokenizer(words: list[str]):
    """A word-level fast tokenizer: special tokens first, then the template words, then ``words``.

    Lower-cases, splits on whitespace and punctuation; unknown words map to ``<unk>``.
    """

    vocab: dict[str, int] = {}
    for w in SPECIAL_TOKENS + TEMPLATE_WORDS + sorted(set(words)):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=[IMG_START, IMG_END, IMG_CONTEXT, SEG_TOKEN],
    )
    return fast


def ensure_special_tokens(tokenizer) -> None:
    """Add the image tokens and ``[SEG]`` to a real tokenizer that lacks them (Sa2VA adds ``[SEG]``)."""
    missing = [t for t in (IMG_START, IMG_END, IMG_CONTEXT, SEG_TOKEN) if tokenizer.convert_tokens_to_ids(t)
               in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_additional_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def internvl_config(cfg: MLLMConfig, vocab_size: int, image_token_id: int):
    """A transformers ``InternVLConfig`` with the dimensions of ``cfg`` (Qwen2 LLM, InternViT tower)."""

    vision = InternVLVisionConfig(
        hidden_size=cfg.vision_hidden, num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        intermediate_size=cfg.vision_intermediate, image_size=cfg.vision_image_size, patch_size=cfg.vision_patch,
    )
    text = Qwen2Config(
        vocab_size=vocab_size, hidden_size=cfg.text_hidden, num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
        intermediate_size=cfg.text_intermediate, max_position_embeddings=4096, tie_word_embeddings=True,
    )
    return InternVLConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=image_token_id,
        image_seq_length=cfg.image_tokens, downsample_ratio=cfg.downsample_ratio,
    )


def build_internvl(cfg: MLLMConfig, tokenizer=None):
    """Return ``(model, tokenizer)``: InternVL from a local folder (``cfg.local_path``) or from a config.

    Config-built models need a tokenizer (the synthetic one for the embedded presets). The embedding table
    is resized when ``[SEG]`` or the image tokens are new to the tokenizer.
    """

    if cfg.local_path is not None:
        if not os.path.isdir(cfg.local_path):
            raise FileNotFoundError(
                f"MLLMConfig.local_path={cfg.local_path!r} is not a directory. Point it at a local transformers "
                "InternVL folder (config.json + *.safetensors + tokenizer files); nothing is downloaded."
            )
        model = InternVLForConditionalGeneration.from_pretrained(cfg.local_path, local_files_only=True)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(cfg.local_path, local_files_only=True)
        ensure_special_tokens(tokenizer)
        model.config.image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        return model, tokenizer
    if tokenizer is None:
        raise ValueError("a config-built InternVL needs a tokenizer (build_synthetic_tokenizer(vocabulary()))")
    ensure_special_tokens(tokenizer)
    vocab = cfg.vocab_size if cfg.vocab_size > 0 else len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"MLLMConfig.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    model = InternVLForConditionalGeneration(internvl_config(cfg, vocab, tokenizer.convert_tokens_to_ids(IMG_CONTEXT)))
    return model, tokenizer


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model, cfg: MLLMConfig) -> None:
    """Inject peft LoRA adapters into the LLM in place; freeze its base weights, keep the token
    embeddings and LM head trainable (``[SEG]`` is a new token), freeze the vision tower if asked."""

    llm = model.model.language_model
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(LORA_TARGETS), bias="none")
    inject_adapter_in_model(lora, llm)
    for name, p in llm.named_parameters():
        p.requires_grad = "lora_" in name
    model.get_input_embeddings().weight.requires_grad = True
    model.get_output_embeddings().weight.requires_grad = True


def freeze_vision(model) -> None:
    """Freeze InternViT (the paper trains the projector, not the vision encoder)."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad = False


def text_hidden_fcs(hidden: int, out_dim: int) -> nn.Sequential:
    """Sa2VA's projection of LLM hidden states to SAM-2's prompt dimension."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim), nn.Dropout(0.0))


def dynamic_tiles(image: np.ndarray, tile: int, max_tiles: int, thumbnail: bool = True) -> list[np.ndarray]:
    """InternVL's dynamic tiling: split an (H, W, 3) image into a grid of ``tile`` x ``tile`` crops whose
    aspect ratio is closest to the image's (at most ``max_tiles``), plus a thumbnail when the grid has more
    than one tile. A 1024x1024 image with max_tiles=6 gives 2x2 + thumbnail = 5 tiles (docs/method.md section 7)."""

    h, w = image.shape[:2]
    aspect = w / h
    grids = sorted({(i, j) for n in range(1, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                    if i * j <= max_tiles}, key=lambda g: (g[0] * g[1], g))
    best, best_diff = (1, 1), float("inf")
    for gw, gh in grids:
        diff = abs(aspect - gw / gh)
        # InternVL prefers more tiles on ties when the image is large enough to fill them.
        if diff < best_diff or (diff == best_diff and h * w > 0.5 * tile * tile * gw * gh):
            best, best_diff = (gw, gh), diff
    gw, gh = best
    resized = np.asarray(Image.fromarray(image).resize((tile * gw, tile * gh), Image.BICUBIC))
    tiles = [resized[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(gh) for c in range(gw)]
    if thumbnail and len(tiles) > 1:
        tiles.append(np.asarray(Image.fromarray(image).resize((tile, tile), Image.BICUBIC)))
    return tiles


def preprocess_tiles(tiles: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 tiles [(h, w, 3)] -> (T, 3, size, size) float32 normalised for InternViT."""
    x = torch.as_tensor(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                                            antialias=True).clamp(0, 1)
    mean = torch.tensor(INTERNVL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(INTERNVL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class EncodedPrompt:
    """One sample's token ids. labels: -100 outside the answer; seg_position: index of the input ``[SEG]``;
    expression_positions: indices of the expression's tokens (MBA's text keys/values)."""

    input_ids: list[int]
    labels: list[int]
    seg_position: int
    expression_positions: list[int]


class PromptBuilder:
    """Question/answer -> ids, with the image placeholder ``<img><IMG_CONTEXT> x n</img>`` first."""

    def __init__(self, tokenizer, image_tokens_per_tile: int):
        self.tok = tokenizer
        self.image_tokens = image_tokens_per_tile
        self.seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self.ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IMG_START, IMG_END, IMG_CONTEXT)}

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def build(self, expression: str, n_tiles: int = 1, answer: str = ANSWER) -> EncodedPrompt:
        """Raises ValueError for an empty expression or an answer without ``[SEG]``."""
        if not isinstance(expression, str) or not expression.strip():
            raise ValueError(f"the referring expression is empty ({expression!r}): give a non-empty sentence")
        prefix, suffix = QUESTION_TEMPLATE.split("{expression}")
        image = [self.ids[IMG_START]] + [self.ids[IMG_CONTEXT]] * (self.image_tokens * n_tiles) + [self.ids[IMG_END]]
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        head = bos + image + self._encode(prefix)
        expr = self._encode(expression.strip())
        question = head + expr + self._encode(suffix)
        ans = self._encode(answer)
        if self.seg_id not in ans:
            raise ValueError(f"the answer {answer!r} has no {SEG_TOKEN} token: Sa2VA reads the mask from the "
                             f"hidden state at {SEG_TOKEN}; use an answer such as {ANSWER!r}")
        if self.tok.eos_token_id is not None:
            ans = ans + [self.tok.eos_token_id]
        ids = question + ans
        labels = [-100] * len(question) + ans
        seg_position = len(question) + ans.index(self.seg_id)
        return EncodedPrompt(ids, labels, seg_position, list(range(len(head), len(head) + len(expr))))


def pad_prompts(prompts: list[EncodedPrompt], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Returns input_ids, attention_mask, labels (B, L), seg_positions (B,),
    expression_mask (B, L) bool and expression_index (B, N_max) with expression_valid (B, N_max)."""
    length = max(len(p.input_ids) for p in prompts)
    n_expr = max(len(p.expression_positions) for p in prompts)
    b = len(prompts)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), -100, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    expr_index = torch.zeros((b, n_expr), dtype=torch.long)
    expr_valid = torch.zeros((b, n_expr), dtype=torch.bool)
    for i, p in enumerate(prompts):
        n = len(p.input_ids)
        input_ids[i, :n] = torch.tensor(p.input_ids)
        labels[i, :n] = torch.tensor(p.labels)
        attention[i, :n] = 1
        k = len(p.expression_positions)
        expr_index[i, :k] = torch.tensor(p.expression_positions)
        expr_valid[i, :k] = True
    return {
        "input_ids": input_ids, "attention_mask": attention, "labels": labels,
        "seg_positions": torch.tensor([p.seg_position for p in prompts], dtype=torch.long),
        "expression_index": expr_index, "expression_valid": expr_valid,
    }


def tiles_for_image(image: np.ndarray, cfg: MLLMConfig) -> list[np.ndarray]:
    """The tiles the MLLM sees for one image: dynamic tiling when ``cfg.max_tiles > 1``, else one resize."""
    if cfg.max_tiles > 1:
        return dynamic_tiles(image, cfg.vision_image_size, cfg.max_tiles)
    return [image]
