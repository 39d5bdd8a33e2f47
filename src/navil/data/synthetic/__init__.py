"""Built-in synthetic image-text tasks: small, seeded, learnable by a tiny CPU-trained model.

Images are 64..224 px per side with varied aspect ratio (1/2.5..2.5) and at most 150 * 16 * 16 pixels
(~16..150 patches of 16 px, ~83 on average). Mid-gray backgrounds with a light brightness gradient
(charts: plain light gray), six saturated colours (each drawn with +-12 per-channel jitter), five filled
shapes of 22..44 px, large glyphs (font size 30..46 px) for text; optional Gaussian pixel noise.
``object_scale`` (0.5..2, default 1) draws objects, glyphs and bars that much larger on canvases of the same
size range, so a small ViT sees each object over more patches (the quickstart uses 2). ``canvas_fill``
(None or 0.1..0.5) sizes the canvas of an object scene to its objects instead, so their bounding boxes cover
about that share of the image (a single object otherwise covers ~13%; the quickstart uses 0.5).

Categories (primary answer uniform over the answer set, so an image-blind model scores chance):

=========  ==============================================================  ===========================
category   primary question -> answer                                      answers (chance)
=========  ==============================================================  ===========================
color      "What color is the star?" -> "red"                              6 colours (1/6)
shape      "What shape is the red object?" -> "circle"                     5 shapes (1/5)
count      "How many objects|circles|red objects are there?" -> "3"        "1".."5" (1/5)
position   "Where is the red circle relative to the blue square?" -> left  left/right/above/below (1/4)
ocr        "What word is written in the image?" -> "FISH"                  16 words (1/16)
chart      "Which bar is the tallest?" -> "B" |                            A..E | "1".."5" (1/5, the
           "What is the value of bar C?" -> "4"                            question tells which half)
=========  ==============================================================  ===========================

Colours: red green blue yellow purple orange. Shapes: circle square triangle star cross. Words: see
``OCR_WORDS`` (upper-case, answers are written exactly as rendered). ``max_objects`` (default 5) caps
objects per scene and the count answers ("1".."min(5, max_objects)"); ``category_chance(c, max_objects)``
gives the chance for other settings. In colour/shape/position scenes every object has a unique colour and
a unique shape; count scenes may repeat them (plus distractors).

Multi-turn: ``questions_per_image=k`` adds up to k-1 further questions about the same image (one per
other applicable category first; valid and roughly, not exactly, answer-balanced). Evaluation should use the
primary turn only (as ``export_tsv`` does).

Captions describe the whole scene densely, in reading order:
``"3 objects: a red circle at the top left, a blue square in the center and a green star at the bottom
right."``, ``"the word CAT in green on gray."``, ``"a blue bar chart: A 3, B 5, C 1."``

API
---
``CATEGORIES``, ``CATEGORY_ANSWERS``, ``CATEGORY_CHANCE`` (for default settings),
``answer_set(category, max_objects=5)``, ``category_chance(category, max_objects=5)``,
``CURRICULUM`` presets ("easy": colour/shape with 1 object, "medium": + count/position with <= 3 objects,
"full"), to splat into the functions below: ``iter_samples("train", n, **CURRICULUM["easy"])``.

``make_sample(split, index, category=None, seed=0, *, categories=None, weights=None, max_objects=5,
questions_per_image=1, noise=0.0, object_scale=1.0, canvas_fill=None) -> SyntheticSample`` (image, category, question, answer, caption, turns,
split, index, seed, meta; ``.id``).

``iter_samples(split, n, seed=0, categories=None, weights=None, *, start=0, balanced=False, **kw)``.

``sample_conversation(sample, mode="qa"|"caption"|"mixed", *, prompt_suffix=SHORT_ANSWER_PROMPT,
caption_ratio=0.5) -> list[dict]`` (LLaVA turns; QA questions get " Answer with a single word.").

``export_jsonl(out_dir, split, n, seed=0, mode="qa", questions_per_image=1, *, categories=None,
weights=None, balanced=False, start=0, prompt_suffix=..., caption_ratio=0.5, jsonl_name=None, **kw)
-> Path`` writes ``out_dir/images/*.png`` and ``out_dir/<split>_<mode>.jsonl`` with lines
``{"id", "image": "images/...png", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ...}, ...], "category", "width", "height"}``.

``export_tsv(path, n, seed=0, split="test", *, categories=None, weights=None, balanced=True, start=0,
prompt_suffix=..., **kw) -> Path`` writes columns index, image (base64 PNG), question, answer, category,
split; ``read_tsv(path)`` reads it back.

Determinism and splits: sample ``index`` of ``split`` ("train", "val"/"validation", "test") with ``seed``
uses the per-sample seed ``sample_seed(split, index, seed)``, an injective packing of the triple, so the
same arguments give identical image bytes and text and different splits never share a seed. The category
is always drawn first from that seed, so forcing a category changes nothing else about the stream.
"""
from ._core import (
    CATEGORIES,
    CATEGORY_ANSWERS,
    CATEGORY_CHANCE,
    CURRICULUM,
    DEFAULT_MAX_OBJECTS,
    SPLITS,
    SyntheticSample,
    answer_set,
    category_chance,
    iter_samples,
    make_sample,
    normalize_split,
    sample_seed,
)
from ._export import (
    CAPTION_PROMPT,
    IMAGE_TOKEN,
    SHORT_ANSWER_PROMPT,
    TSV_COLUMNS,
    export_jsonl,
    export_tsv,
    format_question,
    read_tsv,
    sample_conversation,
)
from ._render import COLORS, SHAPES
from ._scenes import OCR_WORDS, POSITIONS

__all__ = [
    "CAPTION_PROMPT",
    "CATEGORIES",
    "CATEGORY_ANSWERS",
    "CATEGORY_CHANCE",
    "COLORS",
    "CURRICULUM",
    "DEFAULT_MAX_OBJECTS",
    "IMAGE_TOKEN",
    "OCR_WORDS",
    "POSITIONS",
    "SHAPES",
    "SHORT_ANSWER_PROMPT",
    "SPLITS",
    "TSV_COLUMNS",
    "SyntheticSample",
    "answer_set",
    "category_chance",
    "export_jsonl",
    "export_tsv",
    "format_question",
    "iter_samples",
    "make_sample",
    "normalize_split",
    "read_tsv",
    "sample_conversation",
    "sample_seed",
]
