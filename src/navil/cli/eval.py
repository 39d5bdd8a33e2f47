"""`navil eval`: run a checkpoint on a VLMEvalKit benchmark TSV and score it, or score saved predictions.

navil eval --model DIR --benchmark MMStar --data MMStar.tsv [--limit 100] [--out DIR]
navil eval --model DIR --benchmark path/to/MMStar.tsv          # benchmark guessed from the file name
navil eval --model DIR --benchmark NaViL_Synthetic             # built-in synthetic test split
navil eval --benchmark MMStar --data MMStar.tsv --predictions preds.jsonl   # scoring only (prints JSON)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from navil.eval.synthetic_bench import DEFAULT_N, DEFAULT_SEED

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a VLMEvalKit-format benchmark (or score saved predictions)",
        description="Generate answers for a benchmark TSV (VLMEvalKit format), cache them in "
        "OUT/predictions.jsonl "
        "(an interrupted run resumes), score them as VLMEvalKit does and write OUT/summary.json + "
        "OUT/summary.md. With --predictions and no --model: only score and print the summary JSON.",
    )
    p.add_argument("--model", help="checkpoint folder (official NaViL or navil-trained)")
    p.add_argument(
        "--benchmark",
        required=True,
        help="registered benchmark name (e.g. MMStar, NaViL_Synthetic) or a .tsv file",
    )
    p.add_argument(
        "--benchmark-name", help="benchmark of a .tsv given as --benchmark (default: from its file name)"
    )
    p.add_argument(
        "--data",
        help="the benchmark TSV (default: $NAVIL_DATA/NAME.tsv, $LMUData/NAME.tsv, "
        "~/LMUData/NAME.tsv; NaViL_Synthetic is generated if absent)",
    )
    p.add_argument(
        "--predictions", help="score this JSONL ({'index', 'prediction'} per line) instead of running a model"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N valid rows")
    p.add_argument("--out", help="output folder (default: navil_eval/<model folder name>/<benchmark>)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per packed generate call")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation cap (default: 64 for short-answer benchmarks, 512 for judge benchmarks)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--no-multi-scale", action="store_true", help="encode each image at full resolution only")
    p.add_argument(
        "--judge-url",
        help="OpenAI-compatible endpoint for judge benchmarks (MMVet, MathVista) and "
        "the MCQ choice-matching fallback; key from $NAVIL_JUDGE_API_KEY or "
        "$OPENAI_API_KEY",
    )
    p.add_argument("--judge-model", help="model name sent to the judge endpoint")
    p.add_argument("--overwrite", action="store_true", help="discard cached predictions in the output folder")
    p.add_argument("--retry-errors", action="store_true", help="regenerate samples cached with an error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--synthetic-n",
        type=int,
        default=DEFAULT_N,
        help=f"rows of the generated NaViL_Synthetic split (default {DEFAULT_N})",
    )
    p.add_argument("--synthetic-seed", type=int, default=DEFAULT_SEED, help="seed of the generated split")
    p.set_defaults(run=run)


def _judge(args):
    from navil.errors import NavilError
    from navil.eval.runner import openai_judge

    if not args.judge_url and not args.judge_model:
        return None
    if not (args.judge_url and args.judge_model):
        raise NavilError("--judge-url and --judge-model go together")
    return openai_judge(args.judge_url, args.judge_model)


def run(args: argparse.Namespace) -> int:
    from navil.errors import NavilError
    from navil.eval import runner

    judge = _judge(args)
    if args.batch_size < 1:
        raise NavilError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 0:
        raise NavilError(f"--limit must be >= 0, got {args.limit}")

    if args.predictions is not None:
        if args.model is not None:
            raise NavilError("--predictions scores saved predictions; do not pass --model with it")
        if args.limit is not None:
            raise NavilError("--limit applies to model runs; --predictions scores every row of the TSV")
        name, data = runner.resolve_benchmark(
            args.benchmark,
            args.data,
            benchmark_name=args.benchmark_name,
            out_dir=args.out,
            synthetic_n=args.synthetic_n,
            synthetic_seed=args.synthetic_seed,
        )
        summary = runner.score_predictions(name, data, args.predictions, judge=judge, out_dir=args.out)
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0

    if args.model is None:
        raise NavilError(
            "pass --model DIR to run a checkpoint, or --predictions FILE to score saved predictions"
        )
    model_dir = Path(args.model)
    bench_label = Path(args.benchmark).stem if args.benchmark.lower().endswith(".tsv") else args.benchmark
    out = (
        Path(args.out)
        if args.out
        else Path("navil_eval") / (model_dir.resolve().name or "model") / bench_label
    )
    name, data = runner.resolve_benchmark(
        args.benchmark,
        args.data,
        benchmark_name=args.benchmark_name,
        out_dir=out,
        synthetic_n=args.synthetic_n,
        synthetic_seed=args.synthetic_seed,
    )

    import torch

    import navil

    model = navil.load_model(model_dir, dtype=getattr(torch, DTYPES[args.dtype]), device=args.device)
    tokenizer = navil.load_tokenizer(model_dir)
    runner.evaluate(
        model,
        tokenizer,
        name,
        data,
        out,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        judge=judge,
        multi_scale=not args.no_multi_scale,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        retry_errors=args.retry_errors,
        model_path=str(model_dir),
        config={"device": args.device, "dtype": DTYPES[args.dtype]},
    )
    print(f"wrote {out / 'predictions.jsonl'}, {out / 'summary.json'}, {out / 'summary.md'}")
    return 0
