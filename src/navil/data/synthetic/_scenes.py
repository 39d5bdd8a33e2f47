"""Scene builders: each draws one image and returns its caption, a balanced primary question and a pool
of further valid questions about the same image (used for multi-turn samples).

Scene kinds: ``objects`` (color/shape/count/position), ``text`` (ocr) and ``chart`` (chart).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from . import _render as R

OCR_WORDS: tuple[str, ...] = (
    "CAT", "DOG", "SUN", "BUS", "CAR", "BOX", "KEY", "CUP", "HAT", "PEN",
    "FISH", "BIRD", "TREE", "BOOK", "MOON", "LAMP",
)
POSITIONS: tuple[str, ...] = ("left", "right", "above", "below")
CHART_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")
CHART_MAX_VALUE = 5
CHART_MIN_BARS = 3
CHART_MIN_UNIT = 16  # px per value step (gridline spacing)
MAX_COUNT = 5  # count answers are "1".."MAX_COUNT" (capped by max_objects)
MAX_DISTINCT = min(len(R.COLORS), len(R.SHAPES))  # objects with unique colour AND shape per scene

_LOCATIONS = {
    (0, 0): "at the top left", (0, 1): "at the top", (0, 2): "at the top right",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "at the bottom left", (2, 1): "at the bottom", (2, 2): "at the bottom right",
}

QA = tuple[str, str, str]  # (category, question, answer)


@dataclass
class Obj:
    color: str
    shape: str
    x: float = 0.0
    y: float = 0.0
    size: float = 0.0


@dataclass
class Scene:
    kind: str
    image: Image.Image
    caption: str
    primary: QA
    pool: list[QA] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- geometry

def relation(a: Obj, b: Obj) -> str | None:
    """Where ``a`` is relative to ``b`` (left/right/above/below) if one axis clearly dominates, else None."""
    dx, dy = a.x - b.x, a.y - b.y
    sep = (a.size + b.size) / 2.0
    if abs(dx) >= 2 * abs(dy) and abs(dx) >= sep:
        return "left" if dx < 0 else "right"
    if abs(dy) >= 2 * abs(dx) and abs(dy) >= sep:
        return "above" if dy < 0 else "below"
    return None


def _overlaps(a: Obj, b: Obj) -> bool:
    lim = (a.size + b.size) / 2.0 + R.GAP
    return abs(a.x - b.x) < lim and abs(a.y - b.y) < lim


def _place(rng: random.Random, w: int, h: int, objs: list[Obj], rel: str | None) -> bool:
    """Random non-overlapping centres for ``objs`` (in place); with ``rel``, relation(objs[0], objs[1]) == rel."""
    for i, o in enumerate(objs):
        r = o.size / 2.0
        if w - 2 * r - 2 < 0 or h - 2 * r - 2 < 0:
            return False
        for _ in range(60):
            o.x = round(rng.uniform(r + 1, w - r - 1), 1)
            o.y = round(rng.uniform(r + 1, h - r - 1), 1)
            if any(_overlaps(o, p) for p in objs[:i]):
                continue
            if rel is not None and i == 1 and relation(objs[0], o) != rel:
                continue
            break
        else:
            return False
    return True


def _size_range(scale: float) -> tuple[int, int]:
    """Smallest and largest object size (bounding-box side, px) at ``scale``."""
    return round(R.MIN_OBJECT * scale), round(R.MAX_OBJECT * scale)


def _fitted_layout(rng: random.Random, objs: list[Obj], rel: str | None, scale: float,
                   fill: float) -> tuple[int, int] | None:
    """Object sizes first, then a canvas that their bounding boxes cover about ``fill`` of (+-25%); the canvas
    grows while the objects cannot be placed. None when they never fit."""
    lo, hi = _size_range(scale)
    cap = max(lo, min(hi, int(math.sqrt(fill * R.MAX_AREA / len(objs))) - R.GAP))
    for o in objs:
        o.size = float(rng.randint(lo, cap))
    area = sum((o.size + R.GAP) ** 2 for o in objs) / (fill * rng.uniform(0.8, 1.25))
    side = int(max(o.size for o in objs)) + 2 * R.GAP
    w, h = R.canvas_for_area(rng, area, side, side)
    for _ in range(40):
        for _ in range(6):
            if _place(rng, w, h, objs, rel):
                return w, h
        bigger = R.grow(w, h)
        if bigger is None:
            return None
        w, h = bigger
    return None


def _layout(rng: random.Random, objs: list[Obj], rel: str | None = None, scale: float = 1.0,
            fill: float | None = None) -> tuple[int, int]:
    """Pick a canvas and object sizes/positions; grows the canvas (then shrinks objects) until they fit.
    Object sizes are drawn from [MIN_OBJECT, MAX_OBJECT] * ``scale``. With ``fill`` the canvas is sized to
    the objects (see `_fitted_layout`); otherwise its size is drawn independently of them."""
    if fill is not None and (fitted := _fitted_layout(rng, objs, rel, scale, fill)) is not None:
        return fitted
    w, h = R.canvas_size(rng)
    n = len(objs)
    lo, hi = _size_range(scale)
    for round_ in range(60):
        # Objects cover at most ~30% of the canvas and at most 45% of its shorter side.
        smax = min(hi, min(w, h) * 0.45, math.sqrt(0.3 * w * h / n) - R.GAP)
        smax = max(lo, smax)
        if round_ >= 30:
            smax = lo
        for o in objs:
            o.size = float(rng.randint(lo, int(smax)))
        for _ in range(6):
            if _place(rng, w, h, objs, rel):
                return w, h
        bigger = R.grow(w, h)
        if bigger is not None:
            w, h = bigger
    raise RuntimeError("could not lay out synthetic objects")  # pragma: no cover


def _a(word: str) -> str:
    """``word`` with its indefinite article ("a red", "an orange")."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _location(o: Obj, w: int, h: int) -> str:
    col = min(2, int(3 * o.x / w))
    row = min(2, int(3 * o.y / h))
    return _LOCATIONS[(row, col)]


