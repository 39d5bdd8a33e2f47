"""State-dict adapter between the official NaViL key layouts and navil's module names.

Vision encoder, connector (`mlp1`) and `special_token_embedding` share the official names. The LLM differs:
navil fuses [q; k; v] into `attn.qkv` and [gate; up] into `mlp.gate_up` for every family, while the
official InternLM2-VE stores an interleaved GQA `wqkv` and Qwen3-VE separate q/k/v projections.
The same per-layer maps read plain HF LLM checkpoints (prefix "", no `_ve` twins) for LLM initialisation.
"""
from __future__ import annotations

import torch

from navil.config import LLMConfig

Tensors = dict[str, torch.Tensor]

# navil layer-local name -> official layer-local name, per family, for tensors that map one to one.
_INTERNLM2_LAYER = {
    "attn_norm.weight": "attention_norm.weight",
    "mlp_norm.weight": "ffn_norm.weight",
    "attn.o.weight": "attention.wo.weight",
    "attn.o.bias": "attention.wo.bias",
    "attn.o_visual.weight": "attention.wo_ve.weight",
    "attn.o_visual.bias": "attention.wo_ve.bias",
    "mlp.down.weight": "feed_forward.w2.weight",
    "mlp_visual.down.weight": "feed_forward_ve.w2.weight",
}
_HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "attn.o.weight": "self_attn.o_proj.weight",
    "attn.o.bias": "self_attn.o_proj.bias",
    "attn.o_visual.weight": "self_attn.o_proj_ve.weight",
    "attn.o_visual.bias": "self_attn.o_proj_ve.bias",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
    "attn.q_norm_visual.weight": "self_attn.q_norm_ve.weight",
    "attn.k_norm_visual.weight": "self_attn.k_norm_ve.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
    "mlp_visual.down.weight": "mlp_ve.down_proj.weight",
}
# fused navil tensor -> official parts concatenated along dim 0, {suffix} = ".weight" / ".bias"
_HF_FUSED = {
    "attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.qkv_visual": ("self_attn.q_proj_ve", "self_attn.k_proj_ve", "self_attn.v_proj_ve"),
    "mlp.gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp_visual.gate_up": ("mlp_ve.gate_proj", "mlp_ve.up_proj"),
}
_INTERNLM2_FUSED = {
    "mlp.gate_up": ("feed_forward.w1", "feed_forward.w3"),
    "mlp_visual.gate_up": ("feed_forward_ve.w1", "feed_forward_ve.w3"),
}
_INTERNLM2_QKV = {"attn.qkv": "attention.wqkv", "attn.qkv_visual": "attention.wqkv_ve"}


def _top_names(family: str) -> dict[str, str]:
    if family == "internlm2":
        return {"embed.weight": "model.tok_embeddings.weight", "norm.weight": "model.norm.weight",
                "lm_head.weight": "output.weight"}
    return {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
            "lm_head.weight": "lm_head.weight"}


def internlm2_unfuse_qkv(w: torch.Tensor, cfg: LLMConfig) -> torch.Tensor:
    """Official interleaved wqkv rows [nkv][r q-heads, k, v][hd] -> navil [q heads; k heads; v heads]."""
    nkv, hd = cfg.num_key_value_heads, cfg.resolved_head_dim
    r = cfg.num_attention_heads // nkv
    g = w.reshape(nkv, r + 2, hd, *w.shape[1:])
    q = g[:, :r].reshape(nkv * r * hd, *w.shape[1:])
    k = g[:, r].reshape(nkv * hd, *w.shape[1:])
    v = g[:, r + 1].reshape(nkv * hd, *w.shape[1:])
    return torch.cat((q, k, v))


