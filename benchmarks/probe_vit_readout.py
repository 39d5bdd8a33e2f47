"""How fast does a from-scratch encoder learn object shape under different readouts of its features?

The quickstart's diagnosis experiment: a fresh encoder plus a linear head learns the shape of the single
object in synthetic images, reading the encoder's feature map by max pooling, mean pooling or attention
pooling (a learned query over projected keys, the way an LLM's answer token reads visual tokens). The encoder
is the quickstart's tiny ViT (`--encoder vit`) or, as a reference point, a small CNN (`--encoder cnn`: three
3x3/5x5 stride-2 ReLU convs on the image resized to 160x160, a 20x20 feature map). Prints held-out accuracy
every `--every` steps, one line per readout.

    python benchmarks/probe_vit_readout.py --steps 300 --readouts max mean attn
    python benchmarks/probe_vit_readout.py --encoder cnn --steps 900 --every 150 --readouts mean max

Measured with this script on 2 CPU cores (1 thread, object_scale 2, lr 1e-3, 16 images/step, chance 0.20),
held-out shape accuracy:

    encoder  readout   step 150   step 300   later
    cnn      max       0.78       0.99       1.00 at 450
    cnn      mean      0.26       0.33       0.75 at 600, 0.81 at 750, 0.88 at 900
    vit      max       -          0.61
    vit      mean      -          0.25       0.35 at 1500 *
    vit      attn      -          0.21       0.28 at 900; 0.65 at 1500 *

(* from an earlier version of the probe with untruncated normal(0.02) init.)

A soft readout (mean or attention pooling, which is how an LLM reads visual tokens) needs ~5x the images of
max pooling even with a CNN, and a ViT trained from scratch under a soft readout is slower again by a large
factor (variants of the ViT measured with copies of this script, none closing the gap at 300-600 steps: 8 layers, width 256, ReLU,
init std 0.06, 8-px patches, 4-patch windows, 64 images/step, sharper attention pooling; a per-patch conv
stem got mean 0.57 / attention 0.50 at 600).

With the object dominating its image (canvases capped at 10240 px^2, object ~33% of it, the setting
`--canvas-fill` approximates), stop 10 measured: attention 0.29 / 0.47 / 0.43 / 0.38 at steps 200 / 300 /
500 / 600, max 0.50 / 0.81 at 200 / 300; a 16- or 32-head attention readout 0.29 at 200; LayerScale 1.0
with init std 0.05 0.46 at 300; 8-px patches at native size (objects ~6 patches across) 0.59 at 300.
Stop 11, `--canvas-fill 0.5`, attention readout, steps 100 / 200 / 300 / 400 / 500 / 600: the probe's ViT
0.34 / 0.47 / 0.51 / 0.59 / 0.63 / 0.76; a per-patch conv stem instead of the linear patch embedding (3x3
stride-2 GELU convs 3->32->64->128 inside each 16-px patch, then a linear layer; PyTorch default init; 1.6x
the probe's step time) 0.31 / 0.38 / 0.58 / 0.64 / 0.76 / 0.89; the quickstart's own ViT init (no re-init)
0.30 / 0.47 / 0.49 / 0.58 / 0.66 / 0.72, and read through the connector (2x2 merge + MLP) 0.33 / 0.42 / 0.50 /
0.55 / 0.60 / 0.51. The whole model reaches 0.44-0.48 at step 600 on the same images
(probe_full_model_shape.py), so the decoder's readout costs about another factor of two.
Stop 13, `--canvas-fill 0.5`, the same 16-image steps for every row, held-out shape at steps 100 / 200 / 300:

    encoder  readout                                  step 100   step 200   step 300
    vit      max                                      0.38       0.74       0.97
    vit      attn                                     0.34       0.45       0.50
    vit      attn, scores x8 (sharper softmax)        0.32       0.45       0.51
    vit      attn, 8 heads (one query per head)       0.32       0.38       0.50
    cnn      max                                      0.44       0.99       1.00
    cnn      attn                                     0.46       0.57       0.70
    cnn      mean                                     0.44       0.55       0.51

(The two variant rows come from a scratch copy of `Readout`: the scores multiplied by 8, or eight queries over
16-dim slices.) So the tiny ViT learns shape as fast as the CNN when its features are max-pooled: the encoder is not the
bottleneck, the soft readout is. Neither a sharper softmax nor more heads make attention pooling behave
like max pooling.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from navil.config import VisionConfig
from navil.data.synthetic import SHAPES, make_sample
from navil.model.vision import VisionEncoder
from navil.processing.image import ImageProcessor
from navil.quickstart import Preset

CNN_SIDE = 160


class Readout(nn.Module):
    """Pool the feature vectors of each image (segment) into one vector and classify it."""

    def __init__(self, kind: str, dim: int, classes: int) -> None:
        super().__init__()
        self.kind = kind
        self.head = nn.Linear(dim, classes)
        if kind == "attn":
            self.query = nn.Parameter(torch.zeros(dim))
            self.key = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
        index = seg[:, None].expand_as(h)
        if self.kind == "max":
            pooled = torch.full((n, h.shape[1]), float("-inf")).scatter_reduce(0, index, h, "amax")
        else:
            w = torch.ones(len(h))
            if self.kind == "attn":
                score = self.key(h) @ self.query / h.shape[1] ** 0.5
                w = torch.exp(score - score.max())
            den = torch.zeros(n).index_add(0, seg, w)
            pooled = torch.zeros(n, h.shape[1]).index_add(0, seg, h * w[:, None]) / den[:, None]
        return self.head(pooled)


class ViTFeatures(nn.Module):
    """The quickstart's ViT (trunc-normal 0.02 init) on its native-resolution patches."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        config = VisionConfig(**preset.vision)
        self.dim = config.hidden_size
        self.vit = VisionEncoder(config)
        for p in self.vit.parameters():
            if p.dim() >= 2:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        self.proc = ImageProcessor(min_pixels=preset.min_dynamic_patch * 256,
                                   max_pixels=preset.max_dynamic_patch * 256)

    def forward(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proc(images, multi_scale=False)
        seg = torch.repeat_interleave(torch.arange(len(images)), x.image_grid_thw.prod(-1))
        return self.vit(x.pixel_values, x.image_grid_thw), seg


class CNNFeatures(nn.Module):
    """A small CNN reference encoder: 160x160 image -> 20x20 map of 128 ReLU features (PyTorch default init)."""

    dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(64, self.dim, 3, 2, 1), nn.ReLU())

    def forward(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.stack([np.asarray(im.resize((CNN_SIDE, CNN_SIDE)), dtype=np.float32) for im in images])
        h = self.net(torch.from_numpy(x / 127.5 - 1).permute(0, 3, 1, 2))  # [n, C, 20, 20]
        seg = torch.arange(len(images)).repeat_interleave(h.shape[2] * h.shape[3])
        return h.flatten(2).transpose(1, 2).reshape(-1, self.dim), seg


def batch(split: str, start: int, n: int, object_scale: float, canvas_fill: float | None
          ) -> tuple[list[Image.Image], torch.Tensor]:
    samples = [make_sample(split, i, "shape", max_objects=1, object_scale=object_scale, canvas_fill=canvas_fill)
               for i in range(start, start + n)]
    return [s.image for s in samples], torch.tensor([SHAPES.index(s.answer) for s in samples])


def run(encoder: str, kind: str, steps: int, every: int, lr: float, object_scale: float, seed: int,
        canvas_fill: float | None = None, batch_size: int = 16) -> None:
    torch.manual_seed(seed)
    features = ViTFeatures(Preset()) if encoder == "vit" else CNNFeatures()
    readout = Readout(kind, features.dim, len(SHAPES))
    val_images, val_labels = batch("val", 0, 200, object_scale, canvas_fill)
    opt = torch.optim.AdamW([*features.parameters(), *readout.parameters()], lr=lr)
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                h, seg = features(val_images)
                acc = (readout(h, seg, len(val_images)).argmax(-1) == val_labels).float().mean().item()
            print(f"{encoder} {kind:5s} step {step:5d}  val shape accuracy {acc:.3f}", flush=True)
        images, labels = batch("train", step * batch_size, batch_size, object_scale, canvas_fill)
        h, seg = features(images)
        loss = F.cross_entropy(readout(h, seg, batch_size), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", choices=["vit", "cnn"], default="vit")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50, help="evaluate every this many steps")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--object-scale", type=float, default=Preset().object_scale)
    ap.add_argument("--canvas-fill", type=float, default=None, help="None: canvases drawn independently")
    ap.add_argument("--readouts", nargs="+", default=["max", "mean", "attn"], choices=["max", "mean", "attn"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for kind in args.readouts:
        run(args.encoder, kind, args.steps, args.every, args.lr, args.object_scale, args.seed, args.canvas_fill)


if __name__ == "__main__":
    main()
