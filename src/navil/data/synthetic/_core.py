"""Seeds, categories, the SyntheticSample record and the sample generators."""
from __future__ import annotations

import bisect
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ...errors import NavilError
from . import _render as R
from . import _scenes as S

CATEGORIES: tuple[str, ...] = ("color", "shape", "count", "position", "ocr", "chart")
SPLITS: dict[str, int] = {"train": 1, "val": 2, "test": 3}
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val"}
DEFAULT_MAX_OBJECTS = 5
MAX_CANVAS_FILL = 0.5  # objects' bounding boxes (+ gaps) must still be placeable without overlap
MAX_OBJECT_SCALE = 2.0  # charts (5 value steps + labels) and five objects still fit the largest canvas
_INDEX_BITS = 36  # up to ~6.9e10 samples per split
_SPLIT_BITS = 4

# Curriculum presets: keyword arguments for make_sample / iter_samples / export_*.
CURRICULUM: dict[str, dict] = {
    "easy": {"categories": ("color", "shape"), "max_objects": 1},
    "medium": {"categories": ("color", "shape", "count", "position"), "max_objects": 3},
    "full": {"categories": CATEGORIES, "max_objects": DEFAULT_MAX_OBJECTS},
}


def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise NavilError(f"unknown synthetic category {category!r}; expected one of {CATEGORIES}")


def answer_set(category: str, max_objects: int = DEFAULT_MAX_OBJECTS) -> tuple[str, ...]:
    """Every answer a primary question of ``category`` can have (exact strings)."""
    _check_category(category)
    if category == "color":
        return R.COLORS
    if category == "shape":
        return R.SHAPES
    if category == "count":
        return tuple(str(k) for k in range(1, max(1, min(S.MAX_COUNT, max_objects)) + 1))
    if category == "position":
        return S.POSITIONS
    if category == "ocr":
        return S.OCR_WORDS
    return S.CHART_LETTERS + tuple(str(v) for v in range(1, S.CHART_MAX_VALUE + 1))


def category_chance(category: str, max_objects: int = DEFAULT_MAX_OBJECTS) -> float:
    """Exact-match accuracy of the best image-blind guesser that sees the question.

    Primary answers are uniform over ``answer_set`` for every category except ``chart``, where the
    question type (tallest bar -> letter, bar value -> number, 50/50) reveals which half of the answer set
    applies; both halves are uniform over 5 values, so chance is 1/5 rather than 1/10.
    """
    if category == "chart":
        return 1.0 / len(S.CHART_LETTERS)
    return 1.0 / len(answer_set(category, max_objects))


CATEGORY_ANSWERS: dict[str, tuple[str, ...]] = {c: answer_set(c) for c in CATEGORIES}
CATEGORY_CHANCE: dict[str, float] = {c: category_chance(c) for c in CATEGORIES}


@dataclass
class SyntheticSample:
    """One synthetic image with its caption and questions.

    ``question``/``answer`` are the primary turn (answer uniform over the category's answer set);
    ``turns`` holds all (category, question, answer) turns, primary first. ``meta`` is JSON-serialisable
    ground truth for the scene (objects with centres/sizes, word, bar values, ...).
    """

    image: Image.Image
    category: str
    question: str
    answer: str
    caption: str
    turns: list[tuple[str, str, str]] = field(default_factory=list)
    split: str = "train"
    index: int = 0
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"synthetic-{self.split}-{self.seed}-{self.index}"

    def regions(self) -> list[dict]:
        """Labelled boxes of what the image shows, for grounding losses: ``{"box": [x0, y0, x1, y1]`` (fractions
        of the image width/height) ``, "label", "color"}``: each object (label: its shape), the word (label: the
        word) and each bar of a chart (label: ``"bar <value>"``), each with the colour it is drawn in."""
        w, h = self.image.size
        m = self.meta

        def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
            return [round(x0 / w, 4), round(y0 / h, 4), round(x1 / w, 4), round(y1 / h, 4)]

        if m.get("scene") == "text":
            return [{"box": box(*m["box"]), "label": m["word"], "color": m["color"]}]
        if m.get("scene") == "chart":
            plot = m["plot"]
            half = plot["bar_width"] / 2
            return [{"box": box(x - half, plot["base_y"] - v * plot["unit"], x + half, plot["base_y"]),
                     "label": f"bar {v}", "color": m["color"]} for x, v in zip(plot["bar_x"], m["bars"].values())]
        return [{"box": box(o["x"] - o["size"] / 2, o["y"] - o["size"] / 2, o["x"] + o["size"] / 2,
                            o["y"] + o["size"] / 2), "label": o["shape"], "color": o["color"]}
                for o in m.get("objects", ())]


