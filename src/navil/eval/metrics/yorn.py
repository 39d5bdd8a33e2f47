"""Yes/no benchmarks: answer extraction, MME, POPE and HallusionBench ratings.

Mirrors VLMEvalKit ``vlmeval/dataset/utils/yorn.py`` (``YOrN_Extraction``,
``MME_rating``, ``POPE_rating``, ``Hallusion_rating``) and the scoring step of
``vlmeval/dataset/image_yorn.py`` (``score = answer == extracted``, exact
string comparison, so ground truths must be spelled ``Yes``/``No``).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from .vqa import process_punctuation

__all__ = [
    "MME_COGNITION",
    "MME_PERCEPTION",
    "hallusion_ids",
    "hallusion_rating",
    "mme_official_extraction",
    "mme_rating",
    "pope_official_extraction",
    "pope_rating",
    "yorn_extraction",
]

MME_PERCEPTION = ("OCR", "artwork", "celebrity", "color", "count", "existence", "landmark", "position",
                  "posters", "scene")
# VLMEvalKit calls this super-category "reasoning"; the MME paper calls it "cognition".
MME_COGNITION = ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation")


def yorn_extraction(output) -> str:
    """VLMEvalKit ``YOrN_Extraction``: ``'Yes'``, ``'No'`` or ``'Unknown'``.

    The lower-cased output goes through the VQA punctuation rules and is split
    into words; it is ``Yes`` if the word "yes" occurs and "no" does not, ``No``
    in the opposite case, ``Unknown`` otherwise (both or neither, e.g.
    ``"Yes, there is no cat"`` or ``"Not really"``).
    """
    words = process_punctuation(str(output).lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes and not has_no:
        return "Yes"
    if has_no and not has_yes:
        return "No"
    return "Unknown"


def mme_official_extraction(output) -> str:
    """MME's own ``eval_tool/calculation.py`` rule (``parse_pred_ans``).

    The lower-cased output is taken as is when it is exactly ``yes``/``no``;
    otherwise only its first four characters are inspected: "yes" in them ->
    ``Yes``, else "no" in them -> ``No``, else ``Unknown`` ("other").  So
    ``"No, ..."`` is No, ``"There is a dog. Yes"`` is Unknown, and
    ``"not sure"`` is No (its prefix "not " contains "no").
    """
    text = str(output).lower()
    if text in ("yes", "no"):
        return text.capitalize()
    prefix = text[:4]
    if "yes" in prefix:
        return "Yes"
    if "no" in prefix:
        return "No"
    return "Unknown"


def pope_official_extraction(output) -> str:
    """The POPE authors' rule (``evaluate.py``, also LLaVA/InternVL ``eval_pope.py``).

    Keep the text before the first ``.``, delete commas, split on single
    spaces; ``No``, ``no`` or ``not`` among the words -> ``No``, *anything
    else* -> ``Yes`` (so an evasive reply counts as "yes", where VLMEvalKit
    gives ``Unknown``).  ``"NO"`` and ``"No."``... note ``"No."`` becomes ``"No"``
    (period cut) but ``"NO"`` stays ``Yes``.
    """
    text = str(output)
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "No" if ("No" in words or "not" in words or "no" in words) else "Yes"


def _pct(values) -> float | None:
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else None


def mme_rating(records: Iterable[Mapping]) -> dict:
    """MME scores from per-question records ``{"category", "image", "correct"}``.

    Per sub-task: ``acc`` = % of questions right, ``acc_plus`` = % of images
    whose questions are all right (MME asks two questions per image), sub-task
    score = ``acc + acc_plus`` (0..200).  ``perception`` sums the 10 perception
    sub-tasks (max 2000), ``cognition`` the 4 cognition ones (max 800).

    As ``MME_rating``: ``acc_plus`` multiplies the first *two* results of an
    image (a third question would be ignored; one lone question counts alone,
    where VLMEvalKit would crash).  Sub-tasks absent from the data contribute 0
    and are listed in ``missing_subtasks`` (VLMEvalKit raises instead).
    """
    stats: dict[str, dict[object, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        stats[rec["category"]][rec["image"]].append(bool(rec["correct"]))

    subtasks = {}
    for cat in sorted(stats, key=str):
        groups = stats[cat]
        flat = [v for vals in groups.values() for v in vals]
        plus = [all(vals[:2]) for vals in groups.values()]
        acc, acc_plus = _pct(flat), _pct(plus)
        subtasks[cat] = {"score": acc + acc_plus, "acc": acc, "acc_plus": acc_plus,
                         "n_questions": len(flat), "n_images": len(groups)}

    def total(names):
        return sum(subtasks[c]["score"] for c in names if c in subtasks)

    perception, cognition = total(MME_PERCEPTION), total(MME_COGNITION)
    missing = [c for c in MME_PERCEPTION + MME_COGNITION if c not in subtasks]
    unknown = [c for c in subtasks if c not in MME_PERCEPTION + MME_COGNITION]
    return {"perception": perception, "cognition": cognition, "total": perception + cognition,
            "subtasks": subtasks, "missing_subtasks": missing, "unknown_subtasks": unknown}


def _binary_metrics(pairs: Sequence[tuple[str, str]]) -> dict:
    # POPE_rating's cal_f1_score: positive class is exactly "Yes"; 0 when undefined.
    tp = sum(1 for a, e in pairs if a == "Yes" and e == "Yes")
    fp = sum(1 for a, e in pairs if a != "Yes" and e == "Yes")
    fn = sum(1 for a, e in pairs if a == "Yes" and e != "Yes")
    precision = tp / (tp + fp) if (tp + fp) else 0.0
    recall = tp / (tp + fn) if (tp + fn) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if (precision + recall) else 0.0
    return {"f1": 100.0 * f1, "acc": _pct(a == e for a, e in pairs), "precision": 100.0 * precision,
            "recall": 100.0 * recall, "n": len(pairs), "yes_ratio": _pct(e == "Yes" for _, e in pairs)}


def pope_rating(records: Iterable[Mapping]) -> dict:
    """POPE from records ``{"answer", "extracted", "category"}`` (percentages).

    As ``POPE_rating``, a ``category`` such as ``"adversarial,popular"`` is split
    on commas and the record counts once in *each* named split -- and the
    overall numbers are computed on that expanded list too (so a question
    shared by two splits weighs twice overall, as in POPE's three separate
    files).  ``accuracy = answer == extracted``; F1/precision/recall treat
    ``Yes`` as the positive class.  The headline is the overall F1.
    """
    expanded: list[tuple[str, str, str | None]] = []
    for rec in records:
        cat = rec.get("category")
        names = [None] if cat is None else str(cat).split(",")
        for name in names:
            expanded.append((str(rec["answer"]), str(rec["extracted"]), name))
    overall = _binary_metrics([(a, e) for a, e, _ in expanded])
    categories = {}
    for name in sorted({c for _, _, c in expanded if c is not None}):
        categories[name] = _binary_metrics([(a, e) for a, e, c in expanded if c == name])
    f1s = [m["f1"] for m in categories.values()]
    return {"overall": overall, "categories": categories,
            "f1_mean_over_categories": sum(f1s) / len(f1s) if f1s else None}


def hallusion_ids(index) -> tuple[str, str, str]:
    """``(set_id, figure_id, question_id)`` = fields 3, 4, 5 of the ``_``-split index."""
    parts = str(index).split("_")
    if len(parts) < 6:
        raise ValueError(f"HallusionBench index {index!r} does not have the form a_b_c_set_figure_question")
    return parts[3], parts[4], parts[5]


def _hallusion_block(records: Sequence[Mapping]) -> dict:
    figure_groups: dict[str, list[bool]] = defaultdict(list)
    question_groups: dict[str, list[bool]] = defaultdict(list)
    for rec in records:
        set_id, figure_id, question_id = hallusion_ids(rec["index"])
        l2 = rec.get("l2-category")
        figure_groups[f"{l2}_{set_id}_{figure_id}"].append(bool(rec["correct"]))
        question_groups[f"{l2}_{set_id}_{question_id}"].append(bool(rec["correct"]))
    return {
        "aAcc": _pct(bool(r["correct"]) for r in records),
        "fAcc": _pct(all(v) for v in figure_groups.values()),
        "qAcc": _pct(all(v) for v in question_groups.values()),
        "n": len(records),
    }


def hallusion_rating(records: Sequence[Mapping]) -> dict:
    """HallusionBench from records ``{"index", "category", "l2-category", "correct"}``.

    ``aAcc``: % of questions right.  ``fAcc``: % of figures (key
    ``l2-category_set_figure``) with all their questions right.  ``qAcc``: % of
    questions (key ``l2-category_set_question``, i.e. the same question asked
    about the different figures of a set) right on every figure.  The ids come
    from the index (:func:`hallusion_ids`).  Breakdowns are given per
    ``category`` and per ``l2-category``.  ``overall["mean"]`` is the average of
    the three, which VLMEvalKit reports as the primary number.
    """
    records = list(records)
    overall = _hallusion_block(records)
    overall["mean"] = (overall["aAcc"] + overall["fAcc"] + overall["qAcc"]) / 3 if records else None
    out = {"overall": overall, "categories": {}, "l2_categories": {}}
    for field, target in (("category", "categories"), ("l2-category", "l2_categories")):
        for name in sorted({r.get(field) for r in records if r.get(field) is not None}, key=str):
            out[target][name] = _hallusion_block([r for r in records if r.get(field) == name])
    return out
