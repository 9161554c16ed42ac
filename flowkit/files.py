"""Files written whole or not at all, and file digests.

Every file flowkit writes for later (store manifests, checkpoints, run configs) goes through
:func:`atomic_write`: the content goes to a temporary file next to the target, is flushed and
fsynced, renamed over the target (atomic on POSIX), and the folder is fsynced, so a crash leaves
the previous version or the new one, never half a file. A failed write removes its temporary file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON (with a final newline), atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def file_sha256(path: str | os.PathLike, length: int | None = None) -> str:
    """Hex SHA-256 of a file's content (its first ``length`` digits when given)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    return digest if length is None else digest[:length]


__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "fsync_dir", "fsync_file",
           "file_sha256"]
