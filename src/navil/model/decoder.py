"""The decoder LLM with modality experts (MHA-MMoE and FFN-MMoE), one code path for every LLM family.

Tokens travel as one flat stream `[T, H]`. A `ModalityRouter`, built once per forward, splits the stream
into text and visual tokens with a single gather and merges expert outputs back with a single gather, so
each token passes through exactly one expert. Attention itself is shared by both modalities and is
injected as a callable (`Attend`), so the same layer serves packed training and cached decoding.

Weights use navil's fused layout: `qkv` holds [q; k; v] rows (head-major), `mlp.gate_up` holds
[gate; up]. `navil.checkpoint.official` converts from and to the official per-family key layouts.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from navil.config import LLMConfig
from navil.model.attention import apply_rotary, rope_cos_sin, rope_inv_freq
from navil.model.layers import RMSNorm, SwiGLU, permute_rows
from navil.model.quirks import visual_output_composes_text_projection

# attend(layer_index, q [T,Hq,D], k [T,Hkv,D], v [T,Hkv,D]) -> [T,Hq,D]
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ModalityRouter:
    """Text/visual split of a flat token stream: `order` lists text tokens then visual tokens."""

    order: torch.Tensor | None = None
    inverse: torch.Tensor | None = None
    num_text: int = 0

    @classmethod
    def build(cls, visual_mask: torch.Tensor | None) -> ModalityRouter:
        if visual_mask is None or not bool(visual_mask.any()):
            return cls()
        order = torch.cat((torch.nonzero(~visual_mask).squeeze(1), torch.nonzero(visual_mask).squeeze(1)))
        return cls(order, torch.argsort(order), int((~visual_mask).sum()))

    @property
    def text_only(self) -> bool:
        return self.order is None

    def route(self, x: torch.Tensor, text_fn: Callable, visual_fn: Callable | None) -> torch.Tensor:
        """text_fn on text tokens and visual_fn on visual tokens (text_fn on all if there is no expert)."""
        if self.text_only or visual_fn is None:
            return text_fn(x)
        text, visual = permute_rows(x, self.order, self.inverse).split((self.num_text, len(x) - self.num_text))
        return permute_rows(torch.cat((text_fn(text), visual_fn(visual))), self.inverse, self.order)


class ExpertAttention(nn.Module):
    """Grouped-query attention whose projections (and q/k norms) have a visual twin."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.resolved_head_dim
        qkv_out = (self.nh + 2 * self.nkv) * self.hd
        o_bias = cfg.attention_bias and cfg.family != "qwen2"
        self.qkv = nn.Linear(cfg.hidden_size, qkv_out, bias=cfg.attention_bias)
        self.o = nn.Linear(self.nh * self.hd, cfg.hidden_size, bias=o_bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:
            self.q_norm, self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps), RMSNorm(self.hd, cfg.rms_norm_eps)
        self.has_experts = cfg.attention_experts
        if cfg.attention_experts:
            self.qkv_visual = nn.Linear(cfg.hidden_size, qkv_out, bias=cfg.attention_bias)
            self.o_visual = nn.Linear(self.nh * self.hd, cfg.hidden_size, bias=o_bias)
            if cfg.qk_norm:
                self.q_norm_visual = RMSNorm(self.hd, cfg.rms_norm_eps)
                self.k_norm_visual = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.compose_output = visual_output_composes_text_projection(cfg.family)

    def _project(self, x: torch.Tensor, visual: bool) -> torch.Tensor:
        y = (self.qkv_visual if visual else self.qkv)(x)
        if not self.qk_norm:
            return y
        q, k, v = y.split((self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd), dim=-1)
        qn, kn = (self.q_norm_visual, self.k_norm_visual) if visual else (self.q_norm, self.k_norm)
        q = qn(q.reshape(-1, self.nh, self.hd)).flatten(1)
        k = kn(k.reshape(-1, self.nkv, self.hd)).flatten(1)
        return torch.cat((q, k, v), dim=-1)

    def _output_visual(self, a: torch.Tensor) -> torch.Tensor:
        return self.o_visual(self.o(a)) if self.compose_output else self.o_visual(a)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, router: ModalityRouter,
                attend: Attend, layer_index: int) -> torch.Tensor:
        t = x.shape[0]
        visual = self.has_experts
        qkv = router.route(x, lambda h: self._project(h, False), (lambda h: self._project(h, True)) if visual else None)
        q, k, v = qkv.split((self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd), dim=-1)
        q = apply_rotary(q.reshape(t, self.nh, self.hd), cos, sin)
        k = apply_rotary(k.reshape(t, self.nkv, self.hd), cos, sin)
        a = attend(layer_index, q, k, v.reshape(t, self.nkv, self.hd)).reshape(t, -1)
        return router.route(a, self.o, self._output_visual if visual else None)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = ExpertAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_visual = SwiGLU(cfg.hidden_size, cfg.intermediate_size) if cfg.ffn_experts else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, router: ModalityRouter,
                attend: Attend, layer_index: int) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, router, attend, layer_index)
        return x + router.route(self.mlp_norm(x), self.mlp, self.mlp_visual)


class Decoder(nn.Module):
    """`language_model`: token embedding, expert layers, final norm, LM head."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight

    def rotary(self, positions: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for integer positions [T]; `seq_len` drives dynamic NTK scaling when configured."""
        cfg = self.cfg
        dim, theta, pos = cfg.resolved_head_dim, cfg.rope_theta, positions
        scaling = cfg.rope_scaling or {}
        kind = scaling.get("rope_type", scaling.get("type"))
        factor = float(scaling.get("factor", 1.0))
        if kind == "linear":
            pos = positions.float() / factor
        elif kind == "dynamic" and seq_len > cfg.max_position_embeddings:
            theta = theta * ((factor * seq_len / cfg.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        return rope_cos_sin(pos, rope_inv_freq(dim, theta, positions.device))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, router: ModalityRouter, attend: Attend,
                seq_len: int | None = None) -> torch.Tensor:
        """Hidden states [T, H] -> final-normed hidden states [T, H]."""
        cos, sin = self.rotary(positions, seq_len if seq_len is not None else int(positions.max()) + 1)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, router, attend, i)
        return self.norm(x)
