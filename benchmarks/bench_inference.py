"""Inference speed of navil on the DESIGN.md bench config (random weights, CPU fp32, 2 threads).

Prints the four figures of DESIGN.md's performance table for navil (train step, prefill, greedy decode,
ViT on a 1024x1024 image) plus decode with the KV cache against re-running the sequence each step, and
one JSON line with everything. Run: .venv/bin/python benchmarks/bench_inference.py
"""
from __future__ import annotations

import json
import resource
import time

import torch
from bench_setup import bench_config, bench_inputs
from torch.utils.flop_counter import FlopCounterMode

from navil.model.navil import NaViL


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_matmul_flops(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, repeat=5)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = NaViL(bench_config()).eval()
    big, big_pixels = torch.tensor([[1, 64, 64]]), torch.randn(4096, 3, 16, 16)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        vit_s = timed(lambda: model.vision_model(big_pixels, big), repeat=2)
    vit_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    train = bench_inputs(model.config, 675)
    pixel_values, grids = train["pixel_values"], train["image_grid_thw"]
    n_patches = pixel_values.shape[0]
    n_ctx = n_patches // 4
    results: dict[str, float] = {"patches": n_patches, "image_tokens": n_ctx}
    model.train()

    def step() -> None:
        out = model(**train, return_logits=False)
        out.loss.backward()

    results["train_step_s"] = timed(step)
    with FlopCounterMode(display=False) as counter:
        step()
    train_flops = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    model.eval()
    peak = peak_matmul_flops()
    results["train_step_pct_of_peak"] = 100 * train_flops / results["train_step_s"] / peak

    prompt = bench_inputs(model.config, 548)["input_ids"]
    with torch.no_grad():
        results["prefill_s"] = timed(lambda: model.generate(input_ids=prompt, pixel_values=pixel_values,
                                                            image_grid_thw=grids, max_new_tokens=1,
                                                            eos_token_id=None))
        new = 32
        cached = timed(lambda: model.generate(input_ids=prompt, pixel_values=pixel_values, image_grid_thw=grids,
                                              max_new_tokens=new + 1, eos_token_id=None), repeat=2)
        results["decode_tokens_per_s"] = new / (cached - results["prefill_s"])
        nocache = timed(lambda: model.generate(input_ids=prompt, pixel_values=pixel_values, image_grid_thw=grids,
                                               max_new_tokens=8, eos_token_id=None, use_cache=False), repeat=1)
        results["decode_no_cache_tokens_per_s"] = 8 / nocache
    results["vit_1024px_s"], results["vit_1024px_extra_peak_rss_mb"] = vit_s, vit_mb

    print(f"config: ViT 256x4, LLM 512x4 (InternLM2 family); {n_patches} patches, {n_ctx} image tokens")
    print(f"train step (fwd+bwd, 675 tokens): {results['train_step_s']:.3f} s "
          f"({train_flops / 1e9:.0f} GFLOP, {results['train_step_pct_of_peak']:.0f}% of fp32 matmul peak {peak / 1e9:.0f} GFLOP/s)")
    print(f"prefill (548 tokens):             {results['prefill_s']:.3f} s")
    print(f"greedy decode, KV cache:          {results['decode_tokens_per_s']:.1f} tokens/s")
    print(f"greedy decode, no cache:          {results['decode_no_cache_tokens_per_s']:.1f} tokens/s "
          f"(cache speed-up {results['decode_tokens_per_s'] / results['decode_no_cache_tokens_per_s']:.1f}x)")
    print(f"ViT on 1024x1024 (4096 patches):  {results['vit_1024px_s']:.3f} s, "
          f"+{results['vit_1024px_extra_peak_rss_mb']:.0f} MB peak RSS")
    print(json.dumps({"benchmark": "inference", "torch": torch.__version__, **results}))


if __name__ == "__main__":
    main()
