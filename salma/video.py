"""Video prediction: Sa2VA's clip-level ``[SEG]`` embedding, SALMA's per-frame prior + MBA, sam2's video loop.

docs/method.md sections 2, 3.1 and 8. One clip, E expressions:

    first (or uniformly sampled) ``mllm_frames`` frames + expression -> InternVL -> e (C,), F_t (N, C)
    per frame t:  own features F_v(t) -> pre-pass prior M(t)    (per frame, independently: no memory)
                  MBA(decoder features, F_t, M(t)) -> F_v'(t)  -> mask decoder (+ e as a sparse token)

Two modes (``SalmaModel.predict_video``):

``"released"``: what Sa2VA's released inference does (its HF ``sam2.py``: ``language_embd_inference`` calls
    ``add_language_embd`` on each of the first min(5, T) frames, then ``propagate_in_video``). Each of those
    frames is an *initial conditioning frame*: decoded without memory, with e appended to the sparse prompt;
    every later frame is decoded by sam2's memory path (memory attention over the conditioning frames and
    the previous frames) with the dummy prompt and *no* language token. Their ``_forward_sam_heads`` keeps the
    raw logits where the object score is <= 0 (the -1024 override is commented out), and so do we.
``"per_frame"``: Sa2VA-i's fix, the way the decoder is trained: every frame goes through
    ``SalmaModel.segment`` from its own features with e, prior and MBA; no memory.

SALMA in ``"released"`` mode runs the prior and MBA inside sam2's own propagation loop (``_forward_sam_heads``
of :class:`LanguageVideoPredictor`), so a clip is read once.

Where the prior comes from. ``_forward_sam_heads`` receives the memory-conditioned features
``pix_feat_with_mem``. The prior is computed from the frame's *own* features instead (the lowest FPN level +
``no_mem_embed``, exactly what ``LanguageSAM2.encode_image`` gives and what the trainer computes the prior
from): docs/method.md section 3.1 says video priors are computed per frame, independently, and a prior read from
memory-conditioned features would feed the previous frames' predictions (and their errors) back into the
gate. MBA then modulates the features the decoder actually reads (``pix_feat_with_mem``), as in training,
where those are the frame's own features. On a conditioning frame both are the same tensor.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sam2.build_sam import build_sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor

from salma import sam2_ext
from salma.batch import Batch
from salma.mllm import pad_prompts, preprocess_tiles
from salma.sam2_ext import LanguageSAM2, SAM2Features, preprocess_images

VIDEO_MODES = ("released", "per_frame")
FRAME_SAMPLING = ("first", "uniform")


@dataclass
class ClipPrompt:
    """What the MLLM says about one expression on one clip (``SalmaModel.language`` on the sampled frames).

    language: (C,) the ``[SEG]`` embedding e; text: (N, C) MBA's text tokens F_t; text_mask: (N,) bool.
    """

    language: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor


def sample_frames(n_frames: int, k: int, how: str = "first") -> list[int]:
    """Indices of the ``k`` frames the MLLM reads: the first k (Sa2VA) or k spread evenly (Sa2VA-i)."""
    if how not in FRAME_SAMPLING:
        raise ValueError(f"frame_sampling={how!r}; accepted: {', '.join(FRAME_SAMPLING)}")
    if n_frames < 1 or k < 1:
        raise ValueError(f"need at least one frame and mllm_frames >= 1; got {n_frames} frames, mllm_frames={k}")
    k = min(k, n_frames)
    if how == "first":
        return list(range(k))
    return sorted(set(np.linspace(0, n_frames - 1, k).round().astype(int).tolist()))


class LanguageVideoPredictor(SAM2VideoPredictor):
    """sam2's ``SAM2VideoPredictor`` whose mask head takes the clip's language embedding, SALMA's per-frame
    prior and MBA. Without an active prompt (``self._prompt is None``) it is plain sam2.

    State a call reads (set by ``_run_single_frame_inference`` for the object being decoded):
    ``_prompt`` (ClipPrompt), ``_with_language`` (True on initial conditioning frames), ``_frame_idx``,
    ``_own_embed`` (1, C, h, w) the frame's own lowest-level features (stashed by
    ``_prepare_memory_conditioned_features``), ``_salma`` (the SalmaModel's MBA and config, or None).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._prompt: ClipPrompt | None = None
        self._with_language = False
        self._frame_idx: int | None = None
        self._own_embed: torch.Tensor | None = None
        object.__setattr__(self, "_mba", None)
        self._multimask_prior = True
        self._multimask_output = False
        self._prior_fn = sam2_ext.structural_prior
        self.prior_cache: dict[int, torch.Tensor] = {}

    # -- which object / frame is being decoded -------------------------------------------------------
    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, batch_size, is_init_cond_frame,
                                    point_inputs, mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits=None):
        # sam2 decodes one object at a time and passes that object's slice of the outputs: find its index
        # by identity to look up the object's (= expression's) prompt.
        prompts = inference_state.get("salma_prompts", {})
        obj_idx = next((i for i, d in inference_state["output_dict_per_obj"].items() if d is output_dict), None)
        self._prompt = prompts.get(obj_idx)
        # Sa2VA's released behaviour: the language token goes in on the conditioning frames only.
        self._with_language = bool(is_init_cond_frame)
        self._frame_idx = frame_idx
        self.prior_cache = inference_state.setdefault("salma_prior", {})
        try:
            return super()._run_single_frame_inference(
                inference_state, output_dict, frame_idx, batch_size, is_init_cond_frame, point_inputs,
                mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits)
        finally:
            self._prompt, self._own_embed = None, None

    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame, current_vision_feats,
                                             current_vision_pos_embeds, feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        # Keep the frame's own features (HW, B, C) -> (B, C, h, w), as encode_image returns them, for the prior.
        own = current_vision_feats[-1]
        if self.directly_add_no_mem_embed:
            own = own + self.no_mem_embed
        (h, w), b = feat_sizes[-1], own.shape[1]
        self._own_embed = own.permute(1, 2, 0).reshape(b, -1, h, w)
        return super()._prepare_memory_conditioned_features(
            frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes,
            output_dict, num_frames, track_in_reverse)

    # -- the mask head ---------------------------------------------------------------------------------
    def _forward_sam_heads(self, backbone_features, point_inputs=None, mask_inputs=None, high_res_features=None,
                           multimask_output=False):
        """sam2's mask head with e appended to the sparse prompt (conditioning frames) and, for SALMA, this
        frame's prior and MBA on ``backbone_features`` (B, C, h, w) first. Returns sam2's 7-tuple.

        Decodes as ``SalmaModel.segment`` does (``cfg.sam2.multimask_output``: one mask, or the best predicted
        IoU of 3, whose output token then gives the object pointer), whatever sam2's ``_use_multimask`` asks.
        """
        prompt = self._prompt
        if prompt is None or point_inputs is not None or mask_inputs is not None:
            return super()._forward_sam_heads(backbone_features, point_inputs, mask_inputs, high_res_features,
                                              multimask_output)
        sam = self._language_view()  # LanguageSAM2's decode on this predictor's own modules
        b = backbone_features.shape[0]
        image_embed = backbone_features
        if self._mba is not None:
            prior = self.prior_cache.get(self._frame_idx)
            if prior is None:
                # sam2 runs frame-major (every object on frame t, then t+1): one prior per frame is enough.
                prior = self._prior_fn(sam, self._own_embed, high_res_features, self._multimask_prior)
                self.prior_cache.clear()
                self.prior_cache[self._frame_idx] = prior
            image_embed = self._mba(backbone_features, prompt.text.expand(b, -1, -1), prior.expand(b, -1, -1, -1),
                                    text_mask=prompt.text_mask.expand(b, -1)).features
        language = prompt.language.view(1, 1, -1).expand(b, 1, -1) if self._with_language else None
        dec = sam.decode(image_embed, high_res_features, language=language,
                         multimask=self._multimask_output).best_only()
        # From here on as sam2's _forward_sam_heads, minus the -1024 override (Sa2VA's released code drops it).
        low_res = dec.low_res_logits
        high_res = F.interpolate(low_res, size=(self.image_size, self.image_size), mode="bilinear",
                                 align_corners=False)
        obj_ptr = self.obj_ptr_proj(dec.tokens[:, 0])
        scores = dec.object_score_logits
        if self.pred_obj_scores:
            appearing = scores.sigmoid() if self.soft_no_obj_ptr else (scores > 0).float()
            if self.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * self.no_obj_ptr
        return low_res, high_res, dec.ious, low_res, high_res, obj_ptr, scores

    def _language_view(self) -> _LanguageView:
        # One view per predictor: a compiled prior (``prior_function``) then sees the same object every frame.
        view = self.__dict__.get("_view")
        if view is None:
            view = _LanguageView(self)
            self.__dict__["_view"] = view
        return view

    # -- setup -----------------------------------------------------------------------------------------
    def attach(self, model) -> None:
        """Use ``model``'s MBA (None for the Sa2VA baseline) and prior setting. Plain attributes: MBA must not
        become a submodule of the predictor (its weights belong to the SalmaModel)."""
        object.__setattr__(self, "_mba", model.mba)
        self._multimask_prior = model.cfg.sam2.multimask_prior
        self._multimask_output = model.cfg.sam2.multimask_output
        self._prior_fn = prior_function(model)

    @torch.inference_mode()
    def init_state_from_tensors(self, images: torch.Tensor, video_height: int, video_width: int,
                                offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False) -> dict:
        """sam2's ``init_state`` for frames already in memory.

        images: (T, 3, S, S) normalised SAM-2 input (``preprocess_images``, the image path's arithmetic;
        sam2's own loader reads JPEG folders and resizes with PIL, which would break train/inference parity).
        The dictionary has the keys sam2's ``init_state`` fills (sam2 1.1.0).
        """
        device = self.device
        state = {
            "images": images if offload_video_to_cpu else images.to(device),
            "num_frames": len(images), "offload_video_to_cpu": offload_video_to_cpu,
            "offload_state_to_cpu": offload_state_to_cpu, "video_height": video_height, "video_width": video_width,
            "device": device, "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
            "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
            "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
            "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
        }
        self._get_image_feature(state, frame_idx=0, batch_size=1)
        return state

    @torch.inference_mode()
    def add_language_prompt(self, state: dict, frame_idx: int, obj_id: int, prompt: ClipPrompt) -> torch.Tensor:
        """Decode ``frame_idx`` for object ``obj_id`` with its language prompt, as sam2's ``add_new_points_or_box``
        does for clicks (no memory on a frame not tracked yet; memory encoded later by ``propagate_in_video``).
        Returns the low-res logits (1, 1, 4h, 4w)."""
        obj_idx = self._obj_id_to_idx(state, obj_id)
        state.setdefault("salma_prompts", {})[obj_idx] = prompt
        is_init = frame_idx not in state["frames_tracked_per_obj"][obj_idx]
        key = "cond_frame_outputs" if (is_init or self.add_all_frames_to_correct_as_cond) else "non_cond_frame_outputs"
        out, logits = self._run_single_frame_inference(
            inference_state=state, output_dict=state["output_dict_per_obj"][obj_idx], frame_idx=frame_idx,
            batch_size=1, is_init_cond_frame=is_init, point_inputs=None, mask_inputs=None, reverse=False,
            run_mem_encoder=False)
        state["temp_output_dict_per_obj"][obj_idx][key][frame_idx] = out
        return logits


