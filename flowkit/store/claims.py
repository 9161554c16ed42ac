"""Several writers on one store: claims (who computes what) and the commit lock (who renames when).

Any number of processes, on any hosts sharing the store directory, may extract into it at once, with
the same engine or different ones:

- **Claims** stop two processes from computing the same flow of the same video. Before computing
  ``flow/<name>`` of ``<key>``, a writer links ``videos/<key>.h5.<name>.claim`` into place (atomic
  and exclusive, also on NFS v3+) holding its host and pid; a second writer finds it and moves on.
  The holder's heartbeat thread touches its claims every ``CLAIM_HEARTBEAT_SECONDS`` (60 s), so a
  claim is live while its process is: on this machine its pid is checked (with the process's
  start time, so that a restarted container, which gives its new processes the old pids under the
  same host name, does not take the old claims for its own processes'), from another machine its
  age (untouched for ``STALE_CLAIM_SECONDS``, 10 minutes: the process or its host died). Another
  machine is another host name, or this one under another boot id (cloned VMs, containers given
  one ``--hostname``; :func:`~flowkit.files.on_this_machine`). A dead
  process's claim is taken over, under the commit lock so that two takers cannot both win: a rerun
  after a node failed picks its videos up within minutes, not a day.
- **The commit lock** (``flock`` on ``videos/.commit.lock``) is held only while a finished partial
  file is merged with the video's current file and renamed over it: two engines finishing the same
  video at the same moment each see the other's flow and keep it (no lost update). Where the file
  system has no ``flock`` (Lustre mounted without ``-o flock`` says ENOSYS; some NFS and FUSE
  mounts EOPNOTSUPP or ENOLCK), or with ``FLOWKIT_COMMIT_LOCK=file`` (NFS mounted ``nolock`` /
  ``local_lock=all`` takes flock on each host alone, so hosts would not exclude each other), it is
  a lock file instead, ``videos/.commit.lock.claim``, linked into place and aged like a claim:
  waiters poll (5 ms, doubling to 200 ms), and a dead holder's file is broken by the claims' rule,
  one breaker at a time (its ``.break`` token), so that a live holder's lock is never removed.
  A waiter that has waited :data:`LOCK_NOTE_SECONDS` says (a warning: one line on stderr, once
  per lock file and process) who holds the lock and when it is taken over, so a dead host's lock
  is no silent 10 minutes.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import math
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

from ..files import (TMP_SUFFIX, host_name, link_into_place, on_this_machine, pid_alive,
                     process_identity, same_process)
from .layout import (CLAIM, CLAIM_HEARTBEAT_SECONDS, COMMIT_LOCK, STALE_CLAIM_SECONDS, WIDEST_PID,
                     now)

HEARTBEAT_SECONDS = CLAIM_HEARTBEAT_SECONDS  # module-level so tests can shorten it
#: How a file system says it has no flock: Lustre without ``-o flock`` (ENOSYS), NFS and FUSE
#: mounts (EOPNOTSUPP, ENOLCK).
NO_FLOCK = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK})
#: ``FLOWKIT_COMMIT_LOCK=file``: the lock file even where flock works (NFS mounted ``nolock``).
LOCK_ENV = "FLOWKIT_COMMIT_LOCK"
LOCK_POLL_SECONDS = (0.005, 0.2)  # a lock file's waiters: first and longest wait between tries
BREAK_TOKEN = ".break"  # ``<lock file>.break``: held by the one process breaking a dead holder's lock
#: A lock file's waiter says who holds it after waiting this long: a commit merging a large
#: video into its file on NFS may take seconds, a holder dead and not yet taken over 10 minutes.
LOCK_NOTE_SECONDS = 10.0
_noted: set[str] = set()  # lock files this process has said it waits for: each said once


@contextlib.contextmanager
def commit_lock(videos: Path) -> Iterator[None]:
    """Hold the store's commit lock (blocking) inside the block: ``flock``, or the lock file where
    the file system has none (module docstring)."""
    with exclusive(videos / COMMIT_LOCK):
        yield


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold ``lock`` (blocking) inside the block, as the commit lock is held: ``flock`` on it, or
    the lock file ``<lock>.claim`` where the file system has none or ``FLOWKIT_COMMIT_LOCK=file``.
    OSError where the lock cannot be made (a read-only store)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = None if os.environ.get(LOCK_ENV) == "file" else \
        os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fd is not None and _flock(fd):
            yield
        else:
            with _lock_file(lock.with_name(f"{lock.name}{CLAIM}")):
                yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the flock


def _flock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` (blocking); False where the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno in NO_FLOCK:
            return False
        raise
    return True


@contextlib.contextmanager
def _lock_file(path: Path, stale_after: float = STALE_CLAIM_SECONDS) -> Iterator[None]:
    """Hold ``path`` as an exclusive lock file: a file holding this thread's host, pid and thread,
    linked into place (atomic and exclusive on NFS v3+, Lustre and GPFS, like a claim). A live
    holder (another thread of this process too) is waited for; a dead one's file is broken (claims'
    rule: pid on this host, heartbeat age from another); the holder's heartbeat touches it."""
    me = {"host": host_name(), "pid": os.getpid(), "thread": threading.get_ident(),
          "since": now(), **process_identity()}
    tmp = path.with_name(f"{path.name}.{me['host']}.{me['pid']}.{me['thread']}{TMP_SUFFIX}")
    wait, held, note_at = LOCK_POLL_SECONDS[0], False, None  # note_at: when to say who holds it
    try:
        tmp.write_text(json.dumps(me), encoding="utf-8")
        while not held:
            try:
                link_into_place(tmp, path)
                held = True
            except FileExistsError:
                holder = _holder(path)
                if holder is None:
                    continue  # released meanwhile
                if _is_live(holder, path, stale_after) or not _break(path, holder):
                    if note_at is None:
                        note_at = time.monotonic() + LOCK_NOTE_SECONDS
                    elif time.monotonic() >= note_at:  # a long wait: say why, once
                        if str(path) not in _noted:  # a busy store's every slow commit: no
                            _noted.add(str(path))
                            warnings.warn(_wait_note(path, holder, stale_after), stacklevel=3)
                        note_at = math.inf
                    time.sleep(wait)  # held, or another process is breaking it
                    wait = min(2 * wait, LOCK_POLL_SECONDS[1])
        _heartbeat.add(path)
        yield
    finally:
        if held:
            _heartbeat.discard(path)
            path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _wait_note(path: Path, holder: dict, stale_after: float) -> str:
    """What a waiter for the lock file ``path`` says once (:data:`LOCK_NOTE_SECONDS`): who holds
    it and when it is taken over: a holder of this machine when its process ends, another one
    when its heartbeat is ``stale_after`` seconds old (it may be a dead host's: NFS ``nolock``)."""
    if on_this_machine(holder) and isinstance(holder.get("pid"), int):
        # a dead pid here is broken at once: this one is alive, committing (a large video)
        when = "it is taken when that process lets go of it (its commit ends) or ends"
    else:
        try:
            age = max(time.time() - path.stat().st_mtime, 0.0)
        except FileNotFoundError:
            age = 0.0
        minutes = max(1, math.ceil((stale_after - age) / 60))
        when = (f"its heartbeat is {age:.0f} s old: taken over in about {minutes} min if its "
                f"heartbeat stays still (a live holder touches it every "
                f"{HEARTBEAT_SECONDS:.0f} s); if that process is gone for sure, delete the file "
                "to go on at once")
    return f"waiting for the lock {path}, held by {describe(holder)}; {when}"


