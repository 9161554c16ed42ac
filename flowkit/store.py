"""The flowkit feature store: a directory of per-video HDF5 files, crash-safe and lock-free.

Layout::

    STORE/
      store.json                 {"format": "flowkit-store", "version": 1, "classes": [...], ...}
      videos/<key>.h5            one finished video, e.g. videos/pan_left/pan_left_0.h5
      videos/<key>.h5.<host>.<pid>.partial
                                 a video being written by process <pid> on <host>; never read
      index.json                 optional cache of per-video facts for summary(); safe to delete

A video's ``<key>`` is its path relative to the source root without extension. Each ``.h5`` file
holds root attributes (``format="flowkit-video"``, ``version``, ``key``, ``source``, ``fps``,
``frame_count``, ``height``, ``width``, ``source_height``, ``source_width``, ``step``, ``label``,
``label_name``, ``created``, ``complete``) and the datasets

- ``rgb``: uint8 ``(T, H, W, 3)``, optional;
- ``flow/<name>``: ``(T-1, 2, H, W)``, float16, or uint8 quantised in ``[-bound, bound]``; channel 0
  horizontal, 1 vertical, in pixels at the stored resolution. Dequantise with ``q * scale + offset``
  (the dataset's ``scale`` and ``offset`` attributes; 1 and 0 for float16).

Every dataset is chunked per frame and compressed, so any frame range is read lazily.

Crash safety. HDF5 is not journaled: a process killed while writing can leave its file unreadable.
So a video is written to its own ``.partial`` file, which is flushed, closed and fsync'ed, then
atomically renamed (``os.replace``) to ``<key>.h5`` and the directory fsync'ed. A ``.h5`` file
therefore only ever exists complete, and the directory listing of ``videos/**/*.h5`` is the store's
list of finished videos (``index.json`` only caches facts about them, keyed by each file's
inode, size and mtime, and is rebuilt from the listing). A killed writer loses only the video it was
writing, whose ``.partial`` file readers ignore and :meth:`FlowStore.remove_partials` deletes.

Concurrency. Finished files are never modified in place (a redone video replaces the file through
a new inode), so readers open them with HDF5 file locking off and never block on, or are blocked by,
a writer; a reader that holds an old handle keeps reading the old, complete file. Any number of
processes (sharded extraction, torchrun ranks) may write different keys into the same store with no
lock beyond the atomic renames. Partial names carry host and pid so that a cleanup in one process
never deletes a file another live process is writing.

Readers open HDF5 files lazily and per process: :class:`FlowStore` caches handles (a bounded LRU),
drops the cache when it finds itself in a forked child and never pickles handles, so one store object
can be handed to a torch ``DataLoader`` with any number of workers.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from collections import Counter, OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from .errors import StoreError
from .files import atomic_write_json, fsync_dir, fsync_file

FORMAT = "flowkit-store"
VERSION = 1
VIDEO_FORMAT = "flowkit-video"
VIDEO_VERSION = 1

MANIFEST = "store.json"
VIDEOS = "videos"
SUFFIX = ".h5"
PARTIAL = ".partial"

FLOW_DTYPES = ("float16", "uint8")
DEFAULT_BOUND = 20.0

# Compression, measured on 16 TV-L1 flow fields (OpenCV DualTVL1, 240x320, float16, one chunk per
# frame; ratio = raw / stored bytes, times per frame, CPU):
#   gzip 4 + shuffle: ratio 1.78, write 6.1 ms, read 1.2 ms      lzf + shuffle: 1.60, 3.2 ms, 1.5 ms
#   gzip 4, no shuffle: 1.30                                      lzf, no shuffle: 1.04
#   uint8 quantised: gzip 4: 11.8, write 1.6 ms, read 0.5 ms      lzf: 5.1
# gzip 4 with shuffle stores 10% (float16) to 2.3x (uint8) less than lzf, reads as fast, and its
# extra write time is noise next to computing the flow; gzip is also in every HDF5 build (MATLAB,
# HDFView, h5py without plugins), lzf only in h5py. Shuffle only helps multi-byte types.
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4

# Readers keep at most this many files open per process: a store of 300k videos must not exhaust
# the file-descriptor limit of each DataLoader worker.
MAX_OPEN_FILES = 64

# Partials from another host cannot be checked for a live writer; one untouched this long is stale.
STALE_PARTIAL_SECONDS = 24 * 3600.0

_PARTIAL_RE = re.compile(r"(?P<stem>.+)\.h5\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.partial")

_EXTRACT_HINT = "create it with `flowkit extract VIDEO_DIR -o STORE`"


# ----------------------------------------------------------------------------- small helpers

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _flowkit_version() -> str:
    from .version import __version__
    return __version__


def _host() -> str:
    """This machine's name, reduced to characters that cannot be confused with the name's dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "localhost"


