"""Run a NaViL model over a VLMEvalKit benchmark TSV, cache its predictions, score them, write a report.

``evaluate(model, tokenizer, benchmark, data_tsv, out_dir, limit=None, batch_size=8, max_new_tokens=None)``:

1. reads the TSV (:func:`navil.eval.tsv.read_tsv`); malformed rows are reported with index and reason and
   skipped;
2. builds each row's prompt with the benchmark's prompt builder (:func:`navil.eval.scoring.build_prompt`),
   wraps it in the checkpoint's chat template with its images (:func:`navil.inference.processor_for`,
   :func:`navil.processing.chat.build_chat_prompt`) -- exactly what ``model.chat`` does;
3. generates greedily, ``batch_size`` prompts at a time packed into one sequence (``cu_seqlens``); every
   prompt is decoded as if alone, so batched and one-by-one predictions are identical. A prompt that does
   not fit the model's context (or whose image cannot be read) is recorded as an error for that sample
   (it then counts as a missing, i.e. wrong, prediction);
4. appends each batch's predictions to ``out_dir/predictions.jsonl`` (flushed); a restarted run reads the
   finished indices back and skips them. ``out_dir/run_config.json`` records what the cache depends on
   (benchmark, data file, generation settings, model fingerprint); a mismatch is an error unless
   ``overwrite=True``;
5. scores with :func:`navil.eval.scoring.score` and writes ``predictions.jsonl`` again (TSV order, with
   answer, category and a per-sample ``hit`` where the metric has one), ``summary.json`` and
   ``summary.md``.

Importing this module registers the ``NaViL_Synthetic`` benchmark (:mod:`navil.eval.synthetic_bench`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from navil.errors import NavilError

from . import synthetic_bench
from .metrics import mcq as _mcq
from .metrics import ocrbench as _ocr
from .metrics import vqa as _vqa
from .metrics import yorn as _yorn
from .report import summary_markdown
from .scoring import BENCHMARKS, BenchmarkSpec, build_prompt, score
from .tsv import PANDAS_NA_VALUES, _parse_index, read_tsv, row_images, row_options

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "PREDICTIONS_FILE",
    "evaluate",
    "find_data",
    "guess_benchmark",
    "load_predictions",
    "openai_judge",
    "resolve_benchmark",
    "sample_hits",
    "score_predictions",
]

PREDICTIONS_FILE = "predictions.jsonl"
RUN_CONFIG_FILE = "run_config.json"
SUMMARY_FILE = "summary.json"
SUMMARY_MD_FILE = "summary.md"
_MAX_LISTED = 50

# Short-answer benchmarks stop at <|im_end|> after a few tokens; the cap only bounds runaway outputs.
# Free-form (judge-graded) answers get more room.  VLMEvalKit's InternVL wrapper uses a larger cap.
DEFAULT_MAX_NEW_TOKENS = {"mcq": 64, "yorn": 64, "vqa": 64, "ocrbench": 64, "custom": 64, "judge": 512}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ======================================================================================
# Benchmark / data resolution
# ======================================================================================


def _spec(benchmark) -> BenchmarkSpec:
    if isinstance(benchmark, BenchmarkSpec):
        return benchmark
    name = str(benchmark)
    if name in BENCHMARKS:
        return BENCHMARKS[name]
    folded = {k.lower(): k for k in BENCHMARKS}
    if name.lower() in folded:
        return BENCHMARKS[folded[name.lower()]]
    raise NavilError(
        f"unknown benchmark {name!r}; registered: {', '.join(sorted(BENCHMARKS))} (or pass a .tsv file)"
    )


def guess_benchmark(path) -> str:
    """The registered benchmark a TSV file name refers to: exact stem, else the longest registered name
    the stem starts with (case-insensitive), e.g. ``MMBench_DEV_EN_small.tsv`` -> ``MMBench_DEV_EN``."""
    stem = Path(path).name
    if stem.lower().endswith(".tsv"):
        stem = stem[:-4]
    if stem in BENCHMARKS:
        return stem
    low = stem.lower()
    hits = [k for k in BENCHMARKS if low == k.lower() or low.startswith(k.lower())]
    if not hits:
        raise NavilError(
            f"cannot tell the benchmark from the file name {Path(path).name!r}; pass "
            f"--benchmark-name (registered: {', '.join(sorted(BENCHMARKS))})"
        )
    return max(hits, key=len)


def data_search_paths(name: str) -> list[Path]:
    """Where a benchmark's TSV is looked for, in order: ``$NAVIL_DATA``, ``$LMUData``, ``~/LMUData``."""
    roots = [os.environ.get("NAVIL_DATA"), os.environ.get("LMUData"), str(Path.home() / "LMUData")]
    out = []
    for root in roots:
        if root:
            p = Path(root).expanduser() / f"{name}.tsv"
            if p not in out:
                out.append(p)
    return out


