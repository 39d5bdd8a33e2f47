"""Region grounding: a training-only auxiliary loss that teaches the vision side what each image region shows.

The LLM reads visual tokens with soft attention. With an encoder trained from scratch that learns an object's
shape (or a word) slowly: a shape shows in a few boundary tokens, and averaging over tokens dilutes them. When
data rows carry labelled boxes (``"regions": [{"box": [x0, y0, x1, y1] as fractions of the image, "label":
str}, ...]``), two linear heads on the connector outputs (the visual tokens the LLM reads) learn two targets
alongside the language-model loss:

- pooled: the max over each region's visual tokens predicts the region's label (max pooling is what the
  encoder learns shape features under quickly),
- dense: every visual token whose merge unit's centre lies in a region predicts that region's label, every
  other token "background" (down-weighted), which spreads the feature to every token the LLM may attend to.

Measured on single-object shape with the quickstart's encoder (`benchmarks/probe_grounding.py`: 300 steps of
24 images, then a learned attention-pooling readout trained on the frozen connector outputs), readout accuracy
at readout steps 50 / 100 / 150 (chance 0.20): no grounding 0.29 / 0.29 / 0.32, pooled and dense 0.76 / 0.90
/ 0.92 (the benchmark's docstring has the single-target rows).

Each `RegionGrounding` predicts one field of the regions (`key`, default "label"); `GroundingHeads` adds up
several. `EmbeddingGrounding` has no heads: it pulls each token onto the LLM's input embedding of the word that
names its region (the quickstart's default, "red_star"), so the LLM reads the token like that word.

The heads are not part of the model: they are neither saved nor used at inference. Images without regions, and
samples with several images or scales, are left out of the loss.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Regions = list[dict] | None


def _class_weight(n_labels: int, background_weight: float) -> torch.Tensor:
    """Cross-entropy weights over `n_labels` classes + background (the last class, down-weighted)."""
    weight = torch.ones(n_labels + 1)
    weight[n_labels] = background_weight
    return weight


def head_param_groups(grounding: nn.Module, lr: float, lr_mult: float) -> list[dict[str, Any]]:
    """The AdamW group of a grounding module's own heads at `lr * lr_mult`, without weight decay (no group for
    a module without parameters, such as `EmbeddingGrounding`)."""
    heads = list(grounding.parameters())
    return [{"name": "grounding", "params": heads, "weight_decay": 0.0, "lr": lr * lr_mult, "base_lr": lr * lr_mult,
             "lr_mult": lr_mult}] if heads else []


def region_targets(grids: torch.Tensor, regions: Sequence[Regions], merge: int,
                   label_of: Callable[[dict], str | None], index: dict[str, int], background: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets for the visual tokens of images with `grids` [N, 3] (patches; tokens in raster order per image):
    (class per token [U]: `index[label_of(region)]` of the region whose box holds the centre of the token's
    merge unit, `background` outside every region, -100 for images without labelled regions; the token index
    and region number of each (token, region) membership; the class of each region). Regions whose
    `label_of` is None are left out; a label missing from `index` raises KeyError."""
    dense, members, owners, region_labels = [], [], [], []
    offset = n_regions = 0
    for (t, h, w), all_regions in zip(grids.tolist(), regions):
        image_regions = [r for r in all_regions or () if label_of(r) is not None]
        rows, cols = h // merge, w // merge
        n = t * rows * cols
        if t != 1 or not image_regions:
            dense.append(torch.full((n,), -100))
            offset += n
            continue
        cy = ((torch.arange(rows) + 0.5) / rows).repeat_interleave(cols)
        cx = ((torch.arange(cols) + 0.5) / cols).repeat(rows)
        boxes = torch.tensor([r["box"] for r in image_regions], dtype=torch.float32)  # [R, 4]
        inside = ((cx >= boxes[:, :1]) & (cx <= boxes[:, 2:3]) & (cy >= boxes[:, 1:2]) & (cy <= boxes[:, 3:4]))
        # a region smaller than a token still owns the token under its centre
        centre_token = (((boxes[:, 1] + boxes[:, 3]) / 2 * rows).long().clamp(0, rows - 1) * cols
                        + ((boxes[:, 0] + boxes[:, 2]) / 2 * cols).long().clamp(0, cols - 1))
        inside[torch.arange(len(boxes)), centre_token] = True
        ids = torch.tensor([index[label_of(r)] for r in image_regions])
        label = torch.full((n,), background)
        region, token = inside.nonzero(as_tuple=True)
        label[token] = ids[region]
        dense.append(label)
        members.append(token + offset)
        owners.append(region + n_regions)
        region_labels.append(ids)
        n_regions += len(ids)
        offset += n
    empty = torch.zeros(0, dtype=torch.long)
    return (torch.cat(dense), torch.cat(members) if members else empty, torch.cat(owners) if owners else empty,
            torch.cat(region_labels) if region_labels else empty)