def internlm2_fuse_qkv(w: torch.Tensor, cfg: LLMConfig) -> torch.Tensor:
    """Inverse of `internlm2_unfuse_qkv`."""
    nkv, hd = cfg.num_key_value_heads, cfg.resolved_head_dim
    r = cfg.num_attention_heads // nkv
    rest = w.shape[1:]
    q, k, v = w.split((nkv * r * hd, nkv * hd, nkv * hd))
    g = torch.cat((q.reshape(nkv, r, hd, *rest), k.reshape(nkv, 1, hd, *rest), v.reshape(nkv, 1, hd, *rest)), 1)
    return g.reshape(-1, *rest)


def llm_to_navil(sd: Tensors, cfg: LLMConfig, prefix: str) -> Tensors:
    """Official/HF LLM tensors (keys under `prefix`) -> navil `language_model.*` tensors.

    Keys that are absent (e.g. visual twins in a plain HF LLM) are simply not produced.
    """
    fam, out = cfg.family, {}
    for ours, theirs in _top_names(fam).items():
        if prefix + theirs in sd:
            out["language_model." + ours] = sd[prefix + theirs]
    single = _INTERNLM2_LAYER if fam == "internlm2" else _HF_LAYER
    fused = _INTERNLM2_FUSED if fam == "internlm2" else _HF_FUSED
    for i in range(cfg.num_hidden_layers):
        src, dst = prefix + f"model.layers.{i}.", f"language_model.layers.{i}."
        for ours, theirs in single.items():
            if src + theirs in sd:
                out[dst + ours] = sd[src + theirs]
        for suffix in (".weight", ".bias"):
            for ours, parts in fused.items():
                if all(src + p + suffix in sd for p in parts):
                    out[dst + ours + suffix] = torch.cat([sd[src + p + suffix] for p in parts])
            if fam == "internlm2":
                for ours, theirs in _INTERNLM2_QKV.items():
                    if src + theirs + suffix in sd:
                        out[dst + ours + suffix] = internlm2_unfuse_qkv(sd[src + theirs + suffix], cfg)
    return out


def llm_from_navil(sd: Tensors, cfg: LLMConfig, prefix: str) -> Tensors:
    """navil `language_model.*` tensors -> official key layout under `prefix`."""
    fam, out = cfg.family, {}
    for ours, theirs in _top_names(fam).items():
        key = "language_model." + ours
        if key in sd and not (ours == "lm_head.weight" and cfg.tie_word_embeddings):
            out[prefix + theirs] = sd[key]
    single = _INTERNLM2_LAYER if fam == "internlm2" else _HF_LAYER
    fused = _INTERNLM2_FUSED if fam == "internlm2" else _HF_FUSED
    nh, nkv, hd, inter = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.resolved_head_dim, \
        cfg.intermediate_size
    for i in range(cfg.num_hidden_layers):
        src, dst = f"language_model.layers.{i}.", prefix + f"model.layers.{i}."
        for ours, theirs in single.items():
            if src + ours in sd:
                out[dst + theirs] = sd[src + ours]
        for suffix in (".weight", ".bias"):
            for ours, parts in fused.items():
                if src + ours + suffix in sd:
                    sizes = (nh * hd, nkv * hd, nkv * hd) if len(parts) == 3 else (inter, inter)
                    for p, t in zip(parts, sd[src + ours + suffix].split(sizes)):
                        out[dst + p + suffix] = t.contiguous()
            if fam == "internlm2":
                for ours, theirs in _INTERNLM2_QKV.items():
                    if src + ours + suffix in sd:
                        out[dst + theirs + suffix] = internlm2_fuse_qkv(sd[src + ours + suffix], cfg)
    return out


def official_to_navil(sd: Tensors, cfg: LLMConfig) -> Tensors:
    """A whole official NaViL state dict -> navil state dict."""
    out = {k: v for k, v in sd.items() if not k.startswith("language_model.")}
    out.update(llm_to_navil(sd, cfg, "language_model."))
    return out


def navil_to_official(sd: Tensors, cfg: LLMConfig) -> Tensors:
    """A navil state dict -> the official NaViL key layout."""
    out = {k: v for k, v in sd.items() if not k.startswith("language_model.")}
    out.update(llm_from_navil(sd, cfg, "language_model."))
    return out
