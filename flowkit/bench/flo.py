"""Middlebury ``.flo`` files: the interchange format of optical-flow ground truth (Middlebury, Sintel).

Layout (all little-endian)::

    bytes 0-3    float32 202021.25 (the ASCII tag "PIEH" read as a float)
    bytes 4-7    int32 width W
    bytes 8-11   int32 height H
    bytes 12-    float32 u, v interleaved, row-major: u(0,0) v(0,0) u(0,1) v(0,1) ...

flowkit holds flow as ``(2, H, W)`` float32 in pixels, channel 0 horizontal u (+x right), channel 1
vertical v (+y down); :func:`read_flo` and :func:`write_flo` convert to and from the interleaved layout.
Values are stored as they are: Middlebury marks unknown flow with values above 1e9, which
:func:`flowkit.bench.metrics.flow_metrics` and :func:`flowkit.viz.flow_to_color` treat as unknown.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FlowkitError

FLO_MAGIC = 202021.25
_HEADER_BYTES = 12
# A sanity bound on each side, so that a foreign file with a plausible magic cannot ask for terabytes.
_MAX_SIDE = 1 << 16


class BenchError(FlowkitError):
    """Ground truth or benchmark input is unusable: a foreign or truncated ``.flo`` file, a missing
    dataset folder, arrays whose shapes do not match. The message names the file or argument."""


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Returns:
        ``(2, H, W)`` float32 flow in pixels (u, v).

    Raises:
        BenchError: the file is missing, is not a ``.flo`` file (wrong magic), has an implausible
            size, or is shorter or longer than its header says. The message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(data) < _HEADER_BYTES:
        raise BenchError(f"{path}: not a .flo file (only {len(data)} bytes, a header needs 12)")
    magic = float(np.frombuffer(data, "<f4", 1, 0)[0])
    if magic != FLO_MAGIC:
        raise BenchError(f"{path}: not a .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    width, height = (int(x) for x in np.frombuffer(data, "<i4", 2, 4))
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise BenchError(f"{path}: corrupt .flo header (size {width}x{height})")
    expected = _HEADER_BYTES + 8 * width * height
    if len(data) < expected:
        raise BenchError(f"{path}: truncated .flo file ({len(data)} bytes, a {width}x{height} "
                         f"flow needs {expected})")
    if len(data) > expected:
        raise BenchError(f"{path}: corrupt .flo file ({len(data) - expected} bytes after the "
                         f"{width}x{height} flow)")
    uv = np.frombuffer(data, "<f4", 2 * width * height, _HEADER_BYTES).reshape(height, width, 2)
    return np.ascontiguousarray(uv.transpose(2, 0, 1), dtype=np.float32)


def write_flo(path: str | os.PathLike, flow) -> None:
    """Write ``flow`` as a Middlebury ``.flo`` file (float32, little-endian).

    Args:
        path: output file; its folder must exist.
        flow: ``(2, H, W)`` numpy array or torch tensor, pixels. Converted to float32.
    """
    arr = _as_numpy(flow)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise BenchError(f"{path}: flow must have shape (2, H, W), got {tuple(arr.shape)}")
    _, height, width = arr.shape
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    body = np.ascontiguousarray(arr.transpose(1, 2, 0), dtype="<f4").tobytes()
    try:
        Path(path).write_bytes(header + body)
    except OSError as exc:
        raise BenchError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _as_numpy(x) -> np.ndarray:
    """A numpy view of a numpy array or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
