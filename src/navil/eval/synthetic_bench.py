"""The ``NaViL_Synthetic`` benchmark: navil's built-in synthetic test split, scored by exact match.

Registered (as a ``kind="custom"`` :class:`~navil.eval.scoring.BenchmarkSpec`) when this module is
imported; :mod:`navil.eval.runner` imports it, so ``score("NaViL_Synthetic", ...)`` works after
``import navil.eval.runner``.

* Data: a TSV written by :func:`navil.data.synthetic.export_tsv` (columns index, image, question,
  answer, category, split). :func:`default_tsv` writes the default seeded test split.
* Prompt: the TSV question as is (``plain``); it already carries the training suffix
  "Answer with a single word.".
* Metric: exact match after :func:`normalize` (lower-case, punctuation removed, whitespace collapsed and
  stripped). ``score`` = overall accuracy in percent; ``categories`` = per-category accuracy;
  ``chance`` = each category's chance level in percent (best image-blind guesser,
  :func:`navil.data.synthetic.category_chance`); ``category_details`` has n / correct / accuracy /
  chance / above_chance per category. Option ``max_objects`` (default 5) must match the generator setting
  for the ``count`` chance to be right.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

from navil.data import synthetic as _syn

from .scoring import BENCHMARKS, BenchmarkSpec, register_benchmark

__all__ = [
    "DEFAULT_N",
    "DEFAULT_SEED",
    "NAME",
    "default_tsv",
    "normalize",
    "sample_hit",
    "synthetic_scorer",
]

NAME = "NaViL_Synthetic"
DEFAULT_N = 600  # 100 per category (balanced)
DEFAULT_SEED = 0
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_WS = re.compile(r"\s+")


def normalize(text) -> str:
    """Lower-case, drop ASCII punctuation, collapse whitespace, strip."""
    if text is None:
        return ""
    return _WS.sub(" ", _PUNCT.sub("", str(text).lower())).strip()


def sample_hit(prediction, answer) -> bool:
    """Exact match after :func:`normalize` (a missing prediction is a miss)."""
    return prediction is not None and normalize(prediction) == normalize(answer)


def _chance(category, max_objects: int) -> float | None:
    if category not in _syn.CATEGORIES:
        return None
    return 100.0 * _syn.category_chance(category, max_objects)


def synthetic_scorer(
    rows: Sequence[Mapping],
    predictions: Mapping,
    spec,
    *,
    max_objects: int = _syn.DEFAULT_MAX_OBJECTS,
    **_: object,
) -> dict:
    """Custom scorer (``scorer(rows, predictions, spec, **options)``) for :data:`NAME`."""
    per_cat: dict[str, list[bool]] = {}
    hits = []
    for row in rows:
        hit = sample_hit(predictions.get(row["index"]), row.get("answer"))
        hits.append(hit)
        per_cat.setdefault(str(row.get("category")), []).append(hit)
    details, categories, chance = {}, {}, {}
    for cat in sorted(per_cat, key=lambda c: (_syn.CATEGORIES.index(c) if c in _syn.CATEGORIES else 99, c)):
        values = per_cat[cat]
        acc = 100.0 * sum(values) / len(values)
        ch = _chance(cat, max_objects)
        categories[cat], chance[cat] = acc, ch
        details[cat] = {
            "n": len(values),
            "correct": int(sum(values)),
            "accuracy": acc,
            "chance": ch,
            "above_chance": None if ch is None else acc - ch,
        }
    chances = [_chance(str(r.get("category")), max_objects) for r in rows]
    known = [c for c in chances if c is not None]
    return {
        "score": 100.0 * sum(hits) / len(hits) if hits else None,
        "n": len(hits),
        "categories": categories,
        "chance": chance,
        "chance_overall": sum(known) / len(known) if known else None,
        "category_mean": sum(categories.values()) / len(categories) if categories else None,
        "category_details": details,
    }


# Per-sample hit used by navil.eval.runner for predictions.jsonl.
synthetic_scorer.row_hit = lambda row, prediction: sample_hit(prediction, row.get("answer"))


def default_tsv(out_dir, n: int = DEFAULT_N, seed: int = DEFAULT_SEED, split: str = "test", **kwargs) -> Path:
    """Write (once) the seeded synthetic split as ``out_dir/NaViL_Synthetic_<split>_n<n>_s<seed>.tsv``.

    Balanced over the six categories; an existing file of that name is reused (the export is
    deterministic). Extra keyword arguments go to :func:`navil.data.synthetic.export_tsv`; they are not
    part of the file name, so use a separate ``out_dir`` for non-default generator settings.
    """
    path = Path(out_dir) / f"{NAME}_{split}_n{n}_s{seed}.tsv"
    if not path.is_file():
        tmp = path.with_suffix(".tsv.tmp")
        _syn.export_tsv(tmp, n, seed=seed, split=split, **kwargs)
        tmp.replace(path)
    return path


if NAME not in BENCHMARKS:
    register_benchmark(
        NAME,
        BenchmarkSpec(
            NAME,
            "custom",
            "exact_match_normalized",
            "plain",
            scorer=synthetic_scorer,
            description="navil synthetic test split (colour/shape/count/position/ocr/chart); "
            "exact match after "
            "lower-casing and stripping punctuation/whitespace; per-category chance reported",
        ),
    )
