"""The numerics an engine computes with: one backend's implementation of the engines' hot ops.

Every numeric op has a torch implementation (CPU and CUDA, differentiable where the maths is) and,
for the hot ones, a CuPy kernel twin (:mod:`flowkit.cuda`). An engine picks one set by its
``backend`` option and calls only through it::

    nx = numerics.create("auto", device)       # "auto" | "torch" | "cupy"
    nx.backend                                 # what "auto" chose: "cupy" on CUDA with CuPy, else "torch"
    nx.resize_bilinear(x, size, scale)         # OpenCV INTER_LINEAR (pyramids, flow upsampling)
    nx.median_filter(x, ksize)                 # OpenCV medianBlur, replicated border
    nx.linearize(i0, i1_stack, u)              # TV-L1: bicubic warp of I1 and its gradient, data term
    nx.warp_iterations(u, p, lin, schedule)    # TV-L1 / TVNet: the iterations of one warp
    nx.warp(image, flow, mode, padding_mode)   # backward warp (bilinear: a CUDA kernel with autograd)
    nx.cost_volume(f0, f1, d, stride, dilation)
    nx.soft_argmax_displacement(cost, d, tau, dilation)

Both sets have the same signatures and agree to float rounding (``tests/test_cuda_kernels.py`` and
``tests/test_numerics.py`` compare them, on a GPU and in host emulation of the kernels). The CuPy set
is for inference: its TV-L1 ops refuse inputs that require grad; the warp and cost-volume ops are
``autograd.Function`` s and train like their twins.

How the epsilon rule is read (``sync_every``): the torch set reads the stopping mask every iteration
on the CPU (free, and finished pairs leave the batch at once) and once per outer iteration on CUDA
(each read is a host round trip); the CuPy set evaluates it in a kernel and reads it once per outer
iteration, with each outer iteration's launches replayed from a CUDA graph.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import EngineError
from . import correlation as cv_torch
from . import ops
from . import primal_dual as tvl1_torch


@dataclass(frozen=True)
class Numerics:
    """One backend's hot ops (see the module docstring for the signatures)."""

    backend: str
    device: torch.device
    resize_bilinear: Callable
    median_filter: Callable
    linearize: Callable
    warp_iterations: Callable
    warp: Callable
    cost_volume: Callable
    soft_argmax_displacement: Callable


def resolve(backend: str, device) -> str:
    """``"torch"`` or ``"cupy"`` for ``backend`` on ``device`` (see :func:`flowkit.cuda.resolve_backend`)."""
    from .. import cuda

    return cuda.resolve_backend(backend, device)


def create(backend: str = "auto", device="cpu", *, compile: bool = False,
           sync_every: int | None = None, cuda_graphs: bool = True) -> Numerics:
    """The numerics of ``backend`` on ``device``.

    Args:
        backend: ``"auto"`` (CuPy on CUDA when it imports, torch otherwise), ``"torch"`` or
            ``"cupy"`` (an :class:`EngineError` saying how to install CuPy when it cannot run).
        device: where the engine computes.
        compile: torch only: fuse the TV-L1 iteration with ``torch.compile``.
        sync_every: torch only: iterations between reads of the TV-L1 stopping mask; default 1 on
            the CPU and once per outer iteration on CUDA.
        cuda_graphs: cupy only: replay each outer iteration from a CUDA graph.
    """
    device = torch.device(device)
    chosen = resolve(backend, device)
    if chosen == "cupy":
        return _cupy_numerics(device, cuda_graphs)
    return _torch_numerics(device, compile, sync_every)


def _torch_numerics(device: torch.device, compile: bool, sync_every: int | None) -> Numerics:
    step = tvl1_torch.get_iteration(compile)

    def warp_iterations(u, p, lin, schedule):
        every = sync_every or (1 if device.type == "cpu" else schedule.inner)
        return tvl1_torch.warp_iterations(u, p, lin, schedule, step=step, sync_every=every)

    return Numerics(backend="torch", device=device, resize_bilinear=ops.resize_bilinear,
                    median_filter=ops.median_filter, linearize=tvl1_torch.linearize,
                    warp_iterations=warp_iterations, warp=ops.warp,
                    cost_volume=cv_torch.cost_volume,
                    soft_argmax_displacement=cv_torch.soft_argmax_displacement)


