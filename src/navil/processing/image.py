"""NaViL image preprocessing: official Qwen2-VL-style any-resolution processor plus the multi-scale loop.

Reproduces, bit for bit, what the official demo produces with NaViL's processor (spec §2, §2.1):
smart resize (factor 1) within [min_pixels, max_pixels], PIL bicubic resize on uint8 RGB, zero-pad
bottom/right to multiples of patch*merge, rescale 1/255 (float64 -> float32) then (x - 0.5) / 0.5 in
float32, patches in 2x2 merge-unit raster order, scales smallest first. Depends only on PIL, numpy, torch.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from navil.errors import ConfigError, ImageError

ImageLike = Image.Image | str | os.PathLike

MAX_ASPECT_RATIO = 200
DEFAULT_MAX_IMAGE_PIXELS = 2**28
# uint8 -> normalised float32, exactly as transformers' rescale (x.astype(float64) * (1/255) -> float32)
# followed by normalize ((x - 0.5) / 0.5 in float32). Pixels are independent, so a lookup table is exact.
_LUT = (
    (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32) - np.float32(0.5)
) / np.float32(0.5)


@dataclass
class ImageInputs:
    """Processor output: patch rows, per-scale (t, h, w) grids in patches, and scales per image."""

    pixel_values: torch.Tensor  # float32 [N_patches, 3, p, p]
    image_grid_thw: torch.Tensor  # int64 [n_scales_total, 3]
    num_scales: torch.Tensor  # int64 [n_images]


def smart_resize(
    height: int, width: int, min_pixels: int, max_pixels: int | np.float32
) -> tuple[int, int]:
    """Qwen2-VL ``smart_resize`` with factor 1: target (height, width) within the pixel budget.

    ``max_pixels`` is a Python int for the full budget but an ``np.float32`` inside the multi-scale loop,
    because the official loop passes a float32 torch scalar; comparison and ``h*w / max_pixels`` then
    happen in float32 (NumPy 2 promotion matches torch here), which can change the floor() result.
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageError(
            f"image aspect ratio must be at most {MAX_ASPECT_RATIO}, got {width}x{height} (WxH)"
        )
    hw = height * width
    if hw > max_pixels:
        beta = math.sqrt(hw / max_pixels)
        return max(1, math.floor(height / beta)), max(1, math.floor(width / beta))
    if hw < min_pixels:
        beta = math.sqrt(min_pixels / hw)
        return math.ceil(height * beta), math.ceil(width * beta)
    return height, width


