"""Read and validate VLMEvalKit-style benchmark TSV files.

Columns (all optional except ``index``): ``index``, ``image`` (base64, a list
literal of base64 strings, or -- MMBench/MME -- the *index of another row*
whose image is shared), ``image_path``, ``question``, ``answer``, option
columns ``A``..``Z``, ``hint``, ``category``, ``l2-category``, ``split`` and any
benchmark-specific extras (kept as strings).

Parsing follows what VLMEvalKit gets from ``pandas.read_csv(sep='\\t')`` plus
``ImageBaseDataset.__init__``:

* the cells pandas treats as missing by default (``''``, ``NA``, ``N/A``,
  ``NaN``, ``nan``, ``None``, ``null``, ...) are missing here too -- so an
  option whose text is literally ``None`` disappears, as in VLMEvalKit
  (pass ``na_values={''}`` to keep such cells);
* ``index`` becomes an ``int`` when it is an integer, else stays a string;
* option columns with a missing cell are dropped from the row;
* an ``image`` cell of at most 64 characters is a reference to another row's
  index and is replaced by that row's image (``image_ref`` keeps the index);
* rows without any image are skipped by VLMEvalKit (``skip_noimg``); here they
  are reported as malformed with that reason.

Unlike pandas, values are never converted to numbers (``"1.50"`` stays
``"1.50"``; pandas would turn an all-numeric column into floats).

Malformed rows do not stop the reader: they are returned separately, each with
its index (when readable), file line and reason.
"""
from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import re
import string
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PANDAS_NA_VALUES",
    "MalformedRow",
    "TsvData",
    "decode_image",
    "is_option_column",
    "read_tsv",
    "row_images",
    "row_options",
]

PANDAS_NA_VALUES = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
_IMAGE_REF_MAX_LEN = 64
_INT_RE = re.compile(r"[+-]?\d+")


def is_option_column(name: str) -> bool:
    """Option columns are single capital letters (VLMEvalKit iterates ``string.ascii_uppercase``)."""
    return len(name) == 1 and name in string.ascii_uppercase


@dataclass
class MalformedRow:
    """A row the reader refused: ``index`` (None if unreadable), 1-based file ``line``, ``reason``."""

    index: object
    line: int
    reason: str
    row: dict | None = None

    def as_dict(self) -> dict:
        return {"index": self.index, "line": self.line, "reason": self.reason}


@dataclass
class TsvData:
    """Valid rows (dicts, in file order), malformed rows and the header."""

    path: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)
    malformed: list[MalformedRow] = field(default_factory=list)

    @property
    def has_answers(self) -> bool:
        return "answer" in self.columns

    @property
    def option_columns(self) -> list[str]:
        return [c for c in self.columns if is_option_column(c)]

    def by_index(self) -> dict:
        return {r["index"]: r for r in self.rows}

    def __len__(self) -> int:
        return len(self.rows)


def row_options(row: dict) -> dict[str, str]:
    """``{letter: text}`` for the options present in ``row``, in letter order."""
    return {c: row[c] for c in string.ascii_uppercase if row.get(c) is not None}


def row_images(row: dict) -> list[bytes]:
    """Decoded image bytes of a row (empty when the row only has ``image_path``)."""
    image = row.get("image")
    if image is None:
        return []
    items = image if isinstance(image, list) else [image]
    return [base64.b64decode(s) for s in items]


def decode_image(b64: str):
    """A base64 string as a ``PIL.Image`` (RGB conversion left to the caller)."""
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _parse_index(text: str):
    text = text.strip()
    if _INT_RE.fullmatch(text):
        return int(text)
    return text


def _check_b64(data: str, mode: str) -> str | None:
    """None if ``data`` is acceptable, else the reason."""
    if mode == "none":
        return None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"broken base64 image ({exc})"
    if not raw:
        return "empty image"
    if mode == "pil":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return f"base64 decodes but is not a readable image ({exc.__class__.__name__}: {exc})"
    return None


def _split_image_cell(cell: str) -> list[str] | None:
    # VLMEvalKit ``toliststr``: a cell "[...]" holding a list literal means several images.
    if cell.startswith("[") and cell.endswith("]"):
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if isinstance(value, list):
            return [str(v) for v in value]
    return None


