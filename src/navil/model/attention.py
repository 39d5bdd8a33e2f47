"""Attention over packed variable-length segments, and rotary position embeddings.

Every attention in navil sees a flat token stream `[T, heads, dim]` cut into independent segments by
`cu_seqlens` (images/scales/windows in the ViT, documents in the LLM). The cost is the sum of the
segments' squares: segments of equal length are batched into one SDPA call, and flash-attn's varlen
kernel is used instead when it is installed and the tensors are on CUDA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from navil.model.layers import permute_rows

try:  # optional CUDA fast path
    from flash_attn import flash_attn_varlen_func  # type: ignore
except ImportError:  # pragma: no cover - not installed on CPU machines
    flash_attn_varlen_func = None


def _use_flash(q: torch.Tensor) -> bool:
    return flash_attn_varlen_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     causal: bool, seqlens: list[int] | None = None) -> torch.Tensor:
    """Attention within each segment of a packed stream.

    q: [T, Hq, D]; k, v: [T, Hkv, D] (Hq a multiple of Hkv, grouped-query attention);
    cu_seqlens: int [S+1] segment boundaries; `seqlens` may pass the lengths as a host list to avoid a sync.
    Returns [T, Hq, D].
    """
    if seqlens is None:
        seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    if _use_flash(q):
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        m = max(seqlens)
        return flash_attn_varlen_func(q, k, v, cu, cu, m, m, causal=causal)
    if sum(seqlens) != q.shape[0]:
        raise ValueError(f"segments cover {sum(seqlens)} tokens of {q.shape[0]}")
    lengths = sorted({n for n in seqlens if n})
    if not lengths:
        return torch.empty_like(q)
    if len(lengths) == 1:  # equal segments: one batched call on a view
        n = q.shape[0] // lengths[0]
        return _sdpa(*(t.view(n, lengths[0], *t.shape[1:]) for t in (q, k, v)), causal).flatten(0, 1)
    # tokens regrouped by segment length (one gather), one SDPA call per length on contiguous views, then back
    order = _order_by_length(cu_seqlens[:-1].to(q.device), seqlens, lengths)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    sizes = [n * seqlens.count(n) for n in lengths]
    groups = zip(*(permute_rows(t, order, inverse).split(sizes) for t in (q, k, v)))
    out = [_sdpa(*(t.view(-1, n, *t.shape[1:]) for t in qkv), causal).flatten(0, 1)
           for n, qkv in zip(lengths, groups)]
    return permute_rows(torch.cat(out), inverse, order)


def _order_by_length(starts: torch.Tensor, seqlens: list[int], lengths: list[int]) -> torch.Tensor:
    """Token indices of the segments of each length in `lengths`, shortest first, each segment contiguous."""
    by_length = torch.tensor(seqlens, device=starts.device)
    return torch.cat([(starts[by_length == n].unsqueeze(1) + torch.arange(n, device=starts.device)).reshape(-1)
                      for n in lengths])


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA on [B, L, H, D] tensors (grouped-query aware); returns [B, L, Hq, D]."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = q.shape[1] != k.shape[1]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                       enable_gqa=gqa)
    return o.transpose(1, 2)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Batched attention with an explicit boolean mask (True = attend), used by cached decoding.

    q: [B, Lq, Hq, D]; k, v: [B, Lk, Hkv, D]; mask: [B, 1, Lq, Lk]."""
    return _sdpa(q, k, v, causal=False, mask=mask)


# ---- rotary embeddings --------------------------------------------------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE in fp32. x: [T, H, D]; cos/sin: [T, D] (broadcast over heads)."""
    xf = x.float()
    out = xf * cos.unsqueeze(1) + rotate_half(xf) * sin.unsqueeze(1)
    return out.to(x.dtype)


def rope_inv_freq(dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies theta^(-2k/dim), k = 0 .. dim/2 - 1 (fp32)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [T, 2*len(inv_freq)] for integer positions [T] (rotate-half layout)."""
    angles = positions.float().unsqueeze(-1) * inv_freq
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()
