"""Webdataset tar shards read with the standard library (random access by member offset).

A sample is the group of members sharing a key (the member path up to the first ``.`` of its file name):
one image (``.jpg``/``.jpeg``/``.png``/``.webp``/...) and a caption in ``.txt`` or in ``.json`` (field
``caption``, ``text``, ``txt`` or ``description``). A ``.json`` holding ``conversations`` (LLaVA style) is
used as the conversation instead of a caption. Shards are indexed once (headers only); reading a sample is
one seek per member. Compressed shards work too (``tarfile`` decompresses), just without fast random access.
"""
from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from navil.errors import NavilError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_FIELDS = ("caption", "text", "txt", "description")


def expand_shards(spec: str | os.PathLike) -> list[Path]:
    """Shard paths of ``spec``: a tar file, a directory (its ``*.tar*`` files), a glob, or a brace range
    such as ``data/shard-{000..099}.tar`` (zero padding kept). Sorted; raises NavilError if none exist."""
    spec = str(spec)
    specs = _expand_braces(spec)
    out: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and ".tar" in q.name)
        elif any(c in s for c in "*?["):
            out += sorted(Path(q) for q in glob.glob(s))
        elif p.is_file():
            out.append(p)
        elif len(specs) == 1:
            raise NavilError(f"webdataset shard {s} does not exist")
    if not out:
        raise NavilError(f"no webdataset shards found for {spec!r}")
    return out


def _expand_braces(s: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", s)
    if not m:
        return [s]
    a, b = m.group(1), m.group(2)
    width = len(a) if a.startswith("0") else 0
    out = []
    for i in range(int(a), int(b) + 1):
        out += _expand_braces(s[: m.start()] + str(i).zfill(width) + s[m.end() :])
    return out


@dataclass(frozen=True)
class _Item:
    shard: int
    key: str
    members: tuple[tuple[str, int, int], ...]  # (extension, data offset, size)


class WebDatasetIndex:
    """Index of the samples in a set of tar shards; ``read(i)`` returns ``{"key", "image", "caption"|
    "conversations"}`` with the image as raw bytes (None if the sample has no image member)."""

    def __init__(self, spec: str | os.PathLike) -> None:
        self.shards = expand_shards(spec)
        self.items: list[_Item] = []
        self._files: dict[int, Any] = {}
        for si, shard in enumerate(self.shards):
            try:
                with tarfile.open(shard) as tf:
                    groups: dict[str, list[tuple[str, int, int]]] = {}
                    order: list[str] = []
                    for mem in tf:
                        if not mem.isfile():
                            continue
                        d, base = os.path.split(mem.name)
                        if base.startswith(".") or "." not in base:
                            continue
                        stem, ext = base.split(".", 1)
                        key = f"{d}/{stem}" if d else stem
                        if key not in groups:
                            groups[key] = []
                            order.append(key)
                        groups[key].append((ext.lower(), mem.offset_data, mem.size))
            except (OSError, tarfile.TarError) as e:
                raise NavilError(f"cannot read webdataset shard {shard}: {e}") from e
            self.items += [_Item(si, k, tuple(groups[k])) for k in order]
        self._compressed = {i: not str(s).endswith(".tar") for i, s in enumerate(self.shards)}

    def __len__(self) -> int:
        return len(self.items)

    def _read_member(self, shard: int, offset: int, size: int) -> bytes:
        if self._compressed[shard]:
            f = self._files.get(shard)
            if f is None:
                f = self._files[shard] = tarfile.open(self.shards[shard])  # noqa: SIM115
            raw = f.fileobj  # decompressing stream positioned like the raw tar
            raw.seek(offset)
            return raw.read(size)
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115
        f.seek(offset)
        return f.read(size)

    def read(self, i: int) -> dict[str, Any]:
        """Sample ``i``; raises :class:`navil.data.conversations.SampleError` for unusable members."""
        from navil.data.conversations import BAD_CONVERSATION, MALFORMED_JSON, MISSING_IMAGE, SampleError

        item = self.items[i]
        exts = {ext: (off, size) for ext, off, size in item.members}
        image = None
        for ext in IMAGE_EXTENSIONS:
            if ext in exts:
                image = self._read_member(item.shard, *exts[ext])
                break
        out: dict[str, Any] = {"key": item.key, "image": image}
        meta = None
        if "json" in exts:
            try:
                meta = json.loads(self._read_member(item.shard, *exts["json"]).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SampleError(MALFORMED_JSON, f"{self.shards[item.shard]}:{item.key}.json: {e}") from None
        if isinstance(meta, dict) and isinstance(meta.get("conversations"), list):
            out["conversations"] = meta["conversations"]
        elif "txt" in exts:
            try:
                out["caption"] = self._read_member(item.shard, *exts["txt"]).decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise SampleError(BAD_CONVERSATION, f"{item.key}.txt is not UTF-8: {e}") from None
        elif isinstance(meta, dict) and any(isinstance(meta.get(f), str) for f in CAPTION_FIELDS):
            out["caption"] = next(meta[f] for f in CAPTION_FIELDS if isinstance(meta.get(f), str)).strip()
        else:
            raise SampleError(BAD_CONVERSATION, f"{self.shards[item.shard]}:{item.key} has no caption")
        if image is None and "caption" in out:
            raise SampleError(MISSING_IMAGE, f"{self.shards[item.shard]}:{item.key} has no image member")
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
