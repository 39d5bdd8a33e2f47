"""Conversation templates and prompt construction, as the official ``NaViL.chat`` builds them.

Templates render in InternVL's ``MPT`` style: ``system_template.format(system_message) + sep``, then for each
message ``role + message + sep`` (or just ``role`` for the open assistant turn). There is **no newline after**
``<|im_end|>``. Image placeholders ``<image>`` are then replaced left to right by each image's token block
(``<img>`` + per scale: rows of ``<IMG_CONTEXT>`` each closed by ``<IMG_LINE_BREAK>``, then
``<IMG_FRAME_BREAK>`` per frame + ``</img>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from navil.errors import NavilError
from navil.processing.tokenizer import (
    IM_END_TOKEN,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_FRAME_BREAK_TOKEN,
    IMG_LINE_BREAK_TOKEN,
    IMG_START_TOKEN,
)

IMAGE_PLACEHOLDER = "<image>"

# Default system message of all NaViL templates (InternVL legacy), verbatim.
DEFAULT_SYSTEM_MESSAGE = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"


@dataclass(frozen=True)
class ChatTemplate:
    """An MPT-style conversation template (official ``Conversation`` with ``SeparatorStyle.MPT``)."""

    name: str
    system_template: str
    roles: tuple[str, str]
    sep: str
    system_message: str = DEFAULT_SYSTEM_MESSAGE
    stop_str: str | None = None
    stop_token_ids: tuple[int, ...] = ()  # as listed officially; informational only (chat() stops on `sep`)

    def segments(
        self, messages: Sequence[tuple[str, str | None]], system_message: str | None = None
    ) -> list[tuple[str, bool]]:
        """Render (user, assistant) message pairs as (text, is_answer) pieces, adjacent pieces merged.

        An assistant entry of None (or "") is the open turn: only its role is rendered. Answer pieces are
        ``answer + sep`` of each complete assistant turn.
        """
        sys_msg = self.system_message if system_message is None else system_message
        out: list[tuple[str, bool]] = [
            (self.system_template.format(system_message=sys_msg) + self.sep, False)
        ]
        user_role, asst_role = self.roles
        for question, answer in messages:
            # Official MPT rule: an empty/None message renders only its role.
            out.append((user_role + question + self.sep if question else user_role, False))
            out.append((asst_role, False))
            if answer:
                out.append((answer + self.sep, True))
        merged: list[tuple[str, bool]] = []
        for text, flag in out:
            if merged and merged[-1][1] == flag:
                merged[-1] = (merged[-1][0] + text, flag)
            else:
                merged.append((text, flag))
        return merged

    def render(self, messages: Sequence[tuple[str, str | None]], system_message: str | None = None) -> str:
        """The full prompt string of ``messages`` (see :meth:`segments`)."""
        return "".join(text for text, _ in self.segments(messages, system_message))


_SYSTEM_TEMPLATE = "<|im_start|>system\n{system_message}"

TEMPLATES: dict[str, ChatTemplate] = {
    "internlm2-chat": ChatTemplate(
        name="internlm2-chat",
        system_template=_SYSTEM_TEMPLATE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep=IM_END_TOKEN,
        stop_token_ids=(2, 92543, 92542),
    ),
    "qwen3-chat": ChatTemplate(
        name="qwen3-chat",
        system_template=_SYSTEM_TEMPLATE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        sep=IM_END_TOKEN,
        stop_token_ids=(2, 92543, 92542),  # official copy-paste of the InternLM2 ids (spec §7 B6)
    ),
    "Hermes-2": ChatTemplate(
        name="Hermes-2",
        system_template=_SYSTEM_TEMPLATE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep=IM_END_TOKEN,
        stop_str="<|endoftext|>",
        stop_token_ids=(2, 6, 7, 8),
    ),
}


def get_template(name: str) -> ChatTemplate:
    """The conversation template called ``name`` (as in ``config.json``'s ``template``)."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise NavilError(f"unknown chat template {name!r}; known: {sorted(TEMPLATES)}") from None


def _rows(x: Any) -> list[list[int]]:
    """Accept a list of [t, h, w] rows, a tensor/array of shape [n, 3], or a single [t, h, w] row."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    rows = [list(r) for r in x] if x and isinstance(x[0], (list, tuple)) else ([list(x)] if x else [])
    for r in rows:
        if len(r) != 3:
            raise NavilError(f"image_grid_thw rows must be [t, h, w], got {r}")
    return [[int(v) for v in r] for r in rows]


def image_block(grid_thw_rows: Any, merge_size: int = 2) -> str:
    """Token block of ONE image whose scales have grids ``grid_thw_rows`` (smallest first, as given).

    ``<img>`` + per scale and frame: ``gh/m`` rows of ``(gw/m) x <IMG_CONTEXT>`` + ``<IMG_LINE_BREAK>``, then
    ``<IMG_FRAME_BREAK>``; finally ``</img>``.
    """
    parts = [IMG_START_TOKEN]
    for t, h, w in _rows(grid_thw_rows):
        if t < 1 or h < 1 or w < 1 or h % merge_size or w % merge_size:
            raise NavilError(
                f"image grid (t={t}, h={h}, w={w}) must be positive with h and w divisible by "
                f"merge size {merge_size}"
            )
        row = IMG_CONTEXT_TOKEN * (w // merge_size) + IMG_LINE_BREAK_TOKEN
        frame = row * (h // merge_size) + IMG_FRAME_BREAK_TOKEN
        parts.append(frame * t)
    parts.append(IMG_END_TOKEN)
    return "".join(parts)


def _scales_list(num_scales: Any) -> list[int]:
    if hasattr(num_scales, "tolist"):
        num_scales = num_scales.tolist()
    if isinstance(num_scales, int):
        num_scales = [num_scales]
    out = [int(n) for n in num_scales]
    if any(n < 1 for n in out):
        raise NavilError(f"num_scales entries must be >= 1, got {out}")
    return out


def expand_image_placeholders(prompt: str, image_grid_thw: Any, num_scales: Any, merge_size: int = 2) -> str:
    """Replace each ``<image>`` in ``prompt`` (left to right) by the block of the corresponding image.

    ``image_grid_thw`` lists every scale of every image (images in order, each image's scales smallest first);
    ``num_scales[i]`` is how many rows belong to image i. Raises NavilError if the counts do not match.
    """
    grids = _rows(image_grid_thw) if image_grid_thw is not None else []
    scales = _scales_list(num_scales) if num_scales is not None else []
    if grids and not scales:
        raise NavilError("num_scales is required when image_grid_thw is given")
    if sum(scales) != len(grids):
        raise NavilError(
            f"num_scales {scales} sums to {sum(scales)} but image_grid_thw has {len(grids)} rows"
        )
    n_placeholders = prompt.count(IMAGE_PLACEHOLDER)
    if n_placeholders != len(scales):
        raise NavilError(
            f"prompt has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) "
            f"but {len(scales)} image(s) were given"
        )
    pieces = prompt.split(IMAGE_PLACEHOLDER)
    out = [pieces[0]]
    start = 0
    for i, n in enumerate(scales):
        out.append(image_block(grids[start : start + n], merge_size))
        out.append(pieces[i + 1])
        start += n
    return "".join(out)


def build_chat_prompt(
    template_name: str,
    question: str,
    image_grid_thw: Any = None,
    num_scales: Any = None,
    history: Sequence[tuple[str, str]] | None = None,
    system_message: str | None = None,
    merge_size: int = 2,
) -> str:
    """The exact prompt string the official ``NaViL.chat`` feeds to the tokenizer.

    Without history, with images, and without ``<image>`` in ``question``, ``"<image>\\n"`` is prepended once
    per image. ``history`` holds earlier (question, answer) pairs rendered as complete turns (their images, if
    any, must be ``<image>`` placeholders in the first question). ``system_message=None`` uses the template's
    default. ``image_grid_thw``/``num_scales`` may be None for a text-only prompt.
    """
    template = get_template(template_name)
    n_images = len(_scales_list(num_scales)) if num_scales is not None else 0
    if not history and n_images and IMAGE_PLACEHOLDER not in question:
        question = (IMAGE_PLACEHOLDER + "\n") * n_images + question
    messages: list[tuple[str, str | None]] = [(q, a) for q, a in (history or [])]
    messages.append((question, None))
    prompt = template.render(messages, system_message)
    return expand_image_placeholders(prompt, image_grid_thw, num_scales, merge_size)


def render_conversation(
    template_name: str, turns: Sequence[tuple[str, str]], system_message: str | None = None
) -> list[tuple[str, bool]]:
    """A complete multi-turn conversation as (text, is_answer) segments, for building training labels.

    ``is_answer`` is True exactly for each assistant answer plus its ``<|im_end|>`` separator (the tokens that
    get loss). The concatenation of all texts equals the rendered conversation. ``<image>`` placeholders are
    left in place (expand them with :func:`expand_image_placeholders` or :func:`image_block`).
    """
    template = get_template(template_name)
    return template.segments([(q, a) for q, a in turns], system_message)


def postprocess_answer(text: str, sep: str = IM_END_TOKEN) -> str:
    """Official ``chat()`` post-processing of the decoded generation (decoded with skip_special_tokens=True).

    Keep the text before the first ``sep``, strip whitespace, and remove truncated ``<|im_end|`` /
    ``<|im_end`` / ``<|im`` fragments (the official "fix for InternLM2-base").
    """
    answer = text.split(sep)[0].strip()
    for fragment in ("<|im_end|", "<|im_end", "<|im"):
        answer = answer.replace(fragment, "")
    return answer