# ----------------------------------------------------------------------------- objects scenes

def _distinct_objs(rng: random.Random, n: int, color: str | None = None, shape: str | None = None) -> list[Obj]:
    """n objects with pairwise distinct colours and distinct shapes; the first has the given colour/shape."""
    colors = [c for c in R.COLORS if c != color]
    shapes = [s for s in R.SHAPES if s != shape]
    rng.shuffle(colors)
    rng.shuffle(shapes)
    if color is not None:
        colors.insert(0, color)
    if shape is not None:
        shapes.insert(0, shape)
    return [Obj(colors[i], shapes[i]) for i in range(n)]


def _objects_pool(objs: list[Obj], max_count: int) -> list[QA]:
    pool: list[QA] = []
    colors = [o.color for o in objs]
    shapes = [o.shape for o in objs]
    for o in objs:
        if shapes.count(o.shape) == 1:
            pool.append(("color", f"What color is the {o.shape}?", o.color))
        if colors.count(o.color) == 1:
            pool.append(("shape", f"What shape is the {o.color} object?", o.shape))
    # Per-colour / per-shape counts are left out on purpose: in most scenes they would almost always be
    # "1", teaching a question prior that the balanced primary count questions then contradict.
    if 1 <= len(objs) <= max_count:
        pool.append(("count", "How many objects are there?", str(len(objs))))
    unique = [o for o in objs if sum(p.color == o.color and p.shape == o.shape for p in objs) == 1]
    for a in unique:
        for b in unique:
            if a is not b and (rel := relation(a, b)) is not None:
                pool.append(("position", _position_question(a, b), rel))
    return pool


def _position_question(a: Obj, b: Obj) -> str:
    return f"Where is the {a.color} {a.shape} relative to the {b.color} {b.shape}?"


def reading_order(x: float, y: float, height: int) -> tuple[int, float]:
    """Sort key of an object centred at (x, y) in an image `height` px tall, as captions list objects: top,
    middle, bottom band, then left to right."""
    return min(2, int(3 * y / height)), x


def _render_objects(rng: random.Random, objs: list[Obj], w: int, h: int, max_count: int) -> tuple:
    img = R.canvas(w, h, R.gray_background(rng), rng, R.GRADIENT)
    draw = ImageDraw.Draw(img)
    for o in objs:
        R.draw_shape(draw, o.shape, o.x, o.y, o.size, R.jitter(R.PALETTE[o.color], rng))
    ordered = sorted(objs, key=lambda o: reading_order(o.x, o.y, h))
    parts = [f"{_a(o.color)} {o.shape} {_location(o, w, h)}" for o in ordered]
    if len(parts) == 1:
        caption = parts[0] + "."
    else:
        caption = f"{len(parts)} objects: " + ", ".join(parts[:-1]) + " and " + parts[-1] + "."
    meta = {
        "scene": "objects", "background": "gray",
        "objects": [{"color": o.color, "shape": o.shape, "x": o.x, "y": o.y, "size": o.size} for o in objs],
    }
    return img, caption, _objects_pool(objs, max_count), meta


