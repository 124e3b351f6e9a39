"""SalmaModel: Sa2VA (InternVL + SAM-2) with SALMA's pre-pass prior, Mask-Biased Attention and losses.

Data flow (docs/design.md section "Data flow (one image, one expression)", paper Fig. 2 and Alg. 1), one image and one expression:
    image -> SAM-2 image encoder -> F_v (+ high-res features)
    image + expression -> InternVL -> last-layer hidden states
        -> hidden at the input ``[SEG]`` -> text_hidden_fcs -> language embedding e  (B, C)
        -> hiddens of the expression tokens -> text_hidden_fcs -> text tokens F_t     (B, N, C)
    F_v -> pre-pass (dummy prompt, no language, detached) -> prior logits M            (paper Sec. 3.2)
    F_v, F_t, M -> MBA -> F_v'                                                          (paper Eq. 1-2)
    F_v' + e -> SAM-2 mask decoder -> mask logits -> losses (train) / mask (predict)   (paper Sec. 3.3-3.4)

``forward`` (training) and ``predict`` (inference) share ``segment``: both run the pre-pass and MBA, which
the released SALMA code's inference path does not (docs/method.md section 3.5, item 1). With ``cfg.mba.enabled=False`` the
model is the Sa2VA baseline (no pre-pass, no MBA).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

from salma.batch import Batch, BatchCollator
from salma.checkpoint import load_state_dict, save_state_dict, verify_checksums, write_checksums
from salma.config import SalmaConfig, validate
from salma.io import atomic_write_text
from salma.losses import boundary_loss, segmentation_loss, tmc_loss, total_loss
from salma.mba import MaskBiasedAttention, MBAOutput
from salma.mllm import (
    ANSWER,
    SEG_TOKEN,
    PromptBuilder,
    apply_lora,
    build_internvl,
    freeze_vision,
    text_hidden_fcs,
)
from salma.sam2_ext import LanguageSAM2, SAM2Features, build_sam2_model, structural_prior
from salma.video import predict_video

WEIGHTS_FILE = "model.safetensors"


CONFIG_FILE = "salma_config.json"


TOKENIZER_DIR = "tokenizer"


@dataclass
class SegmentOutput:
    """mask_logits: (B, 1, 4h, 4w) low-res logits of the language-conditioned pass; prior: (B, 1, 4h, 4w)
    or None (baseline); mba: MBA's intermediate tensors or None; language: (B, C) the ``[SEG]`` embedding."""

    mask_logits: torch.Tensor
    prior: torch.Tensor | None
    mba: MBAOutput | None
    language: torch.Tensor


