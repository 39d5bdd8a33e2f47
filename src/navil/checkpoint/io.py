"""Reading and writing checkpoint folders (config.json + safetensors, optionally sharded). No pickle."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from navil.checkpoint.official import navil_to_official, official_to_navil
from navil.config import NaViLConfig
from navil.errors import CheckpointError
from navil.model.navil import NaViL

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "added_tokens.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt")
INDEX_FILE = "model.safetensors.index.json"


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder: the shards named by the index, or model.safetensors."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from e
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard files named in {INDEX_FILE} are missing: {missing}")
        return [folder / n for n in names]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(folder.glob("*.safetensors"))
    if others:
        return others
    raise CheckpointError(f"{folder}: no model.safetensors, {INDEX_FILE} or *.safetensors found")


def read_tensors(folder: str | Path, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a folder's safetensors files (cast to `dtype` if given)."""
    out: dict[str, torch.Tensor] = {}
    for file in safetensors_files(Path(folder)):
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    t = f.get_tensor(key)
                    out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        except (OSError, RuntimeError, ValueError) as e:  # truncated or corrupt file
            raise CheckpointError(f"cannot read {file}: {e}") from e
    return out


def load_state_checked(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with errors that name the key and both shapes; assigns the given tensors."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{source}: tensors do not match the config: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")
    for key, ref in expected.items():
        if tuple(sd[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: tensor '{key}' has shape {tuple(sd[key].shape)} but the config "
                                  f"expects {tuple(ref.shape)}")
    model.load_state_dict(sd, strict=True, assign=True)


def build_empty(config: NaViLConfig, dtype: torch.dtype, device: str | torch.device) -> NaViL:
    """A model with uninitialised storage (no wasted random init before loading weights)."""
    with torch.device("meta"):
        model = NaViL(config)
    return model.to_empty(device=device).to(dtype)


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> NaViL:
    """Load an official NaViL checkpoint folder (or one navil wrote) into a navil model in eval mode."""
    from navil.processing.tokenizer import load_tokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    config = NaViLConfig.from_pretrained(folder)
    specials = load_tokenizer(folder).special_token_ids
    config.special_token_ids = specials.navil_token_ids
    config.validate()
    model = build_empty(config, dtype, device)
    sd = official_to_navil(read_tensors(folder, dtype, device), config.llm)
    if config.llm.tie_word_embeddings:
        sd.setdefault("language_model.lm_head.weight", sd.get("language_model.embed.weight"))
    load_state_checked(model, sd, str(folder))
    if config.llm.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.embed.weight
    model.name_or_path = str(folder)
    model.end_of_turn_token_id = specials.im_end
    return model.eval()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_pretrained(model: NaViL, out_dir: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write config.json and weights in the official layout; copy tokenizer files from the source folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = navil_to_official({k: v.detach().contiguous() for k, v in model.state_dict().items()}, model.config.llm)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(sd):
        nbytes = sd[key].numel() * sd[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = sd[key].cpu()
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        tmp = out / "model.safetensors.tmp"
        save_file(shards[0], str(tmp), metadata=meta)
        os.replace(tmp, out / "model.safetensors")
        (out / INDEX_FILE).unlink(missing_ok=True)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / (name + ".tmp")), metadata=meta)
            os.replace(out / (name + ".tmp"), out / name)
            weight_map.update({k: name for k in shard})
        total = sum(t.numel() * t.element_size() for t in sd.values())
        _atomic_write_text(out / INDEX_FILE, json.dumps({"metadata": {"total_size": total},
                                                         "weight_map": weight_map}, indent=2))
        (out / "model.safetensors").unlink(missing_ok=True)
    _atomic_write_text(out / "config.json", json.dumps(model.config.to_official_dict(), indent=2))
    src = Path(model.name_or_path) if model.name_or_path else None
    if model.tokenizer is not None:
        model.tokenizer.save(out)
    elif src is not None and src.resolve() != out.resolve():
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