def objects_scene(rng: random.Random, category: str, max_objects: int, scale: float = 1.0,
                  fill: float | None = None) -> Scene:
    """A scene of plain shapes whose primary question (color/shape/count/position) has a uniform answer;
    object sizes are multiplied by ``scale``; ``fill`` sizes the canvas to the objects (see `_layout`)."""
    max_count = max(1, min(MAX_COUNT, max_objects))
    rel = None
    if category == "color":
        n = rng.randint(1, max(1, min(MAX_DISTINCT, max_objects)))
        objs = _distinct_objs(rng, n, color=rng.choice(R.COLORS))
        t = objs[0]
        primary = ("color", f"What color is the {t.shape}?", t.color)
    elif category == "shape":
        n = rng.randint(1, max(1, min(MAX_DISTINCT, max_objects)))
        objs = _distinct_objs(rng, n, shape=rng.choice(R.SHAPES))
        t = objs[0]
        primary = ("shape", f"What shape is the {t.color} object?", t.shape)
    elif category == "position":
        n = rng.randint(2, max(2, min(MAX_DISTINCT, max_objects)))
        objs = _distinct_objs(rng, n)
        rel = rng.choice(POSITIONS)
        primary = ("position", _position_question(objs[0], objs[1]), rel)
    elif category == "count":
        k = rng.randint(1, max_count)
        variant = rng.choice(("all", "shape", "color"))
        extra = rng.randint(0, max(0, max_objects + 1 - k)) if variant != "all" else 0
        if variant == "all":
            objs = [Obj(rng.choice(R.COLORS), rng.choice(R.SHAPES)) for _ in range(k)]
            question = "How many objects are there?"
        elif variant == "shape":
            s = rng.choice(R.SHAPES)
            others = [x for x in R.SHAPES if x != s]
            objs = [Obj(rng.choice(R.COLORS), s) for _ in range(k)]
            objs += [Obj(rng.choice(R.COLORS), rng.choice(others)) for _ in range(extra)]
            question = f"How many {R.SHAPE_PLURALS[s]} are there?"
        else:
            c = rng.choice(R.COLORS)
            others = [x for x in R.COLORS if x != c]
            objs = [Obj(c, rng.choice(R.SHAPES)) for _ in range(k)]
            objs += [Obj(rng.choice(others), rng.choice(R.SHAPES)) for _ in range(extra)]
            question = f"How many {c} objects are there?"
        rng.shuffle(objs)
        primary = ("count", question, str(k))
    else:  # pragma: no cover - guarded by make_sample
        raise ValueError(category)
    w, h = _layout(rng, objs, rel, scale, fill)
    img, caption, pool, meta = _render_objects(rng, objs, w, h, max_count)
    return Scene("objects", img, caption, primary, pool, meta)


# ----------------------------------------------------------------------------- text (ocr)

def text_scene(rng: random.Random, scale: float = 1.0) -> Scene:
    """A short word in a random colour; font size 30..46 px times ``scale`` (smaller if it would not fit)."""
    word = rng.choice(OCR_WORDS)
    color = rng.choice(R.COLORS)
    size = rng.randint(round(30 * scale), round(46 * scale))
    mask = R.text_mask(word, size)
    while mask.width + 12 > R.MAX_SIDE:
        size = size * (R.MAX_SIDE - 12) // (mask.width + 1)
        mask = R.text_mask(word, size)
    gw, gh = mask.size
    w, h = R.canvas_size(rng, min_w=gw + 12, min_h=gh + 12)
    img = R.canvas(w, h, R.gray_background(rng), rng, R.GRADIENT)
    x = rng.randint(4, max(4, w - gw - 4))
    y = rng.randint(4, max(4, h - gh - 4))
    img.paste(R.jitter(R.PALETTE[color], rng), (x, y, x + gw, y + gh), mask)
    caption = f"the word {word} in {color} on gray."
    pool = [("ocr", "What word is written in the image?", word), ("color", "What color is the word?", color)]
    meta = {"scene": "text", "word": word, "color": color, "font_size": size, "background": "gray",
            "box": [x, y, x + gw, y + gh]}
    return Scene("text", img, caption, pool[0], pool, meta)


