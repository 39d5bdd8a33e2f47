"""Asking a model about images: prompt building, generation and answer post-processing in one call."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from navil.config import NaViLConfig
from navil.model.navil import NaViL
from navil.processing.chat import build_chat_prompt, postprocess_answer
from navil.processing.image import ImageLike, ImageProcessor
from navil.processing.tokenizer import NavilTokenizer

History = list[tuple[str, str]]


def template_name(config: NaViLConfig) -> str:
    """The checkpoint's chat template (inferred from the LLM family when config.json names none)."""
    return config.template or ("internlm2-chat" if config.llm.family == "internlm2" else "qwen3-chat")


def processor_for(config: NaViLConfig) -> ImageProcessor:
    """The image processor a model's config implies (the same values `from_pretrained` reads)."""
    p = config.vision.patch_size
    return ImageProcessor(patch_size=p, merge_size=config.merge_size, min_pixels=config.min_dynamic_patch * p * p,
                          max_pixels=config.max_dynamic_patch * p * p, scale_ratio=config.scale_downsample_ratio)


def prompt_inputs(model: NaViL, tokenizer: NavilTokenizer, images: Sequence[ImageLike] | None, question: str,
                  history: History | None = None, multi_scale: bool = True, system_message: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """`chat`'s model inputs: prompt ids [1, L], pixel values and image grids (None without images)."""
    device = next(model.parameters()).device
    pixel_values = grid = num_scales = None
    if images:
        processed = processor_for(model.config)(list(images), multi_scale=multi_scale)
        pixel_values, grid, num_scales = processed.pixel_values.to(device), processed.image_grid_thw, \
            processed.num_scales
    prompt = build_chat_prompt(template_name(model.config), question, grid, num_scales, history=history,
                               system_message=system_message or model.config.system_message,
                               merge_size=model.config.merge_size)
    return torch.tensor([tokenizer.encode(prompt)], device=device), pixel_values, grid


def chat(model: NaViL, tokenizer: NavilTokenizer, images: Sequence[ImageLike] | None = None, question: str = "",
         history: History | None = None, max_new_tokens: int = 256, return_history: bool = False,
         multi_scale: bool = True, system_message: str | None = None,
         on_text: Callable[[str], None] | None = None, **generation_kwargs) -> str | tuple[str, History]:
    """The official `chat`: build the prompt, generate until `<|im_end|>`, post-process the answer.

    `on_text` receives the decoded answer text as it grows (streaming)."""
    ids, pixel_values, grid = prompt_inputs(model, tokenizer, images, question, history, multi_scale,
                                            system_message)
    end = tokenizer.special_token_ids.im_end
    streamed: list[int] = []

    def stream(token: torch.Tensor) -> None:
        streamed.append(int(token[0]))
        on_text(postprocess_answer(tokenizer.decode(streamed, skip_special_tokens=True)))

    new = model.generate(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid,
                         max_new_tokens=max_new_tokens, eos_token_id=end if end is not None else None,
                         streamer=stream if on_text else None, **generation_kwargs)
    answer = postprocess_answer(tokenizer.decode(new[0].tolist(), skip_special_tokens=True))
    if return_history:
        return answer, [*(history or []), (question, answer)]
    return answer
