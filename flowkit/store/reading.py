"""Reading frames out of one stored dataset: any index, decoded by the dataset's codec, and a
damaged chunk reported with its file, dataset, frames and the command that repairs it."""
from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from ..errors import DamagedDataError
from .codecs import Codec


def read_frames(ds: h5py.Dataset, codec: Codec, index: Any, key: str,
                decode: bool = True) -> np.ndarray:
    """Frames ``index`` (an int, a slice or a list of ints, any order, repeats allowed) of a
    dataset written with ``codec``, decoded (``decode=False``: an array codec's stored values, an
    encoded codec's byte strings: a list of ``bytes``, one ``bytes`` for an int index).

    An index that is not one, or out of range, raises IndexError (a zero slice step ValueError)
    before anything is read. A frame that cannot be read or decoded (a damaged chunk) raises
    :class:`~flowkit.errors.DamagedDataError` naming the file, the dataset, the frames and the fix."""
    selection = _selection(index, ds.shape[0], key, ds.name)
    try:
        return _read_frames(ds, codec, selection, decode)
    except (OSError, RuntimeError, ValueError, DamagedDataError) as exc:
        raise DamagedDataError(
            f"{ds.file.filename}: {ds.name} frames {_describe_index(index)} of video {key!r} are "
            f"damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); re-extract "
            f"it: flowkit extract VIDEO_DIR -o STORE --redo {key}") from None


def _describe_index(index: Any) -> str:
    if isinstance(index, slice):
        return f"[{'' if index.start is None else index.start}:{'' if index.stop is None else index.stop}]"
    if isinstance(index, (int, np.integer)):
        return str(int(index))
    items = list(index)
    return str(items if len(items) <= 8 else items[:8] + ["..."])


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
                 decode: bool) -> np.ndarray:
    data = _take(ds, selection)
    single = isinstance(selection, int)
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


__all__ = ["read_frames"]
