"""AdamW with per-group learning rates, a warm-up + cosine/linear schedule, and global grad-norm clipping
that works on plain tensors and on FSDP2's sharded DTensor gradients alike."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from navil.train.config import TrainConfig
from navil.train.stages import param_groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, grouped by (category, decay) (see navil.train.stages)."""
    o = cfg.optim
    groups = param_groups(model, o.lr, o.weight_decay, o.lr_mult)
    return torch.optim.AdamW(groups, lr=o.lr, betas=(float(o.betas[0]), float(o.betas[1])), eps=o.eps,
                             weight_decay=o.weight_decay, foreach=o.foreach)


def lr_factor(step: int, max_steps: int, warmup_steps: int, decay: str = "cosine", min_ratio: float = 0.0) -> float:
    """LR multiplier for optimizer step `step` (1-based): linear warm-up over `warmup_steps` steps (step 1
    gets 1/warmup), then decay from 1 to `min_ratio` at `max_steps`."""
    if warmup_steps > 0 and step <= warmup_steps:
        return step / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if decay == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


class LRSchedule:
    """Sets every group's `lr = base_lr * lr_factor(step)`; its state is just the last step (JSON-able)."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_steps: int, warmup_steps: int,
                 decay: str = "cosine", min_ratio: float = 0.0) -> None:
        self.optimizer = optimizer
        self.max_steps, self.warmup_steps, self.decay, self.min_ratio = max_steps, warmup_steps, decay, min_ratio
        self.last_step = 0
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    def factor(self, step: int) -> float:
        return lr_factor(step, self.max_steps, self.warmup_steps, self.decay, self.min_ratio)

    def set_step(self, step: int) -> float:
        """Apply the LR of optimizer step `step`; returns the factor."""
        f = self.factor(step)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        self.last_step = step
        return f

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "max_steps": self.max_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay, "min_ratio": self.min_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])


@torch.no_grad()
def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Global L2 grad norm (over all ranks under FSDP2) and, when `max_norm` > 0, clip to it."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    grads = [p.grad for p in params]
    total = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=None)
    if hasattr(total, "full_tensor"):  # DTensor: sharded grads give a partial norm; reduce it
        total = total.full_tensor()
    if max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=None)
    return total
