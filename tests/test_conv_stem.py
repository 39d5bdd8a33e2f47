"""The optional convolutional stem of the ViT (`vision.stem = "conv"`): layout, equivariance, config, save/load."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from conftest import FIXTURE_ROOT
from PIL import Image

import navil
from navil.checkpoint.llm_init import init_weights
from navil.config import NaViLConfig, VisionConfig
from navil.errors import ConfigError
from navil.model.navil import NaViL
from navil.model.vision import ConvStem, size_groups
from navil.processing.image import ImageProcessor, from_patches


def _stem(context_layers: int = 1) -> ConvStem:
    torch.manual_seed(0)
    cfg = VisionConfig(hidden_size=32, num_attention_heads=4, stem="conv", stem_context_layers=context_layers)
    return ConvStem(cfg, merge_size=2).eval()


def _processed(*images: np.ndarray):
    proc = ImageProcessor(patch_size=16, merge_size=2, min_pixels=4 * 256, max_pixels=400 * 256)
    return proc([Image.fromarray(x) for x in images], multi_scale=False)


def _grid(features: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-patch features in merge-unit raster order -> [h, w, C]."""
    return from_patches(features[:, :, None, None], h, w, 2).permute(1, 2, 0)


@torch.no_grad()
def test_conv_stem_is_shift_equivariant_over_the_processor_layout():
    """Content moved two patches right gives the same features two patches right: the stem reassembles the
    image from merge-unit-ordered patches and returns its features in that order."""
    rng = np.random.default_rng(0)
    content = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
    shifted = np.concatenate([rng.integers(0, 255, (160, 32, 3), dtype=np.uint8), content], axis=1)
    x = _processed(content, shifted)
    assert x.image_grid_thw.tolist() == [[1, 10, 10], [1, 10, 12]]
    out = _stem()(x.pixel_values, x.image_grid_thw)
    a, b = _grid(out[:100], 10, 10), _grid(out[100:], 10, 12)
    # away from the borders (receptive field: ~2 patches) the features match exactly
    torch.testing.assert_close(a[2:8, 2:8], b[2:8, 4:10], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[2:8, 2:8], b[2:8, 2:8], atol=1e-3)


def test_size_groups_cover_every_image_once_and_bound_the_padding():
    sizes = [(8, 14), (12, 8), (14, 6), (10, 14), (8, 14), (2, 40), (40, 2), (12, 12), (10, 10)]
    groups = size_groups(sizes, 0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for g in groups:
        canvas = max(sizes[i][0] for i in g) * max(sizes[i][1] for i in g) * len(g)
        assert canvas <= 1.25 * sum(sizes[i][0] * sizes[i][1] for i in g)
    assert [5] in groups and [6] in groups  # a tall and a wide strip never share a canvas
    assert len(groups) < len(sizes)  # similar sizes do
    assert all(len({sizes[i] for i in g}) == 1 for g in size_groups(sizes, 0.0))  # only equal sizes share


@pytest.mark.parametrize("max_padding", [0.0, 10.0], ids=["own-batch", "shared-padded-batch"])
@torch.no_grad()
def test_conv_stem_features_do_not_depend_on_the_rest_of_the_pack(max_padding):
    """Whether the other image runs apart or in one zero-padded batch with this one, this one's features are
    those of the image alone (the padding is re-zeroed after every layer)."""
    rng = np.random.default_rng(1)
    one = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    other = rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)
    stem = _stem(context_layers=2)
    stem.max_padding = max_padding
    alone = _processed(one)
    pack = _processed(other, one)
    n_other = int(pack.image_grid_thw[0].prod())
    torch.testing.assert_close(stem(pack.pixel_values, pack.image_grid_thw)[n_other:],
                               stem(alone.pixel_values, alone.image_grid_thw))


def test_conv_stem_config_is_validated_and_saved(tmp_path):
    with pytest.raises(ConfigError, match="vision.stem"):
        VisionConfig(stem="cnn").validate()
    with pytest.raises(ConfigError, match="power of two"):
        VisionConfig(stem="conv", patch_size=14).validate()
    with pytest.raises(ConfigError, match="stem_context_layers"):
        VisionConfig(stem="conv", stem_context_layers=-1).validate()
    fixture = FIXTURE_ROOT / "qwen3-ve-tiny"
    base = navil.load_model(fixture).config
    cfg = dataclasses.replace(base, vision=dataclasses.replace(base.vision, stem="conv", stem_context_layers=1))
    model = init_weights(NaViL(cfg), seed=0)
    model.save_pretrained(tmp_path)
    for f in fixture.glob("tokenizer*"):
        shutil.copy(f, tmp_path)
    again = navil.load_model(tmp_path)
    assert again.config.vision.stem == "conv" and again.config.vision.stem_context_layers == 1
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = _processed(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(again.extract_features(x.pixel_values, x.image_grid_thw),
                                   model.extract_features(x.pixel_values, x.image_grid_thw))


def test_official_configs_keep_the_patch_embedding():
    assert NaViLConfig().vision.stem == "patch"
    assert navil.config.navil_2b().vision.stem == "patch" and navil.config.navil_9b().vision.stem == "patch"
