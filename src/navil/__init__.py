"""navil: native multimodal LLMs (NaViL) in plain PyTorch.

Public entry points are imported lazily so `import navil` stays cheap (no transformers on the path).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'navil' has no attribute {name!r}")