def _break(path: Path, holder: dict) -> bool:
    """Remove the lock file of the dead ``holder``; False when it no longer holds it (released, or
    broken by another process, whose own lock it may be now). Breakers take turns through a token,
    ``<path>.break``, held for microseconds: inside it the file is read again and removed only if it
    is still the dead holder's. Nothing else removes a lock file but its holder, so a live holder's
    lock is never removed (renaming it aside to check it, as before, left it to a third process to
    link its own meanwhile: two holders)."""
    token = path.with_name(f"{path.name}{BREAK_TOKEN}")
    if not _take_token(token):
        return False
    try:
        if _holder(path) != holder:
            return False
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        token.unlink(missing_ok=True)


def _take_token(token: Path) -> bool:
    """Take the break token ``token`` (one try); False while another breaker holds it. A token
    left by a breaker that died (claims' rule, as for locks: it is held far less than the heartbeat
    age) is renamed aside and dropped if it is still that breaker's, then taken."""
    me = {"host": host_name(), "pid": os.getpid(), "thread": threading.get_ident(),
          "since": now(), **process_identity()}
    tmp = token.with_name(f"{token.name}.{me['host']}.{me['pid']}.{me['thread']}{TMP_SUFFIX}")
    try:
        tmp.write_text(json.dumps(me), encoding="utf-8")
        for _ in range(2):
            try:
                link_into_place(tmp, token)
                return True
            except FileExistsError:
                holder = _holder(token)
                if holder is not None and _is_live(holder, token, STALE_CLAIM_SECONDS):
                    return False
                if holder is not None:
                    _drop_aside(token, holder)
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _drop_aside(path: Path, holder: dict) -> None:
    """Remove ``path`` if it is still ``holder``'s: renamed aside (one process alone can), checked,
    and linked back if it is not (another process's, taken meanwhile). Used for break tokens only,
    where the window it leaves (a third process linking its own before the link back) needs a
    breaker to have died first."""
    aside = path.with_name(f"{path.name}.{host_name()}.{os.getpid()}."
                           f"{threading.get_ident()}-stale{TMP_SUFFIX}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _holder(aside) != holder:
        with contextlib.suppress(FileExistsError):
            link_into_place(aside, path)
    aside.unlink(missing_ok=True)


def break_lock_of(lock: Path, pid: int) -> Path | None:
    """Break the lock file of ``lock`` (:func:`exclusive`'s ``<lock>.claim``) if process ``pid``
    of this host, which has ended, holds it, and return its path (None: not held by it). A run
    that terminated a worker while it was committing does this: waiters of this host would break
    it themselves (the pid is dead), but those of another host wait for its heartbeat to be
    10 minutes old."""
    path = lock.with_name(f"{lock.name}{CLAIM}")
    holder = _holder(path)
    if (holder is None or not on_this_machine(holder) or holder.get("pid") != pid
            or pid_alive(pid)):
        return None
    _break(path, holder)
    return path


def claim_path(final: Path, name: str) -> Path:
    """``videos/<key>.h5.<name>.claim`` for the finished file ``final`` (``videos/<key>.h5``)."""
    return final.with_name(f"{final.name}.{name}{CLAIM}")


def link_ending(pid: int | None = None) -> str:
    """What this process (or process ``pid``) adds to a claim's name for the file it links into
    place."""
    return f".{host_name()}.{os.getpid() if pid is None else pid}.link{TMP_SUFFIX}"


def claim_ending(name: str) -> str:
    """The longest a claim on ``flow/<name>`` adds to a finished video's name (``<key>.h5``), its
    temporary's: ``.<name>.claim.<host>.<pid>.link.tmp``, with the widest pid any process of this
    host may have (for :func:`~flowkit.store.layout.check_key`: a name that fits for one process
    fits for all)."""
    return f".{name}{CLAIM}{link_ending(WIDEST_PID)}"


def _holder(path: Path) -> dict | None:
    """The claim's ``{"host", "pid", "since"}``, None when it vanished; unreadable -> {} (stale)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _is_live(holder: dict, path: Path, stale_after: float) -> bool:
    """A holder of this machine is live while its process runs: its pid, and where recorded its
    start time (a container restarted with the same hostname gives its new processes the old
    pids); one of another host, or of another machine with this host name (another boot id:
    :func:`~flowkit.files.on_this_machine`), while its heartbeat is younger than
    ``stale_after``."""
    if on_this_machine(holder) and isinstance(holder.get("pid"), int):
        return same_process(holder["pid"], holder)
    try:
        return time.time() - path.stat().st_mtime < stale_after
    except FileNotFoundError:
        return False


def describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {holder.get('since', '?')})"


def try_claim(videos: Path, final: Path, name: str,
              stale_after: float = STALE_CLAIM_SECONDS) -> str | None:
    """Claim ``flow/<name>`` of the video whose file is ``final`` (under the store's ``videos``
    directory). None when this process now holds the claim (it may hold it already); otherwise a
    description of the live process that holds it."""
    path = claim_path(final, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": host_name(), "pid": os.getpid(), "since": now(), **process_identity()}
    # Written whole, then linked into place: link() is atomic and fails if the claim exists, so
    # nobody ever reads a half-written claim (an empty file would look stale and be taken over).
    tmp = path.with_name(path.name + link_ending())
    try:
        tmp.write_text(json.dumps(me), encoding="utf-8")
        for _ in range(3):
            try:
                link_into_place(tmp, path)
                _heartbeat.add(path)
                return None
            except FileExistsError:
                holder = _holder(path)
                if holder is None:
                    continue  # released meanwhile: try again
                if (holder.get("host"), holder.get("pid")) == (me["host"], me["pid"]) \
                        and on_this_machine(holder):
                    _heartbeat.add(path)
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


def release(final: Path, name: str, pid: int | None = None) -> bool:
    """Drop this process's claim, or with ``pid`` the claim of that process of this host (one
    that has ended); a claim of another process is left alone. True when a claim was dropped."""
    path = claim_path(final, name)
    if pid is None:
        _heartbeat.discard(path)
    holder = _holder(path)
    if holder and holder.get("pid") == (os.getpid() if pid is None else pid) \
            and on_this_machine(holder):
        path.unlink(missing_ok=True)
        return True
    return False


class _Heartbeat:
    """Touches the claims this process holds, every :data:`HEARTBEAT_SECONDS`, from one daemon
    thread (started with the first claim; a forked child starts its own for its own claims)."""

    def __init__(self):
        self._forget()

    def _forget(self) -> None:
        """No claims, no thread: a new process's state (also a forked child's, whose copy of the
        lock may have been held by the parent's thread at the fork)."""
        self._lock = threading.Lock()
        self._paths: set[Path] = set()
        self._pid = None

    def add(self, path: Path) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first claim of this process (or of a forked child)
                self._pid, self._paths = os.getpid(), set()
                threading.Thread(target=self._run, args=(self._pid,), daemon=True,
                                 name="flowkit-claim-heartbeat").start()
            self._paths.add(path)

    def discard(self, path: Path) -> None:
        with self._lock:
            self._paths.discard(path)

    def beat(self) -> None:
        """Touch every held claim now; a claim that vanished (taken over) is forgotten."""
        with self._lock:
            paths = list(self._paths)
        for path in paths:
            try:
                os.utime(path)
            except FileNotFoundError:
                self.discard(path)
            except OSError:
                pass  # a full or read-only store: the writes report it, the next beat retries

    def _run(self, pid: int) -> None:
        while self._pid == pid:
            time.sleep(HEARTBEAT_SECONDS)
            self.beat()


