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
what it remembers to its worker processes (:func:`hung_files`, :func:`remember`).

Children are forked by a ``forkserver`` that has imported the store (about 13 ms a child after
the server's first 0.4 s), so a run that indexes a few new files pays little. A daemonic process
(a DataLoader or extraction worker) may not have children: it reads in its own process, unguarded,
as does any process where the child cannot start.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator, Sequence

from ..files import stamp

#: Seconds a child may take over one file before the file counts as hung (``FLOWKIT_HANG_SECONDS``
#: overrides it). Reading what the index or a shallow validation needs of a video file takes
#: milliseconds, even on network disks.
HANG_SECONDS = 60.0
#: Seconds a child may take to start (a forkserver's first start imports h5py and numpy).
START_SECONDS = 120.0

# path (absolute) -> (its stamp when it failed, why)
_failed: dict[str, tuple[list[int], str]] = {}


class HungFileError(OSError):
    """A file that hung (or crashed) a guarded read in this process, opened again unchanged."""


@dataclass(frozen=True)
class Failed:
    """What :func:`guarded_map` gives for a file its child did not finish: ``reason`` says why
    (ran past the time limit, or the child died)."""

    reason: str


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
    """Treat ``files`` (from :func:`hung_files`) as failed in this process too."""
    _failed.update(files)


def _fail(path: str | os.PathLike, reason: str) -> Failed:
    try:
        _failed[_key(path)] = (stamp(path), reason)
    except OSError:  # gone meanwhile: nothing to guard
        pass
    return Failed(reason)


def hang_seconds() -> float:
    """``FLOWKIT_HANG_SECONDS`` when set to a number of seconds > 0, else :data:`HANG_SECONDS`."""
    text = os.environ.get("FLOWKIT_HANG_SECONDS")
    if text is None:
        return HANG_SECONDS
    try:
        limit = float(text)
    except ValueError:
        limit = -1.0
    if not 0 < limit < float("inf"):
        warnings.warn(f"FLOWKIT_HANG_SECONDS={text!r} is not a number of seconds > 0; files get "
                      f"{HANG_SECONDS:g} s", stacklevel=3)
        return HANG_SECONDS
    return limit


def _can_have_children() -> bool:
    return not mp.current_process().daemon


def _by_name(fn: Callable) -> bool:
    """Whether ``fn`` is what its module gives under its name (a child can import it; a lambda,
    a closure or a test's stand-in cannot be, and is called in process)."""
    found = sys.modules.get(getattr(fn, "__module__", None) or "")
    for part in getattr(fn, "__qualname__", "<>").split("."):
        found = getattr(found, part, None)
    return found is fn


_context = None


def _get_context():
    """The forkserver context, its server preloading the store (spawn where there is none)."""
    global _context
    if _context is None:
        if "forkserver" in mp.get_all_start_methods():
            _context = mp.get_context("forkserver")
            # Only takes effect if no one in this process has started the forkserver yet;
            # otherwise each child imports what it needs (0.3 s).
            _context.set_forkserver_preload(["flowkit.store"])
        else:
            _context = mp.get_context("spawn")
    return _context


def _child(conn: Connection, fn: Callable, calls: Sequence[tuple],
           failed: dict[str, tuple[list[int], str]]) -> None:
    """The child: ``("ready", None)``, then ``("ok", fn(*args))`` or ``("error", exception)`` per
    call, in order. ``failed``: the parent's failed files, not read again."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    remember(failed)
    try:
        conn.send(("ready", None))
        for args in calls:
            try:
                out = ("ok", fn(*args))
            except Exception as exc:  # noqa: BLE001 - the parent raises it, as in process
                out = ("error", exc)
            try:
                conn.send(out)
            except (TypeError, AttributeError, ValueError) as exc:  # an unpicklable exception
                conn.send(("error", RuntimeError(f"{type(out[1]).__name__}: {out[1]} ({exc})")))
    except (BrokenPipeError, EOFError, OSError):  # the parent is gone
        pass


def _death(process: mp.process.BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"the reading process died on it (signal {-code}, {signal.Signals(-code).name})"
        except ValueError:
            return f"the reading process died on it (signal {-code})"
    return f"the reading process ended on it (exit code {code})"


def guarded_map(fn: Callable, calls: Sequence[tuple], timeout: float | None = None
                ) -> Iterator[Any]:
    """``fn(*args)`` for each ``args`` of ``calls`` (whose first item is the file's path), in
    order, computed in a child process: each result as ``fn`` returned it, or :class:`Failed`
    for a file the child took longer than ``timeout`` seconds over (:func:`hang_seconds` when
    None) or died on; such a file is remembered (:func:`check`). An exception ``fn`` raises is
    raised here. ``fn`` is pickled by name: any other callable is called in this process,
    unguarded."""
    calls = list(calls)
    limit = hang_seconds() if timeout is None else timeout
    done = 0
    if not (_can_have_children() and _by_name(fn)):
        for args in calls:
            yield fn(*args)
        return
    while done < len(calls):
        ctx = _get_context()
        here, there = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child, args=(there, fn, calls[done:], _failed), daemon=True,
                              name="flowkit-guarded-read")
        try:
            try:
                process.start()
            except Exception:  # noqa: BLE001 - no children here (limits, a sandbox): in process
                process = None
            finally:
                there.close()
            if process is None or not here.poll(START_SECONDS):
                for args in calls[done:]:
                    yield fn(*args)
                return
            try:
                here.recv()  # "ready"
            except EOFError:  # it could not start (its imports failed): read in process
                for args in calls[done:]:
                    yield fn(*args)
                return
            while done < len(calls):
                path = calls[done][0]
                if not here.poll(limit):
                    yield _fail(path, f"HDF5 did not return within {limit:g} s reading it "
                                      "(damage to a file's metadata can make it loop forever)")
                    done += 1
                    break
                try:
                    kind, value = here.recv()
                except EOFError:  # it died on this file
                    process.join(5)
                    yield _fail(path, _death(process))
                    done += 1
                    break
                done += 1
                if kind == "error":
                    raise value
                yield value
        finally:
            here.close()
            if process is not None:
                if process.is_alive():
                    process.kill()
                process.join()


__all__ = ["HANG_SECONDS", "HungFileError", "Failed", "check", "guarded_map", "hang_seconds",
           "hung_files", "remember"]
