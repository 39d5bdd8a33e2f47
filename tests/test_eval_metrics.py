"""Hand-worked cases for navil.eval.metrics (VLMEvalKit-compatible scoring)."""
from __future__ import annotations

import pytest

from navil.eval.metrics import (
    anls,
    can_infer,
    can_infer_option,
    can_infer_text,
    circular_group_index,
    circular_hits,
    exact_match,
    extract_characters_regex,
    extract_choice,
    hallusion_rating,
    levenshtein,
    mme_official_extraction,
    mme_rating,
    mmmu_preprocess,
    normalize_vqa_answer,
    normalized_levenshtein,
    ocrbench_hit,
    ocrbench_rating,
    parse_answer_list,
    pope_rating,
    process_punctuation,
    relaxed_accuracy,
    relaxed_correctness,
    vqa_score,
    yorn_extraction,
)
from navil.eval.metrics.judge import (
    build_mathvista_prompt,
    build_mmvet_prompt,
    mathvista_judge,
    mathvista_post_check,
    mmvet_judge,
    mmvet_rating,
)
from navil.eval.metrics.mcq import accuracy_report

# ----------------------------------------------------------------------------- VQA normalisation


@pytest.mark.parametrize("raw, expected", [
    ("1,000", "1000"),            # digit-comma-digit: every punctuation mark is deleted
    ("Two", "2"),                 # number words -> digits, lower-case
    ("The Dog.", "dog"),          # article dropped, final period removed
    ("an apple", "apple"),
    ("3.5", "3.5"),               # a period followed by a digit survives
    ("dont", "don't"),            # contraction table
    ("red, white", "red white"),  # ", " touches a space -> deleted
    ("red,white", "red white"),   # no space around it -> replaced by a space
    ("  yes\n", "yes"),
    ("none", "0"),
])
def test_normalize_vqa_answer(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_process_punctuation_period_quirk_caps_at_32():
    # VLMEvalKit/official pass re.UNICODE (=32) as the substitution count.
    text = "a." * 40
    out = process_punctuation(text)
    assert out.count(".") == 8


def test_parse_answer_list():
    assert parse_answer_list("['cat', 'a cat']") == ["cat", "a cat"]
    assert parse_answer_list("cat") == ["cat"]
    assert parse_answer_list("[1, 2]") == ["1", "2"]      # quirk: list-looking answers are split
    assert parse_answer_list("[not a list") == ["[not a list"]


# ----------------------------------------------------------------------------- VQA accuracy


def test_vqa_score_number_formats_and_articles():
    assert vqa_score("1000", ["1,000"] * 10) == 1.0
    assert vqa_score("two", ["2"] * 10) == 1.0
    assert vqa_score("The dog.", ["dog"] * 10) == 1.0


def test_vqa_score_leave_one_out_formula():
    # 3 refs "dog", 7 refs "cat", prediction "dog":
    # each "dog" ref sees 2 other dogs -> 2/3; each "cat" ref sees 3 dogs -> 1.
    expected = (3 * (2 / 3) + 7 * 1.0) / 10
    assert vqa_score("dog", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(expected)
    # 1 matching ref: that ref sees 0 -> 0; the 9 others see 1 -> 1/3.
    assert vqa_score("dog", ["dog"] + ["cat"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    assert vqa_score("bird", ["dog"] * 10) == 0.0


def test_vqa_score_single_reference_quirk():
    assert vqa_score("dog", ["dog"]) == 0.0   # no "other" reference to agree with


def test_vqa_score_official_mode_differs_from_vlmevalkit():
    # Ten identical refs are not normalised at all by the official script.
    assert vqa_score("two", ["Two"] * 10, mode="vlmevalkit") == 1.0
    assert vqa_score("two", ["Two"] * 10, mode="official") == 0.0
    # With differing refs the official script only processes punctuation on refs,
    # so the article in "a dog" stays and does not match the normalised "dog".
    refs = ["a dog"] * 5 + ["dog!"] * 5
    assert vqa_score("dog", refs, mode="vlmevalkit") == 1.0
    # official: refs -> "a dog" x5, "dog " x5 ("!" replaced by a space) -> nothing equals "dog"
    assert vqa_score("dog", refs, mode="official") == 0.0
    with pytest.raises(ValueError):
        vqa_score("x", ["x"], mode="nope")


def test_vqa_score_textvqa_mmf_mode():
    # EvalAI processor deletes every comma before the punctuation step.
    assert vqa_score("10,5", ["105"] * 10, mode="textvqa_mmf") == 1.0
    assert vqa_score("10,5", ["105"] * 10, mode="vlmevalkit") == 1.0  # digit-comma-digit rule
    assert vqa_score("cat, dog", ["cat dog"] * 10, mode="textvqa_mmf") == 1.0


# ----------------------------------------------------------------------------- ANLS


def test_levenshtein_basics():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert normalized_levenshtein(" Hello  World ", "hello world") == 0.0
    assert normalized_levenshtein("", "") == 0.0


def test_anls_threshold_edge_exactly_half():
    # "abcd" vs "abxy": distance 2, length 4 -> NL = 0.5 exactly, similarity 0.5.
    assert anls("abxy", ["abcd"]) == 0.5                   # VLMEvalKit keeps it (0.5 is not < 0.5)
    assert anls("abxy", ["abcd"], mode="original") == 0.0  # original: only NL < 0.5 counts


def test_anls_just_below_and_above_threshold():
    # 9 chars, 5 edits: similarity 4/9 < 0.5 -> 0 in both modes.
    assert anls("abcdvwxyz", ["abcdefghi"]) == 0.0
    assert anls("abcdvwxyz", ["abcdefghi"], mode="original") == 0.0
    # 9 chars, 4 edits: similarity 5/9 kept in both.
    assert anls("abcdewxyz", ["abcdefghi"]) == pytest.approx(5 / 9)
    assert anls("abcdewxyz", ["abcdefghi"], mode="original") == pytest.approx(5 / 9)


def test_anls_best_reference_and_case():
    assert anls("PARIS", ["London", "paris"]) == 1.0
    assert anls("x", []) == 0.0


# ----------------------------------------------------------------------------- relaxed accuracy


@pytest.mark.parametrize("target, pred, ok", [
    ("100", "105", True),       # exactly 5% off
    ("100", "105.1", False),
    ("100", "95", True),
    ("0.45", "45%", True),      # percent read as /100
    ("45", "45%", False),       # ... so it no longer matches "45"
    ("45%", "0.46", True),      # 0.46 vs 0.45: 2.2% off
    ("0", "0.01", False),       # zero target -> exact string match
    ("0", "0", True),
    ("Yes", "yes", True),       # text: case-insensitive equality
    ("1,000", "1000", False),   # "1,000" does not parse -> string compare fails
    ("1000", "1e3", True),      # float() accepts scientific notation
])
def test_relaxed_correctness(target, pred, ok):
    assert relaxed_correctness(target, pred) is ok


def test_relaxed_accuracy_strips_and_takes_any_reference():
    assert relaxed_accuracy(" 104 \n", ["100"]) == 1.0
    assert relaxed_accuracy("12", ["a", "12.5"]) == 1.0   # 4% off the second reference
    assert relaxed_accuracy("12", ["a", "13"]) == 0.0


def test_exact_match():
    assert exact_match(" Harry Potter ", ["harry potter"]) == 1.0
    assert exact_match("harry", ["harry potter"]) == 0.0


# ----------------------------------------------------------------------------- MCQ extraction

CHOICES = {"A": "dog", "B": "cat", "C": "fish", "D": "bird"}


@pytest.mark.parametrize("text, expected", [
    ("B", "B"),
    ("(C)", "C"),
    ("The answer is (B) because the animal purrs.", "B"),
    ("Answer: D.", "D"),
    ("**C**", "C"),
    ("A or B", None),                        # two letters: ambiguous
    ("Z", "Z"),
    ("Cannot determine the answer", "Z"),    # refusal phrase
    ("Failed to obtain answer via API", None),
])
def test_can_infer_option(text, expected):
    assert can_infer_option(text, CHOICES) == expected


def test_can_infer_option_article_a_quirk():
    # "A" as an English article is read as option A ...
    assert can_infer_option("A small cat sits there", CHOICES) == "A"
    # ... unless VLMEvalKit's VERBOSE-only guard is switched on.
    assert can_infer_option("A small cat sits there", CHOICES, a_quantifier_guard=True) is None


def test_can_infer_text_and_length_guard():
    assert can_infer_text("I think it is a cat", CHOICES) == "B"
    assert can_infer_text("a cat and a dog", CHOICES) is None   # two option texts
    long = "after careful thought about the picture I believe it is a cat"
    # option texts sum to 3+3+4+4 = 14 chars; the answer is longer than 28 chars
    assert can_infer_text(long, CHOICES) is None
    assert can_infer_text(long, CHOICES, length_guard=False) == "B"


def test_can_infer_falls_back_to_text():
    assert can_infer("it is a fish", CHOICES) == "C"
    assert extract_choice("no idea", CHOICES) == "Z"
    assert extract_choice("  B  ", CHOICES) == "B"


def test_mmmu_preprocess_open_question():
    opts, gt = mmmu_preprocess({}, "42")
    assert opts == {"A": "42", "B": "Other Answers"} and gt == "A"
    assert extract_choice("The result is 42", opts) == "A"
    opts, gt = mmmu_preprocess({"A": "x", "B": "y"}, "B")
    assert opts == {"A": "x", "B": "y"} and gt == "B"


def test_extract_characters_regex():
    assert extract_characters_regex("The best answer is C") == "C"
    assert extract_characters_regex("(B) apples") == "B"
    words = "this is a very long reply without any capital option letters inside of it at all"
    assert extract_characters_regex(words) == ""
    assert extract_characters_regex("apples", choices=["(A) red apples", "(B) pears"]) == "A"


# ----------------------------------------------------------------------------- circular evaluation


def test_circular_group_index():
    assert circular_group_index(17) == 17
    assert circular_group_index(3_000_017) == 17


def test_circular_hits_one_wrong_rotation_fails_group():
    items = [(1, True), (1_000_001, True), (2_000_001, True), (3_000_001, True),   # all right
             (2, True), (1_000_002, False), (2_000_002, True), (3_000_002, True),  # one wrong
             (2_000_005, True)]                                                   # no main row
    groups = circular_hits(items)
    assert groups == {1: True, 2: False}
    assert 100 * sum(groups.values()) / len(groups) == 50.0


def test_accuracy_report_groups():
    recs = [{"hit": True, "category": "x", "l2-category": "p", "split": "dev"},
            {"hit": False, "category": "x", "l2-category": "q", "split": "dev"},
            {"hit": True, "category": "y", "l2-category": "q", "split": "val"}]
    rep = accuracy_report(recs)
    assert rep["overall"] == pytest.approx(200 / 3)
    assert rep["splits"] == {"dev": 50.0, "val": 100.0}
    assert rep["categories"] == {"x": 50.0, "y": 100.0}
    assert rep["l2_categories"] == {"p": 100.0, "q": 50.0}


# ----------------------------------------------------------------------------- yes / no


@pytest.mark.parametrize("text, expected", [
    ("Yes", "Yes"), ("yes.", "Yes"), ("No, it is not.", "No"), ("Yes, there is no cat", "Unknown"),
    ("I am not sure", "Unknown"), ("NO!", "No"),
])
def test_yorn_extraction(text, expected):
    assert yorn_extraction(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("yes", "Yes"), ("No, it is not.", "No"), ("There is a dog. Yes", "Unknown"), ("not sure", "No"),
])
def test_mme_official_extraction(text, expected):
    assert mme_official_extraction(text) == expected


def test_mme_rating_acc_plus_pairs():
    recs = []
    # "existence": 2 images x 2 questions; image 1 both right, image 2 one right.
    for img, oks in (("e1", (True, True)), ("e2", (True, False))):
        recs += [{"category": "existence", "image": img, "correct": ok} for ok in oks]
    # "code_reasoning": 1 image, both wrong.
    recs += [{"category": "code_reasoning", "image": "c1", "correct": False}] * 2
    rating = mme_rating(recs)
    ex = rating["subtasks"]["existence"]
    assert ex["acc"] == 75.0 and ex["acc_plus"] == 50.0 and ex["score"] == 125.0
    assert rating["perception"] == 125.0
    assert rating["cognition"] == 0.0
    assert rating["total"] == 125.0
    assert "OCR" in rating["missing_subtasks"]


def test_pope_rating_f1_and_category_explode():
    # gt/pred pairs: TP, TP, FP, FN, TN
    rows = [("Yes", "Yes", "random"), ("Yes", "Yes", "random"), ("No", "Yes", "popular"),
            ("Yes", "No", "popular"), ("No", "No", "adversarial,popular")]
    rating = pope_rating([{"answer": a, "extracted": e, "category": c} for a, e, c in rows])
    # Overall over the *expanded* list: the last row counts twice (TN in two splits).
    ov = rating["overall"]
    assert ov["n"] == 6
    precision, recall = 2 / 3, 2 / 3
    assert ov["precision"] == pytest.approx(100 * precision)
    assert ov["recall"] == pytest.approx(100 * recall)
    assert ov["f1"] == pytest.approx(100 * 2 * precision * recall / (precision + recall))
    assert ov["acc"] == pytest.approx(100 * 4 / 6)
    pop = rating["categories"]["popular"]
    assert pop["n"] == 3 and pop["f1"] == 0.0 and pop["acc"] == pytest.approx(100 / 3)
    assert rating["categories"]["random"]["f1"] == 100.0


def test_hallusion_rating_aacc_facc_qacc():
    # set 0 of "chart": figure 0 and figure 1, questions 0 and 1 asked about both figures.
    recs = [
        {"index": "VD_chart_x_0_0_0", "category": "VD", "l2-category": "chart", "correct": True},
        {"index": "VD_chart_x_0_0_1", "category": "VD", "l2-category": "chart", "correct": True},
        {"index": "VD_chart_x_0_1_0", "category": "VD", "l2-category": "chart", "correct": True},
        {"index": "VD_chart_x_0_1_1", "category": "VD", "l2-category": "chart", "correct": False},
    ]
    r = hallusion_rating(recs)["overall"]
    assert r["aAcc"] == 75.0
    assert r["fAcc"] == 50.0   # figure 0 all right, figure 1 not
    assert r["qAcc"] == 50.0   # question 0 right on both figures, question 1 not
    assert r["mean"] == pytest.approx((75 + 50 + 50) / 3)


# ----------------------------------------------------------------------------- OCRBench


def test_ocrbench_hit_rules():
    assert ocrbench_hit("The text reads: HELLO world", ["hello"], "Regular Text Recognition")
    assert not ocrbench_hit("helo", ["hello"], "Regular Text Recognition")
    hme = "Handwritten Mathematical Expression Recognition"
    assert ocrbench_hit("$ x ^ { 2 } + 1 $", ["x^{2}+1"], hme)        # spaces removed on both sides
    assert not ocrbench_hit("X^{2}+1", ["x^{2}+1"], hme)               # but case is kept
    assert ocrbench_hit("line one\nline two", ["one line"], "Doc-oriented VQA")  # newline -> space


def test_ocrbench_rating_counts():
    recs = ([{"category": "Regular Text Recognition", "correct": True}] * 3
            + [{"category": "Digit String Recognition", "correct": True}]
            + [{"category": "Doc-oriented VQA", "correct": False}] * 2
            + [{"category": "Key Information Extraction", "correct": True}])
    r = ocrbench_rating(recs)
    assert r["categories"]["Regular Text Recognition"] == 3
    assert r["groups"]["Text Recognition"] == 4
    assert r["groups"]["Doc-oriented VQA"] == 0
    assert r["final_score"] == 5 and r["final_score_norm"] == 0.5


# ----------------------------------------------------------------------------- judge helpers


def test_mmvet_prompt_and_judge():
    p = build_mmvet_prompt("What is 2+2?", "4<OR>four", "It is 4")
    assert p.endswith("What is 2+2? | 4 <OR> four | It is 4 | ")
    replies = iter(["garbage", "1.5", "0.7"])
    grade, log = mmvet_judge(lambda prompt: next(replies), "q", "a", "p")
    assert grade == 0.7 and log == "ok"
    grade, _ = mmvet_judge(lambda prompt: "nope", "q", "a", "p")
    assert grade == 0.0
    recs = [{"category": "rec,ocr", "grade": 1.0}, {"category": "rec", "grade": 0.5}]
    r = mmvet_rating(recs)
    # VLMEvalKit quirk: the "rec"-only question is counted twice in "rec": (1 + .5 + .5) / 3
    assert r["overall"] == 75.0 and r["capabilities"]["rec"] == pytest.approx(200 / 3)
    assert r["capabilities"]["ocr"] == 100.0
    assert mmvet_rating(recs, shared_counters=False)["capabilities"] == {"rec": 75.0, "ocr": 100.0}


def test_mathvista_post_check_and_judge():
    mc = {"question_type": "multi_choice", "answer_option": "B", "choices": "['3/11', '8/11']",
          "question": "What fraction?"}
    assert mathvista_post_check(mc, "The answer is B") is True
    assert mathvista_post_check(mc, "A") is False
    num = {"question_type": "free_form", "answer_type": "integer", "answer": "14", "question": "q"}
    assert mathvista_post_check(num, "14") is True
    txt = {"question_type": "free_form", "answer_type": "list", "answer": "[1, 2]", "question": "q"}
    assert mathvista_post_check(txt, "[1, 2]") is False      # quirk: non-numeric free form never matches
    calls = []
    extracted, log = mathvista_judge(lambda prompt: calls.append(prompt) or "14", num, "It is fourteen")
    assert extracted == "14" and log == "Succeed" and len(calls) == 1
    assert "Model respone: It is fourteen" in calls[0] and calls[0].endswith("Extracted answer:")
    extracted, log = mathvista_judge(lambda prompt: "unused", num, "14")
    assert (extracted, log) == (14, "Prefetch succeed")
    assert build_mathvista_prompt("q", "r").startswith("\nPlease read the following example.")


@pytest.mark.parametrize("text, expected", [
    ("No, there is not.", "No"), ("Yes. But no cat elsewhere", "Yes"), ("I cannot tell", "Yes"),
    ("NO", "Yes"), ("There is no dog", "No"),
])
def test_pope_official_extraction(text, expected):
    from navil.eval.metrics import pope_official_extraction
    assert pope_official_extraction(text) == expected
