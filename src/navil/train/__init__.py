"""navil.train: native end-to-end training (stages, AdamW + schedule, FSDP2, atomic checkpoints, metrics).

Entry points: `navil train CONFIG.yaml [key=value ...] [--resume]` on the command line, or
`navil.train.train(navil.train.load_config(path, overrides), resume=False)` from Python.
"""
from __future__ import annotations

from navil._lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "train": "navil.train.trainer",
    "Trainer": "navil.train.trainer",
    "TrainConfig": "navil.train.config",
    "load_config": "navil.train.config",
    "parallelize": "navil.train.parallelize",
    "apply_stage": "navil.train.stages",
})
