"""Judge-based benchmarks (MMVet, MathVista): prompts and rules around a judge LLM.

A judge is any callable ``judge(prompt: str) -> str`` (e.g. a thin wrapper
around an OpenAI-compatible endpoint).  Nothing here invents a number: without
a judge the benchmarks are reported as not scored.

Mirrors VLMEvalKit ``vlmeval/dataset/utils/mmvet.py`` (``build_mmvet_gpt4_prompt``,
``MMVet_auxeval``, ``MMVet_acc``) and ``vlmeval/dataset/utils/mathvista.py``
(``build_mathvista_gpt4_prompt``, ``post_check``, ``MathVista_auxeval``,
``MathVista_acc``).  VLMEvalKit retries with rising temperature; a plain
callable has no temperature, so we simply call it again (up to 5 times).
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from .mcq import can_infer

__all__ = [
    "MMVET_CAPABILITIES",
    "NOT_SCORED",
    "Judge",
    "build_mathvista_prompt",
    "build_mcq_match_prompt",
    "build_mmvet_prompt",
    "mathvista_judge",
    "mathvista_post_check",
    "mathvista_rating",
    "mcq_judge_extract",
    "mmvet_judge",
    "mmvet_rating",
]

Judge = Callable[[str], str]
NOT_SCORED = "not scored: needs a judge endpoint"
_RETRIES = 5
_API_FAILURE = "Failed to obtain answer via API."

# ----------------------------------------------------------------------------- MMVet

_MMVET_HEADER = """
Compare the ground truth and prediction from AI models, to give a correctness score for the prediction.
<AND> in the ground truth means it is totally right
only when all elements in the ground truth are present in the prediction,
and <OR> means it is totally right when any one element in the ground truth is present in the prediction.
The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right).
Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme talks about Iceland and Greenland. It's pointing out that despite their names,
Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries
Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes,
while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues
because the names of these countries do not accurately represent their landscapes. |
The meme is using humor to point out the misleading nature of Iceland's and Greenland's names.
Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow.
The text 'This is why I have trust issues' is a playful way to suggest
that these contradictions can lead to distrust or confusion.
The humor in this meme is derived from the unexpected contrast between the names of the countries
and their actual physical characteristics. | 1.0
"""

MMVET_CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


def build_mmvet_prompt(question: str, answer: str, prediction: str) -> str:
    """The MM-Vet GPT-4 grading prompt (few-shot table, last row left open)."""
    gt = str(answer).replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return _MMVET_HEADER + "\n" + " | ".join([str(question), gt, str(prediction), ""])


def mmvet_judge(judge: Judge, question: str, answer: str, prediction: str) -> tuple[float, str]:
    """Ask the judge for a 0..1 grade; unparsable/out-of-range replies are retried, then 0.0."""
    prompt = build_mmvet_prompt(question, answer, prediction)
    log = []
    for attempt in range(_RETRIES):
        reply = judge(prompt)
        try:
            grade = float(str(reply).strip())
        except ValueError:
            log.append(f"try {attempt}: unparsable reply {reply!r}")
            continue
        if 0.0 <= grade <= 1.0:
            return grade, "ok"
        log.append(f"try {attempt}: out-of-range grade {grade}")
    return 0.0, "; ".join(log + ["all retries failed"])


def mmvet_rating(records: Sequence[Mapping], *, shared_counters: bool = True) -> dict:
    """``MMVet_acc`` from records ``{"category", "grade"}`` (percent).

    Each capability (rec, ocr, know, gen, spat, math) averages the grades of the
    questions whose ``category`` string contains it; ``combinations`` averages
    per exact category string (commas shown as ``_``).

    Quirk kept by default (``shared_counters=True``): VLMEvalKit keeps
    capabilities and combinations in the *same* counters, so a question whose
    category is a single capability (``"rec"``) is counted twice in that
    capability.  ``shared_counters=False`` gives the MM-Vet authors' per-capability
    means (each question once).  ``overall`` is unaffected.
    """
    cap_tot, cap_score = defaultdict(int), defaultdict(float)
    if shared_counters:
        combo_tot, combo_score = cap_tot, cap_score
    else:
        combo_tot, combo_score = defaultdict(int), defaultdict(float)
    combos = []
    total, total_grade = 0, 0.0
    for rec in records:
        cate = str(rec["category"])
        combo = cate.replace(",", "_")
        if combo not in combos:
            combos.append(combo)
        for cap in MMVET_CAPABILITIES:
            if cap in cate:
                cap_tot[cap] += 1
                cap_score[cap] += rec["grade"]
        combo_tot[combo] += 1
        combo_score[combo] += rec["grade"]
        total += 1
        total_grade += rec["grade"]

    def pct(score, tot, k):
        return 100.0 * score[k] / tot[k] if tot[k] else None

    return {"overall": 100.0 * total_grade / total if total else None,
            "capabilities": {c: pct(cap_score, cap_tot, c) for c in MMVET_CAPABILITIES if cap_tot[c]},
            "combinations": {c: pct(combo_score, combo_tot, c) for c in combos}}


# ----------------------------------------------------------------------------- MCQ answer matching

_MCQ_MATCH_EN = (
    "You are an AI assistant who will help me to match "
    "an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, "
    "and you need to find which option is most similar to the answer. "
    "If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\n"
    "Example 2: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\n"
    "Example 3: \n"
    "Question: {}?\nOptions: {}\nAnswer: {}\nYour output: "
)
_MCQ_MATCH_CN = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。"
    "你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。"
    "如果所有选项的意义都与答案显著不同，则输出 Z。"
    "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。"
    "例 1:"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n"
    "问题: {}?\n选项: {}\n答案: {}\n输出: "
)


def build_mcq_match_prompt(question: str, options: Mapping[str, object], prediction: str) -> str:
    """VLMEvalKit's choice-matching prompt (``build_prompt`` / ``build_prompt_cn`` in
    ``multiple_choice.py``); the Chinese template is used when the question contains CJK."""
    option_str = "There are several options: \n" + "".join(f"{k}. {v}\n" for k, v in options.items())
    template = _MCQ_MATCH_CN if re.search("[\u4e00-\u9fff]", str(question)) else _MCQ_MATCH_EN
    return template.format(question, option_str, prediction)


def mcq_judge_extract(judge: Judge, question: str, options: Mapping[str, object], prediction: str) -> str:
    """Judge fallback of ``extract_answer_from_item`` for predictions the rules cannot map.

    Up to 3 judge calls; each reply goes through :func:`can_infer`.  Where
    VLMEvalKit finally draws a *random* option, we return ``'Z'`` (a miss)
    rather than invent an answer.
    """
    prompt = build_mcq_match_prompt(question, options, prediction)
    for _ in range(3):
        reply = str(judge(prompt))
        if _API_FAILURE.rstrip(".") in reply:
            continue
        found = can_infer(reply, options)
        if found:
            return found
    return "Z"


# ----------------------------------------------------------------------------- MathVista

_MATHVISTA_TASK = """
Please read the following example.
Then extract the answer from the model response and type it at the end of the prompt.\n
"""
_MATHVISTA_EXAMPLES = (
    """
