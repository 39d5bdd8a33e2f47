"""Errors navil raises for bad input: always a ValueError subclass with a message naming the problem."""


class NavilError(ValueError):
    """Bad input (config, checkpoint, image, prompt or data) detected by navil."""


class ConfigError(NavilError):
    """A config value is missing, has the wrong type or is out of range."""


class CheckpointError(NavilError):
    """A checkpoint folder is incomplete or its tensors do not match the config."""


class ImageError(NavilError):
    """An image cannot be read or processed."""
