"""``PackedLoader``: an infinite, seeded, resumable stream of ``Pack``s from weighted data sources.

The global stream
    Draw ``n`` picks a source with probability proportional to its weight (a counter-based hash of
    ``(seed, n)``, so the mixing RNG state is just ``n``). Each source walks its own permutation of its items,
    reshuffled every time it is exhausted (epoch ``e`` of source ``i`` uses ``default_rng([seed + e, i])``).
    Bad samples are skipped and counted; good ones are packed greedily in stream order (see
    :mod:`navil.data.packing`). Global pack ``g`` goes to rank ``g % world_size``: every rank walks the same
    global stream (tokenizing and decoding every sample, so skips agree) but only builds pixel values for its
    own packs. One process with W-step gradient accumulation therefore sees exactly the packs of W ranks.

State
    After each pack a rank returns, it advances to the end of that group of ``world_size`` packs, so all ranks
    have the same :meth:`PackedLoader.state_dict` after the same number of steps (saving rank 0's is enough),
    and a state saved with one world size resumes with another. The state is the stream position before the
    next unconsumed sample (the one that did not fit in the last pack is re-read on resume).
"""
from __future__ import annotations

import bisect
import copy
import io
import json
import logging
import os
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from navil.data.conversations import (
    BAD_CONVERSATION,
    BAD_IMAGE,
    MALFORMED_JSON,
    MISSING_IMAGE,
    NO_ANSWER_TOKENS,
    TOO_MANY_PATCHES,
    TOO_MANY_TOKENS,
    Conversation,
    SampleError,
    image_grids,
    parse_conversations,
    tokenize_conversation,
)
from navil.data.packing import Pack, PackBuilder, PackedSample, collate
from navil.data.webdataset import WebDatasetIndex
from navil.errors import ConfigError, ImageError, NavilError
from navil.processing.chat import IMAGE_PLACEHOLDER

logger = logging.getLogger("navil.data")

DEFAULT_CAPTION_PROMPT = "Describe the image."
STATE_VERSION = 1
_MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------------------------------------------------
# Source descriptions
# ------------------------------------------------------------------------------------------------------------


