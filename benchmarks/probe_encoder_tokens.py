"""How fast does a from-scratch encoder make every visual token name its object (colour and shape)?

Finding the object a question names among several ("What color is the star?") needs every token of an object to
carry what the object is. This probe trains an encoder from scratch with a linear head on each visual token:
the target is the colour-shape pair (30 classes) of the object covering the token (at least 30% of its area,
from the drawn shape's mask), else "background". Scenes follow the quickstart's curriculum (1 object, then up to
3 from 20% of the steps, then up to 5 from 50%) at the quickstart's object scale and canvas fill. Every
`--every` steps it prints held-out accuracy on 150 scenes of 1-5 objects, per object token (tokens at least half
covered by the object) and per object (the mean of its tokens' logits), each by the number of objects.

    python benchmarks/probe_encoder_tokens.py --stem conv      # the quickstart's ViT with the conv stem
    python benchmarks/probe_encoder_tokens.py --stem patch     # ... with the official patch embedding
    python benchmarks/probe_encoder_tokens.py --encoder cnn    # a plain CNN at the visual-token stride

Measured (1 thread, 24 images a step, LR 1e-3 (head 3e-3), 400 steps; per object token on 1 / 2 / 3 / 4 / 5
objects, chance 1/30):

    encoder                                               step 250     step 400     time (400 steps)
    ViT, patch embedding (the official one)               0.23-0.42    0.28-0.46    138 s
    ViT + conv stem (`vision.stem = "conv"`, 2 context)   0.53-0.59    0.90-0.95    361 s *
    ViT, stem in place of the patch embedding             0.50-0.61    0.87-1.00    213 s
    ... the same, no context layers                       0.30-0.41    -            102 s for 250
    ... the same, 4 context layers                        0.38-0.48    0.72-0.88    248 s
    CNN (5 stride-2 convs + 2 context convs, 0.17M)       0.52-0.71    0.86-0.99     74 s

(* three processes sharing the two cores; the other rows ran two.) The patch-embedding ViT is no better with box targets
(every token of an object's bounding box): 0.35-0.40 at step 400. The stem wants a moderate LR: at `--lr 3e-3`
(the quickstart's stage-1 LR) the replacing stem reaches only 0.18-0.34 at step 350, against 0.82-0.89 at 1e-3.

A patch embedding sees each 16-px patch alone, so everything an object's shape is made of has to be gathered by
attention, which a small ViT learns slowly; convolutions over the whole image give every patch its
neighbourhood from the first step.
"""
from __future__ import annotations

import argparse
import time
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from navil.checkpoint.llm_init import init_weights
from navil.config import LLMConfig, NaViLConfig, VisionConfig
from navil.data.synthetic import COLORS, SHAPES, make_sample
from navil.data.synthetic._render import draw_shape
from navil.inference import processor_for
from navil.model.navil import NaViL
from navil.quickstart import Preset

N_LABELS = len(COLORS) * len(SHAPES)
BACKGROUND = N_LABELS
CURRICULUM = [(0.0, 1), (0.2, 3), (0.5, 5)]  # (start fraction, max objects)


def scene(split: str, index: int, max_objects: int, p: Preset):
    return make_sample(split, index, "color", max_objects=max_objects, object_scale=p.object_scale,
                       canvas_fill=p.canvas_fill)


def coverage(sample, rows: int, cols: int) -> torch.Tensor:
    """[objects, rows * cols]: the share of each token's area that each object's drawn shape covers."""
    w, h = sample.image.size
    out = []
    for o in sample.meta["objects"]:
        mask = Image.new("L", (w, h), 0)
        draw_shape(ImageDraw.Draw(mask), o["shape"], o["x"], o["y"], o["size"], 255)
        out.append(np.asarray(mask.resize((cols, rows), Image.BOX), dtype=np.float32).reshape(-1) / 255)
    return torch.from_numpy(np.stack(out))


def object_labels(sample) -> torch.Tensor:
    return torch.tensor([COLORS.index(o["color"]) * len(SHAPES) + SHAPES.index(o["shape"])
                         for o in sample.meta["objects"]])


