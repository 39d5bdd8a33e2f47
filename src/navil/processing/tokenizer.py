"""Tokenizer loading for NaViL checkpoints, without remote code.

Two on-disk formats are supported:

* ``tokenizer.json`` (HuggingFace ``tokenizers``; Qwen3 and converted checkpoints), preferred when present;
* an InternLM2-style sentencepiece ``tokenizer.model`` plus the added tokens listed in
  ``tokenizer_config.json`` (``added_tokens_decoder``) and/or ``added_tokens.json``.

BOS/EOS handling follows ``tokenizer_config.json`` (``add_bos_token`` / ``add_eos_token``) when it says so
explicitly, otherwise whatever ``tokenizer.json``'s post-processor does. Special-token ids are always resolved
from the tokenizer, never hard-coded.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from navil.errors import CheckpointError, NavilError

# NaViL special tokens, in the official SPECIAL_TOKEN_LIST order: row i of `special_token_embedding.weight`
# belongs to NAVIL_SPECIAL_TOKENS[i].
BOX_END_TOKEN = "</box>"
BOX_START_TOKEN = "<box>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
IMG_END_TOKEN = "</img>"
IMG_START_TOKEN = "<img>"
QUAD_END_TOKEN = "</quad>"
QUAD_START_TOKEN = "<quad>"
REF_END_TOKEN = "</ref>"
REF_START_TOKEN = "<ref>"
IMG_UNCOND_TOKEN = "<img_uncond>"
IMG_LINE_BREAK_TOKEN = "<IMG_LINE_BREAK>"
IMG_FRAME_BREAK_TOKEN = "<IMG_FRAME_BREAK>"

NAVIL_SPECIAL_TOKENS: tuple[str, ...] = (
    BOX_END_TOKEN,
    BOX_START_TOKEN,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    QUAD_END_TOKEN,
    QUAD_START_TOKEN,
    REF_END_TOKEN,
    REF_START_TOKEN,
    IMG_UNCOND_TOKEN,
    IMG_LINE_BREAK_TOKEN,
    IMG_FRAME_BREAK_TOKEN,
)

IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"

# SpecialTokens field name -> token string (the first 12 in NAVIL_SPECIAL_TOKENS order).
_FIELD_TOKENS: dict[str, str] = {
    "box_end": BOX_END_TOKEN,
    "box_start": BOX_START_TOKEN,
    "img_context": IMG_CONTEXT_TOKEN,
    "img_end": IMG_END_TOKEN,
    "img_start": IMG_START_TOKEN,
    "quad_end": QUAD_END_TOKEN,
    "quad_start": QUAD_START_TOKEN,
    "ref_end": REF_END_TOKEN,
    "ref_start": REF_START_TOKEN,
    "img_uncond": IMG_UNCOND_TOKEN,
    "img_line_break": IMG_LINE_BREAK_TOKEN,
    "img_frame_break": IMG_FRAME_BREAK_TOKEN,
    "im_end": IM_END_TOKEN,
    "im_start": IM_START_TOKEN,
}


@dataclass(frozen=True)
class SpecialTokens:
    """Resolved ids of the 12 NaViL special tokens (official order) plus ``<|im_end|>``/``<|im_start|>``.

    A field is None when the tokenizer does not know the token.
    """

    box_end: int | None
    box_start: int | None
    img_context: int | None
    img_end: int | None
    img_start: int | None
    quad_end: int | None
    quad_start: int | None
    ref_end: int | None
    ref_start: int | None
    img_uncond: int | None
    img_line_break: int | None
    img_frame_break: int | None
    im_end: int | None
    im_start: int | None

    def missing_navil_tokens(self) -> list[str]:
        """The NaViL special tokens (strings) that did not resolve to an id."""
        names = list(_FIELD_TOKENS)[: len(NAVIL_SPECIAL_TOKENS)]
        return [_FIELD_TOKENS[n] for n in names if getattr(self, n) is None]

    @property
    def navil_token_ids(self) -> list[int]:
        """Ids of the 12 NaViL tokens in NAVIL_SPECIAL_TOKENS order (official ``special_token_id_list``)."""
        missing = self.missing_navil_tokens()
        if missing:
            raise NavilError(f"tokenizer lacks the NaViL special token(s) {missing}")
        names = list(_FIELD_TOKENS)[: len(NAVIL_SPECIAL_TOKENS)]
        return [int(getattr(self, n)) for n in names]

    def as_dict(self) -> dict[str, int | None]:
        """Token string -> id for all 14 tokens."""
        return {tok: getattr(self, name) for name, tok in _FIELD_TOKENS.items()}


# ------------------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------------------


@dataclass
class _AddedToken:
    """Minimal mirror of an added-token entry (transformers ``added_tokens_decoder`` format)."""

    content: str
    special: bool = True
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    single_word: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "lstrip": self.lstrip,
            "normalized": self.normalized,
            "rstrip": self.rstrip,
            "single_word": self.single_word,
            "special": self.special,
        }


class _TokenizersBackend:
    """``tokenizer.json`` through the ``tokenizers`` library."""

    kind = "tokenizers"

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.tok.id_to_token(idx)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def added_tokens(self) -> dict[int, _AddedToken]:
        out: dict[int, _AddedToken] = {}
        for idx, at in sorted(self.tok.get_added_tokens_decoder().items()):
            out[int(idx)] = _AddedToken(
                at.content,
                bool(at.special),
                bool(at.lstrip),
                bool(at.rstrip),
                bool(at.normalized),
                bool(at.single_word),
            )
        return out

    def add_tokens(self, tokens: Sequence[_AddedToken]) -> None:
        from tokenizers import AddedToken

        for t in tokens:
            at = AddedToken(
                t.content,
                single_word=t.single_word,
                lstrip=t.lstrip,
                rstrip=t.rstrip,
                normalized=t.normalized,
                special=t.special,
            )
            if t.special:
                self.tok.add_special_tokens([at])
            else:
                self.tok.add_tokens([at])

    def save(self, directory: Path) -> None:
        self.tok.save(str(directory / "tokenizer.json"), pretty=True)


class _SentencePieceBackend:
    """InternLM2-style slow tokenizer: sentencepiece model, added tokens split out first (as transformers)."""

    kind = "sentencepiece"

    def __init__(self, model_file: Path) -> None:
        try:
            import sentencepiece as spm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise NavilError(
                f"{model_file} is a sentencepiece tokenizer; reading it needs the 'sentencepiece' package "
                "(pip install sentencepiece, or navil[hf])"
            ) from exc
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.model_proto: bytes = self.sp.serialized_model_proto()
        self.added: dict[int, _AddedToken] = {}
        self._added_ids: dict[str, int] = {}  # content -> id of `added`
        self.extra_split: dict[str, int] = {}  # special tokens that are plain sp pieces (bos/eos/unk/pad)
        self._pattern: re.Pattern[str] | None = None

    # -- vocabulary ------------------------------------------------------------------------------------------
    def _piece_id(self, token: str) -> int | None:
        idx = self.sp.piece_to_id(token)
        if 0 <= idx < self.sp.get_piece_size() and self.sp.id_to_piece(idx) == token:
            return idx
        return None

    def token_to_id(self, token: str) -> int | None:
        idx = self._added_ids.get(token)
        return idx if idx is not None else self._piece_id(token)

    def id_to_token(self, idx: int) -> str | None:
        if idx in self.added:
            return self.added[idx].content
        if 0 <= idx < self.sp.get_piece_size():
            return self.sp.id_to_piece(idx)
        return None

    @property
    def vocab_size(self) -> int:
        return max([self.sp.get_piece_size(), *(i + 1 for i in self.added)])

    def added_tokens(self) -> dict[int, _AddedToken]:
        return dict(sorted(self.added.items()))

    def register(self, idx: int, token: _AddedToken) -> None:
        """Record an added token with a known id (from the checkpoint's config)."""
        old = self.added.get(idx)
        if old is not None:
            self._added_ids.pop(old.content, None)
        self.added[idx] = token
        self._added_ids[token.content] = idx
        self._pattern = None

    def add_tokens(self, tokens: Sequence[_AddedToken]) -> None:
        for t in tokens:
            idx = self.token_to_id(t.content)
            self.register(self.vocab_size if idx is None else idx, t)

    def mark_no_split(self, token: str | None) -> None:
        """Treat a special sp piece (e.g. ``<s>``) as unsplittable text, as transformers does."""
        if token and token not in self.extra_split:
            idx = self._piece_id(token)
            if idx is not None:
                self.extra_split[token] = idx
                self._pattern = None

    # -- encode / decode -------------------------------------------------------------------------------------
    def _split_table(self) -> dict[str, int]:
        table = dict(self.extra_split)
        table.update(self._added_ids)
        return table

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        del add_special_tokens  # BOS/EOS are handled by NavilTokenizer
        table = self._split_table()
        if self._pattern is None and table:
            alts = sorted(table, key=len, reverse=True)  # leftmost, then longest match
            self._pattern = re.compile("|".join(re.escape(t) for t in alts))
        if not table:
            return list(self.sp.encode(text)) if text else []
        # Split into [text, token, text, token, ..., text]; apply lstrip/rstrip like transformers' tokenize().
        pieces: list[str] = []
        pos = 0
        for m in self._pattern.finditer(text):
            pieces += [text[pos : m.start()], m.group(0)]
            pos = m.end()
        pieces.append(text[pos:])
        for i in range(1, len(pieces), 2):
            at = self.added.get(table[pieces[i]])
            if at is not None and at.rstrip:
                pieces[i + 1] = pieces[i + 1].lstrip()
            if at is not None and at.lstrip:
                pieces[i - 1] = pieces[i - 1].rstrip()
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.append(table[piece])
            elif piece:
                ids.extend(self.sp.encode(piece))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        special_pieces = set(self.extra_split.values())
        out: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                out.append(self.sp.decode(run))
                run.clear()

        for idx in ids:
            idx = int(idx)
            at = self.added.get(idx)
            if at is not None or idx in special_pieces:
                flush()
                is_special = at.special if at is not None else True
                if not (skip_special_tokens and is_special):
                    out.append(at.content if at is not None else self.sp.id_to_piece(idx))
            else:
                run.append(idx)
        flush()
        return "".join(out)

    def save(self, directory: Path) -> None:
        (directory / "tokenizer.model").write_bytes(self.model_proto)


# ------------------------------------------------------------------------------------------------------------
# NavilTokenizer
# ------------------------------------------------------------------------------------------------------------


def _token_str(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a string, an AddedToken dict, or null."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return str(value)


class NavilTokenizer:
    """A small tokenizer wrapper with the interface navil needs (encode/decode, special-token ids, saving)."""

    def __init__(self, backend: _TokenizersBackend | _SentencePieceBackend, config: dict[str, Any]) -> None:
        self._backend = backend
        self.config: dict[str, Any] = dict(config)
        self.bos_token: str | None = _token_str(config.get("bos_token"))
        self.eos_token: str | None = _token_str(config.get("eos_token"))
        self.pad_token: str | None = _token_str(config.get("pad_token"))
        self.unk_token: str | None = _token_str(config.get("unk_token"))
        # Whether the backend itself (tokenizer.json post-processor) already adds BOS / EOS.
        self._backend_bos, self._backend_eos = self._probe_backend_specials()
        self.add_bos_token: bool = bool(config.get("add_bos_token", self._backend_bos))
        self.add_eos_token: bool = bool(config.get("add_eos_token", self._backend_eos))
        self._special_cache: SpecialTokens | None = None

    # -- construction helpers --------------------------------------------------------------------------------
    def _probe_backend_specials(self) -> tuple[bool, bool]:
        with_sp = self._backend.encode("a", add_special_tokens=True)
        without = self._backend.encode("a", add_special_tokens=False)
        bos, eos = self.bos_token_id, self.eos_token_id
        adds_bos = bos is not None and with_sp[:1] == [bos] and without[:1] != [bos]
        adds_eos = eos is not None and with_sp[-1:] == [eos] and without[-1:] != [eos]
        return adds_bos, adds_eos

    # -- basic properties ------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``"tokenizers"`` (tokenizer.json) or ``"sentencepiece"`` (tokenizer.model)."""
        return self._backend.kind

    @property
    def vocab_size(self) -> int:
        """Number of ids including added tokens (max id + 1): what the embedding table must cover at least."""
        return self._backend.vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (added tokens included), or None if unknown."""
        return self._backend.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        """Token string of an id, or None if out of range."""
        return self._backend.id_to_token(int(idx))

    def _tid(self, token: str | None) -> int | None:
        return None if token is None else self.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._tid(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._tid(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._tid(self.pad_token)

    @property
    def special_token_ids(self) -> SpecialTokens:
        """The resolved NaViL special-token ids (see :class:`SpecialTokens`)."""
        if self._special_cache is None:
            self._special_cache = SpecialTokens(**{n: self.token_to_id(t) for n, t in _FIELD_TOKENS.items()})
        return self._special_cache

    def require_navil_tokens(self) -> SpecialTokens:
        """Return :attr:`special_token_ids`, raising NavilError naming any missing NaViL token."""
        ids = self.special_token_ids
        missing = ids.missing_navil_tokens()
        if missing:
            raise NavilError(
                f"tokenizer lacks the NaViL special token(s) {missing}; a NaViL checkpoint must define "
                f"all of {list(NAVIL_SPECIAL_TOKENS)} (use NavilTokenizer.add_special_tokens to add them "
                "to a plain LLM tokenizer)"
            )
        return ids

    # -- encode / decode -------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` adds BOS/EOS as the checkpoint configures."""
        ids = self._backend.encode(text, add_special_tokens=add_special_tokens)
        if not add_special_tokens:
            return ids
        bos, eos = self.bos_token_id, self.eos_token_id
        if self._backend_bos and not self.add_bos_token and ids[:1] == [bos]:
            ids = ids[1:]
        elif self.add_bos_token and not self._backend_bos and bos is not None:
            ids = [bos] + ids
        if self._backend_eos and not self.add_eos_token and ids[-1:] == [eos]:
            ids = ids[:-1]
        elif self.add_eos_token and not self._backend_eos and eos is not None:
            ids = ids + [eos]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; ``skip_special_tokens`` drops special (added/control) tokens."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # torch tensors / numpy arrays
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # -- modification / saving -------------------------------------------------------------------------------
    def add_special_tokens(self, tokens: Sequence[str]) -> int:
        """Register ``tokens`` as special, unsplittable tokens; return how many got a NEW id.

        Tokens already known (as added tokens or plain vocabulary pieces) keep their id. New ids are appended
        after the current vocabulary in the given order (so NAVIL_SPECIAL_TOKENS stay contiguous).
        """
        new = [t for t in dict.fromkeys(tokens) if self.token_to_id(t) is None]
        known_added = {at.content for at in self._backend.added_tokens().values()}
        to_add = [_AddedToken(t) for t in dict.fromkeys(tokens) if t not in known_added]
        self._backend.add_tokens(to_add)
        self._special_cache = None
        return len(new)

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer (``tokenizer.json``, or ``tokenizer.model`` for sentencepiece) and
        ``tokenizer_config.json`` into ``directory``; :func:`load_tokenizer` reads it back identically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._backend.save(directory)
        cfg = dict(self.config)
        if self.backend == "tokenizers":
            cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        for key, value in (
            ("bos_token", self.bos_token),
            ("eos_token", self.eos_token),
            ("pad_token", self.pad_token),
            ("unk_token", self.unk_token),
        ):
            if value is not None or key in cfg:
                cfg[key] = value
        cfg["add_bos_token"] = self.add_bos_token
        cfg["add_eos_token"] = self.add_eos_token
        cfg["added_tokens_decoder"] = {str(i): at.to_json() for i, at in self._backend.added_tokens().items()}
        with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=2)
        return directory

    def __repr__(self) -> str:
        return (
            f"NavilTokenizer(backend={self.backend!r}, vocab_size={self.vocab_size}, "
            f"bos={self.bos_token!r}, eos={self.eos_token!r}, add_bos_token={self.add_bos_token})"
        )


# ------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must contain a JSON object")
    return data


def _config_added_tokens(folder: Path, config: dict[str, Any]) -> dict[int, _AddedToken]:
    """Added tokens from ``tokenizer_config.json`` (``added_tokens_decoder``) and ``added_tokens.json``.

    Entries of ``added_tokens.json`` carry no flags; they are treated as special (unsplittable, skipped by
    ``decode(skip_special_tokens=True)``), which is what NaViL's image/grounding tokens are.
    """
    out: dict[int, _AddedToken] = {}
    extra = folder / "added_tokens.json"
    if extra.is_file():
        for content, idx in _read_json(extra).items():
            out[int(idx)] = _AddedToken(str(content))
    for idx, entry in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, str):
            entry = {"content": entry}
        fields = {f.name for f in dataclasses.fields(_AddedToken)}
        out[int(idx)] = _AddedToken(**{k: v for k, v in entry.items() if k in fields})
    return out


