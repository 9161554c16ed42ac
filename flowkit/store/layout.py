"""The store's layout on disk: names, the manifest, partial files, and small shared helpers.

The format itself is described in :mod:`flowkit.store` and docs/architecture.md, "The store".
"""
from __future__ import annotations

import itertools
import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from ..errors import StoreError, shell_word
from ..files import (SAME_DIRECTORY, TMP_SUFFIX, atomic_write_json, dangling_link_note, fsync_dir,
                     host_name, link_into_place, walk_once)
from . import guard

FORMAT = "flowkit-store"
VERSION = 1
VIDEO_FORMAT = "flowkit-video"
# Version 2: datasets record their codec (flowkit/store/codecs.py); version-1 files still read.
VIDEO_VERSION = 2

MANIFEST = "store.json"
VIDEOS = "videos"
SUFFIX = ".h5"
PARTIAL = ".partial"
# videos/<key>.h5.<flow name>.claim: "this process is computing flow <name> of <key>" (claims.py).
CLAIM = ".claim"
# videos/.commit.lock: held (flock) while a finished video is merged and renamed into place.
COMMIT_LOCK = ".commit.lock"
# videos/.index.lock: held while index.json (store/summary.py) is merged with what other processes
# indexed and rewritten.
INDEX_LOCK = ".index.lock"

# The longest file name, in bytes, that file systems take (NAME_MAX: ext4, XFS, Btrfs, NFS,
# Lustre, GPFS); a key must leave room for the endings the store adds (check_key).
NAME_MAX = 255

# Readers keep at most this many files open per process: a store of 300k videos must not exhaust
# the file-descriptor limit of each DataLoader worker.
MAX_OPEN_FILES = 64

# A partial whose name does not say its writer's host and pid (not flowkit's) cannot be checked
# for a live writer; one untouched this long is stale. flowkit's own, from another host, are
# touched by their writer's heartbeat and judged as claims are (STALE_CLAIM_SECONDS).
STALE_PARTIAL_SECONDS = 24 * 3600.0
# A process touches the claims it holds every CLAIM_HEARTBEAT_SECONDS (store/claims.py); another
# host's claim not touched for STALE_CLAIM_SECONDS is the claim of a dead process (or host).
CLAIM_HEARTBEAT_SECONDS = 60.0
STALE_CLAIM_SECONDS = 10 * 60.0
# The widest pid a file name of the store may hold (Linux's PID_MAX_LIMIT, 2**22): keys are checked
# with it (check_key), so that whether a video's name fits does not depend on the pid of the
# process that happens to write it.
WIDEST_PID = 4194304

# Writers of a process are numbered (partial_ending): two writers of one video in one process
# (threads sharing a FlowStore, nested writers) each write their own partial, as two processes do.
# The numbers wrap at WIDEST_WRITER, so that keys are checked with its width (check_key); a writer
# would have to stay open across 2**32 others to meet its number again.
WIDEST_WRITER = 2**32 - 1

# <key>.h5.<host>.<pid>.<writer>.partial; a partial of flowkit before writers were numbered has
# no <writer>, and is judged by its host and pid alike (FlowStore.remove_partials).
PARTIAL_RE = re.compile(r"(?P<stem>.+)\.h5\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)"
                        r"(?:\.(?P<writer>\d+))?\.partial")

EXTRACT_HINT = "create it with `flowkit extract VIDEO_DIR -o STORE`"


def rebuild_hint(root) -> str:
    """The repair of a store whose store.json was lost or damaged (:func:`rebuild_manifest`), its
    path shell-quoted (:func:`~flowkit.errors.shell_word`) so that the command pastes."""
    return ("rebuild it from the videos' labels: "
            f"`flowkit info {shell_word(root)} --repair-manifest`")


# ----------------------------------------------------------------------------- small helpers

def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def flowkit_version() -> str:
    from ..version import __version__
    return __version__


