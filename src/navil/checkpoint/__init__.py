"""navil.checkpoint: reading/writing HF-format folders, the official-key adapter, LLM initialisation."""
