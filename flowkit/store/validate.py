"""Checking finished video files (:meth:`FlowStore.validate`): attributes, shapes, codecs, and
(``deep``) every frame decoded, with the stated flow error bound checked and each encoded frame's
bytes checked against their recorded CRC32 (a decoder repairs most damage to a JPEG unnoticed).

The shallow check opens every group and dataset the file links (their object headers: cheap, no
frame is read), so a damaged ``flow`` or ``rgb`` header is a problem naming the object and the
``--redo`` that repairs it (:class:`~flowkit.store.reading.DamagedObject`), never a file that
looks valid with its flow left out."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from ..errors import StoreError
from ..progress import Progress
from .codecs import Codec, codec_of, frame_crc
from .diskio import errno_of
from .layout import VIDEO_FORMAT, VIDEO_VERSION, open_read
from .guard import HungFileError
from .reading import (STRAY_HINT, DamagedObject, attributes, dataset_hint, frame_crcs,
                      imported_video, member, member_names, redo_hint)

_ROOT_ATTRS = ("key", "source", "fps", "frame_count", "height", "width", "source_height",
               "source_width", "step", "label", "label_name", "created")
_FLOW_ATTRS = ("engine", "engine_version", "params", "quantization")

#: The repair of a finished file this user may not read: its permissions, never a redo (what it
#: holds may be sound, and a consumer of a shared store cannot rewrite it).
READ_PERMISSION_FIX = "ask the store's owner to make it readable (chmod a+r)"


def refused_read(exc: BaseException) -> bool:
    """Whether opening a file failed because this user may not read it (EACCES, EPERM: a file
    of mode 600 another user owns), not because it is damaged."""
    return errno_of(exc) in (errno.EACCES, errno.EPERM)


def video_problems(path: Path, key: str, deep: bool) -> list[str]:
    try:
        f = open_read(path)
    except HungFileError as e:  # it hung (or crashed) a read before: the same problem again
        return [f"{e}; {redo_hint(key)}"]
    except OSError as e:
        if refused_read(e):
            return [f"permission denied reading it; {READ_PERMISSION_FIX}"]
        return [f"cannot be opened as HDF5 (truncated or corrupt?): {e}; {redo_hint(key)}"]
    try:
        with f:
            return _file_problems(f, key, deep)
    except DamagedObject as e:
        return [e.problem]
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        return [f"unreadable: {type(e).__name__}: {e}; {redo_hint(key)}"]


def _file_problems(f: h5py.File, key: str, deep: bool) -> list[str]:
    a = attributes(f, key)  # a damaged root group: DamagedObject
    # Whole-file problems name the repair of the whole video: its re-import or redo.
    hint = redo_hint(key, imported_video(f))
    if a.get("format") != VIDEO_FORMAT:
        return [f"format attribute is {a.get('format')!r}, expected {VIDEO_FORMAT!r}; {hint}"]
    if not isinstance(a.get("version"), int) or a["version"] > VIDEO_VERSION:
        return [f"version attribute is {a.get('version')!r}; this flowkit reads version "
                f"<= {VIDEO_VERSION}: if a newer flowkit wrote it, upgrade flowkit, else {hint}"]
    if "key" in a and a["key"] != key:  # a copy (a backup kept under videos/), or damage
        return [f"key attribute {a['key']!r} does not match its path (key {key!r}); if it is a "
                f"copy of video {a['key']!r}, {STRAY_HINT}, else {hint}"]
    problems = [f"missing attribute {k!r}" for k in _ROOT_ATTRS if k not in a]
    if a.get("complete") is not True:
        problems.append("not marked complete")
    if problems:
        return [f"{p}; {hint}" for p in problems]
    t, h, w = a["frame_count"], a["height"], a["width"]
    if not isinstance(t, int) or t < 1:
        return [f"frame_count is {t!r}, not a positive number of frames; {hint}"]
    # (group, name) -> (frames, frame shape) of every dataset the file links
    expected: dict[tuple[h5py.Group, str], tuple[int, tuple]] = {(f, "rgb"): (t, (h, w, 3))}
    try:
        flow = member(f, "flow", key)
        if flow is not None:
            expected.update({(flow, n): (t - 1, (2, h, w)) for n in member_names(flow, key)})
    except DamagedObject as e:
        problems.append(e.problem)
    found = 0
    for (group, name), (frames, frame_shape) in expected.items():
        try:
            ds = member(group, name, key)
            if ds is None:
                continue
            found += 1
            problems += _dataset_problems(ds, frames, frame_shape, deep, key)
        except DamagedObject as e:
            found += 1
            problems.append(e.problem)
    if not found and not problems:
        problems.append(f"holds neither rgb nor flow; {hint}")
    return problems


def _dataset_problems(ds: h5py.Dataset, frames: int, frame_shape: tuple, deep: bool,
                      key: str | None = None) -> list[str]:
    if not isinstance(ds, h5py.Dataset):
        return [f"{ds.name} is a {type(ds).__name__.lower()}, expected a dataset"]
    attrs = attributes(ds, key)
    is_flow = ds.name.startswith("/flow/")
    try:
        codec = codec_of(attrs, rgb=not is_flow)
    except (StoreError, KeyError, ValueError) as e:
        return [f"{ds.name}: unknown or incomplete codec ({e})"]
    problems = [f"{ds.name} misses attribute {k!r}" for k in (_FLOW_ATTRS if is_flow else ())
                if k not in attrs]
    if codec.storage == "encoded":
        if tuple(ds.shape) != (frames,) or ds.dtype != object:
            problems.append(f"{ds.name} has shape {tuple(ds.shape)} ({ds.dtype}), expected "
                            f"({frames},) byte strings")
        if tuple(attrs.get("frame_shape", ())) != frame_shape:
            problems.append(f"{ds.name} frames are {attrs.get('frame_shape')}, expected "
                            f"{list(frame_shape)}")
        crcs = frame_crcs(ds, key)
        if crcs is not None and len(crcs) != ds.shape[0]:
            problems.append(f"{ds.name} records the CRCs of {len(crcs)} frames, it holds "
                            f"{ds.shape[0]}")
    else:
        if tuple(ds.shape) != (frames, *frame_shape):
            problems.append(f"{ds.name} has shape {tuple(ds.shape)}, expected "
                            f"{(frames, *frame_shape)}")
        if ds.dtype != np.dtype(codec.stored_dtype):
            problems.append(f"{ds.name} has dtype {ds.dtype}, expected {codec.stored_dtype.__name__}"
                            f" ({codec.name})")
    problems += _bound_problems(ds.name, codec, attrs)
    if deep and not problems:  # damaged frames: the video is redone (or re-imported)
        problems += [f"{p}; {dataset_hint(ds, key)}"
                     for p in _decode_all(ds, codec, frame_shape)]
    return problems


def _bound_problems(name: str, codec: Codec, attrs: dict[str, Any]) -> list[str]:
    """The error bound a dataset states: its codec's parameters imply it, and the writer measured
    no larger error."""
    limit = getattr(codec, "max_error", None)
    if limit is None:
        return []
    problems = []
    if codec.step * (codec.near + 0.5) > limit * (1 + 1e-9):
        problems.append(f"{name}: step {codec.step} and near {codec.near} allow errors above "
                        f"the stated max_error {limit} px")
    seen = attrs.get("max_error_seen")
    if seen is None or float(seen) > limit:
        problems.append(f"{name}: coding error {seen} px recorded, above the bound {limit} px")
    return problems


def decode_problem(ds: h5py.Dataset) -> str:
    """The first frame of ``ds`` that cannot be read or decoded (or fails its CRC), as one line;
    "" when every frame decodes (what a redone video keeps of its old file,
    :mod:`flowkit.store.writer`)."""
    try:
        attrs = attributes(ds)
    except DamagedObject as e:
        return e.problem
    try:
        codec = codec_of(attrs, rgb=not ds.name.startswith("/flow/"))
    except (StoreError, KeyError, ValueError) as e:
        return f"{ds.name}: unknown or incomplete codec ({e})"
    frame_shape = tuple(attrs["frame_shape"]) if "frame_shape" in attrs else tuple(ds.shape[1:])
    problems = _decode_all(ds, codec, frame_shape)
    return problems[0] if problems else ""


def _decode_all(ds: h5py.Dataset, codec: Codec, frame_shape: tuple) -> list[str]:
    """Read and decode every frame (finds damaged chunks, frames whose bytes fail their CRC
    and undecodable frames)."""
    try:
        crcs = frame_crcs(ds) if codec.storage == "encoded" else None
    except DamagedObject as e:
        return [e.problem]
    if crcs is not None and len(crcs) != ds.shape[0]:
        return [f"{ds.name} records the CRCs of {len(crcs)} frames, it holds {ds.shape[0]}"]
    for i in range(ds.shape[0]):
        try:
            stored = ds[i]
            changed = crcs is not None and frame_crc(stored) != int(crcs[i])
            frame = None if changed else codec.frame(stored)
        except Exception as e:  # HDF5's OSError, or the codec's own error on damaged bytes
            return [f"{ds.name}[{i}] cannot be read or decoded: {type(e).__name__}: {e}"]
        if changed:  # damage a decoder would have repaired or ignored
            return [f"{ds.name}[{i}] is damaged: its bytes fail their CRC32 check"]
        if tuple(frame.shape) != frame_shape:
            return [f"{ds.name}[{i}] decodes to shape {tuple(frame.shape)}, expected {frame_shape}"]
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
            return [f"{ds.name}[{i}] decodes to non-finite values"]
    return []


def counted(files: list, results: Iterable[Any], progress: Progress | None,
            name: str) -> dict[Any, Any]:
    """{file: result} of ``files`` and their :func:`~flowkit.store.guard.guarded_map`
    ``results`` (in the same order), under a ``progress`` bar ``name`` over the files, advanced
    as each result arrives: in the calling thread, one file at a time (a shallow check of 300k
    videos takes about 15 minutes, which no one should wait through in silence)."""
    task = (progress or Progress()).start(name, total=len(files))
    found = {}
    for file, result in zip(files, results):
        found[file] = result
        task.advance()
    task.close()
    return found


__all__ = ["video_problems", "decode_problem", "counted"]