def load_tokenizer(path: str | Path, require_navil_tokens: bool = True) -> NavilTokenizer:
    """Load the tokenizer of a checkpoint folder (or a ``tokenizer.json`` file) without remote code.

    ``tokenizer.json`` is used when present, else ``tokenizer.model`` (sentencepiece) + added tokens from
    ``tokenizer_config.json`` / ``added_tokens.json``. With ``require_navil_tokens`` a NavilError names any of
    the 12 NaViL special tokens the tokenizer lacks.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder {folder} does not exist")
    config_file = folder / "tokenizer_config.json"
    config = _read_json(config_file) if config_file.is_file() else {}
    declared = _config_added_tokens(folder, config)

    tok_json = path if path.is_file() else folder / "tokenizer.json"
    sp_model = folder / "tokenizer.model"
    backend: _TokenizersBackend | _SentencePieceBackend
    if tok_json.is_file():
        try:
            backend = _TokenizersBackend(tok_json)
        except Exception as exc:  # tokenizers raises a plain Exception on bad files
            raise CheckpointError(f"cannot load {tok_json}: {exc}") from exc
        # Tokens declared only in tokenizer_config.json (transformers adds them on load): add, checking ids.
        for idx, at in sorted(declared.items()):
            have = backend.token_to_id(at.content)
            if have is None:
                backend.add_tokens([at])
                have = backend.token_to_id(at.content)
            if have != idx:
                raise CheckpointError(
                    f"{config_file.name} declares {at.content!r} with id {idx} "
                    f"but {tok_json.name} gives {have}"
                )
    elif sp_model.is_file():
        backend = _SentencePieceBackend(sp_model)
        config.setdefault(
            "bos_token", backend.sp.id_to_piece(backend.sp.bos_id()) if backend.sp.bos_id() >= 0 else None
        )
        config.setdefault(
            "eos_token", backend.sp.id_to_piece(backend.sp.eos_id()) if backend.sp.eos_id() >= 0 else None
        )
        config.setdefault(
            "unk_token", backend.sp.id_to_piece(backend.sp.unk_id()) if backend.sp.unk_id() >= 0 else None
        )
        config.setdefault("add_bos_token", True)  # InternLM2Tokenizer / LlamaTokenizer default
        for idx, at in sorted(declared.items()):
            backend.register(idx, at)
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            backend.mark_no_split(_token_str(config.get(key)))
    else:
        raise CheckpointError(f"{folder} has neither tokenizer.json nor tokenizer.model")

    tokenizer = NavilTokenizer(backend, config)
    if require_navil_tokens:
        tokenizer.require_navil_tokens()
    return tokenizer
