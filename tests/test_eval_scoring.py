"""TSV reader and end-to-end score() on tiny hand-written VLMEvalKit-style TSVs."""
from __future__ import annotations

import base64
import csv
import io

import pytest
from PIL import Image

from navil.eval.scoring import (
    BENCHMARKS,
    BenchmarkSpec,
    build_prompt,
    navil_average,
    register_benchmark,
    score,
)
from navil.eval.tsv import read_tsv, row_images, row_options


def _png_b64(color=(255, 0, 0)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


IMG = _png_b64()


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quotechar='"', lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row if isinstance(row, list) else [row.get(h, "") for h in header])
    return path


# ----------------------------------------------------------------------------- TSV reader


def test_read_tsv_valid_references_and_malformed(tmp_path):
    header = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]
    rows = [
        {"index": 1, "image": IMG, "question": "q1", "A": "x", "B": "y", "C": "z", "D": "", "answer": "B",
         "category": "c1"},
        {"index": 1000001, "image": "1", "question": "q1 rotated", "A": "y", "B": "z", "C": "x",
         "answer": "A", "category": "c1"},                                        # image shared with row 1
        {"index": 2, "image": "!!!" + "x" * 80, "question": "q2", "A": "x", "B": "y", "answer": "A"},
        {"index": 3, "image": IMG, "question": "q3", "A": "x", "B": "y", "answer": ""},
        {"index": 4, "image": IMG, "question": "q4", "A": "x", "B": "y", "answer": "E"},
        {"index": 5, "image": "99", "question": "q5", "A": "x", "B": "y", "answer": "A"},
        {"index": 6, "image": IMG, "question": "q6", "A": "None", "B": "y", "C": "z", "answer": "B"},
        {"index": 1, "image": IMG, "question": "dup", "A": "x", "B": "y", "answer": "A"},
        {"index": 7, "image": "", "question": "no image", "A": "x", "B": "y", "answer": "A"},
        ["8", IMG, "too few fields"],
    ]
    path = write_tsv(tmp_path / "mcq.tsv", header, rows)
    data = read_tsv(path, mcq=True)

    good = {r["index"]: r for r in data.rows}
    assert sorted(good) == [1, 6, 1000001]
    assert isinstance(next(iter(good)), int)
    assert row_options(good[1]) == {"A": "x", "B": "y", "C": "z"}            # empty D dropped
    assert row_options(good[6]) == {"B": "y", "C": "z"}                      # pandas NA token "None" dropped
    assert good[1000001]["image"] == IMG and good[1000001]["image_ref"] == 1
    assert row_images(good[1])[0].startswith(b"\x89PNG")

    reasons = {(m.index, m.line): m.reason for m in data.malformed}
    by_index = {}
    for (idx, _), reason in reasons.items():
        by_index.setdefault(idx, []).append(reason)
    assert "broken base64" in by_index[2][0]
    assert by_index[3] == ["missing answer"]
    assert "'E' is not one of the options A, B" in by_index[4][0]
    assert "refers to row '99'" in by_index[5][0]
    assert by_index[1] == ["duplicate index"]
    assert by_index[7][0].startswith("no image")
    assert "wrong field count" in by_index[8][0]
    assert all(m.line >= 2 for m in data.malformed)


def test_read_tsv_pil_check_and_string_index(tmp_path):
    not_an_image = base64.b64encode(b"hello world, definitely not a picture " * 3).decode()
    header = ["index", "image", "question", "answer"]
    rows = [{"index": "VD_chart_x_0_0_0", "image": IMG, "question": "q", "answer": "Yes"},
            {"index": "VD_chart_x_0_0_1", "image": not_an_image, "question": "q", "answer": "No"}]
    path = write_tsv(tmp_path / "y.tsv", header, rows)
    assert len(read_tsv(path).rows) == 2                           # decodes fine as base64
    data = read_tsv(path, check_images="pil")
    assert [r["index"] for r in data.rows] == ["VD_chart_x_0_0_0"]
    assert "not a readable image" in data.malformed[0].reason


