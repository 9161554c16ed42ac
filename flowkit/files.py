"""Files written whole or not at all, file digests, file versions (:func:`stamp`), and folder
walks that follow links.

Every file flowkit writes for later (store manifests, checkpoints, run configs) goes through
:func:`atomic_write`: the content goes to a temporary file next to the target, is flushed and
fsynced, renamed over the target (atomic on POSIX), and the folder is fsynced, so a crash leaves
the previous version or the new one, never half a file. A failed write removes its temporary file.
The file gets the mode any new file gets (``0o666`` less the umask), as the store's video files do:
a store, a run or an export is readable by whoever may read its folder.

Folders of videos and stores are walked with :func:`walk_once`: links followed (a class folder
moved to another disk), each real directory entered once (a link loop ends).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .errors import FlowkitError, shell_word

TMP_SUFFIX = ".tmp"
# <target>.<host>.<pid>.<random>.tmp: whose temporary it is, so a later run can tell a dead
# writer's leftover (removed by remove_stale_temporaries) from a live writer's file.
_TMP_RE = re.compile(r".+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[^.]+" + re.escape(TMP_SUFFIX))


def host_name() -> str:
    """This machine's name, reduced to characters that cannot be confused with a file name's dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "localhost"


def stamp(path: str | os.PathLike) -> list[int]:
    """What identifies one version of a file: ``[inode, size, mtime_ns]`` (a file replaced by a
    rename is a new inode). FileNotFoundError if it is gone."""
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` of this host started, in clock ticks since boot (Linux: field 22 of
    ``/proc/<pid>/stat``); None where that cannot be read (no ``/proc``, the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` of this host started, in seconds since the epoch (its
    :func:`process_start` on the boot clock, which also runs while the machine sleeps); None where
    that cannot be read."""
    ticks, boot_clock = process_start(pid), getattr(time, "CLOCK_BOOTTIME", None)
    if ticks is None or boot_clock is None:
        return None
    return time.time() - time.clock_gettime(boot_clock) + ticks / os.sysconf("SC_CLK_TCK")


def boot_id() -> str | None:
    """This boot of this host (Linux's random ``boot_id``); None where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_identity() -> dict[str, Any]:
    """What tells this process from a later one given the same pid on the same host (a restarted
    container numbers its processes alike; a rebooted host reuses pids): its start time and the
    host's boot, as far as they can be read. Recorded beside host and pid in claims and lock
    files; :func:`same_process` compares."""
    identity = {"start": process_start(os.getpid()), "boot": boot_id()}
    return {k: v for k, v in identity.items() if v is not None}


def on_this_machine(record: dict[str, Any]) -> bool:
    """Whether the claim or lock file holder ``record`` (host, pid, :func:`process_identity`) was
    written on this machine, whose pids it can check: its host name is this one's and its boot,
    where recorded (and readable here), is this one's too.

    A host name says too little: cloned VMs, and containers started with one ``--hostname`` on
    different machines, share it, and their pids mean nothing here. The boot id tells them apart:
    it is the kernel's, so a container restarted on this machine keeps it (its earlier processes'
    records stay this machine's and are judged by pid and start time, :func:`same_process`),
    while another machine has its own. This machine before a reboot has another boot id too and
    cannot be told from another machine of the same name: its records are judged as remote ones
    (by heartbeat age), the safe side: a dead holder is taken over 10 minutes after its last
    heartbeat instead of at once, never a live one at once."""
    if record.get("host") != host_name():
        return False
    boot = record.get("boot")
    return boot is None or boot_id() in (None, boot)


def same_process(pid: int, identity: dict[str, Any]) -> bool:
    """Whether the process ``pid`` of this host that recorded ``identity``
    (:func:`process_identity`; an empty one from an older flowkit) still runs: the pid is alive
    and, where recorded, its start time and the host's boot are the same (not a later process
    that got the pid)."""
    if not pid_alive(pid):
        return False
    boot = identity.get("boot")
    if boot is not None and boot_id() not in (None, boot):
        return False
    start = identity.get("start")
    return start is None or process_start(pid) in (None, start)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
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


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file ``<path>.<host>.<pid>.<random>.tmp`` opened for writing, mode 0o666 less the umask
    (``tempfile.mkstemp`` would make it 0o600, unreadable to the rest of a shared group)."""
    for _ in range(100):
        tmp = os.path.join(path.parent, f"{path.name}.{host_name()}.{os.getpid()}."
                                         f"{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


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


def is_stale_temporary(name: str, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``name`` is a temporary of a dead process on this host (``<target>.<host>.<pid>.
    <random>.tmp``, as :func:`atomic_write` and claims name theirs). With ``folder`` (where it
    is), a claim's or lock file's temporary, which holds its process's record, is checked to be
    this machine's: one of another machine with this host name (another boot,
    :func:`on_this_machine`) is kept, its pid means nothing here (a lock's waiter links its
    temporary again and again, for minutes)."""
    m = _TMP_RE.fullmatch(name)
    if not (m and m["host"] == host_name() and not pid_alive(int(m["pid"]))):
        return False
    boot = None if folder is None else _recorded_boot(os.path.join(folder, name))
    return boot is None or boot_id() in (None, boot)


def _recorded_boot(path: str) -> str | None:
    """The boot id a claim's or lock file's temporary at ``path`` records (a small JSON record);
    None for any other file, or one gone."""
    try:
        if os.path.getsize(path) > 4096:  # a manifest, a checkpoint: no holder record
            return None
        record = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return record.get("boot") if isinstance(record, dict) else None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries :func:`atomic_write` left in ``folder`` when its process died (a
    crash, a full disk); a live process's temporary, or one from another host, is left alone."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if is_stale_temporary(name, folder):
            try:
                os.unlink(os.path.join(folder, name))
                removed.append(Path(folder, name))
            except FileNotFoundError:
                continue
    return removed


def walk_once(root: str | os.PathLike, notes: list[str] | None = None, hidden: bool = True
              ) -> Iterator[tuple[str, list[str], list[str]]]:
    """:func:`os.walk` of ``root``, top-down with links followed, that enters each real directory
    once: yields ``(dirpath, dirnames, filenames)`` as os.walk does, ``dirnames`` sorted (changing
    it prunes the walk), ``filenames`` as listed.

    A link back up the tree is a loop, and a second link to a directory would list its files twice:
    a directory whose ``(st_dev, st_ino)`` was met before is skipped (the first met is kept), as
    are broken links and directories that cannot be listed, each with a line in ``notes`` when
    given (one that could not be entered names the fix; one reached twice says
    :data:`SAME_DIRECTORY`). ``hidden=False`` also leaves out directories whose names start with
    ``"."``, silently.
    One ``stat`` per directory, none per file: a store's 300k videos in 400 folders list as fast
    as with os.walk."""
    note = notes.append if notes is not None else lambda line: None
    try:
        seen = {file_identity(os.stat(root)): os.fspath(root)}
    except OSError as exc:
        note(_lost_note(os.fspath(root), exc))
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=lambda e: note(
            _lost_note(e.filename, e))):
        kept = []
        for d in sorted(dirnames):
            if not hidden and d.startswith("."):
                continue
            path = os.path.join(dirpath, d)
            try:
                ident = file_identity(os.stat(path))
            except OSError as exc:
                note(_lost_note(path, exc))
                continue
            if ident in seen:
                note(f"{path}: {SAME_DIRECTORY} {seen[ident]} (a link loop or a "
                     "second link to it)")
                continue
            seen[ident] = path
            kept.append(d)
        dirnames[:] = kept
        yield dirpath, dirnames, filenames


