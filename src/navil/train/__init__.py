"""navil.train layer."""
