"""navil.eval layer."""