def read_tsv(path, *, mcq: bool = False, check_images: str = "decode", na_values: Iterable[str] | None = None,
             require_image: bool = True) -> TsvData:
    """Read a VLMEvalKit TSV into row dicts, setting aside malformed rows.

    Args:
        path: the ``.tsv`` file.
        mcq: also check that the answer is one of the row's option letters
            (rows without any option -- MMMU open questions -- are exempt).
        check_images: ``"decode"`` (default: the base64 must decode), ``"pil"``
            (it must also open as an image with PIL) or ``"none"``.
        na_values: cells treated as missing; default :data:`PANDAS_NA_VALUES`.
        require_image: when the file has an ``image`` column, a row with
            neither an image nor an ``image_path`` is malformed (VLMEvalKit
            silently drops such rows).

    Returns:
        :class:`TsvData`.  Reasons used: wrong field count, missing index,
        duplicate index, missing answer, answer not among options, no image,
        image reference to an unknown row, broken base64 image.
    """
    if check_images not in ("none", "decode", "pil"):
        raise ValueError("check_images must be 'none', 'decode' or 'pil'")
    na = PANDAS_NA_VALUES if na_values is None else frozenset(na_values)
    _raise_csv_field_limit()
    path = Path(path)
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quotechar='"')
        try:
            header = next(reader)
        except StopIteration:
            return TsvData(str(path), [])
        columns = [h if is_option_column(h) else h.strip().lower() for h in header]
        if "index" not in columns:
            raise ValueError(f"{path}: no 'index' column (header: {header[:12]})")
        data = TsvData(str(path), columns)
        pending: list[tuple[int, dict]] = []
        seen: set = set()
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            raw_index = fields[columns.index("index")] if len(fields) > columns.index("index") else ""
            index = _parse_index(raw_index) if raw_index.strip() not in na else None
            if len(fields) != len(columns):
                data.malformed.append(MalformedRow(
                    index, line, f"wrong field count: {len(fields)} fields, header has {len(columns)}"))
                continue
            row: dict = {}
            for col, value in zip(columns, fields):
                missing = value in na
                if is_option_column(col):
                    if not missing:
                        row[col] = value
                else:
                    row[col] = None if missing else value
            if index is None:
                data.malformed.append(MalformedRow(None, line, "missing index", row))
                continue
            row["index"] = index
            if index in seen:
                data.malformed.append(MalformedRow(index, line, "duplicate index", row))
                continue
            seen.add(index)
            pending.append((line, row))

    has_image_col = "image" in columns
    image_by_key = {str(r["index"]): r.get("image") for _, r in pending} if has_image_col else {}
    checked: dict[str, str | None] = {}

    def image_problem(payload: str) -> str | None:
        if payload not in checked:
            checked[payload] = _check_b64(payload, check_images)
        return checked[payload]

    for line, row in pending:
        reason = None
        if has_image_col:
            reason = _resolve_image(row, image_by_key, image_problem, require_image)
        if reason is None and data.has_answers and row.get("answer") is None:
            reason = "missing answer"
        if reason is None and mcq and data.has_answers:
            options = row_options(row)
            if options and row["answer"] not in options:
                reason = (f"answer {row['answer']!r} is not one of the options "
                          f"{', '.join(options)}")
        if reason is None:
            data.rows.append(row)
        else:
            data.malformed.append(MalformedRow(row["index"], line, reason, row))
    return data


def _resolve_image(row: dict, image_by_key: dict, image_problem, require_image: bool) -> str | None:
    cell = row.get("image")
    if cell is None:
        if require_image and row.get("image_path") is None:
            return "no image (neither image nor image_path; VLMEvalKit drops such rows)"
        return None
    if len(cell) <= _IMAGE_REF_MAX_LEN:
        target = image_by_key.get(cell.strip())
        if target is None or len(target) <= _IMAGE_REF_MAX_LEN:
            return f"image refers to row {cell!r}, which has no image of its own"
        row["image_ref"] = _parse_index(cell)
        cell = target
    items = _split_image_cell(cell)
    if items is None:
        problem = image_problem(cell)
        if problem:
            return problem
        row["image"] = cell
        return None
    for k, item in enumerate(items):
        problem = image_problem(item)
        if problem:
            return f"image {k}: {problem}"
    row["image"] = items[0] if len(items) == 1 else items
    return None


def _raise_csv_field_limit() -> None:
    # Base64 images easily exceed csv's default 128 KiB field limit.
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10
