"""Writing one video: :class:`VideoWriter`, a context manager that commits the video atomically.

Frames are encoded by the dataset's codec (:mod:`flowkit.store.codecs`) in a thread pool, one frame
per task, and written in order: encoded frames as vlen byte strings, array codecs as pre-compressed
chunks (``write_direct_chunk``), so HDF5 only copies bytes. The CRC32 of every encoded frame's
bytes is kept and recorded with its dataset on commit (:data:`~flowkit.store.codecs.FRAME_CRC_ATTR`:
HDF5's checksums never cover the vlen heap).

HDF5 writes through a :class:`~flowkit.store.diskio.LatchingFile`, so a full disk (quota, read-only
target) becomes a :class:`~flowkit.errors.StoreWriteError` and a deleted partial file, never a
crashed interpreter. Committing merges, under the store's commit lock
(:mod:`flowkit.store.claims`), whatever the video's current finished file holds that this writer
did not write (another engine's flow, the RGB frames), then renames: concurrent writers of different
engines never lose each other's work.
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import re
import shutil
import threading
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import h5py
import numpy as np

from .. import jpeg
from ..conventions import BACKWARD_SUFFIX, backward_name, is_backward
from ..errors import DamagedDataError, StoreError
from ..files import fsync_dir
from ..files import stamp as file_stamp
from . import guard
from .claims import commit_lock, keep_touched, stop_touching
from .codecs import FRAME_CRC_ATTR, GZIP_LEVEL, Codec, Jpeg, encode_frames, frame_crc
from .diskio import LatchingFile, create_hdf5, open_hdf5, storage_error
from .layout import (as_numpy, comparable_params, engine_record, open_read, partial_ending,
                     py_value, writer_number)
from .reading import (SAME_OPTIONS, DamagedObject, attributes, error_cause, flow_name,
                      flow_options, member, member_names, redo_hint)
from .validate import decode_problem

# vlen datasets: frames per chunk of the pointer array (16 bytes a frame); the bytes live in the heap.
VLEN_CHUNK = 64
# Attributes stay in the object header up to this many (HDF5's default of 8 would move a flow
# dataset's ~13 and a file's ~16 attributes into dense storage: two heaps and a B-tree, ~4 KiB each).
COMPACT_ATTRIBUTES = 64
#: Why :attr:`VideoWriter.dropped` names a dataset of the old file that was sound but holds
#: another number or size of frames than the new one (``--redo-mismatched``): not damage.
OTHER_FRAMES = "stored for other frames"
#: Root attributes that say how a video's frames were made from its source (docs/architecture.md,
#: "The store"): a commit adding datasets to the finished video keeps those the writer was not
#: given (:meth:`FlowStore.writer`'s defaults) and refuses a given one that differs, but for the
#: source size (:data:`_SOURCE_SIZE`). ``fps``, always given, is the writer's.
FRAME_ATTRS = ("step", "source_height", "source_width", "max_frames", "rotation",
               "variable_frame_rate", "frame_interval_min", "frame_interval_max")
#: The source size is never refused, only kept: writers have recorded it otherwise for the same
#: frames (an import: its images' size; a flowkit before 2026-11-29: a rotated video's header
#: size, not the upright one), so frames of the same count and size decide.
_SOURCE_SIZE = ("source_height", "source_width")


#: How :attr:`VideoWriter.dropped` words (``made with other weights than the new flow/tvnet``)
#: the other direction of a flow a redo replaced with other options, whose record differs from
#: the new flow's: the two directions of a video are made alike (:mod:`flowkit.store.compat`),
#: so it is recomputed (``--backward``), not kept beside the new flow. Not damage.
OTHER_ENGINE = "made with other {what} than the new flow/{name}"


# The names of the partial files this process's writers have open (a writer's number is
# process-wide, so a name is one writer's): FlowStore.remove_partials takes a partial named with
# this process's pid and not listed here for an earlier process's that got the same pid (a
# container restarted under its host name runs flowkit as pid 1 again), never a live writer's.
_open_partials: set[str] = set()
_open_partials_lock = threading.Lock()


def _forget_open_partials() -> None:
    """A forked child writes none of its parent's partials (they name the parent's pid), and its
    copy of the lock may have been held by another thread at the fork."""
    global _open_partials_lock
    _open_partials.clear()
    _open_partials_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_open_partials)


def _opening(partial: Path) -> None:
    """Record ``partial`` as an open writer's partial file: before it is created, so that it never
    exists unrecorded while its writer lives."""
    with _open_partials_lock:
        _open_partials.add(partial.name)


def _closed(partial: Path) -> None:
    """``partial`` is renamed or deleted: its writer is done (:func:`_opening`)."""
    with _open_partials_lock:
        _open_partials.discard(partial.name)


def is_open_partial(path: Path) -> bool:
    """Whether ``path`` is the partial file of a writer of this process that is still open (not
    committed or aborted)."""
    with _open_partials_lock:
        return path.name in _open_partials


class Dropped(NamedTuple):
    """A dataset of the old file that a redo did not keep (:attr:`VideoWriter.dropped`):
    ``name`` (``rgb``, ``flow/<name>``, or the file's own name where none of it could be read)
    and ``why``: its damage, or :data:`OTHER_FRAMES`. Shown as ``NAME (why)``, for a flow with
    the command that computes it again (the redo computed another: ``--method``, ``--backward``)."""
    name: str
    why: str

    @property
    def damaged(self) -> bool:
        return self.why != OTHER_FRAMES and not self.unlike

    @property
    def unlike(self) -> bool:
        """The other direction of the replaced flow, made otherwise (:data:`OTHER_ENGINE`)."""
        return self.why.startswith(OTHER_ENGINE.split("{")[0])

    def __str__(self) -> str:
        flow = flow_name(self.name)
        if self.unlike:
            again = "add --backward" if is_backward(flow) else "run without --backward"
            return f"{self.name} ({self.why}; {again} to recompute it)"
        again = "" if flow is None else (
            f"; compute it again: flowkit extract VIDEO_DIR -o STORE{flow_options(flow)}"
            f"{SAME_OPTIONS}")
        return f"{self.name} ({self.why}){again}"


class VideoWriter:
    """Streams one video's frames and flow into ``<key>.h5.<host>.<pid>.<writer>.partial`` (its
    own file, also beside another writer of the video in this process); a context manager.

    On a clean exit the file is checked, marked complete, fsync'ed, merged with the video's current
    finished file (its datasets this writer did not write are kept) and renamed to ``<key>.h5``; on
    an exception it is deleted and the exception propagates. ``redo``: the current finished file is
    suspect (damaged) or holds other frames; only its datasets that still decode and fit the new
    frames are kept, the others are listed in :attr:`dropped`. ``defaults``: the names of
    ``attrs`` the caller filled in by default (:data:`FRAME_ATTRS` it was not given): merged into
    a finished video of the same frames they take its values. Obtain one from
    :meth:`FlowStore.writer`.
    """

    def __init__(self, final: Path, attrs: dict[str, Any], flow_codec: Codec, rgb_codec: Codec, *,
                 videos: Path, redo: bool = False, threads: int | None = None,
                 defaults: Sequence[str] = ()):
        self.final = final
        self.videos = videos
        self.redo = redo
        # numbered: a second writer of this video in this process (another thread, a nested
        # writer) must not open, and truncate, this one's file; both commit, as two processes do
        self.partial = final.with_name(final.name + partial_ending(writer=writer_number()))
        self._attrs = attrs
        self._defaults = set(defaults)  # given attributes leave this set (update_attrs)
        self.flow_codec, self.rgb_codec = flow_codec, rgb_codec
        self._threads = threads
        self._io: LatchingFile | None = None
        self._file: h5py.File | None = None
        self._size: tuple[int, int] | None = None
        # with redo: the datasets of the old file not kept, damaged or holding other frames
        self.dropped: list[Dropped] = []
        # encoded dataset -> the CRC32 of each frame written, recorded on commit
        self._crcs: dict[str, list[int]] = {}

    @property
    def key(self) -> str:
        return self._attrs["key"]

    def __enter__(self) -> "VideoWriter":
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            _opening(self.partial)
            self._io = LatchingFile(self.partial)
            keep_touched(self.partial)  # its age tells other hosts this writer is alive
            self._file = _create_file(self._io)
            self._file.attrs.update(self._attrs)
            self._file.attrs["complete"] = False
            self._check_io()
        except BaseException as exc:  # also Ctrl-C: __exit__ will not run, so clean up here
            self._abort()
            if isinstance(exc, OSError):
                raise self._io_error(exc) from None
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort()
            return False
        try:
            self._commit()
        except BaseException as error:
            self._abort()
            if isinstance(error, OSError):
                raise self._io_error(error) from None
            raise
        return False

    def _io_error(self, exc: BaseException) -> StoreError:
        """A file-system error as a StoreError: a StoreWriteError for a full or read-only target."""
        return storage_error(exc, self.videos.parent) or StoreError(
            f"video {self.key!r}: writing {self.partial} failed: {exc}")

    def _check_io(self) -> None:
        if self._io is not None and self._io.error is not None:
            raise self._io_error(self._io.error)

    def update_attrs(self, attrs: dict[str, Any]) -> None:
        """Add root attributes found out while writing (e.g. ``rotation``, ``variable_frame_rate``):
        given, so a commit into a finished video holding others is refused (:data:`FRAME_ATTRS`)."""
        self._require_file().attrs.update(attrs)
        self._defaults -= set(attrs)

    # -- appending

    def append_rgb(self, frames: np.ndarray) -> None:
        """Append RGB frames ``(N, H, W, 3)`` uint8."""
        frames = as_numpy(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise StoreError(f"video {self.key!r}: rgb frames must be uint8 (N, H, W, 3), got "
                             f"{frames.dtype} {frames.shape}")
        self._append("rgb", self.rgb_codec, frames, frames.shape[1:3], attrs={})

    def rgb_unlike_codec(self, blob: bytes) -> str:
        """Why the JPEG file ``blob`` cannot be stored as it is (:meth:`append_rgb_encoded`); ``""``
        when it can: the store codes RGB as ``jpeg`` and ``blob`` is a complete colour JPEG with the
        quantisation tables of the codec's quality, of this video's size, without Exif data
        (:func:`flowkit.jpeg.unlike_libjpeg`)."""
        return _unlike_codec(self.rgb_codec, blob, self._size)

    def append_rgb_encoded(self, blobs: Sequence[bytes]) -> None:
        """Append RGB frames given as JPEG files, stored byte for byte: no decode, no second JPEG
        generation. Each must pass :meth:`rgb_unlike_codec` (else :class:`StoreError`); decode
        and :meth:`append_rgb` the others."""
        blobs = [bytes(b) for b in blobs]
        size = self._size
        for i, blob in enumerate(blobs):
            reason = _unlike_codec(self.rgb_codec, blob, size)
            if reason:
                raise StoreError(f"video {self.key!r}: RGB frame {i} of this batch cannot be "
                                 f"stored as it is: {reason}")
            if size is None:
                header = jpeg.read_header(blob)
                size = (header.height, header.width)
        if blobs:
            self._store("rgb", self.rgb_codec, [(b, {"error": 0.0, "clipped": 0}) for b in blobs],
                        (*size, 3), size, attrs={})

    def append_flow(self, name: str, flow: Any, engine: dict | None = None) -> None:
        """Append flow ``(N, 2, H, W)`` (numpy or torch, float, pixels) to ``flow/<name>``.

        ``engine`` (``{"engine", "version", "params"}``, e.g. ``FlowEngine.describe()``) is required
        on the first call for a name and recorded; a later call may omit it but must not change it.
        """
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise StoreError(f"flow name {name!r} must be a non-empty word such as 'tvl1' "
                             "(letters, digits, _ . + -)")
        flow = as_numpy(flow)
        if flow.ndim != 4 or flow.shape[1] != 2 or not np.issubdtype(flow.dtype, np.floating):
            raise StoreError(f"video {self.key!r}: flow {name!r} must be float (N, 2, H, W), got "
                             f"{flow.dtype} {flow.shape}")
        if not np.isfinite(flow).all():
            raise StoreError(f"video {self.key!r}: flow {name!r} contains NaN or inf values")
        path = f"flow/{name}"
        attrs = self._flow_attrs(name, engine, exists=path in self._require_file())
        self._append(path, self.flow_codec, flow, flow.shape[2:4], attrs)

    def _flow_attrs(self, name: str, engine: dict | None, exists: bool) -> dict[str, Any]:
        if engine is None:
            if not exists:
                raise StoreError(f"video {self.key!r}: the first append_flow({name!r}, ...) needs "
                                 "engine={'engine', 'version', 'params'} (FlowEngine.describe())")
            return {}
        record = engine_record(engine, name)
        self._check_direction(name, record)
        if exists:
            stored = {k: py_value(self._file[f"flow/{name}"].attrs.get(k)) for k in record}
            if stored != record:
                raise StoreError(f"video {self.key!r}: flow {name!r} was started with engine "
                                 f"{stored} and continued with {record}")
            return {}
        return record

    def _check_direction(self, name: str, record: dict[str, Any]) -> None:
        """Refuse flow whose record's direction its name contradicts: readers serve a name's
        direction by its ``_backward`` suffix (:mod:`flowkit.conventions`), so the other direction
        would be read with the wrong sign."""
        backward = record.get("direction") == "backward"
        if backward and not is_backward(name):
            raise StoreError(f"video {self.key!r}: flow {name!r} is a forward flow's name but its "
                             f"engine record says direction 'backward'; store backward flow as "
                             f"{backward_name(name)!r}")
        if is_backward(name) and not backward:
            raise StoreError(f"video {self.key!r}: flow {name!r} is a backward flow's name but its "
                             "engine record is a forward flow's (no direction 'backward'); store "
                             f"it as {name[:-len(BACKWARD_SUFFIX)]!r}, or record backward flow "
                             "with flowkit.flow.Backward(engine).describe()")

    def _require_file(self) -> h5py.File:
        if self._file is None:
            raise StoreError(f"video {self.key!r}: use the writer as a context manager "
                             "(`with store.writer(key, ...) as w:`) and append inside the block")
        return self._file

    def _append(self, path: str, codec: Codec, frames: np.ndarray, size: tuple[int, int],
                attrs: dict[str, Any]) -> None:
        self._require_file()
        try:
            encoded = encode_frames(codec, list(frames), self._threads)
        except StoreError as exc:
            raise StoreError(f"video {self.key!r}: {path}: {exc}") from None
        self._store(path, codec, encoded, frames.shape[1:], size, attrs)

    def _store(self, path: str, codec: Codec, encoded: list[tuple[bytes, dict[str, float]]],
               frame_shape: tuple[int, ...], size: tuple[int, int], attrs: dict[str, Any]) -> None:
        """Write encoded frames (:meth:`Codec.encode`'s results) at the end of ``path``."""
        f = self._require_file()
        size = (int(size[0]), int(size[1]))
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise StoreError(f"video {self.key!r}: {path} batch is {size[0]}x{size[1]} but this "
                             f"video is stored at {self._size[0]}x{self._size[1]}")
        if path not in f:
            ds = _create(f, path, codec, frame_shape)
            ds.attrs.update({**attrs, **codec.attrs(), "frame_shape": list(frame_shape),
                             "encoded_bytes": 0, "max_error_seen": 0.0, "clipped_values": 0})
        ds = f[path]
        ds.attrs.update(attrs)
        n = ds.shape[0]
        ds.resize(n + len(encoded), axis=0)
        if codec.storage == "encoded":
            # One write per batch (HDF5 gives each write's byte strings a global-heap collection),
            # through write_direct: h5py's ds[...] = would stack equal-length frames into 2-D.
            blobs = np.empty(len(encoded), dtype=ds.dtype)
            for i, (blob, _) in enumerate(encoded):
                blobs[i] = np.frombuffer(blob, np.uint8)
            ds.write_direct(blobs, np.s_[:], np.s_[n:n + len(blobs)])
            self._crcs.setdefault(path, []).extend(frame_crc(blob) for blob, _ in encoded)
        else:
            corner = (0,) * (ds.ndim - 1)
            for i, (blob, _) in enumerate(encoded):
                ds.id.write_direct_chunk((n + i, *corner), blob)
        seen = max([float(ds.attrs["max_error_seen"])] + [s["error"] for _, s in encoded])
        limit = getattr(codec, "max_error", None)
        if limit is not None and seen > limit:
            raise StoreError(f"video {self.key!r}: {path} was coded with an error of {seen} px, "
                             f"above its bound {limit} px (a flowkit bug; please report it)")
        ds.attrs.update(encoded_bytes=int(ds.attrs["encoded_bytes"]) + sum(len(b) for b, _ in encoded),
                        max_error_seen=seen,
                        clipped_values=int(ds.attrs["clipped_values"])
                        + sum(int(s["clipped"]) for _, s in encoded))
        self._check_io()

    # -- finishing

    def _commit(self) -> None:
        f = self._require_file()
        lengths = {name: f[f"flow/{name}"].shape[0] for name in f.get("flow", {})}
        if "rgb" not in f and not lengths:
            raise StoreError(f"video {self.key!r}: nothing was written (no rgb, no flow); "
                             "refusing to store an empty video")
        frame_count = f["rgb"].shape[0] if "rgb" in f else next(iter(lengths.values())) + 1
        if frame_count == 0:
            raise StoreError(f"video {self.key!r}: no frames were written (rgb holds 0 frames); "
                             "refusing to store an empty video")
        wrong = {n: k for n, k in lengths.items() if k != frame_count - 1}
        if wrong:
            raise StoreError(f"video {self.key!r}: flow lengths {wrong} do not match "
                             f"{frame_count} frames (flow must have frame_count - 1 = "
                             f"{frame_count - 1} pairs)")
        for path, crcs in self._crcs.items():  # one attribute write each: its size is 4 N bytes
            f[path].attrs[FRAME_CRC_ATTR] = np.asarray(crcs, dtype=np.uint32)
        f.attrs.update({"frame_count": frame_count, "height": self._size[0],
                        "width": self._size[1], "complete": True})
        self._close_file()
        with commit_lock(self.videos):
            if self.final.exists():
                self._merge_finished()
            os.replace(self.partial, self.final)
        stop_touching(self.partial)
        _closed(self.partial)
        fsync_dir(self.final.parent)

    def _close_file(self) -> None:
        """Close the HDF5 file and make its bytes durable; a write that failed on the way raises."""
        self._file.close()
        self._file = None
        self._io.fsync()
        self._io.close()
        self._check_io()
        self._io = None

    def _merge_finished(self) -> None:
        """Copy into the partial file what the finished file holds and it lacks (another engine's
        flow, the RGB frames); HDF5 copies the compressed chunks as they are."""
        try:
            src = open_read(self.final)
        except OSError as exc:
            if not self.redo:
                raise DamagedDataError(f"{self.final}: cannot be read as HDF5 ({exc}); re-extract "
                                       f"the video with --redo {self.key}") from None
            self.dropped.append(Dropped(self.final.name, f"unreadable: {exc}"))
            return
        with src:
            try:
                attributes(src, self.key)  # the root group: its header, its attributes
            except DamagedObject as exc:
                if not self.redo:
                    raise
                self.dropped.append(Dropped(self.final.name, f"damaged: {exc.cause}"))
                return
            names = self._finished_names(src)
            self._io = LatchingFile(self.partial, "r+b")
            self._file = _open_file(self._io)
            dst = self._file
            _keep_label(src, dst)
            missing = [n for n in names if n not in dst]
            other_facts = self._other_facts(src)
            same = self._same_video(src) and not other_facts
            if missing and not same:
                if not self.redo:
                    if other_facts:
                        raise StoreError(other_facts)
                    self._refuse_other_video(src)
                self.dropped += [Dropped(n, OTHER_FRAMES) for n in missing]
                missing = []
            if same:
                self._keep_frame_facts(src)
            if self.redo:
                unlike = self._unlike_directions(src, names, missing)
                self.dropped += unlike
                missing = [n for n in missing if n not in {d.name for d in unlike}]
            for name in missing:
                if self.redo:
                    problem = decode_problem(src[name])
                    if problem:
                        self.dropped.append(Dropped(name, problem))
                        continue
                if name.startswith("flow/"):
                    dst.require_group("flow")
                self._copy(src, name)
            self._close_file()

    def _unlike_directions(self, src: h5py.File, names: list[str],
                           missing: list[str]) -> list[Dropped]:
        """The other directions among ``missing`` (``flow/tvnet_backward``) of the flows this
        redo wrote in place of the finished file's (``flow/tvnet``) with another engine record,
        whose own record differs from the new flow's: kept, they would pair flow of other
        weights, parameters or engine (an imported direction beside a computed one) silently.
        An unreadable record or a flow the old file lacked (a direction added beside the other:
        it keeps its own until recomputed) leaves them be."""
        out = []
        for name in member_names(self._file["flow"], self.key) if "flow" in self._file else []:
            other = name[:-len(BACKWARD_SUFFIX)] if is_backward(name) else backward_name(name)
            if f"flow/{other}" not in missing or f"flow/{name}" not in names:
                continue
            new = _record(self._file[f"flow/{name}"])
            old, paired = _record(src[f"flow/{name}"]), _record(src[f"flow/{other}"])
            if None in (new, old, paired) or old == new or paired == new:
                continue
            what = "engine parameters"
            if paired[0] != new[0]:
                what = f"engine, {paired[0]},"
            elif paired[1] != new[1]:
                what = "engine version"
            elif _weights(paired[2]) != _weights(new[2]):
                what = "weights"
            out.append(Dropped(f"flow/{other}", OTHER_ENGINE.format(what=what, name=name)))
        return out

    def _finished_names(self, src: h5py.File) -> list[str]:
        """The datasets of the finished file to keep: ``rgb`` and ``flow/<name>``. One the file
        links but that cannot be opened (a damaged ``flow`` group or dataset header) is damage,
        never absence: without ``redo`` it raises :class:`DamagedDataError` naming ``--redo``,
        with it it is dropped (:attr:`dropped`)."""
        names = []
        try:
            if member(src, "rgb", self.key) is not None:
                names.append("rgb")
        except DamagedObject as exc:
            self._damaged_in_finished("rgb", exc)
        try:
            flow = member(src, "flow", self.key)
            flows = member_names(flow, self.key) if flow is not None else []
        except DamagedObject as exc:
            self._damaged_in_finished("flow", exc)
            return names
        for name in flows:
            try:
                member(flow, name, self.key)
                names.append(f"flow/{name}")
            except DamagedObject as exc:
                self._damaged_in_finished(f"flow/{name}", exc)
        return names

    def _damaged_in_finished(self, name: str, exc: DamagedObject) -> None:
        if not self.redo:
            raise exc
        self.dropped.append(Dropped(name, f"damaged: {exc.cause}"))

    def _copy(self, src: h5py.File, name: str) -> None:
        """Copy dataset ``name`` of the finished file into the partial one as it is (HDF5 copies
        the compressed chunks, and the attributes: an encoded dataset's frame CRCs go with its
        frames, so damage it had stays detectable). An HDF5 error reading it is damage of the
        finished file: without ``redo`` a :class:`DamagedDataError` naming ``--redo``, with it the
        dataset is dropped."""
        dst = self._file
        try:
            src.copy(src[name], dst[posixpath.dirname(name) or "/"],
                     name=posixpath.basename(name))
        except Exception as exc:  # h5py's OSError/KeyError/RuntimeError on damaged metadata
            self._check_io()  # the partial's own disk failing is a write error, not damage
            cause = error_cause(exc)
            if name in dst:  # half copied
                del dst[name]
            if not self.redo:
                raise DamagedDataError(f"{self.final}: /{name} of video {self.key!r} cannot be "
                                       f"copied, it is damaged ({cause}); "
                                       f"{redo_hint(self.key, flow=flow_name(name))}") from None
            self.dropped.append(Dropped(name, f"damaged: {cause}"))

    def _frames(self, f: h5py.File) -> tuple[int, int, int]:
        return tuple(int(f.attrs.get(k, -1)) for k in ("frame_count", "height", "width"))

    def _same_video(self, src: h5py.File) -> bool:
        """Whether the finished file holds the same frames (count and size) as this one."""
        return self._frames(src) == self._frames(self._file)

    def _other_facts(self, src: h5py.File) -> str:
        """Why the finished file's frames are other than this writer's by their facts: the first
        of :data:`FRAME_ATTRS` this writer was given that the file holds with another value, as
        one line naming both and the fix; "" when none."""
        for name in FRAME_ATTRS:
            if (name in self._defaults or name not in src.attrs or name not in self._file.attrs
                    or name in _SOURCE_SIZE):
                continue
            theirs, mine = py_value(src.attrs[name]), py_value(self._file.attrs[name])
            if not _same_value(theirs, mine):
                return (f"video {self.key!r} is already in the store with {name} {theirs!r}, but "
                        f"these frames were made with {mine!r}; make them as the store's were, "
                        f"or replace the video with --redo {self.key} (Python: leave {name} out "
                        "of FlowStore.writer, the video's is kept, or pass redo=True)")
        return ""

    def _keep_frame_facts(self, src: h5py.File) -> None:
        """Give the partial file the :data:`FRAME_ATTRS` of the finished file (of the same
        frames) that this writer was not given: a flow added by a writer that knows only the
        frames keeps the video's step, source size, frame limit, rotation and frame rate. A
        source size the finished file knows is kept even when given (:data:`_SOURCE_SIZE`), but
        for a redo (``--redo-mismatched`` of a video whose stale size the store's check
        refused), whose given one replaces it."""
        dst = self._file
        for name in FRAME_ATTRS:
            known = (name in _SOURCE_SIZE and not self.redo  # a redo's given size repairs it
                     and py_value(src.attrs.get(name, -1)) != -1)
            if name in src.attrs and (name in self._defaults or name not in dst.attrs or known):
                dst.attrs[name] = src.attrs[name]


    def _refuse_other_video(self, src: h5py.File) -> None:
        mine, theirs = self._frames(self._file), self._frames(src)
        # Same frame size, more frames: the store's were cut at another --max-frames (a step is
        # checked before computing), one an older flowkit did not record; its count is the limit.
        fix = (f"another --max-frames); extract with --max-frames {theirs[0]}"
               if mine[1:] == theirs[1:] and mine[0] > theirs[0] else
               "another --size, --step or --max-frames); extract with the store's options")
        raise StoreError(
            f"video {self.key!r} is already in the store with {theirs[0]} frames of "
            f"{theirs[1]}x{theirs[2]}, but this run made {mine[0]} frames of {mine[1]}x{mine[2]} "
            f"({fix}, or replace the video with --redo {self.key}")

    def _abort(self) -> None:
        stop_touching(self.partial)
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # the file is being deleted; its close error hides nothing useful
                pass
            self._file = None
        if self._io is not None:
            self._io.close()
            self._io = None
        try:
            self.partial.unlink(missing_ok=True)
        except OSError:
            # Never created (a name too long), or a store refusing changes: the error that led here
            # says more, and a partial left behind is a dead writer's for remove_partials().
            pass
        _closed(self.partial)


def _same_value(a: Any, b: Any) -> bool:
    """Whether two attribute values are one fact (floats to rounding: frame intervals measured
    twice)."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b


def _keep_label(src: h5py.File, dst: h5py.File) -> None:
    """A video committed without a label (-1: a run without its class, or one that began before
    :func:`relabel` filled it in) keeps the label its finished file has, never drops it."""
    label = int(py_value(src.attrs.get("label", -1)))
    if label >= 0 and int(py_value(dst.attrs.get("label", -1))) < 0:
        dst.attrs["label"] = label
        dst.attrs["label_name"] = str(py_value(src.attrs.get("label_name", "")))


def relabel(final: Path, videos: Path, label: int, label_name: str) -> bool:
    """Give the finished video file ``final`` (in the store's ``videos`` folder) the ``label`` /
    ``label_name`` it lacks (it holds -1), without recomputing anything: a copy of the file with
    the new attributes replaces it under the commit lock, as a commit does (finished files are
    never changed in place: a reader holding the old one keeps reading it). A commit that replaced
    the file while it was copied is copied again under the lock. False, and nothing changed, when
    the file has a label already (another process gave it one). OSError from the file system
    (:func:`storage_error` names a full disk), HDF5's errors for a damaged file."""
    guard.check(final)  # a file HDF5 never returned from is not opened again
    partial = final.with_name(final.name + partial_ending(writer=writer_number()))
    _opening(partial)
    try:
        version = file_stamp(final)
        if not _relabelled_copy(final, partial, label, label_name):
            return False
        with commit_lock(videos):
            if file_stamp(final) != version and not _relabelled_copy(final, partial, label,
                                                                     label_name):
                return False
            os.replace(partial, final)
        fsync_dir(final.parent)
        return True
    finally:
        _closed(partial)  # first: an unlink a read-only store refuses leaves a dead writer's file
        partial.unlink(missing_ok=True)  # gone once renamed


def _relabelled_copy(final: Path, partial: Path, label: int, label_name: str) -> bool:
    """Copy ``final`` to ``partial`` (byte for byte) and set the copy's label, fsync'ed; False
    when ``final`` is labelled already. HDF5 writes through a :class:`LatchingFile` (a full disk
    is an error, never a crash)."""
    shutil.copyfile(final, partial)
    io = LatchingFile(partial, "r+b")
    try:
        f = open_hdf5(io, h5py.h5p.create(h5py.h5p.FILE_ACCESS))
        try:
            if int(py_value(f.attrs.get("label", -1))) >= 0:
                return False
            f.attrs["label"], f.attrs["label_name"] = int(label), str(label_name)
        finally:
            f.close()
        io.fsync()
    finally:
        io.close()
    if io.error is not None:
        raise io.error
    return True


def _unlike_codec(codec: Codec, blob: bytes, size: tuple[int, int] | None) -> str:
    if not isinstance(codec, Jpeg):
        return f"the store codes RGB frames as {codec.describe()}"
    return jpeg.unlike_libjpeg(blob, codec.quality, size)


def _file_property_lists():
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    return fapl


def _record(ds: h5py.Dataset) -> tuple[str, str, dict] | None:
    """A flow dataset's engine, engine version and parameters, compared as two records of one
    configuration compare (:func:`~flowkit.store.layout.comparable_params`); None unreadable."""
    try:
        params = json.loads(py_value(ds.attrs.get("params", "{}")))
        return (str(py_value(ds.attrs.get("engine"))),
                str(py_value(ds.attrs.get("engine_version"))), comparable_params(params))
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _weights(params: dict) -> Any:
    """What names a record's weights: their digest, else their path (None: no weights)."""
    return params.get("weights_sha256", params.get("weights"))


def _create_file(io: LatchingFile) -> h5py.File:
    """A new HDF5 file through ``io``, format v110 (compact chunk indexes for streamed datasets;
    HDF5 >= 1.10 reads it), whose root keeps its attributes compact."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_attr_phase_change(COMPACT_ATTRIBUTES, 0)
    return create_hdf5(io, _file_property_lists(), fcpl)


def _open_file(io: LatchingFile) -> h5py.File:
    return open_hdf5(io, _file_property_lists())


def _create(f: h5py.File, path: str, codec: Codec, frame_shape: tuple[int, ...]) -> h5py.Dataset:
    """The empty, growable dataset of ``codec`` for frames of ``frame_shape``."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_attr_phase_change(COMPACT_ATTRIBUTES, 0)
    if codec.storage == "encoded":
        return f.create_dataset(path, shape=(0,), maxshape=(None,), dcpl=dcpl,
                                dtype=h5py.vlen_dtype(np.uint8), chunks=(VLEN_CHUNK,))
    dtype = np.dtype(codec.stored_dtype)
    return f.create_dataset(path, shape=(0, *frame_shape), maxshape=(None, *frame_shape),
                            dtype=dtype, chunks=(1, *frame_shape), compression="gzip",
                            compression_opts=GZIP_LEVEL, shuffle=dtype.itemsize > 1, dcpl=dcpl)


__all__ = ["VideoWriter", "Dropped", "OTHER_FRAMES", "FRAME_ATTRS", "relabel"]