def load_image(image: ImageLike, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open (if a path), validate and fully decode one image; return it as a new RGB PIL image.

    Non-RGB modes use plain ``convert("RGB")`` (alpha is dropped, not composited on white), as the
    official demo's ``Image.open(f).convert('RGB')`` does before the processor sees the image.
    """
    if isinstance(image, Image.Image):
        return _decode_rgb(image, "<PIL image>", max_image_pixels)
    if not isinstance(image, (str, os.PathLike)):
        raise ImageError(f"expected a PIL image or a file path, got {type(image).__name__}")
    try:
        with Image.open(image) as img:  # reads the header only
            return _decode_rgb(img, str(image), max_image_pixels)
    except FileNotFoundError as e:
        raise ImageError(f"image file not found: {image}") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"image {image} is too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"not a recognised image file: {image}") from e
    except OSError as e:
        raise ImageError(f"cannot open image {image}: {e}") from e


def _decode_rgb(img: Image.Image, name: str, max_image_pixels: int) -> Image.Image:
    """Check size/aspect before decoding, then decode (detecting truncation) and convert to RGB."""
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"image {name} is empty ({w}x{h})")
    if w * h > max_image_pixels:
        raise ImageError(f"image {name} has {w}x{h} pixels, more than the limit {max_image_pixels}")
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise ImageError(f"image {name} aspect ratio must be at most {MAX_ASPECT_RATIO}, got {w}x{h}")
    try:
        img.load()
        return img.convert("RGB")  # always a new, fully decoded image
    except Exception as e:  # truncated/corrupt data surfaces as OSError, SyntaxError, zlib.error, ...
        raise ImageError(f"cannot decode image {name} (truncated or corrupt?): {e}") from e


def to_patches(image: torch.Tensor, p: int, m: int) -> torch.Tensor:
    """[H, W, C] -> [H/p * W/p, C, p, p] patches in m x m merge-unit raster order (the official layout: merge row,
    merge col, in-unit row, in-unit col). H and W must be multiples of p * m."""
    h, w, c = image.shape
    gh, gw = h // p, w // p
    x = image.reshape(gh // m, m, p, gw // m, m, p, c).permute(0, 3, 1, 4, 6, 2, 5)
    return x.reshape(gh * gw, c, p, p)


def from_patches(patches: torch.Tensor, gh: int, gw: int, m: int) -> torch.Tensor:
    """The inverse of `to_patches`, channels first: [gh * gw, C, p, p] -> [C, gh * p, gw * p]."""
    _, c, p, _ = patches.shape
    x = patches.reshape(gh // m, gw // m, m, m, c, p, p).permute(4, 0, 2, 5, 1, 3, 6)
    return x.reshape(c, gh * p, gw * p)


class ImageProcessor:
    """NaViL any-resolution multi-scale image processor (official layout, see module docstring)."""

    def __init__(
        self,
        patch_size: int = 16,
        merge_size: int = 2,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        scale_ratio: float = 0.7071,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.patch_size = int(patch_size)
        self.merge_size = int(merge_size)
        self.min_pixels = int(min_pixels if min_pixels is not None else 256 * patch_size**2)
        self.max_pixels = int(max_pixels if max_pixels is not None else 24576 * patch_size**2)
        self.scale_ratio = float(scale_ratio)
        self.max_image_pixels = int(max_image_pixels)
        if self.patch_size < 1 or self.merge_size < 1:
            raise ConfigError(f"patch_size and merge_size must be >= 1, got {patch_size}, {merge_size}")
        if not 1 <= self.min_pixels <= self.max_pixels:
            raise ConfigError(f"need 1 <= min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")
        if not 0.0 < self.scale_ratio < 1.0:
            raise ConfigError(f"scale_ratio must be in (0, 1), got {scale_ratio}")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> ImageProcessor:
        """Build from a NaViL checkpoint folder's ``config.json`` (spec code defaults for missing keys)."""
        cfg_path = Path(path)
        cfg_path = cfg_path / "config.json" if cfg_path.is_dir() else cfg_path
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read NaViL config {cfg_path}: {e}") from e
        try:
            p = int((cfg.get("vision_config") or {}).get("patch_size", 16))
            kwargs = {
                "patch_size": p,
                "merge_size": int(1 / float(cfg.get("downsample_ratio", 0.5))),
                "min_pixels": int(cfg.get("min_dynamic_patch", 256)) * p * p,
                "max_pixels": int(cfg.get("max_dynamic_patch", 24576)) * p * p,
                "scale_ratio": float(cfg.get("scale_downsample_ratio", 0.7071)),
            }
        except (TypeError, ValueError, ZeroDivisionError, AttributeError) as e:
            raise ConfigError(f"bad image-processing value in {cfg_path}: {e}") from e
        return cls(**{**kwargs, **overrides})

    def __call__(self, images: ImageLike | Sequence[ImageLike], multi_scale: bool = True) -> ImageInputs:
        """Process one image or a list; each image gets the full pixel budget, concatenated in order."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ImageError("no images given")
        pixels, grids, counts = [], [], []
        for image in images:
            rgb = load_image(image, self.max_image_pixels)
            sizes = self.scale_sizes(rgb.height, rgb.width, multi_scale)
            pixels += [self._process_scale(rgb, size) for size in sizes]
            grids += [self.grid_of(size) for size in sizes]
            counts.append(len(sizes))
        return ImageInputs(
            pixel_values=torch.cat(pixels),
            image_grid_thw=torch.tensor(grids, dtype=torch.int64),
            num_scales=torch.tensor(counts, dtype=torch.int64),
        )

    def grid_of(self, size: tuple[int, int]) -> tuple[int, int, int]:
        """(1, gh, gw) patch grid of a resized (h, w) scale after padding to multiples of patch*merge."""
        unit, m = self.patch_size * self.merge_size, self.merge_size
        return (1, -(-size[0] // unit) * m, -(-size[1] // unit) * m)

    def scale_sizes(self, height: int, width: int, multi_scale: bool = True) -> list[tuple[int, int]]:
        """Resized (h, w) of every scale of an image of this size, smallest first (official multi-scale loop:
        re-derive from the original at ~half the padded area until too small). Needs the size only."""
        sizes = [smart_resize(height, width, self.min_pixels, self.max_pixels)]
        ratio_sq = np.float32(self.scale_ratio**2)  # official: int64 tensor * python float -> float32
        while multi_scale:
            smallest = math.prod(self.grid_of(sizes[0]))
            max_pixels = np.float32(smallest * self.patch_size**2) * ratio_sq
            if max_pixels < self.min_pixels:
                break
            size = smart_resize(height, width, self.min_pixels, max_pixels)
            if math.prod(self.grid_of(size)) >= smallest:
                break
            sizes.insert(0, size)
        return sizes

    def _process_scale(self, img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        """Resize to `size`, pad, normalise and patchify one scale -> [gh*gw, 3, p, p]."""
        h, w = size
        if (h, w) != (img.height, img.width):
            img = img.resize((w, h), Image.Resampling.BICUBIC)
        p, m = self.patch_size, self.merge_size
        unit = p * m
        padded = np.zeros((-(-h // unit) * unit, -(-w // unit) * unit, 3), dtype=np.uint8)
        padded[:h, :w] = np.asarray(img, dtype=np.uint8)
        return to_patches(torch.from_numpy(_LUT[padded]), p, m)  # [H, W, 3] float32 -> patches