class _LanguageView(LanguageSAM2):
    """``LanguageSAM2`` over the predictor without registering it as a child module (the predictor would
    otherwise contain itself); only ``decode`` / ``structural_prior`` are used."""

    def __init__(self, model):
        torch.nn.Module.__init__(self)
        object.__setattr__(self, "model", model)


def prior_function(model):
    """The pre-pass as both video modes call it, ``(sam, image_embed, high_res, multimask) -> prior``:
    ``sam2_ext.structural_prior``, or the function stored in ``model.__dict__["prior_fn"]`` (the video
    benchmark's ``torch.compile``d pre-pass, ``salma.bench.video.compiled_extras``)."""
    return model.__dict__.get("prior_fn") or sam2_ext.structural_prior


def build_video_predictor(model) -> LanguageVideoPredictor:
    """A :class:`LanguageVideoPredictor` built from ``model.cfg.sam2`` with sam2's ``build_sam2_video_predictor``
    and the Hydra overrides of ``build_sam2_model``, whose tensors *are* the model's SAM-2 tensors
    (``load_state_dict(assign=True)``: same storage, no copy; strict, so every parameter name must match)."""

    cfg = model.cfg.sam2
    sam = model.sam.model
    predictor = build_sam2_video_predictor(
        cfg.config_file, None, device="cpu", mode="eval",
        hydra_overrides_extra=[*cfg.overrides, "++model._target_=salma.video.LanguageVideoPredictor"],
        apply_postprocessing=False)  # as build_sam2_model: no stability fallback, no hole filling
    predictor.load_state_dict(sam.state_dict(), strict=True, assign=True)
    predictor.eval()
    predictor.attach(model)
    return predictor