@dataclass
class ModelOutput:
    """loss: scalar total; parts: each component; segment: see above; features: the per-expression
    pre-MBA SAM-2 features (reused by stage-specific objectives without a second encoder pass)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    segment: SegmentOutput
    features: SAM2Features | None = None


@dataclass
class Prediction:
    """mask: bool (H, W) at the image's original size; logits: (H, W) float; text: the answer;
    prior: (h, w) pre-pass logits or None; attention: (heads, h*w, K) MBA weights when asked for."""

    mask: np.ndarray
    logits: np.ndarray
    text: str
    prior: np.ndarray | None = None
    gate: np.ndarray | None = None
    attention: np.ndarray | None = None


class SalmaModel(nn.Module):
    """Sa2VA + SALMA on the real ``sam2`` SAM-2 and transformers InternVL (see module docstring)."""

    def __init__(self, cfg: SalmaConfig, tokenizer=None):
        super().__init__()
        self.cfg = validate(cfg)
        if tokenizer is None and cfg.mllm.local_path is None:
            # The model knows no dataset: a config without local InternVL weights needs the caller's tokenizer.
            raise ValueError("SalmaModel(cfg) without cfg.mllm.local_path needs a tokenizer: pass "
                             "tokenizer=salma.synthetic_tokenizer() (SynRef's words) or one of your own")
        self.mllm, self.tokenizer = build_internvl(cfg.mllm, tokenizer)
        if cfg.mllm.lora:
            apply_lora(self.mllm, cfg.mllm)
        if cfg.mllm.freeze_vision:
            freeze_vision(self.mllm)
        self.sam = LanguageSAM2(build_sam2_model(cfg.sam2))
        if cfg.sam2.freeze_encoder:
            self.sam.freeze_image_encoder()
        hidden = self.mllm.config.text_config.hidden_size
        self.text_hidden_fcs = text_hidden_fcs(hidden, cfg.sam2.prompt_dim)
        self.mba = MaskBiasedAttention(cfg.mba, cfg.sam2.prompt_dim) if cfg.mba.enabled else None
        self.prompts = PromptBuilder(self.tokenizer, cfg.mllm.image_tokens)
        self.train(False)

    # ------------------------------------------------------------------ batching
    def make_batch(self, images: list[np.ndarray], expressions: list[str], masks: list[np.ndarray] | None = None,
                   image_index: list[int] | None = None, answer: str = ANSWER) -> Batch:
        """Collate images, expressions and optional GT masks into a ``Batch`` (see ``BatchCollator``)."""
        return self.collator(images, expressions, masks, image_index, answer)

    @property
    def collator(self) -> BatchCollator:
        return BatchCollator(self.cfg, self.tokenizer, self.prompts)

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def language(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run InternVL. Returns (e (B, C), F_t (B, N, C), text_mask (B, N), lm_loss or None).

        e is read where the *input* token is ``[SEG]`` (Sa2VA); F_t from the expression's tokens, or e alone
        when ``cfg.mba.text_source == "seg_only"`` (the released code's N = 1 input, docs/method.md section 3.5, item 2).
        """
        seg_id = self.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)
        if not bool((batch.input_ids[rows, batch.seg_positions] == seg_id).all()):
            raise ValueError(f"seg_positions do not point at {SEG_TOKEN} tokens in input_ids")
        want_lm = self.cfg.loss.lm_weight > 0 and self.training
        out = self.mllm(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values.to(self.mllm.dtype),
            labels=batch.labels if want_lm else None, output_hidden_states=True,
        )
        hidden = out.hidden_states[-1]
        language = self.text_hidden_fcs(hidden[rows, batch.seg_positions])
        if self.cfg.mba.text_source == "seg_only":
            text, valid = language[:, None], torch.ones_like(batch.seg_positions, dtype=torch.bool)[:, None]
        else:
            gathered = hidden.gather(1, batch.expression_index[..., None].expand(-1, -1, hidden.shape[-1]))
            text, valid = self.text_hidden_fcs(gathered), batch.expression_valid
        return language, text, valid, (out.loss if want_lm else None)

    def prior(self, feats: SAM2Features) -> torch.Tensor:
        """The structural prior of paper Sec. 3.2: the shared decoder's dummy-prompt pre-pass on ``feats``,
        no language, detached, no-object override off (``structural_prior``). Training, prediction and the
        probes run the pre-pass through this method; the video predictor and the benchmarks call the same plain
        function, which they may ``torch.compile``.

        feats: SAM-2 features of B rows. Returns (B, 1, h, w) low-resolution prior logits.
        """
        return structural_prior(self.sam, feats.image_embed, feats.high_res, self.cfg.sam2.multimask_prior)

    def segment(self, feats: SAM2Features, language: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                gamma_scale: float = 1.0, prior: torch.Tensor | None = None,
                return_attention: bool = False) -> SegmentOutput:
        """The shared segmentation path of training and inference.

        feats: per-expression features (B rows); language: (B, C); text: (B, N, C); text_mask: (B, N).
        ``prior`` may be passed in when it was computed once per image and reused (evaluation).
        """
        image_embed, mba_out = feats.image_embed, None
        if self.mba is not None:
            if prior is None:
                prior = self.prior(feats)
            mba_out = self.mba(feats.image_embed, text, prior, text_mask=text_mask, warmup_scale=gamma_scale,
                               return_attention=return_attention)
            image_embed = mba_out.features
        # one mask, or the best predicted IoU of 3 (cfg.sam2.multimask_output: Sa2VA's final pass)
        dec = self.sam.decode(image_embed, feats.high_res, language=language[:, None],
                              multimask=self.cfg.sam2.multimask_output)
        return SegmentOutput(dec.best(), prior, mba_out, language)

    # ------------------------------------------------------------------ training
    def forward(self, batch: Batch, gamma_scale: float = 1.0, aux_scale: float = 1.0) -> ModelOutput:
        """Training forward: all losses of paper Sec. 3.3-3.4 for a batch with ``gt_masks``.

        gamma_scale / aux_scale: the linear warm-up factors of gamma and of the auxiliary losses.
        """
        if batch.gt_masks is None:
            raise ValueError("forward() needs gt_masks; use predict() for inference")
        feats = batch.features if batch.features is not None else self.sam.encode_image(batch.sam_images)
        feats = feats.select(batch.image_index)
        language, text, text_mask, lm_loss = self.language(batch)
        groups, video = None, batch.clip_index is not None
        if video:
            # Sa2VA's video training: one [SEG] embedding (and one set of text tokens) per clip, injected into
            # EVERY frame's decoder pass. Sa2VA trains the decoder per frame, without SAM-2's memory: each
            # frame goes through `segment` from its own features (prior per frame, detached; MBA per frame),
            # the path predict_video(mode="per_frame") runs.
            ci = batch.clip_index
            language, text, text_mask = language[ci], text[ci], text_mask[ci]
            groups = batch.target_group[ci] if batch.target_group is not None else ci
        seg = self.segment(feats, language, text, text_mask, gamma_scale=gamma_scale)
        size = batch.gt_masks.shape[-2:]
        logits = F.interpolate(seg.mask_logits, size=size, mode="bilinear", align_corners=False)
        lc = self.cfg.loss
        # Video frames where the target is absent: BCE only (it pushes them to empty); Dice over the frames
        # that show the target (see losses.dice_loss).
        parts = dict(segmentation_loss(logits, batch.gt_masks, lc.bce_weight, lc.dice_weight,
                                       skip_empty_dice=video))
        if lm_loss is not None:
            parts["lm"] = lm_loss
        if lc.tmc_weight > 0:
            # TMC pools the *pre-MBA* features over the GT mask (resized to the feature map inside tmc_loss).
            # Video: one row per (clip, frame with the target visible) (empty frames drop out in tmc_loss);
            # rows of the same target object are never each other's negatives.
            parts["tmc"] = tmc_loss(feats.image_embed, language, batch.gt_masks, lc.tmc_temperature, groups=groups)
        if lc.boundary_weight > 0:
            parts["boundary"] = boundary_loss(logits, batch.gt_masks)
        total = total_loss(parts, lc, aux_scale)
        parts["total"] = total
        return ModelOutput(total, parts, seg, feats)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, image: np.ndarray, expression: str, answer: str = ANSWER,
                return_attention: bool = False) -> Prediction:
        """image (H, W, 3) uint8 + expression -> ``Prediction`` (mask = sigmoid(logits) > 0.5 after bilinear
        upsampling to (H, W), as Sa2VA). The answer is teacher-forced (default "sure , [SEG] .")."""
        return self.predict_image(image, [expression], answer=answer, return_attention=return_attention)[0]

    @torch.no_grad()
    def predict_image(self, image: np.ndarray, expressions: list[str], answer: str = ANSWER,
                      return_attention: bool = False) -> list[Prediction]:
        """Several expressions on one image: one SAM-2 encoder pass and one pre-pass prior for all of them."""
        was_training = self.training
        self.eval()
        try:
            batch = self.make_batch([image], expressions, image_index=[0] * len(expressions), answer=answer)
            batch = batch.to(self.device)
            base = self.sam.encode_image(batch.sam_images)
            prior = None
            if self.mba is not None:
                prior = self.prior(base)
                prior = prior[batch.image_index]
            language, text, text_mask, _ = self.language(batch)
            seg = self.segment(base.select(batch.image_index), language, text, text_mask, prior=prior,
                               return_attention=return_attention)
        finally:
            self.train(was_training)
        h, w = image.shape[:2]
        logits = F.interpolate(seg.mask_logits, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        preds = []
        for b in range(len(expressions)):
            mba = seg.mba
            preds.append(Prediction(
                mask=(logits[b].sigmoid() > 0.5).cpu().numpy(), logits=logits[b].float().cpu().numpy(),
                text=answer,
                prior=None if seg.prior is None else seg.prior[b, 0].cpu().numpy(),
                gate=None if mba is None else mba.gate[b, 0].cpu().numpy(),
                attention=None if mba is None or mba.attention is None else mba.attention[b].float().cpu().numpy(),
            ))
        return preds

    @torch.no_grad()
    def predict_video(self, frames: np.ndarray, expressions: list[str], mode: str = "released",
                      mllm_frames: int = 5, frame_sampling: str = "first", offload: bool = False) -> list[np.ndarray]:
        """A clip (T, H, W, 3) uint8 and E expressions -> E bool masks (T, H, W) (``salma.video``).

        The MLLM reads ``mllm_frames`` frames (``frame_sampling`` "first", Sa2VA, or "uniform", Sa2VA-i) and
        gives one ``[SEG]`` embedding (+ MBA's text tokens) per expression for the whole clip. ``mode``:
        "released" (Sa2VA's released inference: the embedding prompts the frames the MLLM read, SAM-2's
        memory propagates through sam2's own loop; SALMA's prior + MBA run on every frame inside it) or
        "per_frame" (every frame through ``segment``, no memory: how the decoder is trained). ``offload``
        keeps frames and sam2's per-frame state on the CPU (long clips on a GPU). Masks: sigmoid > 0.5 after
        bilinear upsampling, as ``predict_image``.
        """

        return predict_video(self, frames, expressions, mode=mode, mllm_frames=mllm_frames,
                             frame_sampling=frame_sampling, offload=offload)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``salma_config.json``, ``model.safetensors`` (atomically), its sha256 (``checksums.json``) and
        the tokenizer to ``directory``."""

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        save_state_dict(self.state_dict(), directory / WEIGHTS_FILE, dtype=dtype,
                        metadata={"config_hash": self.cfg.hash(), "model_shape": json.dumps(self.cfg.model_dict())})
        write_checksums(directory, [WEIGHTS_FILE])
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.cfg.to_dict(), indent=2, sort_keys=True))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, cfg: SalmaConfig | None = None,
                        new_mba: bool = False) -> SalmaModel:
        """Load a directory written by ``save_pretrained`` (local only). ``cfg`` may change the non-shape
        parts (MBA mode, losses, recipe); a config whose weight shapes differ raises ValueError. The weights
        are checked against the sha256 the folder records (``salma.checkpoint.verify_checksums``) first.
        ``new_mba``: the checkpoint may lack the MBA weights ``cfg`` asks for (fine-tuning SALMA from a
        baseline foundation: they start from their initialisation); see ``load_matching``."""

        directory = Path(directory)
        saved = cls.saved_config(directory)
        cfg = cfg or saved
        if not cfg.weights_compatible(saved):
            raise ValueError(f"the checkpoint in {directory} was made with a different model config "
                             f"({saved.name}, {saved.hash()}) than the one requested ({cfg.name}, {cfg.hash()})")
        tok_dir = directory / TOKENIZER_DIR
        if not tok_dir.is_dir() and cfg.mllm.local_path is None:
            raise FileNotFoundError(f"{tok_dir} is missing: a SalmaModel folder holds its tokenizer (save_pretrained "
                                    "writes it); copy the whole folder, not only the weights")
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True) if tok_dir.is_dir() else None
        verify_checksums(directory, [WEIGHTS_FILE])
        model = cls(cfg, tokenizer=tokenizer)
        state = load_state_dict(directory / WEIGHTS_FILE)
        model.load_matching(state, source=directory / WEIGHTS_FILE, new_mba=new_mba)
        return model

    @staticmethod
    def saved_config(directory: str | os.PathLike) -> SalmaConfig:
        """The config a ``save_pretrained`` folder was written with; errors name the file."""
        cfg_path = Path(directory) / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} is missing: {directory} is not a SalmaModel checkpoint directory "
                                    "(written by SalmaModel.save_pretrained or `python -m salma train`)")
        try:
            return SalmaConfig.from_dict(json.loads(cfg_path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{cfg_path} is not a valid SALMA config ({type(exc).__name__}: {exc}); restore it or "
                             "re-create the checkpoint") from exc

    def add_lora(self, cfg: SalmaConfig) -> None:
        """Switch a loaded model to the paper's MLLM regime: peft LoRA on the LLM (its base weights frozen) and,
        if ``cfg.mllm.freeze_vision``, InternViT frozen; ``cfg`` becomes the model's config. How a foundation
        trained without LoRA is fine-tuned with it (the adapters start at zero: the model is unchanged)."""
        if not cfg.mllm.lora or self.cfg.mllm.lora:
            raise ValueError("add_lora needs a config with mllm.lora=True and a model built without LoRA")
        apply_lora(self.mllm, cfg.mllm)
        if cfg.mllm.freeze_vision:
            freeze_vision(self.mllm)
        self.cfg = validate(cfg)

    def load_matching(self, state: dict[str, torch.Tensor], source: str | os.PathLike = "state dict",
                      new_mba: bool = False) -> None:
        """Load weights. Every missing or unexpected key, or a shape mismatch, raises ValueError naming the
        keys, with two exceptions: the MBA weights of an MBA-enabled model may be absent when ``new_mba``
        (fine-tuning SALMA from a Sa2VA baseline foundation: the branch starts from its initialisation), and
        a checkpoint's MBA weights are dropped when this model has no MBA (the baseline read from a SALMA
        checkpoint). Without ``new_mba`` a SALMA model never silently becomes the baseline (the released
        code's failure: docs/method.md section 3.5)."""
        own = self.state_dict()
        bad_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if bad_shape:
            raise ValueError(f"{source}: shapes differ for {bad_shape[:5]} ... (a checkpoint from another config?)")
        result = self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own}, strict=False)
        missing_mba = [k for k in result.missing_keys if k.startswith("mba.")]
        if missing_mba and not new_mba:
            some = any(k.startswith("mba.") for k in state)
            what = (f"lacks MBA weights {missing_mba[:3]} (a checkpoint of another MBA variant?)" if some else
                    f"has no MBA weights ({missing_mba[:3]} ...): loaded as is this model would be the baseline "
                    "with an untrained branch")
            raise ValueError(f"{source} {what}, but this model's config asks for them. Load it with the config "
                             "it was saved with (for no MBA: cfg.mba.enabled=False), or with new_mba=True to start "
                             "the missing weights from their initialisation (fine-tuning from a foundation)")
        missing = [k for k in result.missing_keys if not k.startswith("mba.")]
        unexpected = [k for k in state if k not in own and not k.startswith("mba.")]
        if missing or unexpected:
            raise ValueError(f"{source}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]} "
                             "(a checkpoint from another config?)")
