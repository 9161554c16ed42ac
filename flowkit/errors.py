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


class StoreWriteError(StoreError):
    """The store's file system refuses data: no space left, quota exceeded, read-only, permission.

    Every later write would fail the same way, so work that writes (extraction) stops at the first
    one instead of failing each remaining item. ``errno`` is the operating system's error number."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class DamagedDataError(StoreError):
    """A stored file cannot be decoded (bit rot, a truncated copy). The message names the file, the
    dataset and the frames, and how to re-extract the video."""


class EngineError(FlowkitError, ValueError):
    """A motion engine was asked for something it cannot do (unknown name, bad parameter, bad
    input). Also a :class:`ValueError`, so generic callers catching bad arguments catch it."""


def use_plain_warnings() -> None:
    """Show flowkit's own warnings (a lock another host holds, a slow file system) as one
    ``warning: ...`` line, not Python's ``file.py:88: UserWarning: ...`` with a source line; other
    packages' warnings keep Python's format. Called by the CLI and by flowkit's worker
    processes."""
    import warnings
    from pathlib import Path

    if getattr(warnings.formatwarning, "flowkit", False):
        return
    default = warnings.formatwarning
    package = str(Path(__file__).resolve().parent)

    def plain(message, category, filename, lineno, line=None):
        if str(filename).startswith(package) and issubclass(category, UserWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    plain.flowkit = True
    warnings.formatwarning = plain


def shell_word(value) -> str:
    """A path or key (str or os.PathLike) as a command a message prints must hold it, so that
    the command pastes into a shell: ``runs/ré run`` -> ``'runs/ré run'``; a plain path
    (``runs/a``) prints unchanged (shlex.quote leaves it alone)."""
    import os
    import shlex

    return shlex.quote(os.fspath(value))
