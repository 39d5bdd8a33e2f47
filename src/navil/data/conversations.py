"""Conversation samples -> training tokens.

A sample is the LLaVA/InternVL convention: ``conversations`` = list of
``{"from": "human"|"gpt", "value": ...}`` (``user``/``assistant`` accepted; an optional leading ``system``
turn overrides the system message) and ``image`` = a path or a list of paths, ``<image>`` marking where each
image goes. As InternVL's training code does, a sample with images but no ``<image>`` at all gets
``"<image>\\n" * n`` prepended to its first question.

:func:`tokenize_conversation` renders the turns with the checkpoint's chat template
(:func:`navil.processing.chat.render_conversation`), replaces each ``<image>`` by that image's
``<img>...</img>`` block (:func:`navil.processing.chat.image_block`) and tokenizes segment by segment, so that
``labels`` are the token ids of every assistant answer plus its ``<|im_end|>`` and -100 everywhere else
(BOS, system, questions, role headers, image tokens).

Bad samples raise :class:`SampleError` with a short ``reason`` (the key the loader counts skips by).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from navil.errors import NavilError
from navil.processing.chat import IMAGE_PLACEHOLDER, image_block, render_conversation

IGNORE_INDEX = -100

# Skip reasons (the keys of PackedLoader.skip_reasons).
MALFORMED_JSON = "malformed json"
BAD_CONVERSATION = "bad conversation"
MISSING_IMAGE = "missing image"
BAD_IMAGE = "bad image"
IMAGE_COUNT_MISMATCH = "image count mismatch"
TOO_MANY_TOKENS = "too many tokens"
TOO_MANY_PATCHES = "too many patches"
NO_ANSWER_TOKENS = "no answer tokens"

_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "bot"}


class SampleError(NavilError):
    """One training sample is unusable; ``reason`` is one of the module's skip-reason strings."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Conversation:
    """A parsed sample: (question, answer) turns, optional system message and image references."""

    turns: list[tuple[str, str]]
    images: list[Any] = field(default_factory=list)  # paths (str) or in-memory images (bytes / PIL)
    system_message: str | None = None


@dataclass
class TokenizedSample:
    """Token ids and labels of one sample (plain lists; the packer turns packs into tensors)."""

    input_ids: list[int]
    labels: list[int]
    num_loss_tokens: int  # official rule: labels[t+1] != -100 and input_ids[t] != <IMG_CONTEXT>


def parse_conversations(conversations: Any, images: Sequence[Any] = ()) -> Conversation:
    """Validate a ``conversations`` list into (question, answer) pairs; raise SampleError if unusable.

    A leading ``system`` message becomes the system message. Turns must alternate human/gpt starting with
    human; a trailing human turn without an answer is dropped (it has nothing to learn from). ``<image>``
    placeholders are checked against ``len(images)`` (none at all with images: prepended to the first
    question).
    """
    if not isinstance(conversations, list) or not conversations:
        raise SampleError(BAD_CONVERSATION, "'conversations' must be a non-empty list")
    msgs: list[tuple[str, str]] = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or "from" not in turn:
            raise SampleError(
                BAD_CONVERSATION, f"turn {i} must be an object with 'from' and a string 'value'"
            )
        msgs.append((str(turn["from"]).lower(), turn["value"]))
    system = None
    if msgs[0][0] == "system":
        system = msgs.pop(0)[1]
    if msgs and msgs[-1][0] in _USER_ROLES:
        msgs.pop()  # an unanswered final question
    if not msgs or len(msgs) % 2:
        raise SampleError(BAD_CONVERSATION, "conversation has no complete (human, gpt) turn pair")
    turns: list[tuple[str, str]] = []
    for i in range(0, len(msgs), 2):
        (r_q, q), (r_a, a) = msgs[i], msgs[i + 1]
        if r_q not in _USER_ROLES or r_a not in _ASSISTANT_ROLES:
            raise SampleError(
                BAD_CONVERSATION, f"turns {i}, {i + 1} must be human then gpt, got {r_q!r}, {r_a!r}"
            )
        if not a:
            raise SampleError(BAD_CONVERSATION, f"turn {i + 1} has an empty answer")
        turns.append((q, a))
    n_img = len(images)
    in_answers = sum(a.count(IMAGE_PLACEHOLDER) for _, a in turns)
    n_ph = sum(q.count(IMAGE_PLACEHOLDER) for q, _ in turns) + (system or "").count(IMAGE_PLACEHOLDER)
    if in_answers:
        raise SampleError(IMAGE_COUNT_MISMATCH, f"an answer contains {IMAGE_PLACEHOLDER}")
    if n_ph == 0 and n_img:
        turns[0] = ((IMAGE_PLACEHOLDER + "\n") * n_img + turns[0][0], turns[0][1])
    elif n_ph != n_img:
        raise SampleError(
            IMAGE_COUNT_MISMATCH, f"{n_ph} {IMAGE_PLACEHOLDER} placeholder(s) but {n_img} image(s)"
        )
    return Conversation(turns=turns, images=list(images), system_message=system)


