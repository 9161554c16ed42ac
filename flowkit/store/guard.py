"""Reading files HDF5 may never return from: in a child process, with a time limit per file.

Some damage to a file's metadata makes HDF5 loop forever instead of failing (h5py 3.16 with
HDF5 2.0: 32 zero bytes in a video file's root attribute storage make ``f.attrs`` loop), and the
loop holds the GIL, so no thread of the reading process can notice. The reads that meet files
flowkit has not read before run here: the index build behind ``info``, training and extraction's
resume check (:func:`flowkit.store.summary.indexed_facts`) and :meth:`FlowStore.validate
<flowkit.store.FlowStore.validate>`.

:func:`guarded_map` calls a function on each file in one child process and waits at most
:func:`hang_seconds` (60 s) for each result. A file that takes longer is *hung*: the child is
killed, a new one goes on from the next file, and the file is remembered in this process by its
path and stamp (inode, size, mtime). A child that dies on a file (HDF5 crashing on damage) makes
that file *failed* the same way. From then on :func:`check` (called by
:func:`~flowkit.store.layout.open_read`, which every read of a finished file goes through) raises
:class:`HungFileError` for that version of the file, an ``OSError``, so each caller reports it as
the unreadable file it is (naming the file and ``--redo``) instead of hanging. Extraction hands
what it remembers to its worker processes (:func:`hung_files`, :func:`remember`), and the store's
index keeps such files (:func:`~flowkit.store.index.save_index`), so a later process neither
waits for them nor opens them until they change; one given a longer time limit reads a file that
ran past a shorter one again (a slow disk, not damage).

The child is one Python process per reading process, started with ``python -c`` (never
through multiprocessing, whose children run the caller's ``__main__`` script again) the first time
it is needed (0.3 s: it imports the store) and kept for the next calls; it is killed after a hang.
A daemonic process (a DataLoader or extraction worker) may not have children, and Windows has no
file descriptors to pass: there, and wherever the child cannot start, reads run in process,
unguarded, as before.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator, Sequence

from ..files import stamp
from ..progress import env_seconds

#: Seconds a child may take over one file before the file counts as hung (``FLOWKIT_HANG_SECONDS``
#: overrides it). Reading what the index or a shallow validation needs of a video file takes
#: milliseconds, even on network disks.
HANG_SECONDS = 60.0
#: Seconds a child may take to start (Python starts and imports the store: h5py, numpy).
START_SECONDS = 120.0

# path (absolute) -> (its stamp when it failed, why)
_failed: dict[str, tuple[list[int], str]] = {}


class HungFileError(OSError):
    """A file that hung (or crashed) a guarded read in this process, opened again unchanged."""


@dataclass(frozen=True)
class Failed:
    """What :func:`guarded_map` gives for a file its child did not finish: ``reason`` says why
    (ran past the time limit, or the child died); ``seconds``: the time limit it ran past (None:
    the child died on it)."""

    reason: str
    seconds: float | None = None


def _key(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def check(path: str | os.PathLike) -> None:
    """Raise :class:`HungFileError` when this version of ``path`` failed a guarded read in this
    process (a dictionary lookup; a ``stat`` only for a file that did)."""
    if not _failed:
        return
    known = _failed.get(_key(path))
    if known is None:
        return
    try:
        now = stamp(path)
    except OSError:
        return
    if now == known[0]:
        raise HungFileError(known[1])


def hung_files() -> dict[str, tuple[list[int], str]]:
    """The files this process found hung or crashing, for :func:`remember` in another process."""
    return dict(_failed)


def remember(files: dict[str, tuple[list[int], str]]) -> None:
    """Treat ``files`` (``{path: (stamp, why)}``, e.g. from :func:`hung_files` or the store's
    index) as failed in this process too."""
    _failed.update({_key(path): known for path, known in files.items()})


def _fail(path: str | os.PathLike, reason: str, seconds: float | None = None) -> Failed:
    try:
        _failed[_key(path)] = (stamp(path), reason)
    except OSError:  # gone meanwhile: nothing to guard
        pass
    return Failed(reason, seconds)


def hang_seconds() -> float:
    """``FLOWKIT_HANG_SECONDS`` when set to a number of seconds > 0, else :data:`HANG_SECONDS`."""
    limit, warning = env_seconds("FLOWKIT_HANG_SECONDS", HANG_SECONDS)
    if warning:
        warnings.warn(f"{warning} per file", stacklevel=3)
    return limit


def _can_have_children() -> bool:
    return os.name == "posix" and not mp.current_process().daemon


def _by_name(fn: Callable) -> bool:
    """Whether ``fn`` is what its module gives under its name (a child can import it; a lambda,
    a closure or a test's stand-in cannot be, and is called in process)."""
    found = sys.modules.get(getattr(fn, "__module__", None) or "")
    for part in getattr(fn, "__qualname__", "<>").split("."):
        found = getattr(found, part, None)
    return found is fn


# The child's first lines: its two pipes, this process's sys.path, then the store.
_BOOT = ("import sys\n"
         "from multiprocessing.connection import Connection\n"
         "requests = Connection(int(sys.argv[1]), writable=False)\n"
         "results = Connection(int(sys.argv[2]), readable=False)\n"
         "sys.path[:] = requests.recv()\n"
         "from flowkit.store.guard import _serve\n"
         "_serve(requests, results)\n")


class _Reader:
    """A child Python process that serves guarded reads, started as ``python -c`` with this
    process's interpreter and ``sys.path``: multiprocessing's children (spawn, forkserver) would
    run the caller's ``__main__`` script again before reading anything, and a forkserver is
    shared with the caller's own pools. It imports the store once (0.3 s), then serves request
    after request: ``(fn, calls, failed, cwd)`` in (``cwd``: the caller's working directory,
    which the child takes), ``("start", None)`` and one ``("ok", value)`` or
    ``("error", exception)`` per call out."""

    def __init__(self):
        request_r, request_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(request_r), str(result_w)],
                pass_fds=(request_r, result_w), stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(request_w)
            os.close(result_r)
            raise
        finally:  # the child's ends
            os.close(request_r)
            os.close(result_w)
        self.requests = Connection(request_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.pid = os.getpid()  # the process that owns it (not a fork of it)
        self.requests.send(list(sys.path))

    def ready(self) -> bool:
        """Whether it imported the store (False: it cannot run here)."""
        try:
            return self.results.poll(START_SECONDS) and self.results.recv()[0] == "ready"
        except (EOFError, OSError):
            return False

    def death(self) -> str:
        """Why it ended, for the file it was reading."""
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            try:
                return (f"the reading process died on it (signal {-code}, "
                        f"{signal.Signals(-code).name})")
            except ValueError:
                return f"the reading process died on it (signal {-code})"
        return f"the reading process ended on it (exit code {code})"

    def close(self) -> None:
        """End it (killed: it may be looping in HDF5)."""
        for conn in (self.requests, self.results):
            conn.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _serve(requests: Connection, results: Connection) -> None:
    """The child's loop (:class:`_Reader`). It leaves Ctrl-C and SIGTERM to its parent, which
    kills it when it must stop, and dies with it (Linux: a parent-death signal)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    results.send(("ready", None))
    while True:
        try:
            fn, calls, failed, cwd = requests.recv()
        except (EOFError, OSError):  # the parent is done with it
            return
        remember(failed)
        try:
            os.chdir(cwd)
        except OSError:  # gone: relative paths fail as they would in the parent
            pass
        results.send(("start", None))
        for args in calls:
            try:
                out = ("ok", fn(*args))
            except Exception as exc:  # noqa: BLE001 - the parent raises it, as in process
                out = ("error", exc)
            try:
                results.send(out)
            except (TypeError, AttributeError, ValueError) as exc:  # an unpicklable exception
                results.send(("error", RuntimeError(f"{type(out[1]).__name__}: {out[1]} "
                                                    f"({exc})")))


_shared: _Reader | None = None
_shared_lock = threading.Lock()
_unavailable = False  # a reader could not start here: read in process from then on


def _take_reader(shared: bool) -> _Reader | None:
    """The shared reader (started if needed) when ``shared``, else a new one; None when none
    can run here."""
    global _shared, _unavailable
    if _unavailable:
        return None
    if shared and _shared is not None:
        if _shared.pid == os.getpid() and _shared.process.poll() is None:
            return _shared
        _shared = None  # ours ended, or we are a fork of its owner: never touch it
    try:
        reader = _Reader()
    except OSError:
        _unavailable = True
        return None
    if not reader.ready():
        reader.close()
        _unavailable = True
        return None
    if shared:
        _shared = reader
    return reader


def _drop(reader: _Reader) -> None:
    global _shared
    if reader is _shared:
        _shared = None
    reader.close()


@atexit.register
def _close_shared() -> None:
    if _shared is not None and _shared.pid == os.getpid():
        _drop(_shared)


def guarded_map(fn: Callable, calls: Sequence[tuple], timeout: float | None = None
                ) -> Iterator[Any]:
    """``fn(*args)`` for each ``args`` of ``calls`` (whose first item is the file's path), in
    order, computed in a child process: each result as ``fn`` returned it, or :class:`Failed`
    for a file the child took longer than ``timeout`` seconds over (:func:`hang_seconds` when
    None; ``math.inf``: no limit) or died on; such a file is remembered (:func:`check`). An
    exception ``fn`` raises is raised here. ``fn`` is pickled by name: any other callable is
    called in this process, unguarded, as are all calls where no child can run."""
    calls = list(calls)
    limit = hang_seconds() if timeout is None else timeout
    wait = None if limit == float("inf") else limit
    done = 0
    if not calls:
        return
    if not (_can_have_children() and _by_name(fn)):
        for args in calls:
            yield fn(*args)
        return
    # One reader serves the process; a call made while it is busy (another thread, a generator
    # not yet finished) gets one of its own.
    shared = _shared_lock.acquire(blocking=False)
    reader = None
    try:
        while done < len(calls):
            reader = _take_reader(shared)
            if reader is None:
                for args in calls[done:]:
                    yield fn(*args)
                return
            try:
                # with this process's working directory: relative paths read what they name here
                reader.requests.send((fn, calls[done:], _failed, os.getcwd()))
                started = reader.results.poll(START_SECONDS) and reader.results.recv()
            except (EOFError, OSError):
                started = False
            if not started:  # it could not take the request (its imports of fn's module)
                _drop(reader)
                reader = None
                for args in calls[done:]:
                    yield fn(*args)
                return
            while done < len(calls):
                path = calls[done][0]
                if not reader.results.poll(wait):
                    _drop(reader)
                    reader = None
                    done += 1
                    yield _fail(path, f"HDF5 did not return within {limit:g} s reading it "
                                      "(damage to a file's metadata can make it loop forever; "
                                      "on a disk that slow, set FLOWKIT_HANG_SECONDS higher)",
                                limit)
                    break
                try:
                    kind, value = reader.results.recv()
                except (EOFError, OSError):  # it died on this file
                    death = reader.death()
                    _drop(reader)
                    reader = None
                    done += 1
                    yield _fail(path, death)
                    break
                done += 1
                if kind == "error":
                    raise value
                yield value
        if reader is not None and not shared:
            _drop(reader)
        reader = None
    finally:
        if reader is not None and (done < len(calls) or not shared):
            _drop(reader)  # stopped half-way: its answers to the rest would still come
        if shared:
            _shared_lock.release()


__all__ = ["HANG_SECONDS", "HungFileError", "Failed", "check", "guarded_map", "hang_seconds",
           "hung_files", "remember"]
