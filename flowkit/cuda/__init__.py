"""CuPy backend: hand-written CUDA kernels for the hot numeric ops, each the twin of a torch op.

The kernels live next to this file as ``.cu`` sources (package data) and are compiled at first use
with NVRTC through CuPy, once per device and source variant. Everything here imports cleanly on a
machine without CuPy or CUDA: CuPy is imported inside functions only, and asking for the backend
without it raises one :class:`~flowkit.errors.EngineError` that says how to install it.

Conventions shared by every wrapper in this package:

- inputs are torch CUDA tensors, float32, contiguous ``NCHW`` (wrappers cast and make contiguous);
- outputs are torch tensors allocated by torch's caching allocator; kernels receive raw device
  pointers (:func:`launch`), CuPy allocates nothing;
- every launch goes on ``torch.cuda.current_stream()`` of the tensors' device (:func:`launch`), so
  kernels order correctly with surrounding torch work and CUDA-graph capture sees them;
- sizes (batch, channels, height, width, radii) are kernel arguments, never formatted into the
  source, so a new resolution never recompiles;
- one launch covers the batch (grid z = pair or plane); beyond CUDA's grid-z limit the launch is
  split in slices (:func:`grid_chunks`, :func:`launch_planes`), each kernel taking ``plane0``.

Compiler options: ``-std=c++17`` always. ``--use_fast_math`` only for sources whose twins tolerate
approximate ``exp``/``rsqrt``/division and flushed denormals: the cost volume (softmax over cosine
similarities is smooth and bounded, errors ~1e-6 relative). Never for TV-L1 (hundreds of iterations
amplify rounding differences, and the thresholding divides by ``|grad I1|^2`` that can be tiny or
denormal) and never for warping (its gradients are checked against autograd). CuPy itself adds
``-ftz=true`` to every NVRTC compile (``cupy/cuda/compiler.py``), so all kernels flush denormals on
the device, where torch's CUDA ops do not: the TV-L1 guard on ``|grad I1|^2`` (1e-12) is a normal
float, so only inputs already below ~1e-38 can round differently from the torch path. The host
emulation (g++) keeps denormals.
"""
from __future__ import annotations

import functools
from importlib import resources
from typing import Sequence

from ..errors import EngineError

INSTALL_HINT = ("backend='cupy' needs CuPy and a CUDA device: pip install -e .[cuda13] "
                "(CUDA 13 drivers) or .[cuda12] (CUDA 12)")
BACKENDS = ("auto", "torch", "cupy")

# CUDA threads per block for the 2-D (x over width, y over height) pixel kernels.
BLOCK_2D = (32, 8, 1)
# Threads per block of the one-thread-per-pair kernels (tvl1_stop_rule).
BLOCK_1D = (256, 1, 1)
# CUDA's hardware limits on gridDim.y and gridDim.z; launches with more planes (z) are split
# (grid_chunks).
MAX_GRID_Y = 65535
MAX_GRID_Z = 65535


