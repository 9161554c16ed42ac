"""Reading frames out of one stored dataset: any index, decoded by the dataset's codec, and a
damaged chunk reported with its file, dataset, frames and the command that repairs it.

Also opening a video's groups and datasets (:func:`member`, :func:`members`,
:func:`attributes`): HDF5 says "no such object" and "this object's header is damaged" with the
same ``KeyError``, so ``"flow" in f`` / ``f.get("flow")`` would make a damaged flow group look
absent ("no flow"). These look the name up among the group's links first; an object that is
linked but cannot be opened (or whose attributes cannot be read) raises :class:`DamagedObject`,
naming the file, the object and the ``--redo`` that re-extracts the video."""
from __future__ import annotations

import posixpath
import re
from typing import Any

import h5py
import numpy as np

from ..conventions import BACKWARD_SUFFIX, is_backward
from ..errors import DamagedDataError, shell_word
from .codecs import FRAME_CRC_ATTR, Codec, check_crc
from .layout import py_value


#: The backend an engine record names for flow another tool computed and ``flowkit import
#: rawframes`` stored (engines ``mmaction2-rawframes``, ``denseflow-png``, ``denseflow-hdf5``).
IMPORTED_BACKEND = "external"
#: Root attribute (true) of a video file ``flowkit import rawframes`` made: its RGB frames came
#: from images, so ``flowkit extract`` cannot redo it either (a ``--no-flow`` import has no flow
#: record to tell).
IMPORTED_ATTR = "imported"
#: The engine ``flowkit extract`` runs without ``--method``.
DEFAULT_METHOD = "tvl1"
#: What a command computing one engine's flow again adds: the rest must match (size, step, codecs).
SAME_OPTIONS = ", with the options it was extracted with (flowkit info shows them)"
#: The repair of a file under ``videos/`` that is not the video its path names (a copy kept there):
#: every file there is read as the video of its path's key.
STRAY_HINT = "delete it or move it out of videos/"


def redo_hint(key: str | None, imported: str | None = None, flow: str | None = None,
              origin_known: bool = True) -> str:
    """The command that repairs a damaged video: ``flowkit extract --redo``, or for a video whose
    flow was imported (``imported``: its file, :func:`imported_file`) deleting the file and
    rerunning the import, which skips a video the store holds and cannot recompute its flow.

    ``flow``: the damaged dataset's name under ``/flow`` (``tvnet``, ``tvl1_backward``), where the
    damage is one flow's. A redo computes one flow and keeps of the old file only what still
    decodes, so ``--redo KEY`` alone would compute tvl1 and drop a damaged ``tvnet``: the command
    names that flow's ``--method`` and ``--backward`` (:func:`flow_options`). ``origin_known``
    False: the flow's record is unreadable, so whether it was imported cannot be told (an import's
    ``--flow-name rawframes`` is no engine's ``--method``): the import's repair is named too."""
    if imported:
        return (f"re-import it: delete {imported} and rerun flowkit import rawframes "
                "RAWFRAMES_DIR -o STORE (flowkit extract cannot recompute imported flow)")
    options = flow_options(flow)
    return ("re-extract it: flowkit extract VIDEO_DIR -o STORE --redo "
            f"{shell_word(key) if key else 'KEY'}"
            f"{options}{SAME_OPTIONS if options else ''}"
            f"{'' if origin_known or not options else reimport_hint(flow)}")


def reimport_hint(flow: str) -> str:
    """The repair of flow ``flow`` had it been imported (its record cannot tell): the import that
    writes it again."""
    name = flow[:-len(BACKWARD_SUFFIX)] if is_backward(flow) else flow
    return (", or if it was imported (flowkit import rawframes), delete the video's file and "
            f"rerun the import{'' if name == DEFAULT_METHOD else f' with --flow-name {name}'}")


#: How the repairs a problem line may name start (:func:`redo_hint`, :data:`STRAY_HINT`).
_REPAIRS = ("re-extract it: ", "re-import it: ", STRAY_HINT)


def names_repair(problem: str) -> bool:
    """Whether the problem line ``problem`` names its repair."""
    return any(repair in problem for repair in _REPAIRS)


