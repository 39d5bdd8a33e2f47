"""`TrainConfig`: the schema of a `navil train` YAML file, with `key=value` overrides and validation.

A run YAML is thin: it names a model source, the data, the stage and a few numbers. Every key is checked
against the dataclasses below; an unknown or mistyped key raises a ConfigError that names it (with a
"did you mean" hint). Overrides use dotted keys (`optim.lr=1e-3`, `max_steps=20`, `out=runs/x`), values are
parsed as YAML (`data.sources=[{path: a.jsonl}]`) and coerced to the field's type.

Free-form mappings (`model.llm`, `model.vision`, `model.overrides`, `optim.lr_mult`, `data.synthetic`) accept
any sub-key here; their contents are checked where they are used (LLMConfig/VisionConfig/NaViLConfig fields,
parameter categories, synthetic-export arguments), again naming the bad key.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from navil.errors import ConfigError

STAGES = ("stage1", "stage1.2", "stage2")
MODEL_INITS = ("scratch", "llm", "navil")
DTYPES = ("float32", "bfloat16")
DECAYS = ("cosine", "linear", "constant")
BUILTIN_BYTE_TOKENIZER = "builtin:bytes"


@dataclass
class ModelSection:
    """Where the model comes from.

    init: "scratch" (random LLM of `preset` + `llm` overrides, tokenizer `tokenizer`), "llm" (a pretrained HF
    LLM folder `llm_path`, the paper's recipe) or "navil" (continue from a navil/official checkpoint `path`,
    e.g. the `model/` folder of a stage-1 checkpoint).
    """

    init: str = "scratch"
    preset: str = "tiny"                 # scratch: LLM preset (tiny | navil-2b | navil-9b)
    llm: dict = field(default_factory=dict)        # scratch: LLMConfig field overrides
    llm_path: str | None = None          # init=llm
    path: str | None = None              # init=navil
    vision: Any = "tiny"                 # preset name, or {preset?: name, <VisionConfig fields>}
    tokenizer: str | None = None         # scratch: "builtin:bytes" or a folder; llm: default the LLM's own
    overrides: dict = field(default_factory=dict)  # NaViLConfig fields (template, min/max_dynamic_patch, ...)
    attention_experts: bool = True
    ffn_experts: bool = True
    copy_visual_experts: bool = True     # visual experts start as copies of their text twins


@dataclass
class DataSection:
    """Data sources and packing. `synthetic` generates a built-in synthetic set into `OUT/data` when missing
    (keys: n, seed, mode, questions_per_image, dir, and any other navil.data.synthetic.export_jsonl option)."""

    sources: list = field(default_factory=list)   # [{path, root?, weight?, kind?}]
    synthetic: dict | None = None
    max_tokens: int = 4096               # tokens per pack
    max_patches: int | None = 16384      # image patches per pack (null: no limit)
    multi_scale: bool = True
    template: str | None = None          # default: the model's config template
    system_message: str | None = None    # default: the template's
    seed: int | None = None              # default: the run seed


@dataclass
class BatchSection:
    """`global_packs` packs make one optimizer step, whatever the world size: each of W ranks processes
    global_packs / W of them (gradient accumulation), so W must divide global_packs."""

    global_packs: int = 1


@dataclass
class OptimSection:
    """AdamW. `lr_mult` scales the LR per parameter category (see navil.train.stages.CATEGORIES)."""

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float | None = 1.0        # max global grad norm (null/0: no clipping)
    lr_mult: dict = field(default_factory=dict)
    foreach: bool | None = None


@dataclass
class ScheduleSection:
    """Linear warm-up to `optim.lr`, then `decay` down to `min_lr_ratio * lr` at `max_steps`."""

    warmup_steps: int | None = None      # default: round(warmup_ratio * max_steps)
    warmup_ratio: float = 0.03
    decay: str = "cosine"
    min_lr_ratio: float = 0.1


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    batch: BatchSection = field(default_factory=BatchSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    stage: str = "stage2"
    trainable: list | None = None        # explicit category list (overrides the stage's)
    max_steps: int = 100
    save_every: int = 100                # also saved at the end; 0: only at the end
    keep_last: int = 3                   # complete checkpoints kept (0: all)
    log_every: int = 1
    seed: int = 0
    dtype: str = "float32"               # compute dtype: bfloat16 = autocast on CUDA only; CPU stays fp32
    device: str = "auto"                 # auto | cpu | cuda
    activation_checkpointing: bool = False
    compile: bool = False
    reshard_after_forward: bool = True
    peak_flops: float | None = None      # per device, for MFU; default: measured (fp32 matmul on CPU)
    threads: int | None = None           # torch intra-op threads (default: torch's choice)
    out: str = "runs/navil"
    tensorboard: bool = True
    progress: bool = True

    # ---- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, allow_unicode=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        cfg = _build(cls, raw, "")
        cfg.validate()
        return cfg

    # ---- derived -------------------------------------------------------------------------------------------
    @property
    def warmup_steps(self) -> int:
        if self.schedule.warmup_steps is not None:
            return self.schedule.warmup_steps
        return round(self.schedule.warmup_ratio * self.max_steps)

    def grad_accum(self, world_size: int) -> int:
        if self.batch.global_packs % world_size:
            raise ConfigError(f"config field 'batch.global_packs': {self.batch.global_packs} packs per step cannot "
                              f"be split over {world_size} processes (must be a multiple of the world size)")
        return self.batch.global_packs // world_size

    # ---- validation ----------------------------------------------------------------------------------------
    def validate(self) -> None:
        m = self.model
        _check(m.init in MODEL_INITS, "model.init", f"must be one of {MODEL_INITS}, got {m.init!r}")
        if m.init == "llm":
            _check(bool(m.llm_path), "model.llm_path", "is required with model.init=llm")
        if m.init == "navil":
            _check(bool(m.path), "model.path", "is required with model.init=navil")
        _check(isinstance(m.vision, (str, dict)), "model.vision",
               f"must be a preset name or a mapping of VisionConfig fields, got {m.vision!r}")
        _check(self.stage in STAGES, "stage", f"must be one of {STAGES}, got {self.stage!r}")
        if self.trainable is not None:
            from navil.train.stages import CATEGORIES

            for c in self.trainable:
                _check(c in CATEGORIES, "trainable", f"unknown parameter category {c!r}; known: {CATEGORIES}")
        d = self.data
        _check(bool(d.sources) or d.synthetic is not None, "data.sources",
               "no data: give data.sources (a list of {path, root, weight, kind}) or data.synthetic")
        if d.sources:
            from navil.data.loader import DataSource

            try:
                DataSource.parse(d.sources)
            except ConfigError as e:
                raise ConfigError(f"config field 'data.sources': {e}") from None
        _check(d.max_tokens > 0, "data.max_tokens", f"must be positive, got {d.max_tokens}")
        _check(d.max_patches is None or d.max_patches > 0, "data.max_patches",
               f"must be positive or null, got {d.max_patches}")
        _check(self.batch.global_packs > 0, "batch.global_packs", f"must be positive, got {self.batch.global_packs}")
        o = self.optim
        _check(o.lr > 0, "optim.lr", f"must be positive, got {o.lr}")
        _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        _check(len(o.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas),
               "optim.betas", f"must be two numbers in [0, 1), got {o.betas!r}")
        _check(o.eps > 0, "optim.eps", f"must be positive, got {o.eps}")
        _check(o.grad_clip is None or o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 or null, got {o.grad_clip}")
        for k, v in o.lr_mult.items():
            from navil.train.stages import CATEGORIES

            _check(k in CATEGORIES, f"optim.lr_mult.{k}", f"unknown parameter category; known: {CATEGORIES}")
            _check(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, f"optim.lr_mult.{k}",
                   f"must be a number >= 0, got {v!r}")
        s = self.schedule
        _check(s.decay in DECAYS, "schedule.decay", f"must be one of {DECAYS}, got {s.decay!r}")
        _check(s.warmup_steps is None or s.warmup_steps >= 0, "schedule.warmup_steps",
               f"must be >= 0, got {s.warmup_steps}")
        _check(0 <= s.warmup_ratio <= 1, "schedule.warmup_ratio", f"must be in [0, 1], got {s.warmup_ratio}")
        _check(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", f"must be in [0, 1], got {s.min_lr_ratio}")
        _check(self.max_steps > 0, "max_steps", f"must be positive, got {self.max_steps}")
        _check(self.save_every >= 0, "save_every", f"must be >= 0, got {self.save_every}")
        _check(self.keep_last >= 0, "keep_last", f"must be >= 0, got {self.keep_last}")
        _check(self.log_every > 0, "log_every", f"must be positive, got {self.log_every}")
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _check(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        _check(self.device in ("auto", "cpu", "cuda"), "device", f"must be auto, cpu or cuda, got {self.device!r}")
        _check(self.peak_flops is None or self.peak_flops > 0, "peak_flops", f"must be positive, got {self.peak_flops}")
        _check(self.threads is None or self.threads > 0, "threads", f"must be positive, got {self.threads}")
        _check(bool(self.out), "out", "must name an output folder")


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config field '{key}': {message}")


# ---- building dataclasses from nested dicts, with type checks ----------------------------------------------
_NUMBER_TYPES = (int, float)


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, coerced value) for `value` against a dataclass field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return isinstance(value, _NUMBER_TYPES), float(value) if isinstance(value, _NUMBER_TYPES) else value
    if tp is str:
        return isinstance(value, str), value
    if tp in (list, dict) or origin in (list, dict):
        base = origin or tp
        return isinstance(value, base), value
    return isinstance(value, tp), value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _unknown_key(prefix: str, key: str, known: list[str]) -> ConfigError:
    name = f"{prefix}{key}"
    hint = difflib.get_close_matches(key, known, n=1)
    extra = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
    return ConfigError(f"config field '{name}': unknown key{extra}; known keys here: {', '.join(known)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config field '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise _unknown_key(prefix, str(key), list(fields))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"config field '{prefix}{key}': expected {_type_name(tp)}, got {value!r}")
        kwargs[key] = coerced
    return cls(**kwargs)


# ---- overrides -----------------------------------------------------------------------------------------------
def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-3)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse the value: {e}") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested config dict (checking the path against the schema as it goes)."""
    for item in overrides:
        path, value = parse_override(item)
        node: dict = raw
        cls: Any = TrainConfig
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if cls is not None:
                fields = {f.name for f in dataclasses.fields(cls)}
                if part not in fields:
                    raise _unknown_key(".".join(path[:i]) + "." if i else "", part, sorted(fields))
                tp = typing.get_type_hints(cls)[part]
                next_cls = tp if dataclasses.is_dataclass(tp) else None
            else:
                next_cls = None
            if last:
                node[part] = value
                break
            if cls is not None and next_cls is None and not _allows_mapping(tp):
                raise ConfigError(f"config field '{'.'.join(path[:i + 1])}' is not a mapping; cannot set "
                                  f"'{'.'.join(path)}'")
            child = node.get(part)
            if not isinstance(child, dict):
                # a preset name becomes {preset: name} so `model.vision.hidden_size=..` refines it
                child = {} if child is None else {"preset": child} if isinstance(child, str) else child
                if not isinstance(child, dict):
                    raise ConfigError(f"config field '{'.'.join(path[:i + 1])}' is not a mapping; cannot set "
                                      f"'{'.'.join(path)}'")
                node[part] = child
            node, cls = child, next_cls
    return raw


def _allows_mapping(tp: Any) -> bool:
    if tp is Any or tp is dict or typing.get_origin(tp) is dict:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_allows_mapping(a) for a in typing.get_args(tp))
    return False


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a run YAML (or start from defaults with `path=None`), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{file} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file} must contain a mapping at the top level")
    raw = apply_overrides(raw, list(overrides or []))
    return TrainConfig.from_dict(raw)
