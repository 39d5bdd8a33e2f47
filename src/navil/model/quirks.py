"""The official model's fidelity quirks (spec §7), kept in one place.

navil reproduces these so that official checkpoints give the official numbers:

* Q1 - window-major vision features: the ViT permutes merge units into window order and never restores
  raster order, so features reach the `<IMG_CONTEXT>` slots window-major. `NaViLConfig.restore_raster_order`
  (default False) is the clean alternative for models trained by navil.
* B2 - InternLM2-VE visual tokens get `wo_ve(wo(attn))`, the visual output projection composed on top of
  the text one (Qwen3-VE replaces it). See `visual_output_composes_text_projection`.
* Q2 - which tokens are visual: only `<IMG_CONTEXT>` and `<img>` use the visual experts; `</img>`,
  `<IMG_LINE_BREAK>` and `<IMG_FRAME_BREAK>` use the text weights. See `VISUAL_EXPERT_TOKENS`.
* Q3 - cached decoding routes every new token through the text experts and embeds it with the plain
  token table, never `special_token_embedding` (see navil.model.generate).
* Loss - after the next-token shift, positions whose input token is `<IMG_CONTEXT>` never count, even
  where their (shifted) label is set (see `navil.model.navil.next_token_targets`).
"""
from __future__ import annotations

# Indices into the 12-entry special-token list (official SPECIAL_TOKEN_LIST order).
IMG_CONTEXT_ROW = 2
IMG_START_ROW = 4
VISUAL_EXPERT_TOKENS = (IMG_CONTEXT_ROW, IMG_START_ROW)


def visual_output_composes_text_projection(family: str) -> bool:
    """B2: the released InternLM2-VE applies wo_ve after wo for visual tokens."""
    return family == "internlm2"