def flow_options(flow: str | None) -> str:
    """The options that make ``flowkit extract`` write ``flow/<flow>``: ``" --method tvnet
    --backward"`` for ``tvnet_backward`` (extract names what it writes after ``--method``, plus
    ``_backward``); "" for the default engine's forward flow, or no flow."""
    if not flow:
        return ""
    method = flow[:-len(BACKWARD_SUFFIX)] if is_backward(flow) else flow
    return ((f" --method {method}" if method != DEFAULT_METHOD else "")
            + (" --backward" if is_backward(flow) else ""))


def flow_name(name: str) -> str | None:
    """The flow dataset's name under ``/flow`` in an object's path (``/flow/tvnet``,
    ``flow/tvnet``, ``/flow/tvnet attributes``, ``/flow/tvnet[2]``); None for any other object."""
    m = re.match(r"/?flow/([^/\s\[]+)", name)
    return m[1] if m else None


def dataset_hint(ds: h5py.Dataset, key: str | None) -> str:
    """:func:`redo_hint` for damage to the dataset ``ds``: re-import for imported data, else the
    redo that computes this flow again."""
    return redo_hint(key, imported_file(ds), flow_name(ds.name))


def imported_file(ds: h5py.Dataset) -> str | None:
    """The file of ``ds`` when what it holds was imported: a flow dataset by its own engine
    record (:data:`IMPORTED_BACKEND`), RGB by its file (:func:`imported_video`); None otherwise,
    or when the records cannot be read (damage)."""
    try:
        if not ds.name.startswith("/flow/"):
            return imported_video(ds.file)
        return ds.file.filename if ds.attrs.get("backend") == IMPORTED_BACKEND else None
    except Exception:  # damaged records: the generic hint
        return None


def imported_video(f: h5py.File) -> str | None:
    """The name of the video file ``f`` when ``flowkit import rawframes`` made it: by its
    :data:`IMPORTED_ATTR` (files imported before it was recorded: by every flow of the file being
    imported); None otherwise, or when the records cannot be read (damage)."""
    try:
        if f.attrs.get(IMPORTED_ATTR, False):
            return f.filename
        group = f.get("flow")
        flows = list(group.values()) if group is not None else []
        if flows and all(flow.attrs.get("backend") == IMPORTED_BACKEND for flow in flows):
            return f.filename
    except Exception:  # damaged records: the generic hint
        pass
    return None


