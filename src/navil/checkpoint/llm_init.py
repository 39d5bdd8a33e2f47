"""Build a NaViL model from a pretrained HF LLM folder (the paper's recipe) or from scratch.

`init_from_llm(llm_path, vision)` reads a plain HF LLM checkpoint (Llama, Qwen2, Qwen3 or InternLM2 layout:
config.json + safetensors, single or sharded) into the navil decoder, then:

* every visual expert (`attn.qkv_visual`, `attn.o_visual`, `attn.q_norm_visual`, `attn.k_norm_visual`,
  `mlp_visual.*`) starts as a copy of its text twin, so a text-only forward equals the source LLM's;
* the vision encoder and the connector get a seeded random init (`init_weights`);
* the LLM's tokenizer gains the 12 NaViL special tokens (and `<|im_start|>`/`<|im_end|>` when missing);
  when the new ids do not fit the LLM's vocabulary, `embed` and `lm_head` grow by rows set to the mean of
  the existing rows (the original rows are untouched);
* `special_token_embedding` rows start from the word embedding of the token when the LLM already knew it,
  else from the mean word embedding.

For the InternLM2 family the copied `o_visual` composes with `o` on visual tokens (`wo_ve(wo(x))`, the
official quirk B2, see navil.model.quirks); text tokens are unaffected.

`init_from_llm(None, vision, llm_config=..., tokenizer=...)` builds the same model from scratch.
The returned model carries its (augmented) tokenizer as `model.tokenizer`; `model.save_pretrained(dir)`
writes it next to the weights, so `navil.load_model(dir)` reads the folder back.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from navil.checkpoint.io import build_empty, load_state_checked, read_tensors
from navil.checkpoint.official import llm_to_navil
from navil.config import VISION_PRESETS, LLMConfig, NaViLConfig, VisionConfig, read_config_json, typed_field
from navil.errors import CheckpointError, ConfigError
from navil.model.layers import RMSNorm
from navil.model.navil import NaViL
from navil.model.vision import VisionBlock
from navil.processing.tokenizer import (
    IM_END_TOKEN,
    IM_START_TOKEN,
    NAVIL_SPECIAL_TOKENS,
    NavilTokenizer,
    load_tokenizer,
)

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "internlm2")
INIT_STD = 0.02
TEMPLATE_BY_FAMILY = {"internlm2": "internlm2-chat"}
DEFAULT_TEMPLATE = "qwen3-chat"
# NaViLConfig fields `init_from_llm` sets itself (vision/llm come from the arguments, ids from the tokenizer).
_RESERVED_FIELDS = ("vision", "llm", "special_token_ids")


# ---- HF config.json -> LLMConfig ---------------------------------------------------------------------------
def _field(raw: dict, key: str, typ: type | tuple, default: Any) -> Any:
    return typed_field(raw, key, typ, default, f"LLM config.json field '{key}'")


def _rope(raw: dict) -> tuple[float, dict | None]:
    """rope_theta and navil's rope_scaling from either the transformers-4 fields (`rope_theta`,
    `rope_scaling`) or the transformers-5 `rope_parameters` dict."""
    params = raw.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"LLM config.json field 'rope_parameters': expected an object, got {params!r}")
    params = params or {}
    theta = raw.get("rope_theta", params.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 0:
        raise ConfigError(f"LLM config.json field 'rope_theta': expected a positive number, got {theta!r}")
    scaling_key = "rope_scaling" if raw.get("rope_scaling") is not None else "rope_parameters"
    scaling = raw.get("rope_scaling") if scaling_key == "rope_scaling" else params
    if not isinstance(scaling, dict):
        raise ConfigError(f"LLM config.json field 'rope_scaling': expected an object or null, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return float(theta), None
    if kind not in ("linear", "dynamic"):
        raise ConfigError(f"LLM config.json field '{scaling_key}': rope type {kind!r} is not supported "
                          f"(supported: default, linear, dynamic)")
    factor = scaling.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise ConfigError(f"LLM config.json field '{scaling_key}.factor': expected a positive number, "
                          f"got {factor!r}")
    return float(theta), {"rope_type": kind, "factor": float(factor)}


def llm_config_from_hf(raw: dict[str, Any]) -> LLMConfig:
    """An HF LLM `config.json` dict (llama / qwen2 / qwen3 / internlm2) -> `LLMConfig`.

    Reads both the transformers-4 (`rope_theta`, `rope_scaling`) and transformers-5 (`rope_parameters`)
    spellings. `attention_experts`/`ffn_experts` keep their defaults (on). Raises ConfigError naming any
    unsupported model type or field value."""
    family = raw.get("model_type")
    if family not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"LLM config.json field 'model_type': {family!r} is not supported "
                          f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if raw.get(key) is None:
            raise ConfigError(f"LLM config.json field '{key}' is missing")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"LLM config.json field 'hidden_act': only 'silu' is supported, got {act!r}")
    if raw.get("mlp_bias"):
        raise ConfigError("LLM config.json field 'mlp_bias': biased MLP projections are not supported")
    if raw.get("use_sliding_window"):
        raise ConfigError("LLM config.json field 'use_sliding_window': sliding-window attention is not supported")
    if any(t != "full_attention" for t in raw.get("layer_types") or []):
        raise ConfigError(f"LLM config.json field 'layer_types': only full attention is supported, got "
                          f"{sorted(set(raw['layer_types']))}")
    if raw.get("quantization_config") is not None:
        raise ConfigError("LLM config.json field 'quantization_config': quantised checkpoints are not supported")
    heads = _field(raw, "num_attention_heads", int, None)
    hidden = _field(raw, "hidden_size", int, None)
    theta, scaling = _rope(raw)
    if family == "internlm2":
        head_dim, bias, qk_norm = None, _field(raw, "bias", bool, False), False
    else:
        # Qwen3Config defaults head_dim to 128; Llama/Qwen2 derive it from hidden_size / heads.
        head_dim = _field(raw, "head_dim", int, 128 if family == "qwen3" else None)
        if head_dim is not None and head_dim * heads == hidden:
            head_dim = None  # derivable
        # Qwen2 always has q/k/v biases and no o bias (navil models this as attention_bias + family qwen2).
        bias = True if family == "qwen2" else _field(raw, "attention_bias", bool, False)
        qk_norm = family == "qwen3"
    default_max_pos = {"llama": 2048, "internlm2": 2048}.get(family, 32768)
    cfg = LLMConfig(
        family=family,
        vocab_size=_field(raw, "vocab_size", int, None),
        hidden_size=hidden,
        intermediate_size=_field(raw, "intermediate_size", int, None),
        num_hidden_layers=_field(raw, "num_hidden_layers", int, None),
        num_attention_heads=heads,
        num_key_value_heads=_field(raw, "num_key_value_heads", int, heads),
        head_dim=head_dim,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=_field(raw, "rms_norm_eps", float, 1e-6),
        max_position_embeddings=_field(raw, "max_position_embeddings", int, default_max_pos),
        attention_bias=bias,
        qk_norm=qk_norm,
        hidden_act="silu",
        tie_word_embeddings=_field(raw, "tie_word_embeddings", bool, False),
        bos_token_id=_field(raw, "bos_token_id", int, None),
        eos_token_id=_field(raw, "eos_token_id", (int, list), None),
        pad_token_id=_field(raw, "pad_token_id", int, None),
    )
    try:
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"LLM config.json: {e}") from e
    return cfg


def read_llm_config(llm_path: str | Path) -> LLMConfig:
    """`LLMConfig` of an HF LLM folder's config.json."""
    return llm_config_from_hf(read_config_json(llm_path))


