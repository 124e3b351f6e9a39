"""Training: the SynRef foundation (stage 0 + stage 1) and the fine-tuning runs of the ablation.

Paper Sec. 4.1 recipe: AdamW (0.9, 0.999), weight decay 0.05, linear warm-up then cosine, grad-norm clip 1.0,
gradient accumulation, bf16 autocast on GPU; gamma and the auxiliary losses warm up linearly
(MBAConfig.gamma_warmup_ratio, LossConfig.aux_warmup_ratio).

Stages (docs/design.md section "Foundation, then fine-tuning"):
- ``stage0``: SAM-2 alone, class-agnostic: a point inside an object -> that object's mask; the dummy
  (0,0)/-1 prompt -> the union of all objects (all three multimask outputs, plus the IoU head), so that the
  pre-pass prior is an objectness map as the real pretrained SAM-2's is.
- ``stage1``: the Sa2VA baseline on SynRef referring data until it grounds; the dummy-prompt union loss is
  kept as a small auxiliary term so the prior stays meaningful while the decoder learns language.
- ``finetune``: the ablation unit, from the foundation: baseline, +MBA, +TMC, +boundary, FiLM, bias.
- ``video``: fine-tuning on a video referring dataset (SynRef-Video / MeViS layout, ``data_root`` holding
  ``train/meta_expressions.json``) as Sa2VA trains on video: each sample is a contiguous window of
  ``clip_frames`` frames of one training expression; the MLLM reads ``mllm_frames`` of them (the first ones,
  or spread evenly) and gives ONE ``[SEG]`` embedding (+ MBA's text tokens) for the clip, which every frame's
  decoder pass receives. Sa2VA trains the decoder per frame without SAM-2's memory, so every frame goes
  through ``SalmaModel.segment`` (prior per frame, detached; MBA per frame), exactly the path of
  ``predict_video(mode="per_frame")``; losses per frame (``SalmaModel.forward``). The run ends with J&F on
  the ``valid_u`` split, in per-frame and released (SAM-2 memory) modes.

Accelerate places the model (CPU, one GPU, or several processes under ``accelerate launch``: each process
draws its own part of every batch). Batches are drawn from a generator seeded by (seed, step, micro-step,
process), and frozen-encoder features are computed one image at a time (so their values do not depend on
which images happened to be encoded together), so a run killed and resumed from its last checkpoint trains
bit for bit as the uninterrupted run does. Checkpoints are safetensors (model) + a torch file of
optimizer/RNG state with their sha256, written atomically (``salma.train.store``); runs are cached under
``runs/`` by a hash of their full config, and a finished run is reused only when its final weights match
their sha256. One process trains a run folder at a time (``salma.train.lock``); a non-finite loss stops a
run, Ctrl-C saves a checkpoint first (``salma.train.guards``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from tqdm.auto import tqdm

from salma.checkpoint import verify_checksums
from salma.config import SalmaConfig
from salma.data.refer import ReferDataset
from salma.data.video_format import VideoReferDataset
from salma.eval.image import evaluate_model
from salma.eval.video import evaluate_video
from salma.io import atomic_write_json
from salma.mba import gates_zeroed, linear_warmup, write_ratio
from salma.model import WEIGHTS_FILE, SalmaModel
from salma.train.batches import (
    ClipBatches,
    ReferringBatches,
    TrainClips,
    TrainScenes,
    _as_is,
    _mask_tensor,
    batch_rng,
    draw_referring,
    loader_workers,
    make_clip_batch,
)
from salma.train.guards import StopRequest, TrainingInterrupted, check_finite
from salma.train.heads import aux_head, image_token_loss, mask_boxes
from salma.train.identity import RunResult, RunSpec, run_hash
from salma.train.lock import RunLock
from salma.train.mba_stats import SIGN_WINDOW, mba_gradients, sign_agreement
from salma.train.stage0 import stage0_eval, stage0_loss, union_loss
from salma.train.store import (
    append_log,
    load_checkpoint,
    read_log,
    remove_partial_files,
    save_checkpoint,
    truncate_log,
    write_log_csv,
)
from salma.train.tokenizer import synthetic_tokenizer
from salma.video import clip_predictor


# ---------------------------------------------------------------------------------------------- schedule
def lr_at(step: int, total: int, base_lr: float, warmup_ratio: float) -> float:
    """Linear warm-up over ``warmup_ratio * total`` steps, then cosine decay to 0 (paper Sec. 4.1)."""
    warm = max(1, round(warmup_ratio * total))
    if step < warm:
        return base_lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_model(cfg: SalmaConfig, spec: RunSpec) -> SalmaModel:
    """A fresh model, or the foundation's weights under ``cfg`` (MBA weights are new when it had none)."""
    if spec.init_from is None:
        return SalmaModel(cfg, tokenizer=synthetic_tokenizer())
    init = Path(spec.init_from)
    if not (init / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the foundation {init} does not exist (no model.safetensors). Make it with "
            f"`python -m salma pretrain --preset {cfg.name}` or point init_from at a SalmaModel directory."
        )
    if cfg.mllm.lora and not SalmaModel.saved_config(init).mllm.lora:
        # the paper's regime on a foundation trained without LoRA: load it as it was, then add the adapters
        base = dataclasses.replace(cfg, mllm=dataclasses.replace(cfg.mllm, lora=False))
        model = SalmaModel.from_pretrained(init, cfg=base, new_mba=True)
        model.add_lora(cfg)
        return model
    return SalmaModel.from_pretrained(init, cfg=cfg, new_mba=True)