def token_targets(batch, grids: list[list[int]]) -> torch.Tensor:
    targets = []
    for s, (_, h, w) in zip(batch, grids):
        best, owner = coverage(s, h // 2, w // 2).max(0)
        targets.append(torch.where(best >= 0.3, object_labels(s)[owner], torch.full_like(owner, BACKGROUND)))
    return torch.cat(targets)


def quickstart_config(p: Preset, stem: str = "patch", context_layers: int = 2) -> NaViLConfig:
    """The quickstart model's config with the given stem (a 1-layer decoder: only the vision side is used)."""
    vision = VisionConfig(**{**p.vision, "stem": stem, "stem_context_layers": context_layers})
    llm = LLMConfig(**{**p.llm, "num_hidden_layers": 1}, vocab_size=64)
    return NaViLConfig(vision=vision, llm=llm, min_dynamic_patch=p.min_dynamic_patch,
                       max_dynamic_patch=p.max_dynamic_patch, restore_raster_order=p.restore_raster_order)


class ViTEncoder(nn.Module):
    """The quickstart ViT + connector."""

    def __init__(self, p: Preset, stem: str, context_layers: int):
        super().__init__()
        self.model = init_weights(NaViL(quickstart_config(p, stem, context_layers)), seed=0)
        self.processor = processor_for(self.model.config)
        self.hidden = self.model.config.llm.hidden_size

    def groups(self) -> tuple[list, list]:
        return list(self.model.vision_model.parameters()), list(self.model.mlp1.parameters())

    def forward(self, images) -> tuple[torch.Tensor, list[list[int]]]:
        x = self.processor(images, multi_scale=False)
        return self.model.extract_features(x.pixel_values, x.image_grid_thw), x.image_grid_thw.tolist()


class CNNEncoder(nn.Module):
    """Reference: a plain CNN on the image resized to the ViT's token grid (stride 32 = one visual token)."""

    def __init__(self, p: Preset, width: int = 64, context_layers: int = 2):
        super().__init__()
        widths = [3, width // 4, width // 2, width, width, width]
        layers: list[nn.Module] = []
        for a, b in pairwise(widths):
            layers += [nn.Conv2d(a, b, 3, 2, 1), nn.BatchNorm2d(b), nn.GELU()]
        for _ in range(context_layers):
            layers += [nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.grid_of = processor_for(quickstart_config(p))  # the ViT's token grid for each image
        self.hidden = width

    def groups(self) -> tuple[list, list]:
        return list(self.net.parameters()), []

    def forward(self, images) -> tuple[torch.Tensor, list[list[int]]]:
        grids = self.grid_of(images, multi_scale=False).image_grid_thw.tolist()
        feats = []
        for im, (_, h, w) in zip(images, grids):
            x = np.asarray(im.convert("RGB").resize((w * 16, h * 16), Image.BICUBIC), dtype=np.float32) / 255
            feats.append(self.net((torch.from_numpy(x).permute(2, 0, 1)[None] - 0.5) / 0.5)[0].flatten(1).T)
        return torch.cat(feats), grids


@torch.no_grad()
def evaluate(encoder: nn.Module, head: nn.Linear, val: list) -> str:
    encoder.eval()
    tokens: dict[int, list[int]] = {}
    objects: dict[int, list[int]] = {}
    for i in range(0, len(val), 30):
        batch = val[i:i + 30]
        feats, grids = encoder([s.image for s in batch])
        logits = head(feats)
        start = 0
        for s, (_, h, w) in zip(batch, grids):
            n = (h // 2) * (w // 2)
            lg, start = logits[start:start + n], start + n
            cov, labels = coverage(s, h // 2, w // 2), object_labels(s)
            k = len(labels)
            for j in range(k):
                on = cov[j] >= 0.5
                if not on.any():
                    on = cov[j] == cov[j].max()
                t = tokens.setdefault(k, [0, 0])
                t[0] += int((lg[on].argmax(-1) == labels[j]).sum())
                t[1] += int(on.sum())
                o = objects.setdefault(k, [0, 0])
                o[0] += int(lg[on, :N_LABELS].mean(0).argmax() == labels[j])
                o[1] += 1
    encoder.train()
    return f"per token {_by_objects(tokens)}  per object {_by_objects(objects)}"


def _by_objects(hits: dict[int, list[int]]) -> str:
    return " / ".join(f"{hits[k][0] / hits[k][1]:.2f}" for k in sorted(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", choices=("vit", "cnn"), default="vit")
    ap.add_argument("--stem", choices=("patch", "conv"), default="conv")
    ap.add_argument("--context-layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    p = Preset()
    encoder = ViTEncoder(p, a.stem, a.context_layers) if a.encoder == "vit" else CNNEncoder(p, context_layers=a.context_layers)
    head = nn.Linear(encoder.hidden, N_LABELS + 1)
    body, connector = encoder.groups()
    opt = torch.optim.AdamW([{"params": body, "lr": a.lr}, {"params": [*connector, *head.parameters()], "lr": 3 * a.lr}],
                            betas=(0.9, 0.95), weight_decay=0.01)
    class_weight = torch.ones(N_LABELS + 1)
    class_weight[BACKGROUND] = 0.2
    val = [scene("val", 10**5 + i, 5, p) for i in range(150)]
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        max_objects = [n for f, n in CURRICULUM if (step - 1) / a.steps >= f][-1]
        batch = [scene("train", step * a.batch + i, max_objects, p) for i in range(a.batch)]
        feats, grids = encoder([s.image for s in batch])
        loss = F.cross_entropy(head(feats), token_targets(batch, grids), weight=class_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % a.every == 0:
            print(f"step {step:4d} (<= {max_objects} objects) loss {loss.item():.3f}  held-out on 1-5 objects: "
                  f"{evaluate(encoder, head, val)}  {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
