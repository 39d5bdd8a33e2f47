"""OCRBench (v1) scoring: substring matching, per-category counts, total out of 1000.

Mirrors ``OCRBench.evaluate`` in VLMEvalKit ``vlmeval/dataset/image_vqa.py``,
which follows the OCRBench authors' script.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["HME_CATEGORY", "OCRBENCH_CATEGORIES", "OCRBENCH_GROUPS", "ocrbench_hit", "ocrbench_rating"]

HME_CATEGORY = "Handwritten Mathematical Expression Recognition"
OCRBENCH_CATEGORIES = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    HME_CATEGORY,
)
# The five reported groups: the six recognition categories are summed into "Text Recognition".
OCRBENCH_GROUPS = {
    "Text Recognition": OCRBENCH_CATEGORIES[:6],
    "Scene Text-centric VQA": ("Scene Text-centric VQA",),
    "Doc-oriented VQA": ("Doc-oriented VQA",),
    "Key Information Extraction": ("Key Information Extraction",),
    HME_CATEGORY: (HME_CATEGORY,),
}


def ocrbench_hit(prediction, answers: Iterable[str], category: str) -> bool:
    """True when some reference answer is a *substring* of the prediction.

    Handwritten math (HME100k, category ``HME_CATEGORY``): both sides are
    stripped, newlines become spaces and then *all* spaces are removed; case is
    kept (LaTeX is case-sensitive).  Every other category: lower-case, strip,
    newlines -> spaces, then the substring test.  An empty reference matches
    anything (kept from the reference implementation).
    """
    pred = str(prediction)
    for answer in answers:
        if category == HME_CATEGORY:
            ref = str(answer).strip().replace("\n", " ").replace(" ", "")
            hyp = pred.strip().replace("\n", " ").replace(" ", "")
        else:
            ref = str(answer).lower().strip().replace("\n", " ")
            hyp = pred.lower().strip().replace("\n", " ")
        if ref in hyp:
            return True
    return False


def ocrbench_rating(records: Iterable[Mapping]) -> dict:
    """Counts from records ``{"category", "correct"}``.

    Returns per-category correct counts (``categories``, the 10 raw ones), the
    five reported groups (``groups``), ``final_score`` = total correct and
    ``final_score_norm`` = total / 10 -- on the full 1000-question set these are
    the official OCRBench score (0..1000) and its percentage.
    Unknown categories are counted under their own name and listed in
    ``unknown_categories`` (VLMEvalKit would raise a KeyError).
    """
    counts = {c: 0 for c in OCRBENCH_CATEGORIES}
    totals = {c: 0 for c in OCRBENCH_CATEGORIES}
    for rec in records:
        cat = rec["category"]
        counts.setdefault(cat, 0)
        totals[cat] = totals.get(cat, 0) + 1
        counts[cat] += int(bool(rec["correct"]))
    groups = {g: sum(counts[c] for c in members) for g, members in OCRBENCH_GROUPS.items()}
    final = sum(counts.values())
    return {
        "categories": counts,
        "category_totals": totals,
        "groups": groups,
        "final_score": final,
        "final_score_norm": final / 10.0,
        "unknown_categories": [c for c in counts if c not in OCRBENCH_CATEGORIES],
    }
