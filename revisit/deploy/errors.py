"""The error of `revisit deploy` commands."""

from revisit.shared.errors import RevisitError


class DeployError(RevisitError):
    """A deployment step cannot be done as asked."""
