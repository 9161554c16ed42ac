"""Exceptions shared by every flowkit module.

Every error a user can cause derives from :class:`FlowkitError`; the CLI prints its message as one
line and exits with a non-zero code, so messages must name the file (or parameter) and the cause.
"""


class FlowkitError(Exception):
    """Base class of errors a user can act on."""


class VideoError(FlowkitError):
    """A video cannot be opened or decoded. The message names the file and the cause."""


class StoreError(FlowkitError):
    """A feature store is missing, foreign, newer than this flowkit, or inconsistent."""


class EngineError(FlowkitError):
    """A motion engine was asked for something it cannot do (unknown name, bad parameter, bad input)."""