def _pid_alive(pid: int) -> bool:
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


def check_key(key: str) -> str:
    """Return ``key`` if it names a video inside the store (relative POSIX path), else raise."""
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
        raise StoreError(f"invalid video key {key!r}: expected a relative path such as "
                         "'class/video' (no empty, '.' or '..' parts)")
    return key


def _py(value: Any) -> Any:
    """An HDF5 attribute value as a plain, JSON-serialisable Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, (Path, set, frozenset)):
        return str(obj) if isinstance(obj, Path) else sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _engine_record(engine: Any, name: str) -> dict[str, Any]:
    """Validate an engine description ``{"engine", "version", "params"}`` (and the optional
    ``"backend"`` it computed with); params as JSON text."""
    if not isinstance(engine, dict) or not {"engine", "version", "params"} <= set(engine):
        raise StoreError(f"flow {name!r}: engine must be a dict with keys 'engine', 'version' and "
                         f"'params' (FlowEngine.describe() returns one), got {engine!r}")
    try:
        params = json.dumps(engine["params"], sort_keys=True, default=_json_default)
    except TypeError as e:
        raise StoreError(f"flow {name!r}: engine params are not JSON-serialisable: {e}") from None
    record = {"engine": str(engine["engine"]), "engine_version": str(engine["version"]),
              "params": params}
    if engine.get("backend") is not None:
        record["backend"] = str(engine["backend"])
    return record


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu()
        if str(array.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            array = array.float()
        array = array.numpy()
    return np.asarray(array)


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Float flow -> uint8: ``round((clip(f, -B, B) + B) * 255 / (2B))``. Shape is kept."""
    f = np.clip(flow.astype(np.float32, copy=False), -bound, bound)
    return np.rint((f + bound) * (255.0 / (2.0 * bound))).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 -> float32 flow: ``q * 2B / 255 - B``; error at most ``B / 255`` inside the bound."""
    return q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)


def _open_read(path: Path) -> h5py.File:
    """Open a finished video read-only, without HDF5 file locking (finished files are immutable)."""
    try:
        return h5py.File(path, "r", locking=False)
    except (TypeError, ValueError):  # HDF5 < 1.12.1 has no locking switch
        return h5py.File(path, "r")
    except OSError:
        # HDF5 refuses a second open with other locking flags in one process (the caller has the
        # file open with default flags); a corrupt file fails this attempt too.
        return h5py.File(path, "r")


def _check_video_header(f: h5py.File, path: Path) -> None:
    fmt, version = _py(f.attrs.get("format")), _py(f.attrs.get("version"))
    if fmt != VIDEO_FORMAT:
        raise StoreError(f"{path}: not a flowkit video file (format attribute {fmt!r})")
    if not isinstance(version, int) or version > VIDEO_VERSION:
        raise StoreError(f"{path}: written by a newer flowkit (format version {version} > "
                         f"{VIDEO_VERSION}); upgrade flowkit")


# ----------------------------------------------------------------------------- store.json

def _read_manifest(root: Path) -> dict:
    manifest = root / MANIFEST
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{manifest}: unreadable store manifest ({e}); if the directory is a "
                         "flowkit store, rewrite store.json or extract again") from None
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


def _check_not_file(root: Path) -> None:
    if root.is_file():
        if h5py.is_hdf5(root):
            raise StoreError(f"{root} is a plain HDF5 file, not a flowkit store; flowkit stores are "
                             f"directories ({MANIFEST} + {VIDEOS}/); {_EXTRACT_HINT}")
        raise StoreError(f"{root} is a file, not a flowkit store (a store is a directory)")


def _create_store(root: Path, classes: list[str]) -> dict:
    """Make ``root`` a store. Safe against other processes creating the same store concurrently."""
    root.mkdir(parents=True, exist_ok=True)
    # Other ranks' manifest temporaries may be here already; anything else means a foreign directory.
    others = [p.name for p in root.iterdir() if not p.name.startswith(MANIFEST + ".")]
    if MANIFEST not in others and others:
        raise StoreError(f"{root} is not a flowkit store (no {MANIFEST}) and is not empty; "
                         "choose a new or empty directory for the store")
    if MANIFEST not in others:
        atomic_write_json(root / MANIFEST, {
            "format": FORMAT, "version": VERSION, "classes": list(classes),
            "created": _now(), "flowkit_version": _flowkit_version()})
    (root / VIDEOS).mkdir(exist_ok=True)
    return _read_manifest(root)


def _merge_classes(root: Path, manifest: dict, classes: Sequence[str] | None) -> dict:
    """Reconcile requested ``classes`` with the store's.

    Compatible means equal, or one side empty: a store without classes adopts the new list (its
    videos are all unlabelled, so no label id changes), and an empty request keeps the store's.
    Anything else would silently renumber labels, so it is an error.
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
                         f"({diff}); label ids would not match: use a new store or the same classes")
    manifest = dict(manifest, classes=new)
    atomic_write_json(root / MANIFEST, manifest)
    return manifest


