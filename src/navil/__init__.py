"""navil: native multimodal LLMs (NaViL) in plain PyTorch.

Public entry points are imported lazily so `import navil` stays cheap (no transformers on the path).
"""
from __future__ import annotations

from navil._lazy import lazy_exports

__version__ = "0.1.0"

__all__, __getattr__ = lazy_exports(__name__, {
    "load_model": "navil.checkpoint.io",
    "init_from_llm": "navil.checkpoint.llm_init",
    "NaViL": "navil.model.navil",
    "NaViLConfig": "navil.config",
    "VisionConfig": "navil.config",
    "LLMConfig": "navil.config",
    "ImageProcessor": "navil.processing.image",
    "load_tokenizer": "navil.processing.tokenizer",
    "build_chat_prompt": "navil.processing.chat",
    "NavilError": "navil.errors",
})
