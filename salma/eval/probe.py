"""Instrumented forward passes for the walk-through notebooks: paper Sec. 3.2 (pre-pass prior, MBA, Eq. 1-2,
Fig. 3) and the attention maps of paper Fig. 5.

``trace_forward`` runs exactly the inference path of ``SalmaModel.predict_image`` (encoder -> pre-pass prior
-> MBA -> language-conditioned decoder) and keeps every intermediate: the text tokens and their words, the
prior, MBA's ``MBAOutput`` (router scores, top-K picks, softmax attention, gate, O_attn) and the attention
of SAM-2's mask decoder.

Two kinds of attention map, and what "baseline attention" means here (notebook 07):

- **Decoder attention** (both models): the Sa2VA baseline has no MBA, but both it and SALMA feed the
  ``[SEG]`` language embedding to SAM-2's mask decoder as a sparse prompt token. The decoder's last
  token-to-image attention (``final_attn_token_to_image`` of its TwoWayTransformer) gives, for that
  language token, a softmax over the image positions: a spatial distribution that exists in both models
  and is computed the same way. This is the model-versus-model comparison (baseline vs SALMA).
- **MBA write map** (SALMA only): MBA's softmax runs over the K picked text tokens *per image position*,
  so its weights sum to 1 everywhere and are not a spatial distribution; in gate mode the prior does not
  even enter them. Where the text is written into the features is the norm of MBA's update
  ``||G * O_attn||`` per position (gamma is one scalar and cancels in any share). Its "un-gated" control
  is the same trained module with the gate forced to 1 (prior logits set to +BIAS_CLAMP * tau_gate):
  what the cross-attention alone would write without the structural prior.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from salma.mba import BIAS_CLAMP, MBAOutput
from salma.model import SalmaModel
from salma.sam2_ext import SAM2Features, preprocess_images


@dataclass
class ForwardTrace:
    """Everything one ``trace_forward`` call saw (B expressions on one image; C channels; h x w feature map).

    image: (H, W, 3) uint8; expressions: B strings; tokens: the expression's words per expression (the
    text tokens F_t in order); features: (B, C, h, w) pre-MBA SAM-2 features; high_res: the decoder's
    high-resolution features; text: (B, N, C) F_t; text_mask: (B, N) bool; language: (B, C) the ``[SEG]``
    embedding; prior: (B, 1, 4h, 4w) pre-pass logits or None (baseline); mba: ``MBAOutput`` or None;
    mask_logits: (B, 1, 4h, 4w); masks: (B, H, W) bool at the image size; decoder_attention: (B, heads,
    T, h*w) softmax weights of the decoder's final token-to-image attention (T tokens: output tokens, then
    the sparse prompt; the language token is the last).
    """

    image: np.ndarray
    expressions: list[str]
    tokens: list[list[str]]
    features: torch.Tensor
    high_res: list[torch.Tensor]
    text: torch.Tensor
    text_mask: torch.Tensor
    language: torch.Tensor
    prior: torch.Tensor | None
    mba: MBAOutput | None
    mask_logits: torch.Tensor
    masks: np.ndarray
    decoder_attention: torch.Tensor

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the feature map the decoder and MBA read."""
        return tuple(self.features.shape[-2:])


@contextlib.contextmanager
def capture_decoder_attention(model: SalmaModel) -> Iterator[list[torch.Tensor]]:
    """Record the softmax weights (B, heads, T, HW) of every call of SAM-2's final token-to-image attention.

    Recomputed from the layer's own projections on the inputs it receives (sam2 calls
    ``F.scaled_dot_product_attention``, which does not return its weights); nothing is changed.
    """
    layer = model.sam.model.sam_mask_decoder.transformer.final_attn_token_to_image
    calls: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        q = kwargs["q"] if "q" in kwargs else args[0]
        k = kwargs["k"] if "k" in kwargs else args[1]
        qh = module._separate_heads(module.q_proj(q), module.num_heads)
        kh = module._separate_heads(module.k_proj(k), module.num_heads)
        calls.append(torch.softmax((qh @ kh.transpose(-1, -2)).float() / math.sqrt(qh.shape[-1]), dim=-1))

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def expression_tokens(model: SalmaModel, batch) -> list[list[str]]:
    """The words of each expression's text tokens F_t, in the order MBA sees them."""
    out = []
    for b in range(batch.input_ids.shape[0]):
        pos = batch.expression_index[b][batch.expression_valid[b]]
        out.append(model.tokenizer.convert_ids_to_tokens(batch.input_ids[b, pos].tolist()))
    return out