Hint: Please answer the question requiring an integer answer and provide the final value,
e.g., 1, 2, 3, at the end.\n
Question: Which number is missing?\n
Model response: The number missing in the sequence is 14.\n
Extracted answer: 14
""",
    """
Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value,
e.g., 1.2, 1.3, 1.4, at the end.\n
Question: What is the fraction of females facing the camera?\n
Model response: The fraction of females facing the camera is 0.6,
which means that six out of ten females in the group are facing the camera.\n
Extracted answer: 0.6
""",
    """
Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value,
e.g., 1.23, 1.34, 1.45, at the end.\n
Question: How much money does Luca need to buy a sour apple candy and a butter-scotch candy? (Unit: $)\n
Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.\n
Extracted answer: 1.45
""",
    """
Hint: Please answer the question requiring a Python list as an answer and provide the final list,
e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.\n
Question: Between which two years does the line graph saw its maximum peak?\n
Model response: The line graph saw its maximum peak between 2007 and 2008.\n
Extracted answer: [2007, 2008]
""",
    """
Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n
Question: What fraction of the shape is blue?\n
Choices: (A) 3/11 (B) 8/11 (C) 6/11 (D) 3/5\n
Model response: The correct answer is (B) 8/11.\n
Extracted answer: B
""",
)


def build_mathvista_prompt(question: str, prediction: str) -> str:
    """The MathVista answer-extraction prompt as VLMEvalKit sends it.

    Kept byte-for-byte in spirit, including its oddities ("Model respone" and no
    newline before the final "Extracted answer:"), because the judge sees it.
    """
    prompt = _MATHVISTA_TASK
    for example in _MATHVISTA_EXAMPLES:
        prompt += example + "\n"
    prompt += str(question) + "\n"
    prompt += "Model respone: " + str(prediction)
    prompt += "Extracted answer:"
    return prompt


def _choices_dict(choices) -> dict:
    if isinstance(choices, str):
        choices = ast.literal_eval(choices)
    return {chr(65 + i): v for i, v in enumerate(choices)}


def mathvista_post_check(row: Mapping, response, prefetch: bool = False):
    """VLMEvalKit ``post_check``: compare an extracted response with the ground truth.

    Multi-choice: the option is inferred with :func:`can_infer` against
    ``choices`` and compared with ``answer_option``.  Free-form ``integer`` /
    ``float``: ``int()``/``float()`` of the whole response must equal the
    answer.  Quirk kept: any other answer type (``text``, ``list``) compares the
    string ``'None'`` with the answer, i.e. is never right.
    With ``prefetch=True`` it returns the matched value (or False) instead of True.
    """
    answer = row.get("answer")
    result = None
    try:
        if row.get("question_type") == "multi_choice":
            answer = row.get("answer_option")
            result = can_infer(str(response), _choices_dict(row.get("choices")))
            if prefetch:
                return result
        elif row.get("answer_type") == "integer":
            result = int(response)
            answer = int(row.get("answer"))
        elif row.get("answer_type") == "float":
            result = float(response)
            answer = float(row.get("answer"))
        else:
            result = str(result)
            answer = str(answer)
    except (ValueError, TypeError, SyntaxError):
        pass
    if result == answer:
        return result if prefetch else True
    return False


def mathvista_judge(judge: Judge, row: Mapping, prediction: str) -> tuple[str, str]:
    """Rule-based pre-fetch first; otherwise ask the judge to extract the answer.

    Returns ``(extracted, log)``.  As VLMEvalKit, a pre-fetch whose value is
    falsy (e.g. the integer 0) falls through to the judge.
    """
    prefetched = mathvista_post_check(row, prediction, prefetch=True)
    if prefetched:
        return prefetched, "Prefetch succeed"
    prompt = build_mathvista_prompt(row.get("question", ""), prediction)
    for _ in range(_RETRIES):
        reply = judge(prompt)
        if _API_FAILURE not in str(reply):
            return str(reply), "Succeed"
    return "", "All 5 retries failed."


def mathvista_rating(records: Sequence[Mapping]) -> dict:
    """``MathVista_acc`` from records ``{"row", "extracted", "log"}`` (percent).

    Accuracy overall, per ``task`` and per skill (``skills`` is a list literal).
    """
    tot, hit, fetch = defaultdict(int), defaultdict(int), defaultdict(int)
    tasks, skills_seen = [], []
    for rec in records:
        row = rec["row"]
        task = row.get("task")
        try:
            skills = ast.literal_eval(row.get("skills")) if row.get("skills") is not None else []
        except (ValueError, SyntaxError):
            skills = [row.get("skills")]
        if not isinstance(skills, (list, tuple)):
            skills = [skills]
        keys = ["Overall"] + ([task] if task is not None else []) + list(skills)
        for k in keys:
            tot[k] += 1
        if task is not None and task not in tasks:
            tasks.append(task)
        for s in skills:
            if s not in skills_seen:
                skills_seen.append(s)
        if rec.get("log") == "Prefetch succeed":
            for k in keys:
                fetch[k] += 1
        if mathvista_post_check(row, rec["extracted"], prefetch=False):
            for k in keys:
                hit[k] += 1

    def pct(d, k):
        return 100.0 * d[k] / tot[k] if tot[k] else None

    return {"overall": pct(hit, "Overall"), "prefetch_rate": pct(fetch, "Overall"),
            "tasks": {t: pct(hit, t) for t in tasks}, "skills": {s: pct(hit, s) for s in skills_seen}}
