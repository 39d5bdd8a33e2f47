"""Config presets, validation and the official config.json round trip."""
from __future__ import annotations

import json

import pytest
import torch

from navil.config import NaViLConfig, navil_2b, navil_9b, tiny
from navil.errors import ConfigError
from navil.model.navil import NaViL


def _params(cfg: NaViLConfig) -> tuple[int, int]:
    with torch.device("meta"):
        model = NaViL(cfg)
    vit = sum(p.numel() for p in model.vision_model.parameters())
    return vit, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset,vit_b", [(navil_2b, 0.62), (navil_9b, 1.23)])
def test_official_presets_have_the_papers_vit_sizes(preset, vit_b):
    cfg = preset()
    cfg.special_token_ids = list(range(12))
    vit, _ = _params(cfg)
    assert abs(vit / 1e9 - vit_b) < 0.02


def test_official_dict_round_trip(fixture_dir):
    raw = json.loads((fixture_dir / "config.json").read_text())
    cfg = NaViLConfig.from_official_dict(raw)
    again = NaViLConfig.from_official_dict(cfg.to_official_dict())
    assert again.to_dict() == cfg.to_dict()
    assert cfg.vision.fullatt_block_indexes == raw["vision_config"]["fullatt_block_indexes"]
    assert cfg.min_dynamic_patch == raw["min_dynamic_patch"]


@pytest.mark.parametrize("field,value,message", [
    ("vision.num_attention_heads", 5, "vision.num_attention_heads"),
    ("llm.num_key_value_heads", 3, "llm.num_key_value_heads"),
    ("llm.family", "gpt2", "llm.family"),
    ("vision.norm_type", "batch_norm", "vision.norm_type"),
    ("downsample_ratio", 0.25, "downsample_ratio"),
    ("visual_token_rms", 0.0, "visual_token_rms"),
])
def test_validation_names_the_bad_field(field, value, message):
    cfg = tiny()
    target = cfg
    *path, last = field.split(".")
    for part in path:
        target = getattr(target, part)
    setattr(target, last, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_wrong_model_type_is_rejected():
    with pytest.raises(ConfigError, match="model_type"):
        NaViLConfig.from_official_dict({"model_type": "llava"})


def test_visual_token_rms_round_trips_and_sets_the_scale_of_every_visual_token():
    cfg = tiny()
    cfg.special_token_ids = list(range(12))
    assert "navil_visual_token_rms" not in cfg.to_official_dict()  # official configs unchanged
    cfg.visual_token_rms = 0.05
    assert NaViLConfig.from_official_dict(cfg.to_official_dict()).visual_token_rms == 0.05
    torch.manual_seed(0)
    model = NaViL(cfg)
    grid = torch.tensor([[1, 4, 6], [1, 2, 2]])
    pixels = torch.randn(28, 3, 16, 16)
    tokens = model.extract_features(pixels, grid)
    assert tokens.shape == (7, cfg.llm.hidden_size)
    assert torch.allclose(tokens.pow(2).mean(-1).sqrt(), torch.full((7,), 0.05), atol=1e-4)
    model.config.visual_token_rms = None
    raw = model.extract_features(pixels, grid)
    assert torch.allclose(tokens, raw / raw.pow(2).mean(-1, keepdim=True).sqrt() * 0.05, atol=1e-5)