def find_data(name: str) -> Path | None:
    """The first existing ``NAME.tsv`` in :func:`data_search_paths` (None if there is none)."""
    return next((p for p in data_search_paths(name) if p.is_file()), None)


def resolve_benchmark(
    benchmark: str,
    data=None,
    *,
    benchmark_name: str | None = None,
    out_dir=None,
    synthetic_n: int = synthetic_bench.DEFAULT_N,
    synthetic_seed: int = synthetic_bench.DEFAULT_SEED,
) -> tuple[str, Path]:
    """``(registered name, TSV path)`` for a benchmark name or a ``.tsv`` path.

    A name without ``data`` is looked up in :func:`data_search_paths`; for ``NaViL_Synthetic`` the
    default seeded test split is generated into ``out_dir`` when no file is found.
    """
    bench = str(benchmark)
    if bench.lower().endswith(".tsv") or (Path(bench).is_file() and bench not in BENCHMARKS):
        path = Path(bench)
        if data is not None and Path(data) != path:
            raise NavilError("give the TSV either as --benchmark or as --data, not both")
        if not path.is_file():
            raise NavilError(f"benchmark file {path} does not exist")
        name = _spec(benchmark_name).name if benchmark_name else guess_benchmark(path)
        return name, path
    name = _spec(bench).name
    if benchmark_name and _spec(benchmark_name).name != name:
        raise NavilError(f"--benchmark {name} and --benchmark-name {benchmark_name} disagree")
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise NavilError(f"data file {path} does not exist")
        return name, path
    found = find_data(name)
    if found is not None:
        return name, found
    if name == synthetic_bench.NAME:
        if out_dir is None:
            raise NavilError(f"{name}: no TSV found and no output folder to generate it into")
        return name, synthetic_bench.default_tsv(out_dir, n=synthetic_n, seed=synthetic_seed)
    searched = ", ".join(str(p) for p in data_search_paths(name))
    raise NavilError(f"no data for {name}: pass --data FILE.tsv or put {name}.tsv in one of: {searched}")


# ======================================================================================
# Predictions cache
# ======================================================================================


def _key(index) -> str:
    return str(index)


def load_predictions(path, *, strict: bool = True) -> dict:
    """``{index: record}`` from a JSONL file of ``{"index": ..., "prediction": ...}`` lines (last one wins).

    ``strict=False`` (the resume cache) skips unreadable lines -- e.g. a line cut short by a crash.
    """
    out: dict = {}
    path = Path(path)
    if not path.is_file():
        if strict:
            raise NavilError(f"predictions file {path} does not exist")
        return out
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "index" not in rec:
                    raise ValueError("not an object with an 'index'")
            except ValueError as e:
                if strict:
                    raise NavilError(f"{path}:{n}: bad prediction line ({e})") from None
                continue
            out[_key(rec["index"])] = rec
    return out


def _model_fingerprint(model) -> dict:
    import torch

    params = list(model.parameters())
    with torch.no_grad():
        checksum = sum(float(p.detach().reshape(-1)[:4096].double().sum()) for p in params)
    return {
        "dtype": str(params[0].dtype) if params else None,
        "num_parameters": sum(p.numel() for p in params),
        "checksum": f"{checksum:.9g}",
    }


def _check_run_config(out: Path, fingerprint: dict, overwrite: bool) -> None:
    cfg_path, pred_path = out / RUN_CONFIG_FILE, out / PREDICTIONS_FILE
    if overwrite:
        for p in (pred_path, out / SUMMARY_FILE, out / SUMMARY_MD_FILE):
            p.unlink(missing_ok=True)
    elif pred_path.exists() and cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        diff = [k for k in fingerprint if k in old and old[k] != fingerprint[k]]
        if diff:
            details = "; ".join(f"{k}: cached {old[k]!r} != now {fingerprint[k]!r}" for k in diff)
            raise NavilError(
                f"{pred_path} holds predictions of a different run ({details}); use another "
                "output folder or pass --overwrite to discard them"
            )
    cfg_path.write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")


