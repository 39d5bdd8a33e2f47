"""Data and tokenizer for `navil quickstart`: the synthetic sets of every phase, generated once into
`OUT/data` (a second run with the same settings reuses them), and a small word-level tokenizer.

Word-level tokenizer: the synthetic language has ~200 distinct words, so a `tokenizers` WordLevel model over
that vocabulary (whitespace/punctuation pre-tokenizer) makes every answer a single token and a question
~10 tokens (the byte tokenizer needs 4-6 tokens per word). It carries `<pad> <s> </s> [UNK]`,
`<|im_start|> <|im_end|>` and the 12 NaViL special tokens, so `navil.load_tokenizer` reads it like any
checkpoint's tokenizer.

Object words: the tokenizer also holds one word per (colour, shape) pair, "red_star", and the background
word "gray". The text LLM learns them from scene descriptions laid out as an image's visual tokens are
(`object_words_text`: each object a few copies of its word between background words); stage 1 and 2 then
pull each visual token onto its object's word embedding (navil.train.grounding.EmbeddingGrounding), so the
LLM reads an object's colour and shape off any of its tokens the way it learnt to read the words.
"""
from __future__ import annotations

import json
import multiprocessing
import random
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from navil.processing.tokenizer import IM_END_TOKEN, IM_START_TOKEN, NAVIL_SPECIAL_TOKENS

DATA_VERSION = 13
_WORD = re.compile(r"\w+|[^\w\s]+")
SPECIALS_BEFORE = ("<pad>", "<s>", "</s>", "[UNK]")
BACKGROUND_WORD = "gray"
OBJECT_WORD_SETS = (1, 2, 3, 5)  # max objects per scene of the object-word text sets "ow1", "ow2", ...


def object_word(color: str, shape: str) -> str:
    """The one-token name of an object: "red_star"."""
    return f"{color}_{shape}"


def object_words() -> list[str]:
    """Every object word, colour-major."""
    from navil.data.synthetic import COLORS, SHAPES

    return [object_word(c, s) for c in COLORS for s in SHAPES]


@dataclass
class DataSizes:
    """Sample counts per generated set (images; QA sets carry several questions per image)."""

    text: int = 6000          # text-only conversations for the text LLM (captions + questions, no images)
    object_words: int = 4000  # text-only colour/shape questions on object-word scenes, per set (OBJECT_WORD_SETS)
    s1_easy: int = 1500       # stage 1 captions: one object (colour/shape)
    s1_medium: int = 2000     # stage 1 captions: <= 3 objects, colour/shape/count/position scenes
    s1_full: int = 5000       # stage 1 captions: every category
    s2_easy: int = 1500       # stage 2 curriculum: one object, colour + shape questions
    s2_medium: int = 2500     # stage 2 curriculum: <= 3 objects, colour/shape questions (binding)
    s2_qa: int = 6000         # stage 2: question answering, `qpi` questions per image, every category
    qpi: int = 8              # questions per image in the full QA set (fewer when a scene has fewer)
    val: int = 240            # validation (learning curve), balanced, one question per image
    val_single: int = 160     # validation: colour/shape questions on single objects ("color@1", "shape@1")
    test: int = 600           # held-out test split (TSV), balanced

    def scaled(self, factor: float) -> DataSizes:
        d = asdict(self)
        for k, v in d.items():
            if k != "qpi":
                d[k] = max(12 if k in ("val", "val_single", "test") else 24, round(v * factor))
        return DataSizes(**d)


def _say(msg: str) -> None:
    print(f"[navil quickstart] {msg}", flush=True)


