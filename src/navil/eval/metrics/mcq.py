"""Multiple-choice answer extraction and accuracy (incl. MMBench circular evaluation).

Mirrors VLMEvalKit ``vlmeval/utils/matching_util.py`` (``can_infer_option``,
``can_infer_text``, ``can_infer``) and ``vlmeval/dataset/utils/multiple_choice.py``
(``MMMU_preproc``, ``mcq_vanilla_eval``/``mcq_circular_eval`` under the
``exact_matching`` policy, ``report_acc``, ``extract_characters_regex``).

Only the rule-based ("exact_matching") path is implemented: when the rules
cannot find an option, VLMEvalKit without a judge LLM records ``'Z'`` (a miss),
and so do we.
"""
from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "REJECT_PHRASES",
    "accuracy_report",
    "can_infer",
    "can_infer_option",
    "can_infer_text",
    "circular_group_index",
    "circular_hits",
    "extract_characters_regex",
    "extract_choice",
    "mcq_hit",
    "mmmu_preprocess",
]

REJECT_PHRASES = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_API_FAILURE = "Failed to obtain answer via API"
_SEPARATORS = ".()[],:;!*#{}"


def can_infer_option(answer: str, choices: Mapping[str, object], *, a_quantifier_guard: bool = False):
    """Find an option *letter* standing alone in ``answer``.

    The separators ``.()[],:;!*#{}`` are turned into spaces and the text is
    split on whitespace.  If exactly one of the choice letters appears as a
    token, that letter is returned (so ``"The answer is (B) because ..."`` gives
    ``B``).  Zero letters but a lone ``Z`` token gives ``'Z'``; several letters
    (``"A or B"``) give ``None``.  Known refusals return ``'Z'``.

    Quirks kept: the English article "A" counts as the letter A (``"A dog"``
    -> ``A`` when A is an option, or ambiguity when another letter also
    appears).  VLMEvalKit rejects a lone ``A`` in texts of more than 3 tokens
    only when the ``VERBOSE`` environment variable is set; that guard is off by
    default here and can be turned on with ``a_quantifier_guard=True``.
    """
    answer = str(answer)
    if _API_FAILURE in answer:
        return None
    for phrase in REJECT_PHRASES:
        if phrase in answer:
            return "Z"
    cleaned = answer
    for ch in _SEPARATORS:
        cleaned = cleaned.replace(ch, " ")
    tokens = cleaned.split()
    present = [c for c in choices if c in tokens]
    if len(present) == 1:
        if a_quantifier_guard and "A" in tokens and len(tokens) > 3:
            return None
        return present[0]
    if not present and "Z" in tokens:
        return "Z"
    return None


def can_infer_text(answer: str, choices: Mapping[str, object], *, length_guard: bool = True):
    """Find the option whose *text* occurs in ``answer`` (case-insensitive substring).

    Returns the letter only when exactly one option text occurs.  Current
    VLMEvalKit first gives up when the answer is longer than twice the summed
    length of all option texts (``length_guard``; older releases lacked it).
    """
    answer = str(answer).lower()
    if length_guard and len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    hits = [k for k, v in choices.items() if str(v).lower() in answer]
    return hits[0] if len(hits) == 1 else None


def can_infer(answer: str, choices: Mapping[str, object], *, length_guard: bool = True,
              a_quantifier_guard: bool = False):
    """Letter match first, option-text match second; ``None`` when neither succeeds."""
    found = can_infer_option(answer, choices, a_quantifier_guard=a_quantifier_guard)
    if found:
        return found
    return can_infer_text(answer, choices, length_guard=length_guard)


def extract_choice(prediction, choices: Mapping[str, object], *, strip: bool = True, **kwargs) -> str:
    """The option a free-text prediction picks, or ``'Z'`` when none can be inferred.

    ``strip`` mirrors ``extract_answer_from_item`` (vanilla MCQ), which strips
    the prediction; the circular pre-fetch path does not strip.
    """
    text = "" if prediction is None else str(prediction)
    if strip:
        text = text.strip()
    return can_infer(text, choices, **kwargs) or "Z"


def mcq_hit(prediction, choices: Mapping[str, object], answer: str, **kwargs) -> bool:
    """True when the extracted option equals the ground-truth letter."""
    return extract_choice(prediction, choices, **kwargs) == answer