@dataclass
class DataSource:
    """One data source of a training mixture (what a training YAML lists under ``data``).

    ``kind`` is ``"jsonl"`` (a conversation file; ``root`` = folder image paths are relative to, default the
    file's folder) or ``"webdataset"`` (a tar, a folder of tars, a glob or ``shard-{000..009}.tar``; captions
    become ``<image>\\n{prompt}`` -> caption). Inferred from ``path`` when omitted. ``weight`` > 0 is the
    relative probability of drawing the next sample from this source.
    """

    path: str
    root: str | None = None
    weight: float = 1.0
    kind: str | None = None
    prompt: str = DEFAULT_CAPTION_PROMPT

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if self.root is not None:
            self.root = str(self.root)
        if self.kind is None:
            self.kind = "jsonl" if self.path.endswith((".jsonl", ".json")) else "webdataset"
        if self.kind not in ("jsonl", "webdataset"):
            raise ConfigError(f"data source kind must be 'jsonl' or 'webdataset', got {self.kind!r}")
        try:
            self.weight = float(self.weight)
        except (TypeError, ValueError):
            raise ConfigError(f"data source weight must be a number, got {self.weight!r}") from None
        if not (self.weight > 0 and np.isfinite(self.weight)):
            raise ConfigError(f"data source weight must be > 0, got {self.weight} for {self.path}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSource:
        """Parse ``{"path", "root"?, "weight"?, "kind"?, "prompt"?}``; unknown keys are a ConfigError."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"a data source must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown data source key(s) {unknown}; known: {sorted(known)}")
        if "path" not in d:
            raise ConfigError(f"data source {dict(d)} has no 'path'")
        return cls(**dict(d))

    @classmethod
    def parse(cls, spec: Any) -> list[DataSource]:
        """A list of sources from a DataSource, dict, path string, or a list of those."""
        items = spec if isinstance(spec, (list, tuple)) else [spec]
        out = []
        for s in items:
            if isinstance(s, DataSource):
                out.append(s)
            elif isinstance(s, Mapping):
                out.append(cls.from_dict(s))
            elif isinstance(s, (str, os.PathLike)):
                out.append(cls(path=str(s)))
            else:
                raise ConfigError(f"cannot read a data source from {s!r}")
        if not out:
            raise ConfigError("no data sources given")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------------------


class JsonlReader:
    """Random access to the non-blank lines of a JSONL file (line offsets indexed once)."""

    def __init__(self, source: DataSource) -> None:
        self.path = Path(source.path)
        self.root = Path(source.root) if source.root is not None else self.path.parent
        if not self.path.is_file():
            raise NavilError(f"data file {self.path} does not exist")
        self.offsets, self.lengths = array("q"), array("q")
        pos = 0
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip():
                    self.offsets.append(pos)
                    self.lengths.append(len(line))
                pos += len(line)
        self._f = None

    def __len__(self) -> int:
        return len(self.offsets)

    def load(self, i: int) -> Conversation:
        if self._f is None:
            self._f = open(self.path, "rb")  # noqa: SIM115 - kept open for random access
        self._f.seek(self.offsets[i])
        raw = self._f.read(self.lengths[i])
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SampleError(MALFORMED_JSON, f"line is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise SampleError(MALFORMED_JSON, f"line is a JSON {type(obj).__name__}, not an object")
        image = obj.get("image")
        if image is None or image == "" or image == []:
            refs: list[str] = []
        elif isinstance(image, str):
            refs = [image]
        elif isinstance(image, list) and all(isinstance(x, str) and x for x in image):
            refs = list(image)
        else:
            raise SampleError(BAD_CONVERSATION, f"'image' must be a path or a list of paths, got {image!r}")
        refs = [str(self.root / r) for r in refs]  # absolute paths stay absolute
        return parse_conversations(obj.get("conversations"), refs)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class WebDatasetReader:
    """Webdataset shards as caption conversations ``<image>\\n{prompt}`` -> caption."""

    def __init__(self, source: DataSource) -> None:
        self.index = WebDatasetIndex(source.path)
        self.prompt = source.prompt

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> Conversation:
        rec = self.index.read(i)
        images = [rec["image"]] if rec["image"] is not None else []
        if "conversations" in rec:
            return parse_conversations(rec["conversations"], images)
        if not rec["caption"]:
            raise SampleError(BAD_CONVERSATION, f"{rec['key']} has an empty caption")
        question = IMAGE_PLACEHOLDER + "\n" + self.prompt
        return parse_conversations(
            [{"from": "human", "value": question}, {"from": "gpt", "value": rec["caption"]}], images
        )

    def close(self) -> None:
        self.index.close()


def _open_reader(source: DataSource) -> JsonlReader | WebDatasetReader:
    reader = JsonlReader(source) if source.kind == "jsonl" else WebDatasetReader(source)
    if len(reader) == 0:
        raise NavilError(f"data source {source.path} has no samples")
    return reader


def _decode_image(ref: Any, max_image_pixels: int) -> Any:
    """Decode one image reference (path or bytes) to RGB; SampleError on a missing/undecodable image."""
    from PIL import Image

    from navil.processing.image import load_image

    if isinstance(ref, (bytes, bytearray)):
        try:
            img = Image.open(io.BytesIO(ref))
        except Exception as e:  # noqa: BLE001 - UnidentifiedImageError, DecompressionBombError, OSError, ...
            raise SampleError(BAD_IMAGE, f"cannot open embedded image: {e}") from None
        try:
            return load_image(img, max_image_pixels)
        except ImageError as e:
            raise SampleError(BAD_IMAGE, str(e)) from None
    if isinstance(ref, (str, os.PathLike)) and not os.path.isfile(ref):
        raise SampleError(MISSING_IMAGE, f"image file not found: {ref}")
    try:
        return load_image(ref, max_image_pixels)
    except ImageError as e:
        raise SampleError(BAD_IMAGE, str(e)) from None


# ------------------------------------------------------------------------------------------------------------
# Loader
# ------------------------------------------------------------------------------------------------------------


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@dataclass
class _SourceState:
    epoch: int = 0
    cursor: int = 0  # items of the current epoch's permutation consumed
    good: int = 0  # usable samples in the current epoch
    epoch_skips: Counter | None = None  # skips in the current epoch, by reason
    skips: Counter | None = None  # all skips, by reason

    def __post_init__(self) -> None:
        self.epoch_skips = Counter(self.epoch_skips or {})
        self.skips = Counter(self.skips or {})


class PackedLoader:
    """Infinite iterator of :class:`~navil.data.packing.Pack` (see module docstring).

    ``sources``: DataSource objects, dicts or paths. ``tokenizer``: a NavilTokenizer. ``processor``: an
    ImageProcessor (may be None for text-only data). ``template``: chat template name (config ``template``).
    ``max_tokens`` / ``max_patches``: per-pack limits (``max_patches=None``: no patch limit); a sample over
    either limit on its own is skipped. ``multi_scale``: multi-scale images (per training stage).
    ``system_message``: overrides the template's default (a sample's own ``system`` turn wins).
    """

    def __init__(
        self,
        sources: Any,
        tokenizer: Any,
        processor: Any,
        template: str,
        max_tokens: int,
        max_patches: int | None,
        seed: int = 0,
        multi_scale: bool = True,
        system_message: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        max_logged_skips: int = 10,
    ) -> None:
        from navil.processing.chat import get_template

        get_template(template)  # validate the name early
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if max_patches is not None and (not isinstance(max_patches, int) or max_patches < 1):
            raise ConfigError(f"max_patches must be a positive int or None, got {max_patches!r}")
        if not (isinstance(world_size, int) and isinstance(rank, int) and 0 <= rank < world_size):
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
        self.sources = DataSource.parse(sources)
        self.tokenizer = tokenizer
        self.processor = processor
        self.template = template
        self.max_tokens = max_tokens
        self.max_patches = max_patches
        self.seed = seed
        self.multi_scale = bool(multi_scale)
        self.system_message = system_message
        self.rank = rank
        self.world_size = world_size
        self.shuffle = bool(shuffle)
        self.max_logged_skips = max_logged_skips
        self._logged_skips = 0
        self._img_context_id = tokenizer.special_token_ids.img_context
        self._merge_size = processor.merge_size if processor is not None else 2
        self._readers = [_open_reader(s) for s in self.sources]
        self._sizes = [len(r) for r in self._readers]
        w = np.array([s.weight for s in self.sources], dtype=np.float64)
        self._cum_weights = list(np.cumsum(w / w.sum()))
        self._seed_hash = _splitmix64(seed)
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        # stream position
        self._packs = 0
        self._draws = 0
        self._samples = 0
        self._src = [_SourceState() for _ in self.sources]
        self._pending: tuple[dict[str, Any], PackedSample] | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, sources: Any, **kwargs: Any) -> PackedLoader:
        """Tokenizer, image processor and template read from a checkpoint folder."""
        from navil.processing.image import ImageProcessor
        from navil.processing.tokenizer import load_tokenizer

        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        kwargs.setdefault("template", cfg.get("template", "internlm2-chat"))
        return cls(sources, load_tokenizer(path), ImageProcessor.from_pretrained(path), **kwargs)

    # -- iteration ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Pack]:
        return self

    def __next__(self) -> Pack:
        w = self.world_size
        while self._packs % w != self.rank:
            self._next_group_member()
        samples = self._next_samples()
        self._packs += 1
        pack = collate(samples, self.processor, self.multi_scale)
        while self._packs % w != 0:  # finish the group so every rank's state is the same after a step
            self._next_group_member()
        return pack

    def _next_group_member(self) -> None:
        self._next_samples()  # another rank's pack: sized and validated, no pixels built
        self._packs += 1

    def _next_samples(self) -> list[PackedSample]:
        builder = PackBuilder(self.max_tokens, self.max_patches)
        while True:
            if self._pending is None:
                pos = self._position()
                self._pending = (pos, self._next_good_sample())
            sample = self._pending[1]
            if builder.samples and not builder.fits(sample):
                return builder.take()
            builder.add(sample)
            self._pending = None

    # -- the sample stream --------------------------------------------------------------------------------
    def _pick_source(self, n: int) -> int:
        if len(self.sources) == 1:
            return 0
        u = (_splitmix64(self._seed_hash ^ n) >> 11) * 2.0**-53
        return min(bisect.bisect_right(self._cum_weights, u), len(self.sources) - 1)

    def _permutation(self, src: int, epoch: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        key = (src, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != src}
            perm = np.random.default_rng([self.seed + epoch, src]).permutation(self._sizes[src])
            self._perm_cache[key] = perm
        return perm

    def _next_good_sample(self) -> PackedSample:
        while True:
            src = self._pick_source(self._draws)
            self._draws += 1
            st = self._src[src]
            perm = self._permutation(src, st.epoch)
            item = int(perm[st.cursor]) if perm is not None else st.cursor
            st.cursor += 1
            sample = None
            try:
                sample = self._prepare(src, item)
                st.good += 1
            except SampleError as e:
                self._record_skip(src, item, e)
            if st.cursor >= self._sizes[src]:
                self._end_epoch(src)
            if sample is not None:
                self._samples += 1
                return sample

    def _end_epoch(self, src: int) -> None:
        st = self._src[src]
        if st.good == 0:
            reasons = ", ".join(f"{r}: {n}" for r, n in st.epoch_skips.most_common())
            raise NavilError(
                f"no usable samples in {self.sources[src].path}: {sum(st.epoch_skips.values())} skipped "
                f"({reasons}) in a full pass (max_tokens={self.max_tokens}, max_patches={self.max_patches}); "
                "see the 'navil.data' log for the first messages"
            )
        st.epoch += 1
        st.cursor = 0
        st.good = 0
        st.epoch_skips = Counter()

    def _record_skip(self, src: int, item: int, err: SampleError) -> None:
        st = self._src[src]
        st.skips[err.reason] += 1
        st.epoch_skips[err.reason] += 1
        if self._logged_skips < self.max_logged_skips:
            self._logged_skips += 1
            logger.warning("skipping sample %d of %s (%s): %s", item, self.sources[src].path, err.reason, err)
            if self._logged_skips == self.max_logged_skips:
                logger.warning("further skipped samples are counted but not logged")

    def _prepare(self, src: int, item: int) -> PackedSample:
        """Read, validate and tokenize one sample (images decoded, grids predicted, no pixels built)."""
        conv = self._readers[src].load(item)
        images, grids = [], []
        if conv.images:
            if self.processor is None:
                raise NavilError(f"{self.sources[src].path} has images but the loader has no image processor")
            for ref in conv.images:
                img = _decode_image(ref, self.processor.max_image_pixels)
                try:
                    g = image_grids(self.processor, img.width, img.height, self.multi_scale)
                except ImageError as e:
                    raise SampleError(BAD_IMAGE, str(e)) from None
                images.append(img)
                grids.append(g)
        n_patches = sum(t * h * w for g in grids for t, h, w in g)
        if self.max_patches is not None and n_patches > self.max_patches:
            raise SampleError(TOO_MANY_PATCHES, f"{n_patches} image patches > max_patches={self.max_patches}")
        system = conv.system_message if conv.system_message is not None else self.system_message
        tok = tokenize_conversation(
            self.tokenizer, self.template, conv.turns, grids, system, self._merge_size, self._img_context_id
        )
        if len(tok.input_ids) > self.max_tokens:
            raise SampleError(TOO_MANY_TOKENS, f"{len(tok.input_ids)} tokens > max_tokens={self.max_tokens}")
        if tok.num_loss_tokens == 0:
            raise SampleError(NO_ANSWER_TOKENS, "the sample has no answer tokens to learn from")
        return PackedSample(tok.input_ids, tok.labels, tok.num_loss_tokens, images, grids, src, item)

    # -- state ----------------------------------------------------------------------------------------------
    def _position(self) -> dict[str, Any]:
        return {
            "draws": self._draws,
            "samples": self._samples,
            "sources": [
                {
                    "epoch": st.epoch,
                    "cursor": st.cursor,
                    "good": st.good,
                    "epoch_skips": dict(st.epoch_skips),
                    "skips": dict(st.skips),
                }
                for st in self._src
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        """A small JSON-able position: resuming from it gives exactly the packs an uninterrupted run gives.

        ``{"version", "seed", "packs" (global packs done), "draws" (mixing-RNG counter), "samples" (usable
        samples consumed), "epoch" (min over sources), "skipped_samples", "skip_reasons", "sources": [{"path",
        "size", "epoch", "cursor", "good", "epoch_skips", "skips"}]}`` — the position before the next
        unconsumed sample. Identical on all ranks after the same number of steps.
        """
        pos = copy.deepcopy(self._pending[0] if self._pending is not None else self._position())
        skips = Counter()
        for s in pos["sources"]:
            skips.update(s["skips"])
        for s, src, size in zip(pos["sources"], self.sources, self._sizes):
            s["path"] = src.path
            s["size"] = size
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "packs": self._packs,
            "draws": pos["draws"],
            "samples": pos["samples"],
            "epoch": min(s["epoch"] for s in pos["sources"]),
            "skipped_samples": sum(skips.values()),
            "skip_reasons": dict(skips),
            "sources": pos["sources"],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (of any rank, any world size, same sources/seed/limits)."""
        if state.get("version") != STATE_VERSION:
            raise NavilError(f"unsupported data-loader state version {state.get('version')!r}")
        if state.get("seed") != self.seed:
            raise NavilError(
                f"data-loader state was saved with seed {state.get('seed')}, this loader has {self.seed}"
            )
        srcs = state.get("sources") or []
        if len(srcs) != len(self.sources):
            raise NavilError(
                f"data-loader state has {len(srcs)} sources, this loader has {len(self.sources)}"
            )
        for s, size, src in zip(srcs, self._sizes, self.sources):
            if s.get("size") != size:
                raise NavilError(
                    f"data source {src.path} has {size} samples but the saved state expects {s.get('size')}; "
                    "the data changed, so the position cannot be restored exactly"
                )
            if s.get("path") != src.path:
                logger.warning("data source path changed on resume: %s -> %s", s.get("path"), src.path)
        self._packs = int(state["packs"])
        self._draws = int(state["draws"])
        self._samples = int(state.get("samples", 0))
        self._src = [
            _SourceState(
                int(s["epoch"]), int(s["cursor"]), int(s["good"]), s.get("epoch_skips"), s.get("skips")
            )
            for s in srcs
        ]
        self._pending = None

    # -- counters -------------------------------------------------------------------------------------------
    @property
    def skip_reasons(self) -> Counter:
        """Skipped samples by reason, over the global stream read so far (lookahead included)."""
        out: Counter = Counter()
        for st in self._src:
            out.update(st.skips)
        return out

    @property
    def skipped_samples(self) -> int:
        return sum(self.skip_reasons.values())

    @property
    def epoch(self) -> int:
        """Completed passes over every source (min over sources)."""
        return min(st.epoch for st in self._src)

    @property
    def num_items(self) -> list[int]:
        """Number of raw items (lines / tar keys) in each source."""
        return list(self._sizes)

    def close(self) -> None:
        for r in self._readers:
            r.close()

    def __repr__(self) -> str:
        srcs = ", ".join(f"{s.path} (w={s.weight:g}, n={n})" for s, n in zip(self.sources, self._sizes))
        return (
            f"PackedLoader([{srcs}], max_tokens={self.max_tokens}, max_patches={self.max_patches}, "
            f"seed={self.seed}, rank={self.rank}/{self.world_size})"
        )
