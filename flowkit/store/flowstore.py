"""The store object: :class:`FlowStore` (which videos are complete, writing, reading, summaries)."""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import posixpath
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from ..errors import StoreError
from ..files import (TMP_SUFFIX, escape_name, host_name, is_stale_temporary, pid_alive,
                     process_start_time, remove_stale_temporaries, walk_once)
from ..files import stamp as file_stamp
from ..labels import VIDEO_EXTENSIONS, first_few
from ..progress import Progress
from . import claims, codecs
from .codecs import Codec
from .layout import (CLAIM, COMMIT_LOCK, EXTRACT_HINT, MANIFEST, MAX_OPEN_FILES, PARTIAL,
                     PARTIAL_RE, STALE_CLAIM_SECONDS, STALE_PARTIAL_SECONDS, SUFFIX, VIDEO_FORMAT, VIDEO_VERSION,
                     VIDEOS, WIDEST_PID, check_key, check_not_file, check_video_header,
                     create_store, flowkit_version, merge_classes, no_manifest, now, open_read,
                     partial_ending, read_manifest, rebuild_manifest, walk_videos)
from .index import Entry, Index, index_stamp, load_index, paused_gc, update_index
from .summary import SummaryStats, indexed_facts
from .diskio import REFUSED, errno_of, storage_error
from .reading import (IMPORTED_BACKEND, DamagedObject, attributes, error_cause, flow_name,
                      frame_crcs, imported_video, member, member_names, members, names_repair,
                      read_frames, redo_hint)
from .guard import Failed, guarded_map
from .validate import READ_PERMISSION_FIX, counted, refused_read, video_problems
from .writer import VideoWriter, is_open_partial, relabel

# The claims this process took through FlowStore.claim and holds: {claim path: (pid, since)}. A
# claim file names a process, not a thread, so the file alone lets every thread of its process
# claim it again; with this a second claim of one flow of one video inside the process is
# refused, as another process's is, and two threads extracting into one store (two FlowStores of
# it, too) never compute one video twice nor release the claim the other still works under.
_held: dict[str, tuple[int, str]] = {}
_held_lock = threading.Lock()


def _forget_held() -> None:
    """A forked child holds none of its parent's claims (whose lock may have been held at the
    fork)."""
    global _held, _held_lock
    _held, _held_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_held)