def error_cause(exc: BaseException) -> str:
    """An HDF5 error as a short cause: its first line (h5py's KeyError text comes quoted)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text.strip("'\"") or type(exc).__name__


class DamagedObject(DamagedDataError):
    """A group or dataset the file's links name cannot be opened, or its attributes cannot be read
    (a damaged object header, a bad checksum); made by :meth:`of`. ``name``: the object's path in
    the file (``/flow``, ``/flow/tvl1``, ``/rgb``); ``cause``: HDF5's error; :attr:`problem`: the
    message without the file's path (for :meth:`FlowStore.validate`, which names the file
    itself). Built from its message alone too (pickling, a DataLoader worker's error re-raised)."""

    def __init__(self, message: str, name: str = "", key: str | None = None, cause: str = "",
                 problem: str = ""):
        super().__init__(message)
        self.name, self.key, self.cause = name, key, cause
        self.problem = problem or message

    @classmethod
    def of(cls, filename: str, name: str, key: str | None, cause: str) -> "DamagedObject":
        video = f" of video {key!r}" if key else ""
        problem = (f"{name}{video} cannot be opened, it is damaged ({cause}); "
                   f"{redo_hint(key, flow=flow_name(name), origin_known=False)}")
        return cls(f"{filename}: {problem}", name, key, cause, problem)


def _damaged(group: h5py.Group, name: str, key: str | None, exc: BaseException) -> DamagedObject:
    try:
        filename, where = group.file.filename, group.name or "/"
    except Exception:  # the group's own identity unreadable: name what we can
        filename, where = "?", "?"
    return DamagedObject.of(filename, posixpath.join(where, name) if name else where, key,
                            error_cause(exc))


def member(group: h5py.Group, name: str, key: str | None = None):
    """``group[name]`` (a plain name, no ``/``), or None when ``group`` has no link of that name.
    A linked object that cannot be opened raises :class:`DamagedObject` (never None: that would
    report damage as absence)."""
    try:
        if not group.id.links.exists(name.encode("utf-8")):
            return None
        return group[name]
    except Exception as exc:  # h5py's KeyError/OSError/RuntimeError for a damaged header
        raise _damaged(group, name, key, exc) from None


def member_names(group: h5py.Group, key: str | None = None) -> list[str]:
    """The names linked in ``group``, sorted (their objects are not opened); a group whose links
    cannot be listed raises :class:`DamagedObject`."""
    try:
        return sorted(group)
    except Exception as exc:
        raise _damaged(group, "", key, exc) from None


def members(group: h5py.Group | None, key: str | None = None) -> dict[str, Any]:
    """``{name: object}`` of every member of ``group`` (None: ``{}``), each opened: one that
    cannot be opened raises :class:`DamagedObject`."""
    if group is None:
        return {}
    out = {}
    for name in member_names(group, key):
        obj = member(group, name, key)
        if obj is not None:  # unlinked meanwhile: cannot happen to a finished file
            out[name] = obj
    return out


def attributes(obj: h5py.HLObject, key: str | None = None) -> dict[str, Any]:
    """The attributes of ``obj`` as plain values (:func:`~flowkit.store.layout.py_value`); ones
    that cannot be read raise :class:`DamagedObject`. Frame CRCs (:func:`frame_crcs`, 4 bytes a
    frame) are left out: metas and summaries would carry every frame's."""
    try:
        return {k: py_value(obj.attrs[k]) for k in obj.attrs if k != FRAME_CRC_ATTR}
    except Exception as exc:
        try:  # a file's attributes are its root group's: opening that failed
            filename = obj.file.filename
            name = "/" if isinstance(obj, h5py.File) else f"{obj.name} attributes"
        except Exception:
            filename, name = "?", "attributes"
        raise DamagedObject.of(filename, name, key, error_cause(exc)) from None


def frame_crcs(ds: h5py.Dataset, key: str | None = None) -> np.ndarray | None:
    """The CRC32 of each stored frame of an encoded dataset, uint32 ``(N,)``
    (:data:`~flowkit.store.codecs.FRAME_CRC_ATTR`); None where none are recorded (array codecs,
    whose chunks HDF5 reads whole; encoded datasets of stores written before). An unreadable
    record raises :class:`DamagedObject`."""
    try:
        crcs = ds.attrs.get(FRAME_CRC_ATTR)
        return None if crcs is None else np.asarray(crcs, dtype=np.uint32).reshape(-1)
    except Exception as exc:
        try:
            filename, name = ds.file.filename, f"{ds.name} attributes"
        except Exception:
            filename, name = "?", "attributes"
        raise DamagedObject.of(filename, name, key, error_cause(exc)) from None


def read_frames(ds: h5py.Dataset, codec: Codec, index: Any, key: str,
                decode: bool = True, crcs: np.ndarray | None | bool = True) -> np.ndarray:
    """Frames ``index`` (an int, a slice or a list of ints, any order, repeats allowed) of a
    dataset written with ``codec``, decoded (``decode=False``: an array codec's stored values, an
    encoded codec's byte strings: a list of ``bytes``, one ``bytes`` for an int index).

    ``crcs``: the dataset's :func:`frame_crcs` (a caller that reads often keeps them), each frame
    read checked against its CRC, decoded or not; ``True``: read them from ``ds``; ``None``: none.

    An index that is not one, or out of range, raises IndexError (a zero slice step ValueError)
    before anything is read. A frame that cannot be read or decoded (a damaged chunk, bytes that
    fail their CRC) raises :class:`~flowkit.errors.DamagedDataError` naming the file, the
    dataset, the frames and the fix."""
    selection = _selection(index, ds.shape[0], key, ds.name)
    if crcs is True:
        crcs = frame_crcs(ds, key) if codec.storage == "encoded" else None
    try:
        return _read_frames(ds, codec, selection, decode, crcs)
    except (OSError, RuntimeError, ValueError, DamagedDataError) as exc:
        raise DamagedDataError(
            f"{ds.file.filename}: {ds.name} frames {_describe_index(selection)} of video "
            f"{key!r} are damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"{dataset_hint(ds, key)}") from None


def _describe_index(selection: int | slice | np.ndarray) -> str:
    """A :func:`_selection` as a message shows it: ``3``, ``[0:7]`` (the frames the dataset
    holds, not the slice asked for), ``[3, 4, 5, 6]`` (plain ints, the first 8 then ``...``)."""
    if isinstance(selection, slice):
        step = "" if selection.step == 1 else f":{selection.step}"
        return f"[{selection.start}:{selection.stop}{step}]"
    if isinstance(selection, int):
        return str(selection)
    items = [str(int(i)) for i in selection[:8]] + (["..."] if len(selection) > 8 else [])
    return f"[{', '.join(items)}]"


def _selection(index: Any, n: int, key: str, name: str) -> int | slice | np.ndarray:
    """The caller's ``index`` into ``n`` frames, checked and made plain: an int in ``[0, n)``, a
    slice with a positive step, or the frames of a 1-D int64 array in ``[0, n)`` (any order,
    repeats allowed). A caller's mistake raises here, never as damaged data."""
    if isinstance(index, slice):
        if index.step == 0:
            raise ValueError(f"video {key!r}: slice step cannot be zero (got {index!r})")
        start, stop, step = index.indices(n)
        if step > 0:
            return slice(start, stop, step)
        return np.arange(start, stop, step, dtype=np.int64)  # h5py cannot step backwards
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"video {key!r}: index {i} out of range for {n} frames of {name}")
        return i % n
    idx = np.asarray(index)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise IndexError(f"video {key!r}: index must be an int, a slice or a list of ints, "
                         f"got {index!r}")
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"video {key!r}: index out of range for {n} frames of {name}")
    return idx.astype(np.int64) % max(n, 1)