# ----------------------------------------------------------------------------- writing

class VideoWriter:
    """Streams one video's frames and flow into ``<key>.h5.<host>.<pid>.partial``; a context manager.

    On a clean exit the file is checked, marked complete, flushed, fsync'ed and renamed to
    ``<key>.h5``; on an exception it is deleted and the exception propagates. Obtain one from
    :meth:`FlowStore.writer`.
    """

    def __init__(self, final: Path, attrs: dict[str, Any], flow_dtype: str, flow_bound: float,
                 extend: bool = False):
        self.final = final
        self._extend = extend
        self.partial = final.with_name(f"{final.name}.{_host()}.{os.getpid()}{PARTIAL}")
        self._attrs = attrs
        self._flow_dtype = flow_dtype
        self._bound = float(flow_bound)
        self._file: h5py.File | None = None
        self._size: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        return self._attrs["key"]

    def __enter__(self) -> "VideoWriter":
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # libver v110: compact chunk indexes for streamed datasets, readable by HDF5 >= 1.10.
        try:
            self._file = h5py.File(self.partial, "w", libver=("v110", "v110"))
            self._file.attrs.update(self._attrs)
            if self._extend and self.final.exists():
                self._copy_existing()
            self._file.attrs["complete"] = False
        except BaseException:  # also Ctrl-C: __exit__ will not run, so clean up here
            self._abort()
            raise
        return self

    def _copy_existing(self) -> None:
        """Start from the finished file's datasets and attributes (copy-on-write): a second engine
        adds ``flow/<other>`` without ever modifying the finished file in place. HDF5 copies the
        compressed chunks as they are."""
        with _open_read(self.final) as src:
            for name in src:
                src.copy(src[name], self._file, name=name)
            kept = {k: v for k, v in src.attrs.items() if k not in ("created", "complete")}
            self._file.attrs.update(kept)
            self._size = (int(src.attrs["height"]), int(src.attrs["width"]))

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort()
            return False
        try:
            self._commit()
        except BaseException:
            self._abort()
            raise
        return False

    # -- appending

    def append_rgb(self, frames: np.ndarray) -> None:
        """Append RGB frames ``(N, H, W, 3)`` uint8."""
        frames = _as_numpy(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise StoreError(f"video {self.key!r}: rgb frames must be uint8 (N, H, W, 3), got "
                             f"{frames.dtype} {frames.shape}")
        self._append("rgb", frames, frames.shape[1:3], attrs={})

    def append_flow(self, name: str, flow: Any, engine: dict | None = None) -> None:
        """Append flow ``(N, 2, H, W)`` (numpy or torch, float, pixels) to ``flow/<name>``.

        ``engine`` (``{"engine", "version", "params"}``, e.g. ``FlowEngine.describe()``) is required
        on the first call for a name and recorded; a later call may omit it but must not change it.
        """
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise StoreError(f"flow name {name!r} must be a non-empty word such as 'tvl1' "
                             "(letters, digits, _ . + -)")
        flow = _as_numpy(flow)
        if flow.ndim != 4 or flow.shape[1] != 2 or not np.issubdtype(flow.dtype, np.floating):
            raise StoreError(f"video {self.key!r}: flow {name!r} must be float (N, 2, H, W), got "
                             f"{flow.dtype} {flow.shape}")
        if not np.isfinite(flow).all():
            raise StoreError(f"video {self.key!r}: flow {name!r} contains NaN or inf values")
        path = f"flow/{name}"
        attrs = self._flow_attrs(name, engine, exists=path in self._require_file())
        data = quantize(flow, self._bound) if self._flow_dtype == "uint8" else flow.astype(np.float16)
        if self._flow_dtype == "float16" and not np.isfinite(data).all():
            raise StoreError(f"video {self.key!r}: flow {name!r} exceeds the float16 range (65504 "
                             "pixels); the engine output is broken")
        self._append(path, data, flow.shape[2:4], attrs)

    def _flow_attrs(self, name: str, engine: dict | None, exists: bool) -> dict[str, Any]:
        if engine is None:
            if not exists:
                raise StoreError(f"video {self.key!r}: the first append_flow({name!r}, ...) needs "
                                 "engine={'engine', 'version', 'params'} (FlowEngine.describe())")
            return {}
        record = _engine_record(engine, name)
        if exists:
            stored = {k: _py(self._file[f"flow/{name}"].attrs.get(k)) for k in record}
            if stored != record:
                raise StoreError(f"video {self.key!r}: flow {name!r} was started with engine "
                                 f"{stored} and continued with {record}")
            return {}
        if self._flow_dtype == "uint8":
            quant = {"quantization": "uint8", "bound": self._bound,
                     "scale": 2.0 * self._bound / 255.0, "offset": -self._bound}
        else:
            quant = {"quantization": "float16", "scale": 1.0, "offset": 0.0}
        return {**record, **quant}

    def _require_file(self) -> h5py.File:
        if self._file is None:
            raise StoreError(f"video {self.key!r}: use the writer as a context manager "
                             "(`with store.writer(key, ...) as w:`) and append inside the block")
        return self._file

    def _append(self, path: str, data: np.ndarray, size: tuple[int, int],
                attrs: dict[str, Any]) -> None:
        f = self._require_file()
        size = (int(size[0]), int(size[1]))
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise StoreError(f"video {self.key!r}: {path} batch is {size[0]}x{size[1]} but this "
                             f"video is stored at {self._size[0]}x{self._size[1]}")
        if path not in f:
            frame = data.shape[1:]
            f.create_dataset(path, shape=(0, *frame), maxshape=(None, *frame), dtype=data.dtype,
                             chunks=(1, *frame), compression=COMPRESSION,
                             compression_opts=COMPRESSION_LEVEL, shuffle=data.dtype.itemsize > 1)
        ds = f[path]
        ds.attrs.update(attrs)
        n = ds.shape[0]
        ds.resize(n + data.shape[0], axis=0)
        ds[n:] = data

    # -- finishing

    def _commit(self) -> None:
        f = self._require_file()
        lengths = {name: f[f"flow/{name}"].shape[0] for name in f.get("flow", {})}
        if "rgb" not in f and not lengths:
            raise StoreError(f"video {self.key!r}: nothing was written (no rgb, no flow); "
                             "refusing to store an empty video")
        frame_count = f["rgb"].shape[0] if "rgb" in f else next(iter(lengths.values())) + 1
        wrong = {n: k for n, k in lengths.items() if k != frame_count - 1}
        if wrong:
            raise StoreError(f"video {self.key!r}: flow lengths {wrong} do not match "
                             f"{frame_count} frames (flow must have frame_count - 1 = "
                             f"{frame_count - 1} pairs)")
        f.attrs.update({"frame_count": frame_count, "height": self._size[0],
                        "width": self._size[1], "complete": True})
        f.flush()
        f.close()
        self._file = None
        fsync_file(self.partial)
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)

    def _abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # the file is being deleted; its close error hides nothing useful
                pass
            self._file = None
        self.partial.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the store

