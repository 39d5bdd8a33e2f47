"""Training stages: which parameters train, and the AdamW parameter groups.

Every parameter of a NaViL model falls in exactly one category (by its name):

==================  ==========================================================================================
vision              `vision_model.*` (patch embed, blocks, layer scales)
connector           `mlp1.*`
special_tokens      `special_token_embedding.*` (the 12 NaViL special-token rows)
visual_experts      `language_model.layers.*.attn.{qkv,o,q_norm,k_norm}_visual.*`, `*.mlp_visual.*`
text_attention      `language_model.layers.*.attn.{qkv,o,q_norm,k_norm}.*`
text_ffn            `language_model.layers.*.mlp.*`
text_norms          `language_model.layers.*.{attn_norm,mlp_norm}.*`, `language_model.norm.*` (shared by both
                    modalities, but part of the pretrained LLM)
embeddings          `language_model.embed.*`
lm_head             `language_model.lm_head.*` (absent when tied to the embeddings)
==================  ==========================================================================================

Stages (paper §6): stage1 trains the vision side and the visual experts with every text weight frozen,
stage1.2 additionally trains the text attention projections (and their q/k norms), stage2 trains all.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from torch import nn

from navil.errors import ConfigError

CATEGORIES = ("vision", "connector", "special_tokens", "visual_experts", "text_attention", "text_ffn",
              "text_norms", "embeddings", "lm_head")

STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "stage1": ("vision", "connector", "special_tokens", "visual_experts"),
    "stage1.2": ("vision", "connector", "special_tokens", "visual_experts", "text_attention"),
    "stage2": CATEGORIES,
}

_LAYER = r"language_model\.layers\.\d+\."
_RULES: list[tuple[str, re.Pattern]] = [
    ("vision", re.compile(r"vision_model\.")),
    ("connector", re.compile(r"mlp1\.")),
    ("special_tokens", re.compile(r"special_token_embedding\.")),
    ("visual_experts", re.compile(_LAYER + r"(attn\.(qkv|o|q_norm|k_norm)_visual\.|mlp_visual\.)")),
    ("text_attention", re.compile(_LAYER + r"attn\.(qkv|o|q_norm|k_norm)\.")),
    ("text_ffn", re.compile(_LAYER + r"mlp\.")),
    ("text_norms", re.compile(_LAYER + r"(attn_norm|mlp_norm)\.|language_model\.norm\.")),
    ("embeddings", re.compile(r"language_model\.embed\.")),
    ("lm_head", re.compile(r"language_model\.lm_head\.")),
]

_WRAPPERS = re.compile(r"(_orig_mod|_checkpoint_wrapped_module|_fsdp_wrapped_module)\.")

# Parameters never decayed: norms, biases, layer scales (all < 2-D) and embedding tables.
_NO_DECAY_CATEGORIES = ("embeddings", "special_tokens")


def category(name: str) -> str:
    """The category of a parameter name (wrappers' `_orig_mod.` / `_checkpoint_wrapped_module.` ignored)."""
    clean = _WRAPPERS.sub("", name)
    for cat, pattern in _RULES:
        if pattern.match(clean):
            return cat
    raise ConfigError(f"parameter '{name}' belongs to no training category; navil.train.stages needs a rule for it")


def trainable_categories(stage: str, override: list[str] | None = None) -> tuple[str, ...]:
    if override is not None:
        bad = [c for c in override if c not in CATEGORIES]
        if bad:
            raise ConfigError(f"config field 'trainable': unknown categories {bad}; known: {CATEGORIES}")
        return tuple(override)
    if stage not in STAGE_TRAINABLE:
        raise ConfigError(f"config field 'stage': must be one of {tuple(STAGE_TRAINABLE)}, got {stage!r}")
    return STAGE_TRAINABLE[stage]


def apply_stage(model: nn.Module, stage: str, override: list[str] | None = None) -> dict[str, Any]:
    """Set `requires_grad` per the stage; return a summary {category: {"params", "trainable"}}."""
    train = set(trainable_categories(stage, override))
    counts: Counter = Counter()
    summary: dict[str, Any] = {}
    for name, p in model.named_parameters():
        cat = category(name)
        p.requires_grad_(cat in train)
        counts[cat] += p.numel()
    for cat in CATEGORIES:
        if counts[cat]:
            summary[cat] = {"params": counts[cat], "trainable": cat in train}
    if not any(v["trainable"] for v in summary.values()):
        raise ConfigError(f"stage {stage!r} leaves no trainable parameters in this model "
                          f"(categories present: {sorted(summary)})")
    return summary


def decays(name: str, param: nn.Parameter) -> bool:
    return param.ndim >= 2 and category(name) not in _NO_DECAY_CATEGORIES


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 lr_mult: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: one per (category, decay) with `lr * lr_mult[category]`.

    Each group carries `name` ("vision/decay", ...), `base_lr` (its peak LR) and `lr_mult`; the schedule
    sets `lr = base_lr * factor(step)`.
    """
    lr_mult = lr_mult or {}
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        cat = category(name)
        dec = decays(name, p)
        key = (cat, dec)
        if key not in groups:
            mult = float(lr_mult.get(cat, 1.0))
            groups[key] = {"name": f"{cat}/{'decay' if dec else 'no_decay'}", "params": [],
                           "weight_decay": weight_decay if dec else 0.0, "lr": lr * mult, "base_lr": lr * mult,
                           "lr_mult": mult}
        groups[key]["params"].append(p)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return [groups[k] for k in sorted(groups, key=lambda k: (order[k[0]], not k[1]))]