def _read_frames(ds: h5py.Dataset, codec: Codec, selection: int | slice | np.ndarray,
                 decode: bool, crcs: np.ndarray | None) -> np.ndarray:
    data = _take(ds, selection)
    single = isinstance(selection, int)
    if crcs is not None:
        _check_crcs(data, selection, crcs, ds.shape[0])
    if codec.storage == "encoded" and not decode:
        return data.tobytes() if single else [b.tobytes() for b in data]
    if codec.storage == "encoded":
        if single:
            return codec.decode(data)
        frames = [codec.decode(blob) for blob in data]
        if frames:
            return np.stack(frames)
        return np.zeros((0, *ds.attrs["frame_shape"]), codec.frame_dtype)
    return codec.from_stored(data) if decode else data


def _check_crcs(data: np.ndarray, selection: int | slice | np.ndarray, crcs: np.ndarray,
                n: int) -> None:
    """Check the byte strings ``data`` read for ``selection`` against their recorded CRCs
    (:class:`DamagedDataError` on a mismatch, or a record of another number of frames)."""
    if len(crcs) != n:
        raise DamagedDataError(f"its frame CRCs record {len(crcs)} frames, it holds {n}")
    if isinstance(selection, int):
        check_crc(data, crcs[selection], selection)
        return
    numbers = range(n)[selection] if isinstance(selection, slice) else selection
    for blob, i in zip(data, numbers):
        check_crc(blob, crcs[i], int(i))


def _take(ds: h5py.Dataset, selection: int | slice | np.ndarray) -> np.ndarray:
    """``ds[selection]`` along axis 0 for a :func:`_selection`."""
    if isinstance(selection, (int, slice)):
        return ds[selection]
    # Each distinct frame is read once, then put in the asked order. One read per frame: h5py's
    # fancy (list) selection was measured 10-20x slower than int reads on per-frame chunks.
    unique, inverse = np.unique(selection, return_inverse=True)
    if not unique.size:
        return ds[:0]
    frames = [ds[int(i)] for i in unique]
    if ds.dtype == object:  # vlen: one byte string per frame
        out = np.empty(len(inverse), dtype=object)
        for i, j in enumerate(inverse):  # one by one: numpy would broadcast a list of arrays
            out[i] = frames[j]
        return out
    return np.stack(frames)[inverse]


__all__ = ["read_frames", "frame_crcs", "member", "member_names", "members", "attributes",
           "DamagedObject", "redo_hint", "flow_options", "flow_name", "dataset_hint",
           "names_repair", "imported_file", "imported_video", "error_cause", "SAME_OPTIONS",
           "STRAY_HINT", "IMPORTED_BACKEND", "IMPORTED_ATTR", "DEFAULT_METHOD"]