class FlowStore:
    """A flowkit feature store (a directory); see the module docstring for layout and guarantees.

    ``FlowStore(path)`` opens an existing store read-only; ``FlowStore(path, mode="a",
    classes=[...])`` creates it if missing and allows writing. Reading is lazy and safe in many
    DataLoader worker processes. Keys are video paths relative to the source root without extension.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r", *,
                 classes: Sequence[str] | None = None, max_open_files: int = MAX_OPEN_FILES):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read) or 'a' (create/append), got {mode!r}")
        self._root = Path(path)
        self._mode = mode
        self._max_open = max(1, int(max_open_files))
        self._manifest = self._open_manifest(classes)
        self._handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def _open_manifest(self, classes: Sequence[str] | None) -> dict:
        root = self._root
        _check_not_file(root)
        if self._mode == "a" and (not root.exists() or not (root / MANIFEST).exists()):
            return _create_store(root, list(classes or []))
        if not root.exists():
            raise StoreError(f"store {root} does not exist; {_EXTRACT_HINT}")
        if not (root / MANIFEST).is_file():
            raise StoreError(f"{root} is not a flowkit store (no {MANIFEST}); {_EXTRACT_HINT}")
        manifest = _read_manifest(root)
        if self._mode == "a":
            (root / VIDEOS).mkdir(exist_ok=True)
            manifest = _merge_classes(root, manifest, classes)
        return manifest

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

    def _walk(self, suffix: str) -> Iterator[Path]:
        for dirpath, _, files in os.walk(self._root / VIDEOS):
            for name in files:
                if name.endswith(suffix):
                    yield Path(dirpath, name)

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self._root / VIDEOS).as_posix()[: -len(SUFFIX)]

    def keys(self) -> list[str]:
        """Keys of the complete videos, sorted."""
        return sorted(self._key_of(p) for p in self._walk(SUFFIX))

    def __len__(self) -> int:
        return sum(1 for _ in self._walk(SUFFIX))

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

    # -- writing

    def writer(self, key: str, *, source: str | os.PathLike, fps: float, label: int = -1,
               label_name: str = "", source_size: tuple[int, int] | None = None, step: int = 1,
               flow_dtype: str = "float16", flow_bound: float = DEFAULT_BOUND,
               extend: bool = False) -> VideoWriter:
        """A :class:`VideoWriter` for ``key``: use as ``with store.writer(key, ...) as w``.

        ``source_size`` is the decoded video's (height, width) before any resize (-1 if unknown);
        ``flow_dtype`` is ``"float16"`` or ``"uint8"`` (quantised in ``[-flow_bound, flow_bound]``
        pixels). Committing replaces an existing finished video of the same key; with ``extend``
        the new file first takes over that video's datasets and attributes, so another engine's
        flow is added beside them (e.g. ``flow/tvnet`` next to ``flow/tvl1``).
        """
        if self._mode != "a":
            raise StoreError(f"store {self._root} is open read-only; open it with mode='a' to write")
        if flow_dtype not in FLOW_DTYPES:
            raise StoreError(f"flow_dtype must be one of {FLOW_DTYPES}, got {flow_dtype!r}")
        if not (np.isfinite(flow_bound) and flow_bound > 0):
            raise StoreError(f"flow_bound must be a positive number of pixels, got {flow_bound!r}")
        sh, sw = source_size if source_size is not None else (-1, -1)
        attrs = {"format": VIDEO_FORMAT, "version": VIDEO_VERSION, "key": key,
                 "source": str(source), "fps": float(fps), "source_height": int(sh),
                 "source_width": int(sw), "step": int(step), "label": int(label),
                 "label_name": str(label_name), "created": _now(),
                 "flowkit_version": _flowkit_version()}
        return VideoWriter(self._video_path(key), attrs, flow_dtype, flow_bound, extend)

    def remove_partials(self, stale_after: float = STALE_PARTIAL_SECONDS) -> list[Path]:
        """Delete leftover ``.partial`` files of dead writers; return the deleted paths.

        A partial written on this host is deleted when its writer's pid is no longer alive. One
        from another host (a shared file system), or with an unrecognised name, is deleted only when
        untouched for ``stale_after`` seconds, as a live writer there cannot be detected otherwise.
        """
        if self._mode != "a":
            raise StoreError(f"store {self._root} is open read-only; open it with mode='a' to "
                             "remove partial files")
        host, removed = _host(), []
        for path in self.partials():
            m = _PARTIAL_RE.fullmatch(path.name)
            try:
                if m and m["host"] == host:
                    dead = not _pid_alive(int(m["pid"]))
                else:
                    dead = time.time() - path.stat().st_mtime > stale_after
                if dead:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # its writer committed or aborted meanwhile
                continue
        return removed

    # -- reading

    def _file(self, key: str) -> h5py.File:
        if self._pid != os.getpid():
            # Forked: the parent's handles share HDF5 state with it; forget them, never close them.
            self._handles, self._pid = OrderedDict(), os.getpid()
        f = self._handles.get(key)
        if f is not None:
            self._handles.move_to_end(key)
            return f
        f = self._open_video(key)
        self._handles[key] = f
        while len(self._handles) > self._max_open:
            self._handles.popitem(last=False)[1].close()
        return f

    def _open_video(self, key: str) -> h5py.File:
        path = self._video_path(key)
        if not path.is_file():
            raise StoreError(f"video {key!r} is not in store {self._root} (not extracted, or "
                             "unfinished); `flowkit extract` writes it")
        try:
            f = _open_read(path)
        except OSError as e:
            raise StoreError(f"{path}: cannot be read as HDF5 ({e}); delete it and extract the "
                             "video again") from None
        try:
            _check_video_header(f, path)
        except StoreError:
            f.close()
            raise
        return f

    def _flow_dataset(self, key: str, name: str) -> h5py.Dataset:
        f = self._file(key)
        if name not in f.get("flow", {}):
            have = sorted(f.get("flow", {}))
            raise StoreError(f"video {key!r} has no flow {name!r}; it has: "
                             f"{', '.join(have) or 'no flow'}")
        return f[f"flow/{name}"]

    def flow_names(self, key: str) -> list[str]:
        """Names of the flow datasets stored for ``key``, sorted."""
        return sorted(self._file(key).get("flow", {}))

    def meta(self, key: str) -> dict[str, Any]:
        """Root attributes of ``key`` plus ``flows`` ({name: attrs with params decoded, shape,
        dtype}), ``has_rgb`` and ``num_frames``. JSON-serialisable."""
        f = self._file(key)
        out = {k: _py(v) for k, v in f.attrs.items()}
        flows = {}
        for name, ds in f.get("flow", {}).items():
            attrs = {k: _py(v) for k, v in ds.attrs.items()}
            if isinstance(attrs.get("params"), str):
                attrs["params"] = json.loads(attrs["params"])
            flows[name] = {**attrs, "shape": list(ds.shape), "dtype": str(ds.dtype)}
        out.update(flows=flows, has_rgb="rgb" in f, num_frames=int(out.get("frame_count", 0)))
        return out

    def read_flow(self, key: str, name: str = "tvl1", index: Any = slice(None),
                  dequantize: bool = True) -> np.ndarray:
        """Flow pairs of ``key``: float32 ``(N, 2, H, W)`` in pixels (``(2, H, W)`` for an int index).

        ``index`` is an int, a slice, or a list/array of ints (any order, repeats allowed). With
        ``dequantize=False`` the stored values come back as stored (float16 or uint8).
        """
        ds = self._flow_dataset(key, name)
        data = _take(ds, index, key)
        if not dequantize:
            return data
        if ds.dtype == np.uint8:
            scale, offset = np.float32(ds.attrs["scale"]), np.float32(ds.attrs["offset"])
            return data.astype(np.float32) * scale + offset
        return data.astype(np.float32)

    def read_rgb(self, key: str, index: Any = slice(None)) -> np.ndarray:
        """RGB frames of ``key``: uint8 ``(N, H, W, 3)`` (``(H, W, 3)`` for an int index)."""
        f = self._file(key)
        if "rgb" not in f:
            raise StoreError(f"video {key!r} has no rgb frames (extracted without --rgb)")
        return _take(f["rgb"], index, key)

    def close(self) -> None:
        """Close the files this process opened (a forked copy's inherited handles are left alone)."""
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles = OrderedDict()
        self._pid = os.getpid()

    def __enter__(self) -> "FlowStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # h5py handles cannot cross processes: a spawned DataLoader worker reopens lazily.
        return {k: v for k, v in self.__dict__.items() if k != "_handles"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._handles = OrderedDict()

    # -- whole-store views

    def summary(self) -> dict[str, Any]:
        """Counts, sizes, engines and quantisation of the whole store; JSON-serialisable.

        Per-video facts are cached in ``index.json``, keyed by each file's (inode, size, mtime), so
        a summary of 300k videos opens only the files added or replaced since the last one. The
        cache is rebuilt when missing or stale, written atomically, and safe to delete.
        """
        cached, fresh, stats = _load_index(self._root), {}, _SummaryStats()
        for path in self._walk(SUFFIX):
            key = self._key_of(path)
            try:
                st = path.stat()
            except FileNotFoundError:  # deleted by hand while we walked
                continue
            stamp = [st.st_ino, st.st_size, st.st_mtime_ns]
            entry = cached.get(key)
            facts = entry["facts"] if isinstance(entry, dict) and entry.get("stamp") == stamp \
                else _video_facts(path)
            if facts is not None:
                fresh[key] = {"stamp": stamp, "facts": facts}
            stats.add(path, st.st_size, facts)
        if fresh != cached:
            _save_index(self._root, fresh)
        m = self._manifest
        return {"path": str(self._root), "format": m["format"], "version": m["version"],
                "created": m.get("created"), "flowkit_version": m.get("flowkit_version"),
                "classes": {"count": len(self.classes), "names": self.classes},
                **stats.result(), "partials": len(self.partials())}

    def validate(self, deep: bool = False) -> list[str]:
        """Check every complete video file; return problems as readable lines (empty: valid).

        Checks the format and version attributes, the ``complete`` flag, the key, dtypes, and
        dataset shapes against ``frame_count``/``height``/``width``. ``deep=True`` also decompresses
        every frame (slow; finds bit rot). Partial files are work to redo, not problems.
        """
        problems = []
        for path in sorted(self._walk(SUFFIX)):
            problems += [f"{path.relative_to(self._root)}: {p}"
                         for p in _video_problems(path, self._key_of(path), deep)]
        return problems


def _take(ds: h5py.Dataset, index: Any, key: str) -> np.ndarray:
    """``ds[index]`` along axis 0 for an int, slice or list of ints (any order, repeats allowed)."""
    n = ds.shape[0]
    if isinstance(index, slice):
        if index.step is None or index.step > 0:
            return ds[index]
        index = list(range(*index.indices(n)))  # h5py cannot step backwards
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"video {key!r}: index {i} out of range for {n} frames of {ds.name}")
        return ds[i % n]
    idx = np.asarray(index)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise IndexError(f"video {key!r}: index must be an int, a slice or a list of ints, "
                         f"got {index!r}")
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"video {key!r}: index out of range for {n} frames of {ds.name}")
    idx = idx.astype(np.int64) % max(n, 1)
    # Each distinct frame is read once, then put in the asked order. One read per frame: h5py's
    # fancy (list) selection was measured 10-20x slower than int reads on per-frame chunks.
    unique, inverse = np.unique(idx, return_inverse=True)
    if not unique.size:
        return ds[:0]
    return np.stack([ds[int(i)] for i in unique])[inverse]


