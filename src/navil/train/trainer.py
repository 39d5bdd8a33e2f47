"""The training loop: `train(cfg, resume=False)`.

One optimizer step consumes `batch.global_packs` packs of the global pack stream, whatever the world size:
rank r of W processes takes packs r, r+W, ... (the loader's split), so each rank accumulates gradients
over global_packs / W packs. The step's loss is the token-level mean over the whole global batch:

    loss = sum over all packs of the token cross-entropy / total loss tokens of the global batch

The loss-token count is all-reduced before the forward passes, each pack's backward uses
`sum_CE * W / N_global` (FSDP2 averages gradients over the W ranks, the factor W undoes that), so the
gradients, and therefore the weights, do not depend on W or on the accumulation split.

Under FSDP2 every rank must run the same modules (their all-gathers are collectives): a pack without
images gets a zero-loss one-patch dummy image document appended, so the vision encoder, connector and
visual experts run (with exactly-zero gradient contributions) on every rank.

Test hooks (crash safety): env NAVIL_TEST_CRASH_AT_STEP=k SIGKILLs the process right after step k (and its
checkpoint, if any); NAVIL_TEST_CRASH_IN_SAVE=k SIGKILLs it in the middle of writing checkpoint k.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from navil.errors import ConfigError
from navil.train import checkpointing as ckpt_io
from navil.train.config import BUILTIN_BYTE_TOKENIZER, TrainConfig
from navil.train.metrics import MetricsLogger, measure_peak_flops, pack_train_flops, run_metadata
from navil.train.optim import LRSchedule, build_optimizer, clip_grad_norm
from navil.train.parallelize import DistEnv, init_distributed, is_fsdp, parallelize
from navil.train.stages import apply_stage, trainable_categories

CHECKPOINT_DIR = "checkpoints"


# ---- model construction ---------------------------------------------------------------------------------------
def _replace_fields(obj: Any, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in dataclasses.fields(obj)}
    for key in values:
        if key not in known:
            raise ConfigError(f"config field '{section}.{key}': unknown field; known: {', '.join(sorted(known))}")
    return dataclasses.replace(obj, **values)


def _vision_config(spec: Any) -> Any:
    from navil.config import VISION_PRESETS

    if isinstance(spec, str):
        spec = {"preset": spec}
    spec = dict(spec)
    preset = spec.pop("preset", "tiny")
    if preset not in VISION_PRESETS:
        raise ConfigError(f"config field 'model.vision.preset': unknown preset {preset!r}; "
                          f"known: {sorted(VISION_PRESETS)}")
    return _replace_fields(VISION_PRESETS[preset](), spec, "model.vision")


def _scratch_base(preset: str) -> Any:
    from navil.config import navil_2b, navil_9b, tiny

    presets = {"tiny": tiny, "navil-2b": navil_2b, "navil-9b": navil_9b}
    if preset not in presets:
        raise ConfigError(f"config field 'model.preset': unknown preset {preset!r}; known: {sorted(presets)}")
    return presets[preset]()


def resolve_tokenizer(spec: str | None, out: Path) -> str | None:
    """A tokenizer folder for `model.tokenizer` (the built-in byte tokenizer is written to OUT/tokenizer)."""
    if spec == BUILTIN_BYTE_TOKENIZER:
        return str(out / "tokenizer")
    return spec


def prepare_tokenizer(spec: str | None, out: Path) -> None:
    """Rank 0, before the model is built: write the built-in tokenizer when asked for."""
    if spec == BUILTIN_BYTE_TOKENIZER and not (out / "tokenizer" / "tokenizer.json").is_file():
        from navil.train.tokenizer import write_byte_tokenizer

        write_byte_tokenizer(out / "tokenizer")


def build_model(cfg: TrainConfig, out: Path) -> tuple[Any, Any]:
    """(model in train mode on CPU fp32, tokenizer) from `cfg.model` (see ModelSection)."""
    from navil.checkpoint.io import load_model
    from navil.checkpoint.llm_init import init_from_llm
    from navil.processing.tokenizer import load_tokenizer

    m = cfg.model
    if m.init == "navil":
        model = load_model(m.path)
        # the checkpoint's own tokenizer (its special-token ids are baked into the model) unless a folder is named
        tok = load_tokenizer(m.tokenizer if m.tokenizer not in (None, BUILTIN_BYTE_TOKENIZER) else m.path)
        return model.train(), tok
    vision = _vision_config(m.vision)
    common = {"seed": cfg.seed, "attention_experts": m.attention_experts, "ffn_experts": m.ffn_experts,
              "copy_visual_experts": m.copy_visual_experts}
    if m.init == "llm":
        model = init_from_llm(m.llm_path, vision, tokenizer=resolve_tokenizer(m.tokenizer, out), **common,
                              **m.overrides)
    else:
        base = _scratch_base(m.preset)
        llm = _replace_fields(base.llm, m.llm, "model.llm")
        tok = resolve_tokenizer(m.tokenizer, out)
        if tok is None:
            raise ConfigError("config field 'model.tokenizer': a from-scratch model needs a tokenizer "
                              f"(a folder, or {BUILTIN_BYTE_TOKENIZER!r} for the built-in byte tokenizer)")
        defaults = {"min_dynamic_patch": base.min_dynamic_patch, "max_dynamic_patch": base.max_dynamic_patch,
                    "template": base.template}
        model = init_from_llm(None, vision, llm_config=llm, tokenizer=tok, **common, **{**defaults, **m.overrides})
    return model.train(), model.tokenizer


# ---- data -------------------------------------------------------------------------------------------------------
_SYNTHETIC_KEYS = ("n", "seed", "mode", "questions_per_image", "split", "dir", "weight")


def synthetic_source(cfg: TrainConfig, out: Path, create: bool) -> dict[str, Any] | None:
    """The data source of `data.synthetic`, generating it (rank 0: `create`) into its folder if missing."""
    syn = cfg.data.synthetic
    if syn is None:
        return None
    syn = dict(syn)
    n = int(syn.pop("n", 512))
    seed = int(syn.pop("seed", 0))
    mode = syn.pop("mode", "mixed")
    qpi = int(syn.pop("questions_per_image", 1))
    split = syn.pop("split", "train")
    folder = Path(syn.pop("dir", None) or out / "data")
    weight = float(syn.pop("weight", 1.0))
    jsonl = folder / f"{split}_{mode}.jsonl"
    marker = folder / f".{split}_{mode}.done.json"
    spec = {"n": n, "seed": seed, "mode": mode, "questions_per_image": qpi, "split": split, **syn}
    if create:
        done = marker.is_file() and json.loads(marker.read_text()) == spec and jsonl.is_file()
        if not done:
            from navil.data.synthetic import export_jsonl

            try:
                export_jsonl(folder, split, n, seed=seed, mode=mode, questions_per_image=qpi, **syn)
            except TypeError as e:
                raise ConfigError(f"config field 'data.synthetic': {e} (known keys: {', '.join(_SYNTHETIC_KEYS)} "
                                  "and the options of navil.data.synthetic.export_jsonl)") from None
            marker.write_text(json.dumps(spec))
    return {"path": str(jsonl), "root": str(folder), "weight": weight, "kind": "jsonl"}


def image_processor(config: Any) -> Any:
    from navil.processing.image import ImageProcessor

    p = config.vision.patch_size
    return ImageProcessor(patch_size=p, merge_size=config.merge_size, min_pixels=config.min_dynamic_patch * p * p,
                          max_pixels=config.max_dynamic_patch * p * p, scale_ratio=config.scale_downsample_ratio)


# ---- the trainer --------------------------------------------------------------------------------------------------
def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.out = Path(cfg.out)
        self.ckpt_root = self.out / CHECKPOINT_DIR
        self.accum = cfg.grad_accum(env.world_size)
        self.trainable = trainable_categories(cfg.stage, cfg.trainable)

    def say(self, text: str) -> None:
        if self.env.is_main:
            print(f"[navil train] {text}", file=sys.stderr, flush=True)

    # ---- setup ---------------------------------------------------------------------------------------------------
    def setup(self, resume: bool) -> None:
        cfg, env = self.cfg, self.env
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        ckpt = None
        found = ckpt_io.latest_checkpoint(self.ckpt_root) if env.is_main else None
        found = env.broadcast_object(str(found) if found else None)
        if resume:
            if found is None:
                self.say(f"--resume: no complete checkpoint under {self.ckpt_root}; starting from step 0")
            else:
                ckpt = Path(found)
        elif found is not None:
            raise ConfigError(f"config field 'out': {self.out} already holds checkpoints of a run (newest: "
                              f"{Path(found).name}); pass --resume to continue it, or choose another out=")
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(cfg.to_yaml())
            if cfg.model.init != "navil":
                prepare_tokenizer(cfg.model.tokenizer, self.out)
            synthetic_source(cfg, self.out, create=True)
        env.barrier()
        _seed_all(cfg.seed)
        self.ckpt_state = ckpt_io.read_trainer_state(ckpt) if ckpt else None

        if ckpt is not None:
            from navil.checkpoint.io import load_model
            from navil.processing.tokenizer import load_tokenizer

            model = load_model(ckpt / "model").train()
            self.tokenizer = load_tokenizer(ckpt / "model")
        else:
            model, self.tokenizer = build_model(cfg, self.out)
        self.config = model.config
        self.summary = apply_stage(model, cfg.stage, cfg.trainable)
        model.to(env.device)
        self.model = parallelize(model, env, activation_checkpointing=cfg.activation_checkpointing,
                                 compile=cfg.compile, reshard_after_forward=cfg.reshard_after_forward)
        self.fsdp = is_fsdp(self.model)
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = LRSchedule(self.optimizer, cfg.max_steps, cfg.warmup_steps, cfg.schedule.decay,
                                   cfg.schedule.min_lr_ratio)
        self.trainable_params = [p for p in self.model.parameters() if p.requires_grad]

        sources = [dict(s) for s in cfg.data.sources]
        syn = synthetic_source(cfg, self.out, create=False)
        if syn is not None:
            sources.append(syn)
        from navil.data.loader import PackedLoader

        template = cfg.data.template or self.config.template or "qwen3-chat"
        self.loader = PackedLoader(sources, self.tokenizer, image_processor(self.config), template,
                                   cfg.data.max_tokens, cfg.data.max_patches,
                                   seed=cfg.data.seed if cfg.data.seed is not None else cfg.seed,
                                   multi_scale=cfg.data.multi_scale, system_message=cfg.data.system_message,
                                   rank=env.rank, world_size=env.world_size)

        self.step = 0
        self.tokens_seen = 0
        self.samples_seen = 0
        self.elapsed_before = 0.0
        if ckpt is not None:
            st = self.ckpt_state
            ckpt_io.load_optimizer_state(self.model, self.optimizer, ckpt)
            self.schedule.load_state_dict(st["schedule"])
            self.loader.load_state_dict(st["loader"])
            self.step = int(st["step"])
            self.tokens_seen = int(st.get("tokens_seen", 0))
            self.samples_seen = int(st.get("samples_seen", 0))
            self.elapsed_before = float(st.get("elapsed_s", 0.0))
            if st.get("world_size") != env.world_size:
                self.say(f"resuming a {st.get('world_size')}-process run with {env.world_size} processes")
            if not ckpt_io.load_rng(ckpt, env.rank):
                self.say(f"checkpoint has no RNG state for rank {env.rank}; keeping the seeded state")
            if env.is_main:
                metrics = self.out / "metrics.jsonl"
                if (ckpt / "metrics.jsonl").is_file():
                    shutil.copyfile(ckpt / "metrics.jsonl", metrics)
                else:
                    metrics.unlink(missing_ok=True)
            self.say(f"resumed from {ckpt} at step {self.step}")
        elif env.is_main:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log

        peak_dtype = torch.bfloat16 if env.device.type == "cuda" and cfg.dtype == "bfloat16" else torch.float32
        self.peak = cfg.peak_flops or measure_peak_flops(env.device, peak_dtype)
        n_params = sum(v["params"] for v in self.summary.values())
        n_train = sum(v["params"] for v in self.summary.values() if v["trainable"])
        if env.is_main:
            meta = run_metadata(env.world_size, env.device, {
                "resumed_from": str(ckpt) if ckpt else None, "start_step": self.step,
                "parameters": n_params, "trainable_parameters": n_train, "categories": self.summary,
                "grad_accum": self.accum, "peak_flops_per_device": self.peak, "fsdp": self.fsdp,
                "optimizer_groups": [{"name": g["name"], "lr": g["base_lr"], "weight_decay": g["weight_decay"],
                                      "params": sum(p.numel() for p in g["params"])}
                                     for g in self.optimizer.param_groups]})
            (self.out / "run.json").write_text(json.dumps(meta, indent=1))
        self.say(f"{n_params / 1e6:.2f}M parameters, {n_train / 1e6:.2f}M trainable ({cfg.stage}: "
                 f"{', '.join(self.trainable)}); world size {env.world_size}"
                 f"{' (FSDP2)' if self.fsdp else ''}, {cfg.batch.global_packs} packs/step "
                 f"({self.accum} per rank), up to {cfg.data.max_tokens} tokens/pack; out: {self.out}")

    # ---- one step ------------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.env.device.type == "cuda" and self.cfg.dtype != "float32":
            return torch.autocast("cuda", dtype=getattr(torch, self.cfg.dtype))
        return contextlib.nullcontext()

    def _loss_tokens(self, pack: Any) -> int:
        from navil.model.navil import flatten_batch, next_token_targets

        layout = flatten_batch(pack.input_ids, cu_seqlens=pack.cu_seqlens)
        src, _ = next_token_targets(layout, pack.labels.reshape(-1), self.model.img_context_token_id)
        return int(src.numel())

    def _inputs(self, pack: Any) -> dict[str, Any]:
        dev = self.env.device
        ids, labels, cu = pack.input_ids, pack.labels, pack.cu_seqlens
        pv, thw = pack.pixel_values, pack.image_grid_thw
        if self.env.is_distributed and pv is None:
            ids, labels, cu, pv, thw = with_dummy_image(self.config, ids, labels, cu)
        return {"input_ids": ids.to(dev), "labels": labels.to(dev), "cu_seqlens": cu.to(dev),
                "pixel_values": None if pv is None else pv.to(dev),
                "image_grid_thw": None if thw is None else thw.to(dev)}

    def train_step(self, step: int) -> dict[str, Any]:
        env, model = self.env, self.model
        t0 = time.perf_counter()
        packs = [next(self.loader) for _ in range(self.accum)]
        t_data = time.perf_counter() - t0
        counts = [self._loss_tokens(p) for p in packs]
        flops = sum(pack_train_flops(self.config, p.input_ids, p.cu_seqlens, p.image_grid_thw, c, self.trainable)
                    for p, c in zip(packs, counts))
        local = [sum(counts), sum(p.input_ids.shape[1] for p in packs), sum(p.num_patches for p in packs),
                 sum(p.num_samples for p in packs), flops]
        n_loss, n_tokens, n_patches, n_samples, flops = env.all_reduce_sum(local)
        scale = env.world_size / max(n_loss, 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        for i, (pack, count) in enumerate(zip(packs, counts)):
            if self.fsdp:
                model.set_requires_gradient_sync(i == self.accum - 1)
            need_logits = env.is_distributed and count == 0  # keep the LM head in every rank's graph
            with self._autocast():
                out = model(**self._inputs(pack), return_logits=need_logits)
            if out.num_loss_tokens != count:
                raise RuntimeError(f"internal: model scored {out.num_loss_tokens} tokens, expected {count}")
            ce_sum = out.loss.float() * out.num_loss_tokens
            objective = ce_sum * scale
            if need_logits:
                objective = objective + out.logits.sum() * 0.0
            objective.backward()
            loss_sum += ce_sum.detach().double()
        loss = env.all_reduce_sum([float(loss_sum)])[0] / max(n_loss, 1.0)
        grad_norm = float(clip_grad_norm(self.trainable_params, self.cfg.optim.grad_clip))
        factor = self.schedule.set_step(step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if env.device.type == "cuda":
            torch.cuda.synchronize()
        return {"loss": loss, "lr": self.cfg.optim.lr * factor, "grad_norm": grad_norm, "tokens": int(n_tokens),
                "loss_tokens": int(n_loss), "patches": int(n_patches), "samples": int(n_samples), "flops": flops,
                "step_time": time.perf_counter() - t0, "data_time": t_data}

    # ---- the loop ------------------------------------------------------------------------------------------------
    def trainer_state(self, record: dict[str, Any] | None, elapsed: float) -> dict[str, Any]:
        return {"step": self.step, "schedule": self.schedule.state_dict(), "loader": self.loader.state_dict(),
                "world_size": self.env.world_size, "global_packs": self.cfg.batch.global_packs,
                "stage": self.cfg.stage, "trainable": list(self.trainable), "tokens_seen": self.tokens_seen,
                "samples_seen": self.samples_seen, "elapsed_s": elapsed, "last_metrics": record}

    def save(self, record: dict[str, Any] | None, elapsed: float) -> Path:
        t = time.perf_counter()
        path = ckpt_io.save_checkpoint(self.ckpt_root, self.step, model=self.model, optimizer=self.optimizer,
                                       env=self.env, tokenizer=self.tokenizer,
                                       trainer_state=self.trainer_state(record, elapsed),
                                       metrics_file=self.out / "metrics.jsonl", keep_last=self.cfg.keep_last)
        self.logger.write_message(f"[navil train] saved {path} ({time.perf_counter() - t:.1f}s)")
        return path

    def fit(self) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        self.logger = MetricsLogger(self.out, env.is_main, self.step, cfg.max_steps, cfg.tensorboard, cfg.progress)
        start = time.perf_counter()
        window = {"tokens": 0, "flops": 0.0, "time": 0.0}
        record = None
        last_saved = None
        if self.step >= cfg.max_steps:
            self.say(f"already at step {self.step} >= max_steps={cfg.max_steps}: nothing to do "
                     "(raise max_steps to train further)")
        try:
            while self.step < cfg.max_steps:
                step = self.step + 1
                r = self.train_step(step)
                self.step = step
                self.tokens_seen += r["tokens"]
                self.samples_seen += r["samples"]
                for k in window:
                    window[k] += r["step_time"] if k == "time" else r[k]
                record = None
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    dt = max(window["time"], 1e-9)
                    record = {"step": step, "loss": r["loss"], "lr": r["lr"], "grad_norm": r["grad_norm"],
                              "tokens_per_s": window["tokens"] / dt,
                              "mfu": window["flops"] / dt / (self.peak * env.world_size),
                              "skipped_samples": self.loader.skipped_samples,
                              "tokens": r["tokens"], "loss_tokens": r["loss_tokens"], "patches": r["patches"],
                              "samples": r["samples"], "step_time": r["step_time"], "data_time": r["data_time"],
                              "model_flops": r["flops"], "epoch": self.loader.epoch,
                              "tokens_seen": self.tokens_seen,
                              "elapsed_s": self.elapsed_before + time.perf_counter() - start}
                    if self.loader.skipped_samples:
                        record["skip_reasons"] = dict(self.loader.skip_reasons)
                    self.logger.log(record)
                    window = {"tokens": 0, "flops": 0.0, "time": 0.0}
                self.logger.progress(step, record)
                if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps:
                    last_saved = self.save(record, self.elapsed_before + time.perf_counter() - start)
                ckpt_io._test_crash("NAVIL_TEST_CRASH_AT_STEP", step)
        finally:
            self.logger.close()
            self.loader.close()
        return {"step": self.step, "loss": record["loss"] if record else None,
                "checkpoint": str(last_saved) if last_saved else None, "out": str(self.out)}


def with_dummy_image(config: Any, ids: torch.Tensor, labels: torch.Tensor, cu: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Append a zero-loss document `<img><IMG_CONTEXT></img>` with a black one-merge-unit image."""
    from navil.model.quirks import IMG_CONTEXT_ROW, IMG_START_ROW

    special = config.special_token_ids
    img_end = special[3]  # </img> in the official special-token order
    doc = torch.tensor([[special[IMG_START_ROW], special[IMG_CONTEXT_ROW], img_end]], dtype=ids.dtype)
    m, v = config.merge_size, config.vision
    pv = torch.zeros(m * m, v.num_channels, v.patch_size, v.patch_size)
    thw = torch.tensor([[1, m, m]], dtype=torch.int64)
    ids = torch.cat((ids, doc), dim=1)
    labels = torch.cat((labels, torch.full_like(doc, -100)), dim=1)
    cu = torch.cat((cu, cu[-1:] + doc.shape[1]))
    return ids, labels, cu, pv, thw


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) training as configured; under torchrun every process calls this."""
    env = init_distributed(cfg.device)
    trainer = None
    try:
        if cfg.dtype != "float32" and env.device.type != "cuda" and env.is_main:
            print(f"[navil train] dtype={cfg.dtype} applies to CUDA autocast only; training in float32 on CPU",
                  file=sys.stderr)
        trainer = Trainer(cfg, env)
        trainer.setup(resume)
        result = trainer.fit()
        env.barrier()
        return result
    finally:
        # Free the sharded model and optimizer (module hooks form reference cycles) while the process group
        # and the interpreter are alive: a Gloo group whose last references die during interpreter shutdown
        # can abort the process ("terminate called without an active exception"; seen once at exit in CI).
        del trainer
        gc.collect()
        env.shutdown()

