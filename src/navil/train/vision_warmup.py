"""Vision warm-up: the encoder and the connector trained on a grounding loss alone, before the LLM reads images.

A from-scratch encoder learns what an image shows far faster from a direct per-token target than through the
LLM's answer loss (benchmarks/probe_encoder_tokens.py). This phase runs only the vision side (no LLM forward),
on batches of labelled images, with a grounding module such as `EmbeddingGrounding`; every other weight is
frozen. Measured in the quickstart (docs/quickstart.md, stop 22): 300 steps of 24 object scenes before stage 1
took the whole ten-minute run from 0.23 to 0.34 overall (shape 0.78; 1.00 on single objects).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import nn

from navil.train.grounding import Regions, head_param_groups
from navil.train.optim import LRSchedule, clip_grad_norm
from navil.train.stages import apply_stage, param_groups

Batch = tuple[list[Image.Image], list[Regions]]


def warm_up_vision(model: nn.Module, grounding: nn.Module, batch_at: Callable[[int, float], Batch], steps: int,
                   lr: float, connector_lr_mult: float = 1.0, weight_decay: float = 0.01, warmup_steps: int = 15,
                   log: Callable[[str], None] = print, log_every_s: float = 10.0) -> dict[str, Any]:
    """Train `model.vision_model` and `model.mlp1` (and `grounding`'s own heads, if any, at the connector's LR)
    for `steps` AdamW steps on `grounding`'s loss over the visual tokens of `batch_at(step, fraction of the
    phase done)` -> (images, regions per image). LR: linear warm-up, then cosine to 10%. Leaves every parameter
    trainable again; returns the phase summary."""
    from navil.inference import processor_for

    apply_stage(model, "stage1", override=["vision", "connector"])
    groups = param_groups(model, lr, weight_decay, {"connector": connector_lr_mult})
    groups += head_param_groups(grounding, lr, connector_lr_mult)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    schedule = LRSchedule(opt, steps, warmup_steps, min_ratio=0.1)
    params = [p for g in groups for p in g["params"]]
    processor = processor_for(model.config)
    merge = model.config.merge_size
    model.train()
    start = last_log = time.perf_counter()
    losses: list[float] = []
    history = []
    for step in range(1, steps + 1):
        images, regions = batch_at(step, (step - 1) / steps)
        inputs = processor(images, multi_scale=False)
        tokens = model.extract_features(inputs.pixel_values, inputs.image_grid_thw)
        loss = grounding(tokens, inputs.image_grid_thw, regions, merge)
        schedule.set_step(step)
        loss.backward()
        clip_grad_norm(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        now = time.perf_counter()
        if now - last_log >= log_every_s or step == steps:
            mean = sum(losses) / len(losses)
            history.append({"step": step, "t": round(now - start, 1), "loss": round(mean, 4)})
            acc = grounding.pop_accuracy() if hasattr(grounding, "pop_accuracy") else None
            log(f"  vision warm-up step {step:5d}/{steps}  {now - start:.0f}s  loss {mean:.3f}"
                + (f"  {acc}" if acc else ""))
            losses, last_log = [], now
    for p in model.parameters():
        p.requires_grad_(True)
    seconds = time.perf_counter() - start
    log(f"vision warm-up: done, {steps} steps in {seconds:.0f}s")
    return {"steps": steps, "seconds": round(seconds, 1), "loss_log": history,
            "trainable_parameters": sum(p.numel() for p in params)}
