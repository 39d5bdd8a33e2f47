"""Benchmark metrics matching VLMEvalKit's scoring (quirks included).

Sub-modules: :mod:`.vqa` (VQA accuracy, ANLS, relaxed accuracy), :mod:`.mcq`
(option extraction, circular evaluation, accuracy reports), :mod:`.yorn`
(yes/no extraction, MME, POPE, HallusionBench), :mod:`.ocrbench` and
:mod:`.judge` (MMVet / MathVista with a user-supplied judge callable).
See ``docs/eval.md`` for where VLMEvalKit departs from each benchmark's own
definition and which option restores the original.
"""
from .judge import (
    NOT_SCORED,
    Judge,
    build_mathvista_prompt,
    build_mcq_match_prompt,
    build_mmvet_prompt,
    mathvista_judge,
    mathvista_post_check,
    mathvista_rating,
    mcq_judge_extract,
    mmvet_judge,
    mmvet_rating,
)
from .mcq import (
    accuracy_report,
    can_infer,
    can_infer_option,
    can_infer_text,
    circular_group_index,
    circular_hits,
    extract_characters_regex,
    extract_choice,
    mcq_hit,
    mmmu_preprocess,
)
from .ocrbench import OCRBENCH_CATEGORIES, ocrbench_hit, ocrbench_rating
from .vqa import (
    anls,
    exact_match,
    levenshtein,
    normalize_vqa_answer,
    normalized_levenshtein,
    parse_answer_list,
    process_digit_article,
    process_punctuation,
    relaxed_accuracy,
    relaxed_correctness,
    vqa_score,
)
from .yorn import (
    MME_COGNITION,
    MME_PERCEPTION,
    hallusion_rating,
    mme_official_extraction,
    mme_rating,
    pope_official_extraction,
    pope_rating,
    yorn_extraction,
)

__all__ = [
    "MME_COGNITION",
    "MME_PERCEPTION",
    "NOT_SCORED",
    "OCRBENCH_CATEGORIES",
    "Judge",
    "accuracy_report",
    "anls",
    "build_mathvista_prompt",
    "build_mcq_match_prompt",
    "build_mmvet_prompt",
    "can_infer",
    "can_infer_option",
    "can_infer_text",
    "circular_group_index",
    "circular_hits",
    "exact_match",
    "extract_characters_regex",
    "extract_choice",
    "hallusion_rating",
    "levenshtein",
    "mathvista_judge",
    "mathvista_post_check",
    "mathvista_rating",
    "mcq_hit",
    "mcq_judge_extract",
    "mme_official_extraction",
    "mme_rating",
    "mmmu_preprocess",
    "mmvet_judge",
    "mmvet_rating",
    "normalize_vqa_answer",
    "normalized_levenshtein",
    "ocrbench_hit",
    "ocrbench_rating",
    "parse_answer_list",
    "pope_official_extraction",
    "pope_rating",
    "process_digit_article",
    "process_punctuation",
    "relaxed_accuracy",
    "relaxed_correctness",
    "vqa_score",
    "yorn_extraction",
]
