"""One training per run directory: rank 0 of a run holds ``RUN_DIR/.lock`` from its "does the
folder already hold a run?" check to the run's end (:class:`RunLock`), so that two trainings
started into one ``--out`` cannot both pass the check and mix their files; :func:`training_in`
says who holds it (``flowkit evaluate`` of a run still in its first epoch)."""
from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

from ..errors import FlowkitError
from ..files import host_name, link_into_place, process_identity

LOCK_FILE = ".lock"  # held by the training that writes RUN_DIR (RunLock); not a run file


class RunLock:
    """Rank 0's hold of a run directory: ``RUN_DIR/.lock``, a store claim (host, pid, process
    start and boot; :mod:`flowkit.store.claims`) linked into place, so one of two trainings
    alone takes it, on NFS too, and touched by the claims' heartbeat. A holder of this host is
    live while its process runs, one of another host while the file was touched within
    ``STALE_CLAIM_SECONDS`` (10 minutes); a dead holder's file is taken over. FlowkitError
    naming a live holder, before anything of the run is written. :meth:`release` (also when
    the lock is collected, or at exit) removes it, and the folders it made while still empty."""

    def __init__(self, run_dir: Path):
        from ..store import claims
        from ..store.layout import STALE_CLAIM_SECONDS, now

        made = [d for d in (run_dir, *run_dir.parents) if not d.exists()]
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        me = {"host": host_name(), "pid": os.getpid(), "since": now(), **process_identity()}
        tmp = path.with_name(path.name + claims.link_ending())
        try:
            try:
                tmp.write_text(json.dumps(me), encoding="utf-8")
            except OSError as exc:  # a read-only run folder: named, not the lock's temporary
                raise OSError(exc.errno, exc.strerror, str(run_dir)) from None
            for _ in range(3):
                try:
                    link_into_place(tmp, path)
                    break
                except FileExistsError:
                    holder = claims._holder(path)
                    if holder is not None and claims._is_live(holder, path,
                                                              STALE_CLAIM_SECONDS):
                        _remove_empty(made)
                        if (holder.get("host"), holder.get("pid")) == (me["host"], me["pid"]):
                            raise FlowkitError(  # a notebook cell run again, say
                                f"{run_dir} is held by an earlier Trainer of this process "
                                "(built, not yet fitted, or its fit still running): call its "
                                "close() (a fit's end also lets go), then build this one"
                            ) from None
                        raise FlowkitError(
                            f"{run_dir} is in use by another training (flowkit train, "
                            f"{claims.describe(holder)}); wait for it to end or stop it, then "
                            "--resume it, or choose another --out") from None
                    if holder is not None:
                        claims._break(path, holder)  # its process is gone: taken over
            else:
                _remove_empty(made)
                raise FlowkitError(f"{run_dir}: could not take {path} (other trainings kept "
                                   "taking it); try again, or choose another --out")
        except FlowkitError:  # no hard links here: leave no folder of this run behind
            _drop(tmp)
            _remove_empty(made)
            raise
        finally:
            _drop(tmp)
        claims.keep_touched(path)
        self._release = weakref.finalize(self, _release_run_lock, path, me["pid"], made)

    @property
    def held(self) -> bool:
        return self._release.alive

    def release(self) -> None:
        self._release()


def training_in(run_dir: str | Path) -> str | None:
    """Who trains in ``run_dir`` now (its live :class:`RunLock` holder, described: host, pid,
    since), None when no training holds it."""
    from ..store import claims
    from ..store.layout import STALE_CLAIM_SECONDS

    path = Path(run_dir) / LOCK_FILE
    holder = claims._holder(path)
    if holder is None or not claims._is_live(holder, path, STALE_CLAIM_SECONDS):
        return None
    return claims.describe(holder)


def _release_run_lock(path: Path, pid: int, made: list[Path]) -> None:
    """Drop ``path`` if this process still holds it, then the folders ``made`` left empty."""
    from ..store import claims

    claims.stop_touching(path)
    holder = claims._holder(path)
    if holder and holder.get("host") == host_name() and holder.get("pid") == pid == os.getpid():
        path.unlink(missing_ok=True)
    _remove_empty(made)


def _drop(tmp: Path) -> None:
    """Remove the lock's temporary if it is there. A read-only folder refuses even the unlink of
    a file that is not there (EROFS before the lookup): that error would replace the one naming
    the run folder."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty: a refused or failed run leaves
    no folder of its own behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


__all__ = ["LOCK_FILE", "RunLock", "training_in"]
