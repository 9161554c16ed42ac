"""denseflow's HDF5 output (``denseflow --saveType h5``): float32 flow, one file per video.

The layout is not described in denseflow's README; it is what its source writes
(open-mmlab/denseflow, ``src/common.cpp`` ``writeHDF5`` and ``src/denseflow_gpu.cpp``
``load_frames``), read here as follows:

- one file per video next to where its frame folder would be: ``OUT/<class>/<video>.h5``, or
  ``<video>_p<s>.h5`` for flow between frames t and t + s (``-s s``, s > 1), or
  ``<video>_m<s>.h5`` for backward flow, from frame t + s to frame t (``-s -s``);
- no groups, no attributes: one 2-D float32 ``(H, W)`` dataset per flow component and pair at the
  root, named like the JPEG files would be, ``flow_x_00000.jpg`` / ``flow_y_00000.jpg``
  (``flow_x_p2_00000.jpg`` for s = 2, ``flow_x_m1_00001.jpg`` backward), or without the ``.jpg``
  (denseflow since its PNG output: ``flow_x_00000``); numbered from 0, a backward pair by the frame
  it starts from (so from s); in pixels, u then v;
- RGB frames are not in the file (denseflow writes them in a separate run, ``-s 0``, as
  ``img_*.jpg`` in the video's folder).

:func:`open_flow` checks the names (numbering without gaps, as many ``flow_x`` as ``flow_y``, one
size) and reads pairs lazily; :func:`read_flow` returns all of them, ``(N, 2, H, W)`` float32.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from .errors import FlowkitError

_FILE_RE = re.compile(r"(?P<stem>.+?)(?:_(?P<dir>[pm])(?P<step>\d+))?\.h5")
_DATASET_RE = re.compile(r"flow_(?P<axis>[xy])(?:_(?P<dir>[pm])(?P<step>\d+))?_(?P<index>\d+)"
                         r"(?:\.jpg)?")


class DenseflowError(FlowkitError):
    """A denseflow HDF5 file cannot be read as flow; the message names the file and the cause."""


def parse_name(name: str) -> tuple[str, int, bool] | None:
    """``(stem, step, backward)``: ``"v_x.h5"`` -> ``("v_x", 1, False)``, ``"v_x_p2.h5"`` ->
    ``("v_x", 2, False)``, ``"v_x_m1.h5"`` -> ``("v_x", 1, True)``; None for other names."""
    m = _FILE_RE.fullmatch(name)
    if not m:
        return None
    return m["stem"], int(m["step"] or 1), m["dir"] == "m"


def is_denseflow_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file whose root holds denseflow's ``flow_x_*`` datasets
    (a flowkit store's video files, and other HDF5 files, are not)."""
    try:
        with h5py.File(path, "r") as f:
            return any(_DATASET_RE.fullmatch(name) for name in f)
    except OSError:
        return False


@dataclass
class DenseflowFile:
    """One denseflow HDF5 file, checked (:func:`open_flow`) and read lazily: ``len()`` pairs of
    ``shape`` (H, W), pair i mapping frame i to frame i + ``step`` (``backward``: frame i + step
    to frame i)."""

    path: Path
    step: int
    names: list[tuple[str, str]]  # the (flow_x, flow_y) dataset names of each pair, in order
    shape: tuple[int, int]
    backward: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def read(self, positions: Sequence[int]) -> np.ndarray:
        """Pairs ``positions`` (0-based): ``(N, 2, H, W)`` float32 pixels, u then v."""
        with h5py.File(self.path, "r") as f:
            return np.stack([np.stack([f[x][()], f[y][()]]) for x, y in
                             (self.names[i] for i in positions)]).astype(np.float32, copy=False)


def open_flow(path: str | os.PathLike) -> DenseflowFile:
    """Check the datasets of one denseflow HDF5 file (names pair up, numbering without gaps, one
    float (H, W) shape) without reading the flow."""
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
                steps.add((int(m["step"] or 1), m["dir"] == "m"))
        if not found["x"]:
            raise DenseflowError(f"{path}: no flow_x_* datasets at the root; not denseflow "
                                 "HDF5 output")
        if len(steps) > 1 or set(found["x"]) != set(found["y"]):
            raise DenseflowError(f"{path}: {len(found['x'])} flow_x and {len(found['y'])} flow_y "
                                 f"datasets (steps {sorted(steps)}) do not pair up")
        (step, backward), = steps
        indices = sorted(found["x"])
        if indices != list(range(indices[0], indices[0] + len(indices))):
            raise DenseflowError(f"{path}: flow numbering has a gap (indices {indices[0]}.."
                                 f"{indices[-1]}, {len(indices)} datasets)")
        names = [(found["x"][i], found["y"][i]) for i in indices]
        shapes = {(f[n].shape, np.issubdtype(f[n].dtype, np.floating)) for pair in names
                  for n in pair}
        if len(shapes) != 1 or len(next(iter(shapes))[0]) != 2 or not next(iter(shapes))[1]:
            raise DenseflowError(f"{path}: flow datasets must all be float (H, W) of one size; "
                                 f"found {sorted(str(s) for s, _ in shapes)[:3]}")
        shape = next(iter(shapes))[0]
    return DenseflowFile(path, step, names, (int(shape[0]), int(shape[1])), backward)


def read_flow(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """All the flow of one denseflow HDF5 file: ``((N, 2, H, W) float32 pixels, step)``."""
    flow = open_flow(path)
    return flow.read(range(len(flow))), flow.step


__all__ = ["DenseflowError", "DenseflowFile", "parse_name", "is_denseflow_file", "open_flow",
           "read_flow"]
