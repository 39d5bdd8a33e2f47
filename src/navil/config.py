"""Model configs: dataclasses, presets and the official `config.json` reader/writer.

A NaViL model is a native-resolution vision encoder (`VisionConfig`), a pixel-shuffle MLP connector and a
decoder LLM with modality experts (`LLMConfig`), put together by `NaViLConfig`. Official checkpoint folders
describe the same things in a nested HF `config.json` (`model_type: navil_chat`); `from_official_dict` and
`to_official_dict` translate between the two.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from navil.errors import ConfigError

LLM_FAMILIES = ("internlm2", "qwen3", "qwen2", "llama")

# The LLM class name an official (or navil-written) config.json carries, per family.
ARCHITECTURE_BY_FAMILY = {
    "internlm2": "InternLM2VEForCausalLM",
    "qwen3": "Qwen3VEForCausalLM",
    "qwen2": "Qwen2VEForCausalLM",
    "llama": "LlamaVEForCausalLM",
}
FAMILY_BY_ARCHITECTURE = {arch: fam for fam, arch in ARCHITECTURE_BY_FAMILY.items()}


def _require(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config field '{name}': {message}")


@dataclass
class VisionConfig:
    """Native-resolution ViT: conv patch embed, 2D RoPE, window/full attention, LayerScale, no CLS/final norm."""

    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    patch_size: int = 16
    num_channels: int = 3
    hidden_act: str = "gelu"
    norm_type: str = "rms_norm"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = False
    qk_normalization: bool = False
    window_size: int = 8
    fullatt_block_indexes: list[int] | None = None
    rope_theta: float = 10000.0
    layer_scale_init: float = 0.1
    # "patch": the official linear patch embedding; "conv": a convolutional stem over the whole image (stride-2
    # 3x3 convolutions down to one vector per patch, then `stem_context_layers` 3x3 convolutions on the patch
    # grid). Not in the official checkpoints; a from-scratch ViT learns object shapes far faster with it.
    stem: str = "patch"
    stem_context_layers: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size"):
            _require(isinstance(getattr(self, name), int) and getattr(self, name) > 0, f"vision.{name}",
                     f"must be a positive integer, got {getattr(self, name)!r}")
        _require(self.hidden_size % self.num_attention_heads == 0, "vision.num_attention_heads",
                 f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        _require(self.head_dim % 4 == 0, "vision.hidden_size",
                 f"head dim {self.head_dim} must be a multiple of 4 for 2D RoPE")
        _require(self.norm_type in ("rms_norm", "layer_norm"), "vision.norm_type",
                 f"must be 'rms_norm' or 'layer_norm', got {self.norm_type!r}")
        _require(self.hidden_act in ("gelu", "gelu_pytorch_tanh", "silu", "quick_gelu"), "vision.hidden_act",
                 f"unsupported activation {self.hidden_act!r}")
        _require(self.window_size > 0, "vision.window_size", f"must be positive, got {self.window_size}")
        for i in self.fullatt_block_indexes or []:
            _require(0 <= i < self.num_hidden_layers, "vision.fullatt_block_indexes",
                     f"layer {i} out of range for {self.num_hidden_layers} layers")
        _require(self.stem in ("patch", "conv"), "vision.stem", f"must be 'patch' or 'conv', got {self.stem!r}")
        if self.stem == "conv":
            _require(self.patch_size >= 2 and self.patch_size & (self.patch_size - 1) == 0, "vision.patch_size",
                     f"the conv stem halves the image down to one vector per patch, so the patch size must be a "
                     f"power of two >= 2, got {self.patch_size}")
            _require(isinstance(self.stem_context_layers, int) and self.stem_context_layers >= 0,
                     "vision.stem_context_layers", f"must be an integer >= 0, got {self.stem_context_layers!r}")


@dataclass
class LLMConfig:
    """Decoder LLM with optional visual experts in attention (MHA-MMoE) and FFN (FFN-MMoE)."""

    family: str = "qwen3"
    vocab_size: int = 300
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int | None = None
    rope_theta: float = 1e6
    rope_scaling: dict | None = None
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    attention_bias: bool = False
    qk_norm: bool = True
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    attention_experts: bool = True
    ffn_experts: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        _require(self.family in LLM_FAMILIES, "llm.family", f"must be one of {LLM_FAMILIES}, got {self.family!r}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings"):
            _require(isinstance(getattr(self, name), int) and getattr(self, name) > 0, f"llm.{name}",
                     f"must be a positive integer, got {getattr(self, name)!r}")
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "llm.num_key_value_heads",
                 f"{self.num_attention_heads} heads are not divisible into {self.num_key_value_heads} kv groups")
        if self.head_dim is None:
            _require(self.hidden_size % self.num_attention_heads == 0, "llm.hidden_size",
                     f"{self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        _require(self.resolved_head_dim % 2 == 0, "llm.head_dim", "must be even for RoPE")
        _require(self.hidden_act == "silu", "llm.hidden_act", f"only 'silu' is supported, got {self.hidden_act!r}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            _require(kind in ("linear", "dynamic", "default"), "llm.rope_scaling",
                     f"unsupported rope scaling {kind!r} (supported: linear, dynamic)")


@dataclass
class NaViLConfig:
    """The whole model plus the image/template settings an official checkpoint folder carries."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    downsample_ratio: float = 0.5
    min_dynamic_patch: int = 256
    max_dynamic_patch: int = 24576
    scale_downsample_ratio: float = 0.7071
    template: str | None = None
    system_message: str | None = None
    # Token ids of the 12 NaViL special tokens (official SPECIAL_TOKEN_LIST order); resolved from the
    # checkpoint's tokenizer at load time, never hard-coded.
    special_token_ids: list[int] | None = None
    # Fidelity switch (see navil.model.quirks): official models keep the ViT's window-major feature order.
    restore_raster_order: bool = False
    # Training recipe switch (navil quickstart): the connector's outputs rescaled to this root-mean-square per
    # token, the scale of the LLM's word embeddings, so a visual token is read like a word. None: as official.
    visual_token_rms: float | None = None

    @property
    def merge_size(self) -> int:
        return round(1 / self.downsample_ratio)

    def validate(self) -> None:
        self.vision.validate()
        self.llm.validate()
        _require(self.merge_size == 2 and abs(self.downsample_ratio - 0.5) < 1e-6, "downsample_ratio",
                 f"only 0.5 (2x2 pixel shuffle) is supported, got {self.downsample_ratio}")
        _require(0 < self.min_dynamic_patch <= self.max_dynamic_patch, "min_dynamic_patch",
                 f"need 0 < min_dynamic_patch ({self.min_dynamic_patch}) <= max_dynamic_patch "
                 f"({self.max_dynamic_patch})")
        _require(0 < self.scale_downsample_ratio < 1, "scale_downsample_ratio",
                 f"must be in (0, 1), got {self.scale_downsample_ratio}")
        _require(self.visual_token_rms is None or self.visual_token_rms > 0, "visual_token_rms",
                 f"must be None or > 0, got {self.visual_token_rms}")
        if self.special_token_ids is not None:
            ids = self.special_token_ids
            _require(len(ids) == 12, "special_token_ids", f"need 12 ids, got {len(ids)}")
            _require(all(0 <= i < self.llm.vocab_size for i in ids), "special_token_ids",
                     f"ids {ids} must lie inside the vocabulary (size {self.llm.vocab_size})")

    # ---- official config.json ---------------------------------------------------------------------------
    @classmethod
    def from_official_dict(cls, raw: dict[str, Any]) -> NaViLConfig:
        """Read an official (or navil-written) NaViL `config.json` dict, naming any bad field."""
        if raw.get("model_type") != "navil_chat":
            raise ConfigError(f"config field 'model_type': expected 'navil_chat', got {raw.get('model_type')!r}")
        for key in ("vision_config", "llm_config"):
            if not isinstance(raw.get(key), dict):
                raise ConfigError(f"config field '{key}': missing or not an object")
        vision = _vision_from_dict(raw["vision_config"])
        llm = _llm_from_dict(raw["llm_config"])
        cfg = cls(
            vision=vision, llm=llm,
            downsample_ratio=float(raw.get("downsample_ratio", 0.5)),
            min_dynamic_patch=int(raw.get("min_dynamic_patch", 256)),
            max_dynamic_patch=int(raw.get("max_dynamic_patch", 24576)),
            scale_downsample_ratio=float(raw.get("scale_downsample_ratio", 0.7071)),
            template=raw.get("template"),
            system_message=raw.get("system_message"),
            restore_raster_order=bool(raw.get("navil_restore_raster_order", False)),
            visual_token_rms=typed_field(raw, "navil_visual_token_rms", float, None,
                                         "config field 'navil_visual_token_rms'"),
        )
        cfg.validate()
        return cfg

    @classmethod
    def from_pretrained(cls, path: str | Path) -> NaViLConfig:
        return cls.from_official_dict(read_config_json(path))

    def to_official_dict(self) -> dict[str, Any]:
        """The nested config.json the official code reads (plus navil's own keys where they differ)."""
        v, m = self.vision, self.llm
        vision = {
            "model_type": "navil_vit", "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
            "patch_size": v.patch_size, "num_channels": v.num_channels, "hidden_act": v.hidden_act,
            "norm_type": v.norm_type, "layer_norm_eps": v.layer_norm_eps, "qkv_bias": v.qkv_bias,
            "qk_normalization": v.qk_normalization, "window_size": v.window_size,
            "fullatt_block_indexes": v.fullatt_block_indexes, "initializer_factor": v.layer_scale_init,
            "downsample_ratio": self.downsample_ratio, "navil_rope_theta": v.rope_theta,
            "navil_stem": v.stem, "navil_stem_context_layers": v.stem_context_layers,
        }
        llm = {
            "architectures": [ARCHITECTURE_BY_FAMILY[m.family]], "model_type": m.family,
            "vocab_size": m.vocab_size, "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
            "num_hidden_layers": m.num_hidden_layers, "num_attention_heads": m.num_attention_heads,
            "num_key_value_heads": m.num_key_value_heads, "rope_theta": m.rope_theta,
            "rope_scaling": m.rope_scaling, "rms_norm_eps": m.rms_norm_eps,
            "max_position_embeddings": m.max_position_embeddings, "hidden_act": m.hidden_act,
            "tie_word_embeddings": m.tie_word_embeddings, "bos_token_id": m.bos_token_id,
            "eos_token_id": m.eos_token_id, "pad_token_id": m.pad_token_id,
            "navil_attention_experts": m.attention_experts, "navil_ffn_experts": m.ffn_experts,
        }
        if m.family == "internlm2":
            llm["bias"] = m.attention_bias
        else:
            llm.update(head_dim=m.resolved_head_dim, attention_bias=m.attention_bias, navil_qk_norm=m.qk_norm,
                       use_sliding_window=False)
        out = {
            "architectures": ["NaViL"], "model_type": "navil_chat", "vision_config": vision, "llm_config": llm,
            "downsample_ratio": self.downsample_ratio, "min_dynamic_patch": self.min_dynamic_patch,
            "max_dynamic_patch": self.max_dynamic_patch, "scale_downsample_ratio": self.scale_downsample_ratio,
            "anyres_image_size": True, "force_image_size": None, "ps_version": "v1", "template": self.template,
            "torch_dtype": "float32",
        }
        if self.system_message is not None:
            out["system_message"] = self.system_message
        if self.restore_raster_order:
            out["navil_restore_raster_order"] = True
        if self.visual_token_rms is not None:
            out["navil_visual_token_rms"] = self.visual_token_rms
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_config_json(folder: str | Path) -> dict[str, Any]:
    """The JSON object in `folder/config.json`, with a clear error when it is missing or malformed."""
    file = Path(folder) / "config.json"
    if not file.is_file():
        raise ConfigError(f"no config.json in {folder}")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must contain a JSON object")
    return raw