@torch.no_grad()
def trace_forward(model: SalmaModel, image: np.ndarray, expressions: list[str]) -> ForwardTrace:
    """``predict_image``'s path with every intermediate kept (see ``ForwardTrace``); MBA attention included."""
    model.eval()
    batch = model.make_batch([image], expressions, image_index=[0] * len(expressions)).to(model.device)
    feats = model.sam.encode_image(batch.sam_images).select(batch.image_index)
    prior = None
    if model.mba is not None:
        prior = model.prior(feats)
    language, text, text_mask, _ = model.language(batch)
    with capture_decoder_attention(model) as calls:
        seg = model.segment(feats, language, text, text_mask, prior=prior, return_attention=True)
    h, w = image.shape[:2]
    logits = F.interpolate(seg.mask_logits, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return ForwardTrace(image=image, expressions=list(expressions), tokens=expression_tokens(model, batch),
                        features=feats.image_embed, high_res=feats.high_res, text=text, text_mask=text_mask,
                        language=language, prior=prior, mba=seg.mba, mask_logits=seg.mask_logits,
                        masks=(logits.sigmoid() > 0.5).cpu().numpy(), decoder_attention=calls[-1])


def language_attention_map(trace: ForwardTrace) -> np.ndarray:
    """(B, h, w): the decoder's final attention from the language (``[SEG]``) token to the image positions,
    mean over heads; each map sums to 1."""
    h, w = trace.feature_size
    attn = trace.decoder_attention[:, :, -1, :].mean(1)  # (B, HW)
    return attn.reshape(-1, h, w).cpu().numpy()


@torch.no_grad()
def mba_update(model: SalmaModel, trace: ForwardTrace, gated: bool = True) -> torch.Tensor:
    """(B, C, h, w): MBA's update before gamma, i.e. F_v' - F_v with gamma_eff = 1.

    ``gated=False`` forces the gate to 1 (prior logits = +BIAS_CLAMP * tau_gate): the un-gated control.
    Raises ValueError for a model without MBA (the baseline has no update).
    """
    if model.mba is None or trace.prior is None:
        raise ValueError("mba_update needs a model with MBA (cfg.mba.enabled=True); the baseline has none")
    prior = trace.prior if gated else torch.full_like(trace.prior, BIAS_CLAMP * model.cfg.mba.tau_gate)
    saved = model.mba.gamma.detach().clone()
    try:
        model.mba.gamma.fill_(1.0)
        out = model.mba(trace.features, trace.text, prior, text_mask=trace.text_mask, warmup_scale=1.0)
    finally:
        model.mba.gamma.copy_(saved)
    return out.features - trace.features


def mba_write_map(model: SalmaModel, trace: ForwardTrace, gated: bool = True) -> np.ndarray:
    """(B, h, w): the L2 norm over channels of MBA's update per position (``mba_update``), >= 0."""
    return mba_update(model, trace, gated).norm(dim=1).cpu().numpy()


@torch.no_grad()
def prior_and_gate(model: SalmaModel, images: list[np.ndarray], tau_gate: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The pre-pass on images (H, W, 3) of one size, with no language: prior logits (I, H, W) upsampled
    bilinearly to the image size, and the gate G = sigmoid(prior / tau_gate) (I, h, w) at the feature
    resolution MBA uses. Works for any model (the pre-pass needs only SAM-2)."""

    model.eval()
    tau = tau_gate if tau_gate is not None else model.cfg.mba.tau_gate
    x = torch.cat([preprocess_images(im, model.cfg.sam2.image_size) for im in images]).to(model.device)
    feats: SAM2Features = model.sam.encode_image(x)
    prior = model.prior(feats)
    gate = torch.sigmoid(F.interpolate(prior, size=feats.image_embed.shape[-2:], mode="bilinear",
                                       align_corners=False) / tau)
    full = F.interpolate(prior, size=images[0].shape[:2], mode="bilinear", align_corners=False)
    return full[:, 0].cpu().numpy(), gate[:, 0].cpu().numpy()


def mba_steps(model: SalmaModel, trace: ForwardTrace, b: int = 0) -> dict:
    """MBA step by step for expression ``b`` of a trace (paper Eq. 1-2), as numpy arrays for plotting.

    Returns tokens (N words), router_scores (N,), selected (K,) token indices (-1 = no pick), selected_words,
    attention (heads, K, h, w) softmax weights, gate (h, w), attn_norm (h, w) = ||O_attn||,
    gated_norm (h, w) = ||G * O_attn|| (gate mode; ||O_attn|| in bias mode), gamma (the trained scalar; the
    warm-up factor is 1 at inference), delta_norm (h, w) = ||F_v' - F_v||, feature_norm (h, w) = ||F_v||,
    eq2_error = max |F_v' - F_v - gamma * G * O_attn| (Eq. 2 checked on the real tensors; ~0 without FiLM).
    """
    if trace.mba is None:
        raise ValueError("mba_steps needs a model with MBA; the baseline trace has none")
    m, (h, w) = trace.mba, trace.feature_size
    n = int(trace.text_mask[b].sum())
    selected = m.selected[b].cpu().numpy()
    words = trace.tokens[b]
    attn = m.attention[b].reshape(m.attention.shape[1], h, w, -1)[..., : model.cfg.mba.top_k]
    gated = m.attn_output[b] * m.gate[b] if model.cfg.mba.mode == "gate" else m.attn_output[b]
    return {
        "tokens": words, "router_scores": m.router_scores[b, :n].cpu().numpy(), "selected": selected,
        "selected_words": [words[i] if i >= 0 else "-" for i in selected],
        "attention": attn.permute(0, 3, 1, 2).cpu().numpy(), "gate": m.gate[b, 0].cpu().numpy(),
        "attn_norm": m.attn_output[b].norm(dim=0).cpu().numpy(), "gated_norm": gated.norm(dim=0).cpu().numpy(),
        "gamma": float(model.mba.gamma.detach()),
        "delta_norm": (m.features[b] - trace.features[b]).norm(dim=0).cpu().numpy(),
        "eq2_error": float((m.features[b] - trace.features[b] - model.mba.gamma.detach() * gated).abs().max()),
        "feature_norm": trace.features[b].norm(dim=0).cpu().numpy(),
    }