def _import_cupy():
    """``cupy`` or None. Not cached, so tests can hide CuPy with ``sys.modules['cupy'] = None``."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken install failing at import (missing CUDA libs)
        return None
    return cupy


def is_available() -> bool:
    """True when CuPy imports and torch sees a CUDA device (both are needed to run the kernels)."""
    if _import_cupy() is None:
        return False
    import torch

    return torch.cuda.is_available()


def require():
    """Return the ``cupy`` module, or raise :class:`EngineError` with the install hint."""
    cupy = _import_cupy()
    if cupy is None:
        raise EngineError(f"{INSTALL_HINT} (CuPy is not installed or fails to import)")
    import torch

    if not torch.cuda.is_available():
        raise EngineError(f"{INSTALL_HINT} (torch sees no CUDA device)")
    return cupy


def resolve_backend(backend: str, device) -> str:
    """``"torch"`` or ``"cupy"`` for an engine's ``backend`` option on ``device``.

    ``"auto"`` picks CuPy on a CUDA device when :func:`is_available`, torch otherwise; ``"cupy"``
    raises :class:`EngineError` unless CuPy and a CUDA device are there; ``"torch"`` is always torch.
    """
    import torch

    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        return "cupy" if on_cuda and is_available() else "torch"
    if not on_cuda:  # before CuPy's install hint: installing CuPy would not help here
        import torch

        here = ("" if torch.cuda.is_available()
                else " (torch sees no CUDA device on this machine)")
        raise EngineError(f"backend='cupy' runs on CUDA devices only, got device={str(device)!r}: "
                          f"pass --device cuda{here}, or --backend torch")
    require()
    return "cupy"


def read_source(source_file: str) -> str:
    """Text of a ``.cu`` file shipped in this package."""
    return resources.files(__package__).joinpath(source_file).read_text(encoding="utf-8")


def kernel_source(source_file: str) -> str:
    """The exact text handed to the compiler: ``#line 1 "<file>"``, then the file, so that
    compiler errors and ``printf``-debugging name the ``.cu`` file and its own line numbers."""
    return f'#line 1 "{source_file}"\n{read_source(source_file)}'


@functools.lru_cache(maxsize=None)
def _module(device_id: int, source_file: str, fast_math: bool):
    cupy = require()
    options = ("-std=c++17",) + (("--use_fast_math",) if fast_math else ())
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=kernel_source(source_file), options=options)
        module.compile()  # compile now, on this device, so errors surface at load time
    return module


@functools.lru_cache(maxsize=None)
def _function(device_id: int, source_file: str, fast_math: bool, name: str):
    cupy = require()
    module = _module(device_id, source_file, fast_math)
    with cupy.cuda.Device(device_id):
        kernel = module.get_function(name)
        # Load the function on this device now (cuModuleGetFunction; a RawKernel otherwise loads it
        # lazily, per device, at its first launch): that first launch may be inside a CUDA-graph
        # capture (flowkit.cuda.graphs), where loading a module or a function is illegal on
        # older drivers and the capture would fail.
        kernel.kernel  # noqa: B018 (the property loads)
    return kernel


def load_kernel(name: str, source_file: str, fast_math: bool = False, device_id: int | None = None):
    """The ``extern "C"`` kernel ``name`` of ``source_file``, compiled for ``device_id``.

    Memoized per (device, file, fast_math): the module is compiled once per device and process
    (CuPy also keeps an on-disk cache of compiled binaries across processes), and each kernel's
    function handle is looked up and loaded on the device once, here (never at a first launch,
    which may be inside a CUDA-graph capture).
    """
    cupy = require()
    if device_id is None:
        device_id = cupy.cuda.Device().id
    return _function(int(device_id), source_file, bool(fast_math), name)


def grid_chunks(height: int, width: int, planes: int, block=BLOCK_2D
                ) -> list[tuple[tuple[int, int, int], int]]:
    """Launch grids covering ``width x height`` pixels of ``planes`` planes (one plane per grid
    z-slice: a pair, or a (pair, channel) / (pair, candidate) plane, as each kernel documents).

    Returns ``[(grid, plane0), ...]``: one launch per slice of at most :data:`MAX_GRID_Z` planes,
    ``plane0`` being the plane of the slice's z = 0 (every kernel takes it as its last argument), so
    a cost volume of ``B * K`` planes larger than CUDA's grid-z limit runs in a few launches instead
    of failing. No pixel (a zero height, width or plane count): ``[]``, no launch (a grid dimension
    of 0 is an invalid configuration on a device).
    """
    if height <= 0 or width <= 0 or planes <= 0:
        return []
    gx = (width + block[0] - 1) // block[0]
    gy = (height + block[1] - 1) // block[1]
    if gy > MAX_GRID_Y:
        raise EngineError(f"backend='cupy': {height} rows exceed CUDA's grid limit "
                          f"({MAX_GRID_Y * block[1]} rows); resize the frames")
    return [((gx, gy, min(MAX_GRID_Z, planes - start)), start)
            for start in range(0, planes, MAX_GRID_Z)]


def launch_planes(kernel, height: int, width: int, planes: int, args: Sequence, device) -> None:
    """:func:`launch` ``kernel`` over ``planes`` planes of ``height x width`` pixels in blocks of
    :data:`BLOCK_2D`, in as many slices as :func:`grid_chunks` needs; ``numpy.int32(plane0)`` is
    appended to ``args``."""
    import numpy as np

    for grid, plane0 in grid_chunks(height, width, planes, BLOCK_2D):
        launch(kernel, grid, BLOCK_2D, (*args, np.int32(plane0)), device)


def launch(kernel, grid, block, args, device) -> None:
    """Launch ``kernel`` on torch's current stream of ``device``.

    ``args`` may hold torch CUDA tensors (passed as raw device pointers: no CuPy array is built, so
    a launch costs a few microseconds of Python and nothing that would break CUDA-graph capture),
    None (a null pointer), and numpy scalars (use ``numpy.int32`` / ``numpy.float32`` to match the
    kernel's parameter types exactly; a Python ``int`` would be passed as 64 bits).
    """
    cupy = require()
    import numpy as np
    import torch

    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    converted = []
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.device != device:
                raise EngineError(f"backend='cupy': tensor on {a.device}, launch on {device}")
            a = np.uint64(a.data_ptr())
        elif a is None:
            a = np.uint64(0)
        converted.append(a)
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream):
        kernel(tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(converted))


def check_cuda_float(name: str, *tensors):
    """Raise :class:`EngineError` unless every tensor is on one CUDA device; return them as
    contiguous float32 (a copy only where needed)."""
    import torch

    require()
    devices = {t.device for t in tensors}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        raise EngineError(f"{name}: backend='cupy' needs all inputs on one CUDA device, got "
                          f"{sorted(str(d) for d in devices)}")
    return tuple(t.to(torch.float32).contiguous() for t in tensors)


__all__ = ["INSTALL_HINT", "BACKENDS", "MAX_GRID_Y", "MAX_GRID_Z", "is_available", "require", "resolve_backend",
           "read_source", "kernel_source", "load_kernel", "grid_chunks", "launch",
           "launch_planes", "check_cuda_float"]