# ======================================================================================
# Generation
# ======================================================================================


@dataclass
class _Prepared:
    index: object
    ids: list
    pixel_values: object = None
    grid: object = None


class _BatchGenerator:
    """Prompt building (images + chat template) and packed greedy generation for one model."""

    def __init__(
        self,
        model,
        tokenizer,
        spec: BenchmarkSpec,
        tsv_dir: Path,
        max_new_tokens: int,
        multi_scale: bool = True,
    ):
        from navil.inference import processor_for, template_name

        self.model, self.tokenizer, self.spec, self.tsv_dir = model, tokenizer, spec, tsv_dir
        self.cfg = model.config
        self.template = template_name(self.cfg)
        self.processor = processor_for(self.cfg)
        self.max_new_tokens = int(max_new_tokens)
        self.multi_scale = multi_scale
        self.context = int(self.cfg.llm.max_position_embeddings)
        self.eos = tokenizer.special_token_ids.im_end
        self.device = next(model.parameters()).device

    def _images(self, row) -> list:
        from PIL import Image

        images = [Image.open(io.BytesIO(b)) for b in row_images(row)]
        if not images and row.get("image_path"):
            p = Path(str(row["image_path"]))
            p = p if p.is_absolute() else self.tsv_dir / p
            if not p.is_file():
                raise NavilError(f"row has no base64 image and its image_path {p} does not exist")
            images = [str(p)]
        return images

    def prepare(self, row) -> _Prepared:
        from navil.processing.chat import build_chat_prompt

        question = build_prompt(self.spec, row)
        images = self._images(row)
        pv = grid = scales = None
        if images:
            processed = self.processor(images, multi_scale=self.multi_scale)
            pv, grid, scales = processed.pixel_values, processed.image_grid_thw, processed.num_scales
        prompt = build_chat_prompt(
            self.template,
            question,
            grid,
            scales,
            system_message=self.cfg.system_message,
            merge_size=self.cfg.merge_size,
        )
        ids = self.tokenizer.encode(prompt)
        if len(ids) >= self.context:
            raise NavilError(
                f"the prompt has {len(ids)} tokens but the model's context is {self.context} tokens"
            )
        return _Prepared(row["index"], ids, pv, grid)

    def fits_batch(self, item: _Prepared) -> bool:
        # generate() caps new tokens at context - longest prompt; a prompt that hits that cap runs alone so
        # its neighbours' outputs do not depend on it.
        return len(item.ids) + self.max_new_tokens <= self.context

    def generate(self, items: list[_Prepared]) -> list[str]:
        import torch

        from navil.processing.chat import postprocess_answer

        ids = torch.tensor([t for it in items for t in it.ids], dtype=torch.long, device=self.device)[None]
        lens = torch.tensor([len(it.ids) for it in items])
        cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(self.device)
        with_img = [it for it in items if it.pixel_values is not None]
        pv = torch.cat([it.pixel_values for it in with_img]).to(self.device) if with_img else None
        grid = torch.cat([it.grid for it in with_img]) if with_img else None
        kwargs = {} if self.eos is None else {"eos_token_id": self.eos}
        out = self.model.generate(
            input_ids=ids,
            cu_seqlens=cu,
            pixel_values=pv,
            image_grid_thw=grid,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            **kwargs,
        )
        texts = []
        for row in out.tolist():
            if self.eos is not None and self.eos in row:
                row = row[: row.index(self.eos)]
            texts.append(postprocess_answer(self.tokenizer.decode(row, skip_special_tokens=True)))
        return texts


