"""navil.checkpoint layer."""