def typed_field(raw: dict, key: str, typ: type | tuple, default: Any, name: str) -> Any:
    """raw[key] checked against `typ` (ints accepted as floats; null or absent -> default); `name` is how
    error messages call the field."""
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and typ in (int, float):
        raise ConfigError(f"{name}: expected {typ.__name__}, got {value!r}")
    if typ is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, typ):
        type_name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ConfigError(f"{name}: expected {type_name}, got {value!r}")
    return value


def _get(raw: dict, key: str, typ: type | tuple, default: Any, section: str) -> Any:
    return typed_field(raw, key, typ, default, f"config field '{section}.{key}'")


def _need(raw: dict, key: str, section: str) -> None:
    if key not in raw:
        raise ConfigError(f"config field '{section}.{key}' is missing")


def _vision_from_dict(raw: dict) -> VisionConfig:
    s = "vision_config"
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        _need(raw, key, s)
    full = raw.get("fullatt_block_indexes")
    if full is not None and not (isinstance(full, list) and all(isinstance(i, int) for i in full)):
        raise ConfigError(f"config field '{s}.fullatt_block_indexes': expected a list of ints or null, got {full!r}")
    return VisionConfig(
        hidden_size=_get(raw, "hidden_size", int, None, s),
        intermediate_size=_get(raw, "intermediate_size", int, None, s),
        num_hidden_layers=_get(raw, "num_hidden_layers", int, None, s),
        num_attention_heads=_get(raw, "num_attention_heads", int, None, s),
        patch_size=_get(raw, "patch_size", int, 16, s),
        num_channels=_get(raw, "num_channels", int, 3, s),
        hidden_act=_get(raw, "hidden_act", str, "gelu", s),
        norm_type=_get(raw, "norm_type", str, "rms_norm", s),
        layer_norm_eps=_get(raw, "layer_norm_eps", float, 1e-6, s),
        qkv_bias=_get(raw, "qkv_bias", bool, False, s),
        # The official default is True, but that path crashes in the official code (spec B1).
        qk_normalization=_get(raw, "qk_normalization", bool, True, s),
        window_size=_get(raw, "window_size", int, 8, s),
        fullatt_block_indexes=full,
        rope_theta=_get(raw, "navil_rope_theta", float, 10000.0, s),
        layer_scale_init=_get(raw, "initializer_factor", float, 0.1, s),
        stem=_get(raw, "navil_stem", str, "patch", s),
        stem_context_layers=_get(raw, "navil_stem_context_layers", int, 2, s),
    )


