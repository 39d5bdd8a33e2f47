"""Conversation formatting and file exports (LLaVA/InternVL JSONL, VLMEvalKit-style TSV)."""
from __future__ import annotations

import base64
import csv
import io
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from ...errors import NavilError
from ._core import SyntheticSample, iter_samples, normalize_split, sample_seed

IMAGE_TOKEN = "<image>"
CAPTION_PROMPT = "Describe the image."
SHORT_ANSWER_PROMPT = "Answer with a single word."
MODES = ("qa", "caption", "mixed")


def format_question(question: str, prompt_suffix: str = SHORT_ANSWER_PROMPT) -> str:
    """The question as shown to the model (training QA turns and TSV rows use the same text)."""
    return f"{question} {prompt_suffix}" if prompt_suffix else question


def is_caption_sample(sample: SyntheticSample, caption_ratio: float = 0.5) -> bool:
    """Whether a ``mode="mixed"`` export uses the caption for this sample (deterministic per sample)."""
    return random.Random(sample_seed(sample.split, sample.index, sample.seed) ^ 0x5EED).random() < caption_ratio


def sample_conversation(sample: SyntheticSample, mode: str = "qa", *,
                        prompt_suffix: str = SHORT_ANSWER_PROMPT, caption_ratio: float = 0.5) -> list[dict]:
    """LLaVA-style turns ``[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}, ...]``.

    ``qa``: every turn of ``sample.turns``; ``caption``: one "Describe the image." turn; ``mixed``: the
    caption for a ``caption_ratio`` share of samples, QA otherwise (never both: the caption would leak the
    answers). The ``<image>`` placeholder opens the first human turn only.
    """
    if mode not in MODES:
        raise NavilError(f"unknown export mode {mode!r}; expected one of {MODES}")
    if mode == "caption" or (mode == "mixed" and is_caption_sample(sample, caption_ratio)):
        pairs = [(CAPTION_PROMPT, sample.caption)]
    else:
        pairs = [(format_question(q, prompt_suffix), a) for _, q, a in sample.turns]
    conv = []
    for k, (q, a) in enumerate(pairs):
        conv.append({"from": "human", "value": f"{IMAGE_TOKEN}\n{q}" if k == 0 else q})
        conv.append({"from": "gpt", "value": a})
    return conv


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def export_jsonl(out_dir: str | Path, split: str, n: int, seed: int = 0, mode: str = "qa",
                 questions_per_image: int = 1, *, categories: Sequence[str] | None = None,
                 weights: Mapping[str, float] | Sequence[float] | None = None, balanced: bool = False,
                 start: int = 0, prompt_suffix: str = SHORT_ANSWER_PROMPT, caption_ratio: float = 0.5,
                 jsonl_name: str | None = None, **kwargs) -> Path:
    """Write ``n`` samples as PNGs under ``out_dir/images/`` plus ``out_dir/<split>_<mode>.jsonl``.

    One JSON object per line: ``{"id", "image": "images/<split>_s<seed>_<index>.png" (relative to
    out_dir), "conversations": [...], "category", "width", "height", "regions"}`` (``regions``: see
    ``SyntheticSample.regions``). Returns the JSONL path. Use one
    generator configuration per (out_dir, split, seed): image names do not encode other options.
    """
    if mode not in MODES:
        raise NavilError(f"unknown export mode {mode!r}; expected one of {MODES}")
    split = normalize_split(split)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / (jsonl_name or f"{split}_{mode}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for s in iter_samples(split, n, seed, categories, weights, start=start, balanced=balanced,
                              questions_per_image=questions_per_image, **kwargs):
            rel = f"images/{split}_s{seed}_{s.index:07d}.png"
            (out / rel).write_bytes(png_bytes(s.image))
            rec = {"id": s.id, "image": rel,
                   "conversations": sample_conversation(s, mode, prompt_suffix=prompt_suffix,
                                                        caption_ratio=caption_ratio),
                   "category": s.category, "width": s.image.width, "height": s.image.height,
                   "regions": s.regions()}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


TSV_COLUMNS = ("index", "image", "question", "answer", "category", "split", "objects")


def export_tsv(path: str | Path, n: int, seed: int = 0, split: str = "test", *,
               categories: Sequence[str] | None = None,
               weights: Mapping[str, float] | Sequence[float] | None = None, balanced: bool = True,
               start: int = 0, prompt_suffix: str = SHORT_ANSWER_PROMPT, **kwargs) -> Path:
    """Write a VLMEvalKit-style TSV: ``index`` (int), ``image`` (base64 PNG), ``question`` (with the same
    short-answer suffix as training QA), ``answer``, ``category``, ``split`` and ``objects`` (objects in the
    scene, 0 for words and charts); one primary question per image. Categories are cycled
    (``balanced=True``, default) so each gets an equal share. Returns the path."""
    split = normalize_split(split)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(TSV_COLUMNS)
        for s in iter_samples(split, n, seed, categories, weights, start=start, balanced=balanced, **kwargs):
            b64 = base64.b64encode(png_bytes(s.image)).decode("ascii")
            w.writerow([s.index, b64, format_question(s.question, prompt_suffix), s.answer, s.category, split,
                        len(s.meta.get("objects", ()))])
    return path


def read_tsv(path: str | Path, decode_images: bool = True) -> list[dict]:
    """Read a TSV written by :func:`export_tsv` (``index`` as int, ``image`` as PIL.Image if decoding)."""
    csv.field_size_limit(1 << 30)
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            row["index"] = int(row["index"])
            if decode_images:
                row["image"] = Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB")
            rows.append(row)
    return rows
