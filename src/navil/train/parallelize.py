"""Parallelism applied from the outside (torchtitan style): the model code knows nothing of it.

`parallelize(model, ...)` applies, in this order,
  1. activation checkpointing per ViT block and per decoder layer (non-reentrant `torch.utils.checkpoint`
     around each block's forward; module names and state-dict keys stay unchanged),
  2. `torch.compile` per block (a switch: on 2 CPU cores it costs 10-30 s per graph and gains nothing),
  3. FSDP2 `fully_shard` per ViT block, per decoder layer, then the root (embeddings, connector, final norm,
     LM head and the rest), when running under torchrun with more than one process.

`init_distributed()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and starts the process
group: nccl on GPU, gloo on CPU.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few host numbers over ranks (float64 on the compute device)."""
        if not self.is_distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_object(self, obj: Any) -> Any:
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto") -> DistEnv:
    """Start the process group when launched by torchrun with WORLD_SIZE > 1; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        from navil.errors import ConfigError

        raise ConfigError("config field 'device': cuda requested but torch.cuda.is_available() is False")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                device_id=dev if use_cuda else None)
        here = True
    return DistEnv(rank, world, local, dev, here)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a NaViL model: ViT blocks, then decoder layers."""
    blocks: list[nn.Module] = []
    vision = getattr(model, "vision_model", None)
    if vision is not None:
        blocks += list(vision.encoder.layers)
    blocks += list(model.language_model.layers)
    return blocks


def _checkpoint_forward(module: nn.Module) -> None:
    """Recompute `module`'s forward in backward (non-reentrant); keeps names/state-dict keys unchanged."""
    from torch.utils.checkpoint import checkpoint

    inner = module.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    module.forward = forward  # instance attribute: nn.Module.__call__ (and FSDP's hooks) still wrap it


def parallelize(model: nn.Module, env: DistEnv | None = None, *, activation_checkpointing: bool = False,
                compile: bool = False, reshard_after_forward: bool = True) -> nn.Module:
    """Apply activation checkpointing, torch.compile and FSDP2 to `model` in place; returns it.

    FSDP2 is applied when `env` has more than one process. Parameters stay fp32 (bf16 compute on CUDA comes
    from autocast in the trainer), so gradients are reduced in fp32.
    """
    blocks = transformer_blocks(model)
    if activation_checkpointing:
        for block in blocks:
            _checkpoint_forward(block)
    if compile:
        for block in blocks:
            block.compile()
    if env is not None and env.is_distributed:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        for i, block in enumerate(blocks):
            # the last block is gathered again at once by backward: keep it unsharded after forward
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward and i < len(blocks) - 1)
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def is_fsdp(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)
