"""`navil train CONFIG.yaml [key=value ...] [--resume]`: native end-to-end training (also under torchrun)."""
from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
overrides use dotted keys of the config schema, values are YAML:
  navil train configs/tiny-smoke.yaml max_steps=20 out=runs/smoke save_every=10
  navil train run.yaml optim.lr=3e-4 stage=stage1 'data.sources=[{path: data/train.jsonl}]'
several processes (FSDP2; gloo on CPU, nccl on GPU):
  torchrun --nproc_per_node 2 -m navil train run.yaml batch.global_packs=4
resume from the newest complete checkpoint in OUT/checkpoints:
  navil train run.yaml out=runs/x --resume
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a NaViL model (stage 1 / 1.2 / 2) from a YAML config",
                       description="Train a NaViL model end to end from a YAML run config.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="run config YAML (e.g. configs/tiny-smoke.yaml)")
    # REMAINDER so that flags may follow the overrides (`cfg.yaml max_steps=5 --resume`); run() sorts them out
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="config overrides (dotted keys)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint under OUT/checkpoints")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(run=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from navil.train.config import load_config

    overrides = []
    for item in args.overrides:
        if item == "--resume":
            args.resume = True
        elif item == "--print-config":
            args.print_config = True
        elif item in ("-h", "--help"):
            args._parser.print_help()
            return 0
        elif item.startswith("-"):
            args._parser.error(f"unknown option {item}")
        else:
            overrides.append(item)
    cfg = load_config(args.config, overrides)
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        return 0
    from navil.train.trainer import train

    result = train(cfg, resume=args.resume)
    import os

    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"event": "train_done", **result}))
    return 0
