"""The ViT patch embedding: the official conv forward, gradients by matmul equal to the conv's."""
from __future__ import annotations

import torch

from navil.config import VisionConfig
from navil.model.vision import PatchEmbedding


def test_patch_embedding_is_the_conv_and_its_gradients_match_the_convs():
    torch.manual_seed(0)
    embed = PatchEmbedding(VisionConfig(hidden_size=32, num_attention_heads=4, patch_size=14))
    pixels = torch.randn(10, 3 * 14 * 14, requires_grad=True)
    out = embed(pixels)
    conv = embed.patch_embedding
    ref = conv(pixels.view(-1, 3, 14, 14)).flatten(1)
    assert torch.equal(out, ref)  # the forward is the official op, bit for bit
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), (pixels, conv.weight, conv.bias))
    ref_grads = torch.autograd.grad((ref * w).sum(), (pixels, conv.weight, conv.bias))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_patch_embedding_trains_under_bf16_autocast():
    """The training path on CUDA: autocast runs the conv in bf16; the gradients still reach the fp32 weights."""
    torch.manual_seed(0)
    embed = PatchEmbedding(VisionConfig(hidden_size=32, num_attention_heads=4, patch_size=14))
    pixels = torch.randn(10, 3 * 14 * 14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = embed(pixels)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    weight = embed.patch_embedding.weight
    assert weight.grad is not None and weight.grad.dtype == torch.float32
    ref = embed.patch_embedding(pixels.view(-1, 3, 14, 14)).flatten(1)
    (ref_grad,) = torch.autograd.grad(ref.square().mean(), weight)
    torch.testing.assert_close(weight.grad, ref_grad, atol=0.05, rtol=0.05)
