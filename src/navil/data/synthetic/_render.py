"""Drawing primitives for the synthetic tasks: palette, shapes, fonts, canvas sizes and noise.

Everything here is deterministic given the random generators passed in; no per-pixel Python loops.
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Clearly distinct, saturated colours that all contrast with a mid-gray background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 230),
    "yellow": (245, 220, 30),
    "purple": (150, 60, 200),
    "orange": (255, 140, 0),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
}

MIN_SIDE = 64
MAX_SIDE = 224
# At 16-px patches an image has at most ~150 patches (150 * 16 * 16 pixels).
MAX_AREA = 150 * 16 * 16
MIN_OBJECT = 22  # smallest object size in pixels (bounding-box side)
MAX_OBJECT = 44
GAP = 4  # minimal free space between object bounding boxes
GRADIENT = 14.0  # max background brightness ramp (+- levels)


def canvas_size(rng: random.Random, min_w: int = MIN_SIDE, min_h: int = MIN_SIDE) -> tuple[int, int]:
    """A random (width, height): area uniform in [64^2, MAX_AREA], aspect in [1/2.5, 2.5], each side at
    least its minimum (content that needs more than MAX_AREA keeps its minimum size)."""
    return canvas_for_area(rng, rng.uniform(MIN_SIDE * MIN_SIDE, MAX_AREA), min_w, min_h)


def canvas_for_area(rng: random.Random, area: float, min_w: int = MIN_SIDE, min_h: int = MIN_SIDE
                    ) -> tuple[int, int]:
    """A (width, height) of about ``area`` pixels (at most MAX_AREA) with a random aspect in [1/2.5, 2.5],
    each side within [its minimum, MAX_SIDE]."""
    ratio = math.exp(rng.uniform(-math.log(2.5), math.log(2.5)))
    w = round(math.sqrt(area * ratio))
    h = round(math.sqrt(area / ratio))
    min_w, min_h = min(MAX_SIDE, max(MIN_SIDE, min_w)), min(MAX_SIDE, max(MIN_SIDE, min_h))
    w = min(MAX_SIDE, max(min_w, w))
    h = min(MAX_SIDE, max(min_h, h))
    return fit_area(w, h, min_w, min_h)


def fit_area(w: int, h: int, min_w: int = MIN_SIDE, min_h: int = MIN_SIDE) -> tuple[int, int]:
    """Shrink the larger side (never below its minimum) until w * h <= MAX_AREA or both sides are minimal."""
    while w * h > MAX_AREA:
        can_w, can_h = w > min_w, h > min_h
        if can_w and (w >= h or not can_h):
            w = max(min_w, int(MAX_AREA // h))
        elif can_h:
            h = max(min_h, int(MAX_AREA // w))
        else:
            break
    return w, h


def grow(w: int, h: int, factor: float = 1.15) -> tuple[int, int] | None:
    """A larger canvas within the limits, or None when the canvas cannot grow any more."""
    nw = min(MAX_SIDE, math.ceil(w * factor))
    nh = min(MAX_SIDE, math.ceil(h * factor))
    # Prefer growing the smaller side when the area cap is reached.
    if nw * nh > MAX_AREA:
        if w <= h:
            nw, nh = min(MAX_SIDE, int(MAX_AREA // h)), h
        else:
            nw, nh = w, min(MAX_SIDE, int(MAX_AREA // w))
    if (nw, nh) == (w, h) or nw < w or nh < h:
        return None
    return nw, nh


def gray_background(rng: random.Random) -> tuple[int, int, int]:
    g = rng.randint(105, 150)
    return (g, g, g)


def jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    """``rgb`` with each channel moved by up to +-amount (colours stay clearly distinct)."""
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def canvas(w: int, h: int, base: tuple[int, int, int], rng: random.Random, gradient: float) -> Image.Image:
    """A plain background with a linear brightness gradient of up to +-``gradient`` levels in a random
    direction (varies the background while keeping PNGs small, unlike pixel noise)."""
    amp = rng.uniform(0.0, gradient)
    if amp < 1.0:
        return Image.new("RGB", (w, h), base)
    theta = rng.uniform(0.0, 2 * math.pi)
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)
    ramp = (math.cos(theta) * xs[None, :] + math.sin(theta) * ys[:, None]) * (amp / math.sqrt(2))
    arr = np.asarray(base, dtype=np.float32)[None, None, :] + ramp[:, :, None]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float,
               fill: tuple[int, int, int]) -> None:
    """Draw a filled ``shape`` whose bounding box is ``size`` px wide, centred at (cx, cy)."""
    r = size / 2.0
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        q = r * 0.88
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        t = size * 0.17
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
    else:  # pragma: no cover - guarded by callers
        raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (Pillow >= 10.1 with FreeType) at ``size`` px."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=1)
def has_scalable_font() -> bool:
    return isinstance(font(20), ImageFont.FreeTypeFont)


def text_mask(text: str, size: int) -> Image.Image:
    """An "L" coverage mask of ``text`` cropped to its ink, at about ``size`` px font size."""
    if has_scalable_font():
        f = font(size)
        x0, y0, x1, y1 = f.getbbox(text)
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).text((-x0, -y0), text, font=f, fill=255)
        return mask
    # Fallback without FreeType: render the small bitmap font and upscale it (blocky but legible).
    f = ImageFont.load_default()
    x0, y0, x1, y1 = f.getbbox(text)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), text, font=f, fill=255)
    scale = max(1, round(size * 0.72 / max(1, y1 - y0)))
    return mask.resize((mask.width * scale, mask.height * scale), Image.NEAREST)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard-normal noise (cropped at random offsets: much faster than fresh draws)."""
    size = MAX_SIDE + 64
    return np.random.default_rng(20240611).standard_normal((size, size, 3), dtype=np.float32)


def add_noise(img: Image.Image, nrng: np.random.Generator, max_sigma: float) -> Image.Image:
    """Add Gaussian pixel noise with a per-image std drawn uniformly from [0, max_sigma]."""
    if max_sigma <= 0:
        return img
    sigma = float(nrng.uniform(0.0, max_sigma))
    if sigma < 0.5:
        return img
    bank = _noise_bank()
    w, h = img.size
    ox = int(nrng.integers(0, bank.shape[1] - w + 1))
    oy = int(nrng.integers(0, bank.shape[0] - h + 1))
    arr = np.asarray(img, dtype=np.float32) + bank[oy:oy + h, ox:ox + w] * sigma
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
