"""The DESIGN.md bench config and inputs, shared by the benchmark scripts.

InternLM2-family LLM hidden 512, 4 layers, 8 heads, 4 KV heads, FFN 1408, vocab 4096; ViT hidden 256,
4 layers, 4 heads, FFN 1024, window 8 with full attention in the last layer; one 448x320 image at 4 scales
(1192 patches, 298 image tokens) in a sequence of the requested length.
"""
from __future__ import annotations

import torch
from PIL import Image

from navil.config import LLMConfig, NaViLConfig, VisionConfig
from navil.processing.image import ImageProcessor

SPECIAL = list(range(4000, 4012))  # ids of the 12 NaViL special tokens in the bench vocabulary


def bench_config() -> NaViLConfig:
    return NaViLConfig(
        vision=VisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                            window_size=8, fullatt_block_indexes=[3]),
        llm=LLMConfig(family="internlm2", vocab_size=4096, hidden_size=512, intermediate_size=1408,
                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, qk_norm=False,
                      rope_theta=1e6),
        special_token_ids=SPECIAL, min_dynamic_patch=64,
    )


def bench_inputs(config: NaViLConfig, length: int, answer_tokens: int = 100) -> dict:
    """One 448x320 noise image at every scale plus `length` tokens holding its image block; labels on the
    last `answer_tokens` tokens."""
    proc = ImageProcessor(min_pixels=config.min_dynamic_patch * 256, max_pixels=config.max_dynamic_patch * 256)
    img = Image.effect_noise((448, 320), 60).convert("RGB")
    images = proc([img], multi_scale=True)
    n_ctx = images.pixel_values.shape[0] // 4
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 3000, (length,), generator=g)
    ids[5] = SPECIAL[4]  # <img>
    ids[6:6 + n_ctx] = SPECIAL[2]  # <IMG_CONTEXT>
    ids[6 + n_ctx] = SPECIAL[3]  # </img>
    labels = torch.full((length,), -100)
    labels[-answer_tokens:] = ids[-answer_tokens:]
    return {"input_ids": ids[None], "labels": labels[None], "cu_seqlens": torch.tensor([0, length]),
            "pixel_values": images.pixel_values, "image_grid_thw": images.image_grid_thw}
