"""navil.data layer."""