def param_groups(model: torch.nn.Module, params: list[torch.nn.Parameter], train_cfg) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not on biases, norms, gamma); the MBA module's parameters
    at ``lr_scale = train_cfg.mba_lr_scale`` (gamma's times ``train_cfg.gamma_lr_scale``) and the MLLM's and
    text_hidden_fcs' at ``train_cfg.mllm_lr_scale``
    (every group carries its ``lr_scale``). At scale 1 (the defaults) there are the two groups, in the order,
    that runs and checkpoints have always had; the scaled groups follow the unscaled ones."""
    mllm = getattr(train_cfg, "mllm_lr_scale", 1.0)
    # the first matching prefix wins: gamma (and FiLM's gamma_film) before the rest of MBA
    scales = {"mba.gamma": train_cfg.mba_lr_scale * train_cfg.gamma_lr_scale, "mba.": train_cfg.mba_lr_scale,
              "mllm.": mllm, "text_hidden_fcs.": mllm}
    name = {id(p): n for n, p in model.named_parameters()}

    def scale_of(p: torch.nn.Parameter) -> float:
        return next((v for prefix, v in scales.items() if name.get(id(p), "").startswith(prefix)), 1.0)

    order = [1.0] + [v for v in dict.fromkeys(scales.values()) if v != 1.0]
    parts = [([p for p in params if scale_of(p) == v], v) for v in order]
    groups = []
    for chosen, scale in parts:
        for decays in (True, False):
            ps = [p for p in chosen if (p.ndim >= 2) == decays]
            if ps:
                groups.append({"params": ps, "weight_decay": train_cfg.weight_decay if decays else 0.0,
                               "lr_scale": scale})
    return groups


def run_length(cfg: SalmaConfig, spec: RunSpec) -> int:
    """The run's optimizer steps: ``spec.steps``, or the preset's when None; ValueError below 1."""
    total = cfg.train.steps if spec.steps is None else spec.steps
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"{spec.name}: steps must be a positive integer (got {total!r})")
    return total


def finished_run(run_dir: Path) -> RunResult | None:
    """The cached result of a finished run (``metrics.json`` and ``final/`` present, the final weights
    matching their recorded sha256), or None when the run has not finished."""
    final, metrics_path = run_dir / "final", run_dir / "metrics.json"
    if not (metrics_path.is_file() and (final / WEIGHTS_FILE).is_file()):
        return None
    redo = f"delete {metrics_path} and {final} to redo the run's last step and its evaluation"
    try:
        verify_checksums(final, [WEIGHTS_FILE])
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"the finished run {run_dir} is damaged: {' '.join(str(exc).split())}; {redo}") from exc
    return RunResult(run_dir, final, metrics, read_log(run_dir), cached=True)


def train(cfg: SalmaConfig, spec: RunSpec, runs_root: str | Path = "runs", progress: bool = True,
          stop_after: int | None = None) -> RunResult:
    """Run (or reuse) one training run; see the module docstring. ``stop_after`` ends the process' work
    after that many optimizer steps without finishing the run (used to test resume).

    One process trains a run folder at a time (``RunLock``: a second raises ``RunLocked`` naming the
    first's pid). Raises ``TrainingDiverged`` on a non-finite loss and ``TrainingInterrupted`` after saving a
    checkpoint on Ctrl-C."""

    total = run_length(cfg, spec)
    run_dir = Path(runs_root) / f"{spec.name}-{run_hash(cfg, spec)}"
    done = finished_run(run_dir)
    if done is not None:
        return done
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=not cuda, mixed_precision=cfg.train.mixed_precision if cuda else "no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    with RunLock(run_dir) if accelerator.is_main_process else contextlib.nullcontext():
        done = finished_run(run_dir)  # another process may have finished it since the first look
        if done is not None:
            return done
        if accelerator.is_main_process:
            remove_partial_files(run_dir)  # what a killed process left; the lock says none is writing now
            atomic_write_json(run_dir / "spec.json", {"cfg": cfg.to_dict(), "spec": asdict(spec)}, indent=1)
        with StopRequest() as stop:
            return _train(cfg, spec, run_dir, total, accelerator, progress, stop_after, stop)


def _train(cfg: SalmaConfig, spec: RunSpec, run_dir: Path, total: int, accelerator: Accelerator, progress: bool,
           stop_after: int | None, stop: StopRequest) -> RunResult:
    final = run_dir / "final"
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, spec)
    if spec.stage == "video":
        scenes = TrainClips(VideoReferDataset(spec.data_root, split="train"), spec.train_images)
    else:
        scenes = TrainScenes(ReferDataset(spec.data_root, dataset="synref", split="train"), spec.train_images)
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.stage == "stage0":
        params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("sam.")]
    groups = param_groups(model, params, cfg.train)
    head = aux_head(spec, model, scenes)
    if head is not None:
        head = head.to(accelerator.device)
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0, "lr_scale": 1.0})
        params = params + list(head.parameters())
    optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, betas=cfg.train.betas)
    start = load_checkpoint(run_dir, model, optimizer, head)
    model, optimizer = accelerator.prepare(model, optimizer)
    core: SalmaModel = accelerator.unwrap_model(model)
    rank, world = accelerator.process_index, accelerator.num_processes
    per_process = max(1, cfg.train.batch_size // world)
    if accelerator.is_main_process:
        truncate_log(run_dir, start)

    model.train()
    bar = tqdm(range(start, total), desc=f"{spec.name} [{spec.stage}]", disable=not (progress and
                                                                                      accelerator.is_main_process),
               initial=start, total=total)
    items = _step_items(spec, scenes, core, cfg, start, total, rank, per_process)
    # dL/dgamma of the last steps (the sign-agreement window), from the log when resuming
    dgammas = [r["dgamma"] for r in read_log(run_dir) if "dgamma" in r][-SIGN_WINDOW:]
    for step in bar:
        t0 = time.perf_counter()
        item_step, micro_batches = next(items) if items is not None else (step, None)
        if item_step != step:
            raise RuntimeError(f"batch stream out of order: got step {item_step}, expected {step}")
        lr = lr_at(step, total, cfg.train.lr, cfg.train.warmup_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints from before lr_scale lack it
        gamma_scale = linear_warmup(step, total, cfg.mba.gamma_warmup_ratio)
        aux_scale = linear_warmup(step, total, cfg.loss.aux_warmup_ratio)
        sums: dict[str, float] = {}
        for micro in range(cfg.train.grad_accum):
            rng = batch_rng(cfg.train.seed, step, micro, rank)
            sync = micro == cfg.train.grad_accum - 1
            with accelerator.no_sync(model) if not sync else contextlib.nullcontext():
                with accelerator.autocast():
                    parts = step_losses(model, core, spec, scenes, rng, per_process, accelerator.device,
                                        gamma_scale, aux_scale,
                                        micro_batches[micro] if micro_batches is not None else None, head)
                accelerator.backward(parts["total"] / cfg.train.grad_accum)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.train.grad_accum
        mba_row = {}
        if core.mba is not None:  # before clipping, which rescales the gradients in place
            mba_row = mba_gradients(core.mba)
            dgammas = (dgammas + [mba_row["dgamma"]])[-SIGN_WINDOW:]
            mba_row["dgamma_sign_agreement"] = sign_agreement(dgammas)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.train.grad_clip)
        check_finite(spec, run_dir, step, sums, float(grad_norm), scaled=accelerator.scaler is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "lr": lr, "gamma_scale": gamma_scale, "aux_scale": aux_scale,
               "grad_norm": float(grad_norm), "seconds": time.perf_counter() - t0, **sums, **mba_row}
        if core.mba is not None:
            row["gamma"] = float(core.mba.gamma.detach())
            if hasattr(core.mba, "gamma_film"):
                row["gamma_film"] = float(core.mba.gamma_film.detach())
        if spec.eval_every and (step + 1) % spec.eval_every == 0 and step + 1 < total:
            row.update(_quick_eval(core, spec, accelerator))
            model.train()
        if accelerator.is_main_process:
            append_log(run_dir, row)
            val = row.get("val_ciou", row.get("val_jf"))
            bar.set_postfix(loss=f"{sums['total']:.3f}", **({"val": f"{val:.3f}"} if val is not None else {}))
        done_here = step + 1 - start
        last = step + 1 == total
        if accelerator.is_main_process and ((step + 1) % spec.checkpoint_every == 0 or last or stop.requested):
            saved = save_checkpoint(run_dir, core, optimizer, step + 1, head)
        if stop.requested:
            accelerator.wait_for_everyone()
            raise TrainingInterrupted(f"{spec.name} interrupted after step {step + 1}/{total}; checkpoint "
                                      f"{saved if accelerator.is_main_process else run_dir}; rerun the same "
                                      "command to resume from it")
        if stop_after is not None and done_here >= stop_after and not last:
            accelerator.wait_for_everyone()
            return RunResult(run_dir, final, {}, read_log(run_dir))
    stop.release()  # Ctrl-C during the final evaluation interrupts it at once (the last checkpoint is saved)
    accelerator.wait_for_everyone()
    metrics = {}
    if accelerator.is_main_process:
        core.eval()
        metrics = _final_eval(core, spec) if spec.stage != "stage0" else stage0_eval(core, spec, head=head)
        core.save_pretrained(final)
        write_log_csv(run_dir)
        # metrics.json last: its presence (with final/'s checksums) is what marks the run finished
        atomic_write_json(run_dir / "metrics.json", metrics, indent=1, default=float)
    accelerator.wait_for_everyone()
    return RunResult(run_dir, final, metrics, read_log(run_dir))


def _step_items(spec: RunSpec, scenes: TrainScenes, core: SalmaModel, cfg: SalmaConfig, start: int, total: int,
                rank: int, batch_size: int):
    """Iterator over (step, micro-batches) for referring stages (None for stage 0, drawn in the loop)."""
    if spec.stage == "stage0":
        return None
    if spec.stage == "video":
        stream = ClipBatches(scenes, core.collator, cfg.train.seed, start, total, cfg.train.grad_accum, rank,
                             batch_size, spec)
    else:
        stream = ReferringBatches(scenes, core.collator, cfg.train.seed, start, total, cfg.train.grad_accum, rank,
                                  batch_size, core.cfg.sam2.image_size)
    workers = loader_workers()
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer runs in forked workers
    return iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is,
                                            prefetch_factor=4 if workers else None,
                                            persistent_workers=False, worker_init_fn=_ignore_sigint))


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C: the main process finishes its step and saves a checkpoint, which needs
    the workers alive until then (a worker killed by the signal ends the loop with an error instead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def step_losses(model, core: SalmaModel, spec: RunSpec, scenes: TrainScenes, rng, batch_size: int,
                device, gamma_scale: float, aux_scale: float, prepared=None,
                aux_head: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One micro-batch's losses for the run's stage. ``model`` may be DDP-wrapped; ``core`` is not.

    ``prepared``: (Batch, unions (B, 1, S, S), image indices) made by ``ReferringBatches``, or (Batch, None,
    frame keys) made by ``ClipBatches`` (video: ``batch_size`` clips); drawn from ``rng`` here when None.
    ``aux_head``: the stage's auxiliary read-outs when the spec asks for them (stage 0: ``ObjectHead``; stage 1:
    a ModuleDict of ``BoxHead`` "box" and ``ImageTokenHead`` "tokens"), else None."""
    if spec.stage == "stage0":
        return stage0_loss(core, scenes, rng, batch_size, device, object_head=aux_head,
                           category_weight=spec.category_loss_weight, colour_weight=spec.colour_loss_weight)
    if spec.stage == "video":
        batch, _, keys = prepared if prepared is not None else make_clip_batch(scenes, core.collator, rng,
                                                                                batch_size, spec)
        if core.cfg.sam2.freeze_encoder:
            batch.features = scenes.features(keys, core)
        batch = batch.to(device)
        return with_mba_write(model(batch, gamma_scale=gamma_scale, aux_scale=aux_scale), batch)
    if prepared is None:
        images, exprs, masks, unions, indices = draw_referring(scenes, rng, batch_size)
        batch, union_t = core.make_batch(images, exprs, masks), _mask_tensor(unions, core.cfg.sam2.image_size)
    else:
        batch, union_t, indices = prepared
    if core.cfg.sam2.freeze_encoder:
        batch.features = scenes.features(indices, core)
    batch = batch.to(device)
    out = model(batch, gamma_scale=gamma_scale, aux_scale=aux_scale)
    parts = with_mba_write(out, batch)
    if spec.prior_loss_weight > 0:
        target = union_t.to(device)
        parts["prior"] = union_loss(core, out.features, target)
        parts["total"] = parts["total"] + spec.prior_loss_weight * parts["prior"]
    if aux_head is not None and "box" in aux_head:
        parts["box"] = F.l1_loss(aux_head["box"](out.segment.language), mask_boxes(batch.gt_masks))
        parts["total"] = parts["total"] + spec.box_loss_weight * parts["box"]
    if aux_head is not None and "tokens" in aux_head:
        parts["tokens"] = image_token_loss(core, aux_head["tokens"], batch, scenes, indices, device)
        parts["total"] = parts["total"] + spec.token_loss_weight * parts["tokens"]
    return parts


def with_mba_write(out, batch) -> dict[str, torch.Tensor]:
    """The output's loss parts, plus MBA's relative write r (``mba_write``, ``mba_write_target``; see
    ``salma.train.mba_stats``) when the model has MBA."""
    parts = dict(out.parts)
    if out.segment.mba is not None:
        overall, target = write_ratio(out.features.image_embed, out.segment.mba.features, batch.gt_masks)
        parts["mba_write"], parts["mba_write_target"] = overall, target
    return parts


def _quick_eval(core: SalmaModel, spec: RunSpec, accelerator) -> dict:
    if not accelerator.is_main_process:
        return {}
    if spec.stage == "video":
        rows = video_eval(core, spec, modes=("per_frame",))["video_val"]["per_frame"]
        return {"val_jf": next(r["J&F"] for r in rows if r["subset"] == "all")}

    ds = ReferDataset(spec.data_root, dataset="synref", split="val")
    res = evaluate_model(core, ds, limit=spec.eval_limit, progress=False)
    rows = {r["subset"]: r for r in res.metrics.to_rows()}
    return {"val_ciou": rows["all"]["cIoU"], "val_giou": rows["all"]["gIoU"]}


def video_eval(core: SalmaModel, spec: RunSpec, modes: tuple[str, ...] = ("per_frame", "released")) -> dict:
    """J, F, J&F (``evaluate_video``) on the first ``spec.eval_limit`` expressions of ``valid_u`` in each
    mode (per_frame: how the decoder is trained; released: Sa2VA's SAM-2 memory propagation). Returns
    {"video_val": {mode: rows}, "val_limit", "jf": the first mode's overall J&F, "jf_<mode>": each}."""

    ds = VideoReferDataset(spec.data_root, split="valid_u")
    out: dict = {"video_val": {}, "val_limit": spec.eval_limit}
    for mode in modes:
        predict = clip_predictor(core, mode=mode, mllm_frames=spec.mllm_frames, frame_sampling=spec.frame_sampling)
        rows = evaluate_video(predict, ds, limit=spec.eval_limit, progress=False).rows
        out["video_val"][mode] = rows
        out[f"jf_{mode}"] = next(r["J&F"] for r in rows if r["subset"] == "all")
    out["jf"] = out[f"jf_{modes[0]}"]
    return out


def _final_eval(core: SalmaModel, spec: RunSpec) -> dict:
    if spec.stage == "video":
        return video_eval(core, spec)

    ds = ReferDataset(spec.data_root, dataset="synref", split="val")
    res = evaluate_model(core, ds, limit=spec.eval_limit, progress=False)
    out = {"val": res.metrics.to_rows(), "val_limit": spec.eval_limit,
           "ciou": next(r["cIoU"] for r in res.metrics.to_rows() if r["subset"] == "all")}
    if core.mba is not None and spec.stage == "finetune":
        out.update(gamma_zeroed_eval(core, ds, spec.eval_limit, res.per_sample))
    return out


def gamma_zeroed_eval(core: SalmaModel, ds: ReferDataset, limit: int | None, per_sample: list[dict]) -> dict:
    """The branch's effect on the predictions: the same evaluation with gamma (and gamma_film) set to 0.
    Returns {"val_gamma0": rows, "ciou_gamma0", "changed_gamma0": the share of expressions whose predicted
    mask changes (its intersection or union with the target differs)}."""
    with gates_zeroed(core.mba):
        zeroed = evaluate_model(core, ds, limit=limit, progress=False)
    rows = zeroed.metrics.to_rows()
    changed = [(a["intersection"], a["union"]) != (b["intersection"], b["union"])
               for a, b in zip(per_sample, zeroed.per_sample)]
    return {"val_gamma0": rows, "ciou_gamma0": next(r["cIoU"] for r in rows if r["subset"] == "all"),
            "changed_gamma0": sum(changed) / max(1, len(changed))}