def _llm_from_dict(raw: dict) -> LLMConfig:
    s = "llm_config"
    archs = raw.get("architectures")
    if not archs or archs[0] not in FAMILY_BY_ARCHITECTURE:
        raise ConfigError(f"config field '{s}.architectures': expected one of {sorted(FAMILY_BY_ARCHITECTURE)}, "
                          f"got {archs!r}")
    family = FAMILY_BY_ARCHITECTURE[archs[0]]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        _need(raw, key, s)
    heads = _get(raw, "num_attention_heads", int, None, s)
    bias_key = "bias" if family == "internlm2" else "attention_bias"
    return LLMConfig(
        family=family,
        vocab_size=_get(raw, "vocab_size", int, None, s),
        hidden_size=_get(raw, "hidden_size", int, None, s),
        intermediate_size=_get(raw, "intermediate_size", int, None, s),
        num_hidden_layers=_get(raw, "num_hidden_layers", int, None, s),
        num_attention_heads=heads,
        num_key_value_heads=_get(raw, "num_key_value_heads", int, heads, s),
        head_dim=_get(raw, "head_dim", int, None, s) if family != "internlm2" else None,
        rope_theta=_get(raw, "rope_theta", float, 10000.0, s),
        rope_scaling=_get(raw, "rope_scaling", dict, None, s),
        rms_norm_eps=_get(raw, "rms_norm_eps", float, 1e-6, s),
        max_position_embeddings=_get(raw, "max_position_embeddings", int, 2048, s),
        attention_bias=_get(raw, bias_key, bool, family == "qwen2", s),
        qk_norm=_get(raw, "navil_qk_norm", bool, family == "qwen3", s),
        hidden_act=_get(raw, "hidden_act", str, "silu", s),
        tie_word_embeddings=_get(raw, "tie_word_embeddings", bool, False, s),
        attention_experts=_get(raw, "navil_attention_experts", bool, True, s),
        ffn_experts=_get(raw, "navil_ffn_experts", bool, True, s),
        bos_token_id=_get(raw, "bos_token_id", int, None, s),
        eos_token_id=_get(raw, "eos_token_id", (int, list), None, s),
        pad_token_id=_get(raw, "pad_token_id", int, None, s),
    )


