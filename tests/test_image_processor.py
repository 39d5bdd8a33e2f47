"""navil.processing.image: bit-exact parity with the official NaViL preprocessing and input validation."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from navil.errors import ConfigError, ImageError
from navil.processing.image import ImageProcessor, smart_resize

# Small budget (4..64 patches of 16 px) like the fixtures, so tests stay fast.
SMALL = {"patch_size": 16, "merge_size": 2, "min_pixels": 4 * 256, "max_pixels": 64 * 256}


def _fixture_images(fixture_dir: Path) -> list[Path]:
    meta = json.loads((fixture_dir / "meta.json").read_text())
    return [fixture_dir / im["file"] for im in meta["images"]]


def _random_image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size but holds no pixel data (a cheap decompression bomb)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- official parity


def test_matches_official_fixture_bit_exact(fixture_dir: Path) -> None:
    expected = load_file(str(fixture_dir / "inputs.safetensors"))
    out = ImageProcessor.from_pretrained(fixture_dir)(_fixture_images(fixture_dir), multi_scale=True)
    assert out.pixel_values.dtype == torch.float32
    assert out.image_grid_thw.dtype == torch.int64 and out.num_scales.dtype == torch.int64
    assert torch.equal(out.image_grid_thw, expected["image_grid_thw"])
    assert torch.equal(out.num_scales, expected["num_scales"])
    assert torch.equal(out.pixel_values, expected["pixel_values"])  # bit-exact, no tolerance


def test_single_scale_is_the_full_resolution_scale(fixture_dir: Path) -> None:
    proc = ImageProcessor.from_pretrained(fixture_dir)
    images = _fixture_images(fixture_dir)
    multi, single = proc(images), proc(images, multi_scale=False)
    assert single.num_scales.tolist() == [1] * len(images)
    last = torch.cumsum(multi.num_scales, 0) - 1  # full-resolution scale is last per image
    assert torch.equal(single.image_grid_thw, multi.image_grid_thw[last])
    sizes = multi.image_grid_thw.prod(-1)
    ends = torch.cumsum(sizes, 0)
    full = torch.cat([multi.pixel_values[e - n : e] for e, n in zip(ends[last], sizes[last])])
    assert torch.equal(single.pixel_values, full)


def test_constructor_kwargs_match_from_pretrained(fixture_dir: Path) -> None:
    images = _fixture_images(fixture_dir)
    a = ImageProcessor.from_pretrained(fixture_dir)(images)
    b = ImageProcessor(**SMALL, scale_ratio=0.7071)(images)
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.image_grid_thw, b.image_grid_thw)


def test_from_pretrained_defaults_and_missing_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    proc = ImageProcessor.from_pretrained(tmp_path)
    assert (proc.patch_size, proc.merge_size) == (16, 2)
    assert (proc.min_pixels, proc.max_pixels, proc.scale_ratio) == (65536, 6291456, 0.7071)
    with pytest.raises(ConfigError):
        ImageProcessor.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------- layout and sizing


def test_patch_order_is_merge_unit_raster_and_padding_is_minus_one() -> None:
    # 4x4 patches of 16 px, patch (i, j) filled with value 8*(4i+j); trailing 16 px column and row get padded.
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    for i in range(4):
        for j in range(4):
            arr[16 * i : 16 * i + 16, 16 * j : 16 * j + 16] = 8 * (4 * i + j)
    out = ImageProcessor(**SMALL)(Image.fromarray(arr[:56, :56]), multi_scale=False)
    assert out.image_grid_thw.tolist() == [[1, 4, 4]]
    order = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3),
             (2, 0), (2, 1), (3, 0), (3, 1), (2, 2), (2, 3), (3, 2), (3, 3)]
    for row, (i, j) in enumerate(order):
        patch = out.pixel_values[row]
        value = np.float32(np.float32(8 * (4 * i + j) * (1 / 255)) - np.float32(0.5)) / np.float32(0.5)
        assert torch.all(patch[:, :8, :8] == torch.tensor(value))
    assert torch.all(out.pixel_values[15][:, 8:, :] == -1.0)  # bottom-right patch: padded rows
    assert torch.all(out.pixel_values[15][:, :, 8:] == -1.0)  # and padded columns


def test_tiny_image_is_upsampled_to_min_pixels() -> None:
    proc = ImageProcessor(**SMALL)
    h, w = smart_resize(7, 10, proc.min_pixels, proc.max_pixels)
    assert h * w >= proc.min_pixels and abs(w / h - 10 / 7) < 0.1
    out = proc(_random_image(7, 10))
    assert out.num_scales.tolist() == [1]
    _, gh, gw = out.image_grid_thw[0].tolist()
    assert gh % 2 == 0 and gw % 2 == 0 and gh * 16 >= h and gw * 16 >= w


def test_huge_image_is_downscaled_and_scales_shrink() -> None:
    proc = ImageProcessor(**SMALL)
    h, w = smart_resize(1500, 2000, proc.min_pixels, proc.max_pixels)
    assert h * w <= proc.max_pixels and abs(w / h - 4 / 3) < 0.05
    out = proc(_random_image(1500, 2000))
    grids = out.image_grid_thw
    assert torch.all(grids[:, 0] == 1) and torch.all(grids[:, 1:] % 2 == 0)
    prods = grids.prod(-1).tolist()
    assert len(prods) > 1 and prods == sorted(set(prods))  # strictly increasing: smallest first
    assert out.pixel_values.shape == (sum(prods), 3, 16, 16)


def test_image_within_budget_is_not_resized() -> None:
    assert smart_resize(70, 130, 1024, 16384) == (70, 130)
    assert smart_resize(70, 130, 1024, np.float32(7679.85)) == (64, 119)  # float32 budget of the loop


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_non_rgb_modes_are_converted_like_pil_convert(mode: str) -> None:
    base = _random_image(40, 50, seed=3)
    img = base.convert(mode)
    if mode == "RGBA":
        img.putalpha(0)  # fully transparent: official convert("RGB") keeps the colours (no white background)
    proc = ImageProcessor(**SMALL)
    assert torch.equal(proc(img).pixel_values, proc(img.convert("RGB")).pixel_values)


# ---------------------------------------------------------------- bad input


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        ImageProcessor(**SMALL)(tmp_path / "nope.png")


def test_non_image_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("definitely not an image")
    with pytest.raises(ImageError, match="not a recognised image"):
        ImageProcessor(**SMALL)(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_raises(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    _random_image(100, 120).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated"):
        ImageProcessor(**SMALL)(path)


def test_extreme_aspect_ratio_raises(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    Image.new("RGB", (402, 2)).save(path)
    for image in (path, Image.new("RGB", (402, 2))):
        with pytest.raises(ImageError, match="aspect ratio"):
            ImageProcessor(**SMALL)(image)
    with pytest.raises(ImageError, match="aspect ratio"):
        smart_resize(1, 201, 1024, 16384)


def test_pil_decompression_bomb_becomes_image_error(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageError, match="too large"):
        ImageProcessor(**SMALL, max_image_pixels=2**40)(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_own_pixel_limit_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(12000, 12000))  # under PIL's hard limit, over ours
    with pytest.raises(ImageError, match="more than the limit"):
        ImageProcessor(**SMALL, max_image_pixels=2**27)(path)
    with pytest.raises(ImageError, match="more than the limit"):
        ImageProcessor(**SMALL, max_image_pixels=100)(_random_image(20, 20))


@pytest.mark.parametrize("bad", [42, [], [None]])
def test_wrong_input_type_raises(bad) -> None:
    with pytest.raises(ImageError):
        ImageProcessor(**SMALL)(bad)
