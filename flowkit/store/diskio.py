"""Writing HDF5 files that survive a full disk, and naming the file-system errors a user can fix.

HDF5 treats a failed ``write()`` inside a flush as fatal for that file: the handle can then neither
be flushed nor closed, h5py prints an ``Exception ignored`` dump for each object it frees, and the
library crashes the interpreter when it shuts down (a segfault, exit 139, seen with ``flowkit
extract`` on a full 3 MB tmpfs). So the writer never lets HDF5 see a failed write: it hands HDF5 a
:class:`LatchingFile` (h5py's ``fileobj`` driver), which keeps the first ``OSError`` and drops
every later write. HDF5 always closes cleanly; the writer checks :attr:`LatchingFile.error` after
each batch and at commit, deletes the partial file, and raises :class:`~flowkit.errors.StoreWriteError`.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import h5py

from ..errors import StoreWriteError

# errno -> how the message starts; each is a property of the target, not of one video.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on",
    errno.EDQUOT: "disk quota exceeded on",
    errno.EROFS: "read-only file system:",
    errno.EFBIG: "file too large for the file system of",
    errno.EACCES: "permission denied writing to",
    errno.EPERM: "operation not permitted writing to",
}
_FIX = {
    errno.ENOSPC: "free space (or choose another -o), then rerun the same command to resume",
    errno.EDQUOT: "free space within your quota (or choose another -o), then rerun to resume",
    errno.EROFS: "choose a writable -o",
    errno.EFBIG: "choose a file system without a file size limit",
    errno.EACCES: "fix the permissions or choose another -o",
    errno.EPERM: "fix the permissions or choose another -o",
}
#: How a file system refuses a change to a store it lets be read (read-only, permissions).
REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]")


def errno_of(exc: BaseException) -> int | None:
    """The OS error number behind ``exc``: its ``errno``, or the one HDF5 wrote into the message
    (h5py raises ``RuntimeError('... errno = 28 ...')`` for a failed flush)."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    m = _ERRNO_IN_TEXT.search(str(exc))
    if m:
        return int(m.group(1) or m.group(2))
    return None


def storage_error(exc: BaseException, target: str | os.PathLike) -> StoreWriteError | None:
    """A :class:`StoreWriteError` naming ``target`` and the fix when ``exc`` is a file-system refusal
    (full, quota, read-only, permission), else None (a problem of one video, not of the store)."""
    if isinstance(exc, StoreWriteError):
        return exc
    code = errno_of(exc)
    if code not in STORAGE_ERRNOS:
        return None
    return StoreWriteError(f"{STORAGE_ERRNOS[code]} {target}; {_FIX[code]}", errno=code)


class LatchingFile:
    """A binary file for HDF5's ``fileobj`` driver whose writes never fail: the first ``OSError``
    is kept in :attr:`error` and every later write is dropped (HDF5 then closes the file cleanly;
    the caller deletes it). Reads go to the file as it is."""

    def __init__(self, path: Path, mode: str = "w+b"):
        self.path = Path(path)
        self._raw = open(self.path, mode, buffering=0)
        self.error: OSError | None = None

    # -- what h5py's fileobj driver calls
    def seek(self, pos: int, whence: int = 0) -> int:
        return self._raw.seek(pos, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buf) -> int:
        return self._raw.readinto(buf)

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if self.error is None:
            try:
                view, done = memoryview(data).cast("B"), 0
                while done < n:  # a raw write may be partial
                    done += self._raw.write(view[done:])
                return n
            except OSError as exc:
                self.error = exc
        self._raw.seek(n, os.SEEK_CUR)  # dropped, but HDF5 expects the position to move
        return n

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._raw.truncate(size)
            except OSError as exc:
                self.error = exc
        return self._raw.tell() if size is None else size

    def flush(self) -> None:
        """Nothing to flush (unbuffered); durability is :meth:`fsync`."""

    # -- the writer's side
    def fsync(self) -> None:
        if self.error is None:
            try:
                os.fsync(self._raw.fileno())
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        try:
            self._raw.close()
        except OSError as exc:  # NFS reports a failed write-back at close
            if self.error is None:
                self.error = exc


def create_hdf5(io: LatchingFile, fapl, fcpl) -> h5py.File:
    """A new HDF5 file written through ``io`` with the access / creation property lists given. The
    property lists are the caller's locals: one that outlives the interpreter's shutdown holds a
    reference to ``io`` and crashes HDF5's own shutdown."""
    fapl.set_fileobj_driver(h5py.h5fd.fileobj_driver, io)
    return h5py.File(h5py.h5f.create(os.fsencode(io.path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def open_hdf5(io: LatchingFile, fapl) -> h5py.File:
    """An existing HDF5 file, read-write, through ``io`` (see :func:`create_hdf5`)."""
    fapl.set_fileobj_driver(h5py.h5fd.fileobj_driver, io)
    return h5py.File(h5py.h5f.open(os.fsencode(io.path), h5py.h5f.ACC_RDWR, fapl=fapl))


__all__ = ["LatchingFile", "STORAGE_ERRNOS", "errno_of", "storage_error", "create_hdf5",
           "open_hdf5"]