#: How :func:`walk_once` notes a directory it skipped because another path reached it (nothing
#: under it is lost), unlike one it could not enter (:func:`_lost_note`).
SAME_DIRECTORY = "skipped, the same directory as"


def dangling_link_note(path: str) -> str | None:
    """One line naming ``path`` and the fix when it is a link to nothing (a relative link to a
    folder that dangles once the tree holding it was moved), else None. :func:`walk_once` lists
    such a link among the files (it is no directory): a walk that expects only some files there
    (a store's videos) checks the other names with this (one ``readlink`` each)."""
    try:
        target = os.readlink(path)
    except OSError:  # not a link, or gone
        return None
    if os.path.exists(path):
        return None
    return (f"{path}: skipped, a link to a folder that is not there ({target}): restore it or "
            "re-create the link")


def _lost_note(path: str, exc: OSError) -> str:
    """One line naming the directory ``path`` that :func:`walk_once` could not enter and the fix:
    what is under it is left out of the walk (a class of a store, of a video folder)."""
    dangling = dangling_link_note(path) if isinstance(exc, FileNotFoundError) else None
    if dangling:
        return dangling
    if isinstance(exc, PermissionError):
        return (f"{path}: skipped, no permission to list it: chmod a+rx {shell_word(path)} (or "
                "ask its owner to)")
    return f"{path}: skipped, cannot be listed ({exc.strerror or exc})"