_heartbeat = _Heartbeat()
os.register_at_fork(after_in_child=_heartbeat._forget)


def keep_touched(path: Path) -> None:
    """Touch ``path`` with this process's claims (a partial file being written: another host
    cannot check its pid, so its age says whether its writer is alive, as a claim's does)."""
    _heartbeat.add(path)


def stop_touching(path: Path) -> None:
    """Stop touching ``path`` (:func:`keep_touched`): committed, or deleted."""
    _heartbeat.discard(path)


def writes_elsewhere(final: Path, pid: int) -> bool:
    """Whether process ``pid`` named (under this host name) by a partial file of the video file
    ``final`` is a live writer of another machine with this host name: one of its claims on
    ``final`` records another boot and is fresh. Its pid means nothing here, so its partial is
    left alone as its claims are (:meth:`~flowkit.store.FlowStore.remove_partials`)."""
    for path in final.parent.glob(f"{glob.escape(final.name)}.*{CLAIM}"):
        holder = _holder(path)
        if (holder and (holder.get("host"), holder.get("pid")) == (host_name(), pid)
                and not on_this_machine(holder) and _is_live(holder, path, STALE_CLAIM_SECONDS)):
            return True
    return False


def is_stale(path: Path, stale_after: float = STALE_CLAIM_SECONDS) -> bool:
    """Whether the claim ``path`` belongs to a process that is gone."""
    holder = _holder(path)
    return holder is not None and not _is_live(holder, path, stale_after)


def remove_if_stale(videos: Path, path: Path) -> bool:
    """Delete the claim ``path`` (under the store's ``videos`` directory) if its process is gone,
    and say whether it did (for :meth:`FlowStore.remove_partials`). Judged again under the commit
    lock, as :func:`try_claim` takes a stale claim over: otherwise a writer that took the claim
    over between the look and the delete would lose its live claim, and a third would compute
    the video again. The commit lock's own lock file is broken by the lock's rule instead."""
    if not is_stale(path):
        return False
    if path == videos / f"{COMMIT_LOCK}{CLAIM}":
        holder = _holder(path)
        if holder is None or _is_live(holder, path, STALE_CLAIM_SECONDS):
            return False
        return _break(path, holder)
    with commit_lock(videos):
        if not is_stale(path):
            return False
        path.unlink()
        return True


__all__ = ["commit_lock", "claim_path", "claim_ending", "link_ending",
           "try_claim", "release", "is_stale", "remove_if_stale", "describe", "break_lock_of"]
