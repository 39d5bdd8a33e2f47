"""Training checkpoints: atomic, complete, pickle-free, resumable bit for bit.

Layout of `OUT/checkpoints/step-XXXXXX/`::

    model/                    official-layout NaViL folder (config.json, *.safetensors, tokenizer files):
                              `navil.load_model` / `navil chat --model` read it directly
    optimizer.safetensors     AdamW state tensors, keys "state/<param fqn>/<exp_avg|exp_avg_sq|step>"
    optimizer.json            param-group structure (hyper-parameters + param fqns per group) and any
                              non-tensor state values
    rng/rank<R>.safetensors   torch CPU (and CUDA) generator states of rank R
    rng/rank<R>.json          python `random` and numpy global RNG states of rank R
    metrics.jsonl             OUT/metrics.jsonl as it was at this step (restored on resume)
    trainer_state.json        step, LR-schedule state, data-loader position, counters; written LAST

A checkpoint is written into `step-XXXXXX.tmp/` and renamed when complete, so a crash mid-write leaves the
previous checkpoint intact and the `.tmp` folder is ignored (and removed by the next successful save).
Under FSDP2 the full model and optimizer state dicts are gathered to CPU on rank 0
(`torch.distributed.checkpoint.state_dict` with `full_state_dict=True, cpu_offload=True`) and rank 0 writes
them; each rank writes its own RNG state.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from navil.errors import CheckpointError

STEP_RE = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"
FORMAT = "navil-train-checkpoint-v1"


# ---- finding checkpoints ------------------------------------------------------------------------------------
def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first (`*.tmp` folders and folders without
    trainer_state.json are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: str | Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(root: str | Path, keep_last: int) -> list[Path]:
    """Delete stale `*.tmp` folders and all but the newest `keep_last` complete checkpoints (0 keeps all)."""
    root = Path(root)
    removed = []
    for p in root.glob("step-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    if keep_last > 0:
        for _, p in list_checkpoints(root)[:-keep_last]:
            _discard(p)
            removed.append(p)
    return removed


def _discard(path: Path) -> None:
    """Remove a checkpoint folder: first renamed out of the `step-N` namespace (atomic), then deleted, so a
    crash half-way never leaves a half-deleted folder that looks complete."""
    doomed = path.with_name(path.name + ".old.tmp")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _test_crash(var: str, step: int) -> None:
    """Test hook: SIGKILL this process when env `var` equals the step (exercises crash safety)."""
    if os.environ.get(var) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1))


# ---- model -----------------------------------------------------------------------------------------------------
def write_model_folder(state_dict: dict[str, torch.Tensor], config: Any, tokenizer: Any, out: Path) -> None:
    """An official-layout folder from a full navil state dict (+ tokenizer files)."""
    from navil.checkpoint.io import save_pretrained
    from navil.model.navil import NaViL

    sd = dict(state_dict)
    emb, head = "language_model.embed.weight", "language_model.lm_head.weight"
    if config.llm.tie_word_embeddings and head not in sd:
        sd[head] = sd[emb]
    with torch.device("meta"):
        shell = NaViL(config)
    shell.load_state_dict(sd, strict=True, assign=True)
    if config.llm.tie_word_embeddings:
        shell.language_model.lm_head.weight = shell.language_model.embed.weight
    shell.name_or_path = None
    save_pretrained(shell, out)
    if tokenizer is not None:
        tokenizer.save(out)


def full_model_state(model: nn.Module, distributed: bool) -> dict[str, torch.Tensor]:
    """Full (unsharded) model state dict on CPU: on rank 0 under FSDP2 (other ranks get {})."""
    if not distributed:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_weights(model: nn.Module, model_dir: Path) -> None:
    """Copy the weights of an official-layout folder into an (unsharded) navil model, exactly."""
    from navil.checkpoint.io import read_tensors
    from navil.checkpoint.official import official_to_navil

    cfg = model.config
    sd = official_to_navil(read_tensors(model_dir), cfg.llm)
    if cfg.llm.tie_word_embeddings:
        sd.setdefault("language_model.lm_head.weight", sd.get("language_model.embed.weight"))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{model_dir}: weights do not match the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    with torch.no_grad():
        for k, t in expected.items():
            if t.shape != sd[k].shape:
                raise CheckpointError(f"{model_dir}: tensor '{k}' has shape {tuple(sd[k].shape)}, the model "
                                      f"expects {tuple(t.shape)}")
            t.copy_(sd[k])


# ---- optimizer ------------------------------------------------------------------------------------------------
def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"state": {fqn: {...}}, "param_groups": [{..., "params": [fqn, ...]}]} (full; on rank 0 under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_optimizer_files(osd: dict[str, Any], out: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for fqn, st in osd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state/{fqn}/{key}"] = val.detach().cpu().contiguous()
            else:
                values.setdefault(fqn, {})[key] = val
    groups = []
    for g in osd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    save_file(tensors, str(out / "optimizer.safetensors"), metadata={"format": FORMAT})
    _write_json(out / "optimizer.json", {"format": FORMAT, "param_groups": groups, "values": values})


def read_optimizer_files(ckpt: Path) -> dict[str, Any]:
    meta = json.loads((ckpt / "optimizer.json").read_text())
    state: dict[str, dict[str, Any]] = {}
    with safe_open(str(ckpt / "optimizer.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is no dict)
            _, rest = name.split("/", 1)
            fqn, key = rest.rsplit("/", 1)
            state.setdefault(fqn, {})[key] = f.get_tensor(name)
    for fqn, vals in meta.get("values", {}).items():
        state.setdefault(fqn, {}).update(vals)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, ckpt: Path) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    osd = read_optimizer_files(ckpt)
    have = [g.get("name") for g in optimizer.param_groups]
    saved = [g.get("name") for g in osd["param_groups"]]
    if have != saved:
        raise CheckpointError(f"{ckpt}: the optimizer's parameter groups {have} differ from the checkpoint's "
                              f"{saved} (did the stage or `trainable` change? To start a new stage from this "
                              f"checkpoint use model.init=navil model.path={ckpt / 'model'} without --resume)")
    model.zero_grad(set_to_none=True)  # the loader initialises missing state with a zero-LR step
    set_optimizer_state_dict(model, optimizer, osd, options=StateDictOptions(full_state_dict=True))
    for g in optimizer.param_groups:  # the state-dict API hands containers back as lists
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])


# ---- RNG ------------------------------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, st, gauss = meta["python"]
    random.setstate((v, tuple(st), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_rng(out: Path, rank: int) -> None:
    tensors, meta = rng_state()
    (out / "rng").mkdir(exist_ok=True)
    save_file(tensors, str(out / "rng" / f"rank{rank}.safetensors"))
    _write_json(out / "rng" / f"rank{rank}.json", meta)


def load_rng(ckpt: Path, rank: int) -> bool:
    """Restore this rank's RNG states; False when the checkpoint has none for this rank."""
    file = ckpt / "rng" / f"rank{rank}.safetensors"
    if not file.is_file():
        return False
    with safe_open(str(file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    set_rng_state(tensors, json.loads((ckpt / "rng" / f"rank{rank}.json").read_text()))
    return True


# ---- the whole checkpoint ---------------------------------------------------------------------------------------
def save_checkpoint(root: Path, step: int, *, model: nn.Module, optimizer: torch.optim.Optimizer, env: Any,
                    tokenizer: Any, trainer_state: dict[str, Any], metrics_file: Path | None,
                    keep_last: int) -> Path:
    """Write checkpoint `step` atomically (collective under FSDP2: every rank must call it)."""
    root = Path(root)
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    model_sd = full_model_state(model, env.is_distributed)
    optim_sd = full_optimizer_state(model, optimizer)
    if env.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    env.barrier()
    save_rng(tmp, env.rank)
    if env.is_main:
        write_model_folder(model_sd, model.config, tokenizer, tmp / "model")
        del model_sd
        save_optimizer_files(optim_sd, tmp)
        del optim_sd
        if metrics_file is not None and metrics_file.is_file():
            shutil.copyfile(metrics_file, tmp / "metrics.jsonl")
    env.barrier()
    if env.is_main:
        _test_crash("NAVIL_TEST_CRASH_IN_SAVE", step)
        _write_json(tmp / STATE_FILE, {"format": FORMAT, **trainer_state})  # the completeness marker
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(root, keep_last)
    env.barrier()
    return final


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    file = Path(ckpt) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{ckpt} is not a complete training checkpoint (no {STATE_FILE})")
    state = json.loads(file.read_text())
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{file}: unknown checkpoint format {state.get('format')!r}")
    return state
