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


class NotFound(RevisitError):
    """What a request names (a visitor, a sighting, a user) does not exist: 404 on the web. Raised where the lookup
    fails, as a subclass of that module's own error (e.g. `UnknownUser(AccountError, NotFound)`)."""
