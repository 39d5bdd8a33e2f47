"""Greedy packing of tokenised samples into ``Pack``s (one ``[1, T]`` token stream + ``cu_seqlens``).

Samples are taken in stream order; a sample that would push the current pack over ``max_tokens`` tokens or
``max_patches`` image patches closes it and starts the next one (no reordering, so pack boundaries depend
only on the sample stream — which is what makes the loader's rank split and resume exact). Attention never
crosses samples and positions restart per sample: the model does both from ``cu_seqlens``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from navil.errors import NavilError


@dataclass
class PackedSample:
    """A sample ready to pack: tokens, labels, its decoded images and their (t, h, w) grids per scale."""

    input_ids: list[int]
    labels: list[int]
    num_loss_tokens: int
    images: list[Any]  # decoded RGB PIL images (dropped once the pack is built or skipped)
    grids: list[list[tuple[int, int, int]]]  # per image: its scales' grids, smallest first
    source: int = 0
    index: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_patches(self) -> int:
        return sum(t * h * w for g in self.grids for t, h, w in g)


@dataclass
class Pack:
    """One packed training sequence (see module docstring)."""

    input_ids: torch.Tensor  # int64 [1, T]
    labels: torch.Tensor  # int64 [1, T]
    cu_seqlens: torch.Tensor  # int64 [D + 1]
    pixel_values: torch.Tensor | None  # float32 [N, 3, p, p]
    image_grid_thw: torch.Tensor | None  # int64 [S, 3]
    num_samples: int
    num_loss_tokens: int  # official rule, summed over samples (what model(...).num_loss_tokens reports)
    num_patches: int
    sample_ids: list[tuple[int, int]] = field(default_factory=list)  # (source index, item index) per sample
    grid_rows_per_sample: list[int] = field(default_factory=list)  # rows of image_grid_thw per sample

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for ``NaViL.forward``."""
        return {"input_ids": self.input_ids, "labels": self.labels, "cu_seqlens": self.cu_seqlens,
                    "pixel_values": self.pixel_values, "image_grid_thw": self.image_grid_thw}


class PackBuilder:
    """Accumulates samples for one pack under the token / patch limits."""

    def __init__(self, max_tokens: int, max_patches: int | None) -> None:
        self.max_tokens = max_tokens
        self.max_patches = max_patches
        self.samples: list[PackedSample] = []
        self.tokens = 0
        self.patches = 0

    def fits_alone(self, s: PackedSample) -> bool:
        return s.num_tokens <= self.max_tokens and (
            self.max_patches is None or s.num_patches <= self.max_patches
        )

    def fits(self, s: PackedSample) -> bool:
        return self.tokens + s.num_tokens <= self.max_tokens and (
            self.max_patches is None or self.patches + s.num_patches <= self.max_patches
        )

    def add(self, s: PackedSample) -> None:
        self.samples.append(s)
        self.tokens += s.num_tokens
        self.patches += s.num_patches

    def take(self) -> list[PackedSample]:
        out, self.samples, self.tokens, self.patches = self.samples, [], 0, 0
        return out


def collate(samples: Sequence[PackedSample], processor: Any = None, multi_scale: bool = True) -> Pack:
    """Build a Pack from samples; images (if any) go through ``processor`` in sample order."""
    if not samples:
        raise NavilError("cannot build a pack from zero samples")
    ids = [i for s in samples for i in s.input_ids]
    labels = [lab for s in samples for lab in s.labels]
    lens = torch.tensor([s.num_tokens for s in samples], dtype=torch.int64)
    cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0))
    images = [im for s in samples for im in s.images]
    expected = [list(r) for s in samples for g in s.grids for r in g]
    pixel_values = image_grid_thw = None
    if expected:
        if processor is None:
            raise NavilError("samples with images need an image processor")
        if len(images) != sum(len(s.grids) for s in samples):
            raise NavilError("internal: pack images were dropped before collation")
        out = processor(images, multi_scale=multi_scale)
        pixel_values, image_grid_thw = out.pixel_values, out.image_grid_thw
        if image_grid_thw.tolist() != expected:
            raise NavilError(
                f"internal: processor grids {image_grid_thw.tolist()} differ from the predicted {expected}"
            )
    return Pack(
        input_ids=torch.tensor([ids], dtype=torch.int64),
        labels=torch.tensor([labels], dtype=torch.int64),
        cu_seqlens=cu,
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        num_samples=len(samples),
        num_loss_tokens=sum(s.num_loss_tokens for s in samples),
        num_patches=0 if pixel_values is None else int(pixel_values.shape[0]),
        sample_ids=[(s.source, s.index) for s in samples],
        grid_rows_per_sample=[sum(len(g) for g in s.grids) for s in samples],
    )