_SAMPLE_ERRORS = (NavilError, OSError, ValueError, SyntaxError)


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _run_batch(gen: _BatchGenerator, rows: list) -> list[dict]:
    """Records ``{"index", "prediction"[, "error"]}`` for ``rows`` (errors are per sample, never raised)."""
    records: dict = {}
    ready: list[_Prepared] = []
    for row in rows:
        try:
            ready.append(gen.prepare(row))
        except _SAMPLE_ERRORS as e:
            records[_key(row["index"])] = {"index": row["index"], "prediction": None, "error": _error_text(e)}
    groups = [[it for it in ready if gen.fits_batch(it)]] + [[it] for it in ready if not gen.fits_batch(it)]
    for group in groups:
        if not group:
            continue
        try:
            texts = gen.generate(group)
        except (NavilError, RuntimeError) as e:
            if len(group) == 1:
                records[_key(group[0].index)] = {
                    "index": group[0].index,
                    "prediction": None,
                    "error": _error_text(e),
                }
            else:  # isolate the failing sample
                for it in group:
                    records.update({_key(r["index"]): r for r in _generate_alone(gen, it)})
            continue
        for it, text in zip(group, texts, strict=True):
            records[_key(it.index)] = {"index": it.index, "prediction": text}
    return [records[_key(r["index"])] for r in rows]


def _generate_alone(gen: _BatchGenerator, item: _Prepared) -> list[dict]:
    try:
        return [{"index": item.index, "prediction": gen.generate([item])[0]}]
    except (NavilError, RuntimeError) as e:
        return [{"index": item.index, "prediction": None, "error": _error_text(e)}]


# ======================================================================================
# Scoring helpers
# ======================================================================================


def _write_subset_tsv(src: Path, dst: Path, keep: Iterable) -> Path:
    """Copy the rows of ``src`` whose index is in ``keep`` to ``dst`` (raw cells, original order).

    An image cell referring to a row that is not kept gets that row's image; further rows referring to
    the same image then refer to the first such row, so shared-image groups (MME pairs) stay grouped.
    """
    keep_set = {_key(k) for k in keep}
    csv.field_size_limit(2**31 - 1)
    with src.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quotechar='"')
        header = next(reader)
        cols = [h if len(h) == 1 and h.isupper() else h.strip().lower() for h in header]
        ic = cols.index("index")
        mc = cols.index("image") if "image" in cols else None
        raw: dict[str, list[str]] = {}
        order: list[str] = []
        for fields in reader:
            if len(fields) != len(cols) or fields[ic].strip() in PANDAS_NA_VALUES:
                continue
            k = _key(_parse_index(fields[ic]))
            if k not in raw:
                raw[k] = fields
                if k in keep_set:
                    order.append(k)
    holders: dict[str, str] = {}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        for k in order:
            fields = list(raw[k])
            if mc is not None:
                cell = fields[mc]
                if cell not in PANDAS_NA_VALUES and len(cell) <= 64:
                    target = _key(_parse_index(cell))
                    if target not in keep_set and target in raw:
                        if target in holders:
                            fields[mc] = holders[target]
                        else:
                            holders[target] = k
                            fields[mc] = raw[target][mc]
            w.writerow(fields)
    return dst


def _vqa_hit(metric: str, text: str, refs: list, opts: Mapping) -> float:
    if metric == "vqa_score":
        return _vqa.vqa_score(text, refs, mode=opts.get("vqa_mode", "vlmevalkit"))
    if metric == "anls":
        return _vqa.anls(
            text, refs, threshold=opts.get("anls_threshold", 0.5), mode=opts.get("anls_mode", "vlmevalkit")
        )
    if metric == "relaxed_accuracy":
        return _vqa.relaxed_accuracy(text, refs, opts.get("relaxed_tolerance", 0.05))
    if metric == "exact_match":
        return _vqa.exact_match(text, refs)
    raise ValueError(f"unknown VQA metric {metric!r}")


