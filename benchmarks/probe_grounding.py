"""Does region grounding make an encoder's shape features readable by soft attention?

The quickstart's encoder (its ViT and connector, fresh) is trained for `--steps` on single-object shape images
with `navil.train.grounding.RegionGrounding` (`--mode`: pooled and/or dense targets, or none), then frozen;
a learned attention-pooling readout (one query, key/value projections over the RMS-normed connector outputs,
the way an LLM's answer token reads visual tokens) is trained on the frozen tokens to name the shape. Prints
the grounding head's pooled accuracy during training and the readout's held-out accuracy every 50 steps.

    python benchmarks/probe_grounding.py --mode both --steps 300
    python benchmarks/probe_grounding.py --mode none --steps 0

Measured (1 thread, 24 images a step, ViT LR 1e-3, connector and head 3e-3, 200 held-out images, chance 0.20):

    --mode none --steps 0      readout at steps 50 / 100 / 150: 0.29 / 0.29 / 0.32
    --mode both --steps 300    pooled train accuracy 0.35 / 0.59 / 0.77 / 0.86 / 0.90 / 0.94 at steps 50..300;
                               readout 0.76 / 0.90 / 0.92
    the same with one head shared by both targets: pooled 0.29 / 0.47 / 0.62 / 0.81 / 0.85 / 0.94; readout 0.59 /
                               0.77 / 0.77

A scratch version of this probe (stop 15; the encoder initialised by `init_from_llm`) gave, for the readout at steps 50 / 100 / 150: no grounding 0.25 /
0.31 / 0.33; pooled only (300 steps) 0.36 / 0.50 / 0.64; dense only (200 steps, LR 3x higher) 0.59 / 0.56 /
0.61, and after 600 dense steps 0.67 / 0.64 at 50 / 100; pooled and dense 0.59 / 0.87 / 0.92. Pooled targets
make the encoder learn shape, dense targets spread it over the object's tokens; only together do they give
visual tokens that a soft readout reads quickly. In the whole quickstart that has not yet paid off (see
`navil.quickstart.Preset.grounding_phases`).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from navil.checkpoint.llm_init import init_weights
from navil.config import LLMConfig, NaViLConfig, VisionConfig
from navil.data.synthetic import SHAPES, make_sample
from navil.inference import processor_for
from navil.model.navil import NaViL
from navil.quickstart import Preset, _navil_kwargs
from navil.train.grounding import RegionGrounding


class AttentionReadout(nn.Module):
    """One learned query over key/value projections of RMS-normed tokens, then a linear classifier."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.key, self.value, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor, image_of_token: torch.Tensor, n: int) -> torch.Tensor:
        h = F.rms_norm(tokens, (tokens.shape[1],))
        score = self.key(h) @ self.query / h.shape[1] ** 0.5
        w = torch.exp(score - score.max())
        den = torch.zeros(n).index_add(0, image_of_token, w)
        pooled = torch.zeros(n, h.shape[1]).index_add(0, image_of_token, self.value(h) * w[:, None])
        return self.out(pooled / den[:, None])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["none", "pooled", "dense", "both"], default="both")
    ap.add_argument("--steps", type=int, default=300, help="grounding steps before the readout")
    ap.add_argument("--readout-steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-3, help="ViT LR; connector and head at 3x")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    p = Preset()
    # only the encoder and connector are used: a one-layer decoder over a tiny vocabulary keeps setup cheap
    llm = LLMConfig(**{**p.llm, "num_hidden_layers": 1}, vocab_size=64)
    kwargs = {k: v for k, v in _navil_kwargs(p).items() if k not in ("template", "system_message")}
    model = NaViL(NaViLConfig(vision=VisionConfig(**p.vision), llm=llm, **kwargs))
    init_weights(model, seed=0, llm=True)
    proc = processor_for(model.config)
    merge = model.config.merge_size

    def samples(split: str, start: int, n: int) -> list:
        return [make_sample(split, start + i, "shape", max_objects=1, object_scale=p.object_scale,
                            canvas_fill=p.canvas_fill) for i in range(n)]

    def encode(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = proc([s.image for s in batch], multi_scale=False)
        grids = x.image_grid_thw.to(torch.int64)
        tokens = model.extract_features(x.pixel_values, grids)
        image_of_token = torch.repeat_interleave(torch.arange(len(batch)), grids.prod(-1) // merge**2)
        return tokens, grids, image_of_token

    weights = {"none": (0.0, 0.0), "pooled": (0.0, 1.0), "dense": (1.0, 0.0), "both": (1.0, 1.0)}[args.mode]
    head = RegionGrounding(model.config.llm.hidden_size, SHAPES, dense_weight=weights[0], pooled_weight=weights[1])
    opt = torch.optim.AdamW([{"params": model.vision_model.parameters(), "lr": args.lr},
                             {"params": [*model.mlp1.parameters(), *head.parameters()], "lr": 3 * args.lr}],
                            betas=(0.9, 0.95), weight_decay=0.01)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = samples("train", step * args.batch, args.batch)
        tokens, grids, _ = encode(batch)
        loss = head(tokens, grids, [s.regions() for s in batch], merge)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"grounding step {step}: pooled train accuracy {head.pop_accuracy():.2f}  "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)

    model.requires_grad_(False)
    val = samples("val", 0, 200)
    labels = torch.tensor([SHAPES.index(s.answer) for s in val])
    with torch.no_grad():
        val_tokens, _, val_images = encode(val)
    readout = AttentionReadout(model.config.llm.hidden_size, len(SHAPES))
    opt = torch.optim.AdamW(readout.parameters(), lr=1e-3)
    for step in range(args.readout_steps + 1):
        if step % 50 == 0:
            with torch.no_grad():
                acc = (readout(val_tokens, val_images, len(val)).argmax(-1) == labels).float().mean().item()
            print(f"readout step {step}: held-out shape accuracy {acc:.3f}", flush=True)
        batch = samples("train", 10**6 + step * args.batch, args.batch)
        with torch.no_grad():
            tokens, _, images = encode(batch)
        target = torch.tensor([SHAPES.index(s.answer) for s in batch])
        loss = F.cross_entropy(readout(tokens, images, len(batch)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
