"""Errors a user can act on. Each message says what is wrong and, where it can, how to fix it."""


class RevisitError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero, without a traceback."""


class ModelError(RevisitError):
    """A model file is missing, corrupt, of the wrong hash or unknown."""


class BackendError(RevisitError):
    """An inference backend cannot be loaded or cannot run a model."""


class ImageError(RevisitError):
    """Bytes that are not a usable image: not an image, truncated, empty, too large."""


class ConfigError(RevisitError):
    """Invalid configuration."""