def video_predictor_for(model) -> LanguageVideoPredictor:
    """The model's cached video predictor, rebuilt when the model's SAM-2 tensors moved (``.to(device)``)."""
    pred = model.__dict__.get("_video_predictor")
    own = next(model.sam.model.parameters())
    if pred is None or next(pred.parameters()).data_ptr() != own.data_ptr():
        pred = build_video_predictor(model)
        model.__dict__["_video_predictor"] = pred  # not a submodule: stays out of state_dict / .to()
    pred.attach(model)
    return pred


@torch.no_grad()
def clip_prompts(model, frames: np.ndarray, expressions: list[str], mllm_frames: int = 5,
                 frame_sampling: str = "first") -> tuple[list[ClipPrompt], list[int]]:
    """The MLLM on the sampled frames, one ``[SEG]`` embedding (+ text tokens) per expression.

    frames: (T, H, W, 3) uint8. Each sampled frame is one tile (Sa2VA's video input: no dynamic tiling).
    Returns ([ClipPrompt] per expression, the sampled frame indices).
    """

    idx = sample_frames(len(frames), mllm_frames, frame_sampling)
    tiles = preprocess_tiles([frames[i] for i in idx], model.cfg.mllm.vision_image_size)
    prompts = [model.prompts.build(e, n_tiles=len(idx)) for e in expressions]
    ids = pad_prompts(prompts, model.tokenizer.pad_token_id)

    e = len(expressions)
    batch = Batch(sam_images=torch.empty(0), image_index=torch.zeros(e, dtype=torch.long),
                  pixel_values=tiles.repeat(e, 1, 1, 1), **ids).to(model.device)
    language, text, text_mask, _ = model.language(batch)
    return [ClipPrompt(language[i], text[i], text_mask[i]) for i in range(e)], idx


