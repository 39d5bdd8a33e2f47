"""navil.model layer."""
