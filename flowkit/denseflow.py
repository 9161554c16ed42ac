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

The file name alone does not say which video a file is: a video may itself be named
``person_p2`` (its step-1 file ``person_p2.h5``). :func:`video_of` decides from the datasets'
names (:func:`dataset_tags`), which carry the step and direction whatever the file is called.

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
    """``(stem, step, backward)`` as the file name reads: ``"v_x.h5"`` -> ``("v_x", 1, False)``,
    ``"v_x_p2.h5"`` -> ``("v_x", 2, False)``, ``"v_x_m1.h5"`` -> ``("v_x", 1, True)``; None for
    other names. The name alone can mislead (a video named ``v_p2``): :func:`video_of` decides."""
    m = _FILE_RE.fullmatch(name)
    if not m:
        return None
    return m["stem"], int(m["step"] or 1), m["dir"] == "m"


def is_denseflow_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file whose root holds denseflow's ``flow_x_*`` datasets
    (a flowkit store's video files, and other HDF5 files, are not)."""
    return bool(dataset_tags(path))


def dataset_tags(path: str | os.PathLike) -> set[tuple[int, bool]]:
    """The ``(step, backward)`` that the names of the flow datasets at the root of ``path`` carry
    (``flow_x_p2_*``: ``(2, False)``, ``flow_x_m1_*``: ``(1, True)``, plain: ``(1, False)``);
    one for a sound file, empty when it is not denseflow output or cannot be read. Reads names
    only."""
    try:
        with h5py.File(path, "r") as f:
            return {(int(m["step"] or 1), m["dir"] == "m") for m in map(_DATASET_RE.fullmatch, f)
                    if m}
    except OSError:
        return set()


def file_tag(step: int, backward: bool) -> str:
    """What denseflow appends to a video's name for flow of ``step`` and direction, in its file
    and dataset names: ``"_m<s>"`` backward, ``"_p<s>"`` forward with s > 1, else ``""``."""
    return f"_m{step}" if backward else f"_p{step}" if step > 1 else ""


def video_of(name: str, tags: set[tuple[int, bool]], has_folder=lambda stem: False
             ) -> tuple[str, bool]:
    """``(video, backward)``: the video a denseflow file ``name`` (``<stem>.h5``) belongs to and
    the direction it is imported as, from its datasets' ``tags`` (:func:`dataset_tags`), not from
    the file name alone: a video may itself be named ``person_p2`` or ``cam_m1``.

    The file stem loses ``_p<s>`` / ``_m<s>`` only when the datasets carry that tag
    (``walk_p2.h5`` of plain ``flow_x_*`` datasets is video ``walk_p2``, forward), unless a frame
    folder of the whole stem (``has_folder(stem)``) stands beside it and none of the shorter
    name. A name whose tag the datasets contradict (``v_m1.h5`` of forward datasets) next to the
    folder of the shorter name and none of the whole stem is read by its name, so that the import
    refuses it naming the file instead of making a video of it."""
    stem = name[:-len(".h5")] if name.endswith(".h5") else name
    if len(tags) == 1:
        (step, backward), = tags
        tag = file_tag(step, backward)
        if not tag or not stem.endswith(tag) or len(stem) == len(tag):
            by_name = parse_name(name)
            if by_name and by_name[0] != stem and has_folder(by_name[0]) and not has_folder(stem):
                return by_name[0], by_name[2]
            return stem, backward
        short = stem[:-len(tag)]
        return (stem if has_folder(stem) and not has_folder(short) else short), backward
    by_name = parse_name(name)  # tags mixed (or none): open_flow refuses the file, by name
    return (by_name[0], by_name[2]) if by_name else (stem, False)


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


__all__ = ["DenseflowError", "DenseflowFile", "parse_name", "is_denseflow_file", "dataset_tags",
           "file_tag", "video_of", "open_flow", "read_flow"]