def normalize_split(split: str) -> str:
    s = _SPLIT_ALIASES.get(split, split)
    if s not in SPLITS:
        raise NavilError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return s


def sample_seed(split: str, index: int, seed: int = 0) -> int:
    """The per-sample seed: an injective packing of (seed, split, index), so splits never share a seed."""
    if not isinstance(index, int) or not 0 <= index < (1 << _INDEX_BITS):
        raise NavilError(f"sample index must be an int in [0, 2**{_INDEX_BITS}), got {index!r}")
    if not isinstance(seed, int) or seed < 0:
        raise NavilError(f"seed must be a non-negative int, got {seed!r}")
    code = SPLITS[normalize_split(split)]
    return (seed << (_INDEX_BITS + _SPLIT_BITS)) | (code << _INDEX_BITS) | index


def _category_table(categories: Sequence[str] | None,
                    weights: Mapping[str, float] | Sequence[float] | None) -> tuple[tuple[str, ...], list[float]]:
    cats = tuple(categories) if categories is not None else CATEGORIES
    if not cats:
        raise NavilError("categories must not be empty")
    for c in cats:
        _check_category(c)
    if weights is None:
        ws = [1.0] * len(cats)
    elif isinstance(weights, Mapping):
        unknown = set(weights) - set(cats)
        if unknown:
            raise NavilError(f"weights given for categories not in use: {sorted(unknown)}")
        ws = [float(weights.get(c, 0.0)) for c in cats]
    else:
        ws = [float(x) for x in weights]
        if len(ws) != len(cats):
            raise NavilError(f"{len(ws)} weights for {len(cats)} categories")
    if any(x < 0 for x in ws) or sum(ws) <= 0:
        raise NavilError(f"category weights must be >= 0 with a positive sum, got {ws}")
    total, acc, cum = sum(ws), 0.0, []
    for x in ws:
        acc += x / total
        cum.append(acc)
    return cats, cum


_WORD = re.compile(r"\w+")
_SINGULAR = {plural: shape for shape, plural in R.SHAPE_PLURALS.items()}


def _named(question: str) -> set[str]:
    """The lower-cased words of ``question``, with the singular of every plural shape word."""
    words = {w.lower() for w in _WORD.findall(question)}
    return words | {_SINGULAR[w] for w in words if w in _SINGULAR}


