"""Speed of one navil training step on this CPU: tokens/s and MFU (fp32, 2 threads by default).

The DESIGN.md bench config (InternLM2-family LLM 512 x 4 layers, ViT 256 x 4 layers, random weights) on one
448x320 image at 4 scales (1192 patches, 298 image tokens) in a 675-token sequence, the answer (last 100
tokens) scored. A step is what `navil train` does per pack: forward + backward with the world-size-independent
loss scaling, global grad-norm clipping, the LR schedule and AdamW. Measured for stage 2 (all weights train)
and stage 1 (text weights frozen), with and without activation checkpointing.

MFU = model FLOPs / step time / peak. Model FLOPs come from `navil.train.metrics.pack_train_flops` (matmuls
incl. attention; frozen weights get no weight-gradient FLOPs), checked against torch's FlopCounterMode on the
matmul part. The peak is a measured fp32 1024^3 matmul rate. Prints a table and one JSON line.

Run: .venv/bin/python benchmarks/bench_train_step.py [--threads 2] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from bench_setup import bench_config, bench_inputs
from torch.utils.flop_counter import FlopCounterMode

from navil.config import NaViLConfig
from navil.model.navil import NaViL
from navil.train.config import TrainConfig
from navil.train.metrics import measure_peak_flops, pack_train_flops
from navil.train.optim import LRSchedule, build_optimizer, clip_grad_norm
from navil.train.parallelize import parallelize
from navil.train.stages import STAGE_TRAINABLE, apply_stage

OFFICIAL_FWD_BWD_S = 1.36  # DESIGN.md: the official code's train step (fwd+bwd) on this kind of machine


def batch(config: NaViLConfig) -> dict:
    return bench_inputs(config, 675)


def measure(stage: str, ac: bool, inputs: dict, repeat: int, peak: float) -> dict:
    torch.manual_seed(0)
    model = NaViL(bench_config()).train()
    apply_stage(model, stage)
    parallelize(model, None, activation_checkpointing=ac)
    cfg = TrainConfig.from_dict({"data": {"synthetic": {}}, "stage": stage, "max_steps": 1000})
    opt = build_optimizer(model, cfg)
    sched = LRSchedule(opt, 1000, 10)
    params = [p for p in model.parameters() if p.requires_grad]

    def fwd_bwd() -> tuple[int, torch.Tensor]:
        out = model(**inputs, return_logits=False)
        (out.loss * out.num_loss_tokens / out.num_loss_tokens).backward()
        return out.num_loss_tokens, out.loss

    def step(i: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        fwd_bwd()
        t1 = time.perf_counter()
        clip_grad_norm(params, 1.0)
        sched.set_step(i + 1)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return t1 - t0, time.perf_counter() - t0

    step(0)  # warm-up (allocations, optimizer state)
    times = [step(i + 1) for i in range(repeat)]
    fb = statistics.median(t for t, _ in times)
    full = statistics.median(t for _, t in times)
    with FlopCounterMode(display=False) as counter:
        n_loss, _ = fwd_bwd()
    opt.zero_grad(set_to_none=True)
    flops = pack_train_flops(model.config, inputs["input_ids"], inputs["cu_seqlens"], inputs["image_grid_thw"],
                             n_loss, STAGE_TRAINABLE[stage])
    matmul_only = pack_train_flops(model.config, inputs["input_ids"], inputs["cu_seqlens"],
                                   inputs["image_grid_thw"], n_loss, STAGE_TRAINABLE[stage], attention=False)
    tokens = inputs["input_ids"].shape[1]
    return {"stage": stage, "activation_checkpointing": ac, "step_s": full, "fwd_bwd_s": fb,
            "optimizer_s": full - fb, "tokens_per_s": tokens / full, "patches_per_s": inputs["pixel_values"].shape[0] / full,
            "model_gflop": flops / 1e9, "mfu": flops / full / peak, "mfu_fwd_bwd": flops / fb / peak,
            # with activation checkpointing the counter also sees the recomputed forward
            "flop_counter_matches": None if ac else abs(counter.get_total_flops() - matmul_only) <= 1e-6 * matmul_only,
            "trainable_params": sum(p.numel() for p in params)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = bench_config()
    inputs = batch(config)
    peak = measure_peak_flops("cpu", seconds=0.5)
    load = os.getloadavg()[0]
    rows = [measure(stage, ac, inputs, args.repeat, peak)
            for stage, ac in (("stage2", False), ("stage1", False), ("stage2", True))]
    n_patch, tokens = inputs["pixel_values"].shape[0], inputs["input_ids"].shape[1]
    print(f"config: ViT 256x4, LLM 512x4 (InternLM2 family), {sum(p.numel() for p in NaViL(config).parameters()) / 1e6:.1f}M "
          f"params; {n_patch} patches ({inputs['image_grid_thw'].shape[0]} scales), {tokens} tokens, 100 scored")
    print(f"threads {args.threads}, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, load average {load:.2f} "
          f"(other processes on these {os.cpu_count()} cores slow every figure down)")
    if args.threads > 1 and load > 1.0:
        print("note: with other work on the cores, several spinning OpenMP threads can stall each other (up to "
              "10x slower steps here); compare with --threads 1")
    print(f"{'stage':8} {'AC':3} {'step s':>7} {'fwd+bwd s':>9} {'optim s':>8} {'tok/s':>7} {'GFLOP':>6} "
          f"{'MFU':>6} {'MFU f+b':>7}")
    for r in rows:
        print(f"{r['stage']:8} {'on' if r['activation_checkpointing'] else 'off':3} {r['step_s']:7.3f} "
              f"{r['fwd_bwd_s']:9.3f} {r['optimizer_s']:8.3f} {r['tokens_per_s']:7.0f} {r['model_gflop']:6.1f} "
              f"{r['mfu']:6.1%} {r['mfu_fwd_bwd']:7.1%}")
    s2 = rows[0]
    print(f"fwd+bwd vs the official code's {OFFICIAL_FWD_BWD_S} s reference (DESIGN.md, same config): "
          f"{OFFICIAL_FWD_BWD_S / s2['fwd_bwd_s']:.2f}x; activation checkpointing costs "
          f"{rows[2]['step_s'] / s2['step_s']:.2f}x; analytic FLOPs == FlopCounterMode on matmuls: "
          f"{all(r['flop_counter_matches'] for r in rows if not r['activation_checkpointing'])}")
    print(json.dumps({"benchmark": "train_step", "torch": torch.__version__, "threads": args.threads,
                      "peak_flops": peak, "load_average": load, "patches": n_patch, "tokens": tokens,
                      "results": rows}))


if __name__ == "__main__":
    main()
