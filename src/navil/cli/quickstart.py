"""`navil quickstart`: the built-in default run (synthetic data -> text LLM -> stage 1 -> stage 2 -> eval)."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="generate synthetic data, train a tiny NaViL with the paper's recipe, "
                                          "evaluate it and show its answers (~10 min on 2 CPU cores)",
                       description="Synthetic data -> small text LLM -> vision warm-up -> stage 1 (captions, text "
                                   "frozen) -> stage 2 "
                                   "(question answering) -> evaluation on the held-out test split -> example "
                                   "answers. Writes OUT/results.json, OUT/curve.jsonl, OUT/model (loadable with "
                                   "navil.load_model / navil chat) and OUT/examples.png.")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget in minutes on 2 CPU cores, turned "
                                                               "into fixed step counts per phase (default 10)")
    p.add_argument("--seed", type=int, default=0)
    # hidden knobs for tests and experiments
    p.add_argument("--data-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--examples", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default 2; use 1 when other processes share the cores; the same "
                        "seed reproduces the same accuracy on the same machine at the same thread count)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from navil.errors import ConfigError
    from navil.quickstart import run_quickstart

    if not args.minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if not args.data_scale > 0:
        raise ConfigError(f"--data-scale must be positive, got {args.data_scale}")
    run_quickstart(args.out, minutes=args.minutes, seed=args.seed, data_scale=args.data_scale,
                   examples=args.examples, threads=args.threads)
    return 0