def sample_hits(spec: BenchmarkSpec, rows: Iterable[Mapping], predictions: Mapping, **options) -> dict:
    """Per-row ``{str(index): hit}`` where the benchmark's metric is per question (bool, or a 0..1 score
    for VQA metrics). Rule-based: a judge is not consulted; for circular MCQ it is the row's own hit."""
    opts = {**dict(spec.options), **options}
    out: dict = {}
    row_hit = getattr(spec.scorer, "row_hit", None) if spec.kind == "custom" else None
    for row in rows:
        pred = predictions.get(_key(row["index"]))
        text = "" if pred is None else str(pred)
        try:
            if row_hit is not None:
                hit = bool(row_hit(row, pred))
            elif row.get("answer") is None or spec.kind not in ("vqa", "mcq", "yorn", "ocrbench"):
                continue
            elif spec.kind == "vqa":
                hit = _vqa_hit(spec.metric, text, _vqa.parse_answer_list(row["answer"]), opts)
            elif spec.kind == "mcq":
                choices, gt = row_options(row), row["answer"]
                if opts.get("mmmu"):
                    choices, gt = _mcq.mmmu_preprocess(choices, gt)
                circular = opts.get("circular", spec.metric == "mcq_circular")
                picked = _mcq.can_infer(
                    text if circular else text.strip(),
                    choices,
                    length_guard=opts.get("length_guard", True),
                    a_quantifier_guard=opts.get("a_quantifier_guard", False),
                )
                hit = (picked or "Z") == gt
            elif spec.kind == "yorn":
                extract = {
                    "vlmevalkit": _yorn.yorn_extraction,
                    "mme_official": _yorn.mme_official_extraction,
                    "pope_official": _yorn.pope_official_extraction,
                }[opts.get("yorn_extraction", "vlmevalkit")]
                hit = str(row["answer"]) == extract(text)
            else:
                hit = bool(
                    _ocr.ocrbench_hit(text, _vqa.parse_answer_list(row["answer"]), row.get("category"))
                )
        except Exception:  # noqa: BLE001, S112 -- a per-sample hit is informational only
            continue
        out[_key(row["index"])] = hit
    return out


