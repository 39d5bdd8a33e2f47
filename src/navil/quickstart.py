"""`navil quickstart`: synthetic data -> text LLM -> stage 1 -> stage 2 -> evaluation -> example answers.

The paper's recipe end to end on navil's built-in synthetic tasks, sized for ~10 minutes on 2 CPU cores:

0. data      synthetic sets generated once into OUT/data (reused by later runs) and a word-level tokenizer
             over the synthetic vocabulary (every answer is one token; one word per object, "red_star"; see
             navil.quickstart_data)
1. text LLM  a small Qwen3-layout decoder trained from scratch on text (no images): colour/shape questions
             about scenes written as an image's visual tokens lie (a few copies of each object's word between
             background words), which teaches the lookup "What color is the star?" needs. Written as a plain HF
             LLM folder OUT/llm
   warm-up   `init_from_llm(OUT/llm, vision)` (visual experts copied from their text twins, a fresh ViT with a
             convolutional stem and connector); the encoder and connector alone learn to put each visual token
             on its object's word embedding (navil.train.grounding.EmbeddingGrounding), on fresh object scenes
2. stage 1   dense captions (every object's colour, shape and position; the word; the bars) with every text
             weight frozen, curriculum easy (1 object) -> medium (<= 3) -> full; the word grounding goes on
3. stage 2   everything trains on question answering (several questions per image) plus some captions and
             object-word text, curriculum single object (colour/shape) -> colour/shape with <= 3 objects ->
             every category
4. eval      the held-out test split (balanced TSV) through navil.eval.runner (exact match per category)
5. examples  a few test images with question, answer and ground truth, printed and saved as one PNG sheet

`--minutes` sets a fixed number of optimizer steps per phase (rates measured on 2 CPU cores), so the same
seed gives the same data, model and accuracy on the same machine at the same `--threads` (default 2; float
summation order depends on both); wall-clock time varies with the machine (use `--threads 1` on a busy one). Progress lines go to
stdout; the per-category validation accuracy (first answer token = greedy exact match for single-token
answers), with colour and shape on single objects as "color@1" and "shape@1", is measured a few times per
phase and appended to OUT/curve.jsonl; the final numbers go to OUT/results.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from navil.errors import ConfigError
from navil.quickstart_data import DataSizes, jsonl_categories, prepare_data

TARGETS = {"color": 0.90, "shape": 0.80}  # other categories: chance + 0.25 * (1 - chance)
TEMPLATE = "internlm2-chat"               # no <think> block: fewer prompt tokens than qwen3-chat
GROUNDINGS = ("words", "regions", "none")  # Preset.grounding


@dataclass
class Preset:
    """The `tiny` quickstart preset: model sizes, phase shares of the budget and optimisation settings."""

    # decoder (Qwen3 layout) and ViT
    llm: dict = field(default_factory=lambda: {"family": "qwen3", "hidden_size": 192, "intermediate_size": 512,
                                                   "num_hidden_layers": 4, "num_attention_heads": 4,
                                                   "num_key_value_heads": 2, "head_dim": 48, "qk_norm": True,
                                                   "max_position_embeddings": 2048, "rope_theta": 10000.0})
    vision: dict = field(default_factory=lambda: {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
                                                      "num_attention_heads": 4, "patch_size": 16, "window_size": 8,
                                                      "fullatt_block_indexes": [3], "layer_scale_init": 0.1,
                                                      "stem": "conv"})
    # objects, glyphs and bars drawn at twice the default size: a from-scratch ViT learns shapes only when an
    # object spans ~3+ patches (measured with a ViT probe: objects of 1.5-2.5 patches stay at chance for 350
    # steps, 3-4.5 patches reach 0.7)
    object_scale: float = 2.0
    # object scenes get canvases sized to their objects (bounding boxes ~40% of the image, ~31 of the 72..128
    # patches for a single object, ~11 each for 3+): a single object would otherwise cover ~13% of its canvas,
    # and shape stays at chance (benchmarks/probe_full_model_shape.py, single-object shape QA at step 600:
    # 0.18 on independent canvases, 0.41 at canvas_fill 0.3, 0.44 at 0.5)
    canvas_fill: float = 0.5
    # every image becomes 72..128 patches of 16 px (18..32 visual tokens after the 2x2 merge); with
    # min > max/2 the multi-scale loop yields a single scale, so training and `navil chat` agree
    min_dynamic_patch: int = 72
    max_dynamic_patch: int = 128
    # visual tokens in raster order, so the <IMG_LINE_BREAK> rows of the image block hold what they say (the
    # official checkpoints' window-major order, quirk Q1, scrambles rows wider than a ViT window)
    restore_raster_order: bool = True
    # visual tokens at the root-mean-square of the text LLM's word embeddings (NaViLConfig.visual_token_rms)
    visual_token_rms: float | None = 0.05
    # shares of --minutes: 1598 / 500 / 75 / 580 steps at the rates below (stop 26). Against stop 23's 812 / 298 /
    # 178 / 580, the longer text phase and warm-up met shape on every seed measured (docs/quickstart.md, stops
    # 25-26); the ~2.6 minutes they add were paid for by faster steps (batched conv stem, gather-based packed
    # attention) and the shorter stage 1
    share_text: float = 0.2854
    share_vision_warmup: float = 0.3012
    share_stage1: float = 0.0517
    share_stage2: float = 0.3005
    # text-LLM curriculum: (start fraction, {text set: weight}) over "ow1".."ow5": colour/shape questions on
    # object-word scenes of up to 1, 2, 3, 5 objects (navil.quickstart_data.object_words_text); "text" (the
    # synthetic captions and questions) is also available. Text after the lookup erodes it (held-out colour on
    # 2 / 5 objects 0.94 / 0.59 without, 0.63 / 0.24 with 15% text at the end, 0.46 / 0.14 with 30%); text
    # before it (25%) trades shape for colour in the whole run (seed 0, 1 thread: shape 0.48-0.53, colour
    # 0.61-0.66 in four runs, against shape 0.96-0.98, colour 0.43-0.45 in three). Which of the two lookups wins
    # also depends on the seed and the thread count (docs/quickstart.md)
    text_curriculum: list = field(default_factory=lambda: [(0.0, {"ow1": 1.0}), (0.1, {"ow2": 1.0}),
                                                           (0.25, {"ow3": 1.0}), (0.45, {"ow5": 1.0})])
    # vision warm-up (navil.train.vision_warmup): encoder + connector alone on the grounding loss, on freshly drawn
    # object scenes, `vision_warmup_images` per step, curriculum (start fraction, max objects)
    vision_warmup_images: int = 24
    vision_warmup_curriculum: list = field(default_factory=lambda: [(0.0, 1), (0.15, 3), (0.4, 5)])
    lr_vision_warmup: float = 1e-3
    connector_lr_mult_warmup: float = 3.0
    # stage-1 curriculum: (start fraction, caption set) -- single objects, then <= 3 objects, then everything
    stage1_curriculum: list = field(default_factory=lambda: [(0.0, "s1_easy"), (0.2, "s1_medium"), (0.45, "s1_full")])
    # stage-2 curriculum: (start fraction, set) -- single objects (colour/shape) until the model starts to use
    # the image, then colour/shape with <= 3 objects (binding a shape to its colour), then everything (measured:
    # on the full mixture alone the model sits on the image-blind plateau for 500+ steps; on single-object colour
    # it leaves it after ~50)
    stage2_curriculum: list = field(default_factory=lambda: [(0.0, "s2_easy"), (0.25, "s2_medium"), (0.55, "s2_qa")])
    # optimisation
    lr_text: float = 3e-3
    lr_stage1: float = 3e-3
    lr_stage2: float = 1e-3
    # LR multipliers of the ViT and the connector. The connector at 10x: measured on single-object colour QA,
    # 1x/2x stay on the image-blind plateau for hundreds of steps, 10x leaves it after ~50 (30x/100x worse).
    # The ViT lower: a ViT-only shape probe reaches 0.73 at lr 1e-3 but 0.35 at 1e-2 after 300 steps.
    vision_lr_mult_stage1: float = 0.33
    connector_lr_mult_stage1: float = 3.0
    vision_lr_mult: float = 1.0
    connector_lr_mult: float = 10.0
    weight_decay: float = 0.01
    # tokens per pack (one optimizer step). 1024 rather than 1536: 1.45x the steps took the same wall time (text /
    # stage 1 / stage 2 58 / 112 / 325 s against 59 / 114 / 331 s, 1 thread), and colour rose from 0.39 to
    # 0.46-0.54 in six runs (overall 0.25-0.27 against 0.25)
    max_tokens: int = 1024
    warmup_steps: int = 15
    caption_share_stage2: float = 0.25
    # share of object-word text (up to 5 objects) in stage 2 after its single-object phase: keeps the lookup the
    # text phase taught
    object_words_share_stage2: float = 0.15
    # Phases run a fixed number of optimizer steps, so the same seed gives the same model and accuracy on the
    # same machine; --minutes is turned into steps with these rates, measured on 2 CPU cores (2 threads, nothing
    # else running; stages 1 and 2 with their validation passes), the slower of two runs on 2026-12-05: the
    # machine's speed varies (the same steps took 1.3-1.45x longer in that day's slow hour, 1.65x across days).
    # The shares above add up to 0.94: the rest is data generation, evaluation, examples.
    steps_per_minute: dict = field(default_factory=lambda: {"text": 560.0, "warmup": 166.0, "stage1": 145.0,
                                                            "stage2": 193.0})
    val_points: int = 4            # validation passes per phase (the learning curve; ~3-4 s each at 2 threads)
    # grounding (navil.train.grounding), a training-only loss on the visual tokens from the generator's labelled
    # boxes, in the vision warm-up and the phases listed: "words" pulls each token onto its object's word
    # embedding (EmbeddingGrounding: "red_star", background "gray"), "regions" trains linear heads on each
    # region's shape / word / bar value and colour (RegionGrounding; it grounds the encoder but lifted no
    # whole run), "none" turns it off (and the warm-up with it)
    grounding: str = "words"
    grounding_phases: tuple = ("stage1", "stage2")
    grounding_weight: float = 1.0


def _say(msg: str) -> None:
    print(f"[navil quickstart] {msg}", flush=True)


def _fmt_t(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


# ---- model pieces ----------------------------------------------------------------------------------------------
def _configs(p: Preset, vocab_size: int) -> tuple[Any, Any]:
    from navil.config import LLMConfig, VisionConfig

    return LLMConfig(vocab_size=vocab_size, **p.llm), VisionConfig(**p.vision)


def _navil_kwargs(p: Preset) -> dict[str, Any]:
    return {"template": TEMPLATE, "system_message": "", "min_dynamic_patch": p.min_dynamic_patch,
            "max_dynamic_patch": p.max_dynamic_patch, "restore_raster_order": p.restore_raster_order,
            "visual_token_rms": p.visual_token_rms}


def save_hf_llm(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Write the decoder's text weights as a plain HF Qwen3 LLM folder (what init_from_llm reads)."""
    from safetensors.torch import save_file

    from navil.checkpoint.official import llm_from_navil

    cfg = model.config.llm
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith("language_model.")}
    hf = {k: v for k, v in llm_from_navil(sd, cfg, prefix="").items() if "_ve." not in k}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(hf, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    conf = {"architectures": ["Qwen3ForCausalLM"], "model_type": cfg.family, "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads, "head_dim": cfg.resolved_head_dim,
            "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
            "max_position_embeddings": cfg.max_position_embeddings, "tie_word_embeddings": cfg.tie_word_embeddings,
            "hidden_act": "silu", "attention_bias": cfg.attention_bias, "torch_dtype": "float32",
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    (out_dir / "config.json").write_text(json.dumps(conf, indent=2))
    tokenizer.save(out_dir)
    return out_dir


def train_text_llm(data: dict[str, str], p: Preset, seed: int, steps: int, out_dir: Path
                   ) -> tuple[Path, dict[str, Any]]:
    """Phase 1: a decoder trained from scratch on the synthetic text sets of `p.text_curriculum` (tokenizer
    `data["tokenizer"]`), saved as a plain HF LLM folder. Returns the folder and the phase summary."""
    from navil.checkpoint.llm_init import init_from_llm
    from navil.processing.tokenizer import load_tokenizer

    tok = load_tokenizer(data["tokenizer"], require_navil_tokens=False)
    llm_cfg, vis_cfg = _configs(p, tok.vocab_size + 16)
    model = init_from_llm(None, vis_cfg, llm_config=llm_cfg, tokenizer=tok, seed=seed, **_navil_kwargs(p))
    schedule = [(f0, _loader([data[name] for name in mix], list(mix.values()), model, model.tokenizer, p, seed,
                             images=False)) for f0, mix in p.text_curriculum]
    summary = train_phase("text LLM", model, "stage2", schedule, steps, p.lr_text, p)
    llm_dir = save_hf_llm(model, model.tokenizer, out_dir)
    _say(f"text LLM saved as a plain HF {llm_cfg.family} folder: {llm_dir}")
    return llm_dir, summary


def _processor(model: Any) -> Any:
    from navil.inference import processor_for

    return processor_for(model.config)


def _loader(paths: list[str] | str, weights: list[float] | None, model: Any, tokenizer: Any, p: Preset,
            seed: int, images: bool = True, shuffle: bool = True) -> Any:
    from navil.data.loader import PackedLoader

    paths = [paths] if isinstance(paths, str) else list(paths)
    weights = weights or [1.0] * len(paths)
    sources = [{"path": s, "root": str(Path(s).parent), "weight": w, "kind": "jsonl"} for s, w in zip(paths, weights)]
    return PackedLoader(sources, tokenizer, _processor(model) if images else None, TEMPLATE, p.max_tokens,
                        None, seed=seed, multi_scale=False, system_message="", shuffle=shuffle)


def _object_word_of(region: dict) -> str | None:
    """An object region's word ("red_star"); None for words and bars."""
    from navil.data.synthetic import SHAPES
    from navil.quickstart_data import object_word

    return object_word(region["color"], region["label"]) if region.get("label") in SHAPES else None


def _grounding(model: Any, kind: str) -> Any:
    """The training-only grounding loss of `Preset.grounding` (None for "none")."""
    from navil.data.synthetic import COLORS, OCR_WORDS, SHAPES
    from navil.data.synthetic._scenes import CHART_MAX_VALUE
    from navil.quickstart_data import BACKGROUND_WORD, object_words
    from navil.train.grounding import EmbeddingGrounding, GroundingHeads, RegionGrounding

    if kind == "none":
        return None
    if kind == "words":
        tok = model.tokenizer
        ids = {w: tok.token_to_id(w) for w in (*object_words(), BACKGROUND_WORD)}
        missing = [w for w, i in ids.items() if i is None]
        if missing:
            raise ConfigError(f"the tokenizer lacks the object words {missing[:5]}; regenerate the data")
        background = ids.pop(BACKGROUND_WORD)
        return EmbeddingGrounding(model.language_model.embed, ids, background, _object_word_of)
    labels = [*SHAPES, *OCR_WORDS, *(f"bar {v}" for v in range(1, CHART_MAX_VALUE + 1))]  # "regions"
    hidden = model.config.llm.hidden_size
    return GroundingHeads([RegionGrounding(hidden, labels), RegionGrounding(hidden, COLORS, key="color")])


def _object_scenes(p: Preset, seed: int) -> Any:
    """`batch_at(step, fraction)` for the vision warm-up: `p.vision_warmup_images` fresh object scenes per step
    (train split, their own index range), at most as many objects as `p.vision_warmup_curriculum` allows."""
    from navil.data.synthetic import make_sample

    n = p.vision_warmup_images

    def batch_at(step: int, frac: float) -> tuple[list, list]:
        max_objects = [k for f0, k in p.vision_warmup_curriculum if frac >= f0][-1]
        samples = [make_sample("train", 20 * 10**6 + (step - 1) * n + i, seed=seed, categories=("color", "shape"),
                               max_objects=max_objects, object_scale=p.object_scale, canvas_fill=p.canvas_fill)
                   for i in range(n)]
        return [s.image for s in samples], [s.regions() for s in samples]

    return batch_at


# ---- validation (learning curve) -------------------------------------------------------------------------------
class Validator:
    """Per-category first-answer-token accuracy on the validation sets (one question per image; every answer is
    a single token of the word-level tokenizer, so this equals greedy exact match up to the closing token).

    `val_sets` maps a category suffix to a validation JSONL: `{"": val, "@1": val_single}` reports the balanced
    set's categories as they are and the single-object set's as "color@1" and "shape@1" (a shape read on one
    object, before any binding). Only the unsuffixed set counts towards "overall"."""

    def __init__(self, val_sets: dict[str, str], model: Any, tokenizer: Any, p: Preset, curve_path: Path) -> None:
        self.sets: list[tuple[list[str], list[Any]]] = []  # (category of each item, packs) per set
        self.overall_categories: set[str] = set()
        for suffix, path in val_sets.items():
            categories = [c + suffix for c in jsonl_categories(path)]
            if not suffix:
                self.overall_categories = set(categories)
            loader = _loader(path, None, model, tokenizer, p, seed=0, shuffle=False)
            packs, seen = [], 0
            while seen < len(categories):
                pack = next(loader)
                packs.append(pack)
                seen += pack.num_samples
            loader.close()
            self.sets.append((categories, packs))
        self.curve_path = curve_path
        self.t0 = time.perf_counter()

    @torch.no_grad()
    def first_answers(self, model: Any) -> Iterator[tuple[str, int, int]]:
        """(category, true first answer token, predicted token) of each validation question, once each."""
        was_training = model.training
        model.eval()
        try:
            for categories, packs in self.sets:
                yield from self._first_answers(model, categories, packs)
        finally:
            model.train(was_training)

    @staticmethod
    def _first_answers(model: Any, categories: list[str], packs: list[Any]) -> Iterator[tuple[str, int, int]]:
        done: set[int] = set()  # the last pack is topped up with repeats
        for pack in packs:
            inputs = pack.model_inputs()
            inputs.pop("labels")
            logits = model(**inputs, return_logits=True).logits[0]
            ids, labels, cu = pack.input_ids[0], pack.labels[0], pack.cu_seqlens.tolist()
            for d, (_, item) in enumerate(pack.sample_ids):
                answer = (labels[cu[d]:cu[d + 1]] != -100).nonzero()
                if item in done or not len(answer):
                    continue
                done.add(item)
                q = cu[d] + int(answer[0])
                yield categories[item], int(ids[q]), int(logits[q - 1].argmax())

    def __call__(self, model: Any, phase: str, step: int, extra: dict | None = None) -> dict[str, Any]:
        t = time.perf_counter()
        hits: dict[str, list[int]] = {}
        for category, truth, pred in self.first_answers(model):
            hits.setdefault(category, []).append(int(truth == pred))
        acc = {c: sum(v) / len(v) for c, v in hits.items()}
        counted = [v for c, v in hits.items() if c in self.overall_categories]
        rec = {"phase": phase, "step": step, "t": round(time.perf_counter() - self.t0, 1),
               "overall": sum(map(sum, counted)) / max(1, sum(map(len, counted))),
               "categories": {c: round(acc[c], 4) for c in _order(acc)}, "val_seconds": round(time.perf_counter() - t, 1),
               **(extra or {})}
        with open(self.curve_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        _say(f"  val @ {phase} step {step}: " + "  ".join(f"{c} {acc[c]:.2f}" for c in _order(acc))
             + f"  (overall {rec['overall']:.2f})")
        return rec


def _order(d: dict) -> list[str]:
    from navil.data.synthetic import CATEGORIES

    return sorted(d, key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES else 99, c))


# ---- the training loop -----------------------------------------------------------------------------------------
def train_phase(name: str, model: Any, stage: str, schedule: list[tuple[float, Any]], steps: int, lr: float,
                p: Preset, validator: Validator | None = None, lr_mult: dict | None = None,
                grounding: Any = None, log_every_s: float = 10.0) -> dict[str, Any]:
    """Train `model` for `steps` optimizer steps. `schedule` lists (start fraction, loader): the curriculum
    switches loaders as the phase progresses. LR: warm-up then cosine to 10% over the steps. `grounding`:
    grounding loss (`_grounding`) added, weighted by `p.grounding_weight`, on the loaders'
    regions."""
    from navil.train.grounding import RegionTable, capture_visual_tokens, head_param_groups
    from navil.train.optim import clip_grad_norm
    from navil.train.stages import apply_stage, param_groups

    summary = apply_stage(model, stage)
    n_train = sum(v["params"] for v in summary.values() if v["trainable"])
    groups = param_groups(model, lr, p.weight_decay, lr_mult or {})
    tables = {}
    if grounding is not None:
        groups += head_param_groups(grounding, lr, (lr_mult or {}).get("connector", 1.0))
        tables = {id(ld): RegionTable([s.path for s in ld.sources]) for _, ld in schedule}
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    params = [q for g in groups for q in g["params"]]
    model.train()
    _say(f"{name}: {stage}, {n_train / 1e6:.2f}M trainable of {model.num_parameters() / 1e6:.2f}M parameters, "
         f"{steps} steps")
    start = last_log = time.perf_counter()
    val_every = max(1, math.ceil(steps / p.val_points))
    samples = 0
    losses: list[float] = []
    history = []
    with capture_visual_tokens(model) if grounding is not None else contextlib.nullcontext({}) as captured:
        for step in range(1, steps + 1):
            frac = (step - 1) / steps
            loader = [ld for f0, ld in schedule if frac >= f0][-1]
            pack = next(loader)
            warm = min(1.0, step / max(1, p.warmup_steps))
            factor = warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            out = model(**pack.model_inputs(), return_logits=False)
            loss = out.loss
            if grounding is not None and pack.image_grid_thw is not None:
                regions = tables[id(loader)].for_pack(pack)
                loss = loss + p.grounding_weight * grounding(captured.pop("tokens"), pack.image_grid_thw, regions,
                                                             model.config.merge_size)
            loss.backward()
            clip_grad_norm(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            samples += pack.num_samples
            losses.append(float(out.loss.detach()))
            now = time.perf_counter()
            if now - last_log >= log_every_s or step == steps:
                el = now - start
                loss = sum(losses) / len(losses)
                history.append({"step": step, "t": round(el, 1), "loss": round(loss, 4)})
                region_acc = grounding.pop_accuracy() if grounding is not None else None
                _say(f"  {name} step {step:5d}/{steps}  {_fmt_t(el)}  loss {loss:.3f}  "
                     f"{samples / el:.0f} samples/s  lr {opt.param_groups[0]['lr']:.2e}"
                     + (f"  region acc {region_acc}" if region_acc is not None else ""))
                losses, last_log = [], now
            if validator is not None and step % val_every == 0 and step < steps:
                validator(model, name, step, {"loss": history[-1]["loss"] if history else None})
    el = time.perf_counter() - start
    _say(f"{name}: done, {steps} steps, {samples} samples in {el:.0f}s")
    for p_ in model.parameters():
        p_.requires_grad_(True)
    return {"steps": steps, "samples": samples, "seconds": round(el, 1), "loss_log": history,
            "trainable_parameters": n_train}


# ---- evaluation and examples -----------------------------------------------------------------------------------
def category_table(cats: dict[str, dict]) -> str:
    lines = [f"{'category':10s} {'accuracy':>9s} {'n':>5s} {'chance':>7s} {'target':>7s}  met",
             "-" * 48]
    for c, v in cats.items():
        lines.append(f"{c:10s} {v['accuracy']:9.3f} {v['n']:5d} {v['chance']:7.3f} {v['target']:7.3f}  "
                     f"{'yes' if v['met'] else 'NO'}")
    return "\n".join(lines)


def target_for(category: str, chance: float) -> float:
    return TARGETS.get(category, chance + 0.25 * (1 - chance))


def evaluate_model(model: Any, tokenizer: Any, test_tsv: str, out_dir: Path) -> tuple[float, dict[str, dict]]:
    """Exact-match accuracy per category on the test TSV, scored by `navil.eval.runner`."""
    from navil.data.synthetic import category_chance
    from navil.eval.runner import evaluate

    summary = evaluate(model, tokenizer, "NaViL_Synthetic", test_tsv, out_dir, batch_size=16, max_new_tokens=6,
                       multi_scale=False, progress=True, overwrite=True, echo=False)
    res = summary["result"]
    cats = {c: {"accuracy": d["accuracy"] / 100.0, "n": int(d["n"])} for c, d in res["category_details"].items()}
    overall = res["score"] / 100.0
    for c, v in cats.items():
        ch = category_chance(c)
        v["chance"] = ch
        v["target"] = round(target_for(c, ch), 4)
        v["met"] = v["accuracy"] >= v["target"]
    return overall, cats


def accuracy_by_objects(test_tsv: str, predictions: Path) -> dict[str, dict[str, dict]]:
    """Accuracy of each object category by the number of objects in the scene (the test TSV's `objects`
    column): `{category: {count: {"accuracy", "n"}}}`. Shows whether a category fails only once objects
    must be told apart (a colour asked by the object's shape needs the shape)."""
    from navil.data.synthetic import read_tsv

    objects = {r["index"]: int(r["objects"]) for r in read_tsv(test_tsv, decode_images=False)}
    hits: dict[str, dict[int, list[int]]] = {}
    for line in predictions.read_text().splitlines():
        rec = json.loads(line)
        if objects.get(rec["index"], 0) > 0:
            hits.setdefault(rec["category"], {}).setdefault(objects[rec["index"]], []).append(int(rec["hit"]))
    return {c: {str(k): {"accuracy": round(sum(v) / len(v), 4), "n": len(v)} for k, v in sorted(by.items())}
            for c, by in hits.items()}


def show_examples(model: Any, tokenizer: Any, test_tsv: str, out_png: Path, k: int = 8) -> list[dict]:
    """Answer the first test image of each category (plus a few more), print and save them as one sheet."""
    from navil.data.synthetic import read_tsv
    from navil.inference import chat

    rows = read_tsv(test_tsv)
    chosen, seen = [], set()
    for r in rows:
        if r["category"] not in seen:
            chosen.append(r)
            seen.add(r["category"])
    for r in rows:
        if len(chosen) >= k:
            break
        if r not in chosen:
            chosen.append(r)
    examples = []
    _say("example answers on held-out test images:")
    for r in chosen[:k]:
        ans = chat(model, tokenizer, images=[r["image"]], question=r["question"], max_new_tokens=8)
        ok = ans.strip().lower() == r["answer"].strip().lower()
        examples.append({"index": r["index"], "category": r["category"], "question": r["question"], "answer": ans,
                         "ground_truth": r["answer"], "correct": ok, "image": r["image"]})
        _say(f"  [{r['category']:8s}] Q: {r['question']}\n{'':30s}A: {ans!r:12s} GT: {r['answer']!r}  "
             f"{'OK' if ok else 'wrong'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = 4
        rows_n = math.ceil(len(examples) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.6 * rows_n))
        for ax in axes.flat:
            ax.axis("off")
        for ax, e in zip(axes.flat, examples):
            ax.imshow(e["image"])
            q = e["question"].replace(" Answer with a single word.", "")
            ax.set_title(f"[{e['category']}] {q}\npred: {e['answer']}   truth: {e['ground_truth']}", fontsize=8,
                         color="green" if e["correct"] else "red")
        fig.tight_layout()
        fig.savefig(out_png, dpi=80)
        plt.close(fig)
        _say(f"example sheet: {out_png}")
    except Exception as e:  # noqa: BLE001 - the sheet is a convenience; never fail the run for it
        _say(f"could not draw the example sheet: {e}")
    for e in examples:
        e.pop("image")
    return examples


def plot_curve(curve_path: Path, out_png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = [json.loads(x) for x in curve_path.read_text().splitlines() if x.strip()]
        if not recs:
            return
        cats = _order({c: 0 for r in recs for c in r["categories"]})
        fig, ax = plt.subplots(figsize=(7, 4))
        ts = [r["t"] / 60 for r in recs]
        bases = list(dict.fromkeys(c.split("@")[0] for c in cats))
        for c in cats:  # a slice ("shape@1": single objects) dashed, in its category's colour
            ax.plot(ts, [r["categories"].get(c, float("nan")) for r in recs], marker="o", label=c,
                    color=f"C{bases.index(c.split('@')[0]) % 10}", linestyle="--" if "@" in c else "-")
        for r in recs:
            if r.get("boundary"):
                ax.axvline(r["t"] / 60, color="gray", lw=0.5)
        ax.set_xlabel("minutes"), ax.set_ylabel("val accuracy"), ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, ncol=3), ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_png, dpi=80)
        plt.close(fig)
    except Exception as e:  # noqa: BLE001 - the plot is a convenience
        _say(f"could not plot the learning curve: {e}")


# ---- the pipeline ----------------------------------------------------------------------------------------------
def run_quickstart(out: str | Path = "runs/quickstart", minutes: float = 10.0, seed: int = 0,
                   data_scale: float = 1.0, preset: Preset | None = None, examples: int = 8,
                   threads: int | None = None) -> dict[str, Any]:
    """Run the whole quickstart; returns the results dict (also written to OUT/results.json)."""
    from navil.checkpoint.io import load_model
    from navil.checkpoint.llm_init import init_from_llm, save_with_tokenizer
    from navil.processing.tokenizer import load_tokenizer
    from navil.train.vision_warmup import warm_up_vision

    t_start = time.perf_counter()
    p = preset or Preset()
    if p.grounding not in GROUNDINGS:
        raise ConfigError(f"Preset.grounding must be one of {GROUNDINGS}, got {p.grounding!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # two intra-op threads (1.55x faster per step than one on 2 quiet cores). The thread count changes float
    # summation order, so the same seed reproduces the same accuracy at the same --threads. On a busy machine
    # use --threads 1: a 2-thread OpenMP pool stalls on every small op while another process holds a core
    # (measured 4-30 s/step vs 0.6 s/step).
    torch.set_num_threads(threads or 2)
    torch.manual_seed(seed)
    def steps_for(phase: str, share: float) -> int:
        return max(1, round(minutes * share * p.steps_per_minute[phase]))

    sizes = DataSizes().scaled(data_scale)
    _say(f"out {out}  budget {minutes:g} min  seed {seed}  (phases: text LLM {p.share_text:.0%}, vision warm-up "
         f"{p.share_vision_warmup:.0%}, stage 1 {p.share_stage1:.0%}, stage 2 {p.share_stage2:.0%}, rest data "
         f"and eval)")
    data = prepare_data(out / "data", seed, sizes, p.object_scale, p.canvas_fill)
    curve = out / "curve.jsonl"
    curve.unlink(missing_ok=True)
    phases: dict[str, Any] = {}

    # 1. text LLM --------------------------------------------------------------------------------------------
    llm_dir, phases["text_llm"] = train_text_llm(data, p, seed, steps_for("text", p.share_text), out / "llm")
    vis_cfg = _configs(p, 0)[1]

    # 2. vision warm-up -------------------------------------------------------------------------------------
    model = init_from_llm(llm_dir, vis_cfg, seed=seed, **_navil_kwargs(p))
    tok = model.tokenizer
    grounding = _grounding(model, p.grounding)
    if grounding is not None and p.share_vision_warmup > 0:
        _say(f"vision warm-up: encoder + connector on the grounding loss, {p.vision_warmup_images} object scenes "
             f"per step")
        phases["vision_warmup"] = warm_up_vision(
            model, grounding, _object_scenes(p, seed), steps_for("warmup", p.share_vision_warmup),
            p.lr_vision_warmup, p.connector_lr_mult_warmup, p.weight_decay, p.warmup_steps, _say)

    # 3. stage 1 --------------------------------------------------------------------------------------------
    validator = Validator({"": data["val"], "@1": data["val_single"]}, model, tok, p, curve)
    mult = {"vision": p.vision_lr_mult, "connector": p.connector_lr_mult}
    s1 = [(f0, _loader(data[name], None, model, tok, p, seed)) for f0, name in p.stage1_curriculum]
    mult1 = {"vision": p.vision_lr_mult_stage1, "connector": p.connector_lr_mult_stage1}
    phases["stage1"] = train_phase("stage 1", model, "stage1", s1, steps_for("stage1", p.share_stage1), p.lr_stage1, p,
                                   validator, mult1, grounding if "stage1" in p.grounding_phases else None)
    validator(model, "stage 1", phases["stage1"]["steps"], {"boundary": True})

    # 4. stage 2 --------------------------------------------------------------------------------------------
    # captions keep part of the dense supervision in stage 2, but not in the single-object phase: there the
    # QA signal alone leaves the image-blind plateau fastest (measured)
    captions = {"s2_medium": "s1_medium", "s2_qa": "s1_full"}
    s2 = []
    for f0, name in p.stage2_curriculum:
        mix = {name: 1.0}
        if name in captions:
            mix = {name: 1 - p.caption_share_stage2 - p.object_words_share_stage2,
                   captions[name]: p.caption_share_stage2, "ow5": p.object_words_share_stage2}
        mix = {k: w for k, w in mix.items() if w > 0}
        s2.append((f0, _loader([data[k] for k in mix], list(mix.values()), model, tok, p, seed + 1)))
    phases["stage2"] = train_phase("stage 2", model, "stage2", s2, steps_for("stage2", p.share_stage2), p.lr_stage2, p,
                                   validator, mult, grounding if "stage2" in p.grounding_phases else None)
    validator(model, "stage 2", phases["stage2"]["steps"], {"boundary": True})
    model_dir = out / "model"
    save_with_tokenizer(model.eval(), tok, model_dir)
    _say(f"model saved: {model_dir}  (navil chat --model {model_dir} --image IMG \"question\")")
    del model

    # 5. evaluation on the held-out test split (from the saved folder, as a user would) -----------------------
    t_eval = time.perf_counter()
    model = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    overall, cats = evaluate_model(model, tok, data["test"], out / "eval")
    predictions = out / "eval" / "predictions.jsonl"  # navil.eval.runner's PREDICTIONS_FILE (no fallback file)
    if predictions.is_file():
        for c, by in accuracy_by_objects(data["test"], predictions).items():
            cats[c]["by_objects"] = by
    phases["eval"] = {"seconds": round(time.perf_counter() - t_eval, 1)}

    # 6. examples ---------------------------------------------------------------------------------------------
    ex = show_examples(model, tok, data["test"], out / "examples.png", k=examples) if examples else []
    plot_curve(curve, out / "curve.png")

    total_min = (time.perf_counter() - t_start) / 60.0
    results = {"overall_accuracy": overall, "categories": cats, "minutes": round(total_min, 3),
               "model_dir": str(model_dir.resolve()), "seed": seed,
               "budget_minutes": minutes, "phases": phases, "curve": str(curve), "examples": ex,
               "targets_met": all(v["met"] for v in cats.values()) and len(cats) >= 6,
               "preset": dataclasses.asdict(p), "data": data, "data_sizes": dataclasses.asdict(sizes),
               "llm_dir": str(llm_dir.resolve())}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(category_table(cats))
    print(f"{'overall':10s} {overall:9.3f}")
    print("\naccuracy by the number of objects in the scene:")
    for c, v in cats.items():
        if "by_objects" in v:
            by = v["by_objects"].items()
            print(f"  {c:9s} " + "  ".join(f"{k}: {d['accuracy']:.2f} ({d['n']})" for k, d in by))
    print(f"\ntotal {total_min:.1f} min; results: {out / 'results.json'}; learning curve: {curve} "
          f"({out / 'curve.png'}); examples: {out / 'examples.png'}", flush=True)
    return results