def test_read_tsv_multi_image_list_cell(tmp_path):
    header = ["index", "image", "question", "answer"]
    cell = repr([IMG, _png_b64((0, 0, 255))])
    path = write_tsv(tmp_path / "m.tsv", header, [{"index": 0, "image": cell, "question": "q", "answer": "A"}])
    row = read_tsv(path).rows[0]
    assert isinstance(row["image"], list) and len(row["image"]) == 2


# ----------------------------------------------------------------------------- score(): VQA


def test_score_textvqa_vqa_accuracy(tmp_path):
    header = ["index", "image", "question", "answer"]
    rows = [
        {"index": 0, "image": IMG, "question": "how many?", "answer": repr(["2"] * 10)},
        {"index": 1, "image": IMG, "question": "brand?", "answer": repr(["coca cola"] * 3 + ["pepsi"] * 7)},
        {"index": 2, "image": IMG, "question": "price?", "answer": repr(["1,000"] * 10)},
        {"index": 3, "image": IMG, "question": "missing pred", "answer": repr(["x"] * 10)},
    ]
    path = write_tsv(tmp_path / "TextVQA_VAL.tsv", header, rows)
    res = score("TextVQA_VAL", path, {0: "Two", "1": "Coca Cola.", 2: "1000"})
    # per question: 1.0, 0.9 (3 of 10 refs agree), 1.0, 0 (missing)
    assert res["score"] == pytest.approx(100 * (1.0 + 0.9 + 1.0 + 0.0) / 4)
    assert res["n"] == 4 and res["n_missing"] == 1 and res["missing"] == [3]


def test_score_docvqa_anls_edge(tmp_path):
    header = ["index", "image", "question", "answer"]
    rows = [{"index": 0, "image": IMG, "question": "q", "answer": repr(["abcd"])},
            {"index": 1, "image": IMG, "question": "q", "answer": repr(["Total", "sum"])}]
    path = write_tsv(tmp_path / "DocVQA_VAL.tsv", header, rows)
    preds = {0: "abxy", 1: "total"}
    assert score("DocVQA_VAL", path, preds)["score"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert score("DocVQA_VAL", path, preds, anls_mode="original")["score"] == pytest.approx(50.0)


def test_score_chartqa_splits(tmp_path):
    header = ["index", "image", "question", "answer", "split"]
    rows = [{"index": 0, "image": IMG, "question": "q", "answer": "100", "split": "human"},
            {"index": 1, "image": IMG, "question": "q", "answer": "0.45", "split": "augmented"},
            {"index": 2, "image": IMG, "question": "q", "answer": "Blue", "split": "augmented"}]
    path = write_tsv(tmp_path / "ChartQA_TEST.tsv", header, rows)
    res = score("ChartQA_TEST", path, {0: "104", 1: "45%", 2: "red"})
    assert res["score"] == pytest.approx(200 / 3)
    assert res["splits"] == {"augmented": 50.0, "human": 100.0}


# ----------------------------------------------------------------------------- score(): MCQ


def test_score_ai2d_mcq(tmp_path):
    header = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]
    rows = [{"index": i, "image": IMG, "question": "q", "A": "dog", "B": "cat", "C": "fish", "D": "bird",
             "answer": ans, "category": cat} for i, (ans, cat) in enumerate(
                 [("B", "x"), ("C", "x"), ("A", "y"), ("D", "y"), ("B", "y")])]
    path = write_tsv(tmp_path / "AI2D_TEST.tsv", header, rows)
    preds = {0: "The answer is (B) because it purrs.", 1: "fish", 2: "C", 3: "I cannot tell"}
    res = score("AI2D_TEST", path, preds)
    assert res["score"] == pytest.approx(40.0)          # rows 0 and 1 right; 4 is missing
    assert res["categories"] == {"x": 100.0, "y": 0.0}
    assert res["n_missing"] == 1