# ---- presets --------------------------------------------------------------------------------------------
def navil_2b() -> NaViLConfig:
    """NaViL-2B: InternLM2-1.8B LLM + 0.6B ViT (24 x 1472). Values the spec marks unknown are read from the
    checkpoint's config.json when loading; these are the best-known values."""
    return NaViLConfig(
        vision=VisionConfig(hidden_size=1472, intermediate_size=5888, num_hidden_layers=24, num_attention_heads=23),
        llm=LLMConfig(family="internlm2", vocab_size=92556, hidden_size=2048, intermediate_size=8192,
                      num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=8, rope_theta=1e6,
                      rms_norm_eps=1e-5, max_position_embeddings=32768, qk_norm=False, bos_token_id=1,
                      eos_token_id=2),
        template="internlm2-chat",
    )


def navil_9b() -> NaViLConfig:
    """NaViL-9B: Qwen3-8B LLM + 1.2B ViT (32 x 1792)."""
    return NaViLConfig(
        vision=VisionConfig(hidden_size=1792, intermediate_size=7168, num_hidden_layers=32, num_attention_heads=28),
        llm=LLMConfig(family="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                      num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=40960, qk_norm=True,
                      bos_token_id=151643, eos_token_id=151645),
        template="qwen3-chat",
    )


def tiny(vocab_size: int = 300, family: str = "qwen3") -> NaViLConfig:
    """A few-hundred-thousand-parameter model for tests and CPU experiments."""
    return NaViLConfig(
        vision=VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            window_size=8, fullatt_block_indexes=[1]),
        llm=LLMConfig(family=family, vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      qk_norm=family == "qwen3"),
        min_dynamic_patch=4, max_dynamic_patch=256,
        template="qwen3-chat" if family != "internlm2" else "internlm2-chat",
    )


VISION_PRESETS = {
    "tiny": lambda: tiny().vision,
    "navil-2b": lambda: navil_2b().vision,
    "navil-9b": lambda: navil_9b().vision,
}
