"""Attention over packed variable-length segments, and rotary position embeddings.

Every attention in navil sees a flat token stream `[T, heads, dim]` cut into independent segments by
`cu_seqlens` (images/scales/windows in the ViT, documents in the LLM). The cost is the sum of the
segments' squares: segments of equal length are batched into one SDPA call, and flash-attn's varlen
kernel is used instead when it is installed and the tensors are on CUDA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
    if len(seqlens) == 1:
        return _sdpa(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), causal).squeeze(0)

    out = torch.empty_like(q)
    starts = cu_seqlens[:-1].to(q.device)
    lengths = torch.tensor(seqlens, device=q.device)
    for length in sorted(set(seqlens)):
        if length == 0:
            continue
        seg = (lengths == length).nonzero().squeeze(1)
        # [n_seg, length] token indices of every segment of this length
        idx = (starts[seg].unsqueeze(1) + torch.arange(length, device=q.device)).reshape(-1)
        n = seg.numel()
        o = _sdpa(q[idx].view(n, length, *q.shape[1:]), k[idx].view(n, length, *k.shape[1:]),
                  v[idx].view(n, length, *v.shape[1:]), causal)
        out[idx] = o.reshape(n * length, *q.shape[1:])
    return out


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
