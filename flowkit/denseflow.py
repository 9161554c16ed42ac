"""denseflow's HDF5 output (``denseflow --saveType h5``): float32 flow, one file per video.

The layout is not described in denseflow's README; it is what its source writes
(open-mmlab/denseflow, ``src/common.cpp`` ``writeHDF5`` and ``src/denseflow_gpu.cpp``
``load_frames``), read here as follows:

- one file per video next to where its frame folder would be: ``OUT/<class>/<video>.h5``, or
  ``<video>_p<s>.h5`` for flow between frames t and t + s (``-s s``, s > 1); ``_m<s>.h5``
  (backward flow) is refused;
- no groups, no attributes: one 2-D float32 ``(H, W)`` dataset per flow component and pair at the
  root, named like the JPEG files would be, ``flow_x_00000.jpg`` / ``flow_y_00000.jpg``
  (``flow_x_p2_00000.jpg`` for s = 2), numbered from 0, in pixels, u then v;
- RGB frames are not in the file (denseflow writes them in a separate run, ``-s 0``, as
  ``img_*.jpg`` in the video's folder).

:func:`read_flow` returns ``(N, 2, H, W)`` float32 and checks the names: numbering without gaps and
as many ``flow_x`` as ``flow_y``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np

from .errors import FlowkitError

_FILE_RE = re.compile(r"(?P<stem>.+?)(?:_(?P<dir>[pm])(?P<step>\d+))?\.h5")
_DATASET_RE = re.compile(r"flow_(?P<axis>[xy])(?:_p(?P<step>\d+))?_(?P<index>\d+)\.jpg")


class DenseflowError(FlowkitError):
    """A denseflow HDF5 file cannot be read as flow; the message names the file and the cause."""


def parse_name(name: str) -> tuple[str, int] | None:
    """``"v_x.h5"`` -> ``("v_x", 1)``, ``"v_x_p2.h5"`` -> ``("v_x", 2)``; None for other names.
    Backward flow (``_m<s>.h5``) raises :class:`DenseflowError`."""
    m = _FILE_RE.fullmatch(name)
    if not m:
        return None
    if m["dir"] == "m":
        raise DenseflowError(f"{name}: backward flow (_m{m['step']}.h5) is not supported; "
                             "extract forward flow")
    return m["stem"], int(m["step"] or 1)


def is_denseflow_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file whose root holds denseflow's ``flow_x_*.jpg`` datasets
    (a flowkit store's video files, and other HDF5 files, are not)."""
    try:
        with h5py.File(path, "r") as f:
            return any(_DATASET_RE.fullmatch(name) for name in f)
    except OSError:
        return False


def read_flow(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The flow of one denseflow HDF5 file: ``((N, 2, H, W) float32 pixels, step)``, where pair
    i maps frame i to frame i + step."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DenseflowError(f"{path}: cannot be read as HDF5 ({e})") from None
    with f:
        found: dict[str, dict[int, str]] = {"x": {}, "y": {}}
        steps = set()
        for name in f:
            m = _DATASET_RE.fullmatch(name)
            if m:
                found[m["axis"]][int(m["index"])] = name
                steps.add(int(m["step"] or 1))
        if not found["x"]:
            raise DenseflowError(f"{path}: no flow_x_*.jpg datasets at the root; not denseflow "
                                 "HDF5 output")
        if len(steps) > 1 or set(found["x"]) != set(found["y"]):
            raise DenseflowError(f"{path}: {len(found['x'])} flow_x and {len(found['y'])} flow_y "
                                 f"datasets (steps {sorted(steps)}) do not pair up")
        indices = sorted(found["x"])
        if indices != list(range(indices[0], indices[0] + len(indices))):
            raise DenseflowError(f"{path}: flow numbering has a gap (indices {indices[0]}.."
                                 f"{indices[-1]}, {len(indices)} datasets)")
        pairs = []
        for i in indices:
            u, v = f[found["x"][i]], f[found["y"][i]]
            if u.ndim != 2 or u.shape != v.shape or not np.issubdtype(u.dtype, np.floating):
                raise DenseflowError(f"{path}: flow pair {i} is {u.dtype} {u.shape} / {v.dtype} "
                                     f"{v.shape}; expected two float (H, W) datasets")
            if pairs and u.shape != pairs[0].shape[1:]:
                raise DenseflowError(f"{path}: flow pair {i} is {u.shape}, pair {indices[0]} "
                                     f"is {pairs[0].shape[1:]}; one video has one size")
            pairs.append(np.stack([u[()], v[()]]).astype(np.float32, copy=False))
    return np.stack(pairs), steps.pop()


__all__ = ["DenseflowError", "parse_name", "is_denseflow_file", "read_flow"]