def _to_masks(logits: torch.Tensor, h: int, w: int) -> np.ndarray:
    """(T, 1, h', w') logits -> (T, H, W) bool: bilinear to the frame size, sigmoid > 0.5 (predict_image)."""
    up = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return (up.sigmoid() > 0.5).cpu().numpy()


@torch.no_grad()
def predict_per_frame(model, frames: np.ndarray, prompts: list[ClipPrompt], chunk: int = 16,
                      return_logits: bool = False):
    """Mode ``"per_frame"``: ``SalmaModel.segment`` on every frame's own features (chunks of ``chunk``
    frames), one prior per frame shared by the expressions, as ``predict_image`` does.

    Returns [(T, H, W) bool] per expression (and the (E, T, 1, 4h, 4w) low-res logits with ``return_logits``).
    """
    t, h, w = frames.shape[:3]
    out: list[list[torch.Tensor]] = [[] for _ in prompts]
    for s in range(0, t, chunk):
        images = preprocess_images(frames[s:s + chunk], model.cfg.sam2.image_size).to(model.device)
        feats: SAM2Features = model.sam.encode_image(images)
        n = images.shape[0]
        prior = None
        if model.mba is not None:
            prior = prior_function(model)(model.sam, feats.image_embed, feats.high_res,
                                          model.cfg.sam2.multimask_prior)
        for k, p in enumerate(prompts):
            seg = model.segment(feats, p.language.expand(n, -1), p.text.expand(n, -1, -1),
                                p.text_mask.expand(n, -1), prior=prior)
            out[k].append(seg.mask_logits)
    low = torch.stack([torch.cat(o).float().cpu() for o in out])
    masks = [_to_masks(lo, h, w) for lo in low]
    return (masks, low) if return_logits else masks


