"""A tokenizer navil can build by itself: byte-level, 273 ids, every NaViL and chat token.

Used by from-scratch runs that need no external files (`model.tokenizer: builtin:bytes`, e.g.
configs/tiny-smoke.yaml). It is the toy tokenizer of the official-tiny reference fixtures:
0 <pad>, 1 <s>, 2 </s>, 3..258 the UTF-8 bytes (byte b -> id 3 + b), 259..270 the 12 NaViL special tokens in
the official order, 271 <|im_start|>, 272 <|im_end|>. No merges, so every character costs its UTF-8 length.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from navil.processing.tokenizer import IM_END_TOKEN, IM_START_TOKEN, NAVIL_SPECIAL_TOKENS

BYTE_OFFSET = 3
SPECIALS_BEFORE = ("<pad>", "<s>", "</s>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table (what `tokenizers`' ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _added(idx: int, content: str) -> dict[str, Any]:
    return {"id": idx, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def byte_tokenizer_json() -> dict[str, Any]:
    """The `tokenizer.json` document (HuggingFace `tokenizers` format)."""
    table = _bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIALS_BEFORE)}
    vocab.update({table[b]: BYTE_OFFSET + b for b in range(256)})
    tail = list(NAVIL_SPECIAL_TOKENS) + [IM_START_TOKEN, IM_END_TOKEN]
    added = [_added(i, t) for i, t in enumerate(SPECIALS_BEFORE)]
    added += [_added(BYTE_OFFSET + 256 + i, t) for i, t in enumerate(tail)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def write_byte_tokenizer(out_dir: str | Path) -> Path:
    """Write tokenizer.json + tokenizer_config.json into `out_dir` (load it with navil.load_tokenizer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(byte_tokenizer_json(), ensure_ascii=False, indent=2))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
           "pad_token": "<pad>", "add_bos_token": False, "model_max_length": 4096}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return out
