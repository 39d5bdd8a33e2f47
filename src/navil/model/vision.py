"""Native-resolution vision encoder: conv patch embed, 2D RoPE, window/full attention blocks, LayerScale.

Input is a pack of patch sequences: `pixel_values [N, 3, p, p]` holding every scale of every image, with
`grid_thw [S, 3]` giving each scale's (t, h, w) in patches. Patches arrive in 2x2 merge-unit raster order.
Before the blocks the merge units are permuted into window order (see `plan_windows`); the output keeps
that window-major order, as the official model does (spec Q1).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, pairwise

import torch
import torch.nn.functional as F
from torch import nn

from navil.config import VisionConfig
from navil.model.attention import apply_rotary, rope_inv_freq, varlen_attention
from navil.model.layers import RMSNorm, activation
from navil.processing.image import from_patches, to_patches


@dataclass(frozen=True)
class PatchPlan:
    """Host-side layout of a pack of scales: positions, window permutation and attention segments."""

    positions: torch.Tensor      # [N, 2] (row, col) per patch, in window order
    window_index: torch.Tensor   # [N / m^2] merge-unit permutation (raster -> window order)
    full_cu: torch.Tensor        # [S+1] one segment per (scale, t)
    full_lens: tuple[int, ...]
    window_cu: torch.Tensor      # window segments
    window_lens: tuple[int, ...]


@lru_cache(maxsize=64)
def plan_windows(grids: tuple[tuple[int, int, int], ...], merge: int, window_size: int) -> PatchPlan:
    """Positions, window permutation (Qwen2.5-VL `get_window_index` semantics) and segments for a pack.

    Windows are `window_size // merge` merge units on a side; the grid is padded by `ws - n % ws` (a full
    extra window when already divisible, as the official code does); empty windows are dropped.
    """
    ws = window_size // merge
    unit = merge * merge
    positions, window_index, window_lens, full_lens = [], [], [], []
    offset = 0
    for t, h, w in grids:
        gh, gw = h // merge, w // merge
        # patch (row, col) in merge-unit raster order
        rows = torch.arange(h).view(gh, merge, 1, 1).expand(gh, merge, gw, merge).permute(0, 2, 1, 3)
        cols = torch.arange(w).view(1, 1, gw, merge).expand(gh, merge, gw, merge).permute(0, 2, 1, 3)
        pos = torch.stack((rows.reshape(-1), cols.reshape(-1)), dim=-1).view(gh * gw, unit, 2).repeat(t, 1, 1)
        units = torch.arange(t * gh * gw).view(t, gh, gw)
        pad_h, pad_w = ws - gh % ws, ws - gw % ws
        padded = F.pad(units, (0, pad_w, 0, pad_h), value=-1)
        nwh, nww = (gh + pad_h) // ws, (gw + pad_w) // ws
        windows = padded.view(t, nwh, ws, nww, ws).permute(0, 1, 3, 2, 4).reshape(t * nwh * nww, ws * ws)
        valid = windows >= 0
        idx = windows[valid]
        positions.append(pos[idx].view(-1, 2))
        window_index.append(idx + offset)
        counts = valid.sum(1)
        window_lens.extend(int(c) * unit for c in counts if c > 0)
        full_lens.extend([h * w] * t)
        offset += t * gh * gw

    def cu(lens: list[int]) -> torch.Tensor:
        return F.pad(torch.tensor(lens, dtype=torch.int64).cumsum(0), (1, 0))

    return PatchPlan(torch.cat(positions), torch.cat(window_index), cu(full_lens), tuple(full_lens),
                     cu(window_lens), tuple(window_lens))


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        c = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.qkv = nn.Linear(c, 3 * c, bias=cfg.qkv_bias)
        self.qk_normalization = cfg.qk_normalization
        if cfg.qk_normalization:  # full-width RMSNorm before the head split (the intent of spec B1)
            self.q_norm = RMSNorm(c, cfg.layer_norm_eps)
            self.k_norm = RMSNorm(c, cfg.layer_norm_eps)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu: torch.Tensor,
                lens: tuple[int, ...]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, -1).unbind(1)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)
        shape = (n, self.num_heads, self.head_dim)
        q, k = apply_rotary(q.reshape(shape), cos, sin), apply_rotary(k.reshape(shape), cos, sin)
        out = varlen_attention(q, k, v.reshape(shape), cu, causal=False, seqlens=list(lens))
        return self.proj(out.reshape(n, -1))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Module):
    """Pre-norm block with LayerScale: x + ls1*attn(norm1(x)); x + ls2*mlp(norm2(x))."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        norm = (lambda: RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)) if cfg.norm_type == "rms_norm" else \
            (lambda: nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps))
        self.norm1, self.norm2 = norm(), norm()
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)
        self.ls1 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layer_scale_init))
        self.ls2 = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layer_scale_init))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu: torch.Tensor,
                lens: tuple[int, ...]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, cu, lens) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class _PatchProjection(torch.autograd.Function):
    """The patch embedding's conv on [N, C, p, p] patches -> [N, hidden]; its gradients as the matmuls they
    are (the conv's own backward is ~6x slower on CPU)."""

    @staticmethod
    def forward(ctx, patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(patches, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(patches, weight, bias, stride=weight.shape[-2:]).flatten(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        patches, weight = (t.to(grad.dtype) for t in ctx.saved_tensors)  # bf16 under autocast, like the forward
        grad_patches = (grad @ weight.flatten(1)).view_as(patches) if ctx.needs_input_grad[0] else None
        grad_weight = (grad.t() @ patches.flatten(1)).view_as(weight) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_patches, grad_weight, grad_bias


class PatchEmbedding(nn.Module):
    """Conv2d with kernel = stride = patch over each [3, p, p] patch. The forward is the official conv (a
    flattened matmul drifts up to ~1e-4 from the official ViT outputs, the conformance tolerance); the backward
    is the matmul (`_PatchProjection`)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_size, self.channels = cfg.patch_size, cfg.num_channels
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p, conv = self.patch_size, self.patch_embedding
        x = pixel_values.reshape(-1, self.channels, p, p).to(conv.weight.dtype)
        return _PatchProjection.apply(x, conv.weight, conv.bias)


class ConvStem(nn.Module):
    """A convolutional stem added to the patch embedding (`vision.stem = "conv"`, not official): each image is
    reassembled from its patches, halved by log2(p) stride-2 3x3 convolutions (channels doubling up to the
    hidden size, channel RMSNorm + activation after each), mixed by `stem_context_layers` 3x3 convolutions on
    the patch grid and projected by a 1x1 convolution; returns one vector per patch in the input order.
    `init_weights` zeroes the projection, so a fresh encoder starts as the official one and the stem grows in
    (in place of the patch embedding, the whole quickstart never left the image-blind plateau).

    Unlike a patch embedding, it sees across patch borders, and that is what a small ViT trained from scratch
    lacks: measured on the quickstart's synthetic scenes (per-token colour + shape labels, 400 steps of 24
    images), the ViT reaches 0.90-0.95 per object token with this stem against 0.28-0.46 with the patch
    embedding alone (benchmarks/probe_encoder_tokens.py)."""

    max_padding = 0.1  # images share one conv call while padding adds at most this share (benchmarks/bench_conv_stem)

    def __init__(self, cfg: VisionConfig, merge_size: int):
        super().__init__()
        self.patch_size, self.channels, self.merge_size = cfg.patch_size, cfg.num_channels, merge_size
        n = cfg.patch_size.bit_length() - 1
        widths = [cfg.num_channels] + [max(16, cfg.hidden_size >> (n - 1 - i)) for i in range(n)]
        convs = [nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in pairwise(widths)]
        convs += [nn.Conv2d(widths[-1], widths[-1], 3, padding=1) for _ in range(cfg.stem_context_layers)]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(RMSNorm(c.out_channels, cfg.layer_norm_eps) for c in convs)
        self.act = activation(cfg.hidden_act)
        self.proj = nn.Conv2d(widths[-1], cfg.hidden_size, 1)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        p, m = self.patch_size, self.merge_size
        patches = pixel_values.reshape(-1, self.channels, p, p).to(self.proj.weight.dtype)
        grids = [(int(t), int(h), int(w)) for t, h, w in grid_thw.tolist()]
        if any(t != 1 for t, _, _ in grids):
            raise ValueError(f"the conv stem takes still images (t=1), got grids {grids}")
        starts = [0, *accumulate(h * w for _, h, w in grids)]
        images = [from_patches(patches[starts[i]:starts[i + 1]], h, w, m) for i, (_, h, w) in enumerate(grids)]
        out: list[torch.Tensor | None] = [None] * len(grids)
        for group in size_groups([(h, w) for _, h, w in grids], self.max_padding):
            features = self._run([images[i] for i in group])  # [b, hidden, H/p, W/p]
            for b, i in enumerate(group):
                _, h, w = grids[i]
                # [hidden, h, w] -> one vector per patch, back in merge-unit raster order
                out[i] = to_patches(features[b, :, :h, :w].permute(1, 2, 0), 1, m).flatten(1)
        return torch.cat(out)

    def _run(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The stem over images [c, H_i, W_i] zero-padded to one batch; the padding is zeroed again after every
        layer, so each image's features equal those of the image alone (a conv reads zeros past its border)."""
        height, width = max(x.shape[1] for x in images), max(x.shape[2] for x in images)
        padded = any(x.shape[1:] != (height, width) for x in images)
        x = torch.stack([F.pad(im, (0, width - im.shape[2], 0, height - im.shape[1])) for im in images])
        x = x.contiguous(memory_format=torch.channels_last)  # makes the channel norm's movedim a free view
        masks: dict[tuple[int, int], torch.Tensor] = {}  # one per resolution
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x).movedim(1, -1)).movedim(-1, 1))
            if padded:
                size = tuple(x.shape[-2:])
                if size not in masks:
                    masks[size] = _valid_mask(images, size, height // size[0], x)
                x = x * masks[size]
        return self.proj(x)


def _valid_mask(images: list[torch.Tensor], size: tuple[int, int], stride: int, like: torch.Tensor) -> torch.Tensor:
    """[b, 1, *size] ones over each image's region at `stride` (its top-left corner), zeros over the padding."""
    mask = like.new_zeros(len(images), 1, *size)
    for b, im in enumerate(images):
        mask[b, :, :im.shape[1] // stride, :im.shape[2] // stride] = 1
    return mask


def size_groups(sizes: list[tuple[int, int]], max_padding: float) -> list[list[int]]:
    """Indices of `sizes` (h, w) in batches whose padded canvas (max h x max w per image) exceeds the images' own
    area by at most `max_padding` of it: largest first, each image joins the current batch while that holds."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][0] * sizes[i][1], sizes[i]), reverse=True)
    groups: list[list[int]] = []
    for i in order:
        if groups:
            g = groups[-1] + [i]
            canvas = max(sizes[j][0] for j in g) * max(sizes[j][1] for j in g) * len(g)
            if canvas <= (1 + max_padding) * sum(sizes[j][0] * sizes[j][1] for j in g):
                groups[-1] = g
                continue
        groups.append([i])
    return groups


class VisionEncoder(nn.Module):
    """`vision_model` of NaViL. Returns features [N, C] in window-major merge-unit order."""

    def __init__(self, cfg: VisionConfig, merge_size: int = 2):
        super().__init__()
        self.cfg, self.merge_size = cfg, merge_size
        self.embeddings = PatchEmbedding(cfg)
        self.conv_stem = ConvStem(cfg, merge_size) if cfg.stem == "conv" else None
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.num_hidden_layers))
        full = cfg.fullatt_block_indexes
        self.full_attention = [full is None or i in full for i in range(cfg.num_hidden_layers)]

    def plan(self, grid_thw: torch.Tensor) -> PatchPlan:
        grids = tuple(tuple(int(v) for v in row) for row in grid_thw.tolist())
        for t, h, w in grids:
            if h % self.merge_size or w % self.merge_size or min(t, h, w) <= 0:
                raise ValueError(f"image grid (t={t}, h={h}, w={w}) must be positive multiples of the merge size")
        return plan_windows(grids, self.merge_size, self.cfg.window_size)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        plan = self.plan(grid_thw)
        n = pixel_values.shape[0]
        if n != int(grid_thw.prod(-1).sum()):
            raise ValueError(f"pixel_values has {n} patches but image_grid_thw describes "
                             f"{int(grid_thw.prod(-1).sum())}")
        dev = pixel_values.device
        unit = self.merge_size ** 2
        x = self.embeddings(pixel_values)
        if self.conv_stem is not None:
            x = x + self.conv_stem(pixel_values, grid_thw)
        x = x.view(n // unit, unit, -1)[plan.window_index.to(dev)].view(n, -1)
        cos, sin = self._rotary(plan.positions.to(dev))
        full_cu, win_cu = plan.full_cu.to(dev), plan.window_cu.to(dev)
        for layer, full in zip(self.encoder.layers, self.full_attention):
            if full:
                x = layer(x, cos, sin, full_cu, plan.full_lens)
            else:
                x = layer(x, cos, sin, win_cu, plan.window_lens)
        return x

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """2D RoPE: the first half of the rotated dims use row frequencies, the second half column ones."""
        inv_freq = rope_inv_freq(self.cfg.head_dim // 2, self.cfg.rope_theta, positions.device)
        angles = (positions.float().unsqueeze(-1) * inv_freq).flatten(1)  # [N, hd/2] = [rows..., cols...]
        emb = torch.cat((angles, angles), dim=-1)
        return emb.cos(), emb.sin()