class RegionGrounding(nn.Module):
    """A linear head over visual tokens trained on labelled regions (see module docstring)."""

    def __init__(self, hidden_size: int, labels: Sequence[str], background_weight: float = 0.2,
                 dense_weight: float = 1.0, pooled_weight: float = 1.0, key: str = "label") -> None:
        super().__init__()
        self.key = key  # the region field this head predicts (regions without it are left out)
        self.dense_weight, self.pooled_weight = dense_weight, pooled_weight
        self.labels = list(dict.fromkeys(labels))
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.background = len(self.labels)
        # one head per target: a single shared head made the probe's soft readout reach 0.77 instead of 0.92
        # (benchmarks/probe_grounding.py)
        self.dense_head = nn.Linear(hidden_size, len(self.labels) + 1)
        self.pooled_head = nn.Linear(hidden_size, len(self.labels))
        self.register_buffer("class_weight", _class_weight(len(self.labels), background_weight), persistent=False)
        self.hits = self.seen = 0

    def targets(self, grids: torch.Tensor, regions: Sequence[Regions], merge: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`region_targets` of this head's field."""
        return region_targets(grids, regions, merge, lambda r: r.get(self.key), self.index, self.background)

    def forward(self, tokens: torch.Tensor, grids: torch.Tensor, regions: Sequence[Regions], merge: int
                ) -> torch.Tensor:
        """The grounding loss (dense + pooled) for visual tokens [U, H] of images with `grids` and `regions`."""
        dense, members, owners, region_labels = (x.to(tokens.device) for x in self.targets(grids, regions, merge))
        if not len(region_labels):
            return tokens.sum() * 0.0
        tokens = tokens.float()
        logits = self.dense_head(tokens)
        known = dense != -100
        dense_loss = F.cross_entropy(logits[known], dense[known], weight=self.class_weight)
        feats = tokens[members]
        pooled = torch.full((len(region_labels), feats.shape[1]), float("-inf"), device=tokens.device)
        pooled = pooled.scatter_reduce(0, owners[:, None].expand_as(feats), feats, "amax")
        region_logits = self.pooled_head(pooled)
        with torch.no_grad():
            self.hits += (region_logits.argmax(-1) == region_labels).sum().item()
            self.seen += len(region_labels)
        return self.dense_weight * dense_loss + self.pooled_weight * F.cross_entropy(region_logits, region_labels)

    def pop_accuracy(self) -> float | None:
        """Training accuracy of the pooled region labels since the last call (None if no region was seen)."""
        acc = self.hits / self.seen if self.seen else None
        self.hits = self.seen = 0
        return acc


class GroundingHeads(nn.ModuleList):
    """Several `RegionGrounding` heads (e.g. one per region field) whose losses add up."""

    def forward(self, tokens: torch.Tensor, grids: torch.Tensor, regions: Sequence[Regions], merge: int
                ) -> torch.Tensor:
        return sum(head(tokens, grids, regions, merge) for head in self)

    def pop_accuracy(self) -> str | None:
        """Each head's pooled training accuracy since the last call, as "key acc ..." (None if none seen)."""
        parts = [(head.key, head.pop_accuracy()) for head in self]
        return "  ".join(f"{k} {a:.2f}" for k, a in parts if a is not None) or None


class EmbeddingGrounding(nn.Module):
    """Pulls each visual token onto the LLM's input embedding of the word that names what the token shows.

    `label_of(region)` names a region by a word of the vocabulary (`word_ids`: word -> token id; the quickstart
    names each object by one compound word, "red_star", that its text LLM learnt from scene descriptions with
    one such word per object); the other tokens of a labelled image are pulled onto `background_id`. The loss
    is cross-entropy over `scale` x the cosine similarities between a token and those words' embeddings (read
    from `embedding` at each call, as targets without gradient), the background class weighted by
    `background_weight`. A visual token that lies on its object's word is read by the LLM like that word.
    """

    def __init__(self, embedding: nn.Embedding, word_ids: dict[str, int], background_id: int,
                 label_of: Callable[[dict], str | None], scale: float = 10.0, background_weight: float = 0.2) -> None:
        super().__init__()
        self._embedding = (embedding,)  # a tuple: the LLM's table is read, never registered (or trained) here
        self.index = {word: i for i, word in enumerate(word_ids)}
        self.background = len(self.index)
        self.register_buffer("token_ids", torch.tensor([*word_ids.values(), background_id]), persistent=False)
        self.label_of, self.scale = label_of, scale
        self.register_buffer("class_weight", _class_weight(len(self.index), background_weight), persistent=False)
        self.hits = self.seen = 0

    def forward(self, tokens: torch.Tensor, grids: torch.Tensor, regions: Sequence[Regions], merge: int
                ) -> torch.Tensor:
        """The loss for visual tokens [U, H] of images with `grids` and `regions`."""
        dense = region_targets(grids, regions, merge, self.label_of, self.index, self.background)[0].to(tokens.device)
        known = dense != -100
        if not known.any():
            return tokens.sum() * 0.0
        words = F.normalize(self._embedding[0].weight[self.token_ids].detach().float(), dim=-1)
        logits = self.scale * F.normalize(tokens[known].float(), dim=-1) @ words.T
        target = dense[known]
        with torch.no_grad():
            on_object = target != self.background
            self.hits += (logits[on_object].argmax(-1) == target[on_object]).sum().item()
            self.seen += int(on_object.sum())
        return F.cross_entropy(logits, target, weight=self.class_weight)

    def pop_accuracy(self) -> str | None:
        """Training accuracy of the object tokens' nearest word since the last call (None if none seen)."""
        acc = self.hits / self.seen if self.seen else None
        self.hits = self.seen = 0
        return None if acc is None else f"word {acc:.2f}"


class RegionTable:
    """The `regions` of every row of JSONL files, looked up by a pack's (source, item) ids."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.rows: list[list[Regions]] = []
        for path in paths:
            with open(path, encoding="utf-8") as f:
                self.rows.append([json.loads(line).get("regions") for line in f if line.strip()])

    def for_pack(self, pack: Any) -> list[Regions]:
        """One entry per image row of `pack.image_grid_thw` (None for samples with several images/scales)."""
        out: list[Regions] = []
        for (source, item), n_rows in zip(pack.sample_ids, pack.grid_rows_per_sample):
            out += [self.rows[source][item]] if n_rows == 1 else [None] * n_rows
        return out


@contextmanager
def capture_visual_tokens(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, `store["tokens"]` holds the connector outputs of the model's latest forward."""
    store: dict[str, torch.Tensor] = {}
    handle = model.mlp1.register_forward_hook(lambda _m, _i, out: store.__setitem__("tokens", out))
    try:
        yield store
    finally:
        handle.remove()
