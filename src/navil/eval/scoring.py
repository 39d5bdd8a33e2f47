"""Benchmark registry, prompt builders and end-to-end scoring of predictions.

``score(name, tsv_path, predictions)`` reproduces what VLMEvalKit's
``Dataset.evaluate`` reports under its default ``exact_matching`` policy (no
judge LLM) for the benchmarks NaViL reports, using the metrics in
:mod:`navil.eval.metrics`.  Predictions are a dict keyed by the TSV ``index``
values (``int`` keys and their ``str`` forms are both accepted).

Conventions of the returned dict:

* ``score`` -- the headline number: percent (0..100) for accuracy-type
  metrics; MME = perception + cognition (0..2800); OCRBench = correct / N x 1000
  (the official 0..1000 score on the full 1000 questions); ``None`` when the
  benchmark cannot be scored (judge needed, no ground truth).
* ``categories`` -- per-category breakdown in the same unit family.
* ``n`` (scored questions / groups), ``n_missing`` + ``missing`` (indices with
  no prediction -- they count as wrong), ``n_malformed`` + ``malformed``
  (rows set aside by :func:`navil.eval.tsv.read_tsv`, not scored),
  ``status`` and ``warnings``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from .metrics import judge as _judge
from .metrics import mcq as _mcq
from .metrics import ocrbench as _ocr
from .metrics import vqa as _vqa
from .metrics import yorn as _yorn
from .tsv import read_tsv, row_options

__all__ = [
    "BENCHMARKS",
    "PROMPT_STYLES",
    "BenchmarkSpec",
    "build_prompt",
    "get_benchmark",
    "navil_average",
    "register_benchmark",
    "score",
]

_MAX_LISTED = 50

PROMPT_STYLES = ("mcq_internvl", "mcq_vlmevalkit", "vqa_short", "plain", "yorn_mme", "yorn_hallusion")


@dataclass(frozen=True)
class BenchmarkSpec:
    """How one benchmark is prompted and scored.

    Attributes:
        name: VLMEvalKit dataset name.
        kind: ``"mcq"``, ``"vqa"``, ``"yorn"``, ``"ocrbench"``, ``"judge"`` or ``"custom"``.
        metric: ``"vqa_score"``, ``"anls"``, ``"relaxed_accuracy"``, ``"exact_match"``,
            ``"mcq_accuracy"``, ``"mcq_circular"``, ``"mme"``, ``"pope"``, ``"hallusion"``,
            ``"yorn_accuracy"``, ``"ocrbench"``, ``"mmvet"``, ``"mathvista"`` or a custom name.
        prompt_style: one of :data:`PROMPT_STYLES` (see :func:`build_prompt`).
        unit: unit of ``score``.
        primary_split: if set and present in the data, ``score`` is that split's
            number (MMMU_DEV_VAL reports the ``validation`` split).
        options: default keyword options for the metric (overridable in :func:`score`).
        scorer: for ``kind="custom"``: ``scorer(rows, predictions, spec, **options) -> dict``;
            ``predictions`` is already resolved to ``{index: str | None}``.  The returned
            dict is merged into the standard result (it should at least give ``score``).
        description: free text shown in docs / reports.
    """

    name: str
    kind: str
    metric: str
    prompt_style: str = "plain"
    unit: str = "percent"
    primary_split: str | None = None
    options: Mapping = field(default_factory=dict)
    scorer: Callable | None = None
    description: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(name: str, spec: BenchmarkSpec, *, overwrite: bool = False) -> BenchmarkSpec:
    """Add ``spec`` to :data:`BENCHMARKS` under ``name`` (its ``name`` field is set to match)."""
    if name in BENCHMARKS and not overwrite:
        raise ValueError(f"benchmark {name!r} is already registered (pass overwrite=True to replace it)")
    if spec.kind == "custom" and spec.scorer is None:
        raise ValueError("a custom benchmark needs a scorer callable")
    if spec.prompt_style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt_style {spec.prompt_style!r}; expected one of {PROMPT_STYLES}")
    if spec.name != name:
        spec = replace(spec, name=name)
    BENCHMARKS[name] = spec
    return spec


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; registered: {', '.join(sorted(BENCHMARKS))}") from None


def _builtin(name, kind, metric, prompt_style, description, **kw):
    register_benchmark(name, BenchmarkSpec(name, kind, metric, prompt_style, description=description, **kw))


_builtin("TextVQA_VAL", "vqa", "vqa_score", "vqa_short", "TextVQA val, 10 refs, VQA accuracy")
_builtin("DocVQA_VAL", "vqa", "anls", "vqa_short", "DocVQA val, ANLS (threshold 0.5)")
_builtin("InfoVQA_VAL", "vqa", "anls", "vqa_short", "InfographicVQA val, ANLS (threshold 0.5)")
_builtin("ChartQA_TEST", "vqa", "relaxed_accuracy", "vqa_short",
         "ChartQA test (human + augmented), relaxed accuracy 5%")
_builtin("OCRBench", "ocrbench", "ocrbench", "vqa_short", "OCRBench v1, substring match, 0..1000",
         unit="points (0-1000)")
for _name, _desc in (
    ("AI2D_TEST", "AI2D test (masked), MCQ accuracy"),
    ("SEEDBench_IMG", "SEED-Bench image part, MCQ accuracy"),
    ("MMStar", "MMStar, MCQ accuracy"),
    ("RealWorldQA", "RealWorldQA, MCQ accuracy"),
    ("ScienceQA_TEST", "ScienceQA test (image questions), MCQ accuracy"),
    ("ScienceQA_VAL", "ScienceQA val (image questions), MCQ accuracy"),
):
    _builtin(_name, "mcq", "mcq_accuracy", "mcq_internvl", _desc)
_builtin("MMMU_DEV_VAL", "mcq", "mcq_accuracy", "mcq_internvl",
         "MMMU dev+val; score = validation split; open questions as A=<gt>/B='Other Answers'",
         primary_split="validation", options={"mmmu": True})
for _name in ("MMBench_DEV_EN", "MMBench_DEV_CN", "MMBench_TEST_EN", "MMBench_TEST_CN",
              "MMBench_DEV_EN_V11", "MMBench_DEV_CN_V11", "MMBench_TEST_EN_V11", "MMBench_TEST_CN_V11"):
    _builtin(_name, "mcq", "mcq_circular", "mcq_internvl",
             "MMBench, circular evaluation (test splits have no public answers)")
_builtin("CCBench", "mcq", "mcq_circular", "mcq_internvl", "CCBench, circular evaluation (as MMBench)")
_builtin("MME", "yorn", "mme", "yorn_mme", "MME perception (10 subtasks) + cognition (4), acc + acc+",
         unit="points (0-2800)")
_builtin("POPE", "yorn", "pope", "plain", "POPE adversarial/popular/random; score = overall F1")
_builtin("HallusionBench", "yorn", "hallusion", "yorn_hallusion",
         "HallusionBench; score = mean of aAcc, fAcc, qAcc")
_builtin("MMVet", "judge", "mmvet", "plain", "MM-Vet, GPT-graded 0..1 per question (needs a judge)")
_builtin("MathVista_MINI", "judge", "mathvista", "plain",
         "MathVista testmini, judge extracts the answer then rule check (needs a judge)")


# ======================================================================================
# Prompts
# ======================================================================================

_CN = re.compile("[\u4e00-\u9fff]")
_SHORT = "Answer the question using a single word or phrase."
_MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def build_prompt(spec, row: Mapping, style: str | None = None) -> str:
    """The text prompt for one TSV row (images are passed separately).

    ``spec`` is a :class:`BenchmarkSpec` or a registered name; ``style``
    overrides ``spec.prompt_style``.  Defaults follow VLMEvalKit's InternVL
    wrapper (``vlmeval/vlm/internvl/internvl_chat.py::build_prompt`` and
    ``internvl/utils.py::build_multi_choice_prompt``), which NaViL, from the
    InternVL team, inherits:

    ``mcq_internvl``   ``[hint\\n]question\\nA. ..\\nB. ..\\nAnswer with the option's letter from the
                       given choices directly.`` (Chinese instruction when the text contains CJK;
                       without options: ``\\nAnswer the question directly.``)
    ``mcq_vlmevalkit`` VLMEvalKit's generic ``ImageMCQDataset.build_prompt``: ``Hint: ..\\nQuestion:
                       ..\\nOptions:\\nA. ..\\nPlease select the correct answer from the options above. \\n``
    ``vqa_short``      ``question\\nAnswer the question using a single word or phrase.``
                       (TextVQA, DocVQA, InfoVQA, ChartQA, OCRBench)
    ``plain``          the question only (POPE, MMVet, MathVista)
    ``yorn_mme``       ``question Answer the question using a single word or phrase.``
    ``yorn_hallusion`` ``question Please answer yes or no. Answer the question using a single word
                       or phrase.``
    """
    if isinstance(spec, str):
        spec = get_benchmark(spec)
    style = style or spec.prompt_style
    question = "" if row.get("question") is None else str(row["question"])
    hint = row.get("hint")
    options = row_options(row)
    if style == "mcq_internvl":
        text = question if hint is None else f"{hint}\n{question}"
        for letter, option in options.items():
            text += f"\n{letter}. {option}"
        cn = _CN.search(text) is not None
        if options:
            return text + ("\n请直接回答选项字母。" if cn else f"\n{_MCQ_INSTRUCTION}")
        return text + ("\n请直接回答问题。" if cn else "\nAnswer the question directly.")
    if style == "mcq_vlmevalkit":
        text = "" if hint is None else f"Hint: {hint}\n"
        text += f"Question: {question}\n"
        if options:
            text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in options.items())
            text += "Please select the correct answer from the options above. \n"
        return text
    if style == "vqa_short":
        return f"{question}\n{_SHORT}"
    if style == "plain":
        return question
    if style == "yorn_mme":
        return f"{question} {_SHORT}"
    if style == "yorn_hallusion":
        return f"{question} Please answer yes or no. {_SHORT}"
    raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")


# ======================================================================================
# Scoring
# ======================================================================================


def _lookup(predictions: Mapping, index):
    """Prediction for ``index`` (tries the int and str forms); None/NaN count as missing."""
    value = None
    for key in (index, str(index)):
        if key in predictions:
            value = predictions[key]
            break
    else:
        if isinstance(index, str) and re.fullmatch(r"[+-]?\d+", index) and int(index) in predictions:
            value = predictions[int(index)]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _pct(values) -> float | None:
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else None


def score(name: str, data_tsv_path, predictions: Mapping, *, judge: _judge.Judge | None = None,
          check_images: str = "decode", **options) -> dict:
    """Score ``predictions`` (``{index: text}``) for benchmark ``name`` against its TSV.

    Keyword options (defaults reproduce VLMEvalKit): ``vqa_mode`` ("vlmevalkit" |
    "official" | "textvqa_mmf"), ``anls_mode`` ("vlmevalkit" | "original"),
    ``anls_threshold`` (0.5), ``relaxed_tolerance`` (0.05), ``length_guard`` (True;
    MCQ option-text matching), ``a_quantifier_guard`` (False; VLMEvalKit's
    VERBOSE-only rule), ``circular`` (True for MMBench/CCBench; False
    scores every row independently), ``yorn_extraction`` ("vlmevalkit" |
    "mme_official" | "pope_official"), ``mmvet_shared_counters`` (True).  ``check_images`` is passed to
    :func:`navil.eval.tsv.read_tsv`.  ``judge`` (``judge(prompt) -> str``) is used by
    MMVet / MathVista (without it they are reported as not scored) and, for MCQ
    benchmarks, as VLMEvalKit's optional choice matcher for predictions the rules
    cannot map (default: no judge = VLMEvalKit's ``exact_matching`` policy).
    """
    spec = get_benchmark(name)
    opts = {**dict(spec.options), **options}
    data = read_tsv(data_tsv_path, mcq=(spec.kind == "mcq"), check_images=check_images)
    preds = {r["index"]: _lookup(predictions, r["index"]) for r in data.rows}
    missing = [i for i, p in preds.items() if p is None]
    known = {str(r["index"]) for r in data.rows} | {str(m.index) for m in data.malformed}
    unknown = [k for k in predictions if str(k) not in known]
    result = {
        "benchmark": name, "metric": spec.metric, "unit": spec.unit, "score": None, "status": "ok",
        "n": 0, "n_rows": len(data.rows),
        "n_missing": len(missing), "missing": missing[:_MAX_LISTED],
        "n_malformed": len(data.malformed), "malformed": [m.as_dict() for m in data.malformed[:_MAX_LISTED]],
        "n_unknown_predictions": len(unknown), "categories": {}, "warnings": [],
    }
    if len(missing) > _MAX_LISTED or len(data.malformed) > _MAX_LISTED:
        result["warnings"].append(f"missing/malformed lists truncated to {_MAX_LISTED} entries")
    if spec.kind != "custom" and not data.has_answers:
        result["status"] = "not scored: the TSV has no answer column (e.g. a test split scored by its server)"
        return result
    texts = {i: ("" if p is None else str(p)) for i, p in preds.items()}

    if spec.kind == "custom":
        result.update(spec.scorer(data.rows, preds, spec, **opts))
    elif spec.kind == "vqa":
        result.update(_score_vqa(spec, data.rows, texts, opts))
    elif spec.kind == "mcq":
        result.update(_score_mcq(spec, data.rows, texts, opts, judge))
    elif spec.kind == "yorn":
        result.update(_score_yorn(spec, data.rows, texts, opts, result["warnings"]))
    elif spec.kind == "ocrbench":
        result.update(_score_ocrbench(data.rows, texts))
    elif spec.kind == "judge":
        result.update(_score_judge(spec, data.rows, preds, judge, opts))
    else:
        raise ValueError(f"benchmark {name!r} has unknown kind {spec.kind!r}")
    return result


def _score_vqa(spec, rows, texts, opts) -> dict:
    metric = spec.metric
    values = []
    for row in rows:
        refs = _vqa.parse_answer_list(row["answer"])
        pred = texts[row["index"]]
        if metric == "vqa_score":
            v = _vqa.vqa_score(pred, refs, mode=opts.get("vqa_mode", "vlmevalkit"))
        elif metric == "anls":
            v = _vqa.anls(pred, refs, threshold=opts.get("anls_threshold", 0.5),
                          mode=opts.get("anls_mode", "vlmevalkit"))
        elif metric == "relaxed_accuracy":
            v = _vqa.relaxed_accuracy(pred, refs, opts.get("relaxed_tolerance", 0.05))
        elif metric == "exact_match":
            v = _vqa.exact_match(pred, refs)
        else:
            raise ValueError(f"unknown VQA metric {metric!r}")
        values.append(v)
    out = {"score": _pct(values), "n": len(values), "splits": {}}
    for field_name, target in (("split", "splits"), ("category", "categories")):
        names = sorted({r.get(field_name) for r in rows if r.get(field_name) is not None}, key=str)
        bucket = {}
        for nm in names:
            bucket[nm] = _pct(v for v, r in zip(values, rows) if r.get(field_name) == nm)
        out[target] = bucket
    return out


def _score_mcq(spec, rows, texts, opts, judge=None) -> dict:
    length_guard = opts.get("length_guard", True)
    a_guard = opts.get("a_quantifier_guard", False)
    circular = opts.get("circular", spec.metric == "mcq_circular")
    picks, gts, choice_sets = {}, {}, {}
    for row in rows:
        choices, gt = row_options(row), row["answer"]
        if opts.get("mmmu"):
            choices, gt = _mcq.mmmu_preprocess(choices, gt)
        text = texts[row["index"]]
        # Circular pre-fetch (prefetch_answer) does not strip; the vanilla path does.
        if not circular:
            text = text.strip()
        picks[row["index"]] = _mcq.can_infer(text, choices, length_guard=length_guard,
                                             a_quantifier_guard=a_guard)
        gts[row["index"]], choice_sets[row["index"]] = gt, choices
    judged = 0
    if judge is not None:
        # Groups already lost on a rule-matched rotation need no judge call (as eval_circular_group).
        lost = {_mcq.circular_group_index(i) for i, p in picks.items() if p and p != gts[i]} if circular else set()
        for row in rows:
            i = row["index"]
            if picks[i] or (circular and _mcq.circular_group_index(i) in lost) or not texts[i].strip():
                continue
            picks[i] = _judge.mcq_judge_extract(judge, row.get("question") or "", choice_sets[i], texts[i].strip())
            judged += 1
    records, row_hits = [], []
    for row in rows:
        i = row["index"]
        picked = picks[i] or "Z"
        hit = picked == gts[i]
        row_hits.append((i, hit))
        records.append({"index": i, "hit": hit, "extracted": picked, "split": row.get("split"),
                        "category": row.get("category"), "l2-category": row.get("l2-category")})
    extra = {"n_judged": judged} if judge is not None else {}
    if circular:
        non_int = [i for i, _ in row_hits if not isinstance(i, int)]
        if non_int:
            raise ValueError(f"circular evaluation needs integer indices, got e.g. {non_int[0]!r}")
        groups = _mcq.circular_hits(row_hits)
        mains = [r for r in records if r["index"] in groups]
        extra["vanilla_main_accuracy"] = _pct(r["hit"] for r in mains)
        extra["n_rotations"] = len(records)
        records = [{**r, "hit": groups[r["index"]]} for r in mains]
    report = _mcq.accuracy_report(records)
    primary = spec.primary_split
    if primary is not None and primary in report["splits"]:
        subset = [r for r in records if r.get("split") == primary]
        sub_report = _mcq.accuracy_report(subset)
        headline, cats, l2 = sub_report["overall"], sub_report["categories"], sub_report["l2_categories"]
        n = len(subset)
        extra["primary_split"] = primary
    else:
        headline, cats, l2, n = report["overall"], report["categories"], report["l2_categories"], len(records)
    return {"score": headline, "n": n, "overall_all_splits": report["overall"], "splits": report["splits"],
            "categories": cats, "l2_categories": l2, **extra}


def _score_yorn(spec, rows, texts, opts, warnings) -> dict:
    how = opts.get("yorn_extraction", "vlmevalkit")
    extract = {"vlmevalkit": _yorn.yorn_extraction, "mme_official": _yorn.mme_official_extraction,
               "pope_official": _yorn.pope_official_extraction}[how]
    bad = sorted({str(r["answer"]) for r in rows} - {"Yes", "No"})
    if bad:
        warnings.append(f"ground truths other than 'Yes'/'No' never match (exact comparison): {bad[:5]}")
    recs = []
    for row in rows:
        extracted = extract(texts[row["index"]])
        recs.append({**row, "extracted": extracted, "correct": str(row["answer"]) == extracted})
    unknown = sum(1 for r in recs if r["extracted"] == "Unknown")
    common = {"n": len(recs), "n_unknown": unknown}
    if spec.metric == "mme":
        for r in recs:
            r["image"] = r.get("image_path") or str(r.get("image_ref", r["index"]))
        rating = _yorn.mme_rating(recs)
        if rating["missing_subtasks"]:
            warnings.append(f"MME subtasks absent (count 0): {rating['missing_subtasks']}")
        return {**common, "score": rating["total"], "perception": rating["perception"],
                "cognition": rating["cognition"], "subtasks": rating["subtasks"],
                "categories": {k: v["score"] for k, v in rating["subtasks"].items()}}
    if spec.metric == "pope":
        rating = _yorn.pope_rating(recs)
        return {**common, "score": rating["overall"]["f1"], "overall": rating["overall"],
                "categories": {k: v["f1"] for k, v in rating["categories"].items()},
                "category_details": rating["categories"],
                "f1_mean_over_categories": rating["f1_mean_over_categories"]}
    if spec.metric == "hallusion":
        rating = _yorn.hallusion_rating(recs)
        o = rating["overall"]
        return {**common, "score": o["mean"], "aAcc": o["aAcc"], "fAcc": o["fAcc"], "qAcc": o["qAcc"],
                "categories": rating["categories"], "l2_categories": rating["l2_categories"]}
    # default_rating: plain accuracy with category / l2-category breakdowns
    report = _mcq.accuracy_report([{**r, "hit": r["correct"]} for r in recs])
    return {**common, "score": report["overall"], "categories": report["categories"],
            "l2_categories": report["l2_categories"]}


def _score_ocrbench(rows, texts) -> dict:
    recs = []
    for r in rows:
        refs = _vqa.parse_answer_list(r["answer"])
        recs.append({"category": r.get("category"),
                     "correct": _ocr.ocrbench_hit(texts[r["index"]], refs, r.get("category"))})
    rating = _ocr.ocrbench_rating(recs)
    n = len(recs)
    return {"score": rating["final_score"] / n * 1000.0 if n else None, "n": n,
            "final_score": rating["final_score"], "final_score_norm": rating["final_score_norm"],
            "categories": rating["categories"], "category_totals": rating["category_totals"],
            "groups": rating["groups"]}


def _score_judge(spec, rows, preds, judge, opts) -> dict:
    if judge is None:
        return {"score": None, "status": _judge.NOT_SCORED, "n": len(rows)}
    if spec.metric == "mmvet":
        recs = []
        for row in rows:
            pred = preds[row["index"]]
            grade = 0.0 if pred is None else _judge.mmvet_judge(judge, row.get("question", ""), row["answer"],
                                                                 str(pred))[0]
            recs.append({"category": row.get("category", ""), "grade": grade})
        rating = _judge.mmvet_rating(recs, shared_counters=opts.get("mmvet_shared_counters", True))
        return {"score": rating["overall"], "n": len(recs), "categories": rating["capabilities"],
                "combinations": rating["combinations"], "grades": {r["index"]: g["grade"]
                                                                    for r, g in zip(rows, recs)}}
    if spec.metric == "mathvista":
        recs = []
        for row in rows:
            pred = preds[row["index"]]
            if pred is None:
                recs.append({"row": row, "extracted": "", "log": "missing prediction"})
                continue
            extracted, log = _judge.mathvista_judge(judge, row, str(pred))
            recs.append({"row": row, "extracted": extracted, "log": log})
        rating = _judge.mathvista_rating(recs)
        return {"score": rating["overall"], "n": len(recs), "categories": rating["tasks"],
                "skills": rating["skills"], "prefetch_rate": rating["prefetch_rate"]}
    raise ValueError(f"unknown judge metric {spec.metric!r}")


# ======================================================================================
# NaViL average
# ======================================================================================


def navil_average(results: Mapping, *, skip_none: bool = False) -> float:
    """NaViL-style average over benchmarks: MME / 28, OCRBench / 10, the rest as is.

    ``results`` maps benchmark names to headline scores (or to :func:`score`
    result dicts, whose ``score`` is used).  MME (0..2800) and OCRBench
    (0..1000) are thereby brought to a 0..100 scale.  A ``None`` score raises
    unless ``skip_none=True`` (then that benchmark is left out of the mean).
    """
    values = []
    for name, value in results.items():
        if isinstance(value, Mapping):
            value = value.get("score")
        if value is None:
            if skip_none:
                continue
            raise ValueError(f"no score for {name!r}; pass skip_none=True to leave it out")
        metric = BENCHMARKS[name].metric if name in BENCHMARKS else None
        if metric == "mme" or name == "MME":
            value = value / 28.0
        elif metric == "ocrbench" or name == "OCRBench":
            value = value / 10.0
        values.append(float(value))
    if not values:
        raise ValueError("no scores to average")
    return sum(values) / len(values)