# ----------------------------------------------------------------------------- bar charts

def chart_scene(rng: random.Random, scale: float = 1.0) -> Scene:
    """A bar chart with 3..5 lettered bars of values 1..5; bars, gridline spacing and labels scaled by
    ``scale`` (the width is capped by the canvas limits, so wide charts get narrower bar slots)."""
    if rng.random() < 0.5:  # "which bar is the tallest?" with a uniformly chosen answer letter
        qtype = "tallest"
        win = rng.randrange(len(CHART_LETTERS))
        n = rng.randint(max(CHART_MIN_BARS, win + 1), len(CHART_LETTERS))
        top = rng.randint(2, CHART_MAX_VALUE)
        values = [rng.randint(1, top - 1) for _ in range(n)]
        values[win] = top
    else:  # "what is the value of bar X?" with a uniformly chosen value
        qtype = "value"
        n = rng.randint(CHART_MIN_BARS, len(CHART_LETTERS))
        win = rng.randrange(n)
        values = [rng.randint(1, CHART_MAX_VALUE) for _ in range(n)]
    letters = CHART_LETTERS[:n]
    color = rng.choice([c for c in R.COLORS if c != "yellow"])  # yellow is weak on the light background
    label_px = round(16 * scale)
    min_unit = round(CHART_MIN_UNIT * scale)
    margin_l, margin_r, margin_t, label_h = 8, 6, 8, label_px + 6
    need_w = margin_l + margin_r + round(n * 30 * scale)  # canvas_size caps it at MAX_SIDE
    need_h = margin_t + label_h + CHART_MAX_VALUE * min_unit + 2
    w, h = R.canvas_size(rng, min_w=need_w, min_h=need_h)
    unit = max(min_unit, min(round(30 * scale), (h - margin_t - label_h) // CHART_MAX_VALUE))
    base = margin_t + unit * CHART_MAX_VALUE
    slot = (w - margin_l - margin_r) / n
    bar_w = min(slot * 0.8, max(14.0 * scale, min(40.0 * scale, slot * rng.uniform(0.5, 0.75))))
    bgv = rng.randint(228, 248)
    img = Image.new("RGB", (w, h), (bgv, bgv, bgv))
    draw = ImageDraw.Draw(img)
    for v in range(1, CHART_MAX_VALUE + 1):  # light gridline at every integer value
        draw.line([(margin_l, base - v * unit), (w - margin_r, base - v * unit)], fill=(165, 165, 165), width=1)
    f = R.font(label_px)
    bar_rgb = R.jitter(R.PALETTE[color], rng)
    for i, (letter, v) in enumerate(zip(letters, values)):
        cx = margin_l + slot * (i + 0.5)
        draw.rectangle([cx - bar_w / 2, base - v * unit, cx + bar_w / 2, base], fill=bar_rgb)
        x0, _, x1, _ = draw.textbbox((0, 0), letter, font=f)
        draw.text((cx - (x0 + x1) / 2, base + 3), letter, font=f, fill=(0, 0, 0))
    draw.line([(margin_l, margin_t - 2), (margin_l, base)], fill=(0, 0, 0), width=2)
    draw.line([(margin_l, base), (w - margin_r, base)], fill=(0, 0, 0), width=2)
    caption = f"{_a(color)} bar chart: " + ", ".join(f"{a} {v}" for a, v in zip(letters, values)) + "."
    # No secondary "tallest" turns: letters A..C exist in every chart, so they would skew that prior.
    pool: list[QA] = [("chart", f"What is the value of bar {a}?", str(v)) for a, v in zip(letters, values)]
    if qtype == "tallest":
        primary = ("chart", "Which bar is the tallest?", letters[win])
    else:
        primary = ("chart", f"What is the value of bar {letters[win]}?", str(values[win]))
    meta = {"scene": "chart", "color": color, "bars": dict(zip(letters, values)), "question_type": qtype,
            "plot": {"base_y": base, "unit": unit, "label_px": label_px, "bar_width": round(bar_w, 1),
                     "bar_x": [round(margin_l + slot * (i + 0.5), 1) for i in range(n)]}}
    return Scene("chart", img, caption, primary, pool, meta)