def check_key(key: str, ending: str = SUFFIX) -> str:
    """Return ``key`` if it names a video inside the store (relative POSIX path) whose files fit
    the file system, else raise. ``ending``: the longest the store adds to the key's last part for
    the job (``.h5`` to read the video; to write it, ``.h5`` and :func:`partial_ending`, or a
    claim's, :func:`flowkit.store.claims.claim_ending`); with it, and each folder alone, a name
    takes at most :data:`NAME_MAX` bytes."""
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
        raise StoreError(f"invalid video key {key!r}: expected a relative path such as "
                         "'class/video' (no empty, '.' or '..' parts)")
    if 4 * len(key) + len(ending) > NAME_MAX:  # else short enough in any encoding: no encoding
        _check_name_lengths(key, parts, ending)
    return key


def _check_name_lengths(key: str, parts: list[str], ending: str) -> None:
    """Raise unless each folder of ``key`` (its ``parts``) and its last part with ``ending`` take
    at most :data:`NAME_MAX` bytes as file names."""
    for folder in parts[:-1]:
        if len(os.fsencode(folder)) > NAME_MAX:
            raise StoreError(f"video key {key!r}: its folder {folder!r} takes "
                             f"{len(os.fsencode(folder))} bytes, more than the {NAME_MAX} a file "
                             "name may take; rename that folder of the videos")
    name = os.fsencode(parts[-1] + ending)
    if len(name) > NAME_MAX:
        raise StoreError(
            f"video key {key!r} is too long: with {ending!r} added, as the store names its files, "
            f"its name takes {len(name)} bytes, more than the {NAME_MAX} a file name may take; "
            f"rename the video to at most {NAME_MAX - len(os.fsencode(ending))} bytes (without "
            "its extension)")


def partial_ending(pid: int | None = None, writer: int = WIDEST_WRITER) -> str:
    """What writer number ``writer`` (:func:`writer_number`) of this process (or of process
    ``pid``) adds to a finished video's name (``<key>.h5``) for the file it writes:
    ``.<host>.<pid>.<writer>.partial``. The default ``writer`` is the widest: the longest ending
    a writer of this process may add (for :func:`check_key`)."""
    return f".{host_name()}.{os.getpid() if pid is None else pid}.{writer}{PARTIAL}"


_writers = itertools.count()


def writer_number() -> int:
    """A number for a new writer, that no other writer of this process holds (for its partial
    file's name, :func:`partial_ending`): process-wide, so that two writers of one video (two
    threads, or nested writers) never truncate each other's partial file. Thread-safe: ``next``
    of an :func:`itertools.count` is one step under the GIL."""
    return next(_writers) % WIDEST_WRITER


