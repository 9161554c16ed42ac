"""Several writers on one store: claims (who computes what) and the commit lock (who renames when).

Any number of processes, on any hosts sharing the store directory, may extract into it at once, with
the same engine or different ones:

- **Claims** stop two processes from computing the same flow of the same video. Before computing
  ``flow/<name>`` of ``<key>``, a writer creates ``videos/<key>.h5.<name>.claim`` with ``O_EXCL``
  (atomic, also on NFS v3+) holding its host and pid; a second writer finds it and moves on. A claim
  whose process is dead (same host) or that is older than ``STALE_PARTIAL_SECONDS`` (another host)
  is taken over, under the commit lock so that two takers cannot both win.
- **The commit lock** (``flock`` on ``videos/.commit.lock``) is held only while a finished partial
  file is merged with the video's current file and renamed over it: two engines finishing the same
  video at the same moment each see the other's flow and keep it (no lost update).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Iterator

from ..files import TMP_SUFFIX, host_name, pid_alive
from .layout import CLAIM, COMMIT_LOCK, STALE_PARTIAL_SECONDS, now


@contextlib.contextmanager
def commit_lock(videos: Path) -> Iterator[None]:
    """Hold the store's commit lock (blocking) inside the block."""
    videos.mkdir(parents=True, exist_ok=True)
    fd = os.open(videos / COMMIT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def claim_path(final: Path, name: str) -> Path:
    """``videos/<key>.h5.<name>.claim`` for the finished file ``final`` (``videos/<key>.h5``)."""
    return final.with_name(f"{final.name}.{name}{CLAIM}")


def _holder(path: Path) -> dict | None:
    """The claim's ``{"host", "pid", "since"}``, None when it vanished; unreadable -> {} (stale)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _is_live(holder: dict, path: Path, stale_after: float) -> bool:
    if holder.get("host") == host_name() and isinstance(holder.get("pid"), int):
        return holder["pid"] == os.getpid() or pid_alive(holder["pid"])
    try:
        return time.time() - path.stat().st_mtime < stale_after
    except FileNotFoundError:
        return False


def describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {holder.get('since', '?')})"


def try_claim(videos: Path, final: Path, name: str,
              stale_after: float = STALE_PARTIAL_SECONDS) -> str | None:
    """Claim ``flow/<name>`` of the video whose file is ``final`` (under the store's ``videos``
    directory). None when this process now holds the claim (it may hold it already); otherwise a
    description of the live process that holds it."""
    path = claim_path(final, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": host_name(), "pid": os.getpid(), "since": now()}
    # Written whole, then linked into place: link() is atomic and fails if the claim exists, so
    # nobody ever reads a half-written claim (an empty file would look stale and be taken over).
    tmp = path.with_name(f"{path.name}.{me['host']}.{me['pid']}.link{TMP_SUFFIX}")
    try:
        tmp.write_text(json.dumps(me), encoding="utf-8")
        for _ in range(3):
            try:
                os.link(tmp, path)
                return None
            except FileExistsError:
                holder = _holder(path)
                if holder is None:
                    continue  # released meanwhile: try again
                if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                    return None
                if _is_live(holder, path, stale_after):
                    return describe(holder)
                with commit_lock(videos):  # take over a stale claim, one taker at a time
                    holder = _holder(path)
                    if holder is not None and not _is_live(holder, path, stale_after):
                        path.unlink(missing_ok=True)
        return describe(_holder(path) or {})
    finally:
        tmp.unlink(missing_ok=True)


def release(final: Path, name: str) -> None:
    """Drop this process's claim (a claim of another process is left alone)."""
    path = claim_path(final, name)
    holder = _holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == host_name():
        path.unlink(missing_ok=True)


def is_stale(path: Path, stale_after: float = STALE_PARTIAL_SECONDS) -> bool:
    """Whether the claim ``path`` belongs to a process that is gone (for
    :meth:`FlowStore.remove_partials`)."""
    holder = _holder(path)
    return holder is not None and not _is_live(holder, path, stale_after)


__all__ = ["commit_lock", "claim_path", "try_claim", "release", "is_stale", "describe"]
