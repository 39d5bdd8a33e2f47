"""navil.processing layer."""