def test_score_mmmu_primary_split_and_open_question(tmp_path):
    header = ["index", "image", "question", "A", "B", "C", "answer", "split", "category"]
    rows = [
        {"index": 0, "image": IMG, "question": "q", "A": "1", "B": "2", "C": "3", "answer": "C",
         "split": "validation", "category": "Math"},
        {"index": 1, "image": IMG, "question": "open", "answer": "42", "split": "validation",
         "category": "Physics"},
        {"index": 2, "image": IMG, "question": "q", "A": "1", "B": "2", "answer": "A", "split": "dev",
         "category": "Math"},
    ]
    path = write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", header, rows)
    res = score("MMMU_DEV_VAL", path, {0: "B", 1: "The answer is 42", 2: "A"})
    assert res["primary_split"] == "validation"
    assert res["score"] == 50.0                                   # validation: 1 of 2
    assert res["splits"] == {"dev": 100.0, "validation": 50.0}
    assert res["overall_all_splits"] == pytest.approx(200 / 3)
    assert res["categories"] == {"Math": 0.0, "Physics": 100.0}


def test_score_mmbench_circular(tmp_path):
    header = ["index", "image", "question", "A", "B", "C", "answer", "category", "l2-category", "split"]
    opts = ["red", "green", "blue"]
    rows, preds = [], {}
    for q, gt_text, wrong_rotation, cat in ((1, "green", None, "color"), (2, "blue", 2, "color"),
                                            (3, "red", None, "shape")):
        for k in range(3):
            rotated = opts[k:] + opts[:k]
            idx = q + k * 1_000_000
            letter = "ABC"[rotated.index(gt_text)]
            rows.append({"index": idx, "image": IMG if k == 0 else str(q), "question": f"q{q}",
                         "A": rotated[0], "B": rotated[1], "C": rotated[2], "answer": letter,
                         "category": cat, "l2-category": "perception", "split": "dev"})
            preds[idx] = letter if k != wrong_rotation else ("A" if letter != "A" else "B")
    path = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", header, rows)
    res = score("MMBench_DEV_EN", path, preds)
    assert res["n"] == 3 and res["n_rotations"] == 9
    assert res["score"] == pytest.approx(200 / 3)        # question 2 fails on one rotation
    assert res["vanilla_main_accuracy"] == 100.0
    assert res["categories"] == {"color": 50.0, "shape": 100.0}
    # Non-circular scoring counts every row independently: 8 of 9 right.
    assert score("MMBench_DEV_EN", path, preds, circular=False)["score"] == pytest.approx(800 / 9)


def test_score_mmbench_test_without_answers(tmp_path):
    header = ["index", "image", "question", "A", "B"]
    path = write_tsv(tmp_path / "t.tsv", header, [{"index": 0, "image": IMG, "question": "q", "A": "a",
                                                    "B": "b"}])
    res = score("MMBench_TEST_EN", path, {0: "A"})
    assert res["score"] is None and res["status"].startswith("not scored")


# ----------------------------------------------------------------------------- score(): yes/no


def test_score_mme(tmp_path):
    header = ["index", "image", "question", "answer", "category", "image_path"]
    rows, preds = [], {}
    spec = [("existence", [("Yes", "Yes"), ("No", "No")]),           # image both right
            ("existence", [("Yes", "Yes"), ("No", "Yes, it is")]),   # one wrong
            ("code_reasoning", [("Yes", "yes."), ("No", "no")])]     # both right
    idx = 0
    for img_no, (cat, qa) in enumerate(spec):
        first = idx
        for gt, pred in qa:
            rows.append({"index": idx, "image": IMG if idx == first else str(first), "question": "q",
                         "answer": gt, "category": cat, "image_path": f"{cat}/{img_no}.png"})
            preds[idx] = pred
            idx += 1
    path = write_tsv(tmp_path / "MME.tsv", header, rows)
    res = score("MME", path, preds)
    # existence: acc 75, acc+ 50 -> 125; code_reasoning: 100 + 100 -> 200
    assert res["perception"] == pytest.approx(125.0)
    assert res["cognition"] == pytest.approx(200.0)
    assert res["score"] == pytest.approx(325.0)
    assert res["categories"]["existence"] == pytest.approx(125.0)
    assert res["unit"] == "points (0-2800)"