# ---- weight init -------------------------------------------------------------------------------------------
class _TruncNormal:
    """In-place trunc-normal(0, INIT_STD) cut at 2 std, from one seeded generator per device; drawn in fp32
    so that every parameter dtype sees the same numbers."""

    def __init__(self, seed: int):
        self.seed = seed
        self.gens: dict[torch.device, torch.Generator] = {}

    def __call__(self, t: torch.Tensor) -> None:
        gen = self.gens.get(t.device)
        if gen is None:
            gen = self.gens[t.device] = torch.Generator(device=t.device)
            gen.manual_seed(self.seed)
        target = t if t.dtype == torch.float32 else torch.empty(t.shape, dtype=torch.float32, device=t.device)
        nn.init.trunc_normal_(target, 0.0, INIT_STD, -2 * INIT_STD, 2 * INIT_STD, generator=gen)
        if target is not t:
            t.copy_(target)


@torch.no_grad()
def init_weights(model: NaViL, seed: int = 0, *, llm: bool = True) -> NaViL:
    """Seeded random init in place: linear/conv weights and embeddings ~ trunc-normal(0, 0.02) cut at 2 std,
    biases 0, norm weights 1 (biases 0), LayerScale vectors at `vision.layer_scale_init`, the conv stem's
    projection (if any) 0.

    Covers the vision encoder, the connector and `special_token_embedding`, and the decoder when `llm`
    (from-scratch models). The same seed gives the same vision/connector weights whatever the LLM is.
    Visual experts get their own random draw; `copy_text_to_visual_experts` gives the paper's init.
    """
    normal_ = _TruncNormal(seed)
    parts: list[nn.Module] = [model.vision_model, model.mlp1, model.special_token_embedding]
    if llm:
        parts.append(model.language_model)
    layer_scale = model.config.vision.layer_scale_init
    for part in parts:
        for module in part.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                normal_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                normal_(module.weight)
            elif isinstance(module, (RMSNorm, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            if isinstance(module, VisionBlock):
                module.ls1.fill_(layer_scale)
                module.ls2.fill_(layer_scale)
    stem = model.vision_model.conv_stem
    if stem is not None:  # added to the patch embedding: a fresh encoder starts as the official one
        stem.proj.weight.zero_()
        stem.proj.bias.zero_()
    if llm and model.config.llm.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.embed.weight
    return model


def _text_twin(key: str) -> str | None:
    """`...attn.qkv_visual.weight` -> `...attn.qkv.weight`, `...mlp_visual.down.weight` -> `...mlp.down.weight`."""
    if not key.startswith("language_model.layers.") or "_visual" not in key:
        return None
    return key.replace("_visual", "")


@torch.no_grad()
def copy_text_to_visual_experts(model: NaViL) -> NaViL:
    """Set every visual expert tensor (qkv/o/q_norm/k_norm/mlp) to a copy of its text twin, in place."""
    sd = model.state_dict()
    for key, tensor in sd.items():
        twin = _text_twin(key)
        if twin is not None:
            tensor.copy_(sd[twin])
    return model


# ---- tokenizer ---------------------------------------------------------------------------------------------
def _as_tokenizer(tokenizer: NavilTokenizer | str | Path) -> NavilTokenizer:
    if isinstance(tokenizer, NavilTokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, Path)):
        return load_tokenizer(tokenizer, require_navil_tokens=False)
    raise ConfigError(f"tokenizer must be a NavilTokenizer or a tokenizer folder, got {type(tokenizer).__name__}")


def add_navil_tokens(tok: NavilTokenizer) -> dict[str, int | None]:
    """Add `<|im_start|>`/`<|im_end|>` (when missing) and the 12 NaViL tokens to `tok` in place.

    Returns each NaViL token's id *before* the call (None for tokens that were new)."""
    before = {t: tok.token_to_id(t) for t in NAVIL_SPECIAL_TOKENS}
    chat = [t for t in (IM_START_TOKEN, IM_END_TOKEN) if tok.token_to_id(t) is None]
    if chat:
        tok.add_special_tokens(chat)
    tok.add_special_tokens(list(NAVIL_SPECIAL_TOKENS))
    return before


def _max_token_id(tok: NavilTokenizer) -> int:
    return max(i for i in tok.special_token_ids.as_dict().values() if i is not None)


# ---- vocabulary growth -------------------------------------------------------------------------------------
def _grow_rows(weight: torch.Tensor, new_rows: int, mean_rows: int) -> torch.Tensor:
    """`weight` with `new_rows` extra rows, each the mean of its first `mean_rows` rows."""
    if new_rows <= 0:
        return weight
    mean = weight[:mean_rows].float().mean(0, keepdim=True).to(weight.dtype)
    return torch.cat((weight, mean.expand(new_rows, -1)))


# ---- the front door ----------------------------------------------------------------------------------------
def _vision_config(vision: str | VisionConfig) -> VisionConfig:
    if isinstance(vision, VisionConfig):
        return dataclasses.replace(vision)
    if isinstance(vision, str):
        if vision not in VISION_PRESETS:
            raise ConfigError(f"unknown vision preset {vision!r} (known: {', '.join(sorted(VISION_PRESETS))})")
        return VISION_PRESETS[vision]()
    raise ConfigError(f"vision must be a preset name or a VisionConfig, got {type(vision).__name__}")


def _navil_config(vision: VisionConfig, llm: LLMConfig, overrides: dict[str, Any]) -> NaViLConfig:
    fields = {f.name for f in dataclasses.fields(NaViLConfig)}
    for key in overrides:
        if key in _RESERVED_FIELDS:
            raise ConfigError(f"init_from_llm: '{key}' cannot be overridden here (pass vision=/llm_config=; "
                              f"special-token ids come from the tokenizer)")
        if key not in fields:
            raise ConfigError(f"init_from_llm: unknown NaViLConfig field '{key}' "
                              f"(known: {', '.join(sorted(fields - set(_RESERVED_FIELDS)))})")
    kwargs = {"template": TEMPLATE_BY_FAMILY.get(llm.family, DEFAULT_TEMPLATE), **overrides}
    return NaViLConfig(vision=vision, llm=llm, **kwargs)


def save_with_tokenizer(model: NaViL, tokenizer: NavilTokenizer | None, out_dir: str | Path,
                        **kwargs: Any) -> Path:
    """Write weights + config.json (official layout) and `tokenizer` into `out_dir`; `navil.load_model`
    reads the folder back."""
    if tokenizer is not None:
        model.tokenizer = tokenizer
    if model.tokenizer is None:
        raise ConfigError("save_with_tokenizer: no tokenizer given and the model carries none")
    model.save_pretrained(out_dir, **kwargs)
    return Path(out_dir)


def _attach_tokenizer(model: NaViL, tok: NavilTokenizer) -> None:
    # save_pretrained writes this tokenizer instead of copying the source folder's (which lacks the NaViL tokens).
    model.tokenizer = tok
    model.name_or_path = None
    model.end_of_turn_token_id = tok.special_token_ids.im_end


def init_from_llm(llm_path: str | Path | None, vision: str | VisionConfig = "tiny", *,
                  llm_config: LLMConfig | None = None, tokenizer: NavilTokenizer | str | Path | None = None,
                  dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: int = 0,
                  attention_experts: bool = True, ffn_experts: bool = True, copy_visual_experts: bool = True,
                  **navil_overrides: Any) -> NaViL:
    """A NaViL model whose decoder is the HF LLM at `llm_path` (or a random one when `llm_path` is None).

    Args:
        llm_path: HF LLM folder (config.json with model_type llama/qwen2/qwen3/internlm2, safetensors,
            tokenizer files), or None to build from scratch (then `llm_config` and `tokenizer` are required).
        vision: a `VISION_PRESETS` name or a `VisionConfig`.
        llm_config: the decoder config for a from-scratch model.
        tokenizer: a `NavilTokenizer` or tokenizer folder; defaults to the LLM folder's tokenizer. It is
            modified in place (NaViL tokens added) and attached as `model.tokenizer`.
        dtype, device: of the returned model's parameters.
        seed: seeds the random init of the vision encoder and connector (and the LLM from scratch).
        attention_experts, ffn_experts: build the visual experts (ablations switch them off).
        copy_visual_experts: start every visual expert as a copy of its text twin (the paper's init).
        **navil_overrides: NaViLConfig fields, e.g. template, min_dynamic_patch, max_dynamic_patch.

    The result is function-preserving on text: `model(input_ids=ids).logits[..., :V]` equals the source
    LLM's logits for ids that are not NaViL special tokens (V = the source vocabulary size).
    """
    vision_cfg = _vision_config(vision)
    if llm_path is None:
        if llm_config is None or tokenizer is None:
            raise ConfigError("init_from_llm(None, ...) builds a model from scratch and needs both llm_config= "
                              "and tokenizer=")
        if not isinstance(llm_config, LLMConfig):
            raise ConfigError(f"llm_config must be an LLMConfig, got {type(llm_config).__name__}")
        llm_cfg = dataclasses.replace(llm_config)
        tok = _as_tokenizer(tokenizer)
    else:
        folder = Path(llm_path)
        if not folder.is_dir():
            raise CheckpointError(f"LLM folder {folder} does not exist")
        if llm_config is not None:
            raise ConfigError("init_from_llm: pass either llm_path (the config is read from its config.json) "
                              "or llm_config (from scratch), not both")
        llm_cfg = read_llm_config(folder)
        tok = _as_tokenizer(tokenizer if tokenizer is not None else folder)
    llm_cfg.attention_experts, llm_cfg.ffn_experts = attention_experts, ffn_experts

    src_vocab = llm_cfg.vocab_size
    tok_vocab_before = tok.vocab_size
    before = add_navil_tokens(tok)
    llm_cfg.vocab_size = max(src_vocab, tok.vocab_size, _max_token_id(tok) + 1)
    for name, tok_id in (("bos_token_id", tok.bos_token_id), ("eos_token_id", tok.eos_token_id),
                         ("pad_token_id", tok.pad_token_id)):
        if getattr(llm_cfg, name) is None:
            setattr(llm_cfg, name, tok_id)

    config = _navil_config(vision_cfg, llm_cfg, navil_overrides)
    config.special_token_ids = tok.special_token_ids.navil_token_ids
    config.validate()

    model = build_empty(config, dtype, device)
    init_weights(model, seed, llm=llm_path is None)
    if llm_path is not None:
        _load_llm(model, Path(llm_path), src_vocab, tok_vocab_before, before, copy_visual_experts, seed)
    elif copy_visual_experts:
        copy_text_to_visual_experts(model)
    _attach_tokenizer(model, tok)
    return model.eval()


@torch.no_grad()
def _load_llm(model: NaViL, folder: Path, src_vocab: int, tok_vocab_before: int,
              before: dict[str, int | None], copy_experts: bool, seed: int) -> None:
    """Read the LLM's tensors into `model.language_model` (growing the vocabulary), fill the visual experts
    the checkpoint lacks (copies of the text twins, or random) and init the special-token table from the
    word embeddings."""
    cfg = model.config.llm
    param = model.mlp1[1].weight
    dtype, device = param.dtype, param.device
    src_cfg = dataclasses.replace(cfg, vocab_size=src_vocab)
    raw = read_tensors(folder, dtype, device)
    sd = llm_to_navil(raw, src_cfg, prefix="")
    del raw
    emb_key, head_key = "language_model.embed.weight", "language_model.lm_head.weight"
    if emb_key not in sd:
        raise CheckpointError(f"{folder}: no token-embedding tensor found for a {cfg.family} checkpoint")
    if cfg.tie_word_embeddings:
        sd.pop(head_key, None)
    elif head_key not in sd:
        raise CheckpointError(f"{folder}: config.json says tie_word_embeddings=false but the checkpoint has "
                              f"no LM head tensor")
    for key in (emb_key, head_key):
        if key in sd and sd[key].shape[0] != src_vocab:
            raise CheckpointError(f"{folder}: tensor '{key}' has {sd[key].shape[0]} rows but config.json "
                                  f"says vocab_size={src_vocab}")
    n_mean = max(1, min(src_vocab, tok_vocab_before))  # rows of real tokens (Qwen pads its table)
    grow = cfg.vocab_size - src_vocab
    sd[emb_key] = _grow_rows(sd[emb_key], grow, n_mean)
    if head_key in sd:
        sd[head_key] = _grow_rows(sd[head_key], grow, n_mean)
    else:
        sd[head_key] = sd[emb_key]
    missing = [k for k in model.state_dict() if k.startswith("language_model.") and k not in sd
               and _text_twin(k) is None]
    if missing:
        raise CheckpointError(f"{folder}: the {cfg.family} checkpoint lacks tensors for {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}")
    # Visual experts the checkpoint does not carry (a plain LLM has none): clones of their text twins, or a
    # random init; twins present in the checkpoint (an official *-VE LLM) are kept as they are.
    expected = model.state_dict()
    normal_ = _TruncNormal(seed + 1)
    for key in expected:
        twin = _text_twin(key)
        if twin is None or key in sd:
            continue
        if copy_experts:
            sd[key] = sd[twin].clone()
        elif key.endswith(".bias"):
            sd[key] = torch.zeros_like(sd[twin])
        elif "norm_visual" in key:
            sd[key] = torch.ones_like(sd[twin])
        else:
            sd[key] = torch.empty_like(sd[twin])
            normal_(sd[key])

    emb = sd[emb_key]
    mean = emb[:n_mean].float().mean(0)
    rows = []
    for token in NAVIL_SPECIAL_TOKENS:
        old = before[token]
        rows.append(emb[old].float() if old is not None and old < src_vocab else mean)
    sd["special_token_embedding.weight"] = torch.stack(rows).to(dtype)

    full = dict(expected)
    full.update(sd)
    load_state_checked(model, {k: v.to(device, dtype) if v.is_floating_point() else v for k, v in full.items()},
                       str(folder))
    if cfg.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.embed.weight