def make_sample(split: str, index: int, category: str | None = None, seed: int = 0, *,
                categories: Sequence[str] | None = None,
                weights: Mapping[str, float] | Sequence[float] | None = None,
                max_objects: int = DEFAULT_MAX_OBJECTS, questions_per_image: int = 1,
                noise: float = 0.0, object_scale: float = 1.0, canvas_fill: float | None = None
                ) -> SyntheticSample:
    """Generate sample ``index`` of ``split`` deterministically from ``seed``.

    ``category`` forces the primary category; otherwise it is drawn from ``categories`` (default all) with
    ``weights``; extra turns are asked only about ``categories`` too (so a curriculum stage teaches what it
    names, and a single-object colour/shape sample is not padded with "How many objects are there?" "1").
    The category draw is made either way, so a sample equals the corresponding sample of a weighted stream
    whenever both pick the same category. ``max_objects`` (>= 1) caps objects per scene
    and count answers (position scenes always hold >= 2 objects). ``questions_per_image`` >= 1 turns are
    returned (fewer if the scene has no more distinct valid questions whose answer no earlier question
    names); extra turns prefer categories not yet asked and roughly (not exactly) answer-balanced.
    ``noise`` > 0 adds Gaussian pixel noise with a per-image std up to ``noise`` (off by default: it makes
    PNGs ~10x larger; backgrounds already vary by gray level and a brightness gradient, object colours by a
    small jitter). ``object_scale`` multiplies the size of what is drawn (objects, glyphs, bars) while canvas
    sizes stay in the same range, so objects span more patches (e.g. 2.0 for a small from-scratch ViT that
    sees each image at <= 150 patches).
    ``canvas_fill`` (None, or in [0.1, 0.5]) sizes the canvases of object scenes to their objects instead:
    the objects' bounding boxes then cover about that share of the image whatever their number (by default
    a single object covers ~13% of its canvas, several ~30%); words and charts fill their canvas either way.
    """
    if max_objects < 1:
        raise NavilError(f"max_objects must be >= 1, got {max_objects}")
    if questions_per_image < 1:
        raise NavilError(f"questions_per_image must be >= 1, got {questions_per_image}")
    if not 0.5 <= object_scale <= MAX_OBJECT_SCALE:
        raise NavilError(f"object_scale must be in [0.5, {MAX_OBJECT_SCALE}], got {object_scale}")
    if canvas_fill is not None and not 0.1 <= canvas_fill <= MAX_CANVAS_FILL:
        raise NavilError(f"canvas_fill must be None or in [0.1, {MAX_CANVAS_FILL}], got {canvas_fill}")
    split = normalize_split(split)
    sseed = sample_seed(split, index, seed)
    rng = random.Random(sseed)
    cats, cum = _category_table(categories, weights)
    drawn = cats[min(len(cats) - 1, bisect.bisect_right(cum, rng.random()))]
    if category is None:
        category = drawn
    _check_category(category)

    if category == "ocr":
        scene = S.text_scene(rng, object_scale)
    elif category == "chart":
        scene = S.chart_scene(rng, object_scale)
    else:
        scene = S.objects_scene(rng, category, max_objects, object_scale, canvas_fill)

    turns = [scene.primary]
    if questions_per_image > 1:
        rest = [qa for qa in dict.fromkeys(scene.pool) if qa[1] != scene.primary[1] and qa[0] in cats]
        rng.shuffle(rest)
        # First one question for each other category (categories in random order, so a category with many
        # candidate questions is not favoured), then any remaining questions. A question whose answer an
        # earlier question names ("What color is the star?" before "What shape is the red object?") is
        # left out: it could be answered from the text alone.
        others = sorted({qa[0] for qa in rest} - {scene.primary[0]}, key=CATEGORIES.index)
        rng.shuffle(others)
        named = _named(scene.primary[1])

        def add(qa: tuple[str, str, str]) -> None:
            turns.append(qa)
            named.update(_named(qa[1]))

        for cat in others:
            if len(turns) < questions_per_image:
                qa = next((qa for qa in rest if qa[0] == cat and qa[2].lower() not in named), None)
                if qa is not None:
                    add(qa)
        for qa in rest:
            if len(turns) < questions_per_image and qa not in turns and qa[2].lower() not in named:
                add(qa)

    image = R.add_noise(scene.image, np.random.default_rng(sseed), noise)
    cat, question, answer = scene.primary
    return SyntheticSample(image=image, category=cat, question=question, answer=answer, caption=scene.caption,
                           turns=turns, split=split, index=index, seed=seed, meta=scene.meta)


def iter_samples(split: str, n: int, seed: int = 0, categories: Sequence[str] | None = None,
                 weights: Mapping[str, float] | Sequence[float] | None = None, *, start: int = 0,
                 balanced: bool = False, **kwargs) -> Iterator[SyntheticSample]:
    """Yield samples ``start .. start+n-1`` of ``split``.

    ``balanced=True`` cycles through ``categories`` (sample i gets categories[i % len]) instead of drawing
    them, giving exactly equal category counts; ``weights`` is then ignored. Other keyword arguments go to
    :func:`make_sample` (max_objects, questions_per_image, noise).
    """
    if n < 0:
        raise NavilError(f"n must be >= 0, got {n}")
    cats, _ = _category_table(categories, None if balanced else weights)
    for i in range(start, start + n):
        forced = cats[i % len(cats)] if balanced else None
        yield make_sample(split, i, forced, seed, categories=cats, weights=None if balanced else weights,
                          **kwargs)