def test_score_mme_groups_by_image_reference_without_image_path(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    rows = [{"index": 0, "image": IMG, "question": "q", "answer": "Yes", "category": "color"},
            {"index": 1, "image": "0", "question": "q", "answer": "No", "category": "color"}]
    path = write_tsv(tmp_path / "MME.tsv", header, rows)
    res = score("MME", path, {0: "Yes", 1: "No"})
    assert res["subtasks"]["color"]["n_images"] == 1 and res["score"] == 200.0


def test_score_pope(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    data = [("Yes", "Yes", "random"), ("Yes", "Yes", "random"), ("No", "Yes", "popular"),
            ("Yes", "No", "popular"), ("No", "No", "adversarial")]
    rows = [{"index": i, "image": IMG, "question": "Is there a cat?", "answer": a, "category": c}
            for i, (a, _, c) in enumerate(data)]
    path = write_tsv(tmp_path / "POPE.tsv", header, rows)
    res = score("POPE", path, {i: p for i, (_, p, _) in enumerate(data)})
    # TP=2, FP=1, FN=1 -> precision = recall = 2/3 -> F1 = 2/3
    assert res["score"] == pytest.approx(200 / 3)
    assert res["overall"]["acc"] == pytest.approx(60.0)
    assert res["categories"] == {"adversarial": 0.0, "popular": 0.0, "random": 100.0}


def test_score_hallusionbench(tmp_path):
    header = ["index", "image", "question", "answer", "category", "l2-category"]
    rows = [{"index": f"VD_chart_x_0_{f}_{q}", "image": IMG, "question": "q", "answer": "Yes",
             "category": "VD", "l2-category": "chart"} for f in (0, 1) for q in (0, 1)]
    path = write_tsv(tmp_path / "HallusionBench.tsv", header, rows)
    preds = {"VD_chart_x_0_0_0": "Yes", "VD_chart_x_0_0_1": "Yes", "VD_chart_x_0_1_0": "Yes",
             "VD_chart_x_0_1_1": "No"}
    res = score("HallusionBench", path, preds)
    assert (res["aAcc"], res["fAcc"], res["qAcc"]) == (75.0, 50.0, 50.0)
    assert res["score"] == pytest.approx(175 / 3)


# ----------------------------------------------------------------------------- score(): OCRBench


def test_score_ocrbench(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    hme = "Handwritten Mathematical Expression Recognition"
    rows = [
        {"index": 0, "image": IMG, "question": "q", "answer": repr(["STOP"]), "category": "Regular Text Recognition"},
        {"index": 1, "image": IMG, "question": "q", "answer": repr(["12", "twelve"]),
         "category": "Digit String Recognition"},
        {"index": 2, "image": IMG, "question": "q", "answer": repr(["x^{2}"]), "category": hme},
        {"index": 3, "image": IMG, "question": "q", "answer": repr(["invoice"]), "category": "Doc-oriented VQA"},
    ]
    path = write_tsv(tmp_path / "OCRBench.tsv", header, rows)
    res = score("OCRBench", path, {0: "The sign says stop.", 1: "It is twelve", 2: "x ^ { 2 }", 3: "receipt"})
    assert res["final_score"] == 3
    assert res["score"] == pytest.approx(3 / 4 * 1000)
    assert res["categories"]["Regular Text Recognition"] == 1
    assert res["categories"][hme] == 1
    assert res["groups"]["Text Recognition"] == 2
    assert res["groups"]["Doc-oriented VQA"] == 0


# ----------------------------------------------------------------------------- judge benchmarks


def test_score_mmvet_needs_judge(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    rows = [{"index": 0, "image": IMG, "question": "What is 2+2?", "answer": "4", "category": "math"},
            {"index": 1, "image": IMG, "question": "Read it", "answer": "hi", "category": "ocr"}]
    path = write_tsv(tmp_path / "MMVet.tsv", header, rows)
    res = score("MMVet", path, {0: "4", 1: "hello"})
    assert res["score"] is None and res["status"] == "not scored: needs a judge endpoint"
    res = score("MMVet", path, {0: "4", 1: "hello"}, judge=lambda prompt: "1.0" if "| 4 | 4 |" in prompt else "0.5")
    assert res["score"] == pytest.approx(75.0)
    assert res["categories"] == {"ocr": 50.0, "math": 100.0}


# ----------------------------------------------------------------------------- registry, average, prompts


def test_register_custom_benchmark(tmp_path):
    def scorer(rows, preds, spec, **opts):
        right = [preds[r["index"]] == r["answer"] for r in rows]
        return {"score": 100.0 * sum(right) / len(right), "n": len(rows)}

    register_benchmark("Synthetic_TEST", BenchmarkSpec("Synthetic_TEST", "custom", "exact", scorer=scorer),
                       overwrite=True)
    try:
        header = ["index", "question", "answer"]
        path = write_tsv(tmp_path / "s.tsv", header, [{"index": 0, "question": "q", "answer": "a"},
                                                      {"index": 1, "question": "q", "answer": "b"}])
        res = score("Synthetic_TEST", path, {0: "a", 1: "c"})
        assert res["score"] == 50.0 and res["benchmark"] == "Synthetic_TEST"
        with pytest.raises(ValueError):
            register_benchmark("Synthetic_TEST", BENCHMARKS["Synthetic_TEST"])
    finally:
        BENCHMARKS.pop("Synthetic_TEST", None)


def test_registry_covers_brief():
    for name in ("TextVQA_VAL", "DocVQA_VAL", "InfoVQA_VAL", "ChartQA_TEST", "AI2D_TEST", "MMMU_DEV_VAL", "OCRBench",
                 "MME", "MMBench_DEV_EN", "MMBench_DEV_CN", "MMBench_TEST_EN", "POPE", "HallusionBench",
                 "SEEDBench_IMG", "MMStar", "CCBench", "RealWorldQA", "ScienceQA_TEST", "ScienceQA_VAL",
                 "MathVista_MINI", "MMVet"):
        assert name in BENCHMARKS
    assert BENCHMARKS["CCBench"].metric == "mcq_circular"


def test_navil_average():
    results = {"MME": 2240.0, "OCRBench": 800.0, "MMStar": 50.0, "POPE": {"score": 90.0}}
    assert navil_average(results) == pytest.approx((80.0 + 80.0 + 50.0 + 90.0) / 4)
    with pytest.raises(ValueError):
        navil_average({"MMVet": None, "MMStar": 50.0})
    assert navil_average({"MMVet": {"score": None}, "MMStar": 50.0}, skip_none=True) == 50.0


def test_build_prompt_styles():
    row = {"question": "What is it?", "hint": "Look closely.", "A": "cat", "B": "dog"}
    assert build_prompt("MMStar", row) == (
        "Look closely.\nWhat is it?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly.")
    assert build_prompt("MMStar", row, style="mcq_vlmevalkit") == (
        "Hint: Look closely.\nQuestion: What is it?\nOptions:\nA. cat\nB. dog\n"
        "Please select the correct answer from the options above. \n")
    assert build_prompt("MMMU_DEV_VAL", {"question": "Compute x."}) == "Compute x.\nAnswer the question directly."
    assert build_prompt("MMBench_DEV_CN", {"question": "这是什么?", "A": "猫", "B": "狗"}).endswith("请直接回答选项字母。")
    assert build_prompt("TextVQA_VAL", {"question": "What brand?"}) == (
        "What brand?\nAnswer the question using a single word or phrase.")
    assert build_prompt("MME", {"question": "Is there a dog?"}) == (
        "Is there a dog? Answer the question using a single word or phrase.")
    assert build_prompt("HallusionBench", {"question": "Is it red?"}) == (
        "Is it red? Please answer yes or no. Answer the question using a single word or phrase.")
    assert build_prompt("POPE", {"question": "Is there a cat in the image?"}) == "Is there a cat in the image?"


def test_score_mathvista_with_judge_and_prefetch(tmp_path):
    header = ["index", "image", "question", "answer", "question_type", "answer_type", "choices",
              "answer_option", "task", "skills"]
    rows = [
        {"index": 0, "image": IMG, "question": "How many?", "answer": "14", "question_type": "free_form",
         "answer_type": "integer", "task": "figure QA", "skills": repr(["arithmetic reasoning"])},
        {"index": 1, "image": IMG, "question": "Which?", "answer": "8/11", "question_type": "multi_choice",
         "answer_type": "text", "choices": repr(["3/11", "8/11"]), "answer_option": "B", "task": "math word problem",
         "skills": repr(["algebraic reasoning"])},
        {"index": 2, "image": IMG, "question": "Value?", "answer": "2.5", "question_type": "free_form",
         "answer_type": "float", "task": "figure QA", "skills": repr(["arithmetic reasoning"])},
    ]
    path = write_tsv(tmp_path / "MathVista_MINI.tsv", header, rows)
    preds = {0: "14", 1: "I pick (B).", 2: "The value is about two and a half"}
    assert score("MathVista_MINI", path, preds)["score"] is None
    calls = []

    def judge(prompt):
        calls.append(prompt)
        return "2.5"

    res = score("MathVista_MINI", path, preds, judge=judge)
    assert len(calls) == 1                      # rows 0 and 1 are settled by the rule pre-fetch
    assert res["score"] == 100.0 and res["prefetch_rate"] == pytest.approx(200 / 3)
    assert res["categories"] == {"figure QA": 100.0, "math word problem": 100.0}


def test_score_mme_official_extraction_option(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    rows = [{"index": 0, "image": IMG, "question": "q", "answer": "No", "category": "color"},
            {"index": 1, "image": "0", "question": "q", "answer": "Yes", "category": "color"}]
    path = write_tsv(tmp_path / "MME.tsv", header, rows)
    preds = {0: "not at all", 1: "The answer is yes"}
    # VLMEvalKit word rule: "not at all" -> Unknown, "... yes" -> Yes
    assert score("MME", path, preds)["subtasks"]["color"]["acc"] == 50.0
    # MME's own prefix rule: "not " -> No, "The " -> Unknown
    assert score("MME", path, preds, yorn_extraction="mme_official")["subtasks"]["color"]["acc"] == 50.0
    assert score("MME", path, {0: "no", 1: "yes"}, yorn_extraction="mme_official")["score"] == 200.0


def test_score_reports_unknown_prediction_keys_and_yorn_warnings(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    rows = [{"index": 0, "image": IMG, "question": "q", "answer": "yes", "category": "random"}]
    path = write_tsv(tmp_path / "POPE.tsv", header, rows)
    res = score("POPE", path, {0: "Yes", 99: "No"})
    assert res["n_unknown_predictions"] == 1
    assert res["overall"]["acc"] == 0.0            # "yes" != "Yes": exact comparison, as VLMEvalKit
    assert any("never match" in w for w in res["warnings"])


def test_score_mcq_optional_judge_matcher(tmp_path):
    header = ["index", "image", "question", "A", "B", "C", "answer"]
    rows = [{"index": 0, "image": IMG, "question": "Which animal?", "A": "dog", "B": "cat", "C": "cow",
             "answer": "B"},
            {"index": 1, "image": IMG, "question": "Which animal?", "A": "dog", "B": "cat", "C": "cow",
             "answer": "A"}]
    path = write_tsv(tmp_path / "MMStar.tsv", header, rows)
    preds = {0: "a furry pet that meows", 1: "A"}
    assert score("MMStar", path, preds)["score"] == 50.0            # rules cannot map row 0 -> 'Z'
    prompts = []
    res = score("MMStar", path, preds, judge=lambda p: prompts.append(p) or "B")
    assert res["score"] == 100.0 and res["n_judged"] == 1
    assert "Answer: a furry pet that meows\nYour output: " in prompts[0]
    assert "There are several options: \nA. dog\nB. cat\nC. cow\n" in prompts[0]


def test_score_nan_prediction_counts_as_missing(tmp_path):
    header = ["index", "image", "question", "answer"]
    path = write_tsv(tmp_path / "d.tsv", header, [{"index": 0, "image": IMG, "question": "q", "answer": "['x']"}])
    res = score("DocVQA_VAL", path, {"0": float("nan")})
    assert res["n_missing"] == 1 and res["score"] == 0.0


def test_score_pope_official_extraction_option(tmp_path):
    header = ["index", "image", "question", "answer", "category"]
    rows = [{"index": 0, "image": IMG, "question": "q", "answer": "Yes", "category": "random"},
            {"index": 1, "image": IMG, "question": "q", "answer": "No", "category": "random"}]
    path = write_tsv(tmp_path / "POPE.tsv", header, rows)
    preds = {0: "I think so", 1: "There is no cat."}
    assert score("POPE", path, preds)["overall"]["acc"] == 50.0           # "I think so" -> Unknown
    assert score("POPE", path, preds, yorn_extraction="pope_official")["overall"]["acc"] == 100.0