# ---- tokenizer -----------------------------------------------------------------------------------------------
def synthetic_vocabulary(seed: int = 0, n: int = 3000) -> list[str]:
    """Every word/punctuation token the synthetic generators, the prompts and the chat templates use."""
    from navil.data.synthetic import (
        CAPTION_PROMPT,
        CATEGORIES,
        COLORS,
        OCR_WORDS,
        POSITIONS,
        SHAPES,
        SHORT_ANSWER_PROMPT,
        answer_set,
        iter_samples,
    )
    from navil.processing.chat import TEMPLATES

    words: dict[str, None] = {}

    def add(text: str) -> None:
        for w in _WORD.findall(text):
            words.setdefault(w, None)

    for c in CATEGORIES:
        for a in answer_set(c):
            add(a)
    for w in (*COLORS, *SHAPES, *OCR_WORDS, *POSITIONS):
        add(w)
    add(CAPTION_PROMPT)
    add(SHORT_ANSWER_PROMPT)
    add("system user assistant think /think Answer with a single word . yes no")
    for t in TEMPLATES.values():
        add(t.system_template.replace("{system_message}", "") + " " + " ".join(t.roles))
    for i in range(10):
        add(str(i))
    for s in iter_samples("train", n, seed=seed, questions_per_image=8):
        add(s.caption)
        for _, q, a in s.turns:
            add(q)
            add(a)
    for s in iter_samples("train", 400, seed=seed, start=10**6, max_objects=1, questions_per_image=4):
        add(s.caption)
        for _, q, a in s.turns:
            add(q)
    for w in (*object_words(), BACKGROUND_WORD):
        add(w)
    specials = set(NAVIL_SPECIAL_TOKENS) | {IM_START_TOKEN, IM_END_TOKEN} | set(SPECIALS_BEFORE)
    return [w for w in words if w not in specials and not w.startswith("<|")]