def py_value(value: Any) -> Any:
    """An HDF5 attribute value as a plain, JSON-serialisable Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [py_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, (Path, set, frozenset)):
        return str(obj) if isinstance(obj, Path) else sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def engine_record(engine: Any, name: str) -> dict[str, Any]:
    """Validate an engine description ``{"engine", "version", "params"}`` (and the optional
    ``"backend"`` it computed with and ``"direction"``, "backward" for backward flow); params as
    JSON text."""
    if not isinstance(engine, dict) or not {"engine", "version", "params"} <= set(engine):
        raise StoreError(f"flow {name!r}: engine must be a dict with keys 'engine', 'version' and "
                         f"'params' (FlowEngine.describe() returns one), got {engine!r}")
    try:
        params = json.dumps(engine["params"], sort_keys=True, default=json_default)
    except TypeError as e:
        raise StoreError(f"flow {name!r}: engine params are not JSON-serialisable: {e}") from None
    record = {"engine": str(engine["engine"]), "engine_version": str(engine["version"]),
              "params": params}
    for key in ("backend", "direction"):
        if engine.get(key) is not None:
            record[key] = str(engine[key])
    return record


def comparable_params(params: dict) -> dict:
    """An engine record's ``params`` as two records of one configuration compare alike: a weights
    file by its content (``weights_sha256``) where that is recorded, not by its path (absolute
    since the digest came, as typed in older records), and no ``weights_sha256`` of None
    (records without weights written before the key existed have none)."""
    out = dict(params)
    if out.get("weights_sha256") is not None:
        out.pop("weights", None)
    else:
        out.pop("weights_sha256", None)
    return out


def as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu()
        if str(array.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            array = array.float()
        array = array.numpy()
    return np.asarray(array)


def open_read(path: Path) -> h5py.File:
    """Open a finished video read-only, without HDF5 file locking (finished files are immutable).
    A file that hung or crashed a guarded read in this process raises
    :class:`~flowkit.store.guard.HungFileError` (an ``OSError``) instead of being read again."""
    guard.check(path)
    try:
        return h5py.File(path, "r", locking=False)
    except (TypeError, ValueError):  # HDF5 < 1.12.1 has no locking switch
        return h5py.File(path, "r")
    except OSError:
        # HDF5 refuses a second open with other locking flags in one process (the caller has the
        # file open with default flags); a corrupt file fails this attempt too.
        return h5py.File(path, "r")


def check_video_header(f: h5py.File, path: Path) -> None:
    fmt, version = py_value(f.attrs.get("format")), py_value(f.attrs.get("version"))
    if fmt != VIDEO_FORMAT:
        raise StoreError(f"{path}: not a flowkit video file (format attribute {fmt!r})")
    if not isinstance(version, int) or version > VIDEO_VERSION:
        raise StoreError(f"{path}: written by a newer flowkit (format version {version} > "
                         f"{VIDEO_VERSION}); upgrade flowkit")


# ----------------------------------------------------------------------------- store.json

def read_manifest(root: Path) -> dict:
    manifest = root / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{manifest}: unreadable store manifest ({e}); if the directory is a "
                         f"flowkit store, {rebuild_hint(root)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreError(f"{root} is not a flowkit store ({MANIFEST} has format "
                         f"{data.get('format') if isinstance(data, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int):
        raise StoreError(f"{manifest}: corrupt manifest (version {version!r} is not an integer)")
    if version > VERSION:
        raise StoreError(f"{root} was written by a newer flowkit (format version {version} > "
                         f"{VERSION}); upgrade flowkit")
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise StoreError(f"{manifest}: corrupt manifest ('classes' must be a list of names)")
    return data


def check_not_file(root: Path) -> None:
    if root.is_file():
        if h5py.is_hdf5(root):
            raise StoreError(f"{root} is a plain HDF5 file, not a flowkit store; flowkit stores are "
                             f"directories ({MANIFEST} + {VIDEOS}/); {EXTRACT_HINT}")
        raise StoreError(f"{root} is a file, not a flowkit store (a store is a directory)")


def create_store(root: Path, classes: list[str]) -> dict:
    """Make ``root`` a store with ``classes``. Safe against other processes creating the same
    store concurrently: store.json is made exclusively (:func:`_write_new_manifest`), so one
    creator's classes stand; the others find the store made and merge their ``classes`` with it
    as they would with any existing store (:func:`merge_classes`: the same list, or one side
    empty; a caller that labels by name takes the store's order, :func:`class_ids`)."""
    root.mkdir(parents=True, exist_ok=True)
    # Other ranks' manifest temporaries may be here already; anything else means a foreign directory.
    others = [p.name for p in root.iterdir() if not p.name.startswith(MANIFEST + ".")]
    if MANIFEST not in others and others:
        raise StoreError(no_manifest(root, " and is not empty; choose a new or empty directory "
                                           "for the store"))
    created = MANIFEST not in others and _write_new_manifest(root, {
        "format": FORMAT, "version": VERSION, "classes": list(classes),
        "created": now(), "flowkit_version": flowkit_version()})
    (root / VIDEOS).mkdir(exist_ok=True)
    manifest = read_manifest(root)
    return manifest if created else merge_classes(root, manifest, classes)


def _write_new_manifest(root: Path, manifest: dict) -> bool:
    """Write ``root``'s store.json unless another process did first: True when this one did. A
    temporary linked into place (exclusive, on NFS too), not renamed over it: with a rename the
    last of two creators wins, and the first would go on with its class order, which the store
    no longer has (label ids that name other classes)."""

    tmp = root / f"{MANIFEST}.{host_name()}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            link_into_place(tmp, root / MANIFEST)
        except FileExistsError:  # another creator's store.json stands
            return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(root)
    return True


def no_manifest(root: Path, otherwise: str) -> str:
    """Why ``root``, without store.json, is no store: one holding ``videos/`` is a store that lost
    it (the repair: :func:`rebuild_manifest`); any other directory is told ``otherwise`` (what
    follows "is not a flowkit store (no store.json)")."""
    if (root / VIDEOS).is_dir():
        return (f"{root} has no {MANIFEST} but holds {VIDEOS}/: if it is a flowkit store whose "
                f"{MANIFEST} was lost, {rebuild_hint(root)}")
    return f"{root} is not a flowkit store (no {MANIFEST}){otherwise}"


def video_label(path: Path) -> tuple[int, str] | None:
    """``(label, label_name)`` of the finished video file ``path``; None where they cannot be read
    (for :func:`rebuild_manifest`, in a guarded child)."""
    try:
        with open_read(path) as f:
            return int(py_value(f.attrs["label"])), str(py_value(f.attrs["label_name"]))
    except (OSError, KeyError, ValueError, TypeError, RuntimeError):
        return None


def _parses(manifest: Path) -> bool:
    """Whether ``manifest`` holds JSON: only a lost or unparseable store.json is rebuilt, never
    one that parses (a newer flowkit's, or one a user can mend by hand)."""
    try:
        json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def walk_videos(videos: str | os.PathLike, lost: list[str]) -> Iterator[tuple[str, str]]:
    """``(folder, name)`` of every video file (``*.h5``) under ``videos``, as strings, each real
    folder once, links followed (:func:`~flowkit.files.walk_once`). The folders the walk cannot
    enter (a link that dangles, one this user may not list) go into ``lost`` as it goes, one
    line each naming the fix: their videos are missing from what it yields. A folder reached
    twice loses nothing and is not one."""
    notes: list[str] = []
    for folder, _, names in walk_once(videos, notes):
        lost += [n for n in notes if SAME_DIRECTORY not in n]
        notes.clear()
        for name in names:
            if name.endswith(SUFFIX):
                yield folder, name
            # not a video (a partial, a claim: few): a link to a folder that dangles?
            elif line := dangling_link_note(os.path.join(folder, name)):
                lost.append(line)
    lost += [n for n in notes if SAME_DIRECTORY not in n]


def rebuild_manifest(root: Path) -> list[str]:
    """Write the lost or unreadable store.json of the store ``root`` again and return its class
    list: name i is the ``label_name`` of the videos labelled i (each video records both), so
    the ids the videos hold keep their names. Refused (:class:`StoreError`) where store.json
    parses (nothing to rebuild: a newer flowkit's is kept), where the videos disagree on a name,
    or where an id up to the largest has no video to name it (a ``label_name`` of "" names
    nothing: such a video counts as a gap): then store.json is written by hand
    (docs/architecture.md, "The store": the class names in label-id order)."""
    manifest = root / MANIFEST
    if manifest.is_file() and _parses(manifest):  # a store of a newer flowkit parses: kept
        raise StoreError(f"{manifest} reads as JSON; there is nothing to rebuild (what "
                         f"`flowkit info {shell_word(root)}` says of it is the repair)")
    if not (root / VIDEOS).is_dir():
        raise StoreError(f"{root} holds no {VIDEOS}/: not a flowkit store to rebuild; "
                         f"{EXTRACT_HINT}")
    lost: list[str] = []  # the folders the walk could not enter
    paths = [Path(d, name) for d, name in walk_videos(root / VIDEOS, lost)]
    if lost:  # its videos' classes would be left out of the list, or their ids unnamed
        raise StoreError(f"{manifest} cannot be rebuilt while a folder of videos cannot be "
                         f"read: {lost[0]}")
    names: dict[int, set[str]] = {}
    held = {-1}
    for found in guard.guarded_map(video_label, [(p,) for p in paths]):
        if isinstance(found, tuple) and found[0] >= 0:
            held.add(found[0])
            if found[1]:  # "": a video that recorded its id without a name names nothing
                names.setdefault(found[0], set()).add(found[1])
    count = max(held) + 1
    gaps = [i for i in range(count) if i not in names]
    clash = {i: sorted(n) for i, n in names.items() if len(n) > 1}
    if gaps or clash:
        why = (f"label ids {gaps[:5]} have no video to name them" if gaps
               else f"videos name label ids differently: {dict(list(clash.items())[:3])}")
        raise StoreError(f"{manifest} cannot be rebuilt: {why}; write it by hand: "
                         f'{{"format": "{FORMAT}", "version": {VERSION}, "classes": [the class '
                         'names in label-id order]}')
    classes = [names[i].pop() for i in range(count)]
    atomic_write_json(manifest, {"format": FORMAT, "version": VERSION, "classes": classes,
                                 "created": now(), "flowkit_version": flowkit_version()})
    return classes


def class_ids(root: Path, requested: Sequence[str] | None, *, numbered: bool = False
              ) -> tuple[list[str] | None, list[int] | None]:
    """``(classes, ids)`` for a run that labels its videos with ``requested`` class names (label
    id i is ``requested[i]``) into the store at ``root``: ``classes`` the list to pass the store
    and ``ids[i]`` the store's id of ``requested[i]``, ``ids`` None when the run's ids stand (no
    store yet, a store without classes, the same list, no classes requested).

    A store keeps its class list: a run naming every class it names, in another order or some of
    them (a folder scan sorts ``HammerThrow`` before ``Hammering``, UCF101's classInd.txt does
    not), labels by name with the store's ids. An id either side calls ``class_<id>`` (no class
    folder named it: a store made from a class-subset list before the list's rows named its ids)
    keeps its id whatever the other side calls it (:func:`_stand_in_id`); the store's name stays
    (its videos record it). The store's stand-in takes the run's name only when the run's ids are
    ``numbered`` by its lists (annotations, split lists, a label map), not positions among sorted
    class folders, which would give a class a store id by chance. A run bringing classes the
    store lacks would need new ids: :class:`StoreError` naming the way out."""
    if not requested or not (root / MANIFEST).is_file():
        return (list(requested) if requested is not None else None), None
    stored = read_manifest(root).get("classes", [])
    if not stored or list(stored) == list(requested):
        return list(requested), None
    index = {name: i for i, name in enumerate(stored)}
    # a run with stand-ins of its own got its ids from a list (a folder scan names none)
    numbered = numbered or any(name == f"class_{i}" for i, name in enumerate(requested))
    ids = [index[name] if name in index else _stand_in_id(stored, requested, i, numbered)
           for i, name in enumerate(requested)]
    added = [name for name, i in zip(requested, ids) if i is None]
    if added:
        raise StoreError(f"{root} was created with {len(stored)} classes and this run has "
                         f"{len(added)} it lacks ({added[:5]}); label ids would not match: pass "
                         "the --split-list / --class-index / --label-map the store was made with "
                         "(or the same folder), or write a new store (-o NEW_STORE)")
    return list(stored), ids


def _stand_in_id(stored: Sequence[str], requested: Sequence[str], i: int,
                 numbered: bool) -> int | None:
    """``i``, the store's id for the run's class ``requested[i]`` that ``stored`` does not name,
    when either side's name for id ``i`` is the stand-in ``class_<i>``
    (:func:`flowkit.annotations.unnamed_ids`): that side knew the id, not its name, so the ids
    stand; the store's stand-in only for a run whose ids are ``numbered`` by its lists. None (a class the store lacks) where the store's name for ``i`` is
    another of the run's classes: two of them would share an id."""
    stand_in = f"class_{i}"
    if i >= len(stored) or stored[i] in requested:
        return None
    if requested[i] == stand_in or (stored[i] == stand_in and numbered):
        return i
    return None


def merge_classes(root: Path, manifest: dict, classes: Sequence[str] | None) -> dict:
    """Reconcile requested ``classes`` with the store's.

    Compatible means equal, or one side empty: a store without classes adopts the new list (its
    videos are all unlabelled, so no label id changes), and an empty request keeps the store's.
    Anything else would silently renumber labels, so it is an error: a caller that labels by
    name takes the store's order first (:func:`class_ids`, as extract and import do).
    """
    old = manifest.get("classes", [])
    new = list(classes or [])
    if not new or new == old:
        return manifest
    if old:
        added, missing = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        diff = (f"new {added[:5]}, missing {missing[:5]}" if added or missing
                else "same names, other order")
        raise StoreError(f"{root} was created with {len(old)} classes and this run has {len(new)} "
                         f"({diff}); label ids would not match: use a new store or the store's "
                         "classes in its order")
    manifest = dict(manifest, classes=new)
    atomic_write_json(root / MANIFEST, manifest)
    return manifest