def _versions() -> dict:
    import navil

    out = {"navil": navil.__version__, "python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "numpy", "PIL", "tokenizers"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _dump_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def _jsonable(obj):
    return json.loads(json.dumps(obj, ensure_ascii=False, default=_json_default))


def _write_report(out: Path, summary: dict, echo: bool) -> None:
    _dump_json(out / SUMMARY_FILE, summary)
    md = summary_markdown(summary)
    (out / SUMMARY_MD_FILE).write_text(md, encoding="utf-8")
    if echo:
        print(md, end="", flush=True)


# ======================================================================================
# Public entry points
# ======================================================================================


def evaluate(
    model,
    tokenizer,
    benchmark,
    data_tsv,
    out_dir,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    *,
    judge: Callable[[str], str] | None = None,
    multi_scale: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    retry_errors: bool = False,
    model_path=None,
    echo: bool = True,
    config: Mapping | None = None,
    score_options: Mapping | None = None,
) -> dict:
    """Generate (or reuse cached) predictions for ``benchmark`` and score them; returns the summary dict.

    Args:
        model, tokenizer: a loaded NaViL model (``navil.load_model``) and its tokenizer.
        benchmark: registered name (``BENCHMARKS``, e.g. ``"MMStar"``, ``"NaViL_Synthetic"``) or
            :class:`BenchmarkSpec`.
        data_tsv: the VLMEvalKit TSV; ``None`` looks in ``$NAVIL_DATA`` / ``$LMUData`` / ``~/LMUData``
            (and generates the default split for ``NaViL_Synthetic``).
        out_dir: output folder (``predictions.jsonl``, ``run_config.json``, ``summary.json``, ``summary.md``).
        limit: evaluate only the first ``limit`` valid rows (scored against a subset TSV written to
            ``out_dir``).
        batch_size: prompts per packed ``generate`` call (predictions do not depend on it).
        max_new_tokens: generation cap; default :data:`DEFAULT_MAX_NEW_TOKENS` by benchmark kind.
        judge: ``judge(prompt) -> str`` for judge benchmarks / the MCQ fallback (see :func:`openai_judge`).
        overwrite: discard cached predictions; otherwise a cache from a different run configuration is an
            error. retry_errors: regenerate samples cached with an error.
        model_path, config: recorded in the summary. echo: print the markdown table.

    Summary keys: ``benchmark``, ``score``, ``unit``, ``status``, ``result`` (the :func:`score` dict),
    ``model``, ``data``, ``scored_tsv``, ``limit``, ``n_selected``, ``n_malformed``, ``malformed``,
    ``n_errors``, ``errors``, ``config``, ``versions``, ``timing``.
    """
    if batch_size < 1:
        raise NavilError(f"batch size must be >= 1, got {batch_size}")
    if limit is not None and limit < 0:
        raise NavilError(f"limit must be >= 0, got {limit}")
    spec = _spec(benchmark)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data_tsv is None:
        _, data_tsv = resolve_benchmark(spec.name, None, out_dir=out)
    data_path = Path(data_tsv)
    if not data_path.is_file():
        raise NavilError(f"data file {data_path} does not exist")
    if max_new_tokens is None:
        max_new_tokens = DEFAULT_MAX_NEW_TOKENS.get(spec.kind, 64)
    if max_new_tokens < 1:
        raise NavilError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    try:
        data = read_tsv(data_path, mcq=(spec.kind == "mcq"))
    except (ValueError, csv.Error) as e:
        raise NavilError(f"cannot read {data_path}: {e}") from e
    for m in data.malformed:
        _log(f"navil eval: skipping malformed row (index {m.index!r}, line {m.line}): {m.reason}")
    rows = data.rows if limit is None else data.rows[:limit]

    gen = _BatchGenerator(model, tokenizer, spec, data_path.resolve().parent, max_new_tokens, multi_scale)
    fingerprint = {
        "benchmark": spec.name,
        "data_file": data_path.name,
        "data_bytes": data_path.stat().st_size,
        "prompt_style": spec.prompt_style,
        "max_new_tokens": max_new_tokens,
        "multi_scale": multi_scale,
        "template": gen.template,
        "system_message": model.config.system_message,
        "model": _model_fingerprint(model),
    }
    _check_run_config(out, fingerprint, overwrite)

    pred_path = out / PREDICTIONS_FILE
    cache = load_predictions(pred_path, strict=False)
    if retry_errors:
        cache = {k: v for k, v in cache.items() if not v.get("error")}
    todo = [r for r in rows if _key(r["index"]) not in cache]
    n_cached = len(rows) - len(todo)
    if n_cached:
        _log(f"navil eval: {n_cached} of {len(rows)} samples already in {pred_path}; generating {len(todo)}")

    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(
        total=len(todo),
        desc=spec.name,
        unit="sample",
        disable=not progress or not todo,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    was_training = model.training
    model.eval()
    try:
        with pred_path.open("a", encoding="utf-8") as fh:
            for start in range(0, len(todo), batch_size):
                records = _run_batch(gen, todo[start : start + batch_size])
                for rec in records:
                    fh.write(json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n")
                    cache[_key(rec["index"])] = rec
                fh.flush()
                os.fsync(fh.fileno())
                bar.update(len(records))
    finally:
        bar.close()
        model.train(was_training)
    seconds = time.perf_counter() - t0

    preds = {r["index"]: cache[_key(r["index"])].get("prediction") for r in rows}
    errors = [
        {"index": r["index"], "error": cache[_key(r["index"])]["error"]}
        for r in rows
        if cache[_key(r["index"])].get("error")
    ]
    for e in errors[:_MAX_LISTED]:
        _log(f"navil eval: sample {e['index']!r} failed: {e['error']}")

    scored_tsv = data_path
    if limit is not None and len(rows) < len(data.rows):
        scored_tsv = _write_subset_tsv(data_path, out / f"subset_first{len(rows)}.tsv", preds)
    result = score(spec.name, scored_tsv, preds, judge=judge, **dict(score_options or {}))

    _rewrite_predictions(pred_path, data.rows, cache, spec, judge is None, dict(score_options or {}))

    summary = {
        "benchmark": spec.name,
        "score": result.get("score"),
        "unit": result.get("unit"),
        "status": result.get("status"),
        "result": result,
        "model": None if model_path is None else str(model_path),
        "data": str(data_path),
        "scored_tsv": str(scored_tsv),
        "predictions": str(pred_path),
        "limit": limit,
        "n_selected": len(rows),
        "n_malformed": len(data.malformed),
        "malformed": [m.as_dict() for m in data.malformed[:_MAX_LISTED]],
        "n_errors": len(errors),
        "errors": errors[:_MAX_LISTED],
        "config": {
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "multi_scale": multi_scale,
            "template": gen.template,
            "prompt_style": spec.prompt_style,
            "greedy": True,
            "judge": judge is not None,
            "device": str(gen.device),
            "dtype": fingerprint["model"]["dtype"],
            **dict(config or {}),
        },
        "versions": _versions(),
        "timing": {
            "seconds": seconds,
            "generated": len(todo),
            "cached": n_cached,
            "samples_per_second": len(todo) / seconds if todo and seconds > 0 else None,
        },
    }
    summary = _jsonable(summary)
    _write_report(out, summary, echo)
    return summary


def _rewrite_predictions(
    path: Path, all_rows: list, cache: dict, spec: BenchmarkSpec, rule_hits: bool, options: dict
) -> None:
    """Rewrite the cache in TSV order with answer / category / hit (entries of unknown rows kept last)."""
    by_key = {_key(r["index"]): r for r in all_rows}
    hits = (
        sample_hits(
            spec,
            [r for r in all_rows if _key(r["index"]) in cache],
            {k: v.get("prediction") for k, v in cache.items()},
            **options,
        )
        if rule_hits
        else {}
    )
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        keys = [k for k in by_key if k in cache] + [k for k in cache if k not in by_key]
        for k in keys:
            rec = cache[k]
            row = by_key.get(k)
            line = {"index": rec["index"], "prediction": rec.get("prediction")}
            if row is not None:
                line["answer"] = row.get("answer")
                if row.get("category") is not None:
                    line["category"] = row.get("category")
            if k in hits:
                line["hit"] = hits[k]
            if rec.get("error"):
                line["error"] = rec["error"]
            fh.write(json.dumps(line, ensure_ascii=False, default=_json_default) + "\n")
    tmp.replace(path)


def score_predictions(
    benchmark,
    data_tsv,
    predictions,
    *,
    judge: Callable[[str], str] | None = None,
    out_dir=None,
    echo: bool = False,
    score_options: Mapping | None = None,
) -> dict:
    """Score saved predictions without a model.

    ``predictions``: a JSONL path (lines ``{"index": ..., "prediction": ...}``) or a ``{index: text}``
    mapping. Returns the same summary structure as :func:`evaluate` (``result`` is the :func:`score` dict);
    with ``out_dir`` also writes ``summary.json`` / ``summary.md`` there.
    """
    spec = _spec(benchmark)
    data_path = Path(data_tsv)
    if not data_path.is_file():
        raise NavilError(f"data file {data_path} does not exist")
    pred_file = None
    if isinstance(predictions, (str, os.PathLike)):
        pred_file = str(predictions)
        preds = {rec["index"]: rec.get("prediction") for rec in load_predictions(predictions).values()}
    else:
        preds = dict(predictions)
    try:
        result = score(spec.name, data_path, preds, judge=judge, **dict(score_options or {}))
    except (ValueError, csv.Error) as e:
        if isinstance(e, NavilError):
            raise
        raise NavilError(f"cannot score {data_path}: {e}") from e
    summary = _jsonable(
        {
            "benchmark": spec.name,
            "score": result.get("score"),
            "unit": result.get("unit"),
            "status": result.get("status"),
            "result": result,
            "model": None,
            "data": str(data_path),
            "scored_tsv": str(data_path),
            "predictions": pred_file,
            "limit": None,
            "n_malformed": result.get("n_malformed"),
            "malformed": result.get("malformed"),
            "n_errors": 0,
            "config": {"judge": judge is not None},
            "versions": _versions(),
        }
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_report(out, summary, echo)
    return summary


# ======================================================================================
# Judge endpoint
# ======================================================================================


def openai_judge(
    url: str,
    model: str,
    api_key: str | None = None,
    *,
    timeout: float = 120.0,
    retries: int = 3,
    max_tokens: int = 1024,
    temperature: float = 0.0,
) -> Callable[[str], str]:
    """A ``judge(prompt) -> str`` calling an OpenAI-compatible chat-completions endpoint.

    ``url`` may be the full ``.../chat/completions`` URL or the API base (``http://host:8000`` or
    ``.../v1``). ``api_key`` defaults to ``$NAVIL_JUDGE_API_KEY`` or ``$OPENAI_API_KEY``. After ``retries``
    failed calls the reply is VLMEvalKit's ``"Failed to obtain answer via API."``.
    """
    base = url.rstrip("/")
    if not base.endswith("/chat/completions"):
        base = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
    key = api_key or os.environ.get("NAVIL_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")

    def judge(prompt: str) -> str:
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": temperature,
                "max_tokens": max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = None
        for attempt in range(retries):
            try:
                req = urllib.request.Request(base, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                return str(reply["choices"][0]["message"]["content"]).strip()
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
                last = e
                if attempt + 1 < retries:
                    time.sleep(min(2.0**attempt, 10.0))
        _log(f"navil eval: judge call failed after {retries} tries: {last}")
        return "Failed to obtain answer via API."

    judge.url, judge.model = base, model
    return judge