def _added(idx: int, content: str) -> dict[str, Any]:
    return {"id": idx, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def write_word_tokenizer(out_dir: str | Path, words: list[str]) -> Path:
    """A WordLevel `tokenizer.json` (+ tokenizer_config.json) over `words`; NaViL/chat specials included."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIALS_BEFORE)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    added = [_added(i, t) for i, t in enumerate(SPECIALS_BEFORE)]
    for t in (IM_START_TOKEN, IM_END_TOKEN, *NAVIL_SPECIAL_TOKENS):
        vocab[t] = len(vocab)
        added.append(_added(vocab[t], t))
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}}
    (out / "tokenizer.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
           "pad_token": "<pad>", "unk_token": "[UNK]", "add_bos_token": False, "add_eos_token": False,
           "model_max_length": 2048}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return out


# ---- data sets -----------------------------------------------------------------------------------------------
def _text_jsonl(path: Path, n: int, seed: int) -> None:
    """Text-only conversations for the text LLM: the questions with their answers, and the captions."""
    from navil.data.synthetic import CAPTION_PROMPT, format_question, iter_samples

    with open(path, "w", encoding="utf-8") as f:
        for s in iter_samples("train", n, seed=seed, start=6 * 10**6, questions_per_image=4):
            if s.index % 3 == 0:
                conv = [{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": s.caption}]
            else:
                conv = []
                for _, q, a in s.turns:
                    conv += [{"from": "human", "value": format_question(q)}, {"from": "gpt", "value": a}]
            f.write(json.dumps({"id": f"text-{s.index}", "conversations": conv, "category": s.category}) + "\n")


def object_words_text(sample: Any, rng: random.Random) -> str:
    """An object scene written as its visual tokens lie: the objects in reading order (row band, then left to
    right, as in the caption), each as 2-4 copies of its object word with 0-3 background words before it."""
    from navil.data.synthetic._scenes import reading_order

    h = sample.image.size[1]
    objects = sorted(sample.meta["objects"], key=lambda o: reading_order(o["x"], o["y"], h))
    words: list[str] = []
    for o in objects:
        words += [BACKGROUND_WORD] * rng.randint(0, 3) + [object_word(o["color"], o["shape"])] * rng.randint(2, 4)
    return " ".join(words + [BACKGROUND_WORD] * rng.randint(0, 3))


def write_object_words_text(path: str | Path, n: int, seed: int, start: int, max_objects: int) -> str:
    """`n` text-only conversations: an object-word scene (`object_words_text`) of up to `max_objects` objects
    and one colour or shape question about it ("What color is the star?") with its answer."""
    from navil.data.synthetic import format_question, iter_samples

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in iter_samples("train", n, seed=seed, start=start, categories=("color", "shape"),
                              max_objects=max_objects):
            scene = object_words_text(s, random.Random(f"{seed}-{s.index}"))
            conv = [{"from": "human", "value": f"{scene}\n{format_question(s.question)}"},
                    {"from": "gpt", "value": s.answer}]
            f.write(json.dumps({"id": f"ow-{s.index}", "conversations": conv, "category": s.category}) + "\n")
    return str(path)


def prepare_data(folder: str | Path, seed: int, sizes: DataSizes, object_scale: float = 1.0,
                 canvas_fill: float | None = None) -> dict[str, Any]:
    """Generate (or reuse) every data set; returns paths. Reuse is keyed on (version, seed, sizes, drawing)."""
    from navil.data.synthetic import CURRICULUM, export_jsonl, export_tsv

    root = Path(folder)
    drawing = {"object_scale": object_scale, "canvas_fill": canvas_fill}
    spec = {"version": DATA_VERSION, "seed": seed, "sizes": asdict(sizes), **drawing}
    marker = root / "data.json"
    paths = {
        "tokenizer": root / "tokenizer",
        "text": root / "text" / "train_text.jsonl",
        **{f"ow{k}": root / "object_words" / f"train_ow{k}.jsonl" for k in OBJECT_WORD_SETS},
        "s1_easy": root / "s1_easy" / "train_caption.jsonl",
        "s1_medium": root / "s1_medium" / "train_caption.jsonl",
        "s1_full": root / "s1_full" / "train_caption.jsonl",
        "s2_easy": root / "s2_easy" / "train_qa.jsonl",
        "s2_medium": root / "s2_medium" / "train_qa.jsonl",
        "s2_qa": root / "s2_qa" / "train_qa.jsonl",
        "val": root / "val" / "val_qa.jsonl",
        "val_single": root / "val_single" / "val_qa.jsonl",
        "test": root / "test" / f"NaViL_Synthetic_test_n{sizes.test}_s{seed}.tsv",
    }
    if marker.is_file() and json.loads(marker.read_text()) == spec and all(p.exists() for p in paths.values()):
        _say(f"reusing the synthetic data in {root}")
        return {k: str(v) for k, v in paths.items()}
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    _say(f"generating synthetic data into {root} (once; later runs reuse it) ...")
    jobs = [
        ("s1_easy", dict(split="train", n=sizes.s1_easy, mode="caption", start=10**6, **CURRICULUM["easy"])),
        ("s1_medium", dict(split="train", n=sizes.s1_medium, mode="caption", start=2 * 10**6,
                           **CURRICULUM["medium"])),
        ("s1_full", {"split": "train", "n": sizes.s1_full, "mode": "caption", "start": 3 * 10**6}),
        ("s2_easy", dict(split="train", n=sizes.s2_easy, mode="qa", questions_per_image=2, start=4 * 10**6,
                         **CURRICULUM["easy"])),
        ("s2_medium", {"split": "train", "n": sizes.s2_medium, "mode": "qa", "questions_per_image": 6,
                       "start": 5 * 10**6, "categories": ("color", "shape"), "max_objects": 3}),
        ("s2_qa", {"split": "train", "n": sizes.s2_qa, "mode": "qa", "questions_per_image": sizes.qpi}),
        ("val", {"split": "val", "n": sizes.val, "mode": "qa", "balanced": True}),
        ("val_single", {"split": "val", "n": sizes.val_single, "mode": "qa", "balanced": True, "start": 10**6,
                        **CURRICULUM["easy"]}),
    ]
    # Every sample is drawn from its own seed, so the sets can be written by two worker processes (spawned:
    # the parent already runs torch's thread pool) while this one writes the tokenizer and the text set.
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(export_jsonl, root / name, seed=seed, **drawing, **kw)
                   for name, kw in sorted(jobs, key=lambda job: -job[1]["n"])}
        futures["test"] = pool.submit(export_tsv, paths["test"], sizes.test, seed=seed, split="test", **drawing)
        for k in OBJECT_WORD_SETS:
            futures[f"ow{k}"] = pool.submit(write_object_words_text, paths[f"ow{k}"], sizes.object_words, seed,
                                            (10 + k) * 10**6, k)
        write_word_tokenizer(paths["tokenizer"], synthetic_vocabulary(seed))
        (root / "text").mkdir(parents=True, exist_ok=True)
        _text_jsonl(paths["text"], sizes.text, seed)
        for name, kw in [*jobs, ("test", {"n": sizes.test})]:
            futures[name].result()
            note = "  (held-out test split, balanced TSV)" if name == "test" else ""
            _say(f"  {name:9s} {kw['n']:6d} images{note}")
        for k in OBJECT_WORD_SETS:
            futures[f"ow{k}"].result()
        _say(f"  ow1..ow{OBJECT_WORD_SETS[-1]:<3d} {sizes.object_words:6d} object-word scenes each (text only)")
    marker.write_text(json.dumps(spec, indent=1))
    _say(f"data ready in {time.perf_counter() - t0:.1f}s")
    return {k: str(v) for k, v in paths.items()}


def jsonl_categories(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line).get("category", "?") for line in f if line.strip()]


if __name__ == "__main__":  # pragma: no cover - manual use
    prepare_data(sys.argv[1], 0, DataSizes())