class FlowStore:
    """A flowkit feature store (a directory); see the module docstring for layout and guarantees.

    ``FlowStore(path)`` opens an existing store read-only; ``FlowStore(path, mode="a",
    classes=[...])`` creates it if missing and allows writing. Reading is lazy and safe in many
    DataLoader worker processes; frames are decoded with the codec each dataset records. Keys are
    video paths relative to the source root without extension. ``encode_threads``: threads that
    compress frames while writing (default: the usable cores, at most 8).

    Threads may share one store to read (the codecs release the GIL, so a thread pool decodes in
    parallel): each thread opens its own handles, at most ``max_open_files`` of them, and closes
    them when it ends or on :meth:`close` (call it when no thread reads). A handle reads the file
    it opened, complete, also after another process replaced it, until :meth:`meta` or
    :meth:`flow_names` is called or a flow or ``rgb`` it lacks is asked for: these reopen a
    replaced file (another process may have added a flow), one ``stat`` each.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r", *,
                 classes: Sequence[str] | None = None, max_open_files: int = MAX_OPEN_FILES,
                 encode_threads: int | None = None):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (create/append), got {mode!r}")
        self._root = Path(path)
        self._mode = mode
        self.encode_threads = encode_threads  # None: codecs.default_threads()
        self._max_open = max(1, int(max_open_files))
        self._manifest = self._open_manifest(classes)
        self._unreachable: list[str] = []  # the last listing's (_video_files)
        # Each thread's open files (_OpenFiles: handles, their codecs): see _open_files
        self._forget_open_files()
        self._forget_held_index()

    def _open_manifest(self, classes: Sequence[str] | None) -> dict:
        try:
            return self._read_or_create_manifest(classes)
        except OSError as exc:
            raise storage_error(exc, self._root) or StoreError(
                f"store {self._root}: {exc.strerror or exc}") from None

    def _read_or_create_manifest(self, classes: Sequence[str] | None) -> dict:
        root = self._root
        check_not_file(root)
        if self._mode == "a" and (not root.exists() or not (root / MANIFEST).exists()):
            return create_store(root, list(classes or []))
        if not root.exists():
            raise StoreError(f"store {root} does not exist; {EXTRACT_HINT}")
        if not (root / MANIFEST).is_file():
            raise StoreError(no_manifest(root, f"; {EXTRACT_HINT}"))
        manifest = read_manifest(root)
        if self._mode == "a":
            (root / VIDEOS).mkdir(exist_ok=True)
            manifest = merge_classes(root, manifest, classes)
        return manifest

    @staticmethod
    def rebuild_manifest(path: str | os.PathLike) -> list[str]:
        """Write the lost or unreadable ``store.json`` of the store at ``path`` again, its class
        list from the videos' ``label`` / ``label_name`` attributes, and return that list
        (:func:`~flowkit.store.layout.rebuild_manifest`: refused where it reads, or where the
        videos leave a label id unnamed). ``flowkit info STORE --repair-manifest`` calls it."""
        root = Path(path)
        try:
            return rebuild_manifest(root)
        except OSError as exc:
            raise storage_error(exc, root) or StoreError(
                f"store {root}: {exc.strerror or exc}") from None

    # -- identity

    @property
    def path(self) -> Path:
        return self._root

    @property
    def classes(self) -> list[str]:
        return list(self._manifest.get("classes", []))

    @property
    def mode(self) -> str:
        return self._mode

    def __repr__(self) -> str:
        return f"FlowStore({str(self._root)!r}, mode={self._mode!r})"

    # -- which videos are complete: the directory listing

    def _video_path(self, key: str) -> Path:
        return self._root / VIDEOS / (check_key(key) + SUFFIX)

    def _walk(self, suffix: str | tuple[str, ...]) -> Iterator[Path]:
        for dirpath, _, files in walk_once(self._root / VIDEOS):
            for name in files:
                if name.endswith(suffix):
                    yield Path(dirpath, name)

    def _video_files(self) -> Iterator[tuple[str, str]]:
        """``(key, file)`` of every complete video, as strings (not Paths: 300k in 0.3 s, not 5).
        Folders that are links (a class moved to another disk) are followed, each real folder
        once (:func:`~flowkit.files.walk_once`), as opening a key follows them. The folders it
        cannot enter are kept in :attr:`unreachable` (filled as the walk goes), so a class
        left out is said, not silently missing."""
        videos = os.path.join(self._root, VIDEOS)
        lost = self._unreachable = []
        if not os.path.lexists(videos):  # a store with no video yet (a dangling link: noted)
            return
        prefixes: dict[str, str] = {}  # one relpath per folder, not per video
        for dirpath, name in walk_videos(videos, lost):
            if (prefix := prefixes.get(dirpath)) is None:
                folder = os.path.relpath(dirpath, videos).replace(os.sep, "/")
                prefix = prefixes[dirpath] = "" if folder == "." else folder + "/"
            yield prefix + name[:-len(SUFFIX)], os.path.join(dirpath, name)

    @property
    def unreachable(self) -> list[str]:
        """The folders under ``videos/`` the last listing of the store (:meth:`keys`,
        :meth:`summary`, :meth:`validate`, ``len``) could not enter, one line each naming the
        folder and the fix (a link that dangles: restore it; no permission to list: chmod):
        their videos are left out of what that listing found. [] when it entered every one."""
        return list(self._unreachable)

    def keys(self) -> list[str]:
        """Keys of the complete videos, sorted."""
        return sorted(key for key, _ in self._video_files())

    def __len__(self) -> int:
        return sum(1 for _ in self._video_files())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def is_complete(self, key: str) -> bool:
        """Whether ``key`` is finished (its ``.h5`` exists; only an atomic rename creates it)."""
        try:
            return self._video_path(key).is_file()
        except StoreError:
            return False

    __contains__ = is_complete

    def partials(self) -> list[Path]:
        """Leftover or in-progress ``.partial`` files."""
        return sorted(self._walk(PARTIAL))

    def in_flight(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        """``{key: "pid N on HOST (since ...)"}`` of the videos the store does not hold yet that
        a live process is extracting: a live claim on one of their flows
        (:mod:`flowkit.store.claims`), so readers can say "rerun when it is done" instead of "not
        in the store". ``keys``: the keys a reader found missing, looked for by one listing of
        each of their folders; None: the whole store, in one walk. A claim on a finished video
        (another flow being added) is not counted: its file reads."""
        def listing(folder: str) -> list[str]:
            with contextlib.suppress(OSError):  # no such folder: none of its videos started
                return os.listdir(folder)
            return []

        videos = os.path.join(self._root, VIDEOS)
        if keys is None:
            found = (os.path.join(d, n) for d, _, names in walk_once(videos) for n in names)
        else:
            folders: dict[str, set[str]] = {}
            for key in keys:
                with contextlib.suppress(StoreError):  # an invalid key names no file of ours
                    folder, _, name = check_key(key).rpartition("/")
                    folders.setdefault(folder, set()).add(name)
            found = (os.path.join(videos, folder, n) for folder, names in folders.items()
                     for n in listing(os.path.join(videos, folder))
                     if n.endswith(CLAIM) and n.rpartition(SUFFIX + ".")[0] in names)
        busy: dict[str, str] = {}
        for path in found:
            stem, dot_h5, _ = os.path.basename(path).removesuffix(CLAIM).rpartition(SUFFIX + ".")
            if not (path.endswith(CLAIM) and dot_h5):  # also the commit lock's lock file
                continue
            key = os.path.relpath(os.path.join(os.path.dirname(path), stem),
                                  videos).replace(os.sep, "/")
            if key in busy or self.is_complete(key) or claims.is_stale(Path(path)):
                continue
            with contextlib.suppress(OSError, ValueError):  # released meanwhile: done
                busy[key] = claims.describe(json.loads(Path(path).read_text(encoding="utf-8")))
        return busy

    # -- writing

    def writer(self, key: str, *, source: str | os.PathLike, fps: float, label: int = -1,
               label_name: str = "", source_size: tuple[int, int] | None = None,
               step: int | None = None, flow_codec: str | Codec = "jpegls",
               rgb_codec: str | Codec = "jpeg", redo: bool = False) -> VideoWriter:
        """A :class:`VideoWriter` for ``key``: use as ``with store.writer(key, ...) as w``.

        ``label``: an id of the store's :attr:`classes` (-1: unlabelled), named ``label_name``
        (default: the store's name of it; another is refused), else :class:`StoreError`.
        ``source_size`` is the decoded video's (height, width) before any resize; ``step`` the
        frame step it was decoded with. Left out (None), a video already in the store keeps its
        own, a new one records -1 (unknown) and 1. A ``step`` given that differs from what the
        stored video records is refused as other frames (count, size) are, unless ``redo`` (the
        writer's frames replace the video's), whereas a known stored source size is kept (writers
        have recorded it otherwise for the same frames); so are the facts
        :meth:`VideoWriter.update_attrs` gives (``max_frames``, ``rotation``, ``variable_frame_rate``:
        :data:`~flowkit.store.writer.FRAME_ATTRS`), and the stored video's others are kept.
        ``flow_codec`` / ``rgb_codec``: a codec or its name with default parameters
        (:mod:`flowkit.store.codecs`: ``jpegls`` at 0.1 px, ``float16``, ``uint8``; ``jpeg`` at
        quality 95, ``raw``). Committing replaces an existing finished video of the same key and
        keeps the datasets of it that this writer did not write, so another engine's flow is added
        beside them (e.g. ``flow/tvnet`` next to ``flow/tvl1``), also when both are written at once
        by different processes, or by two writers in one process (threads, nested writers: each
        writes its own partial file). ``redo``: the finished file is suspect; its datasets that no
        longer decode are dropped (:attr:`VideoWriter.dropped`). A key whose partial file's name would be
        too long for the file system is refused here (:func:`~flowkit.store.layout.check_key`), by
        the name any process of this host would give it.
        """
        self._check_writable("write")
        check_key(key, SUFFIX + partial_ending(WIDEST_PID))
        flow, rgb = codecs.flow_codec(flow_codec), codecs.rgb_codec(rgb_codec)
        label, label_name = self._named_label(key, label, label_name)
        sh, sw = source_size if source_size is not None else (-1, -1)
        attrs = {"format": VIDEO_FORMAT, "version": VIDEO_VERSION, "key": key,
                 "source": escape_name(str(source)), "fps": float(fps), "source_height": int(sh),
                 "source_width": int(sw), "step": int(step or 1), "label": label,
                 "label_name": label_name, "created": now(),
                 "flowkit_version": flowkit_version()}
        defaults = (["source_height", "source_width"] if source_size is None else []) + \
            (["step"] if step is None else [])
        return VideoWriter(self._video_path(key), attrs, flow, rgb, videos=self._root / VIDEOS,
                           redo=redo, threads=self.encode_threads, defaults=defaults)

    def _named_label(self, key: str, label: int, label_name: str) -> tuple[int, str]:
        """``(label, label_name)`` a writer of ``key`` records: -1 (unlabelled, its name as
        given), or an id of the store's classes with the store's name of it; else StoreError."""
        label, label_name = int(label), str(label_name)
        if label == -1:
            return label, label_name
        classes = self.classes
        if not 0 <= label < len(classes):  # another process may have given it classes since
            self._manifest = read_manifest(self._root)
            classes = self.classes
        if not 0 <= label < len(classes):
            raise StoreError(f"video {key!r}: {_no_label_id(self._root, classes, label)}")
        if label_name and label_name != classes[label]:
            raise StoreError(f"video {key!r}: label {label} is {classes[label]!r} in store "
                             f"{self._root}, not {label_name!r}; leave label_name out (the store "
                             f"names it) or give the id of {label_name!r} among its classes")
        return label, classes[label]

    def fill_labels(self, labels: dict[str, int], progress: Progress | None = None
                    ) -> tuple[list[str], dict[str, str]]:
        """Give each video of ``labels`` ({key: label id}) that the store holds unlabelled (-1)
        that label and its class name, recomputing nothing (``flowkit extract`` and ``import``
        reruns that label what the store lacks): a copy of its file with the new ``label`` /
        ``label_name`` replaces it under the commit lock (:func:`~flowkit.store.writer.relabel`),
        and ``index.json`` is brought up to date. A video another process labelled meanwhile
        keeps its label. Returns ``(keys labelled, {key: why not})``: one damaged file fails
        alone, and so does a key the store does not hold; a full disk raises
        :class:`~flowkit.errors.StoreWriteError`. The ids index the store's classes
        (:meth:`classes`): one beyond them, or -1, is a :class:`StoreError`. ``progress``: a bar
        over the videos (each file is copied: a large store takes a while)."""
        self._check_writable("label videos")
        classes = self.classes
        if any(label == -1 for label in labels.values()):
            raise StoreError(f"store {self._root}: label -1 means unlabelled; fill_labels only "
                             "sets labels (ids of the store's classes)")
        beyond = sorted({label for label in labels.values() if not 0 <= label < len(classes)})
        if beyond:
            raise StoreError(_no_label_id(self._root, classes, beyond[0]))
        done, failed = [], {}
        task = (progress or Progress()).start("filling in labels the store lacks",
                                              total=len(labels))
        for key, label in labels.items():
            if not self.is_complete(key):  # never held, or deleted meanwhile
                failed[key] = _not_held(self._root, key)
                task.advance()
                continue
            try:
                if relabel(self._video_path(key), self._root / VIDEOS, label, classes[label]):
                    done.append(key)
            except FileNotFoundError:  # deleted since it was looked for
                failed[key] = _not_held(self._root, key)
            except Exception as exc:  # HDF5's errors on a damaged file: OSError, RuntimeError
                error = storage_error(exc, self._root)
                if error is not None:
                    raise error from None
                failed[key] = (f"{self._video_path(key)}: its label could not be written "
                               f"({error_cause(exc)}); {redo_hint(key)}")
            task.advance()
        task.close()
        if done:
            self.metas(done)  # their files are new: indexed again now, not by the next reader
        return done, failed

    def claim(self, key: str, name: str) -> str | None:
        """Claim the computation of ``flow/<name>`` of ``key`` for this process
        (:mod:`flowkit.store.claims`): None when claimed, else who holds it (a live process; this
        one, when another of its claims holds it until :meth:`release`: another thread's)."""
        self._check_writable("claim videos")
        self.check_writable_key(key, name)
        path = os.path.realpath(claims.claim_path(self._video_path(key), name))
        with _held_lock:
            pid, since = _held.get(path, (None, ""))
            if pid == os.getpid():
                return (f"pid {pid} on {host_name()} (since {since}; this process, by a claim "
                        "not released yet)")
            _held[path] = (os.getpid(), now())  # before the file: a second thread waits on this
        claimed = False
        try:
            holder = claims.try_claim(self._root / VIDEOS, self._video_path(key), name)
            claimed = holder is None
            return holder
        except OSError as exc:
            raise storage_error(exc, self._root) or StoreError(
                f"store {self._root}: cannot claim {key!r}: {exc}") from None
        finally:
            if not claimed:  # held by another process, or failed: free for this one's next try
                with _held_lock:
                    _held.pop(path, None)

    def release(self, key: str, name: str) -> None:
        """Drop this process's claim on ``flow/<name>`` of ``key``."""
        claims.release(self._video_path(key), name)
        with _held_lock:  # after the file is gone: a thread claiming meanwhile is refused, never
            # given the file this release then deletes
            _held.pop(os.path.realpath(claims.claim_path(self._video_path(key), name)), None)

    @staticmethod
    def check_writable_key(key: str, name: str) -> str:
        """Return ``key`` if every file the store names after it while any process of this host
        computes ``flow/<name>`` of it (its claim's temporary, its partial file) fits the file
        system, else raise :class:`StoreError` saying how long its name may be. Extraction checks
        each video with it before starting any, so that a name too long fails that video alone."""
        ending = max(SUFFIX + claims.claim_ending(name), SUFFIX + partial_ending(WIDEST_PID),
                     key=lambda e: len(os.fsencode(e)))
        return check_key(key, ending)

    def remove_dead_writer(self, key: str, name: str, pid: int) -> list[Path]:
        """Delete what process ``pid`` of this host, which has ended, left of its work on
        ``flow/<name>`` of ``key``: its claim, its claim's temporary, its partial file and the
        store's commit lock file if it died holding it (``FLOWKIT_COMMIT_LOCK=file`` or no flock);
        return the deleted paths. For a run whose worker processes it terminated: their leftovers would
        otherwise stand until a run on this host checks their pids, and a run on another host
        would take the claims for live ones for 10 minutes and skip those videos. Nothing is
        deleted while ``pid`` still runs."""
        self._check_writable("remove partial files")
        if pid_alive(pid):
            return []
        final = self._video_path(key)
        claim = claims.claim_path(final, name)
        removed = [p for p in (*_partials_of(final, pid),
                               claim.with_name(claim.name + claims.link_ending(pid)))
                   if _unlink(p)]
        if claims.release(final, name, pid=pid):
            removed.append(claim)
        lock = claims.break_lock_of(self._root / VIDEOS / COMMIT_LOCK, pid)  # died committing
        return removed + ([lock] if lock is not None else [])

    def _check_writable(self, what: str) -> None:
        if self._mode != "a":
            raise StoreError(f"store {self._root} is open read-only; open it with mode='a' to {what}")

    def remove_partials(self, stale_after: float = STALE_PARTIAL_SECONDS) -> list[Path]:
        """Delete leftover ``.partial`` files, claims and manifest temporaries of dead writers;
        return the deleted paths.

        A partial written on this host is deleted when its writer is gone: its pid is no longer
        alive, or is this process's and no writer of this process has the file open, or its
        process started after the file was last changed (a restarted container reuses the old
        pids: :func:`_writer_gone`); unless its writer holds a fresh claim on the video recorded
        under another boot (another machine with this host name, whose pid means nothing here,
        judged by its claim's heartbeat). One from another host (a shared file system), whose
        pid cannot be checked, is deleted when untouched for ``STALE_CLAIM_SECONDS`` (10 minutes;
        ``stale_after`` if shorter): its writer touches it every minute, as it does its claims, so
        a rerun after a node failure removes the dead node's partials as it takes over its claims.
        One with an unrecognised name is deleted only when untouched for ``stale_after`` seconds
        (a day).
        Claims follow their own rule (:mod:`flowkit.store.claims`: pid here, heartbeat elsewhere).
        A leftover the file system refuses to delete (a read-only store: EACCES, EPERM, EROFS) is
        left where it is: readers ignore it, and a run with nothing to write goes on as without
        it (one that writes stops at its first write, with the storage error naming the fix).
        """
        self._check_writable("remove partial files")
        host, removed = host_name(), []
        for path in self._walk((PARTIAL, CLAIM, TMP_SUFFIX)):  # one walk: 300k videos take seconds
            try:
                if path.name.endswith(PARTIAL):
                    m = PARTIAL_RE.fullmatch(path.name)
                    mtime = path.stat().st_mtime
                    age = time.time() - mtime
                    dead = ((_writer_gone(path, int(m["pid"]), mtime)
                             and not claims.writes_elsewhere(path.with_name(f"{m['stem']}.h5"),
                                                             int(m["pid"])))
                            if m and m["host"] == host
                            else age > min(stale_after, STALE_CLAIM_SECONDS) if m
                            else age > stale_after)
                elif path.name.endswith(CLAIM):
                    # judged under the commit lock, which a read-only store refuses to open
                    if claims.remove_if_stale(self._root / VIDEOS, path):
                        removed.append(path)
                    continue
                else:
                    dead = is_stale_temporary(path.name, path.parent)
                if dead:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # its writer committed, aborted or released meanwhile
                continue
            except OSError as exc:
                if exc.errno not in REFUSED:
                    raise
        try:
            removed += remove_stale_temporaries(self._root)
        except OSError as exc:
            if exc.errno not in REFUSED:
                raise
        return removed

    # -- reading

    def _forget_open_files(self) -> None:
        """Start with no open files (a new, unpickled or forked store), closing none."""
        # Handles are cached per thread, each thread with its own LRU of max_open_files: a thread
        # evicts and closes only handles it opened, between its own reads, so it never closes a
        # file another thread is reading (one shared LRU did: healthy videos read as damaged).
        # A lock around one shared cache would also have to keep each handle open until every
        # read through it ended, i.e. hold it across the decode, which releases the GIL. HDF5
        # opens a file once per process however many handles name it (one descriptor), and a
        # handle's close() invalidates only the objects opened through it.
        self._local = threading.local()
        self._all_open: weakref.WeakSet[_OpenFiles] = weakref.WeakSet()  # for close()
        self._all_open_lock = threading.Lock()
        self._pid = os.getpid()

    def _open_files(self) -> "_OpenFiles":
        """This thread's open files, made on its first read; dropped when the thread ends (its
        handles close then, as nothing else refers to them)."""
        if self._pid != os.getpid():
            # Forked: the parent's handles share HDF5 state with it; forget them, never close them.
            self._forget_open_files()
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = _OpenFiles()
            with self._all_open_lock:
                self._all_open.add(files)
        return files

    @property
    def _handles(self) -> OrderedDict[str, h5py.File]:
        """This thread's open files, {key: handle}, least recently used first."""
        return self._open_files().handles

    @property
    def _codecs(self) -> dict[str, dict[str, tuple[Codec, np.ndarray | None]]]:
        """{key: {dataset path: (Codec, frame CRCs)}} of this thread's open handles, dropped with
        them: rebuilding a codec reads its dataset's attributes (about 0.2 ms), more than decoding
        a small frame; the CRCs (4 bytes a frame) another 0.03 ms."""
        return self._open_files().codecs

    def _file(self, key: str) -> h5py.File:
        files = self._open_files()
        f = files.handles.get(key)
        if f is not None:
            files.handles.move_to_end(key)
            return f
        path = self._video_path(key)
        # before opening: a file replaced in between is reopened once more, never kept stale
        version = _version(path)
        f = self._open_video(key)
        files.handles[key], files.versions[key] = f, version
        files.codecs[key] = {}  # the file may have been replaced since it was last open
        while len(files.handles) > self._max_open:
            # with its handle: 300k videos' codecs would hold 130 MB in each DataLoader worker
            files.drop(next(iter(files.handles)))
        return f

    def _reopen_if_replaced(self, key: str) -> bool:
        """Drop this thread's handle of ``key`` if its file was replaced since it was opened
        (another process committed a new flow into it); True if so. For what describes the file
        and for a flow or dataset the handle lacks: reads otherwise keep reading the file the
        handle opened (a ``stat`` per read would cost most on network file systems)."""
        files = self._open_files()
        if key not in files.handles or files.versions.get(key) == _version(self._video_path(key)):
            return False
        files.drop(key)
        return True

    def _open_video(self, key: str) -> h5py.File:
        path = self._video_path(key)
        if not path.is_file():
            self._check_still_there()
            hint = _extension_hint(key)  # 'cls/vid.mp4' for 'cls/vid': extracting again skips it
            if hint and self.is_complete(posixpath.splitext(key)[0]):
                raise StoreError(f"video {key!r} is not in store {self._root}{hint}")
            raise StoreError(f"video {key!r} is not in store {self._root} (not extracted, or "
                             f"unfinished); `flowkit extract` writes it{hint}")
        try:
            f = open_read(path)
        except OSError as e:
            if refused_read(e):  # a consumer of a shared store: the file may be sound
                raise StoreError(f"permission denied reading {path}; "
                                 f"{READ_PERMISSION_FIX}") from None
            if errno_of(e) == errno.ENOENT:
                self._check_still_there()
            raise StoreError(f"{path}: cannot be read as HDF5 ({e}); delete it and extract the "
                             "video again") from None
        try:
            check_video_header(f, path)
        except BaseException as exc:
            f.close()
            if isinstance(exc, Exception) and not isinstance(exc, StoreError):
                # the file opens but its root group does not (a damaged header): damage
                raise DamagedObject.of(str(path), "/", key, error_cause(exc)) from None
            raise
        return f

    def _check_still_there(self) -> None:
        """Raise :class:`StoreError` when the store itself is gone (its ``store.json``): a
        video missing then is not that video's fault (the store was moved or renamed while a
        run read it)."""
        if not (self._root / MANIFEST).exists():
            raise StoreError(f"store {self._root} is no longer there (moved or renamed?); rerun "
                             "with its new path (a training: flowkit train NEW_PATH -o RUN "
                             "--resume)")

    def _flow_group(self, key: str) -> h5py.Group | None:
        """``key``'s ``flow`` group, None when it has none; a damaged one raises
        :class:`~flowkit.errors.DamagedDataError` (:func:`~flowkit.store.reading.member`)."""
        return member(self._file(key), "flow", key)

    def _flow_dataset(self, key: str, name: str) -> h5py.Dataset:
        ds = self._flow_member(key, name)
        if ds is None and self._reopen_if_replaced(key):  # another process may have added it
            ds = self._flow_member(key, name)
        if ds is None:
            flow = self._flow_group(key)
            have = member_names(flow, key) if flow is not None else []
            raise StoreError(f"video {key!r} has no flow {name!r}; it has: "
                             f"{', '.join(have) or 'no flow'}")
        return ds

    def _flow_member(self, key: str, name: str) -> h5py.Dataset | None:
        flow = self._flow_group(key)
        return member(flow, name, key) if flow is not None else None

    def flows_on_disk(self, key: str) -> list[str]:
        """Flow names of ``key``'s finished file as it is on disk now (not through this process's
        cached handle, which may be an older version) whose datasets and their attributes open
        (:meth:`finished_state`); [] when there is none or it is unreadable (a damaged ``flow``
        group included)."""
        return self.finished_state(key)[0]

    def finished_state(self, key: str) -> tuple[list[str], str]:
        """``(flows, damage)`` of ``key``'s finished file as it is on disk now: the flow names
        whose datasets open (:meth:`flows_on_disk`) and the first damage that would make
        committing a new flow into it fail (:class:`~flowkit.store.writer.VideoWriter` merges
        what the file holds): a file HDF5 cannot open or never returns from, a damaged root,
        ``rgb`` or ``flow`` header, or a flow dataset whose header or attributes cannot be read
        (committing copies them, reading decodes with them: such a flow is not on disk), as one
        line naming the file and ``--redo``; "" when none (or there is no finished file).
        Extraction fails such a video before computing it."""
        path = self._video_path(key)
        names, damage = [], ""
        try:
            with open_read(path) as f:
                attributes(f, key)
                try:
                    member(f, "rgb", key)
                except DamagedObject as exc:
                    damage = str(exc)
                flow = member(f, "flow", key)
                for name in member_names(flow, key) if flow is not None else []:
                    try:
                        ds = member(flow, name, key)
                        if ds is not None:
                            attributes(ds, key)  # its header opens, its attributes may not
                            names.append(name)
                    except DamagedObject as exc:  # this flow's dataset: not on disk
                        damage = damage or str(exc)
        except FileNotFoundError:
            return [], ""
        except DamagedObject as exc:
            damage = damage or str(exc)
        except (OSError, KeyError, StoreError) as exc:
            if not path.exists():
                return [], ""
            damage = (f"{path}: cannot be read as HDF5 ({error_cause(exc)}); "
                      f"{redo_hint(key)}")
        return names, damage

    def imported(self, key: str) -> bool:
        """Whether ``flowkit import rawframes`` made the video (:func:`reading.imported_video`:
        its file's ``imported`` mark, or every flow of it imported), so that a message names the
        import, not ``flowkit extract``, as the way to add what it lacks."""
        return imported_video(self._file(key)) is not None

    def flow_names(self, key: str) -> list[str]:
        """Names of the flow datasets stored for ``key``, sorted (a damaged ``flow`` group raises
        :class:`~flowkit.errors.DamagedDataError`), of its file as it is now."""
        self._reopen_if_replaced(key)
        flow = self._flow_group(key)
        return member_names(flow, key) if flow is not None else []

    def meta(self, key: str) -> dict[str, Any]:
        """Root attributes of ``key`` plus ``flows`` ({name: attrs with params decoded, codec,
        codec_spec, shape, dtype}), ``has_rgb``, ``num_frames`` and ``rgb_codec`` (a spec).
        JSON-serialisable. :meth:`metas` gives the parts runs need of many videos at once. A group
        or dataset the file links but cannot open (a damaged object header) raises
        :class:`~flowkit.errors.DamagedDataError` naming the file, the object and ``--redo KEY``.
        Of the file as it is now, as :meth:`metas` (the reads after it then read that file)."""
        self._reopen_if_replaced(key)
        f = self._file(key)
        out = attributes(f, key)
        flows = {}
        rgb = member(f, "rgb", key)  # a damaged group or dataset raises DamagedDataError
        for name, ds in members(member(f, "flow", key), key).items():
            attrs = attributes(ds, key)
            if isinstance(attrs.get("params"), str):
                attrs["params"] = json.loads(attrs["params"])
            codec = self._codec_of(key, f"/flow/{name}", attrs)
            if codec.storage == "encoded":
                shape, dtype = [ds.shape[0], *attrs["frame_shape"]], "float32"
            else:
                shape, dtype = list(ds.shape), str(ds.dtype)
            flows[name] = {**attrs, "codec": codec.name, "codec_spec": codecs.codec_spec(codec),
                           "shape": shape, "dtype": dtype}
        out.update(flows=flows, has_rgb=rgb is not None, num_frames=int(out.get("frame_count", 0)))
        if rgb is not None:
            out["rgb_codec"] = codecs.codec_spec(self._codec(key, rgb, rgb=True))
        return out

    def read_flow(self, key: str, name: str = "tvl1", index: Any = slice(None),
                  dequantize: bool = True) -> np.ndarray:
        """Flow pairs of ``key``: float32 ``(N, 2, H, W)`` in pixels (``(2, H, W)`` for an int index).

        ``index`` is an int, a slice, or a list/array of ints (any order, repeats allowed). With
        ``dequantize=False`` an array codec's stored values come back as stored (float16, uint8);
        ``jpegls`` frames are always decoded.
        """
        ds = self._flow_dataset(key, name)
        codec, crcs = self._dataset_codec(key, ds)
        return read_frames(ds, codec, index, key, decode=dequantize or codec.storage == "encoded",
                           crcs=crcs)

    def read_rgb(self, key: str, index: Any = slice(None), decode: bool = True):
        """RGB frames of ``key``: uint8 ``(N, H, W, 3)`` (``(H, W, 3)`` for an int index).

        ``decode=False`` returns the frames as stored: for the ``jpeg`` codec a list of JPEG files
        (``bytes``; one ``bytes`` for an int index), what :meth:`rgb_codec` decodes; either way
        each frame's bytes are checked against their recorded CRC32."""
        ds = self._rgb_dataset(key)
        codec, crcs = self._dataset_codec(key, ds, rgb=True)
        return read_frames(ds, codec, index, key, decode=decode, crcs=crcs)

    def rgb_codec(self, key: str) -> Codec:
        """The codec of ``key``'s RGB frames (its ``quality`` for ``jpeg``)."""
        ds = self._rgb_dataset(key)
        return self._codec(key, ds, rgb=True)

    def _rgb_dataset(self, key: str) -> h5py.Dataset:
        ds = member(self._file(key), "rgb", key)  # damaged: DamagedDataError, never "no rgb"
        if ds is None and self._reopen_if_replaced(key):  # another process may have added it
            ds = member(self._file(key), "rgb", key)
        if ds is None:
            raise StoreError(f"video {key!r} has no rgb frames (extracted without --rgb)")
        return ds

    def _codec(self, key: str, ds: h5py.Dataset, rgb: bool = False) -> Codec:
        return self._dataset_codec(key, ds, rgb)[0]

    def _dataset_codec(self, key: str, ds: h5py.Dataset, rgb: bool = False
                       ) -> tuple[Codec, np.ndarray | None]:
        """The codec of ``key``'s dataset ``ds`` and its frame CRCs (:func:`reading.frame_crcs`,
        None where it has none), kept while its file is open."""
        known = self._codecs.setdefault(key, {})
        entry = known.get(ds.name)
        if entry is None:
            codec = self._codec_of(key, ds.name, attributes(ds, key), rgb)
            crcs = frame_crcs(ds, key) if codec.storage == "encoded" else None
            entry = known[ds.name] = (codec, crcs)
        return entry

    def _codec_of(self, key: str, name: str, attrs, rgb: bool = False) -> Codec:
        """:func:`codecs.codec_of`, its error naming the video's file and dataset (a codec of a
        newer flowkit, a damaged record)."""
        try:
            return codecs.codec_of(attrs, rgb=rgb)
        except StoreError as exc:
            imported = (str(self._video_path(key))
                        if attrs.get("backend") == IMPORTED_BACKEND else None)
            raise StoreError(f"{self._video_path(key)}: {name} of video {key!r}: {exc}; if a "
                             "newer flowkit wrote it, upgrade flowkit, else "
                             f"{redo_hint(key, imported, flow_name(name))}") from exc

    def close(self) -> None:
        """Close the files every thread of this process opened through this store, while none of
        them reads (a forked copy's inherited handles are left alone). Reading again reopens."""
        if self._pid != os.getpid():
            self._forget_open_files()
            return
        with self._all_open_lock:
            everyone = list(self._all_open)
        for files in everyone:
            files.close()

    def __enter__(self) -> "FlowStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # h5py handles cannot cross processes: a spawned DataLoader worker reopens lazily. A held
        # index (about 300 MB for 300k videos) is not sent either.
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_local", "_all_open", "_all_open_lock", "_held_index", "_checked",
                             "_holding", "_index_lock", "_index_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._forget_open_files()
        self._forget_held_index()

    def _forget_held_index(self) -> None:
        """No held index (a new or unpickled store): index.json as parsed, with its stamp, and the
        keys whose entries were found current, kept inside :meth:`index_held` blocks."""
        self._held_index: tuple[list[int] | None, Index] | None = None
        self._checked: set[str] = set()
        self._holding = 0
        self._index_lock, self._index_pid = threading.RLock(), os.getpid()

    def _index_guard(self) -> threading.RLock:
        """The lock of the held index: threads sharing the store hold it while they count blocks
        or read and extend the held copy (one thread's update of it broke another's walk over
        it). Made again in a forked child, where a thread of the parent may have held it."""
        if self._index_pid != os.getpid():
            self._index_lock, self._index_pid = threading.RLock(), os.getpid()
        return self._index_lock

    # -- whole-store views

    @contextlib.contextmanager
    def index_held(self) -> Iterator["FlowStore"]:
        """Inside the block, ``index.json`` is parsed once and kept for every :meth:`metas` and
        :meth:`summary` call, for as long as no other process rewrites it, and a video whose entry
        was found current is not checked again: a run that builds its split and datasets over
        300k videos parses the index once instead of three times (1.7 s and 283 MB each) and stats
        each file once (benchmarks/results/index_scale.md). A video replaced by another process
        during the block may be described as it was when the block first looked at it. All is
        dropped when the last block ends (the blocks of all threads sharing the store count)."""
        with self._index_guard():
            self._holding += 1
        try:
            yield self
        finally:
            with self._index_guard():
                self._holding -= 1
                if not self._holding:
                    self._held_index, self._checked = None, set()

    def _load_index(self) -> tuple[list[int] | None, Index]:
        """``(stamp, videos)`` of index.json: the held copy while it is current, else parsed."""
        stamp = index_stamp(self._root)
        if self._held_index is not None and stamp is not None and self._held_index[0] == stamp:
            return self._held_index
        videos = load_index(self._root)
        if self._holding:
            self._held_index = (stamp, videos)
        return stamp, videos

    def _update_index(self, loaded: dict[str, Entry], loaded_stamp: list[int] | None,
                      new: dict[str, Entry]) -> None:
        """Write ``loaded`` with the ``new`` entries added (:func:`update_index`). Inside
        :meth:`index_held` the held copy becomes what was written; where nothing can be written
        (a read-only store) ``new`` is added to the held copy instead, as the block serves the
        keys just read from it without a ``stat`` (they are checked)."""
        written = update_index(self._root, loaded, loaded_stamp, new)
        if not self._holding:
            return
        if written is not None:
            self._held_index = (index_stamp(self._root), written)
        elif self._held_index is not None:
            self._held_index[1].update(new)

    def summary(self, progress: Progress | None = None) -> dict[str, Any]:
        """Counts, sizes, engines and quantisation of the whole store; JSON-serialisable.

        Per-video facts are cached in ``index.json``, keyed by each file's (inode, size, mtime), so
        a summary of 300k videos opens only the files added or replaced since the last one (with a
        ``progress`` bar over them). The cache is rebuilt when missing or stale, written
        atomically, and safe to delete.
        """
        paths = dict(self._video_files())
        with self._index_guard():
            loaded_stamp, cached = self._load_index()
            found, new = indexed_facts(paths, paths.__getitem__, cached,
                                       self._checked if self._holding else None, progress)
            fresh, stats = {}, SummaryStats()
            with paused_gc():
                for key, entry in found.items():  # deleted by hand while we walked: not found
                    if entry.readable or entry.hung:
                        fresh[key] = entry
                    stats.add(key, paths[key], entry.stamp[1], entry.facts)
            if new or cached.outdated or fresh.keys() != cached.keys():
                self._update_index({}, loaded_stamp, fresh)
        m, result = self._manifest, stats.result()
        # first: a folder left out makes every count below short
        result["warnings"] = [*self._unreachable_lines(), *result["warnings"]]
        return {"path": str(self._root), "format": m["format"], "version": m["version"],
                "created": m.get("created"), "flowkit_version": m.get("flowkit_version"),
                "classes": {"count": len(self.classes), "names": self.classes},
                **result, "partials": len(self.partials())}

    def _unreachable_lines(self) -> list[str]:
        """:attr:`unreachable` as warnings and problems: each folder's line, saying its videos
        are not counted."""
        return [f"videos left out: {line}" for line in self.unreachable]

    def metas(self, keys: Sequence[str],
              progress: Progress | None = None) -> dict[str, dict[str, Any]]:
        """:meth:`meta` of many videos, abridged to what datasets read and extraction compares:
        ``height``, ``width``, ``source_height``, ``source_width``, ``step``, ``num_frames``,
        ``label``, ``has_rgb``, ``rgb_codec`` and ``flows`` ({name: ``codec_spec``,
        ``engine_version``, ``params``, ``bound``}), in the order of ``keys``. From
        ``index.json`` for every file unchanged since it was indexed (its inode, size and mtime):
        a run over 300k videos stats their files instead of opening each (about 4 ms a file); the
        new ones are read (with a ``progress`` bar over them) and added to the index. Videos that
        are missing or cannot be read are left out (:meth:`meta` says why). Videos indexed alike
        share one ``flows`` dict (:mod:`flowkit.store.index`): read the metas, never change them."""
        videos = os.path.join(self._root, VIDEOS)
        with self._index_guard():
            loaded_stamp, cached = self._load_index()
            found, new = indexed_facts(
                keys, lambda key: os.path.join(videos, check_key(key) + SUFFIX), cached,
                self._checked if self._holding else None, progress)
            if new or cached.outdated:
                self._update_index(cached, loaded_stamp, new)
        with paused_gc():
            return {key: found[key].meta for key in keys
                    if key in found and found[key].readable}

    def validate(self, deep: bool = False, progress: Progress | None = None) -> list[str]:
        """Check every complete video file; return problems as readable lines (empty: valid).

        Checks the format and version attributes, the ``complete`` flag, the key, dtypes, and
        dataset shapes against ``frame_count``/``height``/``width``. ``deep=True`` also decompresses
        every frame (slow; finds bit rot). Partial files are work to redo, not problems. Files are
        read in a child process, so one that HDF5 never returns from is a problem too
        (:mod:`flowkit.store.guard`). ``progress``: a bar over the videos (300k take about 15
        minutes), and with ``deep`` a second one over the frames' pass.
        """
        files = sorted(self._video_files())
        # Headers first, each file within the time limit (the reads HDF5 may loop on); then the
        # frames of the files whose headers are sound, without one (a long video takes minutes).
        found = counted(files, guarded_map(
            video_problems, [(Path(path), key, False) for key, path in files]),
            progress, "validating videos")
        if deep:
            sound = [f for f in files if found[f] == []]
            found.update(counted(sound, guarded_map(
                video_problems, [(Path(path), key, True) for key, path in sound], math.inf),
                progress, "decoding every frame of sound videos"))
        problems = self._unreachable_lines()
        for (key, path), found_here in found.items():
            if isinstance(found_here, Failed):
                found_here = [f"{found_here.reason}; {redo_hint(key)}"]
            problems += [f"{Path(path).relative_to(self._root)}: {p}" for p in found_here]
        return problems

    def problems_line(self, key: str) -> str:
        """Why ``key``'s finished file cannot be read, as one line naming the file and ``--redo``:
        what a shallow :meth:`validate` finds wrong with it, read the same way (in a guarded child
        process); for a file it finds nothing wrong with, that its facts cannot be read."""
        path, hint = self._video_path(key), redo_hint(key)
        [found] = guarded_map(video_problems, [(path, key, False)])
        problems = [found.reason] if isinstance(found, Failed) else found
        problems = [p.removesuffix(f"; {hint}") for p in problems]
        line = f"{path}: {'; '.join(problems) or 'its facts cannot be read'}"
        # the redo once, at the end; a problem's own repair (a flow's --method, a re-import) stands
        repaired = [p for p in problems if names_repair(p) or READ_PERMISSION_FIX in p]
        return line if problems and len(repaired) == len(problems) else f"{line}; {hint}"


class _OpenFiles:
    """The files one thread has open through a :class:`FlowStore`: ``handles`` ({key: h5py.File},
    least recently used first), the ``versions`` of their files when opened (:func:`_version`) and
    ``codecs`` (:attr:`FlowStore._codecs`), each dropped with its handle."""

    __slots__ = ("handles", "versions", "codecs", "__weakref__")

    def __init__(self):
        self.handles: OrderedDict[str, h5py.File] = OrderedDict()
        self.versions: dict[str, list[int] | None] = {}
        self.codecs: dict[str, dict[str, tuple[Codec, np.ndarray | None]]] = {}

    def drop(self, key: str) -> None:
        """Close and forget ``key``'s handle."""
        self.versions.pop(key, None)
        self.codecs.pop(key, None)
        self.handles.pop(key).close()

    def close(self) -> None:
        """Close and forget every handle."""
        while self.handles:
            self.drop(next(iter(self.handles)))


def _version(path: Path) -> list[int] | None:
    """Which version of a video file is at ``path`` (:func:`~flowkit.files.stamp`: a file
    replaced by a rename is a new inode); None when it cannot be told (gone, unreadable)."""
    try:
        return file_stamp(path)
    except OSError:
        return None


def _no_label_id(root: Path, classes: Sequence[str], label: int) -> str:
    """Why ``label`` names no class of the store at ``root`` (its ``classes``) and what to do, as
    one line: a store without classes takes a list (:func:`~flowkit.store.layout.merge_classes`),
    a store with classes keeps its list, so other classes need a new store."""
    if not classes:
        return (f"store {root} has no classes, so no label id {label}: open it with the classes "
                "the ids index first (FlowStore(path, 'a', classes=[...]): a store without "
                "classes takes them)")
    shown = first_few(classes, 5)
    return (f"store {root} has {len(classes)} classes ({shown}), so no label id {label}: its ids "
            f"are 0..{len(classes) - 1}; labels of other classes need a new "
            "store made with them (FlowStore(NEW_PATH, 'a', classes=[...]))")


def _not_held(root: Path, key: str) -> str:
    """Why :meth:`FlowStore.fill_labels` did not label ``key``: the store does not hold it (keys
    are paths without the video's extension: one with it is named without)."""
    return f"video {key!r} is not in store {root}, so it was not labelled{_extension_hint(key)}"


def _extension_hint(key: str) -> str:
    """``"; keys have no extension: 'cls/vid'"`` for a ``key`` ending in a video's extension
    (``'cls/vid.mp4'``), else ``""``: the store names a video by its path without extension."""
    stem, ext = posixpath.splitext(key)
    return (f"; keys have no extension: {stem!r}" if ext.lower() in VIDEO_EXTENSIONS and stem
            else "")


#: How much later than a partial file's last change its pid's process must have started to be a
#: later process given the pid (:func:`_writer_gone`), not its writer, which started before it
#: created the file: room for the file system's coarse or skewed clock (FAT keeps 2 s; NFS the
#: server's) and the tick of a process's start time.
PID_REUSE_SLACK_SECONDS = 5.0


def _writer_gone(partial: Path, pid: int, mtime: float) -> bool:
    """Whether process ``pid`` of this host, which the partial file ``partial`` (last modified at
    ``mtime``, seconds since the epoch) names, no longer writes it: the pid is not alive; or it is
    this process, and no writer of it has ``partial`` open; or it started after ``mtime``. A
    container restarted under its host name gives its new processes the old pids (flowkit is pid 1
    each time), so a live pid may be a later process's, as :mod:`~flowkit.store.claims` knows."""
    if not pid_alive(pid):
        return True
    if pid == os.getpid():
        return not is_open_partial(partial)
    started = process_start_time(pid)
    return started is not None and started > mtime + PID_REUSE_SLACK_SECONDS


def _partials_of(final: Path, pid: int) -> list[Path]:
    """The partial files of the video file ``final`` that process ``pid`` of this host names:
    one per writer it had open (numbered, :func:`~flowkit.store.layout.writer_number`), or one
    without a number (flowkit before writers were numbered)."""
    try:
        names = os.listdir(final.parent)
    except OSError:  # no such folder: nothing was written there
        return []
    found = [PARTIAL_RE.fullmatch(name) for name in names
             if name.startswith(final.name) and name.endswith(PARTIAL)]
    return [final.with_name(m.string) for m in found
            if m and f"{m['stem']}{SUFFIX}" == final.name and m["host"] == host_name()
            and int(m["pid"]) == pid]


def _unlink(path: Path) -> bool:
    """Delete ``path``; False when it is not there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


__all__ = ["FlowStore", "read_frames"]