INDEX = "index.json"
INDEX_FORMAT = "flowkit-store-index"


def _video_facts(path: Path) -> dict[str, Any] | None:
    """What :meth:`FlowStore.summary` needs from one video file (JSON); None if unreadable."""
    try:
        with _open_read(path) as f:
            a = f.attrs
            flows = {}
            for name, ds in f.get("flow", {}).items():
                d = ds.attrs
                quant = _py(d["quantization"])
                if quant == "uint8":
                    quant = f"uint8 (bound {float(d['bound']):g})"
                flows[name] = {"pairs": ds.shape[0], "engine": _py(d["engine"]),
                               "version": _py(d["engine_version"]), "params": _py(d["params"]),
                               "backend": _py(d.get("backend", "torch")),
                               "quantization": quant}
            return {"frames": int(a["frame_count"]), "size": f"{int(a['height'])}x{int(a['width'])}",
                    "rgb_frames": f["rgb"].shape[0] if "rgb" in f else 0, "flows": flows}
    except (OSError, KeyError, ValueError):
        return None


def _load_index(root: Path) -> dict[str, Any]:
    """The summary cache ``index.json``: {key: {"stamp", "facts"}}; empty when absent or unusable."""
    try:
        data = json.loads((root / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("format") == INDEX_FORMAT and data.get("version") == 1
    return data.get("videos", {}) if ok and isinstance(data.get("videos"), dict) else {}


def _save_index(root: Path, videos: dict[str, Any]) -> None:
    try:
        atomic_write_json(root / INDEX, {"format": INDEX_FORMAT, "version": 1, "videos": videos})
    except OSError:  # a read-only store still summarises, just without the cache
        pass


class _SummaryStats:
    """Accumulates per-video facts for :meth:`FlowStore.summary`."""

    def __init__(self):
        self.videos = self.frames = self.rgb_frames = self.bytes = 0
        self.unreadable: list[str] = []
        self.pairs: Counter = Counter()
        self.engines: dict[str, Counter] = {}
        self.quant: dict[str, set] = {}
        self.backends: dict[str, set] = {}
        self.sizes: Counter = Counter()

    def add(self, path: Path, nbytes: int, facts: dict[str, Any] | None) -> None:
        self.videos += 1
        self.bytes += nbytes
        if facts is None:
            self.unreadable.append(str(path))
            return
        self.frames += facts["frames"]
        self.rgb_frames += facts["rgb_frames"]
        self.sizes[facts["size"]] += 1
        for name, flow in facts["flows"].items():
            self.pairs[name] += flow["pairs"]
            config = (flow["engine"], flow["version"], flow["params"])
            self.engines.setdefault(name, Counter())[config] += 1
            self.quant.setdefault(name, set()).add(flow["quantization"])
            self.backends.setdefault(name, set()).add(flow.get("backend", "torch"))

    def result(self) -> dict[str, Any]:
        engines, warnings = {}, []
        for name, configs in sorted(self.engines.items()):
            (engine, version, params), _ = configs.most_common(1)[0]
            engines[name] = {"engine": engine, "version": version, "params": json.loads(params)}
            if len(configs) > 1:
                warnings.append(f"flow {name!r} was made with {len(configs)} different engine "
                                "configurations; the most common is listed")
        for name, quants in sorted(self.quant.items()):
            if len(quants) > 1:
                warnings.append(f"flow {name!r} is stored with mixed quantisation {sorted(quants)}")
        if self.unreadable:
            warnings.append(f"{len(self.unreadable)} video files cannot be read; run validate()")
        return {"videos": self.videos, "frames": self.frames, "rgb_frames": self.rgb_frames,
                "flow_pairs": dict(sorted(self.pairs.items())), "bytes": self.bytes,
                "engines": engines,
                "quantization": {n: sorted(q) for n, q in sorted(self.quant.items())},
                "backends": {n: sorted(b) for n, b in sorted(self.backends.items())},
                "sizes": dict(self.sizes.most_common()), "unreadable": len(self.unreadable),
                "warnings": warnings}


# ----------------------------------------------------------------------------- validation

_ROOT_ATTRS = ("key", "source", "fps", "frame_count", "height", "width", "source_height",
               "source_width", "step", "label", "label_name", "created")
_FLOW_ATTRS = ("engine", "engine_version", "params", "quantization", "scale", "offset")


def _video_problems(path: Path, key: str, deep: bool) -> list[str]:
    try:
        f = _open_read(path)
    except OSError as e:
        return [f"cannot be opened as HDF5 (truncated or corrupt?): {e}"]
    try:
        with f:
            return _file_problems(f, key, deep)
    except (OSError, KeyError, ValueError, TypeError) as e:
        return [f"unreadable: {type(e).__name__}: {e}"]


def _file_problems(f: h5py.File, key: str, deep: bool) -> list[str]:
    a = {k: _py(v) for k, v in f.attrs.items()}
    if a.get("format") != VIDEO_FORMAT:
        return [f"format attribute is {a.get('format')!r}, expected {VIDEO_FORMAT!r}"]
    if not isinstance(a.get("version"), int) or a["version"] > VIDEO_VERSION:
        return [f"version attribute is {a.get('version')!r}; this flowkit reads version "
                f"<= {VIDEO_VERSION}"]
    problems = [f"missing attribute {k!r}" for k in _ROOT_ATTRS if k not in a]
    if a.get("complete") is not True:
        problems.append("not marked complete")
    if "key" in a and a["key"] != key:
        problems.append(f"key attribute {a['key']!r} does not match its path (key {key!r})")
    if problems:
        return problems
    t, h, w = a["frame_count"], a["height"], a["width"]
    expected = {"rgb": ((t, h, w, 3), {"uint8"})}
    expected.update({f"flow/{n}": ((t - 1, 2, h, w), set(FLOW_DTYPES)) for n in f.get("flow", {})})
    if len(expected) == 1 and "rgb" not in f:
        problems.append("holds neither rgb nor flow")
    for name, (shape, dtypes) in expected.items():
        if name in f:
            problems += _dataset_problems(f[name], shape, dtypes, deep)
    return problems


def _dataset_problems(ds: h5py.Dataset, shape: tuple, dtypes: set, deep: bool) -> list[str]:
    problems = []
    if tuple(ds.shape) != shape:
        problems.append(f"{ds.name} has shape {tuple(ds.shape)}, expected {shape}")
    if str(ds.dtype) not in dtypes:
        problems.append(f"{ds.name} has dtype {ds.dtype}, expected {' or '.join(sorted(dtypes))}")
    if ds.name.startswith("/flow/"):
        missing = [k for k in _FLOW_ATTRS if k not in ds.attrs]
        problems += [f"{ds.name} misses attribute {k!r}" for k in missing]
        if not missing and _py(ds.attrs["quantization"]) != str(ds.dtype):
            problems.append(f"{ds.name} quantization {_py(ds.attrs['quantization'])!r} does not "
                            f"match its dtype {ds.dtype}")
    if deep and not problems:
        for i in range(ds.shape[0]):
            try:
                ds[i]
            except OSError as e:
                problems.append(f"{ds.name}[{i}] cannot be decompressed: {e}")
                break
    return problems