def file_identity(st: os.stat_result) -> tuple[int, int]:
    """What makes a file or directory one real thing whatever the links to it: (device, inode)."""
    return st.st_dev, st.st_ino


def escape_name(text: str) -> str:
    """``text`` with the bytes of a file name that are not UTF-8 (Python keeps them as lone
    surrogates) written ``%XX``, so it can be stored (HDF5 attributes, JSON); the video is still
    read from its real path."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return "".join(f"%{ord(ch) - 0xDC00:02X}" if "\udc80" <= ch <= "\udcff" else ch for ch in text)


def file_sha256(path: str | os.PathLike, length: int | None = None) -> str:
    """Hex SHA-256 of a file's content (its first ``length`` digits when given)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    return digest if length is None else digest[:length]


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Before any work: ``folder`` (made if missing) takes a new file. A file is created and
    removed, and so are the folders made for it (the work makes them again), so a command that
    fails later leaves nothing. A read-only or unwritable folder raises the file system's
    OSError naming ``folder`` (not the probe's random name): the CLI prints it as one line."""
    import tempfile

    folder = Path(folder)
    made = [d for d in (folder, *folder.parents) if not d.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".flowkit-probe-"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    finally:
        for made_folder in made:  # innermost first
            try:
                made_folder.rmdir()
            except OSError:
                break


#: How a file system refuses a hard link: exFAT / FAT drives (EPERM), some FUSE and SMB mounts
#: (EPERM, EOPNOTSUPP, ENOSYS). The file linked sits beside the target and was just written,
#: so it is not a permission of the folder.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def link_into_place(tmp: Path, path: Path) -> None:
    """``os.link(tmp, path)``: FileExistsError when ``path`` exists (atomic and exclusive, on NFS
    v3+ too), the way every claim and lock file is taken. A file system without hard links is a
    FlowkitError naming the folder and the fix (the folder was writable: ``tmp`` is in it)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        raise FlowkitError(
            f"{path.parent}: its file system refuses hard links ({os.strerror(exc.errno)}), "
            "which flowkit takes its claims and locks with (several writers at once); local "
            "disks, NFS, Lustre and GPFS have them, exFAT/FAT drives and some FUSE or SMB mounts "
            "do not: write to a folder on another file system") from None


__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "fsync_dir", "fsync_file",
           "file_sha256", "host_name", "pid_alive", "on_this_machine",
           "remove_stale_temporaries", "is_stale_temporary",
           "escape_name", "walk_once", "file_identity", "stamp", "link_into_place",
           "check_writable_folder",
           "NO_HARD_LINKS"]