def tokenize_conversation(
    tokenizer: Any,
    template: str,
    turns: Sequence[tuple[str, str]],
    image_grids: Sequence[Sequence[Sequence[int]]] = (),
    system_message: str | None = None,
    merge_size: int = 2,
    img_context_id: int | None = None,
) -> TokenizedSample:
    """Token ids + labels of a complete conversation (see module docstring).

    ``image_grids[i]`` lists the (t, h, w) rows of image i's scales, smallest first (as the processor gives
    them). BOS is prepended when the tokenizer is configured to add it (``tokenizer.add_bos_token``).
    """
    segments = render_conversation(template, list(turns), system_message)
    blocks = [image_block([list(r) for r in g], merge_size) for g in image_grids]
    ids: list[int] = []
    labels: list[int] = []
    if getattr(tokenizer, "add_bos_token", False) and getattr(tokenizer, "bos_token_id", None) is not None:
        ids.append(int(tokenizer.bos_token_id))
        labels.append(IGNORE_INDEX)
    next_image = 0
    for text, is_answer in segments:
        if not is_answer and IMAGE_PLACEHOLDER in text:
            pieces = text.split(IMAGE_PLACEHOLDER)
            if next_image + len(pieces) - 1 > len(blocks):
                raise SampleError(
                    IMAGE_COUNT_MISMATCH, f"more {IMAGE_PLACEHOLDER} than the {len(blocks)} image(s)"
                )
            out = [pieces[0]]
            for piece in pieces[1:]:
                out += [blocks[next_image], piece]
                next_image += 1
            text = "".join(out)
        seg = tokenizer.encode(text, add_special_tokens=False)
        ids += seg
        labels += seg if is_answer else [IGNORE_INDEX] * len(seg)
    if next_image != len(blocks):
        raise SampleError(
            IMAGE_COUNT_MISMATCH, f"{next_image} {IMAGE_PLACEHOLDER} but {len(blocks)} image(s)"
        )
    return TokenizedSample(ids, labels, count_loss_tokens(ids, labels, img_context_id))


def count_loss_tokens(
    input_ids: Sequence[int], labels: Sequence[int], img_context_id: int | None = None
) -> int:
    """Official loss-token count of ONE sample: positions t with labels[t+1] != -100 and
    input_ids[t] != <IMG_CONTEXT> (the label of the first token never counts)."""
    ids, lab = torch.as_tensor(input_ids), torch.as_tensor(labels)
    context = img_context_id if img_context_id is not None else -1
    return int(((lab[1:] != IGNORE_INDEX) & (ids[:-1] != context)).sum())


def image_grids(processor: Any, width: int, height: int, multi_scale: bool) -> list[tuple[int, int, int]]:
    """The (1, gh, gw) grids ``processor`` gives an image of ``width`` x ``height``, smallest first,
    computed from the size alone (no resizing), with the processor's own multi-scale plan.

    Lets the loader size samples of packs another rank takes without building their pixels; the loader
    checks the result against the processor's output for every pack it does build.
    """
    return [processor.grid_of(size) for size in processor.scale_sizes(height, width, multi_scale)]
