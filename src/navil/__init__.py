"""navil: native multimodal LLMs (NaViL) in plain PyTorch."""
