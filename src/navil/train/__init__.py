"""navil.train: native end-to-end training (stages, AdamW + schedule, FSDP2, atomic checkpoints, metrics).

Entry points: `navil train CONFIG.yaml [key=value ...] [--resume]` on the command line, or
`navil.train.train(navil.train.load_config(path, overrides), resume=False)` from Python.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "navil.train.trainer",
    "Trainer": "navil.train.trainer",
    "TrainConfig": "navil.train.config",
    "load_config": "navil.train.config",
    "parallelize": "navil.train.parallelize",
    "apply_stage": "navil.train.stages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'navil.train' has no attribute {name!r}")