@torch.no_grad()
def predict_released(model, frames: np.ndarray, prompts: list[ClipPrompt], cond_frames: list[int],
                     offload: bool = False, return_logits: bool = False):
    """Mode ``"released"``: e added on ``cond_frames`` (sam2 conditioning frames, decoded without memory),
    then sam2's ``propagate_in_video`` over the clip; SALMA's prior + MBA run inside that loop.

    Returns [(T, H, W) bool] per expression (and the (E, T, 1, 4h, 4w) low-res logits with ``return_logits``).
    """
    pred = video_predictor_for(model)
    t, h, w = frames.shape[:3]
    images = preprocess_images(frames, model.cfg.sam2.image_size)
    state = pred.init_state_from_tensors(images, h, w, offload_video_to_cpu=offload, offload_state_to_cpu=offload)
    for f in cond_frames:  # frame-major, so the per-frame prior cache serves every expression
        for k, p in enumerate(prompts):
            pred.add_language_prompt(state, f, obj_id=k, prompt=p)
    low = torch.zeros(len(prompts), t, 1, *((model.cfg.sam2.image_size // 4,) * 2))
    for f, _, _ in pred.propagate_in_video(state):
        for k in range(len(prompts)):
            # sam2 yields masks at the video size; the low-res logits it stored are the ones we threshold
            # after our own resize, exactly as predict_image does.
            out = state["output_dict_per_obj"][k]
            cur = out["cond_frame_outputs"].get(f) or out["non_cond_frame_outputs"][f]
            low[k, f] = cur["pred_masks"][0].float().cpu()
    masks = [_to_masks(low[k], h, w) for k in range(len(prompts))]
    return (masks, low) if return_logits else masks


def predict_video(model, frames: np.ndarray, expressions: list[str], mode: str = "released", mllm_frames: int = 5,
                  frame_sampling: str = "first", offload: bool = False) -> list[np.ndarray]:
    """See ``SalmaModel.predict_video``."""
    if mode not in VIDEO_MODES:
        raise ValueError(f"mode={mode!r}; accepted: {', '.join(VIDEO_MODES)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {frames.dtype} {tuple(frames.shape)}")
    if not expressions:
        return []
    was_training = model.training
    model.eval()
    try:
        prompts, idx = clip_prompts(model, frames, expressions, mllm_frames, frame_sampling)
        if mode == "per_frame":
            return predict_per_frame(model, frames, prompts)
        # The conditioning frames are the frames the MLLM read (Sa2VA: the first min(5, T)).
        return predict_released(model, frames, prompts, idx, offload=offload)
    finally:
        model.train(was_training)


def clip_predictor(model, mode: str = "released", mllm_frames: int = 5, frame_sampling: str = "first",
                   offload: bool = False):
    """A ``predict_clip`` for ``salma.eval.video.evaluate_video``: (frames, expressions, info) -> (E, T, H, W)."""
    def predict_clip(frames: np.ndarray, expressions: list[str], info=None) -> np.ndarray:
        masks = predict_video(model, frames, expressions, mode=mode, mllm_frames=mllm_frames,
                              frame_sampling=frame_sampling, offload=offload)
        return np.stack(masks).astype(bool)

    return predict_clip