def mmmu_preprocess(options: Mapping[str, object], answer: str) -> tuple[dict, str]:
    """VLMEvalKit ``MMMU_preproc`` + its answer map, for one row.

    An open (free-form) MMMU question has no option A; VLMEvalKit turns it into
    a two-way choice ``A = <ground-truth text>``, ``B = 'Other Answers'`` and
    takes any ground truth that is not a single capital letter to mean ``A``.
    The prediction then scores if it contains the ground-truth text (through
    :func:`can_infer_text`).
    """
    opts = dict(options)
    if "A" not in opts:
        opts = {"A": answer, "B": "Other Answers"}
    is_letter = isinstance(answer, str) and len(answer) == 1 and answer in string.ascii_uppercase
    gt = answer if is_letter else "A"
    return opts, gt


def circular_group_index(index: int) -> int:
    """MMBench circular grouping key: ``int(index % 1e6)``.

    The original question has ``index < 1e6``; its rotated copies (options
    shifted, answer letter shifted) carry ``index + k * 1e6``.
    """
    return int(int(index) % 1_000_000)


def circular_hits(items: Iterable[tuple[int, bool]]) -> dict[int, bool]:
    """Group ``(index, correct)`` pairs and score each group all-or-nothing.

    Only groups whose original question (``index == group``) is present are
    returned, as ``mcq_circular_eval`` iterates over those "main" rows.  A
    group counts only if *every* present rotation is correct.
    """
    members: dict[int, list[bool]] = defaultdict(list)
    mains = set()
    for index, correct in items:
        g = circular_group_index(index)
        members[g].append(bool(correct))
        if int(index) == g:
            mains.add(g)
    return {g: all(members[g]) for g in sorted(mains)}


def accuracy_report(records: Sequence[Mapping], hit_key: str = "hit") -> dict:
    """VLMEvalKit ``report_acc`` as nested dicts (values in percent).

    Returns ``{"overall": .., "splits": {split: acc}, "categories": {cat: acc},
    "l2_categories": {l2: acc}}``; ``splits`` is empty when the records carry no
    ``split``.  Categories are computed over all given records (``report_acc``
    does it per split; callers pass the split they report).
    """

    def pct(values):
        values = list(values)
        return 100.0 * sum(values) / len(values) if values else None

    out = {"overall": pct(r[hit_key] for r in records), "splits": {}, "categories": {}, "l2_categories": {}}
    splits = sorted({r.get("split") for r in records if r.get("split") is not None}, key=str)
    for sp in splits:
        out["splits"][sp] = pct(r[hit_key] for r in records if r.get("split") == sp)
    for field, target in (("category", "categories"), ("l2-category", "l2_categories")):
        groups = sorted({r.get(field) for r in records if r.get(field) is not None}, key=str)
        for g in groups:
            out[target][g] = pct(r[hit_key] for r in records if r.get(field) == g)
    return out


_REGEX_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    # Sic: two missing commas in VLMEvalKit glue these pairs into single, never-matching prefixes.
    "The best option isThe correct option is",
    "Best answer:Best option:",
)


def extract_characters_regex(s, choices: Sequence[str] = ("(A)", "(B)", "(C)", "(D)", "(E)")) -> str:
    """VLMEvalKit ``extract_characters_regex`` (video / some image MCQ sets), intended behaviour.

    ``\\boxed{X}`` wins when X is one of ``choices``; otherwise known answer
    prefixes are removed, long answers (>10 words) without any capital A-E give
    ``''``, and the first capital A-E anywhere is returned.  With no capital
    letter at all, a choice string containing the whole answer gives its
    letter.  (VLMEvalKit's current copy references an undefined name in the
    ``\\boxed`` branch; we implement the evident intent.)
    """
    if isinstance(s, dict):
        s = ""
    s = str(s).strip()
    boxed = re.search(r".*\\boxed\{([^}]*)\}", s)
    if boxed and boxed.group(1) in choices:
        return boxed.group(1)
    for prefix in _REGEX_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return ""
    match = re.search(r"[ABCDE]", s)
    if match is None:
        for choice in choices:
            if s.lower() in choice.lower():
                return choice[1]
        return ""
    return match[0]
