"""Packed attention: each segment attends only within itself, values and gradients, whatever the mix of lengths."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from navil.model.attention import varlen_attention
from navil.model.layers import permute_rows


def _per_segment(q, k, v, seqlens, causal):
    out, start = [], 0
    for n in seqlens:
        s = slice(start, start + n)
        o = F.scaled_dot_product_attention(*(t[s].transpose(0, 1) for t in (q, k, v)), is_causal=causal,
                                           enable_gqa=True)
        out.append(o.transpose(0, 1))
        start += n
    return torch.cat(out)


@pytest.mark.parametrize("seqlens", [[7], [5, 5, 5], [3, 9, 0, 3, 1, 9, 4]], ids=["one", "equal", "mixed"])
@pytest.mark.parametrize("causal", [True, False])
def test_varlen_attention_equals_attention_per_segment(seqlens, causal):
    torch.manual_seed(0)
    t = sum(seqlens)
    q = torch.randn(t, 4, 8, requires_grad=True)
    k, v = (torch.randn(t, 2, 8, requires_grad=True) for _ in range(2))
    cu = torch.tensor([0, *seqlens]).cumsum(0)
    out = varlen_attention(q, k, v, cu, causal, seqlens)
    ref = _per_segment(q, k, v, seqlens, causal)
    torch.testing.assert_close(out, ref)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * weights).sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_varlen_attention_rejects_segments_that_miss_tokens():
    q = torch.randn(6, 2, 4)
    with pytest.raises(ValueError, match="cover 5 tokens of 6"):
        varlen_attention(q, q, q, torch.tensor([0, 2, 5]), causal=True)


def test_permute_rows_gradient_is_the_inverse_gather():
    x = torch.randn(5, 3, requires_grad=True)
    order = torch.tensor([3, 0, 4, 1, 2])
    y = permute_rows(x, order, torch.argsort(order))
    assert torch.equal(y, x[order])
    w = torch.randn(5, 3)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    (ref,) = torch.autograd.grad((x[order] * w).sum(), x)
    assert torch.equal(grad, ref)