def _cupy_numerics(device: torch.device, cuda_graphs: bool) -> Numerics:
    from ..cuda import costvolume as cv_cupy
    from ..cuda import tvl1 as tvl1_cupy
    from ..cuda import warp as warp_cupy

    solver = tvl1_cupy.WarpSolver(use_graphs=cuda_graphs)
    return Numerics(backend="cupy", device=device, resize_bilinear=tvl1_cupy.resize_bilinear,
                    median_filter=_median_cupy, linearize=solver.linearize,
                    warp_iterations=solver, warp=functools.partial(_warp_cupy, warp_cupy),
                    cost_volume=functools.partial(_cost_volume_cupy, cv_cupy),
                    soft_argmax_displacement=functools.partial(_soft_argmax_cupy, cv_cupy))


def _cost_volume_cupy(module, f0, f1, max_displacement=4, stride=1, dilation=1):
    """The twin's argument checks, then the correlation kernel."""
    window = cv_torch._window(max_displacement)
    stride = cv_torch._positive_int(stride, "stride")
    dilation = cv_torch._positive_int(dilation, "dilation")
    return module.cost_volume(f0, f1, window, stride, dilation)


def _soft_argmax_cupy(module, cost, max_displacement=4, tau=0.1, dilation=1):
    """The soft-argmax kernel for ``tau > 0``; winner-take-all (``tau = 0``) and bad values are
    the twin's (it raises for the latter)."""
    window = cv_torch._window(max_displacement)
    dilation = cv_torch._positive_int(dilation, "dilation")
    if isinstance(tau, (int, float)) and not isinstance(tau, bool) and 0 < tau < float("inf"):
        return module.soft_argmax_displacement(cost, window, float(tau), dilation)
    return cv_torch.soft_argmax_displacement(cost, window, tau, dilation)


def _median_cupy(x: torch.Tensor, ksize: int = 5) -> torch.Tensor:
    from ..cuda import tvl1 as tvl1_cupy

    if ksize in tvl1_cupy.MEDIAN_SIZES:
        return tvl1_cupy.median_filter(x, ksize)
    return ops.median_filter_torch(x, ksize)


def _warp_cupy(module, image, flow, mode: str = "bilinear", padding_mode: str = "zeros"):
    """The bilinear kernel; other modes (bicubic, nearest) have no kernel and use torch's."""
    if mode == "bilinear":
        return module.warp(image, flow, mode, padding_mode)
    return ops.warp(image, flow, mode, padding_mode)


@functools.lru_cache(maxsize=None)
def warp_function(device: str, backend: str = "auto") -> Callable:
    """The backward warp of ``backend`` on ``device``: the CuPy bilinear kernel (an
    ``autograd.Function``, so training uses it too) or :func:`ops.warp`."""
    if resolve(backend, device) == "cupy":
        from ..cuda import warp as warp_cupy

        return functools.partial(_warp_cupy, warp_cupy)
    return ops.warp


def check_median(numerics: Numerics, ksize: int, requested: str) -> Numerics:
    """``numerics``, or torch's when its backend has no median kernel of size ``ksize``: a
    fallback for ``backend="auto"``, an :class:`EngineError` for an explicit ``"cupy"``."""
    from ..cuda.tvl1 import MEDIAN_SIZES

    if numerics.backend != "cupy" or ksize in MEDIAN_SIZES:
        return numerics
    if requested == "cupy":
        raise EngineError(f"tvl1: backend='cupy' has median kernels of size "
                          f"{', '.join(map(str, MEDIAN_SIZES[2:]))} (or none: 0/1), got "
                          f"median_filtering={ksize}; use backend='torch'")
    return create("torch", numerics.device)


__all__ = ["Numerics", "create", "resolve", "warp_function", "check_median"]
