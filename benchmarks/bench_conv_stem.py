"""Speed of the ViT's conv stem (`vision.stem = "conv"`) on a quickstart warm-up batch: one conv chain per
image against images batched by size (`ConvStem.max_padding`), forward + backward, fp32.

The batch is the vision warm-up's: `Preset.vision_warmup_images` synthetic scenes of varied size and aspect
ratio at their native resolution. Every setting must give the same features (checked to 1e-5 against the
per-image run); the table gives ms per batch, the groups (conv calls) per batch and the speed-up over one
image at a time, measured in this run.

Run: .venv/bin/python benchmarks/bench_conv_stem.py [--threads 2] [--repeat 5]

Measured 2026-12-05, 24 images (2968 patches), ms per batch: 2 threads: per image 238, equal sizes only 172 (12
calls), max_padding 0.1 166 (11 calls, 1.43x), 0.25 170 (8 calls), one padded batch 185; 1 thread: 312, 246,
244 (1.28x), 259, 358 -- padding costs what it saves in calls beyond ~10%.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from navil.config import VisionConfig
from navil.model import vision
from navil.processing.image import ImageProcessor
from navil.quickstart import Preset, _object_scenes


def _per_image(sizes: list[tuple[int, int]], _: float) -> list[list[int]]:
    return [[i] for i in range(len(sizes))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p = Preset()
    cfg = VisionConfig(**p.vision)
    stem = vision.ConvStem(cfg, merge_size=2).train()
    area = cfg.patch_size ** 2
    processor = ImageProcessor(cfg.patch_size, 2, p.min_dynamic_patch * area, p.max_dynamic_patch * area)
    images, _ = _object_scenes(p, seed=0)(1, 0.6)
    inputs = processor(images, multi_scale=False)

    def step() -> torch.Tensor:
        out = stem(inputs.pixel_values, inputs.image_grid_thw)
        out.square().mean().backward()
        return out.detach()

    settings = {"per image": (_per_image, 0.0), "equal sizes only": (vision.size_groups, 0.0),
                "max_padding 0.1 (default)": (vision.size_groups, 0.1), "max_padding 0.25": (vision.size_groups, 0.25),
                "one padded batch": (vision.size_groups, float("inf"))}
    grouping, reference = vision.size_groups, None
    sizes = [(h, w) for _, h, w in inputs.image_grid_thw.tolist()]
    times: dict[str, list[float]] = {name: [] for name in settings}
    try:
        for _ in range(args.repeat + 1):  # settings interleaved, so a slow spell of the machine hits them all
            for name, (groups_fn, max_padding) in settings.items():
                vision.size_groups, stem.max_padding = groups_fn, max_padding
                t = time.perf_counter()
                out = step()
                times[name].append(time.perf_counter() - t)
                reference = out if reference is None else reference
                torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    finally:
        vision.size_groups = grouping
    rows = {name: {"ms": round(1000 * min(t[1:]), 1), "conv_calls": len(fn(sizes, mp))}
            for (name, (fn, mp)), t in zip(settings.items(), times.values())}
    base = rows["per image"]["ms"]
    print(f"{len(sizes)} images, {sum(h * w for h, w in sizes)} patches, {args.threads} threads")
    for name, r in rows.items():
        print(f"{name:28s} {r['ms']:7.1f} ms  {r['conv_calls']:3d} conv calls  {base / r['ms']:.2f}x")
    print(json.dumps({"threads": args.threads, "images": len(sizes), **rows}))


if __name__ == "__main__":
    main()
