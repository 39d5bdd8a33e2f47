"""Short-answer VQA metrics: VQA accuracy, ANLS, relaxed accuracy, exact match.

Behaviour follows VLMEvalKit ``vlmeval/dataset/utils/vqa_eval.py``
(``process_answer``, ``process_line``, ``hit_calculate``, ``anls_compute``,
``relaxed_correctness``) and ``vlmeval/smp/misc.py::process_punctuation``.
Where VLMEvalKit departs from the benchmark's own evaluation script, the
original is available through a ``mode=`` argument and the difference is
documented on the function.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "anls",
    "exact_match",
    "levenshtein",
    "normalize_vqa_answer",
    "normalized_levenshtein",
    "parse_answer_list",
    "process_digit_article",
    "process_punctuation",
    "relaxed_accuracy",
    "relaxed_correctness",
    "vqa_score",
]

# --------------------------------------------------------------------------------------
# Answer-list parsing
# --------------------------------------------------------------------------------------


def parse_answer_list(answer) -> list[str]:
    """Turn a TSV ``answer`` cell into a list of reference answers.

    VLMEvalKit stores multi-reference answers (TextVQA, DocVQA, InfoVQA,
    OCRBench) as the Python repr of a list, e.g. ``"['cat', 'a cat']"``; it
    decides with ``istype(answer, list)`` (an ``eval``) and otherwise wraps the
    single answer in a list.  We do the same with ``ast.literal_eval`` (no code
    execution).  A quirk carried over: a single answer that *happens* to look
    like a list literal (``"[1, 2]"``) is split into several references.
    """
    if isinstance(answer, (list, tuple)):
        return [str(a) for a in answer]
    text = "" if answer is None else str(answer)
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, list):
            return [str(v) for v in value]
    return [text]


# --------------------------------------------------------------------------------------
# The VQA answer normaliser (official VQA eval tables, as used by VLMEvalKit)
# --------------------------------------------------------------------------------------

_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!"]
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# Sic: "(?!<=\d)" is a negative *lookahead* for the text "<=digit" (the authors meant a
# lookbehind), so in practice every period not followed by a digit is removed.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
# Sic: the reference code passes re.UNICODE (== 32) positionally as ``count``, so at most
# 32 periods are removed from one answer.  Kept for bit-exactness.
_PERIOD_MAX_SUBS = int(re.UNICODE)

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}


def _build_contractions() -> dict[str, str]:
    # The contraction table of the official VQA evaluation (GT-Vision-Lab/VQA vqaEval.py),
    # which VLMEvalKit reuses unchanged: apostrophe-less spellings -> canonical spelling.
    table = {}
    simple = (
        "aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|didnt didn't|"
        "doesnt doesn't|dont don't|hadnt hadn't|hasnt hasn't|havent haven't|hed he'd|hes he's|"
        "howd how'd|howll how'll|hows how's|Im I'm|Ive I've|isnt isn't|itd it'd|itll it'll|"
        "let's let's|maam ma'am|mightnt mightn't|mightve might've|mustnt mustn't|mustve must've|"
        "neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|shant shan't|she's she's|"
        "shouldve should've|shouldnt shouldn't|somebody'd somebodyd|somebodyll somebody'll|"
        "somebodys somebody's|someoned someone'd|someonell someone'll|someones someone's|"
        "somethingd something'd|somethingll something'll|thats that's|thered there'd|"
        "therere there're|theres there's|theyd they'd|theyll they'll|theyre they're|theyve they've|"
        "twas 'twas|wasnt wasn't|weve we've|werent weren't|whatll what'll|whatre what're|"
        "whats what's|whatve what've|whens when's|whered where'd|wheres where's|whereve where've|"
        "whod who'd|wholl who'll|whos who's|whove who've|whyll why'll|whyre why're|whys why's|"
        "wont won't|wouldve would've|wouldnt wouldn't|yall y'all|youd you'd|youll you'll|"
        "youre you're|youve you've"
    )
    for pair in simple.split("|"):
        src, dst = pair.split(" ")
        table[src] = dst
    # Two-part contractions: every listed misspelling maps onto one canonical form.
    multi = {
        "couldn't've": ["couldn'tve", "couldnt've"],
        "hadn't've": ["hadnt've", "hadn'tve"],
        "he'd've": ["hed've", "he'dve"],
        "I'd've": ["Id've", "I'dve"],
        "it'd've": ["itd've", "it'dve"],
        "mightn't've": ["mightnt've", "mightn'tve"],
        "'ow's'at": ["ow's'at", "'ows'at", "'ow'sat"],
        "she'd've": ["shed've", "she'dve"],
        "shouldn't've": ["shouldnt've", "shouldn'tve"],
        "somebody'd've": ["somebodyd've", "somebody'dve"],
        "someone'd've": ["someoned've", "someone'dve"],
        "something'd've": ["somethingd've", "something'dve"],
        "there'd've": ["thered've", "there'dve"],
        "they'd've": ["theyd've", "they'dve"],
        "we'd've": ["wed've", "we'dve"],
        "who'd've": ["whod've", "who'dve"],
        "wouldn't've": ["wouldnt've", "wouldn'tve"],
        "y'all'll": ["yall'll", "y'allll"],
        "y'all'd've": ["yall'd've", "y'alld've", "y'all'dve"],
        "you'd've": ["youd've", "you'dve"],
    }
    for dst, sources in multi.items():
        for src in sources:
            table[src] = dst
    return table


CONTRACTIONS = _build_contractions()


def process_punctuation(text: str) -> str:
    """Official VQA punctuation handling (identical in VLMEvalKit).

    Each punctuation mark is *deleted* when it touches a space somewhere in the
    text, or when the text contains a digit-comma-digit group anywhere (so
    ``"1,000"`` becomes ``"1000"``); otherwise it is replaced by a space.
    Finally periods not followed by a digit are removed (``"3.5"`` survives).
    """
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        if has_digit_comma or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_SUBS)


def process_digit_article(text: str) -> str:
    """Lower-case, map number words (``zero``..``ten``, ``none``) to digits,
    drop articles (a/an/the) and canonicalise contractions."""
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """VLMEvalKit ``process_answer``: whitespace -> space, strip, punctuation, digits/articles."""
    text = str(text).replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def _mmf_normalize(text: str) -> str:
    # MMF/EvalAI ``EvalAIAnswerProcessor`` used by the TextVQA authors (TextVQAAccuracyEvaluator):
    # lower-case, drop ',' and '?', split "'s", then the same punctuation/digit/article steps.
    text = str(text).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def _leave_one_out(pred: str, refs: Sequence[str]) -> float:
    # For each reference i, count the *other* references equal to the prediction;
    # accuracy_i = min(1, matches/3); the score is the mean over i.  With 10 references
    # this is exactly the "average over the 10 choose 9 subsets" of the VQA paper.
    if not refs:
        return 0.0
    total = 0.0
    for i in range(len(refs)):
        matches = sum(1 for j, ref in enumerate(refs) if j != i and ref == pred)
        total += min(1.0, matches / 3.0)
    return total / len(refs)


def vqa_score(prediction: str, answers: Iterable[str], mode: str = "vlmevalkit") -> float:
    """VQA accuracy of one prediction against its reference answers (0..1).

    All modes use the leave-one-out formula ``mean_i min(1, #{j != i: ref_j == pred} / 3)``;
    they differ only in normalisation:

    ``"vlmevalkit"`` (default; VLMEvalKit ``process_line(method='vqa_score')``)
        Prediction *and every reference* go through :func:`normalize_vqa_answer`
        (punctuation, lower-case, number words, articles, contractions), always.
    ``"official"`` (GT-Vision-Lab ``vqaEval.py``, the VQAv2 server)
        The prediction is fully normalised, but the references are left as they
        are (the dataset ships them pre-normalised) except that punctuation
        processing is applied to them *only when the 10 references are not all
        identical*.  So ten references ``"Two"`` never match the prediction
        ``"two"`` here, while VLMEvalKit scores it 1.0.
    ``"textvqa_mmf"`` (MMF ``TextVQAAccuracyEvaluator``, the TextVQA authors' code)
        Both sides go through EvalAI's answer processor, which additionally
        lower-cases first, deletes every ``,`` and ``?`` and splits ``'s``.

    Quirk shared by all modes: with a single reference the score is always 0
    (there is no "other" reference to agree with).
    """
    refs_raw = [str(a) for a in answers]
    if mode == "vlmevalkit":
        return _leave_one_out(normalize_vqa_answer(prediction), [normalize_vqa_answer(a) for a in refs_raw])
    if mode == "official":
        pred = normalize_vqa_answer(prediction)
        refs = refs_raw
        if len(set(refs_raw)) > 1:
            refs = [process_punctuation(a) for a in refs_raw]
        return _leave_one_out(pred, refs)
    if mode == "textvqa_mmf":
        return _leave_one_out(_mmf_normalize(prediction), [_mmf_normalize(a) for a in refs_raw])
    raise ValueError(f"unknown vqa_score mode {mode!r} (expected 'vlmevalkit', 'official' or 'textvqa_mmf')")


# --------------------------------------------------------------------------------------
# ANLS (DocVQA, InfoVQA)
# --------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Plain edit distance (insert/delete/substitute, unit costs)."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, cb in enumerate(b, start=1):
        current = [j]
        for i, ca in enumerate(a, start=1):
            if ca == cb:
                current.append(previous[i - 1])
            else:
                current.append(1 + min(previous[i - 1], previous[i], current[-1]))
        previous = current
    return previous[-1]


def normalized_levenshtein(reference: str, prediction: str) -> float:
    """VLMEvalKit ``anls_compute``: lower-case, collapse whitespace, distance / max length.

    Two empty strings give 0.0 (a perfect match)."""
    ref = " ".join(str(reference).strip().lower().split())
    pred = " ".join(str(prediction).strip().lower().split())
    length = max(len(ref), len(pred))
    return 0.0 if length == 0 else levenshtein(ref, pred) / length


def anls(prediction: str, answers: Iterable[str], threshold: float = 0.5, mode: str = "vlmevalkit") -> float:
    """Average-Normalised-Levenshtein-Similarity contribution of one question (0..1).

    The similarity to each reference is ``1 - NL`` (NL = normalised Levenshtein
    distance); the best reference counts.

    ``"vlmevalkit"`` (``hit_calculate`` for DocVQA/InfoVQA): the best similarity
        is zeroed only when it is *strictly below* ``threshold``.  A similarity of
        exactly 0.5 (NL == 0.5) is kept as 0.5.
    ``"original"`` (Biten et al. 2019, the DocVQA/ST-VQA definition): a
        reference contributes ``1 - NL`` only if ``NL < threshold``, otherwise 0,
        so NL == 0.5 scores 0.
    """
    nls = [normalized_levenshtein(a, prediction) for a in answers]
    if not nls:
        return 0.0
    if mode == "vlmevalkit":
        best = 1.0 - min(nls)
        return 0.0 if best < threshold else best
    if mode == "original":
        return max((1.0 - nl) if nl < threshold else 0.0 for nl in nls)
    raise ValueError(f"unknown anls mode {mode!r} (expected 'vlmevalkit' or 'original')")


# --------------------------------------------------------------------------------------
# Relaxed accuracy (ChartQA) and exact match
# --------------------------------------------------------------------------------------


def _to_float(text: str):
    # pix2struct / VLMEvalKit: a trailing '%' means "divide by 100"; Python's float()
    # decides everything else (so "1e3", "1_000", " 7 " parse, "1,000" and "$5" do not).
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """ChartQA relaxed match (pix2struct ``relaxed_correctness``, reused verbatim in behaviour).

    If the prediction parses as a number and the target parses as a *non-zero*
    number, the answer is right when ``|pred - target| / |target| <= 5%``.
    Otherwise (text answers, a zero target, unparsable numbers such as
    ``"1,000"``) it falls back to case-insensitive exact string equality.
    Percent handling: ``"45%"`` is read as 0.45, so ``"45%"`` matches ``"0.45"``
    but not ``"45"``.  No stripping is done here; :func:`relaxed_accuracy`
    strips the prediction first, as VLMEvalKit does.
    """
    prediction = str(prediction)
    target = str(target)
    pred_value = _to_float(prediction)
    target_value = _to_float(target)
    if pred_value is not None and target_value:
        return abs(pred_value - target_value) / abs(target_value) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Iterable[str], max_relative_change: float = 0.05) -> float:
    """1.0 if the stripped prediction is relaxed-correct for any reference, else 0.0."""
    pred = str(prediction).strip()
    return 1.0 if any(relaxed_correctness(a, pred, max_relative_change) for a in answers) else 0.0


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """VLMEvalKit ``method='accuracy'`` (OCRVQA): stripped, case-insensitive equality with any reference."""
    pred = str(prediction).strip().lower()
    return 1.0 if any(str(a).strip().lower() == pred for a in answers) else 0.0
